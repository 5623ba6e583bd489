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
    _sandbox: Sandbox,
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
        // The knowledge service needs its embedding model to start.
        sandbox.set("TURBO_CODER__KNOWLEDGE__MODEL_DIR", minilm_dir().display().to_string());
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
        Served { child, addr, _stdout: stdout, _sandbox: sandbox }
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
