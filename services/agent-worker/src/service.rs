//! The worker as a service of the cluster: [`run`] hosts one role's agent actors and serves
//! that role's work queue from NATS until shutdown, beside gRPC health and reflection.
//!
//! What a worker process is made of:
//! - the role's model, from the config section of that role (`[models.<role>]`; tester and
//!   reviewer fall back to the coder's);
//! - its tools, with the `[run]` limits: the tool-runner service at `cluster.tool_runner_url`
//!   when set, else a runner in this process sharing task baselines with the orchestrator
//!   through `<store.data_dir>/baselines` (the cluster's processes share the workspaces and
//!   the data directory) ([`ToolRunnerClient::for_cluster`]);
//! - the knowledge service at `knowledge.url`, over gRPC ([`RemoteKnowledge`]), for the context
//!   its prompts retrieve; a worker never opens the knowledge dataset itself (the knowledge
//!   service is its only owner), so without that URL its agents work without retrieved context;
//! - agent events published to `turbo.events.raw.<task_id>` ([`NatsEventSink`]), flushed before
//!   each result is stored, so the orchestrator has a phase's events before its outcome;
//! - [`serve_role_with`] with `cluster.worker_capacity` slots and the `[cluster]` delivery
//!   settings (it runs the bus setup first, like every service, so start order does not matter).
//!
//! Health reports [`GRPC_SERVICES`] NOT_SERVING while the connection to NATS is down. On
//! shutdown (SIGTERM) the worker stops pulling, finishes the work in flight, flushes its
//! events and returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use turbo_bus::BusConfig;
use turbo_bus::async_nats::connection::State;
use turbo_bus::async_nats::jetstream::Context;
use turbo_config::{ClusterConfig, Config, ModelSettings};
use turbo_core::agent::AgentRole;
use turbo_core::knowledge::Knowledge;
use turbo_proto::RemoteKnowledge;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::error::{Error, Result};
use crate::{AgentDeps, AgentSettings, AgentWorker, GRPC_SERVICES, NatsEventSink, ServeOptions, WorkerSpec};

/// How often the connection to NATS is checked for the health status.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);
/// Longest the last agent events may take to be stored at shutdown.
const EVENTS_FLUSH: Duration = Duration::from_secs(10);
/// Setup attempts after the first (about 6 s of pauses in all).
const SETUP_RETRIES: usize = 5;

/// Runs the bus setup ([`turbo_bus::setup_with`]), trying again a few times: the services of
/// a cluster start together, and a nats-server busy creating streams for the others may let a
/// request time out. A setup that keeps failing is returned.
pub async fn setup_bus(js: &Context, config: &BusConfig) -> turbo_bus::Result<()> {
    (|| turbo_bus::setup_with(js, config))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(SETUP_RETRIES)
                .with_jitter(),
        )
        .notify(|error, after| {
            tracing::warn!(%error, retry_in_ms = after.as_millis() as u64, "cannot set up the bus yet; trying again")
        })
        .await
}

/// The bus settings of the `[cluster]` section.
pub fn bus_config(cluster: &ClusterConfig) -> BusConfig {
    BusConfig {
        ack_wait: Duration::from_secs(cluster.ack_wait_s),
        max_deliver: cluster.max_deliver,
        ..BusConfig::default()
    }
}

/// Where the cluster's processes keep each task's starting snapshot for its diff:
/// `<store.data_dir>/baselines`, shared by the orchestrator and the workers
/// ([`turbo_tool_runner::baseline_dir`], which the tool-runner service uses too).
pub fn baseline_dir(config: &Config) -> PathBuf {
    turbo_tool_runner::baseline_dir(config)
}

/// The model settings of `role`.
pub fn model_settings(config: &Config, role: AgentRole) -> &ModelSettings {
    match role {
        AgentRole::Planner => &config.models.planner,
        AgentRole::Coder => &config.models.coder,
        AgentRole::Tester => config.models.tester(),
        AgentRole::Reviewer => config.models.reviewer(),
    }
}

/// Serves an agent worker for `role` until `shutdown` is cancelled: the role's work queue from
/// NATS (`cluster.nats_url`, required: [`Error::NoNats`] without it) and gRPC health
/// ([`GRPC_SERVICES`]) and reflection on `listener`. On shutdown it finishes the work in
/// flight before returning.
///
/// `role` is an [`AgentRole`], so it is valid by construction: the entry points parse the
/// `--role` text with its `FromStr`, which rejects anything but planner, coder, tester or
/// reviewer and names the valid roles.
pub async fn run(config: &Config, role: AgentRole, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let url = config.cluster.nats_url.as_deref().ok_or(Error::NoNats { role })?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    let settings = model_settings(config, role);
    let model = turbo_llm::connect(settings)?;

    let client = turbo_bus::connect(url).await?;
    let js = turbo_bus::async_nats::jetstream::new(client.clone());
    setup_bus(&js, &bus_config(&config.cluster)).await?;

    let (events, publisher) = NatsEventSink::start(client.clone());
    let run = &config.run;
    let tools = ToolRunnerClient::for_cluster(config, RunnerLimits::from_config(config))?;
    // Calls waiting for approval in this process (no tool-runner service): operators decide
    // them over NATS, and the decisions go to the audit log of the configured store.
    let approvals = tools.approvals();
    if let Some(approvals) = &approvals {
        approvals.audit_in_configured_store(config).await;
    }
    let deps = AgentDeps {
        model,
        tools,
        events: Arc::new(events.clone()),
        settings: AgentSettings {
            plan_attempts: run.plan_attempts,
            stream: run.stream,
            command_timeout_s: run.tool_timeout_s,
        },
        knowledge: knowledge_client(config, role),
    };
    let capacity = config.cluster.worker_capacity.max(1);
    let worker = AgentWorker::start(WorkerSpec {
        roles: vec![(role, deps)],
        per_role: capacity,
        call_timeout: Duration::from_secs(run.task_timeout_s),
    })
    .await?;
    let handle = worker.handle(role).ok_or_else(|| Error::AgentGone { role: role.to_string() })?;
    let options = ServeOptions { events: Some(events.clone()), ..ServeOptions::new(capacity) };
    let tool_runner = config.cluster.tool_runner_url.as_deref().unwrap_or("in this process");
    tracing::info!(
        %addr, %role, model = %settings.model, nats = %url, worker = %options.worker_id, capacity, tool_runner,
        "agent worker serving its role's queue"
    );

    // Either half failing stops the other: a worker that cannot take work must not look healthy.
    let stop = shutdown.child_token();
    let (ready_tx, ready_rx) = watch::channel(client.connection_state() == State::Connected);
    let connection = tokio::spawn(follow_connection(client.clone(), ready_tx, stop.clone()));
    let approving = approvals.map(|approvals| {
        let serving = turbo_tool_runner::nats::serve_approvals(client.clone(), approvals, stop.clone());
        tokio::spawn(async move {
            if let Err(error) = serving.await {
                tracing::error!(%error, "the approval subjects stopped");
            }
        })
    });
    let serving = async {
        let served = crate::serve_role_with(client.clone(), handle, options, stop.clone()).await;
        stop.cancel();
        served
    };
    let health = async {
        let routes = turbo_proto::server::Routes::default();
        let served = turbo_proto::server::serve_while_ready(GRPC_SERVICES, routes, listener, stop.clone(), ready_rx)
            .await
            .map_err(|e| Error::Serve { addr: addr.clone(), reason: e.to_string() });
        stop.cancel();
        served
    };
    let (served, healthy) = tokio::join!(serving, health);
    connection.abort();
    if let Some(approving) = approving {
        approving.abort();
    }

    worker.stop().await;
    if tokio::time::timeout(EVENTS_FLUSH, events.flush()).await.is_err() {
        tracing::warn!(%role, "the last agent events were not stored in time; some may be lost");
    }
    drop(events);
    publisher.abort();
    tracing::info!(%role, "agent worker stopped");
    served?;
    healthy
}

/// Where the worker's agents retrieve context: the knowledge service at `knowledge.url`, or
/// nowhere (logged) when retrieval is off or that URL is not set.
fn knowledge_client(config: &Config, role: AgentRole) -> Option<Arc<dyn Knowledge>> {
    let k = &config.knowledge;
    if !k.enabled {
        tracing::info!(%role, "knowledge.enabled is false: agents run without retrieved context");
        return None;
    }
    let Some(url) = k.url.as_deref() else {
        tracing::warn!(
            %role,
            "agents run without retrieved context: knowledge.url is not set; set it to the knowledge service \
             (e.g. http://knowledge:50053), or set knowledge.enabled = false to silence this"
        );
        return None;
    };
    match RemoteKnowledge::connect(url) {
        Ok(remote) => {
            tracing::info!(%role, knowledge = %url, "agents retrieve context from the knowledge service");
            Some(Arc::new(remote))
        }
        Err(error) => {
            tracing::warn!(%role, %error, "agents run without retrieved context");
            None
        }
    }
}

/// Keeps `ready` equal to whether `client` is connected, until `stop`.
async fn follow_connection(client: turbo_bus::async_nats::Client, ready: watch::Sender<bool>, stop: CancellationToken) {
    let mut every = tokio::time::interval(CONNECTION_CHECK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let up = client.connection_state() == State::Connected;
        if *ready.borrow() != up {
            if up {
                tracing::info!("reconnected to nats: serving again");
            } else {
                tracing::warn!("lost the connection to nats: reporting not serving until it is back");
            }
            ready.send_replace(up);
        }
    }
}
