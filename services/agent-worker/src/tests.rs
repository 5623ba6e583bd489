//! Actor-level tests: supervision and handles, with an in-process model double.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::event::NullSink;
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::plan::ExecutionPhase;
use turbo_core::protocol::{FailureKind, PhaseAssignment};
use turbo_llm::{
    CallTiming, ChatModel, ChatRequest, ChatResponse, Message, ModelInfo, ModelSettings, Provider, TokenUsage,
};
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::{AgentDeps, AgentSettings, AgentWorker, WorkerSpec};

/// What the double does on each call, in order.
enum Step {
    Answer(&'static str),
    Panic,
}

struct Double {
    settings: ModelSettings,
    steps: Mutex<VecDeque<Step>>,
}

#[async_trait]
impl ChatModel for Double {
    fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    async fn chat(&self, _: ChatRequest, _: turbo_llm::OnDelta<'_>) -> turbo_llm::Result<ChatResponse> {
        let step = self.steps.lock().unwrap().pop_front();
        match step {
            Some(Step::Answer(text)) => Ok(ChatResponse {
                message: Message::assistant(text),
                usage: TokenUsage { prompt_tokens: 3, completion_tokens: 2 },
                usage_estimated: false,
                timing: CallTiming::default(),
                model: "double".into(),
                finish_reason: None,
            }),
            Some(Step::Panic) => panic!("model double told to panic"),
            None => Err(turbo_llm::Error::Server { message: "script exhausted".into() }),
        }
    }

    async fn model_info(&self) -> turbo_llm::Result<ModelInfo> {
        Ok(ModelInfo { name: "double".into(), context_length: Some(8192) })
    }

    async fn check_model(&self) -> turbo_llm::Result<()> {
        Ok(())
    }
}

async fn worker(steps: Vec<Step>) -> AgentWorker {
    let model = Arc::new(Double {
        settings: ModelSettings::new(Provider::Ollama, "http://unused", "double"),
        steps: Mutex::new(steps.into()),
    });
    let deps = AgentDeps {
        model,
        tools: ToolRunnerClient::local(RunnerLimits::default()),
        events: Arc::new(NullSink),
        settings: AgentSettings::default(),
    };
    AgentWorker::start(WorkerSpec {
        roles: vec![(AgentRole::Coder, deps)],
        per_role: 1,
        call_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

fn assignment(workspace: &str) -> PhaseAssignment {
    PhaseAssignment {
        task_id: TaskId::new(),
        plan_id: PlanId::new(),
        task_title: "t".into(),
        task_description: "write a file please".into(),
        phase: ExecutionPhase {
            estimated_duration: Duration::from_secs(60),
            ..ExecutionPhase::new("implement", "d", "coder")
        },
        plan_outline: vec![],
        attempt: 1,
        workspace: workspace.into(),
        feedback: None,
        max_steps: 5,
    }
}

#[tokio::test]
async fn a_panicking_agent_is_restarted_and_serves_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().to_str().unwrap();
    let worker = worker(vec![Step::Panic, Step::Answer("done")]).await;
    let coder = worker.handle(AgentRole::Coder).unwrap();

    let crashed = coder.run_phase(assignment(ws), CancellationToken::new()).await.unwrap_err();
    assert_eq!(crashed.kind, FailureKind::Internal);
    assert!(crashed.message.contains("stopped while working"), "{crashed}");

    // The supervisor restarts the actor under the same name; poll until it is back.
    let mut outcome = None;
    for _ in 0..200 {
        match coder.run_phase(assignment(ws), CancellationToken::new()).await {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            Err(e) if e.message.contains("not running") => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    let outcome = outcome.expect("the coder came back after its restart");
    assert!(outcome.success);
    assert_eq!(outcome.summary, "done");
    worker.stop().await;
}

#[tokio::test]
async fn handles_fail_cleanly_once_the_worker_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker(vec![Step::Answer("done")]).await;
    let coder = worker.handle(AgentRole::Coder).unwrap();
    worker.stop().await;
    let err = coder.run_phase(assignment(dir.path().to_str().unwrap()), CancellationToken::new()).await.unwrap_err();
    assert!(err.message.contains("not running"), "{err}");
}

#[tokio::test]
async fn a_role_that_does_not_plan_says_so() {
    let worker = worker(vec![]).await;
    let err = worker
        .handle(AgentRole::Coder)
        .unwrap()
        .plan(
            turbo_core::protocol::PlanRequest {
                task: turbo_core::task::DevelopmentTask::from_request(Default::default(), "do something useful"),
                workspace: "/tmp".into(),
            },
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("the coder does not plan"), "{err}");
    worker.stop().await;
}
