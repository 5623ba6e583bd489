//! Actor-level tests: supervision and handles, with an in-process model double; and the
//! context each role retrieves for its prompt, with the testkit's scripted model server and a
//! knowledge double.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, NullSink};
use turbo_core::ids::{PlanId, ProjectId, TaskId};
use turbo_core::knowledge::{
    ContextRequest, IndexReport, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeStats,
    RetrievedContext, SearchHit, SearchRequest,
};
use turbo_core::plan::ExecutionPhase;
use turbo_core::protocol::{FailureKind, PhaseAssignment, PlanRequest};
use turbo_core::task::DevelopmentTask;
use turbo_llm::{
    CallTiming, ChatModel, ChatRequest, ChatResponse, Message, ModelInfo, ModelSettings, Provider, TokenUsage,
};
use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::context::{CONTEXT_LIMIT, RETRIEVED_HEADING, context_budget_chars};
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
        knowledge: None,
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
        project_id: Some(ProjectId::new()),
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

// ---------------------------------------------------------------------------------------------
// Retrieved context: what each role asks the knowledge base for, what its prompt carries, and
// the outcome it reports back.

const MODEL: &str = "coder:test";
/// The context length the scripted server reports (below the default cap of 32768, so it is
/// the window the agents budget against).
const WINDOW: u32 = 16384;
const CONTEXT_TEXT: &str = "<repository-content source=\"src/greet.py:1-3 (greet)\" trust=\"untrusted\">\n\
def greet(): return 'hello from the knowledge double'\n</repository-content>";
const SOURCE: &str = "src/greet.py:1-3";
const EXCERPT: &str = "def greet(): return 'hello from the knowledge double'";

fn chunk_ids() -> Vec<String> {
    vec!["chunk-greet".to_string(), "chunk-readme".to_string()]
}

/// A knowledge base that answers every context request with `answer` and records the requests
/// and the outcomes reported to it.
struct KnowledgeDouble {
    answer: Result<RetrievedContext, KnowledgeError>,
    requests: Mutex<Vec<ContextRequest>>,
    outcomes: Mutex<Vec<(Vec<String>, bool)>>,
}

impl KnowledgeDouble {
    fn new(answer: Result<RetrievedContext, KnowledgeError>) -> Arc<Self> {
        Arc::new(Self { answer, requests: Mutex::default(), outcomes: Mutex::default() })
    }

    fn answering() -> Arc<Self> {
        Self::new(Ok(RetrievedContext {
            text: CONTEXT_TEXT.to_string(),
            chunk_ids: chunk_ids(),
            sources: vec![SOURCE.to_string()],
            excerpts: vec![EXCERPT.to_string()],
        }))
    }

    fn requests(&self) -> Vec<ContextRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn outcomes(&self) -> Vec<(Vec<String>, bool)> {
        self.outcomes.lock().unwrap().clone()
    }
}

fn not_for_agents(call: &str) -> KnowledgeError {
    KnowledgeError::internal(format!("agents do not call {call}"))
}

#[async_trait]
impl Knowledge for KnowledgeDouble {
    async fn index_workspace(&self, _: IndexRequest) -> Result<IndexReport, KnowledgeError> {
        Err(not_for_agents("index_workspace"))
    }
    async fn add_chunk(&self, _: KnowledgeChunk) -> Result<String, KnowledgeError> {
        Err(not_for_agents("add_chunk"))
    }
    async fn search(&self, _: SearchRequest) -> Result<Vec<SearchHit>, KnowledgeError> {
        Err(not_for_agents("search"))
    }
    async fn delete_chunk(&self, _: &str) -> Result<bool, KnowledgeError> {
        Err(not_for_agents("delete_chunk"))
    }
    async fn stats(&self, _: Option<&str>) -> Result<KnowledgeStats, KnowledgeError> {
        Err(not_for_agents("stats"))
    }
    async fn build_context(&self, req: ContextRequest) -> Result<RetrievedContext, KnowledgeError> {
        self.requests.lock().unwrap().push(req);
        self.answer.clone()
    }
    async fn record_outcome(&self, chunk_ids: &[String], success: bool) -> Result<(), KnowledgeError> {
        self.outcomes.lock().unwrap().push((chunk_ids.to_vec(), success));
        Ok(())
    }
}

/// One role's worker whose model is the scripted server, with a workspace of its own.
struct Rig {
    server: ScriptedModelServer,
    worker: AgentWorker,
    tools: ToolRunnerClient,
    dir: tempfile::TempDir,
    events: Arc<Collected>,
}

impl Rig {
    async fn start(role: AgentRole, replies: Vec<Reply>, knowledge: Arc<KnowledgeDouble>) -> Rig {
        let server =
            ScriptedModelServer::start(Script::new().model(ModelDef::new(MODEL, WINDOW)).replies(MODEL, replies))
                .await
                .unwrap();
        let model = turbo_llm::connect(&ModelSettings::new(Provider::Ollama, server.url(), MODEL)).unwrap();
        let tools = ToolRunnerClient::local(RunnerLimits::default());
        let events = Arc::new(Collected::default());
        let deps = AgentDeps {
            model,
            tools: tools.clone(),
            events: events.clone(),
            settings: AgentSettings::default(),
            knowledge: Some(knowledge),
        };
        let worker = AgentWorker::start(WorkerSpec {
            roles: vec![(role, deps)],
            per_role: 1,
            call_timeout: Duration::from_secs(60),
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README.md"), "# greeter\n").unwrap();
        Rig { server, worker, tools, dir, events }
    }

    /// The events emitted so far.
    fn events(&self) -> Vec<EventKind> {
        self.events.0.lock().unwrap().clone()
    }

    fn workspace(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    /// The user message of every chat request the model server received, in order.
    fn prompts(&self) -> Vec<String> {
        self.server
            .requests_to("/api/chat")
            .iter()
            .flat_map(|r| r.body["messages"].as_array().cloned().unwrap_or_default())
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn run_phase(&self, role: AgentRole, a: PhaseAssignment) -> turbo_core::protocol::PhaseOutcome {
        let handle = self.worker.handle(role).unwrap();
        handle.run_phase(a, CancellationToken::new()).await.unwrap()
    }
}

fn phase_assignment(workspace: &str, project: ProjectId, phase: ExecutionPhase) -> PhaseAssignment {
    PhaseAssignment {
        task_id: TaskId::new(),
        plan_id: PlanId::new(),
        project_id: Some(project),
        task_title: "greeting".into(),
        task_description: "add a greet function to the greeter".into(),
        phase: ExecutionPhase { estimated_duration: Duration::from_secs(60), ..phase },
        plan_outline: vec![],
        attempt: 1,
        workspace: workspace.into(),
        feedback: None,
        max_steps: 5,
    }
}

/// Checks a context request: the assignment's project and workspace, a budget of `share` of
/// the model's context window, and a query naming each of `query_has`.
fn assert_request(req: &ContextRequest, project: ProjectId, workspace: &str, share: f64, query_has: &[&str]) {
    assert_eq!(req.project_id, project.to_string());
    assert_eq!(req.workspace.as_deref(), Some(workspace));
    assert_eq!(req.budget_chars, context_budget_chars(WINDOW, share));
    assert_eq!(req.limit, CONTEXT_LIMIT);
    for part in query_has {
        assert!(req.query.contains(part), "the query {:?} does not name {part:?}", req.query);
    }
}

/// Checks that `prompt` holds the retrieved text under its heading.
fn assert_has_context(prompt: &str) {
    let at = prompt.find(RETRIEVED_HEADING).unwrap_or_else(|| panic!("no retrieved context section in:\n{prompt}"));
    assert!(prompt[at..].contains(CONTEXT_TEXT), "the section lacks the retrieved text:\n{prompt}");
}

#[tokio::test]
async fn planner_prompt_carries_retrieved_context_and_the_plan_names_its_sources() {
    let knowledge = KnowledgeDouble::answering();
    let plan = json!({
        "phases": [{"name": "implement", "description": "write greet()", "agent": "coder", "depends_on": []}],
        "confidence_score": 0.8,
        "risk_factors": []
    });
    let rig = Rig::start(AgentRole::Planner, vec![Reply::Json(plan)], knowledge.clone()).await;
    let mut task = DevelopmentTask::from_request(ProjectId::new(), "add a greet function to the greeter");
    task.requirements = vec!["greet returns a string".into()];
    let request = PlanRequest { task: task.clone(), workspace: rig.workspace() };

    let handle = rig.worker.handle(AgentRole::Planner).unwrap();
    let outcome = handle.plan(request, CancellationToken::new()).await.unwrap();

    let requests = knowledge.requests();
    assert_eq!(requests.len(), 1);
    let query = ["add a greet function", "greet returns a string"];
    assert_request(&requests[0], task.project_id, &rig.workspace(), crate::planner::CONTEXT_SHARE, &query);
    let prompts = rig.prompts();
    assert_eq!(prompts.len(), 1);
    assert_has_context(&prompts[0]);
    assert!(prompts[0].contains("Files in the workspace"), "the workspace outline is still there");
    assert_eq!(outcome.plan.context_sources, ["workspace file list", SOURCE]);
    assert_eq!(knowledge.outcomes(), [(chunk_ids(), true)]);
    rig.worker.stop().await;
}

#[tokio::test]
async fn design_phase_prompt_carries_retrieved_context() {
    let knowledge = KnowledgeDouble::answering();
    let rig = Rig::start(AgentRole::Planner, vec![Reply::text("greet takes a name")], knowledge.clone()).await;
    let project = ProjectId::new();
    let phase = ExecutionPhase::new("design", "decide the greet signature", "planner");
    let outcome = rig.run_phase(AgentRole::Planner, phase_assignment(&rig.workspace(), project, phase)).await;

    assert!(outcome.success);
    let requests = knowledge.requests();
    assert_eq!(requests.len(), 1);
    let query = ["add a greet function", "design", "decide the greet signature"];
    assert_request(&requests[0], project, &rig.workspace(), crate::planner::CONTEXT_SHARE, &query);
    assert_has_context(&rig.prompts()[0]);
    assert_eq!(knowledge.outcomes(), [(chunk_ids(), true)]);
    rig.worker.stop().await;
}

#[tokio::test]
async fn coder_prompt_carries_retrieved_context_for_the_phase() {
    let knowledge = KnowledgeDouble::answering();
    let rig = Rig::start(AgentRole::Coder, vec![Reply::text("added greet")], knowledge.clone()).await;
    let project = ProjectId::new();
    let phase = ExecutionPhase {
        deliverables: vec!["a greet function".into()],
        files_to_create: vec!["src/greet.py".into()],
        files_to_modify: vec!["src/app.py".into()],
        ..ExecutionPhase::new("implement", "write greet()", "coder")
    };
    let outcome = rig.run_phase(AgentRole::Coder, phase_assignment(&rig.workspace(), project, phase)).await;

    assert!(outcome.success);
    assert_eq!(outcome.summary, "added greet");
    // The context is told as an event: which chunks, from where, and how they begin.
    let told: Vec<EventKind> =
        rig.events().into_iter().filter(|k| matches!(k, EventKind::ContextRetrieved { .. })).collect();
    let [EventKind::ContextRetrieved { role, phase, chunks }] = &told[..] else {
        panic!("one context event: {told:?}")
    };
    assert_eq!((*role, phase.as_deref()), (AgentRole::Coder, Some("implement")));
    assert_eq!(chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), chunk_ids());
    assert_eq!((chunks[0].source.as_str(), chunks[0].excerpt.as_str()), (SOURCE, EXCERPT));
    // A service that sent fewer sources or excerpts than ids: those are empty, not shifted.
    assert_eq!((chunks[1].source.as_str(), chunks[1].excerpt.as_str()), ("", ""));
    let requests = knowledge.requests();
    assert_eq!(requests.len(), 1);
    let query = ["greeting", "implement", "write greet()", "a greet function", "src/greet.py", "src/app.py"];
    assert_request(&requests[0], project, &rig.workspace(), crate::coder::CONTEXT_SHARE, &query);
    let prompts = rig.prompts();
    assert_has_context(&prompts[0]);
    assert!(prompts[0].contains("Files in the workspace"), "the workspace outline is still there");
    assert_eq!(knowledge.outcomes(), [(chunk_ids(), true)]);
    rig.worker.stop().await;
}

#[tokio::test]
async fn coder_fix_round_retrieves_with_the_end_of_the_failing_output() {
    let knowledge = KnowledgeDouble::answering();
    let rig = Rig::start(AgentRole::Coder, vec![Reply::text("fixed greet")], knowledge.clone()).await;
    let phase = ExecutionPhase::new("implement", "Fix the problems the tests reported", "coder");
    let a = PhaseAssignment {
        feedback: Some(format!("{}FAILED tests/test_greet.py::test_hello - AssertionError", "noise ".repeat(1_000))),
        ..phase_assignment(&rig.workspace(), ProjectId::new(), phase)
    };
    rig.run_phase(AgentRole::Coder, a).await;

    let requests = knowledge.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].query.contains("tests/test_greet.py::test_hello"), "{}", requests[0].query);
    assert!(requests[0].query.len() < 4_000, "only the end of long output goes into the query");
    rig.worker.stop().await;
}

#[tokio::test]
async fn reviewer_prompt_carries_retrieved_context_and_a_rejection_counts_as_failure() {
    let knowledge = KnowledgeDouble::answering();
    let review = json!({"verdict": "changes_requested", "summary": "greet needs a test", "findings": []});
    let rig = Rig::start(AgentRole::Reviewer, vec![Reply::Json(review)], knowledge.clone()).await;
    let project = ProjectId::new();
    let a = phase_assignment(&rig.workspace(), project, ExecutionPhase::new("review", "review greet", "reviewer"));
    rig.tools.begin_task(a.task_id, &rig.workspace()).await.unwrap();
    std::fs::write(rig.dir.path().join("GREETING.md"), "say hello\n").unwrap();

    let outcome = rig.run_phase(AgentRole::Reviewer, a).await;

    assert!(!outcome.success, "{}", outcome.summary);
    let requests = knowledge.requests();
    assert_eq!(requests.len(), 1);
    let query = ["review", "review greet", "GREETING.md"];
    assert_request(&requests[0], project, &rig.workspace(), crate::reviewer::CONTEXT_SHARE, &query);
    let prompts = rig.prompts();
    assert_has_context(&prompts[0]);
    assert!(prompts[0].contains("Diff:"), "the diff is still there");
    assert_eq!(knowledge.outcomes(), [(chunk_ids(), false)]);
    rig.worker.stop().await;
}

#[tokio::test]
async fn a_knowledge_outage_leaves_the_phase_working_without_context() {
    let knowledge = KnowledgeDouble::new(Err(KnowledgeError::unavailable("the knowledge service is down")));
    let rig = Rig::start(AgentRole::Coder, vec![Reply::text("added greet")], knowledge.clone()).await;
    let phase = ExecutionPhase::new("implement", "write greet()", "coder");
    let outcome = rig.run_phase(AgentRole::Coder, phase_assignment(&rig.workspace(), ProjectId::new(), phase)).await;

    assert!(outcome.success);
    assert_eq!(knowledge.requests().len(), 1, "the coder asked for context");
    let prompts = rig.prompts();
    assert_eq!(prompts.len(), 1);
    assert!(!prompts[0].contains(RETRIEVED_HEADING), "an empty context section:\n{}", prompts[0]);
    assert!(knowledge.outcomes().is_empty(), "nothing was retrieved, so nothing is recorded");
    rig.worker.stop().await;
}

#[tokio::test]
async fn an_assignment_from_before_project_ids_runs_without_context() {
    let knowledge = KnowledgeDouble::answering();
    let rig = Rig::start(AgentRole::Coder, vec![Reply::text("added greet")], knowledge.clone()).await;
    let phase = ExecutionPhase::new("implement", "write greet()", "coder");
    let a = PhaseAssignment { project_id: None, ..phase_assignment(&rig.workspace(), ProjectId::new(), phase) };
    let outcome = rig.run_phase(AgentRole::Coder, a).await;

    assert!(outcome.success);
    assert!(knowledge.requests().is_empty());
    assert!(!rig.prompts()[0].contains(RETRIEVED_HEADING));
    rig.worker.stop().await;
}

/// Keeps every event, in order.
#[derive(Default)]
struct Collected(Mutex<Vec<turbo_core::event::EventKind>>);

impl turbo_core::event::EventSink for Collected {
    fn emit(&self, _: TaskId, kind: turbo_core::event::EventKind) {
        self.0.lock().unwrap().push(kind);
    }
}

/// Decides the task's calls as they come to wait, in order (approve?, note), as a person
/// would; fails when one has not come within 30 s.
async fn decide_waiting(
    approvals: Arc<turbo_tool_runner::Approvals>,
    task: TaskId,
    decisions: Vec<(bool, Option<String>)>,
) {
    for (approve, note) in decisions {
        let pending = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(pending) = approvals.list(Some(task)).into_iter().next() {
                    return pending;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a call waits for approval within 30 s");
        assert!(approvals.decide(&pending.approval_id, approve, "ana", note).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_approval_is_in_the_events_and_a_denial_reaches_the_model() {
    use turbo_core::event::EventKind;
    use turbo_core::tool::RiskLevel;
    use turbo_tool_runner::{ApprovalPolicy, Approvals, LocalToolRunner};

    let replies = vec![
        Reply::tool_call("shell_run", json!({"command": "touch approved.txt"})),
        Reply::tool_call("shell_run", json!({"command": "touch denied.txt"})),
        Reply::text("done"),
    ];
    let server = ScriptedModelServer::start(Script::new().model(ModelDef::new(MODEL, WINDOW)).replies(MODEL, replies))
        .await
        .unwrap();
    let approvals =
        Arc::new(Approvals::new(ApprovalPolicy::allow_all().with(RiskLevel::High, turbo_config::ApprovalAction::Ask)));
    let tools =
        ToolRunnerClient::from_local(LocalToolRunner::new(RunnerLimits::default()).with_approvals(approvals.clone()));
    let events = Arc::new(Collected::default());
    let deps = AgentDeps {
        model: turbo_llm::connect(&ModelSettings::new(Provider::Ollama, server.url(), MODEL)).unwrap(),
        tools,
        events: events.clone(),
        settings: AgentSettings::default(),
        knowledge: None,
    };
    let worker = AgentWorker::start(WorkerSpec {
        roles: vec![(AgentRole::Coder, deps)],
        per_role: 1,
        call_timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = assignment(dir.path().to_str().unwrap());
    let task = a.task_id;
    // A person at the other end: approves the first call, denies the second.
    let person = tokio::spawn(decide_waiting(
        approvals.clone(),
        task,
        vec![(true, None), (false, Some("not that file".to_string()))],
    ));
    let outcome = worker.handle(AgentRole::Coder).unwrap().run_phase(a, CancellationToken::new()).await.unwrap();
    person.await.unwrap();
    assert!(outcome.success, "{}", outcome.summary);
    assert!(dir.path().join("approved.txt").exists());
    assert!(!dir.path().join("denied.txt").exists(), "a denied call never runs");

    let events = events.0.lock().unwrap().clone();
    let approvals_seen: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::ApprovalRequested { tool, step, risk, .. } => {
                Some(format!("requested {tool} step {step} {risk:?}"))
            }
            EventKind::ApprovalDecided { approved, decided_by, step, .. } => {
                Some(format!("decided {approved} by {decided_by} step {step}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        approvals_seen,
        [
            "requested shell_run step 1 High",
            "decided true by ana step 1",
            "requested shell_run step 2 High",
            "decided false by ana step 2"
        ]
    );
    // The model read who denied the call and why.
    let tool_messages: Vec<String> = server
        .requests_to("/api/chat")
        .iter()
        .flat_map(|r| r.body["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(tool_messages.iter().any(|m| m.contains("ana denied") && m.contains("not that file")), "{tool_messages:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testers_own_command_follows_the_projects_approval_policy() {
    use turbo_config::{ApprovalAction, ApprovalConfig, ApprovalOverride};
    use turbo_core::event::EventKind;
    use turbo_tool_runner::{ApprovalPolicy, Approvals, LocalToolRunner};

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test_ok.py"),
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n",
    )
    .unwrap();
    let project = ProjectId::new();
    // The defaults run shell commands at once; this project asks first.
    let mut config = ApprovalConfig::default();
    config
        .projects
        .insert(project.to_string(), ApprovalOverride { high: Some(ApprovalAction::Ask), ..Default::default() });
    let approvals = Arc::new(Approvals::new(ApprovalPolicy::from_config(&config)));
    let tools =
        ToolRunnerClient::from_local(LocalToolRunner::new(RunnerLimits::default()).with_approvals(approvals.clone()));
    let events = Arc::new(Collected::default());
    let deps = AgentDeps {
        model: Arc::new(Double {
            settings: ModelSettings::new(Provider::Ollama, "http://unused", "double"),
            steps: Mutex::new(VecDeque::new()),
        }),
        tools,
        events: events.clone(),
        settings: AgentSettings::default(),
        knowledge: None,
    };
    let worker = AgentWorker::start(WorkerSpec {
        roles: vec![(AgentRole::Tester, deps)],
        per_role: 1,
        call_timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let a =
        phase_assignment(dir.path().to_str().unwrap(), project, ExecutionPhase::new("test", "run the tests", "tester"));
    let task = a.task_id;
    let person = tokio::spawn(decide_waiting(approvals.clone(), task, vec![(true, None)]));
    let outcome = worker.handle(AgentRole::Tester).unwrap().run_phase(a, CancellationToken::new()).await.unwrap();
    person.await.unwrap();
    assert!(outcome.success, "{}", outcome.summary);
    let events = events.0.lock().unwrap().clone();
    let kinds: Vec<&str> =
        events.iter().map(|e| e.name()).filter(|n| n.starts_with("approval") || *n == "test_run").collect();
    assert_eq!(kinds, ["approval_requested", "approval_decided", "test_run"]);
    assert!(events.iter().any(|e| matches!(e, EventKind::ApprovalRequested { step: 0, phase, tool, .. } if phase == "test" && tool == "shell_run")));
    worker.stop().await;
}
