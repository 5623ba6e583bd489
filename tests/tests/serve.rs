//! The services as processes, black box: `turbo-coder serve <service>` (and each service's own
//! binary) on `127.0.0.1:0`, checked over real gRPC (health checking and reflection), then
//! stopped with SIGTERM the way Kubernetes stops a pod.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use turbo_tests::{Sandbox, minilm_dir, turbo_coder_bin};

/// Upper bound for anything to happen; generous so a loaded machine does not fail the test.
/// Not a timing assertion: a healthy run finishes far sooner.
const WAIT: Duration = Duration::from_secs(30);

/// Each service, its `serve` arguments, and one gRPC service it must report as serving. The
/// agent worker needs NATS; its tests start a nats-server (below).
const SERVICES: &[(&str, &[&str], &str)] = &[
    ("gateway", &[], "turbo.sessions.v1.SessionService"),
    ("orchestrator", &[], "turbo.tasks.v1.TaskService"),
    ("knowledge", &[], "turbo.knowledge.v1.KnowledgeService"),
    ("tool-runner", &[], "turbo.tools.v1.ToolService"),
];

const WORKER_SERVICE: &str = "turbo.agents.v1.AgentService";

/// The gateway's token key in these tests.
const GATEWAY_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Polls `probe` until it succeeds or [`WAIT`] passes; then fails with the last error.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => panic!("{what}: not within {WAIT:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A service process that printed `<name> listening on <addr>`.
struct Served {
    child: Child,
    addr: String,
    // Kept open: a service that writes to a closed stdout would fail.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// Its home, working directory and environment, removed when it is dropped.
    sandbox: Sandbox,
}

impl Served {
    /// Starts `program ARGS` in a scratch home with no inherited config, and reads the address
    /// it prints. Its stderr goes to the test's, so a failure shows the service's log.
    async fn start(program: &Path, args: &[&str], name: &str) -> Served {
        Self::start_with(program, args, name, &[]).await
    }

    /// [`Served::start`] with more environment variables.
    async fn start_with(program: &Path, args: &[&str], name: &str, env: &[(&str, String)]) -> Served {
        let mut sandbox = Sandbox::new();
        // The knowledge service needs its embedding model to start, the gateway its token key.
        sandbox.set("TURBO_CODER__KNOWLEDGE__MODEL_DIR", minilm_dir().display().to_string());
        sandbox.set("TURBO_CODER__GATEWAY__JWT_SECRET", GATEWAY_SECRET);
        for (key, value) in env {
            sandbox.set(key, value.clone());
        }
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&sandbox.workdir)
            .env_clear()
            .envs(&sandbox.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("{name} printed no address within {WAIT:?}"))
            .expect("read the service's stdout")
            .unwrap_or_else(|| panic!("{name} exited before printing its address (its stderr is above)"));
        let addr = line
            .strip_prefix(&format!("{name} listening on "))
            .unwrap_or_else(|| panic!("unexpected first line from {name}: {line}"))
            .to_string();
        Served { child, addr, _stdout: stdout, sandbox }
    }

    async fn channel(&self) -> Channel {
        let uri = format!("http://{}", self.addr);
        eventually(&format!("connect to {uri}"), || async {
            Channel::from_shared(uri.clone()).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())
        })
        .await
    }

    /// Sends SIGTERM and returns the exit code.
    async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("the service is still running");
        kill(Pid::from_raw(i32::try_from(pid).expect("pid fits i32")), Signal::SIGTERM).expect("send SIGTERM");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running {WAIT:?} after SIGTERM"))
            .expect("wait for the service");
        status.code()
    }
}

async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let reply = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: service.into() }).await?;
    Ok(reply.into_inner().status())
}

/// Waits until `service` reports SERVING.
async fn assert_serving(channel: &Channel, service: &str) {
    eventually(&format!("health of '{service}' is SERVING"), || async {
        match health(channel, service).await {
            Ok(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn reflected_services(channel: &Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies.message().await.expect("a reflection reply").expect("one reply per request");
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("expected a service list, got {other:?}"),
    }
}

/// `target/<profile>/<name>`, beside `turbo-coder`.
fn sibling_bin(name: &str) -> PathBuf {
    let coder = turbo_coder_bin();
    let bin = coder.with_file_name(name);
    assert!(bin.is_file(), "{} is missing: build the service binaries with `cargo build --bins`", bin.display());
    bin
}

#[tokio::test]
async fn serve_orchestrator_answers_health_and_reflection_and_exits_zero_on_sigterm() {
    let served =
        Served::start(&turbo_coder_bin(), &["serve", "orchestrator", "--listen", "127.0.0.1:0"], "turbo-orchestrator")
            .await;
    let channel = served.channel().await;

    assert_serving(&channel, "").await;
    assert_serving(&channel, "turbo.tasks.v1.TaskService").await;
    let unknown = health(&channel, "turbo.nope.v1.NoSuchService").await.expect_err("an unknown service is an error");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    let services = reflected_services(&channel).await;
    assert!(services.iter().any(|s| s == "turbo.tasks.v1.TaskService"), "reflection lists {services:?}");
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "reflection lists {services:?}");

    // The client's connection stays open: an idle connection must not hold up the drain.
    assert_eq!(served.terminate().await, Some(0), "SIGTERM is a clean shutdown");
    drop(channel);
}

#[tokio::test]
async fn the_one_process_orchestrator_serves_the_tool_api_and_the_approvals_cli_reaches_it() {
    let served =
        Served::start(&turbo_coder_bin(), &["serve", "orchestrator", "--listen", "127.0.0.1:0"], "turbo-orchestrator")
            .await;
    let channel = served.channel().await;
    assert_serving(&channel, "turbo.tools.v1.ToolService").await;
    let services = reflected_services(&channel).await;
    assert!(services.iter().any(|s| s == "turbo.tools.v1.ToolService"), "reflection lists {services:?}");

    let url = format!("http://{}", served.addr);
    let cli = Sandbox::new();
    let listed = cli.run(&["--server", &url, "approvals", "list"]).await;
    listed.assert_code(0);
    assert!(listed.stderr.contains("no call waits for approval"), "{}", listed.stderr);
    let late = cli.run(&["--server", &url, "approvals", "approve", "apr_0123", "--by", "ana"]).await;
    late.assert_code(2);
    assert!(late.stderr.contains("apr_0123 does not wait for approval"), "{}", late.stderr);
    let anonymous = cli.run(&["--server", &url, "approvals", "deny", "apr_0123", "--by", " "]).await;
    anonymous.assert_code(2);
    assert!(anonymous.stderr.contains("decided_by"), "{}", anonymous.stderr);
    let nowhere = cli.run(&["approvals", "list"]).await;
    nowhere.assert_code(2);
    assert!(nowhere.stderr.contains("--server"), "{}", nowhere.stderr);
    assert_eq!(served.terminate().await, Some(0));
    drop(channel);
}

#[tokio::test]
async fn serve_starts_every_service_with_its_grpc_services() {
    for (service, extra, grpc) in SERVICES {
        let name = format!("turbo-{service}");
        let mut args = vec!["serve", service, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let served = Served::start(&turbo_coder_bin(), &args, &name).await;
        assert_serving(&served.channel().await, grpc).await;
        assert_eq!(served.terminate().await, Some(0), "{name} exits 0 on SIGTERM");
    }
}

#[tokio::test]
async fn serve_rejects_a_missing_or_misplaced_role() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["serve", "agent-worker", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("agent-worker needs --role"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing was served: {}", out.stdout);

    let out = sandbox.run(&["serve", "orchestrator", "--role", "coder", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("--role is for agent-worker only"), "{}", out.stderr);
}

/// The services' own binaries (`turbo-orchestrator`, ...) run the same `run` as `serve`;
/// `make test` builds them first (`cargo build --workspace --bins`).
#[tokio::test]
async fn each_service_binary_answers_health_and_exits_zero_on_sigterm() {
    for (service, extra, grpc) in SERVICES {
        let name = format!("turbo-{service}");
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let served = Served::start(&sibling_bin(&name), &args, &name).await;
        let channel = served.channel().await;
        assert_serving(&channel, "").await;
        assert_serving(&channel, grpc).await;
        assert_eq!(served.terminate().await, Some(0), "{name} exits 0 on SIGTERM");
    }
}

#[tokio::test]
async fn an_agent_worker_without_nats_says_it_needs_cluster_nats_url() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["serve", "agent-worker", "--role", "coder", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("cluster.nats_url"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing was served: {}", out.stdout);

    // The worker's own binary says the same and exits with the same code.
    let out = tokio::process::Command::new(sibling_bin("turbo-agent-worker"))
        .args(["--role", "coder", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("HOME", sandbox.data_dir.display().to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run turbo-agent-worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster.nats_url"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing was served: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn a_knowledge_service_without_its_model_says_where_it_looked_and_exits_2() {
    let mut sandbox = Sandbox::new();
    let missing = sandbox.home.join("no-model");
    sandbox.set("TURBO_CODER__KNOWLEDGE__MODEL_DIR", missing.display().to_string());
    let out = sandbox.run(&["serve", "knowledge", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains(&missing.display().to_string()) && out.stderr.contains("knowledge.model_dir"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn an_agent_worker_serves_while_nats_is_up_and_exits_zero_on_sigterm() {
    for program in [turbo_coder_bin(), sibling_bin("turbo-agent-worker")] {
        let nats = turbo_testkit::NatsServer::start().await.expect("nats-server starts");
        let args: &[&str] = if program.ends_with("turbo-coder") {
            &["serve", "agent-worker", "--role", "reviewer", "--listen", "127.0.0.1:0"]
        } else {
            &["--role", "reviewer", "--listen", "127.0.0.1:0"]
        };
        let env = [("TURBO_CODER__CLUSTER__NATS_URL", nats.url())];
        let served = Served::start_with(&program, args, "turbo-agent-worker", &env).await;
        let channel = served.channel().await;
        assert_serving(&channel, "").await;
        assert_serving(&channel, WORKER_SERVICE).await;

        // Without NATS the worker cannot take work: it says so, and stays alive.
        drop(nats);
        eventually("the worker to report NOT_SERVING without nats", || async {
            match health(&channel, WORKER_SERVICE).await {
                Ok(ServingStatus::NotServing) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_serving(&channel, "").await;
        assert_eq!(served.terminate().await, Some(0), "{} exits 0 on SIGTERM", program.display());
    }
}

/// The Helm chart, rendered offline by Helm's own engine (helm-python-sdk, which `make setup`
/// installs): tests/python/test_helm.py checks every object, the bundled NATS and Postgres
/// wired into every service, and the refused values. Fails, never skips, without the renderer.
#[tokio::test]
async fn the_helm_chart_renders_with_nats_and_postgres_wired_into_every_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tests/python/test_helm.py"))
        .arg("--require")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains(" passed, 0 failed"), "{said}");
}

// The gateway's REST API, black box: `serve orchestrator` (embedded, its planner a scripted
// model) behind `serve gateway`, used with plain HTTP and tokens from `turbo-coder token`.

/// `message` as a gRPC request carrying `token` as its bearer token.
fn with_token<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    request
}

/// A token from the CLI, with the gateway's key.
async fn token(user: &str, roles: &[&str]) -> String {
    let mut cli = Sandbox::new();
    cli.set("TURBO_CODER__GATEWAY__JWT_SECRET", GATEWAY_SECRET);
    let mut args = vec!["token", "--user", user];
    for role in roles {
        args.extend(["--role", role]);
    }
    let out = cli.run(&args).await;
    out.assert_code(0);
    out.stdout.trim().to_string()
}

/// The gateway's REST API at `base` as one user.
struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The `Location` header of the last answer.
    location: std::sync::Mutex<Option<String>>,
}

impl Rest {
    fn new(base: &str, token: Option<String>) -> Self {
        Rest { http: reqwest::Client::new(), base: base.to_string(), token, location: Default::default() }
    }

    fn location(&self) -> Option<String> {
        self.location.lock().unwrap().clone()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        *self.location.lock().unwrap() =
            response.headers().get("location").map(|l| l.to_str().expect("an ASCII Location").to_string());
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

/// The (actor, action, outcome) of each entry of a `GET /v1/audit` answer.
fn audit_rows(audit: &serde_json::Value) -> Vec<(String, String, String)> {
    let text = |e: &serde_json::Value, key: &str| e[key].as_str().unwrap_or_default().to_string();
    let entries = audit["entries"].as_array().unwrap_or_else(|| panic!("not an audit answer: {audit}"));
    entries.iter().map(|e| (text(e, "actor"), text(e, "action"), text(e, "outcome"))).collect()
}

/// Whether `rows` hold an entry by `actor` whose outcome is `outcome`.
fn audited(rows: &[(String, String, String)], actor: &str, outcome: &str) -> bool {
    rows.iter().any(|(a, _, o)| a == actor && o == outcome)
}

/// A scripted planner (and coder) model, `serve orchestrator` on it, and `serve gateway` in
/// front with `gateway_env`; the planner plans every task the same way.
async fn gateway_stack(
    repeat: bool,
    gateway_env: &[(&str, String)],
) -> (turbo_testkit::ScriptedModelServer, Served, Served) {
    gateway_stack_with(repeat, &[], gateway_env).await
}

/// [`gateway_stack`] with `orchestrator_env` added to the orchestrator's.
async fn gateway_stack_with(
    repeat: bool,
    orchestrator_env: &[(&str, String)],
    gateway_env: &[(&str, String)],
) -> (turbo_testkit::ScriptedModelServer, Served, Served) {
    use serde_json::json;
    use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};

    let plan = json!({
        "phases": [
            {"name": "implement", "description": "write greet() and its test", "agent": "coder", "depends_on": [],
             "estimated_minutes": 5, "files_to_create": ["greet.py"], "deliverables": ["greet()", "its unit test"]},
            {"name": "review", "description": "review the diff", "agent": "reviewer", "depends_on": ["implement"]}
        ],
        "confidence_score": 0.9,
        "risk_factors": ["greeting etiquette varies"]
    });
    let models = ScriptedModelServer::start(
        Script::new()
            .repeat(repeat)
            .model(ModelDef::new("planner:test", 131072))
            .model(ModelDef::new("coder:test", 32768))
            .model(ModelDef::new("tester:test", 32768))
            .replies("planner:test", vec![Reply::Json(plan)])
            .replies("coder:test", vec![Reply::text("nothing to do")])
            // Asked for a code suggestion in a session (the plans here have no tester phase).
            .replies(
                "tester:test",
                vec![Reply::Json(json!({"replacement": "GOODBYE", "description": "shout it",
                                        "confidence": 0.8, "reasoning": "asked to be louder"}))],
            ),
    )
    .await
    .expect("the scripted model server starts");
    let mut env = vec![
        ("TURBO_CODER__MODELS__PLANNER__BASE_URL", models.url()),
        ("TURBO_CODER__MODELS__PLANNER__MODEL", "planner:test".into()),
        ("TURBO_CODER__MODELS__CODER__BASE_URL", models.url()),
        ("TURBO_CODER__MODELS__CODER__MODEL", "coder:test".into()),
        ("TURBO_CODER__MODELS__TESTER__PROVIDER", "ollama".into()),
        ("TURBO_CODER__MODELS__TESTER__BASE_URL", models.url()),
        ("TURBO_CODER__MODELS__TESTER__MODEL", "tester:test".into()),
    ];
    env.extend(orchestrator_env.iter().cloned());
    let orchestrator = Served::start_with(
        &turbo_coder_bin(),
        &["serve", "orchestrator", "--listen", "127.0.0.1:0"],
        "turbo-orchestrator",
        &env,
    )
    .await;
    let mut env = vec![("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", format!("http://{}", orchestrator.addr))];
    env.extend(gateway_env.iter().cloned());
    let gateway =
        Served::start_with(&turbo_coder_bin(), &["serve", "gateway", "--listen", "127.0.0.1:0"], "turbo-gateway", &env)
            .await;
    (models, orchestrator, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_serves_projects_and_tasks_to_their_owners_with_the_specs_errors() {
    use serde_json::json;

    // One store for both, as in a cluster: the audit log holds the orchestrator's entries too.
    let dir = tempfile::tempdir().unwrap();
    let store = ("TURBO_CODER__STORE__URL", format!("sqlite://{}", dir.path().join("shared.db").display()));
    let gateway_env = [("TURBO_CODER__GATEWAY__MAX_BODY_BYTES", "65536".into()), store.clone()];
    let (_models, orchestrator, gateway) = gateway_stack_with(false, &[store], &gateway_env).await;
    let base = format!("http://{}", gateway.addr);
    let ana = Rest::new(&base, Some(token("ana", &["developer"]).await));
    let bob = Rest::new(&base, Some(token("bob", &["developer"]).await));
    let vic = Rest::new(&base, Some(token("vic", &["viewer"]).await));
    let root = Rest::new(&base, Some(token("root", &["admin"]).await));
    let nobody = Rest::new(&base, None);

    // The OpenAPI document needs no token and lists the routes.
    let (status, doc) = nobody.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/projects/{project_id}/tasks"]["post"].is_object(), "{doc}");

    // 401 without or with a bad token, 403 for a role without the permission.
    let new_project = json!({"name": "greeter", "project_type": "api_service", "technologies": ["python", "fastapi", "postgresql"],
                             "configuration": {"python_version": "3.11"}});
    let (status, body) = nobody.post("/v1/projects", new_project.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let forged = Rest::new(&base, Some(format!("{}x", token("ana", &["admin"]).await)));
    assert_eq!(forged.get("/v1/projects").await.0, 401);
    let (status, body) = vic.post("/v1/projects", new_project.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("developer"), "{body}");

    // 201 with the spec's shape; the creator owns the project.
    let (status, created) = ana.post("/v1/projects", new_project.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    let id = created["project_id"].as_str().expect("a project id").to_string();
    assert_eq!(ana.location(), Some(format!("/v1/projects/{id}")), "201 says where the project is");
    assert_eq!(created["project"]["team_members"], json!(["ana"]));
    assert_eq!(created["project"]["frameworks"], json!(["fastapi"]));
    assert_eq!(created["project"]["ai_context"]["technologies"], json!(["postgresql"]));
    assert!(created["analysis"]["setup_time_estimate"].as_str().unwrap().ends_with("minutes"), "{created}");
    // Detected in the workspace's files: none yet in a new one, Python in one that has some.
    assert_eq!(created["analysis"]["detected_languages"], json!([]), "{created}");
    let existing = tempfile::tempdir().unwrap();
    std::fs::write(existing.path().join("app.py"), "def main():\n    return 1\n").unwrap();
    let scanned = json!({"name": "scanned", "project_type": "api_service", "technologies": ["python"],
                         "root_path": existing.path().display().to_string()});
    let dora = Rest::new(&base, Some(token("dora", &["developer"]).await));
    let (status, analysed) = dora.post("/v1/projects", scanned).await;
    assert_eq!((status, &analysed["analysis"]["detected_languages"]), (201, &json!(["python"])), "{analysed}");
    let tools = created["analysis"]["recommended_tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "pytest"), "a Python project gets its test runner: {created}");
    assert!(
        ["low", "medium", "high"].contains(&created["analysis"]["estimated_complexity"].as_str().unwrap()),
        "{created}"
    );
    assert!(!created["next_steps"].as_array().unwrap().is_empty(), "{created}");

    // 409 for a name taken, 422 naming the field, 400 for a body that is not JSON, 415 for
    // another content type, 413 past the limit.
    let (status, body) = bob.post("/v1/projects", new_project.clone()).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = ana.post("/v1/projects", json!({"name": "x", "project_type": "spaceship"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "project_type", "{body}");
    let (status, body) =
        ana.post("/v1/projects", json!({"name": "", "project_type": "api_service", "technologies": ["rust"]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["fields"].as_array().unwrap().iter().any(|f| f["field"] == "name"), "{body}");
    let raw = |content_type: &'static str, body: Vec<u8>| {
        let request = ana.http.post(format!("{base}/v1/projects")).bearer_auth(ana.token.as_deref().unwrap());
        async move {
            let response = request.header("content-type", content_type).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("a JSON error body");
            (status, body)
        }
    };
    let (status, body) = raw("application/json", b"{\"name\": ".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "body", "{body}");
    // A body of the wrong shape names the field and the problem.
    let (status, body) = raw("application/json", br#"{"name": "x", "technologies": 3}"#.to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "technologies", "{body}");
    assert!(body["error"]["fields"][0]["problem"].as_str().unwrap().contains("invalid type"), "{body}");
    assert_eq!(raw("text/plain", b"{}".to_vec()).await.0, 415);
    // A path asked with a method it does not take: 405 in the same shape, with Allow.
    let response =
        ana.http.put(format!("{base}/v1/projects")).bearer_auth(ana.token.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let (status, body) = raw("application/json", vec![b' '; 100_000]).await;
    assert_eq!(status, 413, "{body}");

    // Visible to its members and admins only; others get 404, as for nothing.
    assert_eq!(ana.get(&format!("/v1/projects/{id}")).await.0, 200);
    assert_eq!(root.get(&format!("/v1/projects/{id}")).await.0, 200);
    let (status, body) = bob.get(&format!("/v1/projects/{id}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (_, listed) = bob.get("/v1/projects").await;
    assert!(listed["projects"].as_array().unwrap().is_empty(), "{listed}");
    let (_, listed) = ana.get("/v1/projects").await;
    assert_eq!(listed["projects"][0]["id"], id.as_str());
    assert_eq!(ana.get("/v1/projects/not-a-uuid").await.0, 404);

    // PATCH: the owner adds bob, who then sees it; nobody may drop the owner.
    let project = format!("/v1/projects/{id}");
    let (status, body) =
        ana.patch(&project, json!({"description": "says hello", "team_members": ["ana", "bob"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], "says hello");
    assert_eq!(bob.get(&format!("/v1/projects/{id}")).await.0, 200);
    assert_eq!(bob.patch(&project, json!({"team_members": ["bob"]})).await.0, 403);
    assert_eq!(ana.patch(&project, json!({"team_members": ["bob", "ana"]})).await.0, 422);
    let (status, body) = ana.patch(&project, json!({"colour": "blue"})).await;
    assert_eq!((status, body["error"]["fields"][0]["field"].as_str()), (400, Some("colour")), "{body}");

    // A task: planned by the planner model, answered in the spec's shape.
    let (status, task) = ana
        .post(
            &format!("/v1/projects/{id}/tasks"),
            json!({
                "description": "add a greet(name) function in greet.py",
                "requirements": ["greets by name"],
                "constraints": {"testing_required": true},
                "context": {"related_files": ["greet.py"], "environment": "development"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["status"], "planned");
    let phases: Vec<&str> =
        task["execution_plan"]["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["implement", "review"]);
    let implement = &task["execution_plan"]["phases"][0];
    assert_eq!((implement["agent"].as_str(), implement["agent_type"].as_str()), (Some("CoderAgent"), Some("coder")));
    assert_eq!(task["execution_plan"]["phases"][1]["agent"], "ReviewAgent");
    assert_eq!(implement["estimated_duration"], "5 minutes");
    assert_eq!(implement["deliverables"], json!(["greet()", "its unit test"]));
    let total = task["execution_plan"]["total_estimated_duration"].as_str().unwrap();
    let minutes: u64 = total.strip_suffix(" minutes").and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(minutes >= 5, "at least the phases' sum: {total}");
    assert_eq!(task["execution_plan"]["confidence_score"], 0.9);
    assert_eq!(task["execution_plan"]["risk_factors"], json!(["greeting etiquette varies"]));
    assert!(task["resource_requirements"]["cpu_cores"].as_u64().is_some(), "{task}");
    let task_id = task["task_id"].as_str().unwrap().to_string();
    assert_eq!(ana.location(), Some(format!("/v1/tasks/{task_id}")));
    let (status, body) = ana.post(&format!("/v1/projects/{id}/tasks"), json!({"description": "short"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "description", "{body}");

    // The task is its project's: visible to members, not to others; a viewer cannot run it.
    let (status, got) = bob.get(&format!("/v1/tasks/{task_id}")).await;
    assert_eq!((status, got["status"].as_str()), (200, Some("planned")), "{got}");
    let stranger = Rest::new(&base, Some(token("eve", &["developer"]).await));
    assert_eq!(stranger.get(&format!("/v1/tasks/{task_id}")).await.0, 404);
    assert_eq!(stranger.post(&format!("/v1/tasks/{task_id}/execute"), json!({})).await.0, 404);
    assert_eq!(vic.post(&format!("/v1/tasks/{task_id}/execute"), json!({})).await.0, 403);
    let (status, run) = ana.post(&format!("/v1/tasks/{task_id}/execute"), json!({})).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["task_id"], task_id.as_str());
    let (_, audit) = root.get(&format!("/v1/audit?action=task.execute&target={task_id}")).await;
    let runs = audit_rows(&audit);
    assert!(audited(&runs, "user:ana", "ok") && audited(&runs, "user:vic", "error: 403 Forbidden"), "{runs:?}");

    // Soft delete by the owner only, restorable by an admin.
    assert_eq!(bob.delete(&project).await.0, 403);
    // Not while its task runs: 409 saying why. The run ends soon (the scripted models run out).
    let (status, body) = ana.delete(&project).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("running tasks"), "{body}");
    eventually("the task ends", || async {
        let (_, task) = ana.get(&format!("/v1/tasks/{task_id}")).await;
        match task["status"].as_str() {
            Some("completed" | "failed" | "cancelled") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (status, deleted) = ana.delete(&project).await;
    assert_eq!((status, deleted["status"].as_str()), (200, Some("deleted")), "{deleted}");
    assert!(deleted["restorable_until"].as_str().unwrap() > deleted["deleted_at"].as_str().unwrap(), "{deleted}");
    assert_eq!(ana.get(&format!("/v1/projects/{id}")).await.0, 404);
    assert_eq!(ana.get(&format!("/v1/tasks/{task_id}")).await.0, 404, "its tasks are hidden with it");
    assert_eq!(ana.post(&format!("/v1/projects/{id}/restore"), json!({})).await.0, 403);
    let (status, restored) = root.post(&format!("/v1/projects/{id}/restore"), json!({})).await;
    assert_eq!((status, restored["id"].as_str()), (200, Some(id.as_str())), "{restored}");
    assert_eq!(ana.get(&format!("/v1/projects/{id}")).await.0, 200);
    assert_eq!(ana.get(&format!("/v1/tasks/{task_id}")).await.0, 200, "and back with it");

    // Every answer to a known user carries the rate limit's headers.
    let response =
        ana.http.get(format!("{base}/v1/projects")).bearer_auth(ana.token.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(response.headers()["x-ratelimit-limit"], "1000");
    let remaining: u64 = response.headers()["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap();
    assert!(remaining < 1000 && remaining > 900, "{remaining}");

    // The audit log: every change and every refused change, by whom; for admins only.
    assert_eq!(vic.get("/v1/audit").await.0, 403);
    let (status, audit) = root.get(&format!("/v1/audit?target={id}&limit=100")).await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit_rows(&audit);
    // (who, what, how it went: the orchestrator's outcome for what it carried out, the
    // gateway's HTTP status for what it refused itself).
    for (actor, action, outcome) in [
        ("user:ana", "project.update", "ok"),
        ("user:bob", "project.update", "error: 403 Forbidden"),
        ("user:bob", "project.delete", "error: 403 Forbidden"),
        ("user:ana", "project.delete", "error: FailedPrecondition: "),
        ("user:ana", "project.delete", "ok"),
        ("user:root", "project.restore", "ok"),
    ] {
        assert!(
            entries.iter().any(|(a, b, c)| a == actor && b == action && c.starts_with(outcome)),
            "no {actor} {action} {outcome} in {entries:?}"
        );
    }
    // Each change once: what the orchestrator carried out is not recorded again by the gateway.
    let via_gateway: Vec<&serde_json::Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["detail"]["via"] == "gateway").collect();
    assert!(via_gateway.iter().all(|e| e["outcome"] != "ok"), "{via_gateway:?}");
    let (_, created) = root.get("/v1/audit?action=task.create&actor=user:ana").await;
    assert!(
        created["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "ok" && e["detail"]["project_id"] == id.as_str()),
        "{created}"
    );
    let (_, created) = root.get("/v1/audit?action=project.create&actor=user:ana").await;
    let outcomes: Vec<&str> =
        created["entries"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"ok") && outcomes.contains(&"error: 415 Unsupported Media Type"), "{outcomes:?}");
    assert!(!created.to_string().contains(GATEWAY_SECRET) && !created.to_string().contains("Bearer"));
    assert_eq!(root.get("/v1/audit?since=yesterday").await.0, 422);

    // The gRPC edge: the orchestrator's services through the gateway, each call held to its
    // caller's roles and projects, as the REST routes are.
    {
        use turbo_proto::projects::v1 as projects;
        use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
        use turbo_proto::tasks::v1 as tasks;
        use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
        let channel = gateway.channel().await;
        let mut client = ProjectServiceClient::new(channel.clone());
        let list = |token: Option<&str>| with_token(token, projects::ListProjectsRequest::default());
        let listed = client.list_projects(list(root.token.as_deref())).await.expect("an admin lists").into_inner();
        assert!(listed.projects.iter().any(|p| p.id == id), "{listed:?}");
        let eve = token("eve", &["developer"]).await;
        let hers = client.list_projects(list(Some(&eve))).await.expect("eve lists").into_inner();
        assert!(hers.projects.is_empty(), "eve sees no project of others: {hers:?}");
        let theirs = client.list_projects(list(ana.token.as_deref())).await.expect("ana lists").into_inner();
        assert_eq!(theirs.projects.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        let get = |token: Option<&str>| with_token(token, projects::GetProjectRequest { project_id: id.clone() });
        assert_eq!(client.get_project(get(Some(&eve))).await.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(client.get_project(get(bob.token.as_deref())).await.expect("a member reads").into_inner().id, id);
        let create = |token: Option<&str>| {
            with_token(token, projects::CreateProjectRequest { name: "edge".into(), ..Default::default() })
        };
        let viewer = client.create_project(create(vic.token.as_deref())).await.unwrap_err();
        assert_eq!(viewer.code(), tonic::Code::PermissionDenied, "{viewer:?}");
        // A client cannot name someone else: the gateway replaces the identity metadata.
        let mut forged = with_token(ana.token.as_deref(), projects::RestoreProjectRequest { project_id: id.clone() });
        turbo_proto::identity::set_user(forged.metadata_mut(), "root", &["admin"]);
        let refused = client.restore_project(forged).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let anonymous = client.list_projects(list(None)).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{anonymous:?}");
        let anonymous = client.create_project(create(None)).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{anonymous:?}");
        // Sessions: opened for the caller whatever the request names, hidden from others.
        {
            use turbo_proto::sessions::v1 as sessions;
            use turbo_proto::sessions::v1::session_service_client::SessionServiceClient;
            let mut client = SessionServiceClient::new(channel.clone());
            let start =
                sessions::StartSessionRequest { project_id: id.clone(), user: "root".into(), ..Default::default() };
            let session =
                client.start_session(with_token(ana.token.as_deref(), start)).await.expect("ana starts").into_inner();
            assert_eq!(session.user, "ana", "the caller's, not the one named: {session:?}");
            let get = |token: Option<&str>| {
                with_token(token, sessions::GetSessionRequest { session_id: session.session_id.clone() })
            };
            assert_eq!(client.get_session(get(Some(&eve))).await.unwrap_err().code(), tonic::Code::NotFound);
            assert_eq!(
                client.get_session(get(ana.token.as_deref())).await.expect("hers").into_inner().session_id,
                session.session_id
            );
            let end = sessions::EndSessionRequest { session_id: session.session_id.clone(), ..Default::default() };
            let ended = client.end_session(with_token(ana.token.as_deref(), end)).await.expect("ana ends").into_inner();
            assert!(ended.ended_at.is_some(), "{ended:?}");
            let (_, audit) = root.get(&format!("/v1/audit?action=session.end&target={}", session.session_id)).await;
            assert_eq!(audit["entries"][0]["actor"], "user:ana", "{audit}");
        }
        // A server stream passes through: the finished task's events, then the end; not for others.
        let watch = || tasks::WatchTaskRequest { task_id: task_id.clone(), after_seq: 0 };
        let mut tasks_client = TaskServiceClient::new(channel);
        let hidden = tasks_client.watch_task(with_token(Some(&eve), watch())).await.unwrap_err();
        assert_eq!(hidden.code(), tonic::Code::NotFound, "{hidden:?}");
        let mut events = tasks_client
            .watch_task(with_token(ana.token.as_deref(), watch()))
            .await
            .expect("watch through the gateway")
            .into_inner();
        let mut seen = 0;
        while let Some(event) = events.message().await.expect("the stream ends cleanly") {
            assert_eq!(event.task_id, task_id);
            seen += 1;
        }
        assert!(seen > 2, "{seen} events");
        // Audited under the user, not the gateway's address, by the orchestrator that carried
        // the call out; the gateway audits what it refused itself; reads are not audited.
        let (_, audit) = root.get("/v1/audit?action=project.restore&actor=user:ana").await;
        assert!(!audit["entries"].as_array().unwrap().is_empty(), "{audit}");
        let (_, audit) = root.get("/v1/audit?action=project.create&actor=anonymous").await;
        let refused: Vec<&serde_json::Value> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["rpc"] == "/turbo.projects.v1.ProjectService/CreateProject")
            .collect();
        assert_eq!(refused.len(), 1, "{audit}");
        assert_eq!(refused[0]["outcome"], "error: Unauthenticated", "{audit}");
        let (_, audit) = root.get("/v1/audit?actor=user:ana&action=session.start").await;
        assert!(!audit["entries"].as_array().unwrap().is_empty(), "{audit}");
        let (_, audit) = root.get("/v1/audit?action=request").await;
        assert_eq!(audit["entries"], json!([]), "no entry without an action: {audit}");
    }

    // Anything else is a JSON 404; gRPC health still answers on the same port.
    assert_eq!(nobody.get("/v1/nothing").await.0, 404);
    assert_serving(&gateway.channel().await, "turbo.tasks.v1.TaskService").await;
    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
}

#[tokio::test]
async fn a_gateway_without_a_token_key_says_how_to_set_it_and_exits_2() {
    let mut sandbox = Sandbox::new();
    sandbox.env.remove("TURBO_CODER__GATEWAY__JWT_SECRET");
    let out = sandbox.run(&["serve", "gateway", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("TURBO_CODER__GATEWAY__JWT_SECRET"), "{}", out.stderr);
    let out = sandbox.run(&["token", "--user", "ana"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("gateway.jwt_secret"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_holds_across_two_gateway_replicas_and_answers_429_with_retry_after() {
    let database = turbo_tests::cluster::Database::fresh().await;
    let bin = turbo_coder_bin();
    let env = [
        ("TURBO_CODER__STORE__URL", database.url.clone()),
        ("TURBO_CODER__GATEWAY__RATE_LIMIT_PER_HOUR", "5".to_string()),
        // Nothing listens there: the limit is decided before any forwarding.
        ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", "http://127.0.0.1:9".to_string()),
    ];
    let args = ["serve", "gateway", "--listen", "127.0.0.1:0"];
    let a = Served::start_with(&bin, &args, "turbo-gateway", &env).await;
    let b = Served::start_with(&bin, &args, "turbo-gateway", &env).await;
    let ana = token("ana", &["developer"]).await;
    let http = reqwest::Client::new();
    let get =
        |addr: &str, token: &str| http.get(format!("http://{addr}/v1/projects")).bearer_auth(token.to_string()).send();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { &a.addr } else { &b.addr };
        statuses.push(get(addr, &ana).await.unwrap());
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    // Five reach the (absent) orchestrator, the sixth is refused, whichever replica answers.
    assert_eq!(codes, [503, 503, 503, 503, 503, 429], "{codes:?}");
    let refused = statuses.pop().unwrap();
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    let reset: u64 = refused.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&reset), "seconds until the window resets: {reset}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(statuses[4].headers()["x-ratelimit-remaining"], "0");
    assert_eq!(statuses[0].headers()["x-ratelimit-remaining"], "4");

    // A flood past the limit is refused, on both replicas, and another user is not affected.
    let flood: Vec<_> = (0..40).map(|i| get(if i % 2 == 0 { &a.addr } else { &b.addr }, &ana)).collect();
    let flooded: Vec<u16> =
        futures::future::join_all(flood).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(flooded.iter().all(|c| *c == 429), "{flooded:?}");
    let bob = token("bob", &["developer"]).await;
    assert_eq!(get(&a.addr, &bob).await.unwrap().status().as_u16(), 503);
    // The same budget on the gRPC edge: ResourceExhausted.
    {
        use turbo_proto::projects::v1 as projects;
        use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
        let mut client = ProjectServiceClient::new(b.channel().await);
        let refused =
            client.list_projects(with_token(Some(&ana), projects::ListProjectsRequest::default())).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("requests in an hour"), "{refused:?}");
    }
    assert_eq!(a.terminate().await, Some(0));
    assert_eq!(b.terminate().await, Some(0));
}

/// schemathesis (PyPI; `make setup` installs it) generates requests from the gateway's OpenAPI
/// document, valid and not, and checks every answer: no 5xx, only documented status codes and
/// content types, bodies that match their schemas; then it follows the document's links
/// (create a project, then read, change, delete it, give it tasks and sessions, ...). Fails,
/// never skips, without it.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_openapi_document() {
    let knowledge =
        Served::start(&turbo_coder_bin(), &["serve", "knowledge", "--listen", "127.0.0.1:0"], "turbo-knowledge").await;
    let (_models, orchestrator, gateway) = gateway_stack(
        true,
        &[
            ("TURBO_CODER__GATEWAY__RATE_LIMIT_PER_HOUR", "1000000".into()),
            ("TURBO_CODER__KNOWLEDGE__URL", format!("http://{}", knowledge.addr)),
        ],
    )
    .await;
    let base = format!("http://{}", gateway.addr);
    // A project, so that listings have something in them.
    let ana = Rest::new(&base, Some(token("ana", &["admin"]).await));
    let project = serde_json::json!({"name": "fuzzed", "project_type": "api_service", "technologies": ["python"]});
    assert_eq!(ana.post("/v1/projects", project).await.0, 201);

    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let workdir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&python)
            .current_dir(workdir.path())
            .args(["-m", "schemathesis.cli", "run", &format!("{base}/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {}", ana.token.as_deref().unwrap())])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "25", "--seed", "1", "--no-color"])
            .output(),
    )
    .await
    .expect("schemathesis finishes within 10 minutes")
    .unwrap_or_else(|e| panic!("cannot run {python} -m schemathesis.cli ({e}): run `make setup`"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("passed") && !said.contains("No module named"), "{said}");
    // The stateful phase follows the document's links from what POSTs create: "API Links:
    // N covered / M selected". Without usable links it covers none.
    let covered = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("API Links:")?.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no stateful phase: {said}"));
    assert!(covered >= 8, "only {covered} links followed: {said}");
    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
    assert_eq!(knowledge.terminate().await, Some(0));
}

#[tokio::test]
async fn an_rs256_gateway_takes_tokens_of_its_identity_provider_and_refuses_others() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/gateway/tests/keys");
    let env = [
        ("TURBO_CODER__GATEWAY__JWT_ALGORITHM", "RS256".to_string()),
        ("TURBO_CODER__GATEWAY__JWKS_FILE", keys.join("jwks.json").display().to_string()),
        // Nothing listens there: a request that passes the token check ends in 503.
        ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", "http://127.0.0.1:9".to_string()),
    ];
    let gateway =
        Served::start_with(&turbo_coder_bin(), &["serve", "gateway", "--listen", "127.0.0.1:0"], "turbo-gateway", &env)
            .await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "ana", "roles": ["developer"], "iss": "turbo-coder", "aud": "turbo-coder",
                                    "exp": now + 600, "nbf": now, "iat": now});
    let sign = |alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey| {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some("idp-2026".into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let private = std::fs::read(keys.join("idp-2026.private.pem")).unwrap();
    let public = std::fs::read(keys.join("idp-2026.public.pem")).unwrap();
    let good = sign(jsonwebtoken::Algorithm::RS256, &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap());
    let confused = sign(jsonwebtoken::Algorithm::HS256, &jsonwebtoken::EncodingKey::from_secret(&public));
    let base = format!("http://{}", gateway.addr);
    let (status, body) = Rest::new(&base, Some(good)).get("/v1/projects").await;
    assert_eq!(status, 503, "the token passed, the orchestrator is absent: {body}");
    let (status, body) = Rest::new(&base, Some(confused)).get("/v1/projects").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("RS256"), "{body}");
    assert_eq!(gateway.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn knowledge_added_through_the_gateway_is_found_by_a_search() {
    let knowledge =
        Served::start(&turbo_coder_bin(), &["serve", "knowledge", "--listen", "127.0.0.1:0"], "turbo-knowledge").await;
    let env = [
        ("TURBO_CODER__KNOWLEDGE__URL", format!("http://{}", knowledge.addr)),
        ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", "http://127.0.0.1:9".to_string()),
    ];
    let gateway =
        Served::start_with(&turbo_coder_bin(), &["serve", "gateway", "--listen", "127.0.0.1:0"], "turbo-gateway", &env)
            .await;
    let base = format!("http://{}", gateway.addr);
    let dev = Rest::new(&base, Some(token("ana", &["developer"]).await));
    let vic = Rest::new(&base, Some(token("vic", &["viewer"]).await));
    let chunk = serde_json::json!({
        "title": "Retry with backoff",
        "content": "Retry failed HTTP calls with exponential backoff and jitter, at most five attempts.",
        "chunk_type": "pattern", "category": "reliability", "tags": ["http"]
    });
    assert_eq!(vic.post("/v1/knowledge", chunk.clone()).await.0, 403);
    let (status, added) = dev.post("/v1/knowledge", chunk).await;
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    let (status, body) = dev
        .post(
            "/v1/knowledge",
            serde_json::json!({"title": "x", "content": "short", "chunk_type": "pattern", "category": "c"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    let (status, found) =
        vic.post("/v1/knowledge/search", serde_json::json!({"query": "exponential backoff retries", "limit": 5})).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");
    let (status, body) = vic.post("/v1/knowledge/search", serde_json::json!({"query": "  "})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("query"), "{body}");
    // Adding is audited, allowed or refused; searching is not.
    let root = Rest::new(&base, Some(token("root", &["admin"]).await));
    let (_, audit) = root.get("/v1/audit?action=knowledge.add").await;
    let seen = audit_rows(&audit);
    for (actor, outcome) in
        [("user:ana", "ok"), ("user:vic", "error: 403 Forbidden"), ("user:ana", "error: 422 Unprocessable Entity")]
    {
        assert!(audited(&seen, actor, outcome), "no {actor} {outcome} in {seen:?}");
    }
    let (_, all) = root.get("/v1/audit?limit=1000").await;
    assert!(all["entries"].as_array().unwrap().iter().all(|e| e["action"] == "knowledge.add"), "{all}");
    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(knowledge.terminate().await, Some(0));
}

// Interactive sessions through the gateway: REST to open and end them, the WebSocket to work
// in them and to follow their task.

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the session's WebSocket at `path` with `token`; Err(HTTP status) when refused.
async fn ws_connect(addr: &str, path: &str, token: Option<&str>) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().expect("a ws:// URL");
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("cannot connect to {path}: {e}"),
    }
}

async fn ws_send(ws: &mut Ws, message: serde_json::Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(message.to_string().into())).await.expect("send");
}

/// The next JSON message, or Err(close code) when the server closes.
async fn ws_next(ws: &mut Ws) -> Result<serde_json::Value, u16> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("a message within the wait");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str()).expect("JSON text")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map_or(1005, |f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the WebSocket failed: {e}"),
            None => return Err(1006),
        }
    }
}

/// Messages until the answer of `message_type` to `reply_to`; the task events met on the way
/// are kept in `events`.
async fn ws_answer(
    ws: &mut Ws,
    reply_to: &str,
    message_type: &str,
    events: &mut Vec<serde_json::Value>,
) -> serde_json::Value {
    loop {
        let m = ws_next(ws).await.unwrap_or_else(|code| panic!("closed ({code}) before the answer to {reply_to}"));
        if m["message_type"] == "task_event" {
            events.push(m);
        } else if m["reply_to"] == reply_to && m["message_type"] == message_type {
            return m;
        } else {
            assert_ne!(m["level"], "error", "an error instead of the answer to {reply_to}: {m}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_works_in_its_project_and_streams_its_task_over_a_websocket_resuming_after_a_seq() {
    use serde_json::json;

    let (_models, orchestrator, gateway) =
        gateway_stack(true, &[("TURBO_CODER__GATEWAY__WS_MAX_MESSAGE_BYTES", "65536".into())]).await;
    let base = format!("http://{}", gateway.addr);
    let ana_token = token("ana", &["developer"]).await;
    let ana = Rest::new(&base, Some(ana_token.clone()));
    let bob_token = token("bob", &["developer"]).await;
    let bob = Rest::new(&base, Some(bob_token.clone()));
    let vic = Rest::new(&base, Some(token("vic", &["viewer"]).await));

    let (status, created) = ana
        .post("/v1/projects", json!({"name": "live", "project_type": "api_service", "technologies": ["python"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let project_id = created["project_id"].as_str().unwrap().to_string();
    let root = PathBuf::from(created["project"]["root_path"].as_str().expect("a workspace"));
    let (status, task) = ana
        .post(
            &format!("/v1/projects/{project_id}/tasks"),
            json!({"description": "add a greet(name) function in greet.py"}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let task_id = task["task_id"].as_str().unwrap().to_string();

    // Opening a session: the project's members with the developer role; bad fields named.
    let sessions = format!("/v1/projects/{project_id}/sessions");
    assert_eq!(bob.post(&sessions, json!({})).await.0, 404, "not a member");
    assert_eq!(vic.post(&sessions, json!({})).await.0, 403, "a viewer");
    let (status, body) = ana.post(&sessions, json!({"idle_timeout_seconds": 0})).await;
    assert_eq!((status, body["error"]["fields"][0]["field"].as_str()), (422, Some("idle_timeout_seconds")), "{body}");
    let (status, body) = ana.post(&sessions, json!({"task_id": "nope"})).await;
    assert_eq!((status, body["error"]["fields"][0]["field"].as_str()), (422, Some("task_id")), "{body}");
    assert_eq!(ana.post(&sessions, json!({"task_id": uuid::Uuid::new_v4().to_string()})).await.0, 404);
    let (status, session) = ana.post(&sessions, json!({"task_id": task_id})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!((session["status"].as_str(), session["user"].as_str()), (Some("active"), Some("ana")));
    assert_eq!(session["idle_timeout_seconds"], 1800);
    let session_id = session["session_id"].as_str().unwrap().to_string();
    assert_eq!(ana.location(), Some(format!("/v1/sessions/{session_id}")));
    let ws_path = session["websocket_url"].as_str().unwrap().to_string();
    assert_eq!(ws_path, format!("/v1/sessions/{session_id}/ws"));
    assert_eq!(bob.get(&format!("/v1/sessions/{session_id}")).await.0, 404, "another user's session");

    // The WebSocket needs the session's user's token.
    assert_eq!(ws_connect(&gateway.addr, &ws_path, None).await.err(), Some(401));
    assert_eq!(ws_connect(&gateway.addr, &ws_path, Some(&bob_token)).await.err(), Some(404));
    let mut ws = ws_connect(&gateway.addr, &ws_path, Some(&ana_token)).await.expect("ana connects");

    // The task's stored events come first (its planning), numbered from 1.
    let mut events = Vec::new();
    while events.len() < 3 {
        let m = ws_next(&mut ws).await.expect("events");
        assert_eq!(
            (m["message_type"].as_str(), m["task_id"].as_str()),
            (Some("task_event"), Some(task_id.as_str())),
            "{m}"
        );
        events.push(m);
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(events[0]["event"]["type"], "task_created", "{}", events[0]);

    // Code runs in the project's workspace, through the sandboxed tools.
    ws_send(
        &mut ws,
        json!({"message_type": "execute_code", "message_id": "m1", "language": "python", "code": "print(6 * 7)"}),
    )
    .await;
    let ran = ws_answer(&mut ws, "m1", "execution_result", &mut events).await;
    assert_eq!(ran["success"], true, "{ran}");
    assert!(ran["output"].as_str().unwrap().contains("42"), "{ran}");
    assert!(ran["execution_time"].as_f64().unwrap() > 0.0, "{ran}");
    ws_send(
        &mut ws,
        json!({"message_type": "execute_code", "message_id": "m2", "language": "python",
                            "code": "def f():\n    return 1 / 0\nf()"}),
    )
    .await;
    let failed = ws_answer(&mut ws, "m2", "execution_result", &mut events).await;
    assert_eq!(
        (failed["success"].as_bool(), failed["errors"][0]["kind"].as_str()),
        (Some(false), Some("ZeroDivisionError")),
        "{failed}"
    );
    assert_eq!(failed["errors"][0]["line"], 2, "{failed}");
    ws_send(&mut ws, json!({"message_type": "execute_code", "message_id": "m3", "language": "cobol", "code": "x"}))
        .await;
    let refused = ws_answer(&mut ws, "m3", "system_notification", &mut events).await;
    assert!(refused["message"].as_str().unwrap().contains("use python or bash"), "{refused}");

    // An edit creates a file, a second one changes it; both land on disk.
    let insert = |line: u32, column: u32, text: &str| json!({"range": {"start": {"line": line, "column": column}, "end": {"line": line, "column": column}}, "text": text});
    ws_send(
        &mut ws,
        json!({"message_type": "code_edit", "message_id": "e1", "file_path": "notes.txt",
                            "changes": [insert(0, 0, "hello\n")], "cursor_position": {"line": 1, "column": 0}}),
    )
    .await;
    let edited = ws_answer(&mut ws, "e1", "execution_result", &mut events).await;
    assert_eq!(edited["success"], true, "{edited}");
    ws_send(&mut ws, json!({"message_type": "code_edit", "message_id": "e2", "file_path": "notes.txt",
                            "changes": [{"range": {"start": {"line": 0, "column": 0}, "end": {"line": 0, "column": 5}}, "text": "goodbye"}]})).await;
    assert_eq!(ws_answer(&mut ws, "e2", "execution_result", &mut events).await["success"], true);
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "goodbye\n");
    // A question about a selection: the preferred agent's model proposes a replacement for it,
    // and nothing is written.
    let selection = json!({"start": {"line": 0, "column": 0}, "end": {"line": 0, "column": 7}});
    ws_send(
        &mut ws,
        json!({"message_type": "ai_request", "message_id": "s1", "query": "make it louder", "preferred_agent": "tester",
               "context": {"current_file": "notes.txt", "selection": selection}}),
    )
    .await;
    let suggested = ws_answer(&mut ws, "s1", "code_suggestion", &mut events).await;
    let first = &suggested["suggestions"][0];
    assert_eq!(
        (first["replacement"].as_str(), first["file_path"].as_str()),
        (Some("GOODBYE"), Some("notes.txt")),
        "{suggested}"
    );
    assert_eq!(first["range"]["end"]["column"], 7, "{suggested}");
    assert_eq!(
        (suggested["confidence"].as_f64(), suggested["reasoning"].as_str()),
        (Some(0.8), Some("asked to be louder"))
    );
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "goodbye\n", "nothing is written");
    ws_send(
        &mut ws,
        json!({"message_type": "code_edit", "message_id": "e3", "file_path": "notes.txt",
                            "changes": [insert(9, 0, "x")]}),
    )
    .await;
    let bad_edit = ws_answer(&mut ws, "e3", "system_notification", &mut events).await;
    assert!(bad_edit["message"].as_str().unwrap().contains("line 9 does not exist"), "{bad_edit}");
    ws_send(
        &mut ws,
        json!({"message_type": "code_edit", "message_id": "e4", "file_path": "../outside.txt",
                            "changes": [insert(0, 0, "x")]}),
    )
    .await;
    let escaped = ws_answer(&mut ws, "e4", "system_notification", &mut events).await;
    assert_eq!(escaped["level"], "error", "{escaped}");
    assert!(!root.parent().unwrap().join("outside.txt").exists(), "nothing is written outside the workspace");

    // A tool by name, asynchronously: acknowledged, then its result.
    ws_send(
        &mut ws,
        json!({"message_type": "tool_execution", "message_id": "t1", "tool_name": "fs_list",
                            "parameters": {"path": "."}, "async_execution": true}),
    )
    .await;
    let ack = ws_answer(&mut ws, "t1", "system_notification", &mut events).await;
    assert_eq!(ack["title"], "Tool started", "{ack}");
    let listed = ws_answer(&mut ws, "t1", "execution_result", &mut events).await;
    assert!(listed["output"].as_str().unwrap().contains("notes.txt"), "{listed}");
    ws_send(&mut ws, json!({"message_type": "tool_execution", "message_id": "t2", "tool_name": "fs_teleport"})).await;
    let unknown_tool = ws_answer(&mut ws, "t2", "execution_result", &mut events).await;
    assert_eq!(unknown_tool["success"], false, "{unknown_tool}");

    // Bad messages are answered with an error and the connection stays open.
    ws_send(&mut ws, json!({"message_type": "dance", "message_id": "x1"})).await;
    let unknown = ws_answer(&mut ws, "x1", "system_notification", &mut events).await;
    assert!(unknown["message"].as_str().unwrap().contains("unknown message_type 'dance'"), "{unknown}");
    {
        use futures::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Text("{not json".into())).await.unwrap();
    }
    loop {
        let m = ws_next(&mut ws).await.expect("an answer");
        if m["message_type"] == "system_notification" {
            assert!(m["message"].as_str().unwrap().contains("not JSON"), "{m}");
            break;
        }
        events.push(m);
    }

    // Run the task and drop the connection after a few of its new events.
    let (status, run) = ana.post(&format!("/v1/tasks/{task_id}/execute"), json!({})).await;
    assert_eq!(status, 202, "{run}");
    let resume_after = events.iter().map(|e| e["seq"].as_u64().unwrap()).max().unwrap() + 2;
    while events.iter().map(|e| e["seq"].as_u64().unwrap()).max().unwrap() < resume_after {
        let m = ws_next(&mut ws).await.expect("events of the run");
        if m["message_type"] == "task_event" {
            events.push(m);
        }
    }
    drop(ws);
    // Reconnecting with the last seq seen gives exactly the events after it, to the task's end.
    let mut ws =
        ws_connect(&gateway.addr, &format!("{ws_path}?after_seq={resume_after}"), Some(&ana_token)).await.unwrap();
    let mut resumed: Vec<u64> = Vec::new();
    loop {
        let m = ws_next(&mut ws).await.expect("the rest of the run");
        assert_eq!(m["message_type"], "task_event", "{m}");
        resumed.push(m["seq"].as_u64().unwrap());
        let to = m["event"]["to"].as_str().unwrap_or_default();
        if m["event"]["type"] == "status_changed" && ["completed", "failed", "cancelled"].contains(&to) {
            break;
        }
    }
    let expected: Vec<u64> = (resume_after + 1..resume_after + 1 + resumed.len() as u64).collect();
    assert_eq!(resumed, expected, "gapless, without the events seen before");

    // An ai_request becomes a new task the session follows; its answer comes when it ends.
    ws_send(
        &mut ws,
        json!({"message_type": "ai_request", "message_id": "a1", "query": "add a farewell(name) function to greet.py",
                            "context": {"current_file": "greet.py"}, "preferred_agent": "coder"}),
    )
    .await;
    let mut new_events = Vec::new();
    let started = ws_answer(&mut ws, "a1", "system_notification", &mut new_events).await;
    assert_eq!(started["actions"][0]["kind"], "watch_task", "{started}");
    let new_task = started["actions"][0]["payload"]["task_id"].as_str().unwrap().to_string();
    assert_ne!(new_task, task_id);
    let answer = ws_answer(&mut ws, "a1", "ai_response", &mut new_events).await;
    assert!(answer["response"].as_str().unwrap().contains(&new_task), "{answer}");
    assert_eq!(answer["agent"], "reviewer", "the plan's last phase: {answer}");
    // The agents' prompts carried context retrieved from the workspace (the file the edits
    // above made): the answer lists it, each chunk where it is and how it begins.
    let used = answer["context_used"].as_array().expect("context_used is a list");
    assert!(
        used.iter().any(|c| c["title"].as_str().is_some_and(|t| t.starts_with("notes.txt:"))
            && c["content"].as_str().is_some_and(|t| !t.is_empty())
            && c["id"].as_str().is_some_and(|t| !t.is_empty())),
        "{answer}"
    );
    assert!(!new_events.is_empty() && new_events.iter().all(|e| e["task_id"] == new_task.as_str()), "{new_events:?}");
    let (_, now) = ana.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(now["task_id"], new_task.as_str(), "the session follows the new task: {now}");

    // A message past the size limit closes the connection with 1009.
    {
        use futures::SinkExt;
        let huge = format!(
            "{{\"message_type\":\"execute_code\",\"language\":\"python\",\"code\":\"{}\"}}",
            "x".repeat(100_000)
        );
        let _ = ws.send(tokio_tungstenite::tungstenite::Message::Text(huge.into())).await;
    }
    let closed = loop {
        match ws_next(&mut ws).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(closed, 1009);

    // Ending the session ends its open streams; it cannot be joined again.
    let mut ws = ws_connect(&gateway.addr, &format!("{ws_path}?after_seq=1000"), Some(&ana_token)).await.unwrap();
    let (status, ended) = ana.delete(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("ended")), "{ended}");
    assert_eq!(ended["end_reason"], "ended by ana", "{ended}");
    let note = ws_next(&mut ws).await.expect("a last notification");
    assert_eq!(note["title"], "Session ended", "{note}");
    assert_eq!(ws_next(&mut ws).await.err(), Some(1000));
    assert_eq!(ws_connect(&gateway.addr, &ws_path, Some(&ana_token)).await.err(), Some(409));

    // A session ended just as a client connects: the connection is refused (409) or hears
    // the end, whichever side of the handshake the end lands; it never stays open.
    for _ in 0..10 {
        let (_, racing) = ana.post(&sessions, json!({})).await;
        let racing = racing["session_id"].as_str().expect("a session id").to_string();
        let (path, ws) = (format!("/v1/sessions/{racing}"), format!("/v1/sessions/{racing}/ws"));
        let (connected, (status, _)) =
            tokio::join!(ws_connect(&gateway.addr, &ws, Some(&ana_token)), ana.delete(&path));
        assert_eq!(status, 200);
        match connected {
            Ok(mut ws) => {
                let note = ws_next(&mut ws).await.expect("the session's last notification");
                assert_eq!(note["title"], "Session ended", "{note}");
                assert_eq!(ws_next(&mut ws).await.err(), Some(1000));
            }
            Err(refused) => assert_eq!(refused, 409),
        }
    }

    // A session idle past its timeout ends by itself.
    let (_, idle) = ana.post(&sessions, json!({"idle_timeout_seconds": 1})).await;
    let idle_path = format!("/v1/sessions/{}", idle["session_id"].as_str().unwrap());
    let ended = eventually("the idle session ends", || async {
        let (_, s) = ana.get(&idle_path).await;
        if s["status"] == "ended" { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(ended["end_reason"], "idle for 1 s", "{ended}");

    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_edits_outside_a_task_are_checkpointed_and_rewound_by_its_id() {
    use serde_json::json;

    let (_models, orchestrator, gateway) = gateway_stack(true, &[]).await;
    let token = token("ana", &["developer"]).await;
    let ana = Rest::new(&format!("http://{}", gateway.addr), Some(token.clone()));
    let (status, created) = ana
        .post("/v1/projects", json!({"name": "edits", "project_type": "api_service", "technologies": ["python"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let project_id = created["project_id"].as_str().unwrap().to_string();
    let root = PathBuf::from(created["project"]["root_path"].as_str().expect("a workspace"));
    let (status, session) = ana.post(&format!("/v1/projects/{project_id}/sessions"), json!({})).await;
    assert_eq!(
        (status, &session["task_id"]),
        (201, &serde_json::Value::Null),
        "a session following no task: {session}"
    );
    let session_id = session["session_id"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&gateway.addr, session["websocket_url"].as_str().unwrap(), Some(&token)).await.unwrap();
    let mut events = Vec::new();
    let at = |line: u32, column: u32| json!({"line": line, "column": column});
    for (id, text) in [("e1", "one\n"), ("e2", "two\n")] {
        let edit = json!({"message_type": "code_edit", "message_id": id, "file_path": "notes.txt",
                          "changes": [{"range": {"start": at(0, 0), "end": at(0, 0)}, "text": text}]});
        ws_send(&mut ws, edit).await;
        assert_eq!(ws_answer(&mut ws, id, "execution_result", &mut events).await["success"], true);
    }
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "two\none\n");
    assert!(events.is_empty(), "no task, no task events: {events:?}");

    // `turbo-coder rewind SESSION` where the tools ran: the orchestrator's home and data.
    let rewind = |args: &[&str]| {
        let sandbox = &orchestrator.sandbox;
        Command::new(turbo_coder_bin())
            .arg("rewind")
            .args(args)
            .current_dir(&sandbox.workdir)
            .env_clear()
            .envs(&sandbox.env)
            .stdin(Stdio::null())
            .output()
    };
    let listed = rewind(&[&session_id, "--list", "--json"]).await.unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let labels: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    let label = format!("session {session_id}: fs_write");
    assert_eq!(labels, [label.as_str(), label.as_str()], "one checkpoint before each edit's write");
    let back = rewind(&[&session_id, "--step", "2"]).await.unwrap();
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "one\n", "before the second edit");
    assert!(rewind(&[&session_id]).await.unwrap().status.success());
    assert!(!root.join("notes.txt").exists(), "before the first edit");
    let unknown = rewind(&[&uuid::Uuid::new_v4().to_string()]).await.unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no task or session"), "{unknown:?}");

    // Asked of the planner, a request is planned, not run: the plan is the answer, with the
    // action that runs it; the session follows the task, so its run streams here.
    let ask = json!({"message_type": "ai_request", "message_id": "p1", "query": "add a greet(name) function to greet.py",
                     "preferred_agent": "planner"});
    ws_send(&mut ws, ask).await;
    let planned = ws_answer(&mut ws, "p1", "system_notification", &mut events).await;
    assert_eq!(planned["actions"][0]["kind"], "watch_task", "{planned}");
    let task_id = planned["actions"][0]["payload"]["task_id"].as_str().unwrap().to_string();
    let answer = ws_answer(&mut ws, "p1", "ai_response", &mut events).await;
    assert_eq!(answer["agent"], "planner", "{answer}");
    let text = answer["response"].as_str().unwrap();
    assert!(text.contains("1. implement (coder)") && text.contains("2. review (reviewer, after implement)"), "{text}");
    assert!(text.contains("Risk: greeting etiquette varies"), "{text}");
    assert_eq!(answer["follow_up_actions"][0]["kind"], "execute_task", "{answer}");
    assert_eq!(answer["follow_up_actions"][0]["payload"]["task_id"], task_id.as_str(), "{answer}");
    let (_, task) = ana.get(&format!("/v1/tasks/{task_id}")).await;
    assert_eq!(task["status"], "planned", "nothing ran: {task}");
    let (status, _) = ana.post(&format!("/v1/tasks/{task_id}/execute"), json!({})).await;
    assert_eq!(status, 202);
    let mut seen: Vec<String> =
        events.iter().map(|e| e["event"]["type"].as_str().unwrap_or_default().to_string()).collect();
    loop {
        let m = ws_next(&mut ws).await.expect("the run's events");
        assert_eq!(
            (m["message_type"].as_str(), m["task_id"].as_str()),
            (Some("task_event"), Some(task_id.as_str())),
            "{m}"
        );
        let to = m["event"]["to"].as_str().unwrap_or_default();
        if m["event"]["type"] == "status_changed" && ["completed", "failed", "cancelled"].contains(&to) {
            break;
        }
        // Its planning first (stored, and sent when the session began to follow it), then the run.
        seen.push(m["event"]["type"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen[..3], ["task_created", "model_call", "plan_ready"], "{seen:?}");
    assert!(seen.contains(&"phase_started".to_string()), "the run's events: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_waiting_tool_call_is_decided_from_the_cli_and_each_decision_and_call_is_audited() {
    use serde_json::json;

    // One store for both, as in a cluster: the gateway reads what the orchestrator audits.
    let dir = tempfile::tempdir().unwrap();
    let store = ("TURBO_CODER__STORE__URL", format!("sqlite://{}", dir.path().join("shared.db").display()));
    let policy = [
        ("TURBO_CODER__APPROVAL__HIGH", "ask".to_string()),
        ("TURBO_CODER__APPROVAL__TIMEOUT_S", "4".into()),
        store.clone(),
    ];
    let (_models, orchestrator, gateway) = gateway_stack_with(true, &policy, &[store]).await;
    let base = format!("http://{}", gateway.addr);
    let token = token("ana", &["developer"]).await;
    let ana = Rest::new(&base, Some(token.clone()));
    let root = Rest::new(&base, Some(self::token("root", &["admin"]).await));
    let (status, created) = ana
        .post("/v1/projects", json!({"name": "asks", "project_type": "api_service", "technologies": ["python"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let project_id = created["project_id"].as_str().unwrap().to_string();
    let (status, session) = ana.post(&format!("/v1/projects/{project_id}/sessions"), json!({})).await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["session_id"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&gateway.addr, session["websocket_url"].as_str().unwrap(), Some(&token)).await.unwrap();

    let url = format!("http://{}", orchestrator.addr);
    let cli = Sandbox::new();
    // The call that waits, once it is listed.
    let waiting = |command: &'static str| {
        let (cli, url) = (&cli, &url);
        async move {
            eventually("the call waits for approval", || async move {
                let out = cli.run(&["--server", url, "approvals", "list", "--json"]).await;
                out.assert_code(0);
                let pending: Vec<serde_json::Value> =
                    out.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
                match pending.iter().find(|p| p["arguments"]["command"] == command) {
                    Some(p) => Ok(p.clone()),
                    None => Err(out.stdout),
                }
            })
            .await
        }
    };
    let run = |id: &str, command: &str| {
        json!({"message_type": "tool_execution", "message_id": id, "tool_name": "shell_run",
               "parameters": {"command": command}})
    };
    let mut events = Vec::new();

    // Approved from the CLI: it runs, and its result is the answer.
    ws_send(&mut ws, run("t1", "echo approved")).await;
    let pending = waiting("echo approved").await;
    assert_eq!((pending["tool"].as_str(), pending["risk"].as_str()), (Some("shell_run"), Some("high")), "{pending}");
    assert!(pending["reason"].as_str().unwrap().contains("s of CPU"), "the call's resource estimate: {pending}");
    let id = pending["approval_id"].as_str().unwrap();
    let approved = cli.run(&["--server", &url, "approvals", "approve", id, "--by", "ana", "--note", "fine"]).await;
    approved.assert_code(0);
    assert_eq!(approved.stdout.trim(), format!("approved {id}"));
    let answer = ws_answer(&mut ws, "t1", "execution_result", &mut events).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert!(answer["output"].as_str().unwrap().contains("approved"), "{answer}");

    // Denied: it never runs; the answer says who denied it and why.
    ws_send(&mut ws, run("t2", "echo denied > denied.txt")).await;
    let id = waiting("echo denied > denied.txt").await["approval_id"].as_str().unwrap().to_string();
    cli.run(&["--server", &url, "approvals", "deny", &id, "--by", "bob", "--note", "not now"]).await.assert_code(0);
    let answer = ws_answer(&mut ws, "t2", "execution_result", &mut events).await;
    assert_eq!(answer["success"], false, "{answer}");
    let said = answer["output"].as_str().unwrap();
    assert!(said.contains("bob") && said.contains("not now"), "{answer}");
    let workspace = PathBuf::from(created["project"]["root_path"].as_str().unwrap());
    assert!(!workspace.join("denied.txt").exists(), "a denied call does not run");

    // Undecided: denied when the policy's timeout passes.
    ws_send(&mut ws, run("t3", "echo late")).await;
    let id = waiting("echo late").await["approval_id"].as_str().unwrap().to_string();
    let answer = ws_answer(&mut ws, "t3", "execution_result", &mut events).await;
    assert_eq!(answer["success"], false, "{answer}");
    let late = cli.run(&["--server", &url, "approvals", "approve", &id, "--by", "ana"]).await;
    late.assert_code(2);
    assert!(late.stderr.contains("does not wait for approval"), "{}", late.stderr);

    // Every decision and every call of the session, read back by an admin.
    let entries = |query: String| {
        let root = &root;
        async move {
            let (status, audit) = root.get(&format!("/v1/audit?{query}")).await;
            assert_eq!(status, 200, "{audit}");
            audit["entries"].as_array().unwrap().clone()
        }
    };
    let decided = eventually("the decisions are audited", || async {
        let found: Vec<(String, String)> = entries("limit=1000".into())
            .await
            .iter()
            .filter(|e| e["action"].as_str().unwrap().starts_with("tool."))
            .map(|e| (e["action"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string()))
            .collect();
        if found.len() >= 3 { Ok(found) } else { Err(format!("{found:?}")) }
    })
    .await;
    for (action, actor) in [("tool.approve", "ana"), ("tool.deny", "bob")] {
        assert!(
            decided.iter().any(|(a, who)| a == action && who.contains(actor)),
            "no {action} by {actor}: {decided:?}"
        );
    }
    assert!(decided.iter().any(|(a, _)| a == "tool.approval_expired"), "{decided:?}");
    let calls = entries(format!("action=session.tool_execution&target={session_id}")).await;
    let outcomes: Vec<&str> = calls.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "ok").count(), 1, "{outcomes:?}");
    assert!(outcomes.contains(&"error: bob denied this shell_run call"), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o.starts_with("error: nobody approved")), "{outcomes:?}");
    assert!(calls.iter().all(|e| e["actor"] == "user:ana" && e["detail"]["tool"] == "shell_run"), "{calls:?}");
    assert!(!serde_json::to_string(&calls).unwrap().contains("echo"), "never the parameters: {calls:?}");
    assert!(events.is_empty(), "no task, no task events: {events:?}");

    // A 10 MB message (the limit is 1 MiB by default) closes that connection with 1009,
    // read while it is still being written; the gateway serves on.
    {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let huge =
            format!(r#"{{"message_type":"execute_code","language":"python","code":"{}"}}"#, "x".repeat(10 << 20));
        let (mut sink, mut stream) = ws.split();
        let writer = tokio::spawn(async move { sink.send(Message::Text(huge.into())).await });
        let closed = loop {
            match tokio::time::timeout(WAIT, stream.next()).await.expect("an answer within the wait") {
                Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed instead of closing with a code: {e}"),
                None => break 1006,
            }
        };
        assert_eq!(closed, 1009);
        writer.abort();
    }
    assert_eq!(ana.get("/v1/projects").await.0, 200);
    let mut ws = ws_connect(&gateway.addr, session["websocket_url"].as_str().unwrap(), Some(&token)).await.unwrap();
    ws_send(&mut ws, run("t4", "true")).await;
    let pending = waiting("true").await;
    assert_eq!(pending["tool"], "shell_run", "the session goes on over a new connection: {pending}");

    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_indexed_code_is_searched_by_its_members_only() {
    use serde_json::json;
    use turbo_core::knowledge::{IndexRequest, Knowledge};

    let knowledge =
        Served::start(&turbo_coder_bin(), &["serve", "knowledge", "--listen", "127.0.0.1:0"], "turbo-knowledge").await;
    let knowledge_url = format!("http://{}", knowledge.addr);
    let (_models, orchestrator, gateway) =
        gateway_stack(false, &[("TURBO_CODER__KNOWLEDGE__URL", knowledge_url.clone())]).await;
    let base = format!("http://{}", gateway.addr);
    let ana = Rest::new(&base, Some(token("ana", &["developer"]).await));
    let eve = Rest::new(&base, Some(token("eve", &["developer"]).await));
    let root = Rest::new(&base, Some(token("root", &["admin"]).await));

    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("billing.py"),
        "def compute_invoice_total(lines):\n    \"\"\"Sum the invoice lines with their tax.\"\"\"\n    return sum(l.price * (1 + l.tax) for l in lines)\n",
    )
    .unwrap();
    let (status, created) = ana
        .post(
            "/v1/projects",
            json!({"name": "billing", "project_type": "api_service", "technologies": ["python"],
                                      "root_path": code.path().display().to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let project_id = created["project_id"].as_str().unwrap().to_string();
    // The knowledge service indexes the project's workspace, as the agents' context builds do.
    let remote = turbo_proto::knowledge_client::RemoteKnowledge::connect(&knowledge_url).unwrap();
    let report = remote
        .index_workspace(IndexRequest { project_id: project_id.clone(), workspace: code.path().display().to_string() })
        .await
        .expect("the workspace is indexed");
    assert!(report.chunks_added > 0, "{report:?}");

    let query = |project: Option<&str>| {
        let mut body = json!({"query": "invoice total with tax", "limit": 5});
        if let Some(p) = project {
            body["project_id"] = p.into();
        }
        body
    };
    let hits = |answer: &serde_json::Value| -> Vec<String> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["project_id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Its member finds its code by naming it; another user cannot even ask (404, as for none).
    let (status, found) = ana.post("/v1/knowledge/search", query(Some(&project_id))).await;
    assert_eq!(status, 200, "{found}");
    assert!(!hits(&found).is_empty() && hits(&found).iter().all(|p| *p == project_id), "{found}");
    assert!(found.to_string().contains("compute_invoice_total"), "{found}");
    let (status, body) = eve.post("/v1/knowledge/search", query(Some(&project_id))).await;
    assert_eq!(status, 404, "{body}");
    // Without a project, a user sees shared knowledge only; an admin sees every project's.
    let (_, mine) = ana.post("/v1/knowledge/search", query(None)).await;
    assert!(hits(&mine).iter().all(|p| p.is_empty()), "no project's code without naming it: {mine}");
    let (_, all) = root.post("/v1/knowledge/search", query(None)).await;
    assert!(hits(&all).contains(&project_id), "{all}");

    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
    assert_eq!(knowledge.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_messages_count_against_its_users_rate_limit() {
    use serde_json::json;

    let (_models, orchestrator, gateway) =
        gateway_stack(true, &[("TURBO_CODER__GATEWAY__RATE_LIMIT_PER_HOUR", "6".into())]).await;
    let token = token("ana", &["developer"]).await;
    let ana = Rest::new(&format!("http://{}", gateway.addr), Some(token.clone()));
    let (status, created) = ana
        .post("/v1/projects", json!({"name": "busy", "project_type": "api_service", "technologies": ["python"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let project_id = created["project_id"].as_str().unwrap();
    let (status, session) = ana.post(&format!("/v1/projects/{project_id}/sessions"), json!({})).await;
    assert_eq!(status, 201, "{session}");
    // Three requests so far (project, session, the WebSocket's upgrade): three messages left.
    let mut ws = ws_connect(&gateway.addr, session["websocket_url"].as_str().unwrap(), Some(&token)).await.unwrap();
    let mut events = Vec::new();
    for i in 0..3 {
        let id = format!("l{i}");
        ws_send(&mut ws, json!({"message_type": "tool_execution", "message_id": id, "tool_name": "fs_list"})).await;
        assert_eq!(ws_answer(&mut ws, &id, "execution_result", &mut events).await["success"], true);
    }
    ws_send(&mut ws, json!({"message_type": "tool_execution", "message_id": "over", "tool_name": "fs_list"})).await;
    let refused = ws_next(&mut ws).await.expect("a notification, the connection open");
    assert_eq!((refused["reply_to"].as_str(), refused["level"].as_str()), (Some("over"), Some("error")), "{refused}");
    assert_eq!(refused["title"], "Rate limit", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("more than 6 requests in an hour"), "{refused}");
    // And over REST the same budget is spent.
    assert_eq!(ana.get("/v1/projects").await.0, 429);
    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_users_get_their_stored_roles_and_api_keys_work_until_revoked_or_the_user_is_disabled() {
    use serde_json::json;

    // The gateway and the CLI share one store, as on a host where an operator runs the CLI.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let (_models, orchestrator, gateway) = gateway_stack(false, &[("TURBO_CODER__STORE__URL", url.clone())]).await;
    let base = format!("http://{}", gateway.addr);
    let cli = |args: Vec<&str>| {
        let url = url.clone();
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let mut cli = Sandbox::new();
            cli.set("TURBO_CODER__STORE__URL", url);
            cli.set("TURBO_CODER__GATEWAY__JWT_SECRET", GATEWAY_SECRET);
            cli.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
        }
    };

    // `user add` registers and prints a token; the name is taken after that.
    let added = cli(vec!["user", "add", "carol", "--role", "viewer"]).await;
    added.assert_code(0);
    let carol = Rest::new(&base, Some(added.stdout.trim().to_string()));
    assert_eq!(carol.get("/v1/projects").await.0, 200);
    assert_eq!(
        carol.post("/v1/projects", json!({"name": "c", "project_type": "api_service"})).await.0,
        403,
        "a viewer"
    );
    let again = cli(vec!["user", "add", "carol"]).await;
    again.assert_code(2);
    assert!(again.stderr.contains("already used"), "{}", again.stderr);

    // A registered user's stored roles win over a token's: dave is a developer, whatever his token says.
    cli(vec!["user", "add", "dave", "--role", "developer"]).await.assert_code(0);
    let dave_as_admin = Rest::new(&base, Some(token("dave", &["admin"]).await));
    assert_eq!(dave_as_admin.get("/v1/audit").await.0, 403);
    // An unregistered user's token carries its own roles.
    let erin = Rest::new(&base, Some(token("erin", &["admin"]).await));
    assert_eq!(erin.get("/v1/audit").await.0, 200);

    // An API key: printed once, works as a bearer token with the user's roles; recorded as used.
    let made = cli(vec!["user", "key", "carol", "--label", "ci"]).await;
    made.assert_code(0);
    let key = made.stdout.trim().to_string();
    assert!(key.starts_with("tck_") && key.len() > 60, "{key}");
    let by_key = Rest::new(&base, Some(key.clone()));
    assert_eq!(by_key.get("/v1/projects").await.0, 200);
    assert_eq!(by_key.post("/v1/projects", json!({"name": "c", "project_type": "api_service"})).await.0, 403);
    // The same key on the gRPC edge: carol's roles there too.
    {
        use turbo_proto::projects::v1 as projects;
        use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
        let mut client = ProjectServiceClient::new(gateway.channel().await);
        let listed = client.list_projects(with_token(Some(&key), projects::ListProjectsRequest::default())).await;
        assert!(listed.is_ok(), "a key lists over gRPC: {listed:?}");
        let create = projects::CreateProjectRequest { name: "c".into(), ..Default::default() };
        let refused = client.create_project(with_token(Some(&key), create)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "a viewer's key: {refused:?}");
        let unknown = client
            .list_projects(with_token(Some(&format!("{key}0")), projects::ListProjectsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated, "{unknown:?}");
    }
    let wrong = Rest::new(&base, Some(format!("{key}0")));
    let (status, body) = wrong.get("/v1/projects").await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown"), "{body}");
    let listed = eventually("the key's use is recorded", || async {
        let out = cli(vec!["user", "list"]).await;
        if out.stdout.contains("last used") { Ok(out.stdout) } else { Err(out.stdout) }
    })
    .await;
    assert!(listed.contains("carol\tviewer\tactive") && listed.contains("\tci\t"), "{listed}");
    assert!(!listed.contains(&key), "the key itself is never shown again");
    let key_id = listed.lines().find(|l| l.contains("\tci\t")).unwrap().split_whitespace().nth(1).unwrap().to_string();

    // Revoked: that key stops; disabled: the user's tokens and other keys stop too.
    let second = cli(vec!["user", "key", "carol"]).await.stdout.trim().to_string();
    cli(vec!["user", "revoke-key", &key_id]).await.assert_code(0);
    let (status, body) = by_key.get("/v1/projects").await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    assert_eq!(Rest::new(&base, Some(second.clone())).get("/v1/projects").await.0, 200);
    cli(vec!["user", "disable", "carol"]).await.assert_code(0);
    for refused in [carol, Rest::new(&base, Some(second))] {
        let (status, body) = refused.get("/v1/projects").await;
        assert_eq!(status, 401);
        assert!(body["error"]["message"].as_str().unwrap().contains("disabled"), "{body}");
    }
    let denied = cli(vec!["user", "key", "carol"]).await;
    denied.assert_code(2);
    assert!(denied.stderr.contains("disabled"), "{}", denied.stderr);
    cli(vec!["user", "add", "x", "--role", "wizard"]).await.assert_code(2);

    assert_eq!(gateway.terminate().await, Some(0));
    assert_eq!(orchestrator.terminate().await, Some(0));
}

/// A one-route HTTP server answering every request with the current `body` (JSON), as an
/// identity provider publishes its keys. Returns its URL.
async fn jwks_server(body: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rs256_gateway_fetches_its_keys_from_a_jwks_url_and_again_when_the_provider_rotates_them() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/gateway/tests/keys");
    let published =
        std::sync::Arc::new(std::sync::Mutex::new(std::fs::read_to_string(keys.join("jwks.json")).unwrap()));
    let url = jwks_server(published.clone()).await;
    let env = |url: &str| {
        [
            ("TURBO_CODER__GATEWAY__JWT_ALGORITHM", "RS256".to_string()),
            ("TURBO_CODER__GATEWAY__JWKS_URL", url.to_string()),
            // Nothing listens there: a request that passes the token check ends in 503.
            ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", "http://127.0.0.1:9".to_string()),
        ]
    };
    let gateway = Served::start_with(
        &turbo_coder_bin(),
        &["serve", "gateway", "--listen", "127.0.0.1:0"],
        "turbo-gateway",
        &env(&url),
    )
    .await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "ana", "roles": ["developer"], "iss": "turbo-coder", "aud": "turbo-coder",
                                    "exp": now + 600, "nbf": now, "iat": now});
    let sign = |kid: &str, pem: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(keys.join(pem)).unwrap()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let base = format!("http://{}", gateway.addr);
    let current = Rest::new(&base, Some(sign("idp-2026", "idp-2026.private.pem")));
    let (status, body) = current.get("/v1/projects").await;
    assert_eq!(status, 503, "the token passed, the orchestrator is absent: {body}");
    let rotated = Rest::new(&base, Some(sign("other", "other.private.pem")));
    let (status, body) = rotated.get("/v1/projects").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not among the identity provider's keys"), "{body}");

    // The provider rotates: the new key is fetched when a token names it (at most every 5 s).
    *published.lock().unwrap() = std::fs::read_to_string(keys.join("jwks-rotated.json")).unwrap();
    eventually("a token of the new key is accepted", || async {
        match rotated.get("/v1/projects").await {
            (503, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert_eq!(current.get("/v1/projects").await.0, 503, "the old key still works");
    assert_eq!(gateway.terminate().await, Some(0));

    // Keys that cannot be fetched at start: the gateway says so and does not start.
    let mut sandbox = Sandbox::new();
    for (key, value) in env("http://127.0.0.1:9/jwks.json") {
        sandbox.set(key, value);
    }
    let out = sandbox.run(&["serve", "gateway", "--listen", "127.0.0.1:0"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("cannot fetch gateway.jwks_url http://127.0.0.1:9/jwks.json"), "{}", out.stderr);
}
