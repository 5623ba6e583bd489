//! The store's behaviour, each scenario run against SQLite (a fresh file in a temp dir) and
//! Postgres (a fresh database, dropped afterwards).
//!
//! Postgres: `postgres://postgres@127.0.0.1:5432/test`, or TURBO_TEST_POSTGRES_URL. When it is
//! unreachable the Postgres tests fail saying how to start it; TURBO_TEST_SKIP_POSTGRES=1 skips
//! them instead.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use uuid::Uuid;

use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::{PlanId, ProjectId, TaskId};
use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::task::{DevelopmentTask, TaskStatus, TestResults};
use turbo_core::tool::TokenUsage;
use turbo_store::{
    AuditFilter, Cursor, Error, NewAuditEntry, PhaseRow, PhaseStatus, ProjectQuery, StepRow, Store, TaskFilter,
    TaskQuery, ToolCallRow, UsageRow,
};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `scenario` with the URL of a fresh SQLite file.
async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("turbo.db").display());
    scenario(url).await;
}

/// Runs `scenario` with the URL of a fresh Postgres database, dropped afterwards even when the
/// scenario panics.
async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if std::env::var("TURBO_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("TURBO_TEST_SKIP_POSTGRES=1: Postgres scenario skipped");
        return;
    }
    let base = std::env::var("TURBO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
    // A refused connection is retried until the acquire timeout; keep it short so a stopped
    // server fails the tests in seconds.
    let mut opts = sea_orm::ConnectOptions::new(base.clone());
    opts.acquire_timeout(Duration::from_secs(3)).sqlx_logging(false);
    let admin = match Database::connect(opts).await {
        Ok(db) => db,
        Err(e) => panic!(
            "Postgres at {base} is unreachable ({e}). Start it (e.g. `pg_ctlcluster 15 main start`, or \
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres`), point \
             TURBO_TEST_POSTGRES_URL at a running server, or set TURBO_TEST_SKIP_POSTGRES=1 to skip \
             the Postgres tests"
        ),
    };
    let name = format!("turbo_store_{}", Uuid::new_v4().simple());
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
    let url = with_database(&base, &name);
    // A spawned task turns a panic into a JoinError, so the database is dropped either way.
    let outcome = tokio::spawn(scenario(url)).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the test database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (url, query) = match base.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (base, String::new()),
    };
    let (scheme, rest) = url.split_once("://").expect("a postgres:// url");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// Declares each scenario as a test on both backends: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { crate::on_sqlite(crate::$name).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { crate::on_postgres(crate::$name).await })*
        }
    };
}

on_both!(
    migrations_are_idempotent,
    task_round_trip,
    a_task_status_swaps_only_from_the_status_named,
    find_task_by_id_or_prefix,
    list_tasks_orders_filters_and_limits,
    plan_round_trip,
    events_project_and_are_idempotent,
    corrupt_rows_are_reported,
    concurrent_writers_do_not_fail,
    projects_have_unique_names_and_slugs,
    projects_are_soft_deleted_restored_and_purged,
    projects_and_tasks_list_in_pages_newest_first,
    concurrent_creates_of_one_name_let_one_win,
    a_replayed_batch_changes_no_projection,
    a_phase_run_again_keeps_each_attempts_steps_and_calls,
    a_redelivered_run_adds_no_step_or_tool_call,
    large_batches_span_several_statements,
    audit_entries_are_listed_newest_first_and_filtered,
    audit_entries_keep_no_secrets_and_refuse_bad_fields,
    request_counts_are_shared_by_connections_and_windowed,
    services_starting_together_migrate_once,
    sessions_follow_tasks_and_end_by_hand_or_when_idle,
    users_and_their_api_keys_are_kept_disabled_and_revoked,
);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A fixed instant with a sub-microsecond part, so any precision loss shows.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_000_000 + secs, 123_456_789).single().expect("valid instant")
}

/// Postgres keeps timestamp columns at microsecond precision (SQLite text keeps nanoseconds);
/// values read from columns rather than JSON bodies are compared after cutting to microseconds.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).expect("valid nanosecond")
}

fn project(root: &str) -> ProjectMetadata {
    let mut p = ProjectMetadata::new("My App", "my-app", ProjectType::ApiService, vec![Language::Rust], root);
    p.created_at = at(0);
    p.updated_at = at(0);
    p.ai_context.insert("note".into(), json!({"nested": [1, 2.5, "x"]}));
    p
}

fn task(project: &ProjectMetadata, title: &str, created: DateTime<Utc>) -> DevelopmentTask {
    let mut t =
        DevelopmentTask::from_request(project.id, &format!("{title}\n\nadd a /health endpoint that returns 200"));
    t.created_at = created;
    t.tags = vec!["api".into()];
    t.constraints.insert("max_files".into(), json!(3));
    t
}

fn task_with_id(project: &ProjectMetadata, id: &str) -> DevelopmentTask {
    let mut t = task(project, &format!("task {id}"), at(0));
    t.id = TaskId(Uuid::parse_str(id).expect("test uuid"));
    t
}

fn phase(name: &str, agent: &str, deps: &[&str]) -> ExecutionPhase {
    ExecutionPhase {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        deliverables: vec![format!("{name} done")],
        ..ExecutionPhase::new(name, format!("do {name}"), agent)
    }
}

fn plan(task_id: TaskId, version: u32, phases: Vec<ExecutionPhase>) -> ExecutionPlan {
    ExecutionPlan {
        plan_id: PlanId::new(),
        task_id,
        version,
        phases,
        total_estimated_duration: Duration::from_secs(1800),
        confidence_score: 0.85,
        resource_requirements: ResourceRequirements::default(),
        risk_factors: vec!["flaky tests".into()],
        mitigation_strategies: Vec::new(),
        required_knowledge: Vec::new(),
        context_sources: Vec::new(),
        generated_by: "planner".into(),
        generated_at: at(5),
        last_updated: at(6),
    }
}

fn ev(task_id: TaskId, seq: u64, kind: EventKind) -> TaskEvent {
    TaskEvent { task_id, seq, at: at(100 + seq as i64), kind }
}

fn model_call(role: AgentRole, phase: Option<&str>, prompt: u32, completion: u32) -> EventKind {
    EventKind::ModelCall {
        role,
        phase: phase.map(str::to_string),
        model: "qwen2.5-coder".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        latency_ms: 900,
        ttft_ms: Some(120),
        tokens_per_second: Some(42.5),
    }
}

fn tool_call(phase: &str, step: u32, tool: &str) -> EventKind {
    EventKind::ToolCall {
        phase: phase.into(),
        step,
        tool: tool.into(),
        arguments: json!({"path": "src/main.rs", "n": 1}),
    }
}

fn tool_result(phase: &str, step: u32, tool: &str, success: bool, output: &str) -> EventKind {
    EventKind::ToolResult {
        phase: phase.into(),
        step,
        tool: tool.into(),
        success,
        output: output.into(),
        duration_ms: 42,
    }
}

/// A store with one project and one task in it.
async fn store_with_task(url: &str) -> (Store, ProjectMetadata, DevelopmentTask) {
    let store = Store::connect(url).await.expect("connect");
    let p = project("/srv/app");
    store.upsert_project(&p).await.expect("upsert project");
    let t = task(&p, "add health endpoint", at(10));
    store.insert_task(&t, "/work/ws-1").await.expect("insert task");
    (store, p, t)
}

/// Runs raw SQL on the store's database through a separate connection, as an outside hand would.
async fn raw_sql(url: &str, sql: &str) {
    let db = Database::connect(url).await.expect("raw connection");
    db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await.expect("close raw connection");
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn migrations_are_idempotent(url: String) {
    let first = Store::connect(&url).await.expect("first connect migrates");
    let expected = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    assert_eq!(first.backend(), expected);
    let p = project("/srv/app");
    first.upsert_project(&p).await.unwrap();

    // Migrating again, while the first store is open and after it is gone, changes nothing.
    let second = Store::connect(&url).await.expect("second connect finds the schema up to date");
    assert_eq!(second.project_by_root("/srv/app").await.unwrap(), Some(p.clone()));
    drop(first);
    drop(second);
    let third = Store::connect(&url).await.expect("third connect");
    assert_eq!(third.project_by_root("/srv/app").await.unwrap(), Some(p));

    let db = Database::connect(url.as_str()).await.unwrap();
    let applied = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
        .unwrap();
    let mut versions: Vec<String> = applied.iter().map(|row| row.try_get("", "version").unwrap()).collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            "m20261125_000001_init",
            "m20261125_000002_audit_entries",
            "m20261125_000003_open_tool_calls",
            "m20261125_000004_step_attempts",
            "m20261202_000005_rate_limits",
            "m20261202_000006_sessions",
            "m20261202_000007_users",
            "m20261203_000008_session_answers"
        ],
        "each migration is recorded once"
    );
    if expected == "sqlite" {
        // The journal mode is stored in the file, so a fresh connection sees what the store set.
        let mode = db
            .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), "PRAGMA journal_mode"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
    }
}

async fn task_round_trip(url: String) {
    let (store, p, mut t) = store_with_task(&url).await;

    // Bodies are JSON, so the nanoseconds of `at(..)` survive on both backends: exact equality.
    let got = store.get_task(t.id).await.unwrap().expect("stored task");
    assert_eq!(got.task, t);
    assert_eq!(got.workspace, "/work/ws-1");

    t.status = TaskStatus::InProgress;
    t.progress_percentage = 42.5;
    t.current_phase = Some("code".into());
    t.started_at = Some(at(20));
    t.execution_plan = Some(plan(t.id, 1, vec![phase("code", "coder", &[])]));
    t.test_results = Some(TestResults {
        command: "cargo test".into(),
        success: false,
        exit_code: Some(101),
        rounds: 2,
        output_tail: "1 failed".into(),
    });
    store.update_task(&t).await.unwrap();
    let got = store.get_task(t.id).await.unwrap().expect("updated task");
    assert_eq!(got.task, t);
    assert_eq!(got.workspace, "/work/ws-1", "update keeps the workspace");

    let summary = &store.list_tasks(TaskFilter::default()).await.unwrap()[0];
    assert_eq!((summary.status, summary.progress), (TaskStatus::InProgress, 42.5));
    assert_eq!(summary.current_phase.as_deref(), Some("code"));
    assert_eq!(micros(summary.created_at), micros(t.created_at));

    assert_eq!(store.get_task(TaskId::new()).await.unwrap(), None);
    let mut unknown = t.clone();
    unknown.id = TaskId::new();
    let e = store.update_task(&unknown).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "task", id } if *id == unknown.id.to_string()), "{e}");
    let e = store.insert_task(&t, "/elsewhere").await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let mut orphan = task(&p, "orphan task", at(1));
    orphan.project_id = ProjectId::new();
    let e = store.insert_task(&orphan, "/w").await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "project", .. }), "{e}");

    // Projects: an upsert replaces, a second project may not take the slug.
    let mut renamed = p.clone();
    renamed.name = "Renamed".into();
    renamed.updated_at = at(30);
    store.upsert_project(&renamed).await.unwrap();
    assert_eq!(store.project_by_root("/srv/app").await.unwrap(), Some(renamed));
    assert_eq!(store.project_by_root("/nowhere").await.unwrap(), None);
    let mut clash = project("/srv/other");
    clash.id = ProjectId::new();
    let e = store.upsert_project(&clash).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict { .. }) && e.to_string().contains("slug 'my-app'"), "{e}");
}

async fn a_task_status_swaps_only_from_the_status_named(url: String) {
    let (store, _, mut t) = store_with_task(&url).await;
    t.status = TaskStatus::InProgress;
    t.progress_percentage = 40.0;
    store.update_task(&t).await.unwrap();

    let had = store.swap_task_status(t.id, TaskStatus::InProgress, TaskStatus::Blocked).await.unwrap();
    assert_eq!(had, Some(TaskStatus::InProgress));
    let got = store.get_task(t.id).await.unwrap().unwrap().task;
    assert_eq!(got, DevelopmentTask { status: TaskStatus::Blocked, ..t.clone() }, "only the status changed");
    let listed = &store.list_tasks(TaskFilter::default()).await.unwrap()[0];
    assert_eq!((listed.status, listed.progress), (TaskStatus::Blocked, 40.0), "the listing column too");
    let had = store.swap_task_status(t.id, TaskStatus::InProgress, TaskStatus::Blocked).await.unwrap();
    assert_eq!(had, Some(TaskStatus::Blocked), "not in it");

    // A task that ended meanwhile stays ended.
    t.status = TaskStatus::Cancelled;
    store.update_task(&t).await.unwrap();
    let had = store.swap_task_status(t.id, TaskStatus::Blocked, TaskStatus::InProgress).await.unwrap();
    assert_eq!(had, Some(TaskStatus::Cancelled));
    assert_eq!(store.get_task(t.id).await.unwrap().unwrap().task.status, TaskStatus::Cancelled);
    assert_eq!(store.swap_task_status(TaskId::new(), TaskStatus::InProgress, TaskStatus::Blocked).await.unwrap(), None);
}

async fn find_task_by_id_or_prefix(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let p = project("/srv/app");
    store.upsert_project(&p).await.unwrap();
    // The edges of the "aaaa" range, one id just past it, and one elsewhere.
    let ids = [
        "aaaa0000-0000-4000-8000-000000000000",
        "aaaaffff-ffff-4fff-bfff-ffffffffffff",
        "aaab0000-0000-4000-8000-000000000000",
        "bbbb1234-5678-4000-8000-000000000001",
    ];
    for id in ids {
        store.insert_task(&task_with_id(&p, id), "/w").await.unwrap();
    }
    let found = |r: Result<turbo_store::StoredTask, Error>| r.map(|s| s.task.id.to_string());

    assert_eq!(found(store.find_task(ids[3]).await).unwrap(), ids[3]);
    assert_eq!(found(store.find_task(&ids[3].to_uppercase()).await).unwrap(), ids[3]);
    assert_eq!(found(store.find_task("bbbb").await).unwrap(), ids[3]);
    assert_eq!(found(store.find_task("BBBB12").await).unwrap(), ids[3]);
    assert_eq!(found(store.find_task("bbbb1234-56").await).unwrap(), ids[3]);
    assert_eq!(found(store.find_task("aaab").await).unwrap(), ids[2]);
    assert_eq!(found(store.find_task("aaaaf").await).unwrap(), ids[1]);
    assert_eq!(found(store.find_task(" aaaa0 ").await).unwrap(), ids[0]);

    match store.find_task("aaaa").await {
        Err(Error::Ambiguous { prefix, matches }) => {
            assert_eq!(prefix, "aaaa");
            assert_eq!(matches, vec![ids[0].to_string(), ids[1].to_string()]);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    let e = store.find_task("aaaa").await.unwrap_err().to_string();
    assert!(e.contains(ids[0]) && e.contains(ids[1]) && e.contains("type more characters"), "{e}");

    for unknown in ["cccc", "aaaa00001", "dddddddd-dddd-4ddd-8ddd-dddddddddddd"] {
        let e = store.find_task(unknown).await.unwrap_err();
        assert!(matches!(&e, Error::NotFound { what: "task", id } if id == unknown), "{unknown}: {e}");
    }
    for bad in ["aaa", "", "zzzz", "aaaa-"] {
        let e = store.find_task(bad).await.unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{bad}: {e}");
    }
}

async fn list_tasks_orders_filters_and_limits(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let p = project("/srv/app");
    store.upsert_project(&p).await.unwrap();
    // Inserted out of creation order, so the ordering must come from created_at.
    let mut oldest = task(&p, "oldest", at(10));
    let newest = task(&p, "newest", at(30));
    let middle = task(&p, "middle", at(20));
    oldest.status = TaskStatus::Completed;
    for t in [&newest, &oldest, &middle] {
        store.insert_task(t, "/w").await.unwrap();
    }
    store
        .append_events(&[
            ev(middle.id, 1, model_call(AgentRole::Planner, None, 100, 20)),
            ev(middle.id, 2, model_call(AgentRole::Coder, Some("code"), 1000, 300)),
            ev(newest.id, 1, model_call(AgentRole::Coder, Some("code"), 7, 3)),
        ])
        .await
        .unwrap();

    let all = store.list_tasks(TaskFilter::default()).await.unwrap();
    let titles: Vec<_> = all.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(titles, ["newest", "middle", "oldest"]);
    let tokens: Vec<_> = all.iter().map(|s| s.total_tokens).collect();
    assert_eq!(tokens, [10, 1420, 0]);
    assert_eq!(all[0].id, newest.id);
    assert_eq!(micros(all[1].created_at), micros(at(20)));

    let done = store.list_tasks(TaskFilter { status: Some(TaskStatus::Completed), limit: 50 }).await.unwrap();
    assert_eq!(done.iter().map(|s| s.id).collect::<Vec<_>>(), [oldest.id]);
    assert_eq!(done[0].status, TaskStatus::Completed);
    let created = store.list_tasks(TaskFilter { status: Some(TaskStatus::Created), limit: 0 }).await.unwrap();
    assert_eq!(created.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(), ["newest", "middle"]);
    let none = store.list_tasks(TaskFilter { status: Some(TaskStatus::Failed), limit: 0 }).await.unwrap();
    assert!(none.is_empty());

    let two = store.list_tasks(TaskFilter { status: None, limit: 2 }).await.unwrap();
    assert_eq!(two.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(), ["newest", "middle"]);
    let unlimited = store.list_tasks(TaskFilter { status: None, limit: 0 }).await.unwrap();
    assert_eq!(unlimited.len(), 3);
}

async fn plan_round_trip(url: String) {
    let (store, _, t) = store_with_task(&url).await;
    assert_eq!(store.latest_plan(t.id).await.unwrap(), None);
    assert!(store.phases(t.id).await.unwrap().is_empty());

    // Declared out of execution order: review -> needs test -> needs code.
    let v1 = plan(
        t.id,
        1,
        vec![
            phase("review", "ReviewAgent", &["test"]),
            phase("code", "coder", &[]),
            phase("test", "tester", &["code"]),
        ],
    );
    store.save_plan(&v1).await.unwrap();
    assert_eq!(store.latest_plan(t.id).await.unwrap(), Some(v1.clone()));
    let phases = store.phases(t.id).await.unwrap();
    let order: Vec<_> = phases.iter().map(|p| (p.name.as_str(), p.position, p.role)).collect();
    assert_eq!(
        order,
        [
            ("code", 0, Some(AgentRole::Coder)),
            ("test", 1, Some(AgentRole::Tester)),
            ("review", 2, Some(AgentRole::Reviewer))
        ]
    );
    for p in &phases {
        assert_eq!((p.status, p.attempt, p.plan_id, p.task_id), (PhaseStatus::Pending, 0, v1.plan_id, t.id));
        assert_eq!((&p.summary, p.started_at, p.finished_at), (&None, None, None));
    }

    // A re-plan supersedes; the same version again is refused.
    let v2 = plan(t.id, 2, vec![phase("code", "coder", &[]), phase("docs", "coder", &["code"])]);
    store.save_plan(&v2).await.unwrap();
    assert_eq!(store.latest_plan(t.id).await.unwrap(), Some(v2.clone()));
    let names: Vec<_> = store.phases(t.id).await.unwrap().into_iter().map(|p| (p.name, p.plan_id)).collect();
    assert_eq!(names, [("code".to_string(), v2.plan_id), ("docs".to_string(), v2.plan_id)]);
    let again = plan(t.id, 2, vec![phase("x", "coder", &[])]);
    let e = store.save_plan(&again).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(store.latest_plan(t.id).await.unwrap(), Some(v2), "a refused plan leaves no trace");

    let e = store.save_plan(&plan(TaskId::new(), 1, vec![phase("a", "coder", &[])])).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { what: "task", .. }), "{e}");
    let cyclic = plan(t.id, 3, vec![phase("a", "coder", &["b"]), phase("b", "coder", &["a"])]);
    let e = store.save_plan(&cyclic).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}

async fn events_project_and_are_idempotent(url: String) {
    let (store, _, t) = store_with_task(&url).await;
    let id = t.id;
    store.save_plan(&plan(id, 1, vec![phase("code", "coder", &[]), phase("test", "tester", &["code"])])).await.unwrap();
    assert_eq!(store.next_seq(id).await.unwrap(), 1);
    assert!(store.events(id, 0).await.unwrap().is_empty());

    let batch = vec![
        ev(id, 1, EventKind::TaskCreated { title: t.title.clone(), workspace: "/work/ws-1".into() }),
        ev(id, 2, EventKind::PhaseStarted { phase: "code".into(), role: AgentRole::Coder, attempt: 1 }),
        ev(id, 3, model_call(AgentRole::Coder, Some("code"), 1000, 200)),
        ev(id, 4, tool_call("code", 1, "write_file")),
        ev(id, 5, tool_result("code", 1, "write_file", true, "wrote 12 lines")),
        ev(id, 6, tool_call("code", 1, "read_file")),
        // Two greps in one step: a result completes the latest call still open.
        ev(id, 7, tool_call("code", 2, "grep")),
        ev(id, 8, tool_call("code", 2, "grep")),
        ev(id, 9, tool_result("code", 2, "grep", false, "no match")),
        ev(id, 10, model_call(AgentRole::Coder, Some("code"), 500, 50)),
        ev(
            id,
            11,
            EventKind::PhaseFinished {
                phase: "code".into(),
                role: AgentRole::Coder,
                success: true,
                summary: "implemented".into(),
            },
        ),
        ev(id, 12, EventKind::PhaseStarted { phase: "test".into(), role: AgentRole::Tester, attempt: 1 }),
        ev(id, 13, model_call(AgentRole::Tester, Some("test"), 300, 30)),
        ev(
            id,
            14,
            EventKind::PhaseFinished {
                phase: "test".into(),
                role: AgentRole::Tester,
                success: false,
                summary: "1 failed".into(),
            },
        ),
    ];
    store.append_events(&batch).await.unwrap();

    let phases = store.phases(id).await.unwrap();
    let code = &phases[0];
    assert_eq!((code.name.as_str(), code.status, code.attempt), ("code", PhaseStatus::Succeeded, 1));
    assert_eq!(code.summary.as_deref(), Some("implemented"));
    assert_eq!(
        (code.started_at.map(micros), code.finished_at.map(micros)),
        (Some(micros(at(102))), Some(micros(at(111))))
    );
    let test = &phases[1];
    assert_eq!((test.status, test.summary.as_deref()), (PhaseStatus::Failed, Some("1 failed")));

    // A second attempt runs again: its earlier end is cleared.
    let retry = vec![
        ev(id, 15, EventKind::PhaseStarted { phase: "test".into(), role: AgentRole::Tester, attempt: 2 }),
        ev(id, 16, tool_result("code", 2, "grep", true, &"x".repeat(2100))),
    ];
    store.append_events(&retry).await.unwrap();
    let test = &store.phases(id).await.unwrap()[1];
    assert_eq!((test.status, test.attempt), (PhaseStatus::Running, 2));
    assert_eq!(
        (test.summary.as_deref(), test.finished_at, test.started_at.map(micros)),
        (None, None, Some(micros(at(115))))
    );

    let steps: Vec<_> = store.steps(id).await.unwrap().into_iter().map(|s| (s.phase, s.step, s.role)).collect();
    assert_eq!(
        steps,
        [("code".to_string(), 1, Some(AgentRole::Coder)), ("code".to_string(), 2, Some(AgentRole::Coder))]
    );

    let calls = store.tool_calls(id).await.unwrap();
    let summary: Vec<_> =
        calls.iter().map(|c| (c.call_seq, c.step, c.tool.as_str(), c.success, c.duration_ms)).collect();
    assert_eq!(
        summary,
        [
            (4, 1, "write_file", Some(true), Some(42)),
            (6, 1, "read_file", None, None),
            // Seq 16 completed the first grep: the second was no longer open.
            (7, 2, "grep", Some(true), Some(42)),
            (8, 2, "grep", Some(false), Some(42)),
        ]
    );
    assert_eq!(calls[3].output.as_deref(), Some("no match"));
    assert_eq!(
        (calls[2].finished_at.map(micros), calls[3].finished_at.map(micros)),
        (Some(micros(at(116))), Some(micros(at(109))))
    );
    assert_eq!(calls[0].output.as_deref(), Some("wrote 12 lines"));
    assert_eq!(calls[0].arguments, json!({"path": "src/main.rs", "n": 1}));
    assert_eq!(micros(calls[0].created_at), micros(at(104)));
    assert_eq!(calls[0].finished_at.map(micros), Some(micros(at(105))));
    assert_eq!((calls[1].output.as_deref(), calls[1].finished_at), (None, None));
    let long = calls[2].output.as_deref().unwrap();
    assert!(long.len() < 2100 && long.ends_with("... [100 more chars]"), "output is shortened: {} chars", long.len());

    let usage = store.token_usage(id).await.unwrap();
    let rows: Vec<_> = usage.iter().map(|u| (u.event_seq, u.role, u.phase.as_deref(), u.usage.total())).collect();
    assert_eq!(
        rows,
        [
            (3, AgentRole::Coder, Some("code"), 1200),
            (10, AgentRole::Coder, Some("code"), 550),
            (13, AgentRole::Tester, Some("test"), 330)
        ]
    );
    assert_eq!((usage[0].model.as_str(), usage[0].latency_ms, usage[0].ttft_ms), ("qwen2.5-coder", 900, Some(120)));
    let by_role = store.usage_by_role(id).await.unwrap();
    assert_eq!(by_role.len(), 2);
    assert_eq!(by_role[&AgentRole::Coder], TokenUsage { prompt_tokens: 1500, completion_tokens: 250 });
    assert_eq!(by_role[&AgentRole::Tester], TokenUsage { prompt_tokens: 300, completion_tokens: 30 });

    // The log reads back exactly (nanoseconds included: bodies are JSON) and resumes after a seq.
    let all: Vec<TaskEvent> = batch.iter().chain(&retry).cloned().collect();
    assert_eq!(store.events(id, 0).await.unwrap(), all);
    assert_eq!(store.events(id, 13).await.unwrap(), all[13..].to_vec());
    assert!(store.events(id, 16).await.unwrap().is_empty());
    assert_eq!(store.next_seq(id).await.unwrap(), 17);

    // Redelivery: the same batches again, and a batch mixing old and new events.
    let projections = async || {
        (
            store.phases(id).await.unwrap(),
            store.steps(id).await.unwrap(),
            store.tool_calls(id).await.unwrap(),
            store.token_usage(id).await.unwrap(),
        )
    };
    let snapshot = projections().await;
    // Each batch checked on its own: replaying the first batch's PhaseStarted/PhaseFinished
    // would move the test phase back to attempt 1, which the second batch would hide.
    store.append_events(&batch).await.unwrap();
    assert_eq!(projections().await, snapshot, "a redelivered batch changes nothing");
    store.append_events(&retry).await.unwrap();
    assert_eq!(projections().await, snapshot, "a redelivered batch changes nothing");
    assert_eq!(store.events(id, 0).await.unwrap(), all);

    let mixed = vec![batch[2].clone(), ev(id, 17, model_call(AgentRole::Reviewer, None, 10, 5)), batch[12].clone()];
    store.append_events(&mixed).await.unwrap();
    assert_eq!(store.token_usage(id).await.unwrap().len(), 4);
    assert_eq!(store.usage_by_role(id).await.unwrap()[&AgentRole::Reviewer].total(), 15);
    assert_eq!(store.usage_by_role(id).await.unwrap()[&AgentRole::Coder].total(), 1750);
    assert_eq!(store.next_seq(id).await.unwrap(), 18);
    assert_eq!(store.list_tasks(TaskFilter::default()).await.unwrap()[0].total_tokens, 1750 + 330 + 15);

    // A batch is all or nothing: a bad event rolls back the good ones before it.
    let half_bad = vec![
        ev(id, 18, model_call(AgentRole::Coder, None, 1, 1)),
        ev(id, u64::MAX, EventKind::Progress { percent: 50.0 }),
    ];
    let e = store.append_events(&half_bad).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(store.next_seq(id).await.unwrap(), 18);
    assert_eq!(store.token_usage(id).await.unwrap().len(), 4);

    let e = store.append_events(&[ev(id, 0, EventKind::Progress { percent: 1.0 })]).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let stranger = TaskId::new();
    let e = store.append_events(&[ev(stranger, 1, EventKind::Progress { percent: 1.0 })]).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "task", id } if *id == stranger.to_string()), "{e}");

    // Events of a phase the plan lacks, and results with no open call, are logged but project nothing.
    store
        .append_events(&[
            ev(id, 18, EventKind::PhaseStarted { phase: "nope".into(), role: AgentRole::Coder, attempt: 1 }),
            ev(id, 19, tool_result("code", 9, "ghost", true, "?")),
        ])
        .await
        .unwrap();
    assert_eq!(store.next_seq(id).await.unwrap(), 20);
    assert_eq!(store.phases(id).await.unwrap(), snapshot.0);
    assert_eq!(store.tool_calls(id).await.unwrap(), snapshot.2);
}

async fn corrupt_rows_are_reported(url: String) {
    let (store, p, t) = store_with_task(&url).await;
    let other = task(&p, "other task", at(11));
    store.insert_task(&other, "/w").await.unwrap();
    store.save_plan(&plan(t.id, 1, vec![phase("code", "coder", &[])])).await.unwrap();
    store
        .append_events(&[
            ev(t.id, 1, EventKind::Progress { percent: 10.0 }),
            ev(t.id, 2, EventKind::Progress { percent: 20.0 }),
        ])
        .await
        .unwrap();

    // Valid JSON of the wrong shape: the only corruption Postgres' jsonb admits.
    raw_sql(&url, r#"UPDATE tasks SET body = '{"not": "a task"}' WHERE title = 'add health endpoint'"#).await;
    raw_sql(&url, r#"UPDATE events SET body = '{"seq": "two"}' WHERE seq = 2"#).await;
    raw_sql(&url, r#"UPDATE plans SET body = '[]'"#).await;

    let e = store.get_task(t.id).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains(&t.id.to_string()), "{e}");
    let e = store.find_task(&t.id.to_string()[..8]).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let e = store.events(t.id, 0).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("event #2"), "{e}");
    assert_eq!(store.events(t.id, 0).await.err().map(|e| e.to_string()), Some(e.to_string()));
    let e = store.latest_plan(t.id).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");

    // The rest of the store stays readable.
    assert_eq!(store.get_task(other.id).await.unwrap().map(|s| s.task), Some(other.clone()));
    assert_eq!(store.list_tasks(TaskFilter::default()).await.unwrap().len(), 2);
    assert_eq!(store.events(t.id, 2).await.unwrap(), vec![]);

    if store.backend() == "sqlite" {
        // SQLite stores JSON as text, so it can also hold text that is not JSON at all.
        raw_sql(&url, "UPDATE tasks SET body = 'not json {' WHERE title = 'other task'").await;
        let e = store.get_task(other.id).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains(&other.id.to_string()), "{e}");
    }

    raw_sql(&url, "UPDATE tasks SET status = 'exploded' WHERE title = 'other task'").await;
    let e = store.list_tasks(TaskFilter::default()).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("exploded"), "{e}");
}

async fn concurrent_writers_do_not_fail(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let p = project("/srv/app");
    store.upsert_project(&p).await.unwrap();
    let tasks: Vec<DevelopmentTask> = (0..4).map(|i| task(&p, &format!("task {i}"), at(i))).collect();
    for t in &tasks {
        store.insert_task(t, "/w").await.unwrap();
    }
    // Writers on separate pooled connections: each batch reads (task check) before it writes,
    // the pattern that fails at once on SQLite unless write transactions take the lock at BEGIN.
    let writers = tasks.iter().map(|t| {
        let (store, mut t) = (store.clone(), t.clone());
        tokio::spawn(async move {
            for seq in 1..=15u64 {
                store.append_events(&[ev(t.id, seq, model_call(AgentRole::Coder, None, 10, 1))]).await.unwrap();
                t.progress_percentage = seq as f64;
                store.update_task(&t).await.unwrap();
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.expect("writer");
    }
    for t in &tasks {
        assert_eq!(store.next_seq(t.id).await.unwrap(), 16);
        assert_eq!(store.get_task(t.id).await.unwrap().unwrap().task.progress_percentage, 15.0);
    }
    assert!(store.list_tasks(TaskFilter::default()).await.unwrap().iter().all(|s| s.total_tokens == 165));
}

/// A project with its own name, slug and root, created at `created`.
fn named_project(name: &str, created: DateTime<Utc>) -> ProjectMetadata {
    let mut p = project(&format!("/srv/{name}"));
    p.name = name.into();
    p.slug = turbo_core::project::slugify(name);
    p.created_at = created;
    p.updated_at = created;
    p
}

async fn projects_have_unique_names_and_slugs(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let a = named_project("Alpha", at(0));
    store.create_project(&a).await.unwrap();
    let got = store.get_project(a.id).await.unwrap().expect("stored project");
    assert_eq!((got.project, got.deleted_at), (a.clone(), None));
    assert_eq!(store.get_project(ProjectId::new()).await.unwrap(), None);

    // The same name with another slug, and another name with the same slug.
    let mut same_name = named_project("Alpha", at(1));
    same_name.slug = "alpha-2".into();
    let e = store.create_project(&same_name).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { field: "name", value, .. } if value == "Alpha"), "{e:?}");
    assert!(e.to_string().contains(&a.id.to_string()) && e.to_string().contains("choose another name"), "{e}");
    let mut same_slug = named_project("Alpha Two", at(1));
    same_slug.slug = "alpha".into();
    let e = store.create_project(&same_slug).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { field: "slug", value, .. } if value == "alpha"), "{e:?}");
    // Creating the same project twice is a conflict on its id, not a silent replace.
    let e = store.create_project(&a).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { .. } | Error::Conflict { .. }), "{e:?}");

    let b = named_project("Beta", at(2));
    store.create_project(&b).await.unwrap();
    let mut renamed = b.clone();
    renamed.name = "Alpha".into();
    let e = store.update_project(&renamed).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { field: "name", .. }), "{e:?}");
    renamed.name = "Beta".into();
    renamed.slug = "alpha".into();
    let e = store.update_project(&renamed).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { field: "slug", .. }), "{e:?}");

    // A real update keeps the creation time and changes the rest.
    let mut changed = b.clone();
    changed.name = "Beta Prime".into();
    changed.slug = "beta-prime".into();
    changed.description = Some("the second".into());
    changed.updated_at = at(50);
    store.update_project(&changed).await.unwrap();
    assert_eq!(store.get_project(b.id).await.unwrap().unwrap().project, changed);
    // The freed name can be taken again.
    store.create_project(&named_project("Beta", at(3))).await.unwrap();

    // Projects made by `turbo-coder run` (upsert) may share a name; keeping it on update works.
    let mut twin = named_project("Beta Prime", at(4));
    twin.slug = "beta-prime-2".into();
    store.upsert_project(&twin).await.unwrap();
    twin.description = Some("a second checkout".into());
    store.update_project(&twin).await.unwrap();

    let mut ghost = named_project("Ghost", at(5));
    ghost.id = ProjectId::new();
    let e = store.update_project(&ghost).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "project", .. }), "{e:?}");
}

async fn projects_are_soft_deleted_restored_and_purged(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let p = named_project("Doomed", at(0));
    store.create_project(&p).await.unwrap();
    let t = task(&p, "a task of the project", at(1));
    store.insert_task(&t, "/w").await.unwrap();
    store.append_events(&[ev(t.id, 1, model_call(AgentRole::Planner, None, 1, 1))]).await.unwrap();

    let deleted_at = store.delete_project(p.id, at(100)).await.unwrap();
    assert_eq!(micros(deleted_at), micros(at(100)));
    let got = store.get_project(p.id).await.unwrap().expect("still stored");
    assert_eq!(got.deleted_at.map(micros), Some(micros(at(100))));
    let e = store.delete_project(p.id, at(101)).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "project", .. }), "deleting twice: {e:?}");
    assert_eq!(store.project_by_root(&p.root_path).await.unwrap(), None, "hidden from lookups");
    let live = ProjectQuery { include_deleted: false, limit: 10, after: None };
    assert!(store.list_projects(live.clone()).await.unwrap().items.is_empty());
    let all = store.list_projects(ProjectQuery { include_deleted: true, ..live.clone() }).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert!(all.items[0].deleted_at.is_some());
    let e = store.insert_task(&task(&p, "too late", at(2)), "/w").await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "project", .. }), "no tasks for a deleted project: {e:?}");
    let mut update = p.clone();
    update.description = Some("x".into());
    assert!(matches!(store.update_project(&update).await, Err(Error::NotFound { .. })));
    // Its name stays reserved while it can be restored.
    let e = store.create_project(&named_project("Doomed", at(3))).await.unwrap_err();
    assert!(matches!(&e, Error::Taken { field: "name", .. }) && e.to_string().contains("restored"), "{e}");

    // Restoring: only within the window, only when deleted.
    let e = store.restore_project(p.id, at(200)).await.unwrap_err();
    assert!(matches!(&e, Error::WrongState { .. }) && e.to_string().contains("restore window"), "{e}");
    assert_eq!(store.restore_project(p.id, at(50)).await.unwrap(), p);
    assert_eq!(store.get_project(p.id).await.unwrap().unwrap().deleted_at, None);
    let e = store.restore_project(p.id, at(50)).await.unwrap_err();
    assert!(matches!(&e, Error::WrongState { .. }) && e.to_string().contains("is not deleted"), "{e}");
    let e = store.restore_project(ProjectId::new(), at(50)).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what: "project", .. }), "{e:?}");
    assert_eq!(store.list_projects(live).await.unwrap().items.len(), 1);

    // Purging removes what was deleted before the cutoff, with its tasks and events.
    let keep = named_project("Kept", at(0));
    store.create_project(&keep).await.unwrap();
    store.delete_project(keep.id, at(500)).await.unwrap();
    store.delete_project(p.id, at(100)).await.unwrap();
    assert_eq!(store.purge_projects(at(300)).await.unwrap(), 1);
    assert_eq!(store.get_project(p.id).await.unwrap(), None);
    assert_eq!(store.get_task(t.id).await.unwrap(), None);
    assert!(store.events(t.id, 0).await.unwrap().is_empty());
    assert!(store.get_project(keep.id).await.unwrap().is_some(), "deleted after the cutoff: kept");
    assert_eq!(store.purge_projects(at(300)).await.unwrap(), 0);
}

async fn projects_and_tasks_list_in_pages_newest_first(url: String) {
    let store = Store::connect(&url).await.unwrap();
    // Five projects, two of them created at the very same instant, inserted out of order.
    let created = [at(3), at(1), at(3), at(2), at(0)];
    let mut projects: Vec<ProjectMetadata> =
        created.iter().enumerate().map(|(i, t)| named_project(&format!("p{i}"), *t)).collect();
    for p in &projects {
        store.create_project(p).await.unwrap();
    }
    store.delete_project(projects[3].id, at(10)).await.unwrap();
    // Newest first; equal creation times by id, descending.
    projects.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.0.cmp(&a.id.0)));
    for include_deleted in [false, true] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = store.list_projects(ProjectQuery { include_deleted, limit: 2, after }).await.unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|p| p.project.name.clone()));
            pages += 1;
            // Through the token form, as a client would pass it back.
            match page.next {
                Some(c) => after = Some(Cursor::from_token(&c.to_token()).expect("token round trip")),
                None => break,
            }
        }
        let want: Vec<String> = projects
            .iter()
            // p3 is the deleted one.
            .filter(|p| include_deleted || p.name != "p3")
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(seen, want, "include_deleted={include_deleted}");
        assert_eq!(pages, want.len().div_ceil(2));
    }
    assert_eq!(Cursor::from_token("nonsense"), None);
    assert_eq!(Cursor::from_token("zz"), None);
    assert_eq!(Cursor::from_token(""), None);

    // Tasks: by project and status, in pages.
    let (a, b) = (&projects[0], &projects[1]);
    let mut tasks = Vec::new();
    for i in 0..5 {
        let mut t = task(if i % 2 == 0 { a } else { b }, &format!("t{i}"), at(20 + i / 2));
        if i == 4 {
            t.status = TaskStatus::Failed;
        }
        store.insert_task(&t, "/w").await.unwrap();
        tasks.push(t);
    }
    tasks.sort_by(|x, y| y.created_at.cmp(&x.created_at).then(y.id.0.cmp(&x.id.0)));
    let collect = |query: TaskQuery| {
        let store = store.clone();
        async move {
            let mut titles = Vec::new();
            let mut query = query;
            loop {
                let page = store.page_tasks(query.clone()).await.unwrap();
                titles.extend(page.items.iter().map(|t| t.task.title.clone()));
                match page.next {
                    Some(c) => query.after = Some(c),
                    None => return titles,
                }
            }
        }
    };
    let titles = |f: &dyn Fn(&DevelopmentTask) -> bool| -> Vec<String> {
        tasks.iter().filter(|t| f(t)).map(|t| t.title.clone()).collect()
    };
    let all = TaskQuery { project: None, statuses: vec![], limit: 2, after: None };
    assert_eq!(collect(all.clone()).await, titles(&|_| true));
    let of_a = TaskQuery { project: Some(a.id), ..all.clone() };
    assert_eq!(collect(of_a.clone()).await, titles(&|t| t.project_id == a.id));
    let failed_of_a = TaskQuery { statuses: vec![TaskStatus::Failed, TaskStatus::Cancelled], ..of_a };
    assert_eq!(collect(failed_of_a).await, ["t4"]);
    let none = TaskQuery { project: Some(b.id), statuses: vec![TaskStatus::Failed], ..all.clone() };
    assert!(collect(none).await.is_empty());
    let whole = store.page_tasks(TaskQuery { limit: 100, ..all }).await.unwrap();
    assert_eq!((whole.items.len(), whole.next), (5, None));
    assert_eq!(whole.items[0].task, tasks[0]);
    assert_eq!(whole.items[0].workspace, "/w");
}

async fn concurrent_creates_of_one_name_let_one_win(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let creates = (0..4).map(|i| {
        let store = store.clone();
        let mut p = named_project("Contended", at(i));
        p.slug = format!("contended-{i}");
        p.root_path = format!("/srv/contended-{i}");
        tokio::spawn(async move { store.create_project(&p).await })
    });
    let mut won = 0;
    for c in creates.collect::<Vec<_>>() {
        match c.await.expect("creator") {
            Ok(()) => won += 1,
            Err(Error::Taken { field: "name", .. }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one create of a name wins");
    let page = store.list_projects(ProjectQuery { include_deleted: true, limit: 10, after: None }).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

/// The four projected tables of a task.
async fn projections(store: &Store, id: TaskId) -> (Vec<PhaseRow>, Vec<StepRow>, Vec<ToolCallRow>, Vec<UsageRow>) {
    (
        store.phases(id).await.unwrap(),
        store.steps(id).await.unwrap(),
        store.tool_calls(id).await.unwrap(),
        store.token_usage(id).await.unwrap(),
    )
}

/// Two batches of events that between them exercise every projection rule: a result for a call
/// stored by the earlier batch, calls completed within their batch, two calls of one tool in a
/// step, a result with no open call, a seq repeated within a batch, a phase finished and another
/// started twice, a tool call reading the role its phase was just started with, and a phase
/// the plan lacks.
fn two_batches(id: TaskId) -> (Vec<TaskEvent>, Vec<TaskEvent>) {
    let started = |phase: &str, role, attempt| EventKind::PhaseStarted { phase: phase.into(), role, attempt };
    let finished = |phase: &str, role, success, summary: &str| EventKind::PhaseFinished {
        phase: phase.into(),
        role,
        success,
        summary: summary.into(),
    };
    let first = vec![
        ev(id, 1, started("code", AgentRole::Coder, 1)),
        ev(id, 2, model_call(AgentRole::Coder, Some("code"), 100, 10)),
        ev(id, 3, tool_call("code", 1, "read_file")),
        ev(id, 4, tool_call("code", 1, "grep")),
    ];
    let second = vec![
        ev(id, 5, tool_result("code", 1, "read_file", true, "fn main() {}")),
        ev(id, 6, tool_call("code", 2, "grep")),
        ev(id, 7, tool_call("code", 2, "grep")),
        ev(id, 8, tool_result("code", 2, "grep", false, "no match")),
        ev(id, 8, tool_result("code", 2, "grep", true, "the same seq again: ignored")),
        ev(id, 9, tool_result("code", 2, "grep", true, &"x".repeat(2100))),
        ev(id, 10, tool_result("code", 3, "ghost", true, "?")),
        ev(id, 11, model_call(AgentRole::Coder, Some("code"), 200, 20)),
        ev(id, 12, finished("code", AgentRole::Coder, true, "implemented")),
        ev(id, 13, started("docs", AgentRole::Reviewer, 1)),
        ev(id, 14, tool_call("docs", 1, "fs_write")),
        ev(id, 15, finished("docs", AgentRole::Reviewer, false, "1 broken link")),
        ev(id, 16, started("docs", AgentRole::Reviewer, 2)),
        ev(id, 17, tool_result("code", 1, "grep", true, "late")),
        ev(id, 18, started("nope", AgentRole::Coder, 1)),
        ev(id, 19, model_call(AgentRole::Reviewer, None, 5, 1)),
    ];
    (first, second)
}

async fn a_replayed_batch_changes_no_projection(url: String) {
    let (store, p, t) = store_with_task(&url).await;
    // "docs" is run by an agent type that names no role: its role comes from PhaseStarted.
    let phases = || vec![phase("code", "coder", &[]), phase("docs", "writer", &["code"])];
    let v1 = plan(t.id, 1, phases());
    store.save_plan(&v1).await.unwrap();
    let (first, second) = two_batches(t.id);
    store.append_events(&first).await.unwrap();
    store.append_events(&second).await.unwrap();
    let snapshot = projections(&store, t.id).await;

    let (phases_now, steps, calls, usage) = &snapshot;
    let phase_states: Vec<_> =
        phases_now.iter().map(|p| (p.name.as_str(), p.status, p.attempt, p.role, p.summary.as_deref())).collect();
    assert_eq!(
        phase_states,
        [
            ("code", PhaseStatus::Succeeded, 1, Some(AgentRole::Coder), Some("implemented")),
            ("docs", PhaseStatus::Running, 2, Some(AgentRole::Reviewer), None),
        ]
    );
    let steps: Vec<_> = steps.iter().map(|s| (s.phase.as_str(), s.step, s.role)).collect();
    assert_eq!(
        steps,
        [
            ("code", 1, Some(AgentRole::Coder)),
            ("code", 2, Some(AgentRole::Coder)),
            ("docs", 1, Some(AgentRole::Reviewer))
        ]
    );
    let calls: Vec<_> = calls
        .iter()
        .map(|c| (c.call_seq, c.tool.as_str(), c.success, c.output.as_deref().map(|o| &o[..o.len().min(12)])))
        .collect();
    assert_eq!(
        calls,
        [
            (3, "read_file", Some(true), Some("fn main() {}")),
            (4, "grep", Some(true), Some("late")),
            (6, "grep", Some(true), Some("xxxxxxxxxxxx")),
            (7, "grep", Some(false), Some("no match")),
            (14, "fs_write", None, None),
        ]
    );
    assert_eq!(usage.iter().map(|u| u.event_seq).collect::<Vec<_>>(), [2, 11, 19]);

    // Replays: each batch again, both as one batch, and an earlier batch after a later one.
    let all: Vec<TaskEvent> = first.iter().chain(&second).cloned().collect();
    for (replay, name) in [(&second, "the second batch"), (&first, "the first batch"), (&all, "both batches")] {
        store.append_events(replay).await.unwrap();
        assert_eq!(projections(&store, t.id).await, snapshot, "{name} again changes nothing");
    }
    let stored = store.events(t.id, 0).await.unwrap();
    assert_eq!(stored.len(), 19, "each seq is stored once");
    assert_eq!(stored[7], second[3], "a seq repeated within a batch keeps its first event");
    assert_eq!(store.next_seq(t.id).await.unwrap(), 20);

    // The same events appended one at a time project to the same rows.
    let twin = task(&p, "the same events one at a time", at(11));
    store.insert_task(&twin, "/w").await.unwrap();
    store.save_plan(&plan(twin.id, 1, phases())).await.unwrap();
    let (first, second) = two_batches(twin.id);
    for e in first.iter().chain(&second) {
        store.append_events(std::slice::from_ref(e)).await.unwrap();
    }
    let (mut phases_twin, mut steps_twin, mut calls_twin, mut usage_twin) = projections(&store, twin.id).await;
    phases_twin.iter_mut().for_each(|r| (r.task_id, r.plan_id) = (t.id, v1.plan_id));
    steps_twin.iter_mut().for_each(|r| r.task_id = t.id);
    calls_twin.iter_mut().for_each(|r| r.task_id = t.id);
    usage_twin.iter_mut().for_each(|r| r.task_id = t.id);
    assert_eq!((phases_twin, steps_twin, calls_twin, usage_twin), snapshot);
}

/// The four projected tables of a task, as [`projections`] reads them.
type Projected = (Vec<PhaseRow>, Vec<StepRow>, Vec<ToolCallRow>, Vec<UsageRow>);

/// `rows` with the task and plan ids replaced by `task` and `plan`, so that tasks given the same
/// events compare equal.
fn as_task(mut rows: Projected, task: TaskId, plan: PlanId) -> Projected {
    let (phases, steps, calls, usage) = &mut rows;
    phases.iter_mut().for_each(|r| (r.task_id, r.plan_id) = (task, plan));
    steps.iter_mut().for_each(|r| r.task_id = task);
    calls.iter_mut().for_each(|r| r.task_id = task);
    usage.iter_mut().for_each(|r| r.task_id = task);
    rows
}

/// Gives `batches(task)` to three fresh tasks with the plan `phases`: batch by batch, one event at
/// a time, and all in one batch; asserts that the three project to the same rows and that a
/// replay of every batch changes nothing, and returns the rows after each batch of the first.
async fn project_three_ways(
    store: &Store,
    p: &ProjectMetadata,
    phases: impl Fn() -> Vec<ExecutionPhase>,
    batches: impl Fn(TaskId) -> Vec<Vec<TaskEvent>>,
) -> Vec<Projected> {
    let mut shapes = Vec::new();
    let mut after_each = Vec::new();
    for (i, shape) in ["batch by batch", "one at a time", "all at once"].into_iter().enumerate() {
        let t = task(p, shape, at(20 + i as i64));
        store.insert_task(&t, "/w").await.unwrap();
        let v1 = plan(t.id, 1, phases());
        store.save_plan(&v1).await.unwrap();
        let given = batches(t.id);
        let appends: Vec<Vec<TaskEvent>> = match i {
            0 => given.clone(),
            1 => given.concat().into_iter().map(|e| vec![e]).collect(),
            _ => vec![given.concat()],
        };
        for batch in &appends {
            store.append_events(batch).await.unwrap();
            if i == 0 {
                after_each.push(projections(store, t.id).await);
            }
        }
        let rows = projections(store, t.id).await;
        for batch in &given {
            store.append_events(batch).await.unwrap();
        }
        assert_eq!(projections(store, t.id).await, rows, "{shape}: a replay changes nothing");
        shapes.push((shape, as_task(rows, TaskId(Uuid::nil()), PlanId(Uuid::nil()))));
    }
    for (shape, rows) in &shapes[1..] {
        assert_eq!(rows, &shapes[0].1, "{shape} projects as {} does", shapes[0].0);
    }
    after_each
}

fn started(phase: &str, role: AgentRole, attempt: u32) -> EventKind {
    EventKind::PhaseStarted { phase: phase.into(), role, attempt }
}

fn finished(phase: &str, role: AgentRole, success: bool) -> EventKind {
    EventKind::PhaseFinished { phase: phase.into(), role, success, summary: format!("success: {success}") }
}

/// Events numbered from `first`, one seq each.
fn numbered(id: TaskId, first: u64, kinds: Vec<EventKind>) -> Vec<TaskEvent> {
    kinds.into_iter().zip(first..).map(|(kind, seq)| ev(id, seq, kind)).collect()
}

async fn a_phase_run_again_keeps_each_attempts_steps_and_calls(url: String) {
    let (store, p, _) = store_with_task(&url).await;
    let phases = || vec![phase("code", "coder", &[]), phase("test", "tester", &["code"])];
    let coder = || model_call(AgentRole::Coder, Some("code"), 10, 1);
    // Attempt 1 runs two steps and fails with its last call still open; attempt 2 (after a
    // restart, say) runs the same steps again, its last result in a later batch.
    let batches = |id| {
        let first = numbered(
            id,
            1,
            vec![
                started("code", AgentRole::Coder, 1),
                coder(),
                tool_call("code", 1, "read_file"),
                tool_result("code", 1, "read_file", true, "first read"),
                coder(),
                tool_call("code", 2, "fs_write"),
                finished("code", AgentRole::Coder, false),
                started("code", AgentRole::Coder, 2),
                coder(),
                tool_call("code", 1, "read_file"),
            ],
        );
        let second = numbered(
            id,
            11,
            vec![
                tool_result("code", 1, "read_file", true, "second read"),
                coder(),
                tool_call("code", 2, "fs_write"),
                tool_result("code", 2, "fs_write", true, "second write"),
                finished("code", AgentRole::Coder, true),
            ],
        );
        vec![first, second]
    };
    let after = project_three_ways(&store, &p, phases, batches).await;
    let (phases_now, steps, calls, _) = after.last().unwrap();
    assert_eq!((phases_now[0].status, phases_now[0].attempt), (PhaseStatus::Succeeded, 2));
    let steps: Vec<_> = steps.iter().map(|s| (s.attempt, s.step, s.role)).collect();
    let coder = Some(AgentRole::Coder);
    assert_eq!(steps, [(1, 1, coder), (1, 2, coder), (2, 1, coder), (2, 2, coder)], "both attempts' steps");
    let calls: Vec<_> =
        calls.iter().map(|c| (c.call_seq, c.attempt, c.step, c.tool.as_str(), c.output.as_deref())).collect();
    assert_eq!(
        calls,
        [
            (3, 1, 1, "read_file", Some("first read")),
            // Attempt 2's result for this step and tool is not attempt 1's.
            (6, 1, 2, "fs_write", None),
            (10, 2, 1, "read_file", Some("second read")),
            (13, 2, 2, "fs_write", Some("second write")),
        ]
    );
}

async fn a_redelivered_run_adds_no_step_or_tool_call(url: String) {
    let (store, p, _) = store_with_task(&url).await;
    let phases = || vec![phase("code", "coder", &[]), phase("test", "tester", &["code"])];
    let coder = || model_call(AgentRole::Coder, Some("code"), 10, 1);
    let tester = || model_call(AgentRole::Tester, Some("test"), 10, 1);
    // A worker runs attempt 1 of "code" and dies in step 2, between its second grep and that
    // grep's result; another replica runs the attempt again from step 1, making the same calls.
    let run = |output: &str, last: bool| {
        let mut kinds = vec![
            coder(),
            tool_call("code", 1, "read_file"),
            tool_result("code", 1, "read_file", true, &format!("read, {output}")),
            coder(),
            tool_call("code", 2, "grep"),
            tool_result("code", 2, "grep", false, &format!("no match, {output}")),
            tool_call("code", 2, "grep"),
        ];
        if last {
            kinds.push(tool_result("code", 2, "grep", true, &format!("found, {output}")));
        }
        kinds
    };
    let batches = move |id| {
        let mut first = vec![started("code", AgentRole::Coder, 1)];
        first.extend(run("run 1", false));
        // "test" dies in its first step, with its only call open: the run again looks the same
        // up to a model call, which starts another turn.
        first.extend([started("test", AgentRole::Tester, 1), tester(), tool_call("test", 1, "shell_run")]);
        let mut again = run("run 2", true);
        again.extend([coder(), tool_call("code", 3, "fs_write"), tool_result("code", 3, "fs_write", true, "wrote")]);
        again.extend([tester(), tool_call("test", 1, "shell_run"), tool_result("test", 1, "shell_run", true, "ok")]);
        let first = numbered(id, 1, first);
        let again = numbered(id, first.len() as u64 + 1, again);
        vec![first, again]
    };
    let after = project_three_ways(&store, &p, phases, batches).await;

    let (_, steps_before, calls_before, _) = &after[0];
    let (_, steps, calls, _) = &after[1];
    let key = |s: &StepRow| (s.phase.clone(), s.attempt, s.step);
    assert_eq!(
        steps.iter().map(key).collect::<Vec<_>>(),
        [("code".into(), 1, 1), ("code".into(), 1, 2), ("test".into(), 1, 1), ("code".into(), 1, 3)],
        "the run again added only its new step"
    );
    assert_eq!(
        steps.iter().filter(|s| s.step < 3).cloned().collect::<Vec<_>>(),
        *steps_before,
        "steps kept as they were"
    );
    let shown: Vec<_> =
        calls.iter().map(|c| (c.call_seq, c.phase.as_str(), c.step, c.tool.as_str(), c.output.as_deref())).collect();
    assert_eq!(
        shown,
        [
            // The first run's rows and seqs; its results stand, the run again's are not projected.
            (3, "code", 1, "read_file", Some("read, run 1")),
            (6, "code", 2, "grep", Some("no match, run 1")),
            // Left open by the first run, completed by the run again.
            (8, "code", 2, "grep", Some("found, run 2")),
            (11, "test", 1, "shell_run", Some("ok")),
            (21, "code", 3, "fs_write", Some("wrote")),
        ]
    );
    assert!(calls.iter().all(|c| c.attempt == 1 && c.finished_at.is_some()), "every call ends completed");
    for (before, now) in calls_before.iter().zip(calls).filter(|(b, _)| b.success.is_some()) {
        assert_eq!(before, now, "a completed call stays as it was");
    }
}

async fn large_batches_span_several_statements(url: String) {
    let (store, _, t) = store_with_task(&url).await;
    // 18,000 events: as one statement, the events alone (5 parameters each) and the tool calls
    // (11 each) would pass the bind-parameter limits of both backends.
    let steps = 6_000u32;
    let events: Vec<TaskEvent> = (1..=steps)
        .flat_map(|step| {
            let seq = u64::from(step) * 3;
            [
                ev(t.id, seq - 2, model_call(AgentRole::Coder, Some("code"), 10, 1)),
                ev(t.id, seq - 1, tool_call("code", step, "fs_read")),
                ev(t.id, seq, tool_result("code", step, "fs_read", true, "ok")),
            ]
        })
        .collect();
    store.append_events(&events).await.unwrap();
    let check = async || {
        assert_eq!(store.next_seq(t.id).await.unwrap(), 18_001);
        assert_eq!(store.events(t.id, 0).await.unwrap().len(), 18_000);
        assert_eq!(store.steps(t.id).await.unwrap().len(), 6_000);
        assert_eq!(store.token_usage(t.id).await.unwrap().len(), 6_000);
        let calls = store.tool_calls(t.id).await.unwrap();
        assert_eq!(calls.len(), 6_000);
        assert!(calls.iter().all(|c| c.success == Some(true) && c.finished_at.is_some()), "every call completed");
    };
    check().await;
    store.append_events(&events).await.unwrap();
    check().await;
}

async fn sessions_follow_tasks_and_end_by_hand_or_when_idle(url: String) {
    use chrono::SubsecRound;
    use turbo_core::ids::SessionId;
    use turbo_store::StoredSession;
    // Session times are kept to the microsecond.
    let at = |secs| at(secs).trunc_subsecs(6);
    let store = Store::connect(&url).await.unwrap();
    let p = project("/srv/sessions");
    store.create_project(&p).await.unwrap();
    let t = task(&p, "Follow me", at(1));
    store.insert_task(&t, "/srv/sessions").await.unwrap();
    let open = |idle_s: u64| StoredSession {
        id: SessionId::new(),
        project_id: p.id,
        task_id: None,
        user: "ana".into(),
        started_at: at(10),
        last_active_at: at(10),
        ended_at: None,
        end_reason: None,
        idle_timeout: Duration::from_secs(idle_s),
        pending_reply: None,
    };
    let (a, b) = (open(60), open(3600));
    store.insert_session(&a).await.unwrap();
    store.insert_session(&b).await.unwrap();
    assert_eq!(store.get_session(a.id).await.unwrap().as_ref(), Some(&a), "reads back as written");
    assert_eq!(store.get_session(SessionId::new()).await.unwrap(), None);

    // Touching moves the idle deadline and can make the session follow a task.
    let touched = store.touch_session(a.id, at(40), Some(t.id)).await.unwrap();
    assert_eq!((touched.task_id, touched.last_active_at), (Some(t.id), at(40)));
    assert_eq!(store.touch_session(a.id, at(50), None).await.unwrap().task_id, Some(t.id), "kept");

    // An ai_request's answer is owed until one stream claims it: the claim is conditional, so
    // of two streams racing for it one gets it; a claim for another task gets nothing; an
    // answer that could not be sent is owed again.
    let owed = store.follow_task(b.id, at(20), t.id, "ask-1").await.unwrap();
    assert_eq!((owed.task_id, owed.pending_reply.as_deref()), (Some(t.id), Some("ask-1")));
    assert_eq!(store.claim_answer(b.id, TaskId::new()).await.unwrap(), None, "another task's");
    let (first, second) = tokio::join!(store.claim_answer(b.id, t.id), store.claim_answer(b.id, t.id));
    let mut claims = [first.unwrap(), second.unwrap()];
    claims.sort();
    assert_eq!(claims, [None, Some("ask-1".to_string())], "claimed once");
    assert_eq!(store.get_session(b.id).await.unwrap().unwrap().pending_reply, None);
    store.owe_answer(b.id, t.id, "ask-1").await.unwrap();
    assert_eq!(store.claim_answer(b.id, t.id).await.unwrap().as_deref(), Some("ask-1"), "owed again");
    // An ai_request without a message id is owed an answer too.
    store.follow_task(b.id, at(21), t.id, "").await.unwrap();
    assert_eq!(store.claim_answer(b.id, t.id).await.unwrap().as_deref(), Some(""));

    // 60 s after its last message `a` is idle; `b` is not.
    assert!(store.end_idle_sessions(at(100)).await.unwrap().is_empty(), "50 s idle is not 60");
    let ended = store.end_idle_sessions(at(111)).await.unwrap();
    assert_eq!(ended.iter().map(|s| s.id).collect::<Vec<_>>(), [a.id]);
    assert_eq!(ended[0].end_reason.as_deref(), Some("idle for 60 s"));
    assert_eq!(ended[0].ended_at, Some(at(111)));

    // Ending by hand; ending again keeps the first end; touching an ended session changes nothing.
    let by_hand = store.end_session(b.id, at(200), "ended by ana").await.unwrap();
    assert_eq!((by_hand.ended_at, by_hand.end_reason.as_deref()), (Some(at(200)), Some("ended by ana")));
    let again = store.end_session(b.id, at(300), "ended twice").await.unwrap();
    assert_eq!(again, by_hand);
    assert_eq!(store.touch_session(b.id, at(400), Some(t.id)).await.unwrap(), by_hand);
    let missing = store.end_session(SessionId::new(), at(1), "x").await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { what: "session", .. }), "{missing}");

    // A session needs its project; purging the project removes its sessions.
    let orphan = StoredSession { project_id: ProjectId::new(), ..open(60) };
    assert!(store.insert_session(&orphan).await.is_err(), "no such project");
    store.delete_project(p.id, at(500)).await.unwrap();
    store.purge_projects(at(600)).await.unwrap();
    assert_eq!(store.get_session(a.id).await.unwrap(), None);
}

async fn users_and_their_api_keys_are_kept_disabled_and_revoked(url: String) {
    use chrono::SubsecRound;
    let at = |secs| at(secs).trunc_subsecs(6);
    let store = Store::connect(&url).await.unwrap();
    let roles = vec!["developer".to_string(), "admin".to_string()];
    let ana = store.create_user("ana", &roles, at(1)).await.unwrap();
    assert_eq!(
        (ana.name.as_str(), ana.roles.clone(), ana.created_at, ana.disabled_at),
        ("ana", roles.clone(), at(1), None)
    );
    assert_eq!(store.get_user("ana").await.unwrap(), Some(ana.clone()));
    let taken = store.create_user("ana", &roles, at(2)).await.unwrap_err();
    assert!(matches!(taken, Error::Taken { field: "name", .. }), "{taken}");
    assert!(matches!(store.create_user(" ", &roles, at(2)).await.unwrap_err(), Error::Invalid { .. }));
    assert!(matches!(store.create_user("bob", &[], at(2)).await.unwrap_err(), Error::Invalid { .. }));
    store.create_user("bob", &["viewer".to_string()], at(3)).await.unwrap();
    let names: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["ana", "bob"]);

    // Keys are found by their hash only, with their user; touched, revoked once.
    let key = store.add_api_key("ana", "laptop", "tck_1234", "hash-1", at(4)).await.unwrap();
    assert_eq!(
        (key.user.as_str(), key.label.as_str(), key.prefix.as_str(), key.revoked_at),
        ("ana", "laptop", "tck_1234", None)
    );
    let (found, owner) = store.api_key_by_hash("hash-1").await.unwrap().expect("found by hash");
    assert_eq!((found.id, owner.name.as_str()), (key.id, "ana"));
    assert_eq!(store.api_key_by_hash("hash-2").await.unwrap(), None);
    store.touch_api_key(key.id, at(5)).await.unwrap();
    assert_eq!(store.list_api_keys("ana").await.unwrap()[0].last_used_at, Some(at(5)));
    let revoked = store.revoke_api_key(key.id, at(6)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(6)));
    assert_eq!(store.revoke_api_key(key.id, at(7)).await.unwrap().revoked_at, Some(at(6)), "revoked once");
    assert!(store.add_api_key("ana", "dup", "tck_x", "hash-1", at(8)).await.is_err(), "hashes are unique");
    assert!(matches!(store.add_api_key("zed", "x", "p", "h", at(8)).await.unwrap_err(), Error::NotFound { .. }));

    // A disabled user keeps its row and gets no new key.
    let disabled = store.disable_user("bob", at(9)).await.unwrap();
    assert_eq!(disabled.disabled_at, Some(at(9)));
    assert_eq!(store.disable_user("bob", at(10)).await.unwrap().disabled_at, Some(at(9)));
    assert!(matches!(store.add_api_key("bob", "x", "p", "h3", at(11)).await.unwrap_err(), Error::WrongState { .. }));
}

async fn services_starting_together_migrate_once(url: String) {
    // Replicas of a service start at once on a fresh database: every one connects.
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect(&url).await })
        })
        .collect();
    for connect in connects {
        let store = connect.await.unwrap().unwrap_or_else(|e| panic!("a concurrent start failed: {e}"));
        assert_eq!(store.count_requests("probe", 1, 60, 0).await.unwrap().previous, 0);
    }
}

async fn request_counts_are_shared_by_connections_and_windowed(url: String) {
    // Two connections, as two gateway replicas; concurrent hits all count.
    let (a, b) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
    // 10 s into an hour-long window (1_800_000_000 is a multiple of 3600).
    let now = 1_800_000_000 + 10;
    let hits: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.count_requests("ana", 1, 3600, now).await.unwrap() })
        })
        .collect();
    let mut seen: Vec<u64> = Vec::new();
    for hit in hits {
        seen.push(hit.await.unwrap().current);
    }
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>(), "each hit saw its own count");
    assert_eq!(b.count_requests("bob", 1, 3600, now).await.unwrap().current, 1, "per subject");
    // A replica claims several at once (a budget it serves from memory): one upsert adds them all.
    assert_eq!(b.count_requests("bob", 7, 3600, now).await.unwrap().current, 8);

    // The next window starts at 1 and sees the last one's total; two windows on, it is gone.
    let next = a.count_requests("ana", 1, 3600, now + 3600).await.unwrap();
    assert_eq!(next, turbo_store::WindowCounts { current: 1, previous: 21 - 1 });
    let later = a.count_requests("ana", 1, 3600, now + 3 * 3600).await.unwrap();
    assert_eq!(later, turbo_store::WindowCounts { current: 1, previous: 0 });
    let back = a.count_requests("ana", 1, 3600, now + 3600).await.unwrap();
    assert_eq!(back.current, 1, "the windows before the previous one were deleted");
}

async fn audit_entries_are_listed_newest_first_and_filtered(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let entry = |secs, actor: &str, action: &str, target: &str| NewAuditEntry {
        at: at(secs),
        ..NewAuditEntry::new(actor, action, target)
    };
    let peer = "grpc:127.0.0.1:50113";
    let a = store
        .record_audit(entry(1, peer, "project.create", "p-1").with_detail(json!({"name": "My App", "slug": "my-app"})))
        .await
        .unwrap();
    let b = store.record_audit(entry(2, "nats-cli", "task.create", "t-1")).await.unwrap();
    let c = store.record_audit(entry(3, peer, "task.cancel", "t-1").failed("task t-1 already finished")).await.unwrap();
    // At the same instant as c: the later entry still lists first.
    let d = store.record_audit(entry(3, "user-42", "tool.approve", "t-1")).await.unwrap();
    assert!(a < b && b < c && c < d, "ids grow: {a} {b} {c} {d}");

    let ids = |filter: AuditFilter| {
        let store = store.clone();
        async move { store.list_audit(filter).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>() }
    };
    let all = AuditFilter::default();
    assert_eq!(ids(all.clone()).await, [d, c, b, a]);
    assert_eq!(ids(AuditFilter { actor: Some(peer.into()), ..all.clone() }).await, [c, a]);
    assert_eq!(ids(AuditFilter { action: Some("task.create".into()), ..all.clone() }).await, [b]);
    assert_eq!(ids(AuditFilter { target: Some("t-1".into()), ..all.clone() }).await, [d, c, b]);
    assert_eq!(ids(AuditFilter { since: Some(at(2)), ..all.clone() }).await, [d, c, b]);
    let narrow =
        AuditFilter { actor: Some(peer.into()), target: Some("t-1".into()), since: Some(at(3)), ..all.clone() };
    assert_eq!(ids(narrow).await, [c]);
    assert_eq!(ids(AuditFilter { actor: Some("nobody".into()), ..all.clone() }).await, Vec::<i64>::new());
    assert_eq!(ids(AuditFilter { limit: 2, ..all.clone() }).await, [d, c]);
    assert_eq!(ids(AuditFilter { limit: 0, ..all.clone() }).await, [d], "a limit below 1 lists one");

    let listed = store.list_audit(all).await.unwrap();
    let failed = &listed[1];
    assert_eq!(
        (failed.actor.as_str(), failed.action.as_str(), failed.target.as_str(), failed.outcome.as_str()),
        (peer, "task.cancel", "t-1", "error: task t-1 already finished")
    );
    assert_eq!((micros(failed.at), &failed.detail), (micros(at(3)), &None));
    assert_eq!(listed[3].detail, Some(json!({"name": "My App", "slug": "my-app"})));
    assert_eq!(listed[3].outcome, "ok");
}

async fn audit_entries_keep_no_secrets_and_refuse_bad_fields(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let detail = json!({"project": "my-app", "api_key": "sk-live-123", "env": [{"DB_PASSWORD": "hunter2"}]});
    let long_target = "t".repeat(1000);
    let id = store
        .record_audit(NewAuditEntry::new("nats-cli", "project.update", &long_target).with_detail(detail))
        .await
        .unwrap();
    let huge = NewAuditEntry::new("nats-cli", "task.execute", "t-2").with_detail(json!({"log": "y".repeat(100_000)}));
    let huge_id = store.record_audit(huge).await.unwrap();

    let listed = store.list_audit(AuditFilter::default()).await.unwrap();
    let stored = listed.iter().find(|e| e.id == id).expect("stored entry");
    let text = stored.detail.as_ref().expect("detail").to_string();
    assert!(!text.contains("sk-live-123") && !text.contains("hunter2"), "secrets are not stored: {text}");
    assert_eq!(stored.detail.as_ref().unwrap()["project"], "my-app");
    assert!(stored.target.len() < 400 && stored.target.ends_with("more chars]"), "{}", stored.target);
    let clipped = listed.iter().find(|e| e.id == huge_id).unwrap().detail.clone().unwrap();
    assert_eq!((&clipped["clipped"], clipped.to_string().len() < 5000), (&json!(true), true), "{clipped}");

    let refused = [
        NewAuditEntry::new(" ", "task.create", "t-1"),
        NewAuditEntry::new("nats-cli", "Task Create", "t-1"),
        NewAuditEntry::new("nats-cli", "", "t-1"),
        NewAuditEntry { outcome: "failed".into(), ..NewAuditEntry::new("nats-cli", "task.create", "t-1") },
    ];
    for entry in refused {
        let e = store.record_audit(entry.clone()).await.unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{entry:?}: {e}");
    }
    assert_eq!(store.list_audit(AuditFilter::default()).await.unwrap().len(), 2, "refused entries leave no trace");
}

// ---------------------------------------------------------------------------------------------
// SQLite-only: opening files
// ---------------------------------------------------------------------------------------------

fn assert_unwritable(e: Error, path: &Path) {
    let shown = e.to_string();
    assert!(matches!(&e, Error::Unwritable { path: p, .. } if p == path), "{e:?}");
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    assert!(shown.contains("writable place"), "{shown}");
}

#[tokio::test]
async fn open_sqlite_creates_directories_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b c/#data?/turbo.db");
    let store = Store::open_sqlite(&path).await.expect("creates parent directories");
    assert_eq!(store.backend(), "sqlite");
    let p = project("/srv/app");
    store.upsert_project(&p).await.unwrap();
    drop(store);
    assert!(path.is_file());
    let again = Store::open_sqlite(&path).await.expect("reopens");
    assert_eq!(again.project_by_root("/srv/app").await.unwrap(), Some(p));
}

#[tokio::test]
async fn open_sqlite_under_a_file_is_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.txt");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.join("data/turbo.db");
    assert_unwritable(Store::open_sqlite(&path).await.unwrap_err(), &path);
}

#[tokio::test]
async fn open_sqlite_in_proc_is_unwritable() {
    let path = Path::new("/proc/x/turbo.db");
    assert_unwritable(Store::open_sqlite(path).await.unwrap_err(), path);
    let path = Path::new("/proc/x");
    assert_unwritable(Store::open_sqlite(path).await.unwrap_err(), path);
}

#[tokio::test]
async fn open_sqlite_on_a_directory_is_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    assert_unwritable(Store::open_sqlite(dir.path()).await.unwrap_err(), dir.path());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turbo.db");
    std::fs::write(&path, "this is plain text, not a SQLite database\n".repeat(200)).unwrap();
    let e = Store::open_sqlite(&path).await.unwrap_err();
    assert!(matches!(&e, Error::Corrupt { what, .. } if what.contains(&path.display().to_string())), "{e:?}");
}

#[tokio::test]
async fn memory_databases_and_unsupported_urls() {
    let store = Store::connect("sqlite::memory:").await.expect("in-memory store");
    let p = project("/srv/app");
    store.upsert_project(&p).await.unwrap();
    assert_eq!(store.clone().project_by_root("/srv/app").await.unwrap(), Some(p));

    let e = Store::connect("mysql://root:hunter2@db/x").await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedUrl { .. }), "{e}");
    assert!(!e.to_string().contains("hunter2"), "passwords never show: {e}");
}

#[tokio::test]
async fn unreachable_postgres_is_reported_without_the_password() {
    // A listener that hangs up at once: the driver fails without retrying (a refused connection
    // would be retried until the connect timeout, as for a server still starting).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hang_up = tokio::spawn(async move {
        for _ in 0..5 {
            let Ok((socket, _)) = listener.accept().await else { return };
            drop(socket);
        }
    });
    let e = Store::connect(&format!("postgres://u:hunter2@127.0.0.1:{port}/x")).await.unwrap_err();
    hang_up.abort();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    let shown = e.to_string();
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(!shown.contains("hunter2") && shown.contains("check that the server is running"), "{shown}");
}
