//! The event log and the tables projected from it.
//!
//! Appending works a batch at a time, in a few multi-row statements per table rather than
//! several statements per event: the events go in with INSERTs that return which of them were
//! new; the projections of the new ones are gathered in memory, in event order, from what the
//! batch needs of the stored state (the phases of the latest plans, the tool calls of the steps
//! the batch names, where the phases' current model turns began);
//! and each projected table is then written with multi-row INSERTs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict, Order, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, Iterable,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use uuid::Uuid;

use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent, clip};
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::tool::TokenUsage;

use crate::Store;
use crate::codec::{body, col, from_i64, opt_role, role, to_body, to_i64};
use crate::entity::{event, phase, plan, step, task, token_usage, tool_call};
use crate::error::{Error, Result, db};
use crate::rows::{PhaseRow, PhaseStatus, StepRow, ToolCallRow, UsageRow};

/// Characters of a tool's output kept in `tool_calls.output`; the event body keeps what the
/// event carried.
const MAX_OUTPUT_CHARS: usize = 2000;

/// Bytes one statement's values come to at most (estimated: see [`statements`]), so that it
/// goes out in one write. sqlx 0.9.0 leaves Nagle's algorithm on (it sets no TCP_NODELAY,
/// launchbadge/sqlx#4335), and over TLS each record of at most 16 KiB is its own write: the
/// second write of a larger statement waits for the server's delayed ACK, 40 ms on Linux. A
/// batch of 256 events with 1 KiB tool outputs sent as one statement stalled that way most of
/// the time, at a few thousand events per second.
const MAX_STATEMENT_BYTES: usize = 14 * 1024;
/// Bytes counted per bind parameter besides text and JSON lengths: its length prefix and a
/// fixed-size value (uuid, integer, timestamp).
const PARAM_BYTES: usize = 16;
// The byte budget also keeps a statement's bind parameters far below the backends' limits:
// 32,766 on SQLite (SQLITE_MAX_VARIABLE_NUMBER since 3.32), 65,535 on Postgres.
const _: () = assert!(MAX_STATEMENT_BYTES / PARAM_BYTES < 32_766);
/// Terms one lookup ORs together (runs of steps of a (task, phase, attempt, tool) for tool
/// calls, (task, phase) pairs for model turns), and steps per run: sea-query nests an OR chain
/// one level per term, so thousands of terms overflow the stack.
const MAX_LOOKUP_GROUPS: usize = 64;
const MAX_LOOKUP_STEPS: usize = 200;
/// Steps further apart than this go to separate terms of a tool-call lookup, each bounded by its
/// lowest and highest step (see [`StoredState::load_calls`]).
const MAX_LOOKUP_STEP_GAP: i64 = 16;

impl Store {
    /// Appends events in one transaction, with their projections:
    /// - `PhaseStarted`: the phase (of the task's latest plan) becomes `running`, with the
    ///   attempt and start time; a finish of an earlier attempt is cleared.
    /// - `PhaseFinished`: `succeeded` or `failed`, with the summary and finish time.
    /// - `ToolCall`: a `steps` row (if new) and an open `tool_calls` row, both under the attempt
    ///   of the phase's latest `PhaseStarted` (1 if it has none), so a phase run again keeps
    ///   each attempt's rows apart. A redelivered run of an attempt (the same steps again, with
    ///   new seqs) adds no row: its step is the stored step, and its k-th call of a tool in a
    ///   step is the stored call with that ordinal (`call_index`), counted per model turn (from
    ///   the phase's latest `ModelCall`), since a run makes one turn per step.
    /// - `ToolResult`: completes the latest open call of (task, phase, attempt, step, tool)
    ///   made in the current turn; one arriving after the turn made none (a late result)
    ///   completes the latest open call of the key. A result for a call of this turn already
    ///   completed (a redelivered run's) is not projected.
    /// - `ModelCall`: a `token_usage` row, and a new turn of its phase.
    ///
    /// The projections are those of appending the events one at a time, in the order given.
    /// Idempotent: an event whose `(task_id, seq)` is already stored (or comes earlier in the
    /// same batch) is skipped together with its projections, so a redelivered event never
    /// duplicates a row and a replayed batch changes nothing. All tasks must be stored.
    pub async fn append_events(&self, events: &[TaskEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            if e.seq == 0 {
                return Err(Error::Invalid {
                    what: format!("event {} of task {}", e.kind.name(), e.task_id),
                    reason: "seq is 0; seqs start at 1 (see next_seq)".to_string(),
                });
            }
        }
        // Rows are built before the transaction, so a bad event costs no round trip.
        let mut batch: Vec<(&TaskEvent, i64)> = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        let mut keys = HashSet::with_capacity(events.len());
        for e in events {
            let what = || format!("event {}#{} of task {}", e.kind.name(), e.seq, e.task_id);
            let seq = to_i64(e.seq, &what())?;
            if !keys.insert((e.task_id.0, seq)) {
                tracing::debug!(task = %e.task_id, seq = e.seq, "event repeated within its batch; skipped");
                continue;
            }
            rows.push(event::ActiveModel {
                task_id: Set(e.task_id.0),
                seq: Set(seq),
                at: Set(e.at),
                kind: Set(e.kind.name().to_string()),
                body: Set(to_body(e, what)?),
            });
            batch.push((e, seq));
        }

        let txn = self.begin_write("append events").await?;
        let tasks: BTreeSet<TaskId> = batch.iter().map(|(e, _)| e.task_id).collect();
        ensure_tasks_exist(&txn, &tasks).await?;
        let stored = insert_events(&txn, rows).await?;
        let fresh: Vec<(&TaskEvent, i64)> = batch
            .into_iter()
            .filter(|(e, seq)| {
                let new = stored.contains(&(e.task_id.0, *seq));
                if !new {
                    tracing::debug!(task = %e.task_id, seq = e.seq, "event already stored; skipped");
                }
                new
            })
            .collect();
        if !fresh.is_empty() {
            let (state, attempts) = StoredState::load(&txn, &fresh).await?;
            let projection = Projection::gather(state, &fresh, &attempts)?;
            projection.write(&txn).await?;
        }
        txn.commit().await.map_err(db("commit appended events"))
    }

    /// The seq the task's next event gets: one past the highest stored, 1 when none is.
    pub async fn next_seq(&self, task_id: TaskId) -> Result<u64> {
        let max: Option<i64> = event::Entity::find()
            .select_only()
            .expr(Expr::col(event::Column::Seq).max())
            .filter(event::Column::TaskId.eq(task_id.0))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await
            .map_err(db(format!("read the last event of task {task_id}")))?
            .flatten();
        let last: u64 = from_i64(max.unwrap_or(0), || format!("last event seq of task {task_id}"))?;
        Ok(last + 1)
    }

    /// The task's events with a seq above `after_seq`, in order; 0 gives all of them.
    pub async fn events(&self, task_id: TaskId, after_seq: u64) -> Result<Vec<TaskEvent>> {
        use event::Column as C;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let q = event::Entity::find()
            .select_only()
            .columns([C::Seq, C::Body])
            .filter(C::TaskId.eq(task_id.0))
            .filter(C::Seq.gt(after))
            .order_by_asc(C::Seq);
        let rows = self.rows(q).await.map_err(db(format!("read the events of task {task_id}")))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = col(row, "seq", || format!("an event of task {task_id}"))?;
                let what = || format!("event #{seq} of task {task_id}");
                let e: TaskEvent = body(col(row, "body", what)?, what)?;
                if e.task_id != task_id || i64::try_from(e.seq).ok() != Some(seq) {
                    return Err(Error::Corrupt {
                        what: what(),
                        reason: format!("its body is event #{} of task {}", e.seq, e.task_id),
                    });
                }
                Ok(e)
            })
            .collect()
    }

    /// The phases of the task's latest plan, in execution order; empty without a plan.
    pub async fn phases(&self, task_id: TaskId) -> Result<Vec<PhaseRow>> {
        let Some(plan_id) = latest_plan_id(&self.db, task_id).await? else { return Ok(Vec::new()) };
        let rows = phase::Entity::find()
            .filter(phase::Column::PlanId.eq(plan_id))
            .order_by_asc(phase::Column::Position)
            .all(&self.db)
            .await
            .map_err(db(format!("read the phases of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("phase '{}' of plan {}", r.name, r.plan_id);
                Ok(PhaseRow {
                    task_id: TaskId(r.task_id),
                    plan_id: PlanId(r.plan_id),
                    position: from_i64(r.position, what)?,
                    role: opt_role(r.role.as_deref(), what)?,
                    status: PhaseStatus::parse(&r.status).ok_or_else(|| Error::Corrupt {
                        what: what(),
                        reason: format!("unknown status '{}'", r.status),
                    })?,
                    attempt: from_i64(r.attempt, what)?,
                    summary: r.summary,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    name: r.name,
                })
            })
            .collect()
    }

    /// The task's tool-loop steps, in the order they began.
    pub async fn steps(&self, task_id: TaskId) -> Result<Vec<StepRow>> {
        use step::Column as C;
        let rows = step::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::CreatedAt)
            .order_by_asc(C::Phase)
            .order_by_asc(C::Attempt)
            .order_by_asc(C::Step)
            .all(&self.db)
            .await
            .map_err(db(format!("read the steps of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what =
                    || format!("step {} of phase '{}' (attempt {}) of task {task_id}", r.step, r.phase, r.attempt);
                Ok(StepRow {
                    task_id,
                    attempt: from_i64(r.attempt, what)?,
                    step: from_i64(r.step, what)?,
                    role: opt_role(r.role.as_deref(), what)?,
                    created_at: r.created_at,
                    phase: r.phase,
                })
            })
            .collect()
    }

    /// The task's tool calls in the order they were made.
    pub async fn tool_calls(&self, task_id: TaskId) -> Result<Vec<ToolCallRow>> {
        use tool_call::Column as C;
        let rows = tool_call::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::CallSeq)
            .all(&self.db)
            .await
            .map_err(db(format!("read the tool calls of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("tool call #{} of task {task_id}", r.call_seq);
                Ok(ToolCallRow {
                    task_id,
                    attempt: from_i64(r.attempt, what)?,
                    step: from_i64(r.step, what)?,
                    call_seq: from_i64(r.call_seq, what)?,
                    duration_ms: r.duration_ms.map(|d| from_i64(d, what)).transpose()?,
                    phase: r.phase,
                    tool: r.tool,
                    arguments: r.arguments,
                    success: r.success,
                    output: r.output,
                    created_at: r.created_at,
                    finished_at: r.finished_at,
                })
            })
            .collect()
    }

    /// One row per model call of the task, in order.
    pub async fn token_usage(&self, task_id: TaskId) -> Result<Vec<UsageRow>> {
        use token_usage::Column as C;
        let rows = token_usage::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::EventSeq)
            .all(&self.db)
            .await
            .map_err(db(format!("read the token usage of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("model call #{} of task {task_id}", r.event_seq);
                Ok(UsageRow {
                    task_id,
                    event_seq: from_i64(r.event_seq, what)?,
                    role: role(&r.role, what)?,
                    usage: TokenUsage {
                        prompt_tokens: from_i64(r.prompt_tokens, what)?,
                        completion_tokens: from_i64(r.completion_tokens, what)?,
                    },
                    latency_ms: from_i64(r.latency_ms, what)?,
                    ttft_ms: r.ttft_ms.map(|t| from_i64(t, what)).transpose()?,
                    at: r.created_at,
                    phase: r.phase,
                    model: r.model,
                })
            })
            .collect()
    }

    /// Tokens the task used, summed per role; roles that made no call are absent.
    pub async fn usage_by_role(&self, task_id: TaskId) -> Result<BTreeMap<AgentRole, TokenUsage>> {
        let mut by_role: BTreeMap<AgentRole, TokenUsage> = BTreeMap::new();
        for row in self.token_usage(task_id).await? {
            *by_role.entry(row.role).or_default() += row.usage;
        }
        Ok(by_role)
    }
}

/// The id of the task's plan with the highest version.
async fn latest_plan_id<C: ConnectionTrait>(c: &C, task_id: TaskId) -> Result<Option<Uuid>> {
    plan::Entity::find()
        .select_only()
        .column(plan::Column::Id)
        .filter(plan::Column::TaskId.eq(task_id.0))
        .order_by_desc(plan::Column::Version)
        .limit(1)
        .into_tuple::<Uuid>()
        .one(c)
        .await
        .map_err(db(format!("look up the plan of task {task_id}")))
}

/// `rows` in runs that each fit one statement of about [`MAX_STATEMENT_BYTES`], a row counting
/// `params_per_row` parameters and `row_bytes` of text and JSON. A row larger than the budget
/// gets a statement of its own. Runs are a power of two long, so that a table's INSERTs come in
/// a few shapes, which sqlx's per-connection cache of prepared statements (100) keeps prepared.
fn statements<T>(rows: Vec<T>, params_per_row: usize, row_bytes: impl Fn(&T) -> usize) -> impl Iterator<Item = Vec<T>> {
    let cost = move |row: &T| row_bytes(row) + params_per_row * PARAM_BYTES;
    let mut rows = VecDeque::from(rows);
    std::iter::from_fn(move || {
        let (mut fit, mut bytes) = (0usize, 0);
        for row in &rows {
            bytes += cost(row);
            if fit > 0 && bytes > MAX_STATEMENT_BYTES {
                break;
            }
            fit += 1;
        }
        (fit > 0).then(|| rows.drain(..1 << fit.ilog2()).collect())
    })
}

/// The bytes of a JSON value's text, close enough to size statements.
fn json_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => json_string_bytes(s),
        Value::Array(items) => 2 + items.iter().map(|v| json_bytes(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields.iter().map(|(k, v)| json_string_bytes(k) + 1 + json_bytes(v) + 1).sum::<usize>()
        }
    }
}

/// A JSON string's bytes with its quotes and escapes: a tool's output can be mostly newlines.
fn json_string_bytes(s: &str) -> usize {
    let escaped: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..0x20 => 5,
            _ => 0,
        })
        .sum();
    s.len() + escaped + 2
}

/// The bytes of a text column's value.
fn text_bytes(v: &sea_orm::ActiveValue<String>) -> usize {
    v.try_as_ref().map_or(0, String::len)
}

/// Inserts `rows` with a multi-row INSERT per [`statements`] run.
async fn insert_all<A>(
    txn: &DatabaseTransaction,
    rows: Vec<A>,
    row_bytes: impl Fn(&A) -> usize,
    on_conflict: OnConflict,
    what: &str,
) -> Result<()>
where
    A: ActiveModelTrait,
{
    // An upper bound: columns left NotSet take no parameter.
    let columns = <A::Entity as EntityTrait>::Column::iter().count();
    for run in statements(rows, columns, row_bytes) {
        let n = run.len();
        A::Entity::insert_many(run)
            .on_conflict(on_conflict.clone())
            .exec_without_returning(txn)
            .await
            .map_err(db(format!("record {n} {what}")))?;
    }
    Ok(())
}

/// Fails with `NotFound` for the first of `tasks` that is not stored, so a missing task is
/// reported as such rather than as a foreign key violation.
async fn ensure_tasks_exist(txn: &DatabaseTransaction, tasks: &BTreeSet<TaskId>) -> Result<()> {
    let mut found = HashSet::with_capacity(tasks.len());
    for ids in statements(tasks.iter().map(|t| t.0).collect(), 1, |_| 0) {
        let rows: Vec<Uuid> = task::Entity::find()
            .select_only()
            .column(task::Column::Id)
            .filter(task::Column::Id.is_in(ids))
            .into_tuple()
            .all(txn)
            .await
            .map_err(db("look up the tasks of the events"))?;
        found.extend(rows);
    }
    match tasks.iter().find(|t| !found.contains(&t.0)) {
        Some(missing) => Err(Error::NotFound { what: "task", id: missing.to_string() }),
        None => Ok(()),
    }
}

/// Inserts the events, skipping those already stored; returns the `(task_id, seq)` of the ones
/// it stored (RETURNING lists only rows really inserted, on both backends).
async fn insert_events(txn: &DatabaseTransaction, rows: Vec<event::ActiveModel>) -> Result<HashSet<(Uuid, i64)>> {
    use event::Column as C;
    let mut stored = HashSet::with_capacity(rows.len());
    let columns = C::iter().count();
    let row_bytes = |r: &event::ActiveModel| text_bytes(&r.kind) + r.body.try_as_ref().map_or(0, json_bytes);
    for run in statements(rows, columns, row_bytes) {
        let n = run.len();
        let mut insert = event::Entity::insert_many(run).into_query();
        insert
            .on_conflict(OnConflict::columns([C::TaskId, C::Seq]).do_nothing().to_owned())
            .returning(Query::returning().columns([C::TaskId, C::Seq]));
        let inserted = txn.query_all(&insert).await.map_err(db(format!("append {n} events")))?;
        for row in &inserted {
            let what = || "an appended event".to_string();
            stored.insert((col(row, "task_id", what)?, col(row, "seq", what)?));
        }
    }
    Ok(stored)
}

/// A tool call's identity short of its index: the attempt of its phase and what a `ToolCall` or
/// `ToolResult` names, (task, phase, attempt, step, tool).
type CallKey = (TaskId, String, i64, i64, String);

/// The key of a tool event, under the attempt its phase is at.
fn call_key(e: &TaskEvent, attempt: i64) -> Option<CallKey> {
    match &e.kind {
        EventKind::ToolCall { phase, step, tool, .. } | EventKind::ToolResult { phase, step, tool, .. } => {
            Some((e.task_id, phase.clone(), attempt, i64::from(*step), tool.clone()))
        }
        _ => None,
    }
}

/// A tool call of a key, stored or made in this batch.
struct KnownCall {
    call_index: i64,
    /// Seq of the latest `ToolCall` event projected onto the call.
    seen_seq: i64,
    /// No result has completed it yet.
    open: bool,
    row: CallRow,
}

enum CallRow {
    /// Stored by an earlier batch, with this id.
    Stored(i64),
    /// Made by this batch: an index into [`Projection::calls`].
    New(usize),
}

/// A phase of a task's latest plan, as stored.
struct PhaseState {
    /// The `role` column.
    role: Option<String>,
    /// The attempt of its latest `PhaseStarted`; 0 before the first.
    attempt: i64,
}

/// What the batch's projections read from the database, loaded once per batch and then kept
/// current as the batch's events are applied in memory.
#[derive(Default)]
struct StoredState {
    /// The latest plan of each task that has phase or tool events in the batch.
    latest_plan: HashMap<TaskId, Uuid>,
    /// Every phase of those plans, by (plan, phase name).
    phases: HashMap<(Uuid, String), PhaseState>,
    /// Every call of each key the batch has tool events for.
    calls: HashMap<CallKey, Vec<KnownCall>>,
    /// Where the current model turn of a (task, phase) began: the seq of its latest `ModelCall`.
    /// Loaded only for the pairs [`StoredState::turns_needed`] names. The others, until the
    /// batch's own model call of the pair, meet only this batch's calls (which come after any
    /// stored model call, so 0 counts them as the turn's) or results the turn does not change.
    turns: HashMap<(TaskId, String), i64>,
}

impl StoredState {
    /// Loads what the batch needs; returns it with the attempt of each event's phase (see
    /// [`StoredState::attempts`]).
    async fn load(txn: &DatabaseTransaction, fresh: &[(&TaskEvent, i64)]) -> Result<(StoredState, Vec<i64>)> {
        let with_phases: BTreeSet<TaskId> = fresh
            .iter()
            .filter(|(e, _)| {
                matches!(
                    e.kind,
                    EventKind::PhaseStarted { .. }
                        | EventKind::PhaseFinished { .. }
                        | EventKind::ToolCall { .. }
                        | EventKind::ToolResult { .. }
                )
            })
            .map(|(e, _)| e.task_id)
            .collect();
        let mut state = StoredState::default();
        state.load_phases(txn, with_phases).await?;
        let attempts = state.attempts(fresh);
        let keys = fresh.iter().zip(&attempts).filter_map(|((e, _), attempt)| call_key(e, *attempt)).collect();
        state.load_calls(txn, keys).await?;
        let turns = state.turns_needed(fresh, &attempts);
        state.load_turns(txn, turns).await?;
        Ok((state, attempts))
    }

    async fn load_phases(&mut self, txn: &DatabaseTransaction, tasks: BTreeSet<TaskId>) -> Result<()> {
        let mut latest: HashMap<TaskId, (i64, Uuid)> = HashMap::new();
        for ids in statements(tasks.into_iter().map(|t| t.0).collect(), 1, |_| 0) {
            use plan::Column as C;
            let plans: Vec<(Uuid, Uuid, i64)> = plan::Entity::find()
                .select_only()
                .columns([C::Id, C::TaskId, C::Version])
                .filter(C::TaskId.is_in(ids))
                .into_tuple()
                .all(txn)
                .await
                .map_err(db("look up the plans of the events' tasks"))?;
            for (id, task, version) in plans {
                let newest = latest.entry(TaskId(task)).or_insert((version, id));
                if version > newest.0 {
                    *newest = (version, id);
                }
            }
        }
        self.latest_plan = latest.into_iter().map(|(task, (_, plan))| (task, plan)).collect();
        for ids in statements(self.latest_plan.values().copied().collect(), 1, |_| 0) {
            use phase::Column as C;
            let phases: Vec<(Uuid, String, Option<String>, i64)> = phase::Entity::find()
                .select_only()
                .columns([C::PlanId, C::Name, C::Role, C::Attempt])
                .filter(C::PlanId.is_in(ids))
                .into_tuple()
                .all(txn)
                .await
                .map_err(db("look up the phases of the events' tasks"))?;
            self.phases.extend(
                phases.into_iter().map(|(plan, name, role, attempt)| ((plan, name), PhaseState { role, attempt })),
            );
        }
        Ok(())
    }

    /// The attempt each event's phase is at when the event comes (0 for events of no phase):
    /// that of the phase's latest `PhaseStarted` earlier in the batch, else the stored one; 1
    /// for a phase that has not started, or that the task's latest plan lacks (a `PhaseStarted`
    /// of it is not projected, so it is not counted here either).
    fn attempts(&self, fresh: &[(&TaskEvent, i64)]) -> Vec<i64> {
        let mut started: HashMap<(TaskId, &str), i64> = HashMap::new();
        fresh
            .iter()
            .map(|(e, _)| match &e.kind {
                EventKind::PhaseStarted { phase, attempt, .. } => {
                    if self.phase(e.task_id, phase).is_some() {
                        started.insert((e.task_id, phase.as_str()), Ord::max(i64::from(*attempt), 1));
                    }
                    0
                }
                EventKind::ToolCall { phase, .. } | EventKind::ToolResult { phase, .. } => started
                    .get(&(e.task_id, phase.as_str()))
                    .copied()
                    .unwrap_or_else(|| self.phase(e.task_id, phase).map_or(1, |p| Ord::max(p.attempt, 1))),
                _ => 0,
            })
            .collect()
    }

    async fn load_calls(&mut self, txn: &DatabaseTransaction, keys: BTreeSet<CallKey>) -> Result<()> {
        use tool_call::Column as C;
        // By (task, phase, attempt, tool) and a run of nearby steps, as the unique index
        // (`ux_tool_calls_call`) has its columns. Closed calls are read too: a redelivered run
        // makes them again, and must find them. The run's lowest and highest step bound the
        // scan: Postgres, before it has statistics of the table, leaves the IN list to a filter
        // and would read every call of the (task, phase, attempt, tool).
        let mut groups: BTreeMap<(TaskId, String, i64, String), Vec<i64>> = BTreeMap::new();
        for (task, phase, attempt, step, tool) in keys {
            // Keys are sorted, so each group's steps ascend.
            groups.entry((task, phase, attempt, tool)).or_default().push(step);
        }
        let groups: Vec<_> = groups
            .iter()
            .flat_map(|(group, steps)| {
                let runs = steps.chunk_by(|a, b| b - a <= MAX_LOOKUP_STEP_GAP);
                runs.flat_map(|run| run.chunks(MAX_LOOKUP_STEPS)).map(move |steps| (group, steps))
            })
            .collect();
        for run in groups.chunks(MAX_LOOKUP_GROUPS) {
            let any = run.iter().fold(Condition::any(), |any, ((task, phase, attempt, tool), steps)| {
                any.add(
                    Condition::all()
                        .add(C::TaskId.eq(task.0))
                        .add(C::Phase.eq(phase.as_str()))
                        .add(C::Attempt.eq(*attempt))
                        .add(C::Tool.eq(tool.as_str()))
                        .add(C::Step.between(steps[0], steps[steps.len() - 1]))
                        .add(C::Step.is_in(steps.iter().copied())),
                )
            });
            type Row = (i64, Uuid, String, i64, i64, String, i64, i64, Option<chrono::DateTime<chrono::Utc>>);
            let calls: Vec<Row> = tool_call::Entity::find()
                .select_only()
                .columns([
                    C::Id,
                    C::TaskId,
                    C::Phase,
                    C::Attempt,
                    C::Step,
                    C::Tool,
                    C::CallIndex,
                    C::SeenSeq,
                    C::FinishedAt,
                ])
                .filter(any)
                .into_tuple()
                .all(txn)
                .await
                .map_err(db("look up the tool calls of the events"))?;
            for (id, task, phase, attempt, step, tool, call_index, seen_seq, finished_at) in calls {
                let call = KnownCall { call_index, seen_seq, open: finished_at.is_none(), row: CallRow::Stored(id) };
                self.calls.entry((TaskId(task), phase, attempt, step, tool)).or_default().push(call);
            }
        }
        Ok(())
    }

    /// The (task, phase) pairs whose current turn the batch must know: those with a tool event
    /// for a key with stored calls before the batch has a model call of that phase. Except the
    /// most common one, a result for a call an earlier batch made: a key's first event in the
    /// batch, a result, finds the same call in any turn when every stored call is still open.
    fn turns_needed(&self, fresh: &[(&TaskEvent, i64)], attempts: &[i64]) -> BTreeSet<(TaskId, String)> {
        let mut turned: HashSet<(TaskId, &str)> = HashSet::new();
        let mut met: HashSet<CallKey> = HashSet::new();
        let mut needed = BTreeSet::new();
        for ((e, _), attempt) in fresh.iter().zip(attempts) {
            match &e.kind {
                EventKind::ModelCall { phase: Some(phase), .. } => {
                    turned.insert((e.task_id, phase.as_str()));
                }
                EventKind::ToolCall { phase, .. } | EventKind::ToolResult { phase, .. } => {
                    if turned.contains(&(e.task_id, phase.as_str())) {
                        continue;
                    }
                    let Some(key) = call_key(e, *attempt) else { continue };
                    let Some(stored) = self.calls.get(&key) else { continue };
                    let all_open = stored.iter().all(|c| c.open);
                    let first = met.insert(key);
                    if !(first && all_open && matches!(e.kind, EventKind::ToolResult { .. })) {
                        needed.insert((e.task_id, phase.clone()));
                    }
                }
                _ => {}
            }
        }
        needed
    }

    async fn load_turns(&mut self, txn: &DatabaseTransaction, pairs: BTreeSet<(TaskId, String)>) -> Result<()> {
        use token_usage::Column as C;
        let pairs: Vec<_> = pairs.into_iter().collect();
        for run in pairs.chunks(MAX_LOOKUP_GROUPS) {
            // One row, a column per pair, each the last model call of one (task, phase): both
            // backends read `ux_token_usage_event` backwards from the task's last model call and
            // stop at the phase's, usually that very one; a GROUP BY would read every model call
            // of the phases.
            let mut latest = Query::select();
            for (i, (task, phase)) in run.iter().enumerate() {
                let last = Query::select()
                    .column(C::EventSeq)
                    .from(token_usage::Entity)
                    .and_where(C::TaskId.eq(task.0))
                    .and_where(C::Phase.eq(phase.as_str()))
                    .order_by(C::EventSeq, Order::Desc)
                    .limit(1)
                    .to_owned();
                latest.expr_as(Expr::SubQuery(None, Box::new(last.into())), format!("turn_{i}"));
            }
            let what = || "the latest model calls of the events' phases".to_string();
            let row = txn.query_one(&latest).await.map_err(db(format!("look up {}", what())))?;
            let Some(row) = row else { continue };
            for (i, (task, phase)) in run.iter().enumerate() {
                if let Some(seq) = col::<Option<i64>>(&row, &format!("turn_{i}"), what)? {
                    self.turns.insert((*task, phase.clone()), seq);
                }
            }
        }
        Ok(())
    }

    /// The phase of the task's latest plan named `name`, if the plan has it.
    fn phase(&self, task: TaskId, name: &str) -> Option<&PhaseState> {
        let plan = self.latest_plan.get(&task)?;
        self.phases.get(&(*plan, name.to_string()))
    }

    /// The plan whose phase row `name` a phase event of `task` changes; None (logged) when there
    /// is no such row: the event stays in the log but changes no phase.
    fn phase_row(&self, task: TaskId, name: &str) -> Option<Uuid> {
        let Some(plan) = self.latest_plan.get(&task) else {
            tracing::warn!(%task, phase = name, "phase event before any plan is stored; not projected");
            return None;
        };
        if !self.phases.contains_key(&(*plan, name.to_string())) {
            tracing::warn!(%task, phase = name, "phase event for a phase the latest plan does not have; not projected");
            return None;
        }
        Some(*plan)
    }

    /// The role recorded for the phase in the task's latest plan.
    fn role(&self, task: TaskId, name: &str) -> Option<String> {
        self.phase(task, name)?.role.clone()
    }

    /// The seq where the phase's current model turn began; 0 before its first model call.
    fn turn(&self, task: TaskId, phase: &str) -> i64 {
        self.turns.get(&(task, phase.to_string())).copied().unwrap_or(0)
    }
}

/// The rows a batch's new events project to, gathered in event order.
#[derive(Default)]
struct Projection {
    /// The columns the batch sets per phase row (plan, name); a later event overrides an
    /// earlier one's columns, as successive UPDATEs would.
    phases: BTreeMap<(Uuid, String), phase::ActiveModel>,
    steps: Vec<step::ActiveModel>,
    /// New tool calls; one completed later in the batch is written completed.
    calls: Vec<tool_call::ActiveModel>,
    /// Changes to tool calls stored by earlier batches, by row id: completions, and the seq of
    /// a redelivered run's event for the call.
    updates: BTreeMap<i64, tool_call::ActiveModel>,
    usage: Vec<token_usage::ActiveModel>,
}

impl Projection {
    /// Applies the new events, in order, to the stored state they need; `attempts` holds the
    /// attempt of each event's phase.
    fn gather(mut state: StoredState, fresh: &[(&TaskEvent, i64)], attempts: &[i64]) -> Result<Projection> {
        let mut out = Projection::default();
        // A step with several tool calls gets its row from the first one.
        let mut steps_seen: HashSet<(TaskId, String, i64, i64)> = HashSet::new();
        for (&(e, seq), &attempt) in fresh.iter().zip(attempts) {
            let task = e.task_id;
            match &e.kind {
                EventKind::PhaseStarted { phase, role, attempt } => {
                    let Some(plan) = state.phase_row(task, phase) else { continue };
                    let role = role.as_str().to_string();
                    if let Some(p) = state.phases.get_mut(&(plan, phase.clone())) {
                        p.role = Some(role.clone());
                    }
                    let set = out.phases.entry((plan, phase.clone())).or_default();
                    set.role = Set(Some(role));
                    set.status = Set(PhaseStatus::Running.as_str().to_string());
                    set.attempt = Set(i64::from(*attempt));
                    set.started_at = Set(Some(e.at));
                    // A repeated phase is running again: the earlier attempt's end no longer holds.
                    set.summary = Set(None);
                    set.finished_at = Set(None);
                }
                EventKind::PhaseFinished { phase, success, summary, .. } => {
                    let Some(plan) = state.phase_row(task, phase) else { continue };
                    let status = if *success { PhaseStatus::Succeeded } else { PhaseStatus::Failed };
                    let set = out.phases.entry((plan, phase.clone())).or_default();
                    set.status = Set(status.as_str().to_string());
                    set.summary = Set(Some(summary.clone()));
                    set.finished_at = Set(Some(e.at));
                }
                EventKind::ToolCall { phase, step, tool, arguments } => {
                    let step = i64::from(*step);
                    // A redelivered run repeats the steps its attempt already has: same rows.
                    if steps_seen.insert((task, phase.clone(), attempt, step)) {
                        out.steps.push(step::ActiveModel {
                            task_id: Set(task.0),
                            phase: Set(phase.clone()),
                            attempt: Set(attempt),
                            step: Set(step),
                            role: Set(state.role(task, phase)),
                            created_at: Set(e.at),
                        });
                    }
                    // Calls are numbered per model turn: a run of an attempt makes one turn per
                    // step, so the k-th call of a tool in a step is the same call in every run
                    // of the attempt. This turn's earlier calls of the key have 0, 1, ...
                    let turn = state.turn(task, phase);
                    let calls = state.calls.entry((task, phase.clone(), attempt, step, tool.clone())).or_default();
                    let call_index = to_i64(calls.iter().filter(|c| c.seen_seq > turn).count(), "tool call index")?;
                    if let Some(call) = calls.iter_mut().find(|c| c.call_index == call_index) {
                        tracing::debug!(
                            %task, seq = e.seq, %phase, attempt, step, %tool, call_index,
                            "tool call already recorded (a redelivered run); no new row"
                        );
                        call.seen_seq = seq;
                        match call.row {
                            CallRow::New(i) => out.calls[i].seen_seq = Set(seq),
                            CallRow::Stored(id) => out.updates.entry(id).or_default().seen_seq = Set(seq),
                        }
                        continue;
                    }
                    out.calls.push(tool_call::ActiveModel {
                        id: NotSet,
                        task_id: Set(task.0),
                        phase: Set(phase.clone()),
                        attempt: Set(attempt),
                        step: Set(step),
                        tool: Set(tool.clone()),
                        call_index: Set(call_index),
                        call_seq: Set(seq),
                        seen_seq: Set(seq),
                        arguments: Set(arguments.clone()),
                        success: Set(None),
                        output: Set(None),
                        duration_ms: Set(None),
                        created_at: Set(e.at),
                        finished_at: Set(None),
                    });
                    let row = CallRow::New(out.calls.len() - 1);
                    calls.push(KnownCall { call_index, seen_seq: seq, open: true, row });
                }
                EventKind::ToolResult { phase, step, tool, success, output, duration_ms } => {
                    let turn = state.turn(task, phase);
                    let key = (task, phase.clone(), attempt, i64::from(*step), tool.clone());
                    let calls = state.calls.get_mut(&key).map(Vec::as_mut_slice).unwrap_or_default();
                    // A result answers the latest open call of the current turn when the turn
                    // made calls of the key; otherwise it is late, for a call an earlier turn
                    // left open.
                    let in_turn = calls.iter().any(|c| c.seen_seq > turn);
                    let latest_open = calls
                        .iter_mut()
                        .filter(|c| c.open && (!in_turn || c.seen_seq > turn))
                        .max_by_key(|c| c.seen_seq);
                    let Some(call) = latest_open else {
                        if in_turn {
                            tracing::debug!(
                                %task, seq = e.seq, %phase, attempt, step, %tool,
                                "tool result for a call already completed (a redelivered run); not projected"
                            );
                        } else {
                            tracing::warn!(
                                %task, seq = e.seq, %phase, attempt, step, %tool,
                                "tool result without an open tool call; not projected"
                            );
                        }
                        continue;
                    };
                    call.open = false;
                    let duration_ms = to_i64(*duration_ms, "tool duration_ms")?;
                    let set = match call.row {
                        CallRow::New(i) => &mut out.calls[i],
                        CallRow::Stored(id) => out.updates.entry(id).or_default(),
                    };
                    set.success = Set(Some(*success));
                    set.output = Set(Some(clip(output, MAX_OUTPUT_CHARS)));
                    set.duration_ms = Set(Some(duration_ms));
                    set.finished_at = Set(Some(e.at));
                }
                EventKind::ModelCall {
                    role,
                    phase,
                    model,
                    prompt_tokens,
                    completion_tokens,
                    latency_ms,
                    ttft_ms,
                    ..
                } => {
                    if let Some(phase) = phase {
                        // A new turn of the phase's agent; seqs, not arrival, order turns, as in
                        // the stored state (the phase's highest model call seq).
                        let turn = state.turns.entry((task, phase.clone())).or_default();
                        *turn = Ord::max(*turn, seq);
                    }
                    out.usage.push(token_usage::ActiveModel {
                        id: NotSet,
                        task_id: Set(task.0),
                        role: Set(role.as_str().to_string()),
                        phase: Set(phase.clone()),
                        model: Set(model.clone()),
                        prompt_tokens: Set(i64::from(*prompt_tokens)),
                        completion_tokens: Set(i64::from(*completion_tokens)),
                        latency_ms: Set(to_i64(*latency_ms, "model call latency_ms")?),
                        ttft_ms: Set(ttft_ms.map(|t| to_i64(t, "model call ttft_ms")).transpose()?),
                        event_seq: Set(seq),
                        created_at: Set(e.at),
                    });
                }
                EventKind::TaskCreated { .. }
                | EventKind::StatusChanged { .. }
                | EventKind::PlanReady { .. }
                | EventKind::TestRun { .. }
                | EventKind::Review { .. }
                | EventKind::Progress { .. }
                | EventKind::AgentMessage { .. }
                | EventKind::ApprovalRequested { .. }
                | EventKind::ApprovalDecided { .. }
                | EventKind::ContextRetrieved { .. } => {}
            }
        }
        Ok(out)
    }

    /// Writes the rows. Inserts skip rows already stored (by the same unique keys as before),
    /// so even a projection row whose event was lost is never duplicated.
    async fn write(self, txn: &DatabaseTransaction) -> Result<()> {
        for ((plan, name), set) in self.phases {
            phase::Entity::update_many()
                .set(set)
                .filter(phase::Column::PlanId.eq(plan))
                .filter(phase::Column::Name.eq(name.as_str()))
                .exec(txn)
                .await
                .map_err(db(format!("update phase '{name}' of plan {plan}")))?;
        }
        use step::Column as S;
        let on_step = OnConflict::columns([S::TaskId, S::Phase, S::Attempt, S::Step]).do_nothing().to_owned();
        insert_all(txn, self.steps, |r| text_bytes(&r.phase), on_step, "steps").await?;
        use tool_call::Column as T;
        let on_call = OnConflict::columns([T::TaskId, T::Phase, T::Attempt, T::Tool, T::Step, T::CallIndex])
            .do_nothing()
            .to_owned();
        let call_bytes = |r: &tool_call::ActiveModel| {
            let output = r.output.try_as_ref().and_then(|o| o.as_deref()).map_or(0, str::len);
            text_bytes(&r.phase) + text_bytes(&r.tool) + output + r.arguments.try_as_ref().map_or(0, json_bytes)
        };
        insert_all(txn, self.calls, call_bytes, on_call, "tool calls").await?;
        // Results of calls from earlier batches, and calls a redelivered run made again; usually
        // a few per batch (a call and its result mostly arrive together), so one UPDATE each.
        for (id, set) in self.updates {
            tool_call::Entity::update_many()
                .set(set)
                .filter(T::Id.eq(id))
                .exec(txn)
                .await
                .map_err(db(format!("update tool call {id}")))?;
        }
        use token_usage::Column as U;
        let on_usage = OnConflict::columns([U::TaskId, U::EventSeq]).do_nothing().to_owned();
        let usage_bytes = |r: &token_usage::ActiveModel| {
            let phase = r.phase.try_as_ref().and_then(|p| p.as_deref()).map_or(0, str::len);
            text_bytes(&r.role) + text_bytes(&r.model) + phase
        };
        insert_all(txn, self.usage, usage_bytes, on_usage, "model calls' token usage").await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statements_stay_within_the_budget_in_power_of_two_runs() {
        // 132 bytes a row: 108 would fit, so runs of 64, then what is left in halves.
        let rows: Vec<usize> = (0..300).collect();
        let runs: Vec<Vec<usize>> = statements(rows.clone(), 2, |_| 100).collect();
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [64, 64, 64, 64, 32, 8, 4]);
        assert_eq!(runs.concat(), rows, "every row once, in order");

        let sizes = vec![10, 2 * MAX_STATEMENT_BYTES, 10, 10];
        let runs: Vec<Vec<usize>> = statements(sizes, 1, |size| *size).collect();
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 2], "a row over the budget goes alone");
        assert_eq!(statements(Vec::<u8>::new(), 1, |_| 0).count(), 0);
    }

    #[test]
    fn json_sizes_follow_the_text() {
        for s in
            ["", "plain", "quote \" and \\ backslash", "lines\nand\ttabs\r", "\u{1}\u{1f} control", "ünïcødé ✓\u{7f}"]
        {
            assert_eq!(json_string_bytes(s), serde_json::to_string(s).unwrap().len(), "{s:?}");
        }
        // Strings exact; one byte over per object or array (its last comma).
        let v = json!({"path": "src/main.rs", "lines": ["a\nb", "c"], "nested": {"k": "v"}});
        assert_eq!(json_bytes(&v), serde_json::to_string(&v).unwrap().len() + 3);
    }
}
