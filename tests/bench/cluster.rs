//! Cluster transport: what a phase costs when the agent runs behind NATS, and how many events
//! per second the recorder stores in Postgres.
//!
//! - Per-hop dispatch latency: `NatsAgents::run_phase` against a `serve_role` worker whose coder
//!   (an instant in-process double) answers with a final answer at once, beside floors measured
//!   in the same run on the same `nats-server`: a bare JetStream hop (publish to a work-queue
//!   stream, pull, ack, core reply), the same with one Postgres commit, and plain core NATS
//!   request-reply.
//! - Recorder throughput: events from concurrent emitters stored through `Recorder` into a fresh
//!   Postgres database, timed until `flush` (or the last `record`) returns.
//!
//! Postgres: `postgres://postgres@127.0.0.1:5432/postgres`, or `TURBO_BENCH_POSTGRES_URL`; a
//! database `turbo_bench_<uuid>` is created and dropped at the end. Without Postgres the
//! Postgres figures are skipped with the reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use turbo_agent_worker::{AgentDeps, AgentService, AgentSettings, AgentWorker, NatsAgents, ServeOptions, WorkerSpec};
use turbo_bus::async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use turbo_bus::async_nats::jetstream::stream::{self, RetentionPolicy};
use turbo_bus::async_nats::jetstream::{self, Context as JetStream};
use turbo_bus::async_nats::{self, HeaderMap};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, NullSink, TaskEvent};
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::plan::ExecutionPhase;
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::protocol::PhaseAssignment;
use turbo_core::task::DevelopmentTask;
use turbo_orchestrator::Recorder;
use turbo_store::Store;
use turbo_testkit::NatsServer;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::double::{Behaviour, ScriptedDouble};
use crate::stats::Stats;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const POSTGRES_ENV: &str = "TURBO_BENCH_POSTGRES_URL";
/// Longest one hop may take before the bench fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);
/// Hops of each kind measured back to back before switching to the next kind, so that a
/// noisy moment of the machine hits every kind alike.
const ROUND: usize = 50;

const FLOOR_STREAM: &str = "BENCH_FLOOR";
const FLOOR_SUBJECT: &str = "bench.floor.work";
const FLOOR_CONSUMER: &str = "bench-floor";
const REPLY_HEADER: &str = "Bench-Reply";
const ECHO_SUBJECT: &str = "bench.echo";

/// Events from the recorder benchmark, and how they are sent.
pub const EMITTERS: usize = 4;
/// Events per `record` call, as the cluster's raw-event consumer batches them.
pub const RECORD_CHUNK: usize = 256;

pub struct Latency {
    pub round_trips: usize,
    pub warmup: usize,
    /// `NatsAgents::run_phase` to a `serve_role` worker.
    pub agent: Stats,
    /// Publish to a work-queue stream, pull, ack, core reply; no commit.
    pub jetstream: Stats,
    /// The same with one `Store::append_events` of one event on Postgres before the ack.
    pub jetstream_commit: Option<Stats>,
    /// The commit alone, as timed inside the hops above.
    pub commit: Option<Stats>,
    /// Core NATS request-reply.
    pub request_reply: Stats,
}

pub struct Throughput {
    pub events: usize,
    pub wall: Duration,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

pub struct Cluster {
    pub latency: Latency,
    /// Recorder throughput, or why Postgres was skipped.
    pub recorder: Result<RecorderRuns, String>,
    pub postgres: String,
}

pub struct RecorderRuns {
    /// Fire and forget through `Recorder::sink`, then `flush`.
    pub emit: Throughput,
    /// Awaited `Recorder::record` calls of `RECORD_CHUNK` events.
    pub record: Throughput,
}

/// A fresh Postgres database with one project, dropped by [`Postgres::drop_database`].
struct Postgres {
    server: String,
    name: String,
    store: Store,
    project: ProjectMetadata,
}

impl Postgres {
    async fn create(server: &str) -> Result<Postgres, String> {
        let name = format!("turbo_bench_{}", uuid::Uuid::new_v4().simple());
        let url = tokio::time::timeout(Duration::from_secs(10), turbo_store::create_postgres_database(server, &name))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let opened = async {
            let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
            let project = ProjectMetadata::new(
                "bench",
                "bench-cluster",
                ProjectType::ApiService,
                vec![Language::Python],
                "/tmp/turbo-bench-cluster",
            );
            store.upsert_project(&project).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((store, project))
        }
        .await;
        match opened {
            Ok((store, project)) => Ok(Postgres { server: server.to_owned(), name, store, project }),
            Err(e) => {
                let _ = turbo_store::drop_postgres_database(server, &name).await;
                Err(e)
            }
        }
    }

    async fn new_task(&self, title: &str) -> anyhow::Result<TaskId> {
        let task = DevelopmentTask::from_request(self.project.id, title);
        self.store.insert_task(&task, &self.project.root_path).await?;
        Ok(task.id)
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        drop(self.store);
        turbo_store::drop_postgres_database(&self.server, &self.name)
            .await
            .with_context(|| format!("cannot drop the bench database {}", self.name))
    }
}

pub async fn measure(round_trips: usize, warmup: usize, recorder_events: usize) -> anyhow::Result<Cluster> {
    let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let postgres = Postgres::create(&server).await;
    let result = measure_with(round_trips, warmup, recorder_events, postgres.as_ref().ok()).await;
    let skipped = postgres.as_ref().err().cloned();
    if let Ok(pg) = postgres {
        pg.drop_database().await?;
    }
    let (latency, recorder) = result?;
    Ok(Cluster {
        latency,
        recorder: match (recorder, skipped) {
            (Some(runs), _) => Ok(runs),
            (None, reason) => Err(reason.unwrap_or_else(|| "no Postgres".to_owned())),
        },
        postgres: redact_password(&server),
    })
}

fn redact_password(url: &str) -> String {
    // Only the host part: a password in the URL must not be printed.
    match url.split_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    }
}

async fn measure_with(
    round_trips: usize,
    warmup: usize,
    recorder_events: usize,
    pg: Option<&Postgres>,
) -> anyhow::Result<(Latency, Option<RecorderRuns>)> {
    let nats = NatsServer::start().await.context("cannot start nats-server (is it installed? see NATS_SERVER)")?;
    let connect = || async { turbo_bus::connect(&nats.url()).await.context("cannot connect to nats-server") };
    let admin = connect().await?;
    let js = jetstream::new(admin.clone());
    turbo_bus::setup(&js).await.context("bus setup")?;
    js.create_stream(stream::Config {
        name: FLOOR_STREAM.into(),
        subjects: vec![FLOOR_SUBJECT.into()],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("cannot create the floor stream: {e}"))?;

    // The floor's worker: its own connection, one item at a time, as serve_role with capacity 1.
    let floor_task = match pg {
        Some(pg) => Some(pg.new_task("bench: floor commits").await?),
        None => None,
    };
    let commits = Arc::new(Mutex::new(Vec::with_capacity(round_trips + warmup)));
    let floor_worker =
        tokio::spawn(floor_worker(connect().await?, pg.map(|p| p.store.clone()).zip(floor_task), commits.clone()));
    let responder = tokio::spawn(echo_responder(connect().await?));

    // The agent worker: coder actors with an instant double, served from the coder queue.
    let workspace = tempfile::tempdir()?;
    let workspace_path = workspace.path().to_str().context("the temporary directory is not UTF-8")?.to_owned();
    let model = Arc::new(ScriptedDouble::new("bench-cluster-coder", Behaviour::Idle, round_trips + warmup));
    let deps = AgentDeps {
        model,
        tools: ToolRunnerClient::local(RunnerLimits::default()),
        events: Arc::new(NullSink),
        settings: AgentSettings::default(),
        knowledge: None,
    };
    let agents =
        AgentWorker::start(WorkerSpec { roles: vec![(AgentRole::Coder, deps)], per_role: 1, call_timeout: PATIENCE })
            .await
            .map_err(|e| anyhow!("cannot start the agents: {e}"))?;
    let handle = agents.handle(AgentRole::Coder).context("no coder handle")?;
    let shutdown = CancellationToken::new();
    let options =
        ServeOptions { worker_id: "bench-worker".into(), pull_wait: Duration::from_secs(1), ..ServeOptions::new(1) };
    let serving =
        tokio::spawn(turbo_agent_worker::serve_role_with(connect().await?, handle, options, shutdown.clone()));

    let caller = connect().await?;
    let remote = NatsAgents::new(caller.clone());
    let caller_js = jetstream::new(caller.clone());
    let inbox = caller.new_inbox();
    let mut replies = caller.subscribe(inbox.clone()).await.map_err(|e| anyhow!("subscribe: {e}"))?;
    caller.flush().await.map_err(|e| anyhow!("flush: {e}"))?;

    let measured = async {
        let total = warmup + round_trips;
        let (mut agent, mut bare, mut committed, mut echo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut done = 0;
        while done < total {
            let n = ROUND.min(total - done);
            for i in done..done + n {
                let keep = i >= warmup;
                let d = agent_hop(&remote, &workspace_path).await?;
                if keep {
                    agent.push(d);
                }
            }
            for i in done..done + n {
                let keep = i >= warmup;
                let d = floor_hop(&caller_js, &inbox, &mut replies, 'j', i).await?;
                if keep {
                    bare.push(d);
                }
                if pg.is_some() {
                    let d = floor_hop(&caller_js, &inbox, &mut replies, 'c', i).await?;
                    if keep {
                        committed.push(d);
                    }
                }
                let d = echo_hop(&caller, i).await?;
                if keep {
                    echo.push(d);
                }
            }
            done += n;
        }
        anyhow::Ok((agent, bare, committed, echo))
    }
    .await;

    shutdown.cancel();
    let served = tokio::time::timeout(PATIENCE, serving).await;
    agents.stop().await;
    floor_worker.abort();
    responder.abort();
    let (agent, bare, committed, echo) = measured?;
    served.context("the worker did not stop")?.context("the worker panicked")?.context("the worker failed")?;

    let commit_times: Vec<Duration> = {
        let all = commits.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().skip(warmup).copied().collect()
    };
    let latency = Latency {
        round_trips,
        warmup,
        agent: Stats::of(agent),
        jetstream: Stats::of(bare),
        jetstream_commit: pg.is_some().then(|| Stats::of(committed)),
        commit: pg.is_some().then(|| Stats::of(commit_times)),
        request_reply: Stats::of(echo),
    };
    drop(nats);

    let recorder = match pg {
        Some(pg) => Some(RecorderRuns {
            emit: recorder_throughput(pg, recorder_events, false).await?,
            record: recorder_throughput(pg, recorder_events, true).await?,
        }),
        None => None,
    };
    Ok((latency, recorder))
}

fn assignment(task_id: TaskId, workspace: &str) -> PhaseAssignment {
    PhaseAssignment {
        task_id,
        plan_id: PlanId::new(),
        project_id: None,
        task_title: "bench".into(),
        task_description: "answer at once".into(),
        phase: ExecutionPhase {
            estimated_duration: Duration::from_secs(60),
            ..ExecutionPhase::new("implement", "answer at once", "coder")
        },
        plan_outline: vec![],
        attempt: 1,
        workspace: workspace.into(),
        feedback: None,
        max_steps: 5,
    }
}

async fn within<T, E: std::fmt::Display>(what: &str, fut: impl Future<Output = Result<T, E>>) -> anyhow::Result<T> {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow!("{what}: no answer within {PATIENCE:?}")),
    }
}

/// One phase dispatched to the worker and its outcome back; the assignment is built first.
async fn agent_hop(remote: &NatsAgents, workspace: &str) -> anyhow::Result<Duration> {
    let assignment = assignment(TaskId::new(), workspace);
    let started = Instant::now();
    let outcome = within("run_phase", remote.run_phase(AgentRole::Coder, assignment, CancellationToken::new())).await?;
    let elapsed = started.elapsed();
    ensure!(outcome.success, "the bench phase failed: {}", outcome.summary);
    Ok(elapsed)
}

/// Publish to the floor's work-queue stream (waiting for the stream's acknowledgement), then
/// wait for the worker's core reply. `kind` 'c' asks the worker for a Postgres commit.
async fn floor_hop(
    js: &JetStream,
    inbox: &str,
    replies: &mut async_nats::Subscriber,
    kind: char,
    i: usize,
) -> anyhow::Result<Duration> {
    let payload = format!("{kind}{i}");
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_HEADER, inbox);
    let started = Instant::now();
    let ack = within("floor publish", js.publish_with_headers(FLOOR_SUBJECT, headers, payload.clone().into())).await?;
    within("floor publish ack", ack.into_future()).await?;
    loop {
        let reply = within("floor reply", async { replies.next().await.ok_or("subscription closed") }).await?;
        if reply.payload.as_ref() == payload.as_bytes() {
            return Ok(started.elapsed());
        }
    }
}

async fn echo_hop(client: &async_nats::Client, i: usize) -> anyhow::Result<Duration> {
    let payload = format!("e{i}");
    let started = Instant::now();
    let reply = within("request", client.request(ECHO_SUBJECT, payload.clone().into())).await?;
    let elapsed = started.elapsed();
    ensure!(reply.payload.as_ref() == payload.as_bytes(), "a wrong reply to a request");
    Ok(elapsed)
}

/// Pulls one item at a time from the floor stream; for 'c' items commits one event to Postgres;
/// acknowledges; replies on core NATS to the item's reply header.
async fn floor_worker(
    client: async_nats::Client,
    store: Option<(Store, TaskId)>,
    commits: Arc<Mutex<Vec<Duration>>>,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(FLOOR_STREAM).await.map_err(|e| anyhow!("{e}"))?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            FLOOR_CONSUMER,
            pull::Config {
                durable_name: Some(FLOOR_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut seq = 1;
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| anyhow!("{e}"))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow!("{e}"))?;
            if message.payload.first() == Some(&b'c')
                && let Some((store, task_id)) = &store
            {
                let event = TaskEvent {
                    task_id: *task_id,
                    seq,
                    at: Utc::now(),
                    kind: EventKind::AgentMessage { role: AgentRole::Coder, text: "floor".into() },
                };
                seq += 1;
                let started = Instant::now();
                store.append_events(&[event]).await?;
                commits.lock().unwrap_or_else(|p| p.into_inner()).push(started.elapsed());
            }
            message.ack().await.map_err(|e| anyhow!("{e}"))?;
            let reply = turbo_bus::headers::get(message.headers.as_ref(), REPLY_HEADER)
                .context("a floor item without a reply subject")?
                .to_owned();
            client.publish(reply, message.payload.clone()).await?;
        }
    }
}

async fn echo_responder(client: async_nats::Client) -> anyhow::Result<()> {
    let mut requests = client.subscribe(ECHO_SUBJECT).await?;
    client.flush().await?;
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            client.publish(reply, request.payload).await?;
        }
    }
    Ok(())
}

/// The events of agent steps: a model call, a tool call and its 1 KiB result, step after step.
fn step_events(steps: usize) -> Vec<EventKind> {
    let output = "x".repeat(1024);
    let phase = || "implement".to_owned();
    (0..steps)
        .flat_map(|i| {
            let step = u32::try_from(i + 1).unwrap_or(u32::MAX);
            [
                EventKind::ModelCall {
                    role: AgentRole::Coder,
                    phase: Some(phase()),
                    model: "bench".into(),
                    prompt_tokens: 1000,
                    completion_tokens: 50,
                    latency_ms: 1,
                    ttft_ms: None,
                    tokens_per_second: None,
                },
                EventKind::ToolCall {
                    phase: phase(),
                    step,
                    tool: "fs_read".into(),
                    arguments: json!({"path": "small.txt"}),
                },
                EventKind::ToolResult {
                    phase: phase(),
                    step,
                    tool: "fs_read".into(),
                    success: true,
                    output: output.clone(),
                    duration_ms: 1,
                },
            ]
        })
        .collect()
}

/// `events` events from [`EMITTERS`] concurrent emitters (a task each) through a fresh
/// `Recorder`; timed until everything is stored. `record`: awaited `Recorder::record` calls of
/// [`RECORD_CHUNK`] events; otherwise `Recorder::sink` then `flush`.
async fn recorder_throughput(pg: &Postgres, events: usize, record: bool) -> anyhow::Result<Throughput> {
    let per_emitter = events.div_ceil(EMITTERS).div_ceil(3);
    let mut emitters = Vec::new();
    for _ in 0..EMITTERS {
        emitters.push((pg.new_task("bench: recorder throughput").await?, step_events(per_emitter)));
    }
    let total: usize = emitters.iter().map(|(_, e)| e.len()).sum();
    let ids: Vec<TaskId> = emitters.iter().map(|(id, _)| *id).collect();
    let (recorder, recorder_task) = Recorder::start(pg.store.clone());

    // Everything an emitter sends is built before the clock starts.
    let now: DateTime<Utc> = Utc::now();
    let work: Vec<_> = emitters
        .into_iter()
        .map(|(task_id, kinds)| {
            let chunks: Vec<Vec<_>> = if record {
                kinds.chunks(RECORD_CHUNK).map(|c| c.iter().map(|k| (task_id, k.clone(), now)).collect()).collect()
            } else {
                Vec::new()
            };
            (task_id, kinds, chunks)
        })
        .collect();

    let started = Instant::now();
    let mut joins = Vec::new();
    for (task_id, kinds, chunks) in work {
        let recorder = recorder.clone();
        joins.push(tokio::spawn(async move {
            if record {
                for chunk in chunks {
                    recorder.record(chunk).await.map_err(|e| anyhow!("record: {e}"))?;
                }
            } else {
                let sink = recorder.sink();
                for kind in kinds {
                    sink.emit(task_id, kind);
                }
            }
            anyhow::Ok(())
        }));
    }
    for join in joins {
        join.await??;
    }
    recorder.flush().await;
    let wall = started.elapsed();

    let failed = recorder.failed_writes();
    drop(recorder);
    recorder_task.abort();
    ensure!(failed == 0, "{failed} events could not be stored");
    let mut stored = 0;
    for id in ids {
        stored += pg.store.events(id, 0).await?.len();
    }
    ensure!(stored == total, "{stored} of {total} events are stored");
    Ok(Throughput { events: total, wall })
}
