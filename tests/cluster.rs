//! The cluster harness: a real `nats-server` with JetStream, a fresh Postgres database, the
//! scripted model server, and the services as real processes (`turbo-coder serve tool-runner`,
//! `turbo-coder serve orchestrator` and `turbo-coder serve agent-worker --role R` per replica,
//! every tool call going to the tool-runner over gRPC) on `127.0.0.1:0`, configured
//! through `TURBO_CODER__*` variables only. Everything is torn down on drop: the processes are
//! killed and the database is dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use turbo_tests::cluster::Cluster;
//! let cluster = Cluster::builder().with_workers_per_role(2).start().await;
//! let mut tasks = cluster.tasks().await; // a TaskService client of the orchestrator
//! # }
//! ```
//!
//! Postgres: `postgres://postgres@127.0.0.1:5432/postgres` (trust auth; `make setup` starts
//! one), or the server of `TURBO_TEST_POSTGRES_URL`; or a server of the cluster's own, to take
//! down and bring back ([`ClusterBuilder::with_own_postgres`]). The service processes write their logs to
//! the test's stderr (`TURBO_CLUSTER_LOG` sets their filter, default `warn`).

use std::collections::BTreeMap;
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
use turbo_core::agent::AgentRole;
use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
use turbo_testkit::{ModelDef, NatsServer, PostgresServer, Reply, Script, ScriptedModelServer};

use crate::turbo_coder_bin;

/// The planner's model on the scripted model server.
pub const PLANNER_MODEL: &str = "planner:test";
/// The coder's model (also the tester's, which calls no model).
pub const CODER_MODEL: &str = "coder:test";
/// The reviewer's model: a queue of replies of its own, so review replies never mix with the
/// coder's when a phase is run twice.
pub const REVIEWER_MODEL: &str = "reviewer:test";

/// Upper bound for a process to start or stop. Not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const ORCHESTRATOR_HEALTH: &str = "turbo.tasks.v1.TaskService";
const WORKER_HEALTH: &str = "turbo.agents.v1.AgentService";
const TOOL_RUNNER_HEALTH: &str = "turbo.tools.v1.ToolService";

/// Polls `probe` until it gives a value or `patience` passes, then panics naming `what` and
/// the last error.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {patience:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What to start; see [`Cluster::builder`].
pub struct ClusterBuilder {
    workers_per_role: usize,
    role_workers: Vec<(AgentRole, usize)>,
    ack_wait_s: u64,
    planner: Vec<Reply>,
    coder: Vec<Reply>,
    reviewer: Vec<Reply>,
    env: BTreeMap<String, String>,
    own_postgres: bool,
    queued_tool_runners: usize,
}

impl ClusterBuilder {
    /// Runs the cluster's database on a Postgres server of its own ([`PostgresServer`]), which
    /// the test may stop and restart ([`Cluster::stop_postgres`]); by default the database is
    /// on the shared test server.
    pub fn with_own_postgres(mut self) -> Self {
        self.own_postgres = true;
        self
    }

    /// Agent-worker processes per role (default 1).
    pub fn with_workers_per_role(mut self, n: usize) -> Self {
        self.workers_per_role = n;
        self
    }

    /// Agent-worker processes of `role`, instead of [`ClusterBuilder::with_workers_per_role`].
    pub fn with_role_workers(mut self, role: AgentRole, n: usize) -> Self {
        self.role_workers.push((role, n));
        self
    }

    /// `cluster.ack_wait_s` (default 2, so a killed worker's work is taken over quickly).
    pub fn with_ack_wait_s(mut self, seconds: u64) -> Self {
        self.ack_wait_s = seconds;
        self
    }

    /// The planner model's replies, in order.
    pub fn planner(mut self, replies: Vec<Reply>) -> Self {
        self.planner = replies;
        self
    }

    /// The coder model's replies, in order.
    pub fn coder(mut self, replies: Vec<Reply>) -> Self {
        self.coder = replies;
        self
    }

    /// The reviewer model's replies, in order.
    pub fn reviewer(mut self, replies: Vec<Reply>) -> Self {
        self.reviewer = replies;
        self
    }

    /// `n` tool-runner processes (`tool-runner-0`...) that the orchestrator and the workers
    /// reach through the NATS job queue (`cluster.tool_runner = "queue"`), instead of one over
    /// gRPC.
    pub fn with_queued_tool_runners(mut self, n: usize) -> Self {
        self.queued_tool_runners = n;
        self
    }

    /// One more variable for every service process (e.g. `TURBO_CODER__RUN__TEST_ROUNDS`).
    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Starts nats-server, a fresh database, the model server, the orchestrator and the
    /// workers, and waits until each reports SERVING. Panics, saying what failed, when one
    /// does not come up.
    pub async fn start(self) -> Cluster {
        let root = tempfile::tempdir().expect("a scratch directory");
        let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("nats-server does not start: {e}"));
        let models = ScriptedModelServer::start(
            Script::new()
                .model(ModelDef::new(PLANNER_MODEL, 131072))
                .model(ModelDef::new(CODER_MODEL, 16384))
                .model(ModelDef::new(REVIEWER_MODEL, 16384))
                .replies(PLANNER_MODEL, self.planner)
                .replies(CODER_MODEL, self.coder)
                .replies(REVIEWER_MODEL, self.reviewer),
        )
        .await
        .expect("the scripted model server starts");
        let postgres = match self.own_postgres {
            true => Some(PostgresServer::start().await.unwrap_or_else(|e| panic!("postgres does not start: {e}"))),
            false => None,
        };
        let server = match &postgres {
            Some(pg) => pg.url("postgres"),
            None => std::env::var("TURBO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string()),
        };
        let database = Database::create(server).await;

        let home = root.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".to_string(), home.display().to_string());
        env.insert("XDG_CONFIG_HOME".to_string(), home.join(".config").display().to_string());
        env.insert("XDG_DATA_HOME".to_string(), home.join(".local/share").display().to_string());
        let log = std::env::var("TURBO_CLUSTER_LOG").unwrap_or_else(|_| "warn".into());
        let settings = [
            ("TURBO_CODER__TELEMETRY__LOG", log),
            ("TURBO_CODER__CLUSTER__NATS_URL", nats.url()),
            ("TURBO_CODER__CLUSTER__ACK_WAIT_S", self.ack_wait_s.to_string()),
            ("TURBO_CODER__STORE__URL", database.url.clone()),
            ("TURBO_CODER__STORE__DATA_DIR", root.path().join("data").display().to_string()),
            ("TURBO_CODER__MODELS__PLANNER__BASE_URL", models.url()),
            ("TURBO_CODER__MODELS__PLANNER__MODEL", PLANNER_MODEL.into()),
            ("TURBO_CODER__MODELS__CODER__BASE_URL", models.url()),
            ("TURBO_CODER__MODELS__CODER__MODEL", CODER_MODEL.into()),
            ("TURBO_CODER__MODELS__REVIEWER__PROVIDER", "ollama".into()),
            ("TURBO_CODER__MODELS__REVIEWER__BASE_URL", models.url()),
            ("TURBO_CODER__MODELS__REVIEWER__MODEL", REVIEWER_MODEL.into()),
        ];
        for (key, value) in settings {
            env.insert(key.to_string(), value);
        }
        env.extend(self.env);

        // The tool-runners first: the orchestrator and the workers run every tool call on them.
        let mut tool_runners = Vec::new();
        for i in 0..self.queued_tool_runners.max(1) {
            let mut runner_env = env.clone();
            runner_env.insert("TURBO_CODER__CLUSTER__TOOL_RUNNER_ID".into(), format!("tool-runner-{i}"));
            let mut runner =
                ServiceProcess::start(&["serve", "tool-runner"], "turbo-tool-runner", &runner_env, root.path()).await;
            wait_serving(&mut runner, TOOL_RUNNER_HEALTH, &nats).await;
            tool_runners.push(runner);
        }
        if self.queued_tool_runners > 0 {
            env.insert("TURBO_CODER__CLUSTER__TOOL_RUNNER".into(), "queue".into());
        } else {
            env.insert("TURBO_CODER__CLUSTER__TOOL_RUNNER_URL".into(), format!("http://{}", tool_runners[0].addr));
        }

        let mut cluster = Cluster {
            root,
            nats,
            models,
            database,
            postgres,
            env,
            orchestrator: None,
            standby: None,
            tool_runners,
            workers: Vec::new(),
        };
        let mut starting = Vec::new();
        for role in AgentRole::ALL.iter().copied() {
            let n = self.role_workers.iter().rev().find(|(r, _)| *r == role).map_or(self.workers_per_role, |(_, n)| *n);
            for _ in 0..n.max(1) {
                starting.push(cluster.spawn_worker(role));
            }
        }
        for worker in futures::future::join_all(starting).await {
            cluster.workers.push(worker);
        }
        cluster.start_orchestrator().await;
        cluster
    }
}

/// A running cluster; see the module documentation.
pub struct Cluster {
    root: tempfile::TempDir,
    nats: NatsServer,
    models: ScriptedModelServer,
    database: Database,
    /// The cluster's own Postgres server ([`ClusterBuilder::with_own_postgres`]); declared
    /// after `database`, so the database is dropped while its server still runs.
    postgres: Option<PostgresServer>,
    env: BTreeMap<String, String>,
    orchestrator: Option<ServiceProcess>,
    /// A second orchestrator standing by ([`Cluster::start_standby`]).
    standby: Option<ServiceProcess>,
    /// The tool-runner every tool call goes to (`cluster.tool_runner_url`), or the ones behind
    /// the job queue ([`ClusterBuilder::with_queued_tool_runners`]).
    tool_runners: Vec<ServiceProcess>,
    workers: Vec<Worker>,
}

/// An agent-worker process and its role.
pub struct Worker {
    pub role: AgentRole,
    pub process: ServiceProcess,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            workers_per_role: 1,
            role_workers: Vec::new(),
            ack_wait_s: 2,
            planner: Vec::new(),
            coder: Vec::new(),
            reviewer: Vec::new(),
            env: BTreeMap::new(),
            own_postgres: false,
            queued_tool_runners: 0,
        }
    }

    /// The orchestrator's gRPC address.
    pub fn orchestrator_addr(&self) -> &str {
        &self.orchestrator.as_ref().expect("an orchestrator is running").addr
    }

    /// The orchestrator's process id.
    pub fn orchestrator_pid(&self) -> u32 {
        self.orchestrator.as_ref().expect("an orchestrator is running").pid
    }

    async fn channel(&self) -> Channel {
        connect(self.orchestrator_addr()).await
    }

    /// A TaskService client of the orchestrator.
    pub async fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel().await)
    }

    /// A ProjectService client of the orchestrator.
    pub async fn projects(&self) -> ProjectServiceClient<Channel> {
        ProjectServiceClient::new(self.channel().await)
    }

    /// The scripted model server every role's model points at.
    pub fn models(&self) -> &ScriptedModelServer {
        &self.models
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Stops nats-server gracefully, as an outage of it; its port and JetStream store are kept
    /// for [`Cluster::restart_nats`]. The services stay up and try to reconnect.
    pub async fn stop_nats(&mut self) {
        self.nats.stop().await.unwrap_or_else(|e| panic!("nats-server does not stop: {e}"));
    }

    /// Starts nats-server again on the same port with the same JetStream store and waits until
    /// it accepts clients (the services reconnect by themselves).
    pub async fn restart_nats(&mut self) {
        self.nats
            .restart()
            .await
            .unwrap_or_else(|e| panic!("nats-server does not start again: {e}\n{}", self.nats.log()));
    }

    /// A NATS connection, to watch subjects and streams.
    pub async fn nats(&self) -> turbo_bus::async_nats::Client {
        turbo_bus::connect(&self.nats.url()).await.expect("connect to the cluster's nats-server")
    }

    /// The URL of the cluster's database.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// Closes every connection to the cluster's database from the server side
    /// (`pg_terminate_backend`), as a brief outage of the database would; returns how many were
    /// closed. The database server itself stays up, so other tests sharing it are not touched.
    pub async fn terminate_database_connections(&self) -> u64 {
        turbo_store::terminate_postgres_connections(&self.database.server, &self.database.name)
            .await
            .unwrap_or_else(|e| panic!("cannot close the connections to {}: {e}", self.database.name))
    }

    /// Stops the cluster's own Postgres server (fast shutdown: every session ends), as an
    /// outage of the database; [`Cluster::restart_postgres`] brings it back with its data.
    pub async fn stop_postgres(&mut self) {
        let pg = self.postgres.as_mut().expect("a cluster started with_own_postgres");
        pg.stop().await.unwrap_or_else(|e| panic!("postgres does not stop: {e}"));
    }

    /// Starts the cluster's own Postgres server again on the same port with the same data.
    pub async fn restart_postgres(&mut self) {
        let pg = self.postgres.as_mut().expect("a cluster started with_own_postgres");
        pg.restart().await.unwrap_or_else(|e| panic!("postgres does not start again: {e}"));
    }

    /// The cluster's store, opened by the test.
    pub async fn store(&self) -> turbo_store::Store {
        turbo_store::Store::connect(&self.database.url).await.expect("open the cluster's database")
    }

    /// A fresh directory for a project's root, shared by every service (same host).
    pub fn project_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("projects").join(name);
        std::fs::create_dir_all(&dir).expect("a project directory");
        dir
    }

    /// The running workers of `role`.
    pub fn workers(&self, role: AgentRole) -> impl Iterator<Item = &Worker> {
        self.workers.iter().filter(move |w| w.role == role)
    }

    /// Sends SIGKILL to the worker with process id `pid` and waits until it is gone.
    pub async fn kill_worker(&mut self, pid: u32) {
        let i = self.workers.iter().position(|w| w.process.pid == pid).expect("a worker of this cluster");
        let mut worker = self.workers.remove(i);
        worker.process.kill().await;
    }

    /// Sends SIGKILL to the orchestrator and waits until it is gone.
    pub async fn kill_orchestrator(&mut self) {
        let mut orchestrator = self.orchestrator.take().expect("an orchestrator is running");
        orchestrator.kill().await;
    }

    /// Starts an orchestrator (after [`Cluster::kill_orchestrator`]: a new one on the same
    /// database and NATS) and waits until it serves.
    pub async fn start_orchestrator(&mut self) {
        assert!(self.orchestrator.is_none(), "one orchestrator at a time");
        let mut process =
            ServiceProcess::start(&["serve", "orchestrator"], "turbo-orchestrator", &self.env, self.root.path()).await;
        wait_serving(&mut process, ORCHESTRATOR_HEALTH, &self.nats).await;
        self.orchestrator = Some(process);
    }

    /// Starts a second orchestrator on the same database and NATS and waits until it stands
    /// by: alive (health "" SERVING) with its task service NOT_SERVING, as the store's lease is
    /// held by the running orchestrator.
    pub async fn start_standby(&mut self) {
        assert!(self.standby.is_none(), "one standby at a time");
        let mut process =
            ServiceProcess::start(&["serve", "orchestrator"], "turbo-orchestrator", &self.env, self.root.path()).await;
        wait_serving(&mut process, "", &self.nats).await;
        self.standby = Some(process);
    }

    /// The standby orchestrator's gRPC address.
    pub fn standby_addr(&self) -> &str {
        &self.standby.as_ref().expect("a standby is running").addr
    }

    /// Waits until the standby serves the task service (it took the store's lease over), then
    /// makes it the cluster's orchestrator.
    pub async fn await_takeover(&mut self) {
        let mut standby = self.standby.take().expect("a standby is running");
        wait_serving(&mut standby, ORCHESTRATOR_HEALTH, &self.nats).await;
        self.orchestrator = Some(standby);
    }

    async fn spawn_worker(&self, role: AgentRole) -> Worker {
        let role_text = role.to_string();
        let mut process = ServiceProcess::start(
            &["serve", "agent-worker", "--role", &role_text],
            "turbo-agent-worker",
            &self.env,
            self.root.path(),
        )
        .await;
        wait_serving(&mut process, WORKER_HEALTH, &self.nats).await;
        Worker { role, process }
    }

    /// Starts one more worker of `role` and waits until it serves; returns its process id.
    pub async fn add_worker(&mut self, role: AgentRole) -> u32 {
        let worker = self.spawn_worker(role).await;
        let pid = worker.process.pid;
        self.workers.push(worker);
        pid
    }
}

/// A service process that printed `<name> listening on <addr>`. Killed on drop.
pub struct ServiceProcess {
    child: Child,
    pub pid: u32,
    pub addr: String,
    // Kept open: a service that writes to a closed stdout would fail.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl ServiceProcess {
    async fn start(args: &[&str], name: &str, env: &BTreeMap<String, String>, dir: &Path) -> ServiceProcess {
        let mut child = Command::new(turbo_coder_bin())
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pid = child.id().expect("a started process has an id");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("{name} printed no address within {PATIENCE:?}"))
            .expect("read the service's stdout")
            .unwrap_or_else(|| panic!("{name} exited before printing its address (its log is above)"));
        let addr = line
            .strip_prefix(&format!("{name} listening on "))
            .unwrap_or_else(|| panic!("unexpected first line from {name}: {line}"))
            .to_string();
        ServiceProcess { child, pid, addr, _stdout: stdout }
    }

    /// SIGKILL: the process dies at once, as on a crash or a lost machine.
    pub async fn kill(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.pid).expect("pid fits i32"));
        kill(pid, Signal::SIGKILL).expect("send SIGKILL");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("process {} still running after SIGKILL", self.pid))
            .expect("wait for the killed process");
    }
}

async fn connect(addr: &str) -> Channel {
    let uri = format!("http://{addr}");
    eventually(&format!("connect to {uri}"), PATIENCE, || async {
        Channel::from_shared(uri.clone()).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())
    })
    .await
}

/// The health status the service at `addr` reports for `service`.
pub async fn health(addr: &str, service: &str) -> Result<ServingStatus, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.into() })
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.into_inner().status())
}

/// The health-checked service name of an agent worker (NOT_SERVING while NATS is down).
pub const WORKER_HEALTH_SERVICE: &str = WORKER_HEALTH;

/// Waits until `process` reports `service` SERVING; fails at once if the process exits. A
/// failure shows the end of the cluster's nats-server log: a service that cannot set up the
/// bus never serves.
async fn wait_serving(process: &mut ServiceProcess, service: &str, nats: &NatsServer) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let uri = format!("http://{}", process.addr);
    let endpoint = Channel::from_shared(uri).expect("a valid address");
    loop {
        if let Some(status) = process.child.try_wait().expect("check the service process") {
            panic!("the service on {} exited with {status} before serving (its log is above)", process.addr);
        }
        let health = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest { service: service.into() })
                .await
                .map_err(|e| e.to_string())?;
            match reply.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("{other:?}")),
            }
        };
        match health.await {
            Ok(()) => return,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                let log = nats.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "{service} on {} is not SERVING within {PATIENCE:?}; last: {last}\nthe end of nats-server's log:\n{}",
                    process.addr,
                    tail.join("\n")
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A database of its own on the test Postgres server, dropped on drop.
pub struct Database {
    server: String,
    name: String,
    pub url: String,
}

impl Database {
    /// A fresh database on the test server (`TURBO_TEST_POSTGRES_URL`, else the local one).
    pub async fn fresh() -> Database {
        let server = std::env::var("TURBO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
        Database::create(server).await
    }

    async fn create(server: String) -> Database {
        let name = format!("turbo_cluster_{}", uuid::Uuid::new_v4().simple());
        let url = turbo_store::create_postgres_database(&server, &name).await.unwrap_or_else(|e| {
            panic!(
                "cannot create a database for the cluster on {server}: {e}. Start Postgres (`make setup`, or \
                 `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres`) or point \
                 TURBO_TEST_POSTGRES_URL at one"
            )
        });
        Database { server, name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside a runtime: a thread of its own runs the drop.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(turbo_store::drop_postgres_database(&server, &name)).map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("cannot drop the cluster's database {}: {dropped:?}", self.name);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The processes go first (kill_on_drop), so none holds the database when it is dropped
        // (the drop forces their connections closed anyway).
        self.orchestrator.take();
        self.standby.take();
        self.workers.clear();
        self.tool_runners.clear();
    }
}
