//! The tool-runner: the only component that touches a task's workspace. Agents send it tool
//! calls; it runs them with the task's confinement, timeout and output cap, and keeps each
//! task's starting snapshot so the reviewer can see the task's diff.
//!
//! Agents reach it through [`ToolRunnerClient`], which hides whether the runner is in this
//! process ([`LocalToolRunner`]) or a tool-runner service across the network
//! ([`RemoteToolRunner`], over gRPC): [`ToolRunnerClient::for_cluster`] picks the service when
//! `cluster.tool_runner_url` is set. Either way a call the model made wrongly is an error the
//! model can correct ([`Error::is_model_correctable`]), with the same message.
//!
//! As a service of the cluster it is started by [`run`], from `turbo-coder serve tool-runner`
//! or from its own binary `turbo-tool-runner` (`src/main.rs`): it serves
//! `turbo.tools.v1.ToolService` (ListTools, CallTool, BeginTask, TaskDiff, EndTask; approvals
//! come with the sandbox policy) over a [`LocalToolRunner`] keeping baselines in
//! [`baseline_dir`], with gRPC health checking ([`GRPC_SERVICES`]) and reflection.
//!
//! # Layout
//! - `baseline`: workspace snapshots and the task diff.
//! - `error`: errors, distinguishing the ones a model can correct, and their gRPC statuses.
//! - `grpc`: the `turbo.tools.v1.ToolService` server over a [`LocalToolRunner`].
//! - `remote`: [`RemoteToolRunner`], the [`ToolService`] of a tool-runner service, over gRPC.
//! - `wire`: tool outputs and task diffs as proto messages (their types are not
//!   `turbo-core`'s, so the conversions live here rather than in `turbo-proto`).
//! - this file: the [`ToolService`] trait, the in-process runner and the client, and [`run`],
//!   the network entry point.
//! - `main.rs`: the `turbo-tool-runner` binary: arguments, config, telemetry, then [`run`].

mod approval;
mod baseline;
mod checkpoint;
mod error;
mod grpc;
pub mod nats;
mod queue;
mod queued;
mod remote;
mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turbo_config::Config;
use turbo_core::ids::TaskId;
use turbo_core::tool::{ToolCall, ToolSpec};
use turbo_tools::{Sandbox, SandboxMode, SandboxPolicy, ToolContext, Toolbox, Workspace};

pub use approval::{
    ApprovalOutcome, ApprovalPolicy, ApprovalUpdate, Approvals, CallScope, NOT_RUN, PendingApproval, SharedApprovals,
};
pub use baseline::TaskDiff;
pub use checkpoint::{Checkpoint, Checkpoints, Owner, Rewound};
pub use error::{Error, Result};
pub use grpc::ToolGrpc;
pub use queue::{JobQueue, header as job_headers, serve_jobs, workspace_key};
pub use queued::QueuedToolRunner;
pub use remote::RemoteToolRunner;
pub use turbo_tools::ToolOutput;

/// The gRPC services the tool-runner reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] = &["turbo.tools.v1.ToolService"];

/// Serves the tool-runner on `listener` until `shutdown` is cancelled, then reports
/// not-serving and drains: `turbo.tools.v1.ToolService` over a [`LocalToolRunner`] with the
/// `[run]` limits, the `[approval]` policy (decisions audited in the configured store) and the
/// baselines in [`baseline_dir`], gRPC health ([`GRPC_SERVICES`]) and reflection; with
/// `cluster.nats_url`, also the approval subjects ([`nats::serve_approvals`]).
pub async fn run(config: &Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    let store = turbo_store::Store::open(config.store.url.as_deref(), &config.store.data_dir())
        .await
        .map_err(|e| Error::Serve { addr: addr.clone(), reason: format!("cannot open the audit store: {e}") })?;
    let approvals = Arc::new(Approvals::new(ApprovalPolicy::from_config(&config.approval)).with_audit(store));
    let baselines = baseline_dir(config);
    let runner = LocalToolRunner::with_baseline_dir(RunnerLimits::from_config(config), &baselines)
        .with_approvals(approvals.clone())
        .with_checkpoints(Checkpoints::new(checkpoint_dir(config)))
        .with_model(tools_model(config));
    let runner = Arc::new(runner);
    let mut nats = tokio::task::JoinSet::new();
    if let Some(url) = &config.cluster.nats_url {
        let client =
            turbo_bus::connect(url).await.map_err(|e| Error::Serve { addr: url.clone(), reason: e.to_string() })?;
        let queue = JobQueue::open(client.clone()).await?;
        nats.spawn(nats::serve_approvals(client, approvals, shutdown.clone()));
        nats.spawn(serve_jobs(queue, runner_id(config), ToolGrpc::new(runner.clone()), shutdown.clone()));
    }
    tracing::info!(%addr, baselines = %baselines.display(), services = ?GRPC_SERVICES, "tool-runner serving");
    let served = turbo_proto::server::serve(GRPC_SERVICES, ToolGrpc::new(runner).routes(), listener, shutdown.clone())
        .await
        .map_err(|e| Error::Serve { addr, reason: e.to_string() });
    shutdown.cancel();
    while let Some(stopped) = nats.join_next().await {
        match stopped {
            Ok(Err(error)) => tracing::error!(%error, "the NATS side of the tool-runner stopped"),
            Err(error) => tracing::error!(%error, "the NATS side of the tool-runner failed"),
            Ok(Ok(())) => {}
        }
    }
    served
}

/// This runner's name in the job queue: `cluster.tool_runner_id`, else the host name (a
/// StatefulSet's pod name, stable across restarts).
pub fn runner_id(config: &Config) -> String {
    if let Some(id) = &config.cluster.tool_runner_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tool-runner".into());
    host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Where the cluster keeps each task's starting snapshot for its diff:
/// `<store.data_dir>/baselines`. The tool-runner service keeps them there; without one, every
/// process that runs tools (the orchestrator and the agent workers) shares that directory.
pub fn baseline_dir(config: &Config) -> PathBuf {
    config.store.data_dir().join("baselines")
}

/// Where task workspaces are checkpointed before mutating calls: `<store.data_dir>/checkpoints`
/// (one git repository per workspace; see [`Checkpoints`]). `turbo-coder rewind` reads it.
pub fn checkpoint_dir(config: &Config) -> PathBuf {
    config.store.data_dir().join("checkpoints")
}

/// The model the runner's text-writing tools use: the coder's (`[models.coder]`); None, with
/// a warning, when its settings cannot make a client.
pub fn tools_model(config: &Config) -> Option<Arc<dyn turbo_llm::ChatModel>> {
    match turbo_llm::connect(&config.models.coder) {
        Ok(model) => Some(model),
        Err(error) => {
            tracing::warn!(%error, "the tools have no model: generate_commit_message will say so");
            None
        }
    }
}

/// Limits applied to every call, and the sandbox its processes run in.
#[derive(Clone, Debug)]
pub struct RunnerLimits {
    pub timeout: Duration,
    pub output_cap: usize,
    pub sandbox: Arc<Sandbox>,
}

impl Default for RunnerLimits {
    fn default() -> Self {
        Self {
            timeout: ToolContext::DEFAULT_TIMEOUT,
            output_cap: ToolContext::DEFAULT_OUTPUT_CAP,
            sandbox: Sandbox::shared_default(),
        }
    }
}

impl RunnerLimits {
    /// The limits of the configuration: `[run] tool_timeout_s` and `tool_output_cap`, and the
    /// `[sandbox]`.
    pub fn from_config(config: &Config) -> Self {
        let run = &config.run;
        Self {
            timeout: Duration::from_secs(run.tool_timeout_s),
            output_cap: run.tool_output_cap,
            sandbox: Arc::new(Sandbox::new(sandbox_policy(&config.sandbox))),
        }
    }
}

/// The tools' sandbox policy of a `[sandbox]` section.
pub fn sandbox_policy(c: &turbo_config::SandboxConfig) -> SandboxPolicy {
    const MIB: u64 = 1 << 20;
    SandboxPolicy {
        mode: match c.mode {
            turbo_config::SandboxMode::Bubblewrap => SandboxMode::Bubblewrap,
            turbo_config::SandboxMode::Unconfined => SandboxMode::Unconfined,
        },
        network: c.network,
        memory_bytes: c.memory_mb.saturating_mul(MIB),
        cpu_seconds: c.cpu_s,
        max_processes: c.max_processes,
        max_file_bytes: c.max_file_mb.saturating_mul(MIB),
        tmp_bytes: c.tmp_mb.saturating_mul(MIB),
        max_output_bytes: c.max_output_mb.saturating_mul(MIB),
        read_only_paths: c.read_only_paths.clone(),
        path: c.path.clone(),
        bwrap: c.bwrap.clone(),
        warm: c.warm,
        warm_ttl: Duration::from_secs(c.warm_ttl_s),
        tool_exec: c.tool_exec.clone(),
        cloud: c
            .cloud
            .iter()
            .map(|(provider, c)| {
                let env = c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (provider.clone(), turbo_tools::CloudAccess { env, files: c.files.clone() })
            })
            .collect(),
        proxy: turbo_tools::ProxyPolicy { allow: c.proxy.allow.clone(), tools: c.proxy.tools.clone() },
    }
}

/// What the tool-runner does, wherever it runs.
#[async_trait]
pub trait ToolService: Send + Sync + 'static {
    /// Tools offered to models; `names` selects a subset (None = all).
    async fn specs(&self, names: Option<&[&str]>) -> Result<Vec<ToolSpec>>;
    /// Runs one call in the workspace, for `scope`'s task and project: a call the approval
    /// policy asks about waits for a decision first (telling `scope.updates`), one it denies
    /// does not run and comes back unsuccessful, saying why.
    async fn call(&self, workspace: &str, call: &ToolCall, scope: &CallScope) -> Result<ToolOutput>;
    /// Remembers the workspace as it is now, as the base of the task's diff. A task's baseline
    /// is taken once: a later call for the same task (its run resumed after a restart) keeps it.
    async fn begin_task(&self, task_id: TaskId, workspace: &str) -> Result<()>;
    /// Everything the task changed since `begin_task`.
    async fn task_diff(&self, task_id: TaskId, workspace: &str) -> Result<TaskDiff>;
    /// Forgets the task's baseline.
    async fn end_task(&self, task_id: TaskId);
}

/// Runs tools in this process.
pub struct LocalToolRunner {
    toolbox: Toolbox,
    limits: RunnerLimits,
    approvals: SharedApprovals,
    /// Where each task's workspace is checkpointed before its mutating calls; None: never.
    checkpoints: Option<Checkpoints>,
    /// The model of the tools that write text (commit messages).
    model: Option<Arc<dyn turbo_llm::ChatModel>>,
    baselines: Mutex<HashMap<TaskId, Arc<baseline::Baseline>>>,
    /// Where baselines are also written, one file per task, when processes share them.
    baseline_dir: Option<PathBuf>,
}

impl LocalToolRunner {
    /// A runner with the default approval policy ([`ApprovalPolicy::default`]).
    pub fn new(limits: RunnerLimits) -> Self {
        Self {
            toolbox: Toolbox::standard(),
            limits,
            approvals: Arc::new(Approvals::new(ApprovalPolicy::default())),
            checkpoints: None,
            model: None,
            baselines: Mutex::new(HashMap::new()),
            baseline_dir: None,
        }
    }

    /// The same runner deciding approvals with `approvals` (its policy, its waiting calls).
    pub fn with_approvals(mut self, approvals: SharedApprovals) -> Self {
        self.approvals = approvals;
        self
    }

    /// The same runner checkpointing the workspace into `checkpoints` before every mutating
    /// call of a task or of a session (a call with a task or session id in its scope).
    pub fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// The same runner giving tools that write text (git_ops' generate_commit_message) `model`.
    pub fn with_model(mut self, model: Option<Arc<dyn turbo_llm::ChatModel>>) -> Self {
        self.model = model;
        self
    }

    /// The calls waiting for approval here, and the policy; shared with whoever decides.
    pub fn approvals(&self) -> &SharedApprovals {
        &self.approvals
    }

    /// A runner that also keeps each task's baseline in `dir` (`<task_id>.json`). In the
    /// cluster the orchestrator begins a task and a reviewer in another process asks for its
    /// diff, and an orchestrator that restarts resumes the task with the baseline it began
    /// with; so every process of the cluster points at the same directory.
    pub fn with_baseline_dir(limits: RunnerLimits, dir: impl Into<PathBuf>) -> Self {
        Self { baseline_dir: Some(dir.into()), ..Self::new(limits) }
    }

    fn baseline_file(&self, task_id: TaskId) -> Option<PathBuf> {
        self.baseline_dir.as_ref().map(|d| d.join(format!("{task_id}.json")))
    }

    fn held(&self, task_id: TaskId) -> Option<Arc<baseline::Baseline>> {
        self.baselines.lock().unwrap_or_else(|p| p.into_inner()).get(&task_id).cloned()
    }

    /// The task's baseline, from memory or else from the baseline directory.
    async fn baseline(&self, task_id: TaskId) -> Result<Option<Arc<baseline::Baseline>>> {
        if let Some(held) = self.held(task_id) {
            return Ok(Some(held));
        }
        let Some(file) = self.baseline_file(task_id) else { return Ok(None) };
        let loaded = tokio::task::spawn_blocking(move || baseline::Baseline::load(&file))
            .await
            .map_err(|e| Error::Baseline { path: task_id.to_string(), reason: e.to_string() })??;
        Ok(loaded.map(|b| {
            let b = Arc::new(b);
            self.baselines.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id, b.clone());
            b
        }))
    }

    fn context(&self, workspace: &str, limits: &RunnerLimits, scope: &CallScope) -> Result<ToolContext> {
        let ws = Workspace::open(workspace)?;
        let ctx = ToolContext::new(ws)
            .with_timeout(limits.timeout)
            .with_output_cap(limits.output_cap)
            .with_sandbox(limits.sandbox.clone());
        let ctx = match &self.model {
            Some(model) => ctx.with_model(model.clone()),
            None => ctx,
        };
        Ok(match &scope.output {
            Some(sink) => ctx.with_output(sink.clone()),
            None => ctx,
        })
    }

    /// Runs one call with `limits` instead of the runner's own. The arguments are checked
    /// before the approval policy is asked, so nobody is asked about a call that cannot run.
    async fn call_with(
        &self,
        workspace: &str,
        call: &ToolCall,
        limits: &RunnerLimits,
        scope: &CallScope,
    ) -> Result<ToolOutput> {
        let ctx = self.context(workspace, limits, scope)?;
        let tool = self.toolbox.checked(&call.name, &call.arguments)?;
        tool.check_permissions(&call.arguments, &ctx)?;
        if let approval::Gate::Refused(content) = self
            .approvals
            .gate(
                scope,
                &call.name,
                &call.arguments,
                tool.risk_of(&call.arguments),
                Some(tool.estimate(&call.arguments)),
            )
            .await
        {
            return Ok(ToolOutput { content, success: false, ..ToolOutput::default() });
        }
        if tool.mutating_of(&call.arguments)
            && let (Some(checkpoints), Some(owner)) = (&self.checkpoints, scope.checkpoint_owner())
        {
            let label = match (&scope.phase, scope.step) {
                (Some(phase), Some(step)) => format!("{phase} step {step}: {}", call.name),
                // A command the agent runs itself (the tester's tests, the reviewer's checks).
                (Some(phase), None) => format!("{phase}: {}", call.name),
                _ => call.name.clone(),
            };
            // No change the task could not be rewound past: without its checkpoint the call
            // does not run, and the task fails saying why.
            if let Err(error) = checkpoints.take(ctx.workspace.root(), owner, &label).await {
                tracing::error!(%owner, tool = %call.name, %error, "no checkpoint before this call; it is not run");
                return Err(Error::Checkpoint(format!(
                    "{} was not run: the workspace could not be checkpointed before it ({error}); free space or fix the permissions of the checkpoint directory (<store.data_dir>/checkpoints)",
                    call.name
                )));
            }
        }
        Ok(self.toolbox.call(&call.name, &call.arguments, &ctx).await?)
    }
}

async fn capture(workspace: &str) -> Result<baseline::Baseline> {
    let root = Workspace::open(workspace)?.root().to_path_buf();
    tokio::task::spawn_blocking(move || baseline::Baseline::capture(Path::new(&root)))
        .await
        .map_err(|e| Error::Snapshot { path: workspace.to_string(), reason: e.to_string() })?
}

#[async_trait]
impl ToolService for LocalToolRunner {
    async fn specs(&self, names: Option<&[&str]>) -> Result<Vec<ToolSpec>> {
        Ok(match names {
            Some(names) => self.toolbox.only(names)?.specs(),
            None => self.toolbox.specs(),
        })
    }

    async fn call(&self, workspace: &str, call: &ToolCall, scope: &CallScope) -> Result<ToolOutput> {
        self.call_with(workspace, call, &self.limits, scope).await
    }

    async fn begin_task(&self, task_id: TaskId, workspace: &str) -> Result<()> {
        if self.baseline(task_id).await?.is_some() {
            tracing::debug!(%task_id, "the task's baseline is kept from when it began");
            return Ok(());
        }
        let snapshot = Arc::new(capture(workspace).await?);
        if let Some(file) = self.baseline_file(task_id) {
            let saved = snapshot.clone();
            tokio::task::spawn_blocking(move || saved.save(&file))
                .await
                .map_err(|e| Error::Baseline { path: task_id.to_string(), reason: e.to_string() })??;
        }
        self.baselines.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id, snapshot);
        Ok(())
    }

    async fn task_diff(&self, task_id: TaskId, workspace: &str) -> Result<TaskDiff> {
        let before = self.baseline(task_id).await?.ok_or(Error::NoBaseline(task_id))?;
        let now = capture(workspace).await?;
        Ok(before.diff(&now))
    }

    async fn end_task(&self, task_id: TaskId) {
        self.baselines.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
        if let Some(file) = self.baseline_file(task_id)
            && let Err(error) = std::fs::remove_file(&file)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%task_id, %error, file = %file.display(), "cannot remove the task's baseline");
        }
    }
}

/// Cheap-to-clone access to a tool-runner, local or remote.
#[derive(Clone)]
pub struct ToolRunnerClient {
    inner: Arc<dyn ToolService>,
    /// The same runner as `inner` when it is in this process.
    local: Option<Arc<LocalToolRunner>>,
}

impl ToolRunnerClient {
    /// A runner in this process.
    pub fn local(limits: RunnerLimits) -> Self {
        Self::from_local(LocalToolRunner::new(limits))
    }

    /// A runner in this process that shares task baselines through `dir` with the other
    /// processes of the cluster ([`LocalToolRunner::with_baseline_dir`]).
    pub fn local_shared(limits: RunnerLimits, dir: impl Into<PathBuf>) -> Self {
        Self::from_local(LocalToolRunner::with_baseline_dir(limits, dir))
    }

    /// This runner, in this process.
    pub fn from_local(runner: LocalToolRunner) -> Self {
        Self::from_shared_local(Arc::new(runner))
    }

    /// This runner, in this process, shared with others (e.g. its gRPC service).
    pub fn from_shared_local(runner: Arc<LocalToolRunner>) -> Self {
        Self { inner: runner.clone(), local: Some(runner) }
    }

    /// The tool-runner service at `url` (`http://HOST:PORT`), over gRPC. Connects on first use,
    /// so the service may start later; `limits` bound each call as [`ToolRunnerClient::local`]'s
    /// do ([`RemoteToolRunner::connect`]).
    pub fn connect(url: &str, limits: RunnerLimits) -> Result<Self> {
        Ok(Self::from_service(Arc::new(RemoteToolRunner::connect(url, limits)?)))
    }

    /// The tool runner of a cluster process, as `cluster.tool_runner` says: the tool-runner
    /// service at `cluster.tool_runner_url` (`grpc`, or `auto` with the URL set), the
    /// tool-runners' NATS job queue (`queue`), else a runner in this process sharing task
    /// baselines through [`baseline_dir`] ([`ToolRunnerClient::local_shared`]).
    /// The local runner decides approvals with the `[approval]` policy; its waiting calls are
    /// this process's to serve ([`ToolRunnerClient::approvals`]).
    pub fn for_cluster(config: &Config, limits: RunnerLimits) -> Result<Self> {
        use turbo_config::ToolRunnerRoute as Route;
        let c = &config.cluster;
        match (c.tool_runner, &c.tool_runner_url, &c.nats_url) {
            (Route::Grpc | Route::Auto, Some(url), _) => Self::connect(url, limits),
            (Route::Queue, _, Some(nats_url)) => {
                Ok(Self::from_service(Arc::new(QueuedToolRunner::new(nats_url, limits))))
            }
            (Route::Grpc, None, _) => Err(Error::BadUrl {
                url: String::new(),
                reason: "cluster.tool_runner is grpc but no URL is set".into(),
            }),
            (Route::Queue, _, None) => {
                Err(Error::Queue { reason: "cluster.tool_runner is queue but cluster.nats_url is not set".into() })
            }
            (Route::Local | Route::Auto, ..) => Ok(Self::from_local(
                LocalToolRunner::with_baseline_dir(limits, baseline_dir(config))
                    .with_approvals(Arc::new(Approvals::new(ApprovalPolicy::from_config(&config.approval))))
                    .with_checkpoints(Checkpoints::new(checkpoint_dir(config)))
                    .with_model(tools_model(config)),
            )),
        }
    }

    /// Any implementation: a remote transport or a test double.
    pub fn from_service(inner: Arc<dyn ToolService>) -> Self {
        Self { inner, local: None }
    }

    pub async fn specs(&self, names: Option<&[&str]>) -> Result<Vec<ToolSpec>> {
        self.inner.specs(names).await
    }

    /// Runs a call the agent itself makes, outside any task's approval scope (the default
    /// policy applies).
    pub async fn call(&self, workspace: &str, call: &ToolCall) -> Result<ToolOutput> {
        self.inner.call(workspace, call, &CallScope::default()).await
    }

    /// Runs a model's call for `scope`'s task and project (see [`ToolService::call`]).
    pub async fn call_in(&self, workspace: &str, call: &ToolCall, scope: &CallScope) -> Result<ToolOutput> {
        self.inner.call(workspace, call, scope).await
    }

    /// The calls waiting for approval, when the runner is in this process.
    pub fn approvals(&self) -> Option<SharedApprovals> {
        self.local.as_ref().map(|l| l.approvals().clone())
    }

    pub async fn begin_task(&self, task_id: TaskId, workspace: &str) -> Result<()> {
        self.inner.begin_task(task_id, workspace).await
    }

    pub async fn task_diff(&self, task_id: TaskId, workspace: &str) -> Result<TaskDiff> {
        self.inner.task_diff(task_id, workspace).await
    }

    pub async fn end_task(&self, task_id: TaskId) {
        self.inner.end_task(task_id).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(name: &str, args: serde_json::Value) -> ToolCall {
        ToolCall { id: "c1".into(), name: name.into(), arguments: args }
    }

    #[tokio::test]
    async fn runs_calls_in_the_workspace_and_tracks_the_task_diff() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().to_str().unwrap();
        let runner = ToolRunnerClient::local(RunnerLimits::default());
        let task = TaskId::new();
        runner.begin_task(task, ws).await.unwrap();
        let out = runner.call(ws, &call("fs_write", json!({"path": "app.py", "content": "print(1)\n"}))).await.unwrap();
        assert!(out.success);
        assert_eq!(std::fs::read_to_string(dir.path().join("app.py")).unwrap(), "print(1)\n");
        let diff = runner.task_diff(task, ws).await.unwrap();
        assert_eq!(diff.added, ["app.py"]);
        assert!(diff.unified.contains("+print(1)"));
        runner.end_task(task).await;
        assert!(matches!(runner.task_diff(task, ws).await, Err(Error::NoBaseline(_))));
    }

    #[tokio::test]
    async fn a_call_that_could_never_run_is_refused_before_anyone_is_asked() {
        use turbo_config::ApprovalAction;
        use turbo_core::tool::RiskLevel;
        let dir = tempfile::tempdir().unwrap();
        let mut policy = ApprovalPolicy::allow_all();
        for risk in [RiskLevel::Safe, RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical] {
            policy = policy.with(risk, ApprovalAction::Ask);
        }
        let approvals = Arc::new(Approvals::new(policy));
        let runner = ToolRunnerClient::from_local(
            LocalToolRunner::new(RunnerLimits::default())
                .with_approvals(approvals.clone())
                .with_checkpoints(Checkpoints::new(dir.path().join("checkpoints"))),
        );
        let ws = dir.path().to_str().unwrap();
        let scope = CallScope { task_id: Some(TaskId::new()), ..CallScope::default() };
        let within = |c| tokio::time::timeout(std::time::Duration::from_secs(10), c);
        // An unknown operation, and a known one with a wrongly typed parameter: refused at once.
        let unknown = call("git_ops", json!({"operation": "force_push_everything"}));
        let err = within(runner.call_in(ws, &unknown, &scope)).await.expect("not left waiting").unwrap_err();
        assert!(matches!(err, Error::Tool(turbo_tools::Error::UnknownOperation { .. })), "{err}");
        let mistyped = call("git_ops", json!({"operation": "commit", "parameters": {"message": 3}}));
        let err = within(runner.call_in(ws, &mistyped, &scope)).await.expect("not left waiting").unwrap_err();
        assert!(err.to_string().contains("message"), "{err}");
        assert!(approvals.list(None).is_empty(), "nobody was asked");
        assert!(!dir.path().join("checkpoints").exists(), "no checkpoint was taken");
    }

    #[tokio::test]
    async fn a_mutating_call_that_cannot_be_checkpointed_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        // The checkpoint directory cannot be made: a file is where its parent should be.
        std::fs::write(dir.path().join("data"), "").unwrap();
        let runner = ToolRunnerClient::from_local(
            LocalToolRunner::new(RunnerLimits::default())
                .with_checkpoints(Checkpoints::new(dir.path().join("data/checkpoints"))),
        );
        let scope = CallScope { task_id: Some(TaskId::new()), ..CallScope::default() };
        let ws = ws.to_str().unwrap();
        let write = call("fs_write", json!({"path": "app.py", "content": "print(1)\n"}));
        let err = runner.call_in(ws, &write, &scope).await.unwrap_err();
        assert!(matches!(&err, Error::Checkpoint(m) if m.contains("fs_write was not run")), "{err}");
        assert!(!dir.path().join("ws/app.py").exists(), "nothing was written");
        // A session's call outside any task is checkpointed too, so it is refused the same way.
        let in_session = CallScope { session_id: Some(turbo_core::ids::SessionId::new()), ..CallScope::default() };
        let err = runner.call_in(ws, &write, &in_session).await.unwrap_err();
        assert!(matches!(&err, Error::Checkpoint(m) if m.contains("fs_write was not run")), "{err}");
        // Reads need no checkpoint; calls outside a task and a session take none.
        assert!(runner.call_in(ws, &call("fs_list", json!({"path": "."})), &scope).await.unwrap().success);
        assert!(runner.call_in(ws, &write, &CallScope::default()).await.unwrap().success);
    }

    #[tokio::test]
    async fn a_baseline_is_shared_through_its_directory_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        std::fs::create_dir(&ws_dir).unwrap();
        let ws = ws_dir.to_str().unwrap();
        std::fs::write(ws_dir.join("app.py"), "print(0)\n").unwrap();
        let shared = dir.path().join("baselines");
        let orchestrator = ToolRunnerClient::local_shared(RunnerLimits::default(), &shared);
        let reviewer = ToolRunnerClient::local_shared(RunnerLimits::default(), &shared);
        let task = TaskId::new();
        orchestrator.begin_task(task, ws).await.unwrap();
        std::fs::write(ws_dir.join("app.py"), "print(1)\n").unwrap();

        // Another process sees the diff from the start of the task.
        let diff = reviewer.task_diff(task, ws).await.unwrap();
        assert_eq!(diff.modified, ["app.py"]);
        // A resumed run begins again: the baseline stays the one the task began with.
        let restarted = ToolRunnerClient::local_shared(RunnerLimits::default(), &shared);
        restarted.begin_task(task, ws).await.unwrap();
        assert_eq!(restarted.task_diff(task, ws).await.unwrap().modified, ["app.py"]);

        restarted.end_task(task).await;
        assert!(!shared.join(format!("{task}.json")).exists());
        let later = ToolRunnerClient::local_shared(RunnerLimits::default(), &shared);
        assert!(matches!(later.task_diff(task, ws).await, Err(Error::NoBaseline(_))));
    }

    #[tokio::test]
    async fn escapes_are_errors_the_model_can_correct() {
        let dir = tempfile::tempdir().unwrap();
        let runner = ToolRunnerClient::local(RunnerLimits::default());
        let err = runner
            .call(dir.path().to_str().unwrap(), &call("fs_read", json!({"path": "../../etc/passwd"})))
            .await
            .unwrap_err();
        assert!(err.is_model_correctable(), "{err}");
        assert!(err.to_string().contains("outside the workspace"), "{err}");
    }

    #[tokio::test]
    async fn specs_can_be_narrowed() {
        let runner = ToolRunnerClient::local(RunnerLimits::default());
        let specs = runner.specs(Some(&["fs_read", "fs_list"])).await.unwrap();
        assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["fs_read", "fs_list"]);
        assert!(runner.specs(Some(&["fs_nuke"])).await.unwrap_err().is_model_correctable());
        assert!(runner.specs(Some(&[])).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_cluster_uses_the_service_when_its_url_is_set() {
        let mut config = Config::default();
        config.store.data_dir = Some(PathBuf::from("/srv/turbo"));
        assert_eq!(baseline_dir(&config), Path::new("/srv/turbo/baselines"));
        assert!(ToolRunnerClient::for_cluster(&config, RunnerLimits::default()).is_ok());
        config.cluster.tool_runner_url = Some("not a url".into());
        let err = ToolRunnerClient::for_cluster(&config, RunnerLimits::default()).err().expect("a bad url");
        assert!(err.to_string().contains("not a url") && err.to_string().contains("cluster.tool_runner_url"), "{err}");
    }
}
