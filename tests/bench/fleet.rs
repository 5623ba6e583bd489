//! A cluster of processes (figure 5): the services as real processes (the release
//! `turbo-coder serve ...`, through the test harness `turbo_tests::cluster::Cluster`) on a fresh
//! Postgres database and an own nats-server, with the scripted model server answering at once.
//!
//! - Throughput: `tasks` tasks (a plan, a coder phase and a tester phase each) created, planned,
//!   executed and followed to completion concurrently through the orchestrator's gRPC API, with
//!   2 agent-worker replicas per role; tasks/s and events stored/s over the whole run. (No
//!   review phase: the scripted replies are one queue per model, so concurrent tasks cannot be
//!   given "write a file, then finish" pairs reliably, and a review of a task that changed
//!   nothing asks for changes.)
//! - Worker takeover: a coder worker is killed while its model call is in flight; the time until
//!   the other replica calls the model for the same phase (it gets the work item after the ack
//!   wait) and until the task completes.
//! - Orchestrator takeover: the leader is killed; the time until the standby serves.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use turbo_bus::{Heartbeat, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::ids::TaskId;
use turbo_proto::common::v1::{Language, ProjectType, TaskStatus};
use turbo_proto::projects::v1 as projects;
use turbo_proto::tasks::v1 as tasks;
use turbo_testkit::Reply;
use turbo_tests::cluster::{CODER_MODEL, Cluster};

/// `cluster.ack_wait_s` of the takeover cluster (the harness's default; the shipped default is 30).
pub const ACK_WAIT_S: u64 = 2;
/// Longest any one step may take before the bench fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(120);

pub struct Fleet {
    pub tasks: usize,
    /// First CreateTask to the last task completed.
    pub wall: Duration,
    /// Events stored for those tasks.
    pub events: u64,
    /// Kill of the busy coder to the other replica's model call for the same phase.
    pub worker_takeover: Duration,
    /// Kill of the busy coder to the task completed (its tester phase included).
    pub worker_takeover_done: Duration,
    /// Kill of the leading orchestrator to the standby serving (health polled every 100 ms).
    pub orchestrator_takeover: Duration,
}

impl Fleet {
    pub fn tasks_per_second(&self) -> f64 {
        self.tasks as f64 / self.wall.as_secs_f64()
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
}

fn plan() -> Value {
    json!({
        "phases": [
            {"name": "implement", "description": "make the change", "agent": "coder", "depends_on": []},
            {"name": "test", "description": "run the tests", "agent": "tester", "depends_on": ["implement"]}
        ],
        "confidence_score": 0.9,
        "risk_factors": []
    })
}

pub async fn measure(tasks: usize) -> anyhow::Result<Fleet> {
    let (wall, events) = throughput(tasks).await?;
    let (worker_takeover, worker_takeover_done, orchestrator_takeover) = takeovers().await?;
    Ok(Fleet { tasks, wall, events, worker_takeover, worker_takeover_done, orchestrator_takeover })
}

async fn throughput(n: usize) -> anyhow::Result<(Duration, u64)> {
    let cluster = Cluster::builder()
        .with_workers_per_role(2)
        .planner(vec![Reply::Json(plan()); n])
        .coder(vec![Reply::text("done"); n])
        .start()
        .await;
    let started = Instant::now();
    let runs = futures::future::join_all((0..n).map(|i| one_task(&cluster, i))).await;
    let wall = started.elapsed();
    let ids = runs.into_iter().collect::<anyhow::Result<Vec<TaskId>>>()?;
    let store = cluster.store().await;
    let mut events = 0;
    for id in ids {
        events += store.events(id, 0).await.context("read the events back")?.len() as u64;
    }
    Ok((wall, events))
}

/// A project rooted at a fresh directory `name`; returns its id.
async fn project(cluster: &Cluster, name: &str) -> anyhow::Result<String> {
    let root = cluster.project_dir(name);
    let created = cluster
        .projects()
        .await
        .create_project(projects::CreateProjectRequest {
            name: name.into(),
            project_type: ProjectType::ApiService as i32,
            languages: vec![Language::Python as i32],
            root_path: Some(root.display().to_string()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .project
        .ok_or_else(|| anyhow!("no project in the reply"))?;
    Ok(created.id)
}

/// Creates a project and a task, executes it and waits until it completes.
async fn one_task(cluster: &Cluster, i: usize) -> anyhow::Result<TaskId> {
    let project_id = project(cluster, &format!("p{i}")).await?;
    let mut client = cluster.tasks().await;
    let request =
        tasks::CreateTaskRequest { project_id, description: format!("make change number {i}"), ..Default::default() };
    let task = client.create_task(request).await?.into_inner();
    let id: TaskId = task.id.parse().map_err(|e| anyhow!("task id {}: {e}", task.id))?;
    let last_seq =
        client.execute_task(tasks::ExecuteTaskRequest { task_id: task.id.clone() }).await?.into_inner().last_seq;
    let mut events = client
        .watch_task(tasks::WatchTaskRequest { task_id: task.id.clone(), after_seq: last_seq })
        .await?
        .into_inner();
    while events.message().await?.is_some() {}
    let done = client.get_task(tasks::GetTaskRequest { task_id: task.id }).await?.into_inner();
    ensure!(done.status() == TaskStatus::Completed, "task {id} ended {:?}", done.status());
    Ok(id)
}

fn coder_calls(cluster: &Cluster) -> usize {
    cluster.models().requests_to("/api/chat").iter().filter(|r| r.body["model"] == CODER_MODEL).count()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        ensure!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn takeovers() -> anyhow::Result<(Duration, Duration, Duration)> {
    let mut cluster = Cluster::builder()
        .with_ack_wait_s(ACK_WAIT_S)
        .with_role_workers(AgentRole::Coder, 2)
        .planner(vec![Reply::Json(plan())])
        // The first call is answered long after its worker is killed.
        .coder(vec![Reply::text("never seen").delayed(Duration::from_secs(600)), Reply::text("done")])
        .start()
        .await;
    let coders: Vec<u32> = cluster.workers(AgentRole::Coder).map(|w| w.process.pid).collect();
    let nats = cluster.nats().await;
    let mut heartbeats = nats.subscribe(subjects::heartbeats(AgentRole::Coder)).await?;
    nats.flush().await?;

    let project_id = project(&cluster, "takeover").await?;
    let mut client = cluster.tasks().await;
    let request =
        tasks::CreateTaskRequest { project_id, description: "make the takeover change".into(), ..Default::default() };
    let task = client.create_task(request).await?.into_inner();
    client.execute_task(tasks::ExecuteTaskRequest { task_id: task.id.clone() }).await?;
    until("the coder's model call", || coder_calls(&cluster) >= 1).await?;
    let busy = tokio::time::timeout(PATIENCE, async {
        loop {
            let message = heartbeats.next().await.ok_or_else(|| anyhow!("heartbeats ended"))?;
            let beat: Heartbeat = turbo_bus::decode(&message.payload)?;
            if beat.in_flight > 0 {
                return anyhow::Ok(beat.worker_id);
            }
        }
    })
    .await
    .context("no busy coder heartbeat")??;
    let pid = coders
        .iter()
        .copied()
        .find(|pid| busy.contains(&format!("-{pid}-")))
        .ok_or_else(|| anyhow!("worker id {busy} names none of the coder processes {coders:?}"))?;

    let killed = Instant::now();
    cluster.kill_worker(pid).await;
    until("the other replica's model call", || coder_calls(&cluster) >= 2).await?;
    let worker_takeover = killed.elapsed();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let t = client.get_task(tasks::GetTaskRequest { task_id: task.id.clone() }).await?.into_inner();
        if t.status() == TaskStatus::Completed {
            break;
        }
        ensure!(Instant::now() < deadline && t.status() != TaskStatus::Failed, "the task ended {:?}", t.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let worker_takeover_done = killed.elapsed();

    cluster.start_standby().await;
    let killed = Instant::now();
    cluster.kill_orchestrator().await;
    cluster.await_takeover().await;
    let orchestrator_takeover = killed.elapsed();
    Ok((worker_takeover, worker_takeover_done, orchestrator_takeover))
}
