//! End to end: the real `turbo-coder` binary against scripted Ollama/OpenAI servers over HTTP.

use serde_json::{Value, json};
use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};
use turbo_tests::{Sandbox, minilm_dir};

const PLANNER: &str = "planner:test";
const CODER: &str = "coder:test";
const KEY: &str = "turbo-secret-key";
const TASK: &str = "add a greet(name) function in greet.py with a unit test";

const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const GREET_TEST: &str = "import unittest\n\nfrom greet import greet\n\n\nclass GreetTest(unittest.TestCase):\n    def test_greets_by_name(self):\n        self.assertEqual(greet(\"Ada\"), \"Hello, Ada!\")\n";

fn plan() -> Value {
    json!({
        "phases": [
            {"name": "implement", "description": "write greet() and its test", "agent": "coder", "depends_on": [], "estimated_minutes": 5,
             "files_to_create": ["greet.py", "test_greet.py"]},
            {"name": "test", "description": "run the tests", "agent": "tester", "depends_on": ["implement"]},
            {"name": "review", "description": "review the diff", "agent": "reviewer", "depends_on": ["test"]}
        ],
        "confidence_score": 0.9,
        "risk_factors": []
    })
}

fn write(path: &str, content: &str) -> Reply {
    Reply::tool_call("fs_write", json!({"path": path, "content": content}))
}

const BROKEN: &str = "def greet(name):\n    return 'hi'\n";

/// The coder writes a greeting that fails its test, then, in the fix round it is sent back
/// with the failure, the right one; the reviewer approves.
fn broken_then_fixed() -> Vec<Reply> {
    vec![
        write("greet.py", BROKEN),
        write("test_greet.py", GREET_TEST),
        Reply::text("done"),
        write("greet.py", GREET),
        Reply::text("fixed the greeting"),
        approve(),
    ]
}

fn approve() -> Reply {
    Reply::Json(json!({"verdict": "approve", "summary": "does what was asked", "findings": []}))
}

/// The remote "turbo" host (planner, needs the key) and the local host (coder, tester, reviewer).
async fn servers(planner: Vec<Reply>, coder: Vec<Reply>) -> (ScriptedModelServer, ScriptedModelServer) {
    let turbo = ScriptedModelServer::start(
        Script::new().require_api_key(KEY).model(ModelDef::new(PLANNER, 131072)).replies(PLANNER, planner),
    )
    .await
    .unwrap();
    let local = ScriptedModelServer::start(Script::new().model(ModelDef::new(CODER, 16384)).replies(CODER, coder))
        .await
        .unwrap();
    (turbo, local)
}

fn sandbox(turbo: &ScriptedModelServer, local: &ScriptedModelServer) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.set("TURBO_HOST", turbo.url())
        .set("OLLAMA_API_KEY", KEY)
        .set("PLANNER_MODEL", PLANNER)
        .set("OLLAMA_LOCAL", local.url())
        .set("CODER_MODEL", CODER);
    sb
}

fn chat_requests(server: &ScriptedModelServer) -> Vec<turbo_testkit::RecordedRequest> {
    server.requests().into_iter().filter(|r| r.path == "/api/chat" || r.path == "/v1/chat/completions").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_writes_the_files_runs_the_tests_and_reviews() {
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            write("greet.py", GREET),
            write("test_greet.py", GREET_TEST),
            Reply::text("added greet and its test"),
            approve(),
        ],
    )
    .await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);

    // The files, exactly as the model wrote them.
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
    assert_eq!(sb.read("test_greet.py").as_deref(), Some(GREET_TEST));

    // The events, in order of the run.
    let types: Vec<String> = out.json_lines().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    for t in [
        "task_created",
        "plan_ready",
        "phase_started",
        "model_call",
        "tool_call",
        "tool_result",
        "test_run",
        "review",
        "progress",
        "result",
    ] {
        assert!(types.contains(&t.to_string()), "no {t} event in {types:?}");
    }
    let statuses: Vec<Value> = out.events_of("status_changed").iter().map(|e| e["to"].clone()).collect();
    assert_eq!(statuses, [json!("planned"), json!("in_progress"), json!("completed")]);
    let seqs: Vec<u64> = out.json_lines().iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless event numbering");
    let test_runs = out.events_of("test_run");
    assert_eq!(test_runs.len(), 1);
    assert_eq!(test_runs[0]["passed"], true);
    assert!(test_runs[0]["command"].as_str().unwrap().starts_with("python3 -m"), "{}", test_runs[0]);
    assert_eq!(out.events_of("review")[0]["verdict"], "approve");
    let result = out.result();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["generated_files"], json!(["greet.py", "test_greet.py"]));

    // The planner talked to the turbo host with the key; the coder to the local host without it.
    let planner_calls = chat_requests(&turbo);
    assert_eq!(planner_calls.len(), 1);
    assert_eq!(planner_calls[0].header("authorization"), Some(&*format!("Bearer {KEY}")));
    assert_eq!(planner_calls[0].body["model"], PLANNER);
    assert!(planner_calls[0].body["format"].is_object(), "the plan is requested with a JSON schema");
    // The planner model reports 128k; the default cap keeps num_ctx at 32768, never 4096.
    assert_eq!(planner_calls[0].body["options"]["num_ctx"], 32768);
    let coder_calls = chat_requests(&local);
    assert_eq!(coder_calls.len(), 4, "three coder turns and one review");
    assert!(
        local.requests().iter().all(|r| r.header("authorization").is_none()),
        "the turbo key must not go to the local host"
    );
    assert!(
        coder_calls.iter().all(|r| r.body["options"]["num_ctx"] == 16384),
        "the coder uses the context length /api/show reports"
    );
    assert!(
        coder_calls[0].body["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "fs_write"))
    );
    assert_eq!(turbo.remaining(PLANNER), 0);
    assert_eq!(local.remaining(CODER), 0);

    // What was stored.
    let store = sb.store().await;
    let id = result["task_id"].as_str().unwrap();
    let stored = store.find_task(id).await.unwrap();
    assert_eq!(stored.task.status.as_str(), "completed");
    assert_eq!(stored.task.progress_percentage, 100.0);
    assert_eq!(stored.workspace, sb.workdir.canonicalize().unwrap().display().to_string());
    let phases = store.phases(stored.task.id).await.unwrap();
    assert_eq!(
        phases.iter().map(|p| (p.name.as_str(), p.status.as_str())).collect::<Vec<_>>(),
        [("implement", "succeeded"), ("test", "succeeded"), ("review", "succeeded")]
    );
    let calls = store.tool_calls(stored.task.id).await.unwrap();
    assert_eq!(
        calls.iter().map(|c| (c.tool.as_str(), c.success)).collect::<Vec<_>>(),
        [("fs_write", Some(true)), ("fs_write", Some(true))]
    );
    assert_eq!(store.steps(stored.task.id).await.unwrap().len(), 2);
    let by_role = store.usage_by_role(stored.task.id).await.unwrap();
    let roles: Vec<String> = by_role.keys().map(|r| r.to_string()).collect();
    assert_eq!(roles, ["planner", "coder", "reviewer"]);
    let stored_total: u64 = by_role.values().map(|u| u64::from(u.total())).sum();
    let event_total: u64 = out
        .events_of("model_call")
        .iter()
        .map(|e| e["prompt_tokens"].as_u64().unwrap() + e["completion_tokens"].as_u64().unwrap())
        .sum();
    assert!(stored_total > 0);
    assert_eq!(stored_total, event_total);
    assert_eq!(stored_total, result["prompt_tokens"].as_u64().unwrap() + result["completion_tokens"].as_u64().unwrap());
    assert_eq!(store.events(stored.task.id, 0).await.unwrap().len(), out.json_lines().len() - 1);

    // And the CLI reads it back.
    let list = sb.run(&["tasks", "list", "--json"]).await;
    list.assert_code(0);
    let listed: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"], "completed");
    let show = sb.run(&["tasks", "show", &id[..8]]).await;
    show.assert_code(0);
    assert!(
        show.stdout.contains("implement")
            && show.stdout.contains("fs_write")
            && show.stdout.contains("review: approve"),
        "{}",
        show.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_the_plan_and_changes_nothing() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    let sb = sandbox(&turbo, &local);
    sb.write("README.md", "hello\n");
    let out = sb.run(&["run", TASK]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("Execution plan"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1. implement [coder]") && out.stdout.contains("3. review [reviewer]"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("--apply"), "the dry run says how to apply: {}", out.stdout);
    assert_eq!(std::fs::read_dir(&sb.workdir).unwrap().count(), 1, "nothing written");
    assert!(chat_requests(&local).is_empty(), "no coder call in a dry run");
    // The planner saw the workspace's files as untrusted content.
    let prompt = chat_requests(&turbo)[0].body["messages"].to_string();
    assert!(prompt.contains("README.md") && prompt.contains("untrusted"), "{prompt}");
    let list = sb.run(&["tasks", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed[0]["status"], "planned");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_planner_prompt_carries_context_retrieved_from_the_workspace() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("TURBO_CODER__KNOWLEDGE__MODEL_DIR", minilm_dir().display().to_string());
    sb.write(
        "auth/tokens.py",
        "import hmac\n\n\ndef issue_token(user_id, secret):\n    \"\"\"Signs a session token for the user.\"\"\"\n    \
         return hmac.new(secret, str(user_id).encode(), 'sha256').hexdigest()\n\n\n\
         def verify_token(user_id, token, secret):\n    return hmac.compare_digest(issue_token(user_id, secret), token)\n",
    );
    sb.write("shapes/area.py", "def circle_area(radius):\n    return 3.14159 * radius * radius\n");
    sb.write("docs/deploy.md", "# Deploying\n\nCopy the wheel to the server and restart the unit.\n");
    let task = "replace the session token signing with JWT tokens that expire";
    let out = sb.run(&["run", task]).await;
    out.assert_code(0);
    assert!(!out.stderr.contains("without retrieved context"), "the model is there: {}", out.stderr);

    let prompt = chat_requests(&turbo)[0].body["messages"].to_string();
    let at =
        prompt.find("Code and knowledge retrieved for this step:").unwrap_or_else(|| panic!("no context: {prompt}"));
    let context = &prompt[at..];
    // The token code comes first, labelled with its path, lines and symbol, marked untrusted.
    let tokens = context.find("auth/tokens.py:4-6 (issue_token)").unwrap_or_else(|| panic!("{context}"));
    assert!(context.contains("trust=\\\"untrusted\\\""), "{context}");
    assert!(context.contains("def issue_token(user_id, secret):"), "{context}");
    if let Some(area) = context.find("shapes/area.py") {
        assert!(tokens < area, "the unrelated function ranks below the token code: {context}");
    }

    // The index is kept in the data directory; a second run over the unchanged workspace
    // finds the same context without writing a new version of the dataset.
    let versions_dir = sb.data_dir.join("knowledge/chunks.lance/_versions");
    let versions = || std::fs::read_dir(&versions_dir).unwrap().count();
    let written = versions();
    assert!(written > 0);
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    sb.set("TURBO_HOST", turbo.url()).set("OLLAMA_LOCAL", local.url());
    sb.run(&["run", task]).await.assert_code(0);
    // At most the usage counts of the chunks the plan used; a re-index would add its own.
    assert!(versions() <= written + 1, "an unchanged workspace is not written again: {written} -> {}", versions());
    let prompt = chat_requests(&turbo)[0].body["messages"].to_string();
    assert!(prompt.contains("auth/tokens.py:4-6 (issue_token)"), "{prompt}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_embedding_model_the_run_says_so_and_goes_on_without_context() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    let missing = sb.home.join("no-model-here");
    sb.set("TURBO_CODER__KNOWLEDGE__MODEL_DIR", missing.display().to_string());
    sb.write("app.py", "def main():\n    pass\n");
    let out = sb.run(&["run", TASK]).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains("agents run without retrieved context")
            && out.stderr.contains(&missing.display().to_string())
            && out.stderr.contains("knowledge.model_dir"),
        "{}",
        out.stderr
    );
    let prompt = chat_requests(&turbo)[0].body["messages"].to_string();
    assert!(!prompt.contains("Code and knowledge retrieved"), "{prompt}");
    assert!(prompt.contains("app.py"), "the workspace outline is still there: {prompt}");

    // Turned off, it says nothing.
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    let mut off = sandbox(&turbo, &local);
    off.set("TURBO_CODER__KNOWLEDGE__ENABLED", "false");
    let out = off.run(&["run", TASK]).await;
    out.assert_code(0);
    assert!(!out.stderr.contains("retrieved context"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_task_is_rejected_before_any_model_call() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", "fix it", "--apply"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("at least 10 characters"), "{}", out.stderr);
    assert!(turbo.requests().is_empty() && local.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_fails_fast_with_a_hint() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    // A port nobody listens on: bind one and drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    sb.set("TURBO_HOST", format!("http://127.0.0.1:{port}"));
    sb.set("TURBO_CODER__MODELS__PLANNER__MAX_RETRIES", "0");
    let out = sb.run(&["run", TASK]).await;
    out.assert_code(3);
    assert!(out.stderr.contains("cannot reach") && out.stderr.contains("TURBO_HOST"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_api_key_is_reported_without_echoing_it() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("OLLAMA_API_KEY", "wrong-key-123");
    let out = sb.run(&["run", TASK]).await;
    out.assert_code(3);
    assert!(out.stderr.contains("OLLAMA_API_KEY"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-key-123") && !out.stdout.contains("wrong-key-123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_lists_what_is_installed() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("CODER_MODEL", "nonexistent:1b");
    let out = sb.run(&["run", TASK, "--apply"]).await;
    out.assert_code(3);
    assert!(
        out.stderr.contains("nonexistent:1b") && out.stderr.contains(CODER) && out.stderr.contains("ollama pull"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_plans_are_re_asked_with_the_errors_then_fail() {
    let bad = json!({"phases": [{"name": "a", "description": "d", "agent": "coder", "depends_on": ["ghost"]}], "confidence_score": 0.5, "risk_factors": []});
    let (turbo, local) =
        servers(vec![Reply::Json(bad.clone()), Reply::text("{{{ not json"), Reply::Json(bad)], vec![]).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--json"]).await;
    out.assert_code(4);
    assert!(
        out.result()["failure"]["message"].as_str().unwrap().contains("no valid plan after 3 attempts"),
        "{}",
        out.stdout
    );
    let calls = chat_requests(&turbo);
    assert!(calls.len() >= 2, "re-asked");
    let second = calls[1].body["messages"].to_string();
    assert!(second.contains("'ghost' is not a phase"), "the validation error goes back to the model: {second}");
    let statuses: Vec<Value> = out.events_of("status_changed").iter().map(|e| e["to"].clone()).collect();
    assert_eq!(statuses, [json!("failed")]);
    assert!(out.result()["prompt_tokens"].as_u64().unwrap() > 0, "tokens of rejected plans count");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_breaks_the_protocol_is_named_as_such() {
    let (turbo, local) = servers(vec![Reply::Garbage("{{{ not json".into())], vec![]).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK]).await;
    out.assert_code(4);
    assert!(out.stdout.contains("not its protocol") && out.stdout.contains("base_url"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_tests_go_back_to_the_coder_until_they_pass() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], broken_then_fixed()).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    let runs: Vec<(u64, bool)> = out
        .events_of("test_run")
        .iter()
        .map(|e| (e["round"].as_u64().unwrap(), e["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(runs, [(1, false), (2, true)]);
    let fix_prompt = chat_requests(&local)[3].body["messages"].to_string();
    assert!(
        fix_prompt.contains("Fix these problems") && fix_prompt.contains("Hello, Ada!"),
        "the failure output reaches the coder: {fix_prompt}"
    );
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
}

#[tokio::test(flavor = "multi_thread")]
async fn rewind_puts_the_workspace_back_before_a_step_or_the_whole_task() {
    let (turbo, local) = servers(vec![Reply::Json(plan())], broken_then_fixed()).await;

    let sb = sandbox(&turbo, &local);
    std::fs::write(sb.workdir.join("README.md"), "# greeter\n").unwrap();
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    let task = out.result()["task_id"].as_str().unwrap().to_string();

    // One checkpoint before each write of the coder, labelled with its phase and step, and
    // before each command the tester and the reviewer run themselves.
    let listed = sb.run(&["rewind", &task, "--list", "--json"]).await;
    listed.assert_code(0);
    let checkpoints: Value = serde_json::from_str(&listed.stdout).unwrap();
    let labels: Vec<&str> = checkpoints.as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    // The fix round is the test phase's.
    assert_eq!(
        labels,
        [
            "implement step 1: fs_write",
            "implement step 2: fs_write",
            "test: shell_run",
            "test step 1: fs_write",
            "test: shell_run",
            "review: shell_run"
        ]
    );

    // Before the fix: the broken greeting is back.
    let back = sb.run(&["rewind", &task, "--step", "4"]).await;
    back.assert_code(0);
    assert!(back.stdout.contains("back at checkpoint") && back.stdout.contains("--step 7"), "{}", back.stdout);
    assert_eq!(sb.read("greet.py").as_deref(), Some(BROKEN));
    // Before the task: only what was there before it.
    sb.run(&["rewind", &task]).await.assert_code(0);
    assert_eq!(sb.read("greet.py"), None);
    assert_eq!(sb.read("test_greet.py"), None);
    assert_eq!(sb.read("README.md").as_deref(), Some("# greeter\n"));
    // And the first rewind undone.
    sb.run(&["rewind", &task, "--step", "7"]).await.assert_code(0);
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));

    let missing = sb.run(&["rewind", &task, "--step", "42"]).await;
    missing.assert_code(2);
    assert!(missing.stderr.contains("no checkpoint 42"), "{}", missing.stderr);
    let unknown = sb.run(&["rewind", "ffffffff"]).await;
    unknown.assert_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn tests_that_keep_failing_fail_the_task() {
    let broken = BROKEN;
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            write("greet.py", broken),
            write("test_greet.py", GREET_TEST),
            Reply::text("done"),
            Reply::text("I cannot fix it"),
        ],
    )
    .await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("TURBO_CODER__RUN__TEST_ROUNDS", "1");
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(1);
    let result = out.result();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["failure"]["kind"], "tests_failed");
    assert_eq!(out.events_of("test_run").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_mode_over_the_openai_protocol_drives_the_tools() {
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            Reply::Json(json!({"tool": "fs_write", "arguments": {"path": "greet.py", "content": GREET}})),
            Reply::Json(json!({"tool": "fs_write", "arguments": {"path": "test_greet.py", "content": GREET_TEST}})),
            Reply::Json(json!({"final": "wrote greet and its test"})),
            approve(),
        ],
    )
    .await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("TURBO_CODER__MODELS__CODER__PROVIDER", "openai")
        .set("TURBO_CODER__MODELS__CODER__BASE_URL", format!("{}/v1", local.url()))
        .set("TURBO_CODER__MODELS__CODER__TOOL_MODE", "schema")
        .set("TURBO_CODER__MODELS__CODER__API_KEY", "local-key");
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
    let calls = chat_requests(&local);
    assert!(calls.iter().all(|r| r.path == "/v1/chat/completions"));
    assert!(calls.iter().all(|r| r.header("authorization") == Some("Bearer local-key")));
    assert!(calls[0].body.get("tools").is_none(), "schema mode sends no native tools");
    assert_eq!(calls[0].body["response_format"]["type"], "json_schema");
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_written_as_text_are_recovered() {
    let call = json!({"name": "fs_write", "arguments": {"path": "greet.py", "content": GREET}});
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            Reply::text(format!("I will write the file.\n<tool_call>\n{call}\n</tool_call>")),
            Reply::text(format!(
                "```json\n{}\n```",
                json!({"name": "fs_write", "arguments": {"path": "test_greet.py", "content": GREET_TEST}})
            )),
            Reply::text("all done"),
            approve(),
        ],
    )
    .await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
    assert_eq!(sb.read("test_greet.py").as_deref(), Some(GREET_TEST));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_failing_call_is_not_run_again_and_stops_the_phase() {
    let read_missing = || Reply::tool_call("fs_read", json!({"path": "missing.py"}));
    let (turbo, local) =
        servers(vec![Reply::Json(plan())], vec![read_missing(), read_missing(), read_missing(), read_missing()]).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(1);
    assert_eq!(out.result()["failure"]["kind"], "stuck");
    let results = out.events_of("tool_result");
    assert!(results[0]["output"].as_str().unwrap().contains("does not exist"));
    assert!(results[1]["output"].as_str().unwrap().contains("already failed"), "{}", results[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_step_limit_ends_a_phase_with_advice() {
    let list = || Reply::tool_call("fs_list", json!({"path": "."}));
    let (turbo, local) =
        servers(vec![Reply::Json(plan())], vec![list(), Reply::tool_call("fs_list", json!({})), list()]).await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json", "--max-steps", "2"]).await;
    out.assert_code(1);
    let failure = &out.result()["failure"];
    assert_eq!(failure["kind"], "step_limit");
    assert!(failure["message"].as_str().unwrap().contains("--max-steps"), "{failure}");
}

#[tokio::test(flavor = "multi_thread")]
async fn escapes_and_bad_arguments_are_refused_and_shown_to_the_model() {
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            Reply::tool_call("fs_write", json!({"path": "../outside.txt", "content": "x"})),
            Reply::tool_call("fs_write", json!({"path": "greet.py", "contents": GREET})),
            write("greet.py", GREET),
            write("test_greet.py", GREET_TEST),
            Reply::text("done"),
            approve(),
        ],
    )
    .await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    assert!(!sb.workdir.parent().unwrap().join("outside.txt").exists());
    let first = &out.events_of("tool_result")[0];
    assert_eq!(first["success"], false);
    assert!(first["output"].as_str().unwrap().contains("outside the workspace"), "{first}");
    let second_turn = chat_requests(&local)[1].body["messages"].to_string();
    assert!(second_turn.contains("outside the workspace"), "the model reads the refusal");
    // A call with a misspelt argument is refused with what to fix, and the run goes on.
    let bad_args = &out.events_of("tool_result")[1];
    assert_eq!(bad_args["success"], false);
    let text = bad_args["output"].as_str().unwrap();
    assert!(text.contains("bad arguments for fs_write") && text.contains("contents"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requested_changes_go_back_to_the_coder() {
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![
            write("greet.py", "def greet(name):\n    return 'Hello, ' + name + '!'\n"),
            write("test_greet.py", GREET_TEST),
            Reply::text("done"),
            Reply::Json(json!({"verdict": "changes_requested", "summary": "use an f-string", "findings": [
                {"severity": "warning", "path": "greet.py", "line": 2, "message": "prefer an f-string"}]})),
            write("greet.py", GREET),
            Reply::text("switched to an f-string"),
            approve(),
        ],
    )
    .await;
    let sb = sandbox(&turbo, &local);
    let out = sb.run(&["run", TASK, "--apply", "--json"]).await;
    out.assert_code(0);
    let verdicts: Vec<Value> = out.events_of("review").iter().map(|e| e["verdict"].clone()).collect();
    assert_eq!(verdicts, [json!("changes_requested"), json!("approve")]);
    assert_eq!(out.events_of("test_run").len(), 2, "tests run again after the fix");
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
    let fix_prompt = chat_requests(&local)[4].body["messages"].to_string();
    assert!(fix_prompt.contains("prefer an f-string") && fix_prompt.contains("greet.py:2"), "{fix_prompt}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_workdir_is_refused_before_planning() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let sb = sandbox(&turbo, &local);
    // sysfs refuses new files even to root.
    let out = sb.run(&["run", TASK, "--apply", "--workdir", "/sys"]).await;
    out.assert_code(6);
    assert!(out.stderr.contains("cannot write in workdir /sys"), "{}", out.stderr);
    assert!(chat_requests(&turbo).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_models_context_and_missing_models() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    let ok = sb.run(&["doctor", "--json"]).await;
    ok.assert_code(0);
    let report: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let planner = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"].as_str().unwrap().starts_with("planner"))
        .unwrap()
        .clone();
    assert!(planner["detail"].as_str().unwrap().contains("context 131072 tokens, using 32768"), "{planner}");
    let check = |report: &Value, name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check: {report}"))
    };
    let sandbox = check(&report, "tool sandbox");
    assert_eq!(sandbox["ok"], true, "{sandbox}");
    assert!(sandbox["detail"].as_str().unwrap().contains("bubblewrap"), "{sandbox}");

    // A sandbox that cannot run fails the doctor: tools would be refused.
    sb.set("TURBO_CODER__SANDBOX__BWRAP", "/nonexistent/bwrap");
    let refused = sb.run(&["doctor", "--json"]).await;
    assert_ne!(refused.code, 0);
    let report: Value = serde_json::from_str(&refused.stdout).unwrap();
    let sandbox = check(&report, "tool sandbox");
    assert_eq!(sandbox["ok"], false, "{sandbox}");
    assert!(sandbox["detail"].as_str().unwrap().contains("bubblewrap"), "{sandbox}");
    sb.env.remove("TURBO_CODER__SANDBOX__BWRAP");

    sb.set("PLANNER_MODEL", "gone:1");
    let bad = sb.run(&["doctor"]).await;
    bad.assert_code(3);
    assert!(bad.stdout.contains("✗ planner model gone:1"), "{}", bad.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_show_layers_the_legacy_variables_and_hides_the_key() {
    let (turbo, local) = servers(vec![], vec![]).await;
    let mut sb = sandbox(&turbo, &local);
    sb.set("MAX_STEPS", "9");
    let out = sb.run(&["config", "show"]).await;
    out.assert_code(0);
    assert!(out.stdout.contains("max_steps = 9"), "{}", out.stdout);
    assert!(out.stdout.contains(&turbo.url()) && out.stdout.contains(&local.url()));
    assert!(!out.stdout.contains(KEY) && out.stdout.contains("<redacted>"));
    sb.set("MAX_STEPS", "lots");
    let bad = sb.run(&["config", "show"]).await;
    bad.assert_code(2);
    assert!(bad.stderr.contains("MAX_STEPS"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plan_is_executed_as_shown_without_planning_again() {
    let (turbo, local) = servers(
        vec![Reply::Json(plan())],
        vec![write("greet.py", GREET), write("test_greet.py", GREET_TEST), Reply::text("done"), approve()],
    )
    .await;
    let sb = sandbox(&turbo, &local);
    let dry = sb.run(&["run", TASK, "--json"]).await;
    dry.assert_code(0);
    let id = dry.result()["task_id"].as_str().unwrap().to_string();
    assert!(sb.read("greet.py").is_none());

    let out = sb.run(&["tasks", "execute", &id[..8], "--json"]).await;
    out.assert_code(0);
    assert_eq!(out.result()["status"], "completed");
    assert_eq!(sb.read("greet.py").as_deref(), Some(GREET));
    assert_eq!(chat_requests(&turbo).len(), 1, "the plan the user saw is the plan that ran");
    assert!(out.events_of("plan_ready").is_empty());
    let seqs: Vec<u64> = out.json_lines().iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs[0] > dry.json_lines().iter().filter_map(|e| e["seq"].as_u64()).max().unwrap(), "numbering continues");

    let again = sb.run(&["tasks", "execute", &id]).await;
    again.assert_code(2);
    assert!(again.stderr.contains("only planned tasks can be executed"), "{}", again.stderr);
}
