//! The embedded mode: every service in this process, wired with in-process transports. The
//! cluster runs the same actors; only the clients' transport differs.

use std::sync::Arc;
use std::time::Duration;

use turbo_agent_worker::{AgentDeps, AgentSettings, AgentWorker, WorkerSpec};
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_llm::ChatModel;
use turbo_orchestrator::{OrchestratorHandle, OrchestratorService, Recorder, RunDeps, RunSettings};
use turbo_store::Store;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::exit::{self, Exit};

/// The model client of each role.
pub struct Models {
    pub planner: Arc<dyn ChatModel>,
    pub coder: Arc<dyn ChatModel>,
    pub tester: Arc<dyn ChatModel>,
    pub reviewer: Arc<dyn ChatModel>,
}

impl Models {
    pub fn connect(config: &Config) -> Result<Models, Exit> {
        let c = |s| turbo_llm::connect(s).map_err(|e| Exit::new(exit::for_model_error(&e), e.to_string()));
        Ok(Models {
            planner: c(&config.models.planner)?,
            coder: c(&config.models.coder)?,
            tester: c(config.models.tester())?,
            reviewer: c(config.models.reviewer())?,
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
}

pub struct Embedded {
    pub orchestrator: OrchestratorHandle,
    pub recorder: Recorder,
    service: OrchestratorService,
    worker: AgentWorker,
    recorder_task: tokio::task::JoinHandle<()>,
}

impl Embedded {
    pub async fn start(config: &Config, store: Store, models: &Models) -> Result<Embedded, Exit> {
        let (recorder, recorder_task) = Recorder::start(store.clone());
        let run = &config.run;
        let tools = ToolRunnerClient::local(RunnerLimits {
            timeout: Duration::from_secs(run.tool_timeout_s),
            output_cap: run.tool_output_cap,
        });
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
                };
                (role, deps)
            })
            .collect();
        let task_timeout = Duration::from_secs(run.task_timeout_s);
        let worker =
            AgentWorker::start(WorkerSpec { roles, per_role: run.agents_per_role, call_timeout: task_timeout })
                .await
                .map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
        let deps = RunDeps {
            agents: worker.client(),
            tools,
            store,
            events: recorder.sink(),
            settings: RunSettings {
                max_steps: run.max_steps,
                test_rounds: run.test_rounds,
                review_rounds: run.review_rounds,
                task_timeout,
            },
        };
        let service = OrchestratorService::start(deps).await.map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
        Ok(Embedded { orchestrator: service.handle.clone(), recorder, service, worker, recorder_task })
    }

    /// Stops the orchestrator (cancelling running tasks), the agents, and drains the recorder.
    pub async fn shutdown(self) {
        self.service.shutdown().await;
        self.worker.stop().await;
        self.recorder.flush().await;
        drop(self.recorder);
        self.recorder_task.abort();
    }
}
