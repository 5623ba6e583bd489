//! The embedded stack: the orchestrator with the agents and the tool runner in this process,
//! wired with in-process transports. `turbo-coder run` uses it for one task; [`crate::run`]
//! serves the gRPC API on top of it when no NATS is configured. The cluster runs the same
//! actors; only the clients' transport differs (`crate::cluster`: NATS-hosted agents in
//! [`RunDeps::agents`]).

use std::sync::Arc;
use std::time::Duration;

use turbo_agent_worker::{AgentDeps, AgentSettings, AgentWorker, WorkerSpec};
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_core::knowledge::Knowledge;
use turbo_llm::ChatModel;
use turbo_store::Store;
use turbo_tool_runner::{ApprovalPolicy, Approvals, Checkpoints, LocalToolRunner, RunnerLimits, ToolRunnerClient};

use crate::error::{Error, Result};
use crate::{OrchestratorHandle, OrchestratorService, Recorder, RunDeps, RunSettings};

/// Opens the configured store: `store.url` (a Postgres URL in the cluster, or a SQLite URL),
/// else the SQLite file `turbo.db` in `store.data_dir`. Migrations run on open.
pub async fn open_store(config: &Config) -> Result<Store> {
    Ok(Store::open(config.store.url.as_deref(), &config.store.data_dir()).await?)
}

/// How runs behave, from the `[run]` section.
pub fn run_settings(config: &Config) -> RunSettings {
    let run = &config.run;
    RunSettings {
        max_steps: run.max_steps,
        test_rounds: run.test_rounds,
        review_rounds: run.review_rounds,
        task_timeout: Duration::from_secs(run.task_timeout_s),
    }
}

/// The model client of each role; cheap to clone.
#[derive(Clone)]
pub struct Models {
    pub planner: Arc<dyn ChatModel>,
    pub coder: Arc<dyn ChatModel>,
    pub tester: Arc<dyn ChatModel>,
    pub reviewer: Arc<dyn ChatModel>,
}

impl Models {
    /// Builds the clients; nothing is sent yet ([`Models::check`] does that).
    pub fn connect(config: &Config) -> Result<Models> {
        Ok(Models {
            planner: turbo_llm::connect(&config.models.planner)?,
            coder: turbo_llm::connect(&config.models.coder)?,
            tester: turbo_llm::connect(config.models.tester())?,
            reviewer: turbo_llm::connect(config.models.reviewer())?,
        })
    }

    pub fn get(&self, role: AgentRole) -> &Arc<dyn ChatModel> {
        match role {
            AgentRole::Planner => &self.planner,
            AgentRole::Coder => &self.coder,
            AgentRole::Tester => &self.tester,
            AgentRole::Reviewer => &self.reviewer,
        }
    }

    /// Checks that the models of `roles` are reachable and installed (each server and model
    /// once), so a wrong host, key or model fails at once with one clear message instead of
    /// in the middle of a run.
    pub async fn check(&self, roles: &[AgentRole]) -> Result<()> {
        let mut checked: Vec<(String, String)> = Vec::new();
        for &role in roles {
            let model = self.get(role);
            let s = model.settings();
            let key = (s.base_url.clone(), s.model.clone());
            if checked.contains(&key) {
                continue;
            }
            model.check_model().await?;
            checked.push(key);
        }
        Ok(())
    }
}

/// The tool-runner of a one-process stack: the `[run]` limits and `[sandbox]`, and the
/// `[approval]` policy with its decisions audited in `store`. Its waiting calls are decided by
/// whoever holds it: a terminal prompt (`run`), the gRPC ToolService (`serve`).
pub fn tool_runner(config: &Config, store: &Store) -> Arc<LocalToolRunner> {
    let approvals = Approvals::new(ApprovalPolicy::from_config(&config.approval)).with_audit(store.clone());
    Arc::new(
        LocalToolRunner::new(RunnerLimits::from_config(config))
            .with_approvals(Arc::new(approvals))
            .with_checkpoints(Checkpoints::new(turbo_tool_runner::checkpoint_dir(config)))
            .with_model(turbo_tool_runner::tools_model(config)),
    )
}

/// The orchestrator, the agents and the recorder of this process.
pub struct Embedded {
    pub orchestrator: OrchestratorHandle,
    pub recorder: Recorder,
    /// The tool-runner of this process; its approvals are decided through it.
    pub tools: ToolRunnerClient,
    service: OrchestratorService,
    worker: AgentWorker,
    recorder_task: tokio::task::JoinHandle<()>,
}

impl Embedded {
    /// Starts the stack; the agents retrieve context for their prompts from `knowledge`, or
    /// work without retrieved context when it is None.
    pub async fn start(
        config: &Config,
        store: Store,
        models: &Models,
        knowledge: Option<Arc<dyn Knowledge>>,
    ) -> Result<Embedded> {
        let tools = ToolRunnerClient::from_shared_local(tool_runner(config, &store));
        Self::start_with_tools(config, store, models, knowledge, tools).await
    }

    /// [`Embedded::start`] with this tool-runner (one the process also serves over gRPC).
    pub async fn start_with_tools(
        config: &Config,
        store: Store,
        models: &Models,
        knowledge: Option<Arc<dyn Knowledge>>,
        tools: ToolRunnerClient,
    ) -> Result<Embedded> {
        let (recorder, recorder_task) = Recorder::start(store.clone());
        let run = &config.run;
        let settings = AgentSettings {
            plan_attempts: run.plan_attempts,
            stream: run.stream,
            command_timeout_s: run.tool_timeout_s,
        };
        let roles = AgentRole::ALL
            .iter()
            .map(|&role| {
                let deps = AgentDeps {
                    model: models.get(role).clone(),
                    tools: tools.clone(),
                    events: recorder.sink(),
                    settings: settings.clone(),
                    knowledge: knowledge.clone(),
                };
                (role, deps)
            })
            .collect();
        let task_timeout = Duration::from_secs(run.task_timeout_s);
        let worker =
            AgentWorker::start(WorkerSpec { roles, per_role: run.agents_per_role, call_timeout: task_timeout })
                .await
                .map_err(|e| Error::Spawn(e.to_string()))?;
        let deps = RunDeps {
            agents: worker.client(),
            tools: tools.clone(),
            store,
            events: recorder.sink(),
            settings: run_settings(config),
        };
        let service = match OrchestratorService::start(deps).await {
            Ok(s) => s,
            Err(e) => {
                worker.stop().await;
                recorder_task.abort();
                return Err(e);
            }
        };
        Ok(Embedded { orchestrator: service.handle.clone(), recorder, tools, service, worker, recorder_task })
    }

    /// Stops the orchestrator (cancelling running tasks and waiting for them to record their
    /// end), the agents, and drains the recorder.
    pub async fn shutdown(self) {
        self.service.shutdown().await;
        self.worker.stop().await;
        self.recorder.flush().await;
        drop(self.recorder);
        self.recorder_task.abort();
    }
}
