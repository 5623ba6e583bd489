//! Configuration of turbo-coder, layered from lowest to highest precedence:
//! built-in defaults, a TOML file, the environment variable names users of the original
//! Python tool already set (`TURBO_HOST`, `PLANNER_MODEL`, ...), `TURBO_CODER__SECTION__KEY`
//! variables, then command-line flags (applied by the caller on the loaded value).
//!
//! The environment is passed in as a map rather than read here, so tests need no `set_var`.
//!
//! # Layout
//! - `error`: what went wrong, naming the key.
//! - this file: the [`Config`] tree, its defaults, loading and validation.

mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use turbo_llm::{ModelSettings, Provider, ToolMode};

pub use error::{Error, Result};

/// Remote Ollama host used for planning when nothing else is configured.
pub const DEFAULT_TURBO_HOST: &str = "https://ollama.com";
pub const DEFAULT_LOCAL_HOST: &str = "http://localhost:11434";
pub const DEFAULT_PLANNER_MODEL: &str = "gpt-oss:120b";
pub const DEFAULT_CODER_MODEL: &str = "qwen2.5-coder:7b";

/// The environment variables of the original tool and the keys they set.
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("OLLAMA_API_KEY", "models.planner.api_key"),
    ("TURBO_HOST", "models.planner.base_url"),
    ("PLANNER_MODEL", "models.planner.model"),
    ("CODER_MODEL", "models.coder.model"),
    ("OLLAMA_LOCAL", "models.coder.base_url"),
    ("MAX_STEPS", "run.max_steps"),
    ("REQUEST_TIMEOUT_S", "models.*.request_timeout_s"),
    ("DRY_RUN", "run.dry_run"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub models: Models,
    pub run: RunConfig,
    pub store: StoreConfig,
    pub telemetry: TelemetryConfig,
    pub services: ServicesConfig,
    pub cluster: ClusterConfig,
    pub knowledge: KnowledgeConfig,
    pub sandbox: SandboxConfig,
    pub approval: ApprovalConfig,
    pub gateway: GatewayConfig,
}

/// One model endpoint per agent role; tester and reviewer use the coder's unless set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub planner: ModelSettings,
    pub coder: ModelSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tester: Option<ModelSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<ModelSettings>,
}

impl Models {
    pub fn tester(&self) -> &ModelSettings {
        self.tester.as_ref().unwrap_or(&self.coder)
    }

    pub fn reviewer(&self) -> &ModelSettings {
        self.reviewer.as_ref().unwrap_or(&self.coder)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Tool-loop steps an agent may take in one phase (`MAX_STEPS`).
    pub max_steps: u32,
    /// Plan only, change nothing (`DRY_RUN`; `run --apply` turns it off).
    pub dry_run: bool,
    /// Whole-task deadline.
    pub task_timeout_s: u64,
    /// Times the planner is asked again after producing an invalid plan.
    pub plan_attempts: u32,
    /// Test-fix rounds: failing tests go back to the coder at most this many times.
    pub test_rounds: u32,
    /// Review-fix rounds: requested changes go back to the coder at most this many times.
    pub review_rounds: u32,
    /// Deadline of a single tool call.
    pub tool_timeout_s: u64,
    /// Bytes of tool output shown to a model.
    pub tool_output_cap: usize,
    /// Stream model output (time to first token is measured either way).
    pub stream: bool,
    /// Actors per agent role in this process.
    pub agents_per_role: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            max_steps: 25,
            dry_run: true,
            task_timeout_s: 3600,
            plan_attempts: 3,
            test_rounds: 3,
            review_rounds: 1,
            tool_timeout_s: 120,
            tool_output_cap: 16 * 1024,
            stream: true,
            agents_per_role: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Database URL (`sqlite:///path/turbo.db`, `postgres://...`); default: `turbo.db` in `data_dir`.
    pub url: Option<String>,
    /// Where the embedded database lives; default: the user's data directory + `turbo-coder`.
    pub data_dir: Option<PathBuf>,
}

impl StoreConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| dirs::data_dir().map(|d| d.join("turbo-coder")))
            .unwrap_or_else(|| PathBuf::from(".turbo-coder"))
    }

    /// The database to open: `url` when set, else a SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir().join("turbo.db").display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, e.g. `info` or `turbo=debug`.
    pub log: String,
    /// Log lines as JSON (for the cluster) instead of text.
    pub json_logs: bool,
    /// OTLP gRPC endpoint for traces, e.g. `http://localhost:4317`; none = no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log: "warn".into(), json_logs: false, otlp_endpoint: None }
    }
}

/// Listen addresses of the services when started with `turbo-coder serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    pub gateway: String,
    pub orchestrator: String,
    pub agent_worker: String,
    pub knowledge: String,
    pub tool_runner: String,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            gateway: "127.0.0.1:8080".into(),
            orchestrator: "127.0.0.1:50051".into(),
            agent_worker: "127.0.0.1:50052".into(),
            knowledge: "127.0.0.1:50053".into(),
            tool_runner: "127.0.0.1:50054".into(),
        }
    }
}

/// The cluster: the orchestrator and one agent-worker service per role talking over NATS
/// JetStream. Without `nats_url` the orchestrator runs the agents in its own process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server with JetStream, e.g. `nats://nats:4222`. When set, the orchestrator sends
    /// agent work over NATS and agent workers serve it; agent workers need it.
    pub nats_url: Option<String>,
    /// Seconds a worker may hold a work item without a sign of progress before it is given to
    /// another replica (workers report progress every third of it while they work).
    pub ack_wait_s: u64,
    /// Deliveries of one work item (each crashed or stalled a worker) before it is dead-lettered.
    pub max_deliver: u32,
    /// Work items one agent worker carries out at once.
    pub worker_capacity: usize,
    /// How the agent workers and the orchestrator reach a tool-runner: `auto` (default),
    /// `local`, `grpc` or `queue` ([`ToolRunnerRoute`]).
    pub tool_runner: ToolRunnerRoute,
    /// The tool-runner service, e.g. `http://tool-runner:50054`. When set (and `tool_runner`
    /// is `auto` or `grpc`), the agent workers and the orchestrator run tools through it;
    /// without it each runs them in its own process on the shared data directory.
    pub tool_runner_url: Option<String>,
    /// The name of this tool-runner in the NATS job queue (`turbo.tools.jobs.runner.<id>`) and
    /// in the claims of the workspaces it holds. Letters, digits, `-` and `_`; default: the host
    /// name, which a Kubernetes StatefulSet keeps across restarts.
    pub tool_runner_id: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            ack_wait_s: 30,
            max_deliver: 5,
            worker_capacity: 1,
            tool_runner: ToolRunnerRoute::Auto,
            tool_runner_url: None,
            tool_runner_id: None,
        }
    }
}

/// How the orchestrator and the agent workers reach a tool-runner (`cluster.tool_runner`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolRunnerRoute {
    /// The service at `cluster.tool_runner_url` when it is set, else a runner in the process.
    #[default]
    Auto,
    /// A runner in the process, on the shared data directory.
    Local,
    /// The one tool-runner service at `cluster.tool_runner_url`, over gRPC.
    Grpc,
    /// The tool-runners' NATS job queue: each workspace's jobs go to the runner holding it
    /// (needs `cluster.nats_url`).
    Queue,
}

/// The gateway: the public HTTP door (REST under `/v1`) in front of the orchestrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The orchestrator's gRPC address the gateway forwards to.
    pub orchestrator_url: String,
    /// How bearer tokens are signed: `HS256` (with `jwt_secret`; `turbo-coder token` issues
    /// them) or `RS256` (by an identity provider whose public keys are in `jwks_file`).
    pub jwt_algorithm: JwtAlgorithm,
    /// The HS256 key that signs bearer tokens (at least 32 bytes); the gateway refuses to start
    /// without it. Prefer TURBO_CODER__GATEWAY__JWT_SECRET to a file.
    pub jwt_secret: Option<String>,
    /// RS256: a JWKS file (`{"keys": [{"kty": "RSA", "kid", "n", "e"}, ...]}`) with the identity
    /// provider's public keys; a token's `kid` picks its key.
    pub jwks_file: Option<PathBuf>,
    /// RS256: the identity provider's JWKS URL, fetched at start and again on key rotation
    /// (instead of `jwks_file`).
    pub jwks_url: Option<String>,
    /// The `iss` every token must carry.
    pub jwt_issuer: String,
    /// The `aud` every token must carry.
    pub jwt_audience: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests one user may make in an hour, across every gateway replica (a WebSocket
    /// message counts as one).
    pub rate_limit_per_hour: u64,
    /// Largest WebSocket message accepted, in bytes; a larger one closes the connection with
    /// code 1009.
    pub ws_max_message_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            orchestrator_url: "http://127.0.0.1:50051".into(),
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: None,
            jwks_file: None,
            jwks_url: None,
            jwt_issuer: "turbo-coder".into(),
            jwt_audience: "turbo-coder".into(),
            max_body_bytes: 1 << 20,
            rate_limit_per_hour: 1000,
            ws_max_message_bytes: 1 << 20,
        }
    }
}

/// The signature algorithm of the gateway's bearer tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    #[serde(rename = "HS256")]
    Hs256,
    #[serde(rename = "RS256")]
    Rs256,
}

/// Which embedding model turns chunks and queries into vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 run in this process from `model_dir` (model.safetensors + tokenizer.json).
    Minilm,
    /// A static model distilled from the same MiniLM files once (kept in `model_dir`): each
    /// text the weighted mean of its tokens' vectors. About a hundred times faster, ranks worse.
    #[serde(rename = "minilm-static")]
    MinilmStatic,
    /// An Ollama server's `POST /api/embed`.
    Ollama,
    /// An OpenAI-compatible server's `POST /v1/embeddings`.
    Openai,
}

/// The knowledge service: the LanceDB dataset of code and knowledge chunks, the embedding
/// model, and how much retrieved context agents get.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// Agents retrieve context from the knowledge service.
    pub enabled: bool,
    /// The LanceDB dataset: a directory, or an object-store URI when built with object-store
    /// support; default: `knowledge` in the store's data directory.
    pub dataset_uri: Option<String>,
    pub embedder: EmbedderKind,
    /// MiniLM model directory; default: `~/.cache/turbo-coder/models/all-MiniLM-L6-v2`, where
    /// `make setup` (deploy/scripts/setup.sh) puts it.
    pub model_dir: Option<PathBuf>,
    /// Model name for the Ollama and OpenAI embedders, e.g. `nomic-embed-text`.
    pub embed_model: String,
    /// Server of the Ollama and OpenAI embedders; default: the coder model's `base_url`.
    pub embed_url: Option<String>,
    /// Bearer token for the OpenAI-compatible embedder; never logged.
    pub embed_api_key: Option<String>,
    /// Texts embedded per model call.
    pub embed_batch: usize,
    /// Rows past which the vector column gets an ANN index; exact search below it.
    pub ann_threshold: usize,
    /// Files larger than this are skipped when indexing, bytes.
    pub max_file_bytes: u64,
    /// The knowledge service, e.g. `http://knowledge:50053`; when set, cluster processes
    /// reach it over gRPC; without it each opens the dataset itself.
    pub url: Option<String>,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dataset_uri: None,
            embedder: EmbedderKind::Minilm,
            model_dir: None,
            embed_model: "nomic-embed-text".into(),
            embed_url: None,
            embed_api_key: None,
            embed_batch: 64,
            ann_threshold: 50_000,
            max_file_bytes: 1024 * 1024,
            url: None,
        }
    }
}

impl KnowledgeConfig {
    pub fn dataset_uri(&self, store: &StoreConfig) -> String {
        self.dataset_uri.clone().unwrap_or_else(|| store.data_dir().join("knowledge").display().to_string())
    }

    /// The MiniLM model directory: `model_dir`, else `turbo-coder/models/all-MiniLM-L6-v2` in
    /// the user's cache directory (where `make setup` fetches it), else in the data directory.
    pub fn model_dir(&self, store: &StoreConfig) -> PathBuf {
        let models = dirs::cache_dir().map(|d| d.join("turbo-coder")).unwrap_or_else(|| store.data_dir());
        self.model_dir.clone().unwrap_or_else(|| models.join("models").join("all-MiniLM-L6-v2"))
    }
}

/// How tool processes are confined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// bubblewrap; where it cannot run, tools that run processes are refused.
    Bubblewrap,
    /// No OS confinement (only the workspace checks, scrubbed environment and timeouts): for
    /// hosts without user namespaces, and trusted work only.
    Unconfined,
}

/// The OS sandbox every tool process runs in (bubblewrap), and its bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Let tool processes reach the network (e.g. package installs); off: loopback only.
    pub network: bool,
    /// Memory of a call's whole process tree.
    pub memory_mb: u64,
    /// CPU seconds per process.
    pub cpu_s: u64,
    /// Processes and threads of a call at once.
    pub max_processes: u64,
    /// Largest file a tool process may write.
    pub max_file_mb: u64,
    /// Size of the sandbox's private /tmp.
    pub tmp_mb: u64,
    /// A call printing more than this on stdout or stderr is stopped.
    pub max_output_mb: u64,
    /// Host paths visible read-only inside, at the same place, besides /usr, /etc and /opt
    /// (e.g. a toolchain in your home directory).
    pub read_only_paths: Vec<PathBuf>,
    /// PATH inside the sandbox.
    pub path: String,
    /// The bubblewrap program: a name on PATH, or a path.
    pub bwrap: String,
    /// Sandboxes started ahead of their call (one per workspace, the next call's), so a call
    /// does not wait for its namespaces to be made; 0: each call starts its own when it comes.
    pub warm: usize,
    /// A sandbox started ahead and unused for this long is stopped.
    pub warm_ttl_s: u64,
    /// The program that runs the file tools inside the sandbox (turbo-tool-exec); unset: the
    /// one beside this binary.
    pub tool_exec: Option<PathBuf>,
    /// Credentials of the cloud CLIs, per provider (`kubernetes`, `aws`, `gcp`, `azure`):
    /// given to that provider's `cloud_services` calls only, never to any other call.
    pub cloud: BTreeMap<String, CloudCredentials>,
    /// The registry proxy: without `network`, the calls of its `tools` reach its `allow`ed
    /// hosts, and nothing else.
    pub proxy: ProxyConfig,
}

/// `[sandbox.proxy]`: which tools' calls may reach which hosts (HTTP and HTTPS, through a
/// proxy in the tool-runner), while their sandbox has no network of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Hosts (`pypi.org`), subdomains (`*.pythonhosted.org`) or `host:port`; without a port,
    /// 443 and 80. Empty (the default): no proxy, those calls have no network.
    pub allow: Vec<String>,
    /// Tools whose calls use it: any of `package_manager` (the default), `git_ops`,
    /// `cloud_services`, `shell_run`, `python_run`.
    pub tools: Vec<String>,
}

/// The tools that may use the registry proxy: those that run processes.
pub const PROXY_TOOLS: &[&str] = &["package_manager", "git_ops", "cloud_services", "shell_run", "python_run"];

impl Default for ProxyConfig {
    fn default() -> Self {
        Self { allow: Vec::new(), tools: vec!["package_manager".into()] }
    }
}

/// What one provider's CLI is given: its variables (e.g. `KUBECONFIG`, `AWS_PROFILE`) and its
/// credential files, bound read-only at their own paths in that call's sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudCredentials {
    pub env: BTreeMap<String, String>,
    pub files: Vec<PathBuf>,
}

/// The providers of `cloud_services`, the keys of `[sandbox.cloud]`.
pub const CLOUD_PROVIDERS: &[&str] = &["kubernetes", "aws", "gcp", "azure"];

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Bubblewrap,
            network: false,
            memory_mb: 2048,
            cpu_s: 600,
            max_processes: 256,
            max_file_mb: 1024,
            tmp_mb: 256,
            max_output_mb: 64,
            read_only_paths: Vec::new(),
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            bwrap: "bwrap".into(),
            warm: 4,
            warm_ttl_s: 60,
            tool_exec: None,
            cloud: BTreeMap::new(),
            proxy: ProxyConfig::default(),
        }
    }
}

/// What happens to a tool call of one risk level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalAction {
    /// Runs at once.
    Auto,
    /// Waits for a person's approve or deny (or the timeout, which denies).
    Ask,
    /// Never runs; the agent is told the policy refused it.
    Deny,
}

/// Which tool calls need a person's approval, by the call's risk level (safe, low, medium,
/// high, critical), with overrides per project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    pub safe: ApprovalAction,
    pub low: ApprovalAction,
    pub medium: ApprovalAction,
    pub high: ApprovalAction,
    pub critical: ApprovalAction,
    /// How long a call waits for a decision before it is denied.
    pub timeout_s: u64,
    /// Per project, keyed by the project's id (UUID): the levels to decide differently.
    pub projects: BTreeMap<String, ApprovalOverride>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            safe: ApprovalAction::Auto,
            low: ApprovalAction::Auto,
            medium: ApprovalAction::Auto,
            high: ApprovalAction::Auto,
            critical: ApprovalAction::Ask,
            timeout_s: 900,
            projects: BTreeMap::new(),
        }
    }
}

/// A project's departures from the `[approval]` defaults; unset levels keep them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe: Option<ApprovalAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<ApprovalAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<ApprovalAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<ApprovalAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<ApprovalAction>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            models: Models {
                planner: ModelSettings::new(Provider::Ollama, DEFAULT_TURBO_HOST, DEFAULT_PLANNER_MODEL),
                coder: ModelSettings::new(Provider::Ollama, DEFAULT_LOCAL_HOST, DEFAULT_CODER_MODEL),
                tester: None,
                reviewer: None,
            },
            run: RunConfig::default(),
            store: StoreConfig::default(),
            telemetry: TelemetryConfig::default(),
            services: ServicesConfig::default(),
            cluster: ClusterConfig::default(),
            knowledge: KnowledgeConfig::default(),
            sandbox: SandboxConfig::default(),
            approval: ApprovalConfig::default(),
            gateway: GatewayConfig::default(),
        }
    }
}

/// The default config file: `$XDG_CONFIG_HOME/turbo-coder/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("turbo-coder").join("config.toml"))
}

impl Config {
    /// Loads defaults < `file` (must exist when given) < legacy env names < `TURBO_CODER__*` env,
    /// then validates. `env` is the process environment (or a test's).
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config> {
        let defaults = config::Config::try_from(&Config::default()).map_err(|e| Error::Parse(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::File { path: path.to_path_buf(), reason: e.to_string() })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        // Overrides would beat every source; the legacy names must rank below TURBO_CODER__*,
        // so they go in as a source of their own.
        let mut legacy = config::Config::builder();
        for (key, value) in legacy_overrides(env)? {
            legacy = legacy.set_override(key, value).map_err(|e| Error::Parse(e.to_string()))?;
        }
        builder = builder.add_source(legacy.build().map_err(|e| Error::Parse(e.to_string()))?);
        let prefixed: config::Map<String, String> =
            env.iter().filter(|(k, _)| k.starts_with("TURBO_CODER__")).map(|(k, v)| (k.clone(), v.clone())).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TURBO_CODER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(prefixed)),
        );
        let merged = builder.build().map_err(|e| Error::Parse(e.to_string()))?;
        let config: Config = merged.try_deserialize().map_err(|e| {
            let where_ = file.map(|p| format!(" (file {})", p.display())).unwrap_or_default();
            Error::Parse(format!("{e}{where_}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: URLs, ranges, non-empty names.
    pub fn validate(&self) -> Result<()> {
        for tool in &self.sandbox.proxy.tools {
            if !PROXY_TOOLS.contains(&tool.as_str()) {
                return Err(invalid(
                    "sandbox.proxy.tools",
                    format!("'{tool}' cannot use the proxy: use any of {}", PROXY_TOOLS.join(", ")),
                ));
            }
        }
        for host in &self.sandbox.proxy.allow {
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host.as_str(), None),
            };
            let name = name.strip_prefix("*.").unwrap_or(name);
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid_name || port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return Err(invalid(
                    "sandbox.proxy.allow",
                    format!("'{host}' is not a host, *.domain or host:port (e.g. pypi.org, *.pythonhosted.org)"),
                ));
            }
        }
        for (provider, credentials) in &self.sandbox.cloud {
            if !CLOUD_PROVIDERS.contains(&provider.as_str()) {
                return Err(invalid(
                    format!("sandbox.cloud.{provider}"),
                    format!("is not a provider: use one of {}", CLOUD_PROVIDERS.join(", ")),
                ));
            }
            for file in &credentials.files {
                if !file.is_absolute() {
                    return Err(invalid(
                        format!("sandbox.cloud.{provider}.files"),
                        format!("'{}' must be an absolute path", file.display()),
                    ));
                }
            }
            for name in credentials.env.keys() {
                let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(invalid(
                        format!("sandbox.cloud.{provider}.env"),
                        format!("'{name}' is not a variable name"),
                    ));
                }
            }
        }
        let roles = [
            ("models.planner", Some(&self.models.planner)),
            ("models.coder", Some(&self.models.coder)),
            ("models.tester", self.models.tester.as_ref()),
            ("models.reviewer", self.models.reviewer.as_ref()),
        ];
        for (key, settings) in roles {
            let Some(s) = settings else { continue };
            if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://")) {
                return Err(invalid(
                    format!("{key}.base_url"),
                    format!("'{}' must start with http:// or https://", s.base_url),
                ));
            }
            if s.model.trim().is_empty() {
                return Err(invalid(format!("{key}.model"), "must name a model, e.g. qwen2.5-coder:7b"));
            }
            if s.request_timeout_s == 0 {
                return Err(invalid(format!("{key}.request_timeout_s"), "must be at least 1 second"));
            }
            if s.num_ctx == Some(0) || s.max_context < 256 {
                return Err(invalid(format!("{key}.max_context"), "context lengths must be at least 256 tokens"));
            }
        }
        let r = &self.run;
        for (key, value, min) in [
            ("run.max_steps", u64::from(r.max_steps), 1),
            ("run.task_timeout_s", r.task_timeout_s, 1),
            ("run.plan_attempts", u64::from(r.plan_attempts), 1),
            ("run.tool_timeout_s", r.tool_timeout_s, 1),
            ("run.tool_output_cap", r.tool_output_cap as u64, 256),
            ("run.agents_per_role", r.agents_per_role as u64, 1),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        let c = &self.cluster;
        if let Some(url) = &c.nats_url {
            let schemes = ["nats://", "tls://", "ws://", "wss://"];
            if !schemes.iter().any(|s| url.starts_with(s)) || url.split_once("://").is_some_and(|(_, h)| h.is_empty()) {
                return Err(invalid(
                    "cluster.nats_url",
                    format!("'{url}' is not a NATS URL: use nats://HOST:PORT (or tls://, ws://, wss://)"),
                ));
            }
        }
        if let Some(url) = &c.tool_runner_url {
            let host = url.strip_prefix("http://").unwrap_or_default();
            if !url.starts_with("http://")
                || host.is_empty()
                || host.starts_with('/')
                || url.contains(char::is_whitespace)
            {
                return Err(invalid(
                    "cluster.tool_runner_url",
                    format!("'{url}' is not a tool-runner URL: use http://HOST:PORT (TLS is not supported yet)"),
                ));
            }
        }
        let g = &self.gateway;
        if let Some(secret) = &g.jwt_secret
            && secret.len() < 32
        {
            return Err(invalid(
                "gateway.jwt_secret",
                format!("is {} bytes: use at least 32 random bytes (e.g. `openssl rand -hex 32`)", secret.len()),
            ));
        }
        if !g.orchestrator_url.starts_with("http://") || g.orchestrator_url.len() <= "http://".len() {
            return Err(invalid(
                "gateway.orchestrator_url",
                format!("'{}' is not an orchestrator URL: use http://HOST:PORT", g.orchestrator_url),
            ));
        }
        if g.rate_limit_per_hour == 0 {
            return Err(invalid("gateway.rate_limit_per_hour", "must be at least 1"));
        }
        if g.max_body_bytes < 1024 {
            return Err(invalid("gateway.max_body_bytes", format!("must be at least 1024, got {}", g.max_body_bytes)));
        }
        match c.tool_runner {
            ToolRunnerRoute::Grpc if c.tool_runner_url.is_none() => {
                return Err(invalid(
                    "cluster.tool_runner",
                    "is grpc but cluster.tool_runner_url is not set: set it to http://HOST:PORT",
                ));
            }
            ToolRunnerRoute::Queue if c.nats_url.is_none() => {
                return Err(invalid(
                    "cluster.tool_runner",
                    "is queue but cluster.nats_url is not set: the job queue is on NATS",
                ));
            }
            _ => {}
        }
        if let Some(id) = &c.tool_runner_id
            && (id.is_empty()
                || id.len() > 64
                || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
        {
            return Err(invalid(
                "cluster.tool_runner_id",
                format!("'{id}' is not a runner name: use 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        for (key, value, min) in [
            ("cluster.ack_wait_s", c.ack_wait_s, 1),
            ("cluster.max_deliver", u64::from(c.max_deliver), 1),
            ("cluster.worker_capacity", c.worker_capacity as u64, 1),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        let sb = &self.sandbox;
        for (key, value, min) in [
            ("sandbox.memory_mb", sb.memory_mb, 16),
            ("sandbox.cpu_s", sb.cpu_s, 1),
            ("sandbox.max_processes", sb.max_processes, 8),
            ("sandbox.max_file_mb", sb.max_file_mb, 1),
            ("sandbox.tmp_mb", sb.tmp_mb, 1),
            ("sandbox.max_output_mb", sb.max_output_mb, 1),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        if let Some(bad) = sb.read_only_paths.iter().find(|p| !p.is_absolute()) {
            return Err(invalid("sandbox.read_only_paths", format!("'{}' must be an absolute path", bad.display())));
        }
        if sb.path.split(':').any(|d| !d.starts_with('/')) {
            return Err(invalid(
                "sandbox.path",
                format!("'{}' must list absolute directories separated by ':'", sb.path),
            ));
        }
        let a = &self.approval;
        if a.timeout_s == 0 {
            return Err(invalid("approval.timeout_s", "must be at least 1 second"));
        }
        if let Some(bad) = a.projects.keys().find(|k| uuid::Uuid::parse_str(k).is_err()) {
            return Err(invalid(
                format!("approval.projects.{bad}"),
                "projects are keyed by their id (a UUID, as `turbo-coder project list` shows it)",
            ));
        }
        let k = &self.knowledge;
        for (key, url) in [("knowledge.embed_url", &k.embed_url), ("knowledge.url", &k.url)] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(key, format!("'{url}' must start with http:// or https://")));
            }
        }
        if k.url.as_deref().is_some_and(|u| u.starts_with("https://")) {
            return Err(invalid("knowledge.url", "TLS is not supported yet: use http://HOST:PORT"));
        }
        if matches!(k.embedder, EmbedderKind::Ollama | EmbedderKind::Openai) && k.embed_model.trim().is_empty() {
            return Err(invalid("knowledge.embed_model", "must name an embedding model, e.g. nomic-embed-text"));
        }
        for (key, value, min) in [
            ("knowledge.embed_batch", k.embed_batch as u64, 1),
            ("knowledge.ann_threshold", k.ann_threshold as u64, 256),
            ("knowledge.max_file_bytes", k.max_file_bytes, 1024),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        Ok(())
    }

    /// The config as TOML with secrets replaced, for `config show`.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for s in [
            Some(&mut c.models.planner),
            Some(&mut c.models.coder),
            c.models.tester.as_mut(),
            c.models.reviewer.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if s.api_key.is_some() {
                s.api_key = Some("<redacted>".into());
            }
        }
        if c.knowledge.embed_api_key.is_some() {
            c.knowledge.embed_api_key = Some("<redacted>".into());
        }
        if c.gateway.jwt_secret.is_some() {
            c.gateway.jwt_secret = Some("<redacted>".into());
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::Invalid { key: key.into(), problem: problem.into() }
}

/// Maps the original tool's variables onto config keys.
fn legacy_overrides(env: &BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let get = |k: &str| env.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    for (var, key) in [
        ("OLLAMA_API_KEY", "models.planner.api_key"),
        ("TURBO_HOST", "models.planner.base_url"),
        ("PLANNER_MODEL", "models.planner.model"),
        ("CODER_MODEL", "models.coder.model"),
        ("OLLAMA_LOCAL", "models.coder.base_url"),
        ("MAX_STEPS", "run.max_steps"),
    ] {
        if let Some(v) = get(var) {
            if key == "run.max_steps" && v.parse::<u32>().is_err() {
                return Err(invalid("MAX_STEPS", format!("'{v}' is not a whole number")));
            }
            out.push((key.to_string(), v));
        }
    }
    if let Some(v) = get("REQUEST_TIMEOUT_S") {
        // The original accepted fractional seconds; round up so "0.5" is not a zero timeout.
        let secs: f64 =
            v.parse().map_err(|_| invalid("REQUEST_TIMEOUT_S", format!("'{v}' is not a number of seconds")))?;
        if secs.is_nan() || secs <= 0.0 {
            return Err(invalid("REQUEST_TIMEOUT_S", format!("must be positive, got {v}")));
        }
        let secs = (secs.ceil() as u64).to_string();
        for role in ["planner", "coder"] {
            out.push((format!("models.{role}.request_timeout_s"), secs.clone()));
        }
    }
    if let Some(v) = get("DRY_RUN") {
        let b = match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => "true",
            "0" | "false" | "no" | "off" => "false",
            _ => return Err(invalid("DRY_RUN", format!("'{v}' is not a boolean: use 1/0, true/false"))),
        };
        out.push(("run.dry_run".to_string(), b.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_send_the_planner_to_the_turbo_host_and_the_coder_local() {
        let c = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(c.models.planner.base_url, DEFAULT_TURBO_HOST);
        assert_eq!(c.models.coder.base_url, DEFAULT_LOCAL_HOST);
        assert!(c.run.dry_run);
        assert_eq!(c.models.tester(), &c.models.coder);
    }

    #[test]
    fn legacy_variables_map_to_their_keys() {
        let c = Config::load(
            None,
            &env(&[
                ("TURBO_HOST", "https://turbo.example"),
                ("OLLAMA_API_KEY", "k-123"),
                ("PLANNER_MODEL", "big:1"),
                ("CODER_MODEL", "small:2"),
                ("OLLAMA_LOCAL", "http://127.0.0.1:9"),
                ("MAX_STEPS", "7"),
                ("REQUEST_TIMEOUT_S", "2.5"),
                ("DRY_RUN", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.models.planner.base_url, "https://turbo.example");
        assert_eq!(c.models.planner.api_key.as_deref(), Some("k-123"));
        assert_eq!(c.models.coder.api_key, None, "the turbo key must not leak to the local host");
        assert_eq!(c.models.planner.model, "big:1");
        assert_eq!(c.models.coder.model, "small:2");
        assert_eq!(c.models.coder.base_url, "http://127.0.0.1:9");
        assert_eq!(c.run.max_steps, 7);
        assert_eq!(c.models.planner.request_timeout_s, 3);
        assert_eq!(c.models.coder.request_timeout_s, 3);
        assert!(!c.run.dry_run);
    }

    #[test]
    fn layers_apply_in_order_file_then_legacy_then_prefixed_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[run]\nmax_steps = 3\ntest_rounds = 9\n[models.coder]\nprovider = \"openai\"\nbase_url = \"http://file\"\nmodel = \"from-file\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &env(&[("MAX_STEPS", "4"), ("TURBO_CODER__RUN__MAX_STEPS", "5")])).unwrap();
        assert_eq!(c.run.max_steps, 5, "TURBO_CODER__ beats legacy beats file");
        assert_eq!(c.run.test_rounds, 9);
        assert_eq!(c.models.coder.provider, Provider::Openai);
        assert_eq!(c.models.coder.model, "from-file");
        let c = Config::load(Some(&path), &env(&[("MAX_STEPS", "4")])).unwrap();
        assert_eq!(c.run.max_steps, 4);
        let c = Config::load(Some(&path), &BTreeMap::new()).unwrap();
        assert_eq!(c.run.max_steps, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[run]\nmax_stepz = 3\n").unwrap();
        let err = Config::load(Some(&path), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("max_stepz"), "{err}");

        let err = Config::load(None, &env(&[("MAX_STEPS", "many")])).unwrap_err().to_string();
        assert!(err.contains("MAX_STEPS") && err.contains("many"), "{err}");
        let err = Config::load(None, &env(&[("DRY_RUN", "maybe")])).unwrap_err().to_string();
        assert!(err.contains("DRY_RUN"), "{err}");
        let err = Config::load(None, &env(&[("OLLAMA_LOCAL", "localhost:11434")])).unwrap_err().to_string();
        assert!(err.contains("models.coder.base_url"), "{err}");
        let err = Config::load(None, &env(&[("TURBO_CODER__RUN__MAX_STEPS", "0")])).unwrap_err().to_string();
        assert!(err.contains("run.max_steps"), "{err}");
        let err = Config::load(Some(Path::new("/nonexistent/turbo.toml")), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/turbo.toml"), "{err}");
    }

    /// The configuration of a file holding `text`, without environment.
    fn from_toml(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &BTreeMap::new())
    }

    #[test]
    fn embedders_are_named_in_kebab_case_and_servers_need_a_model() {
        let c = from_toml("[knowledge]\nembedder = \"minilm-static\"\nembed_model = \"\"\n").unwrap();
        assert_eq!(c.knowledge.embedder, EmbedderKind::MinilmStatic, "the in-process models need no model name");
        let err = from_toml("[knowledge]\nembedder = \"ollama\"\nembed_model = \" \"\n").unwrap_err().to_string();
        assert!(err.contains("knowledge.embed_model"), "{err}");
        let err = from_toml("[knowledge]\nembedder = \"minilm_static\"\n").unwrap_err().to_string();
        assert!(err.contains("minilm_static"), "{err}");
    }

    #[test]
    fn cloud_credentials_are_per_known_provider_with_absolute_files() {
        let load = from_toml;
        let c = load(
            "[sandbox.cloud.kubernetes]\nenv = { KUBECONFIG = \"/srv/kube/config\" }\nfiles = [\"/srv/kube/config\"]\n",
        )
        .unwrap();
        let kube = &c.sandbox.cloud["kubernetes"];
        assert_eq!((kube.env["KUBECONFIG"].as_str(), kube.files.len()), ("/srv/kube/config", 1));
        let err = load("[sandbox.cloud.kubernetis]\nfiles = [\"/srv/k\"]\n").unwrap_err().to_string();
        assert!(err.contains("sandbox.cloud.kubernetis") && err.contains("kubernetes, aws, gcp, azure"), "{err}");
        let err = load("[sandbox.cloud.aws]\nfiles = [\"aws/credentials\"]\n").unwrap_err().to_string();
        assert!(err.contains("sandbox.cloud.aws.files") && err.contains("absolute"), "{err}");
        let err = load("[sandbox.cloud.gcp]\nenv = { \"BAD-NAME\" = \"x\" }\n").unwrap_err().to_string();
        assert!(err.contains("BAD-NAME"), "{err}");
    }

    #[test]
    fn the_registry_proxy_names_hosts_and_tools_that_run_processes() {
        let load = from_toml;
        let c = load("").unwrap();
        assert!(c.sandbox.proxy.allow.is_empty(), "no proxy unless asked for");
        assert_eq!(c.sandbox.proxy.tools, ["package_manager"]);
        let c =
            load("[sandbox.proxy]\nallow = [\"pypi.org\", \"*.pythonhosted.org\", \"registry.local:8080\"]\n").unwrap();
        assert_eq!(c.sandbox.proxy.allow.len(), 3);
        let err = load("[sandbox.proxy]\nallow = [\"https://pypi.org\"]\n").unwrap_err().to_string();
        assert!(err.contains("sandbox.proxy.allow") && err.contains("https://pypi.org"), "{err}");
        let err = load("[sandbox.proxy]\nallow = [\"pypi.org:http\"]\n").unwrap_err().to_string();
        assert!(err.contains("host:port"), "{err}");
        let err = load("[sandbox.proxy]\ntools = [\"fs_read\"]\n").unwrap_err().to_string();
        assert!(err.contains("sandbox.proxy.tools") && err.contains("package_manager, git_ops"), "{err}");
    }

    #[test]
    fn approvals_ask_for_critical_calls_by_default_and_projects_override_levels() {
        let c = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!((c.approval.high, c.approval.critical), (ApprovalAction::Auto, ApprovalAction::Ask));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let id = "0190c4c2-7d2e-7c3a-9a55-5b0f3e6f1a20";
        std::fs::write(
            &path,
            format!("[approval]\nhigh = \"ask\"\ntimeout_s = 30\n[approval.projects.\"{id}\"]\nhigh = \"deny\"\n"),
        )
        .unwrap();
        let c = Config::load(Some(&path), &BTreeMap::new()).unwrap();
        assert_eq!((c.approval.high, c.approval.timeout_s), (ApprovalAction::Ask, 30));
        assert_eq!(c.approval.projects[id].high, Some(ApprovalAction::Deny));
        assert_eq!(c.approval.projects[id].low, None);

        std::fs::write(&path, "[approval.projects.web-app]\nhigh = \"deny\"\n").unwrap();
        let err = Config::load(Some(&path), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("approval.projects.web-app") && err.contains("UUID"), "{err}");
        std::fs::write(&path, "[approval]\nhigh = \"maybe\"\n").unwrap();
        let err = Config::load(Some(&path), &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn redacted_toml_hides_keys_and_loads_back() {
        let c = Config::load(None, &env(&[("OLLAMA_API_KEY", "secret-key")])).unwrap();
        let text = c.to_redacted_toml();
        assert!(!text.contains("secret-key"));
        assert!(text.contains("<redacted>"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let back = Config::load(Some(&path), &BTreeMap::new()).unwrap();
        assert_eq!(back.run, c.run);
        let secret = "0123456789abcdef0123456789abcdef-gateway";
        let c = Config::load(None, &env(&[("TURBO_CODER__GATEWAY__JWT_SECRET", secret)])).unwrap();
        assert_eq!(c.gateway.jwt_secret.as_deref(), Some(secret));
        assert!(!c.to_redacted_toml().contains(secret));
    }

    #[test]
    fn gateway_settings_are_checked() {
        for (var, value, key) in [
            ("TURBO_CODER__GATEWAY__JWT_SECRET", "short", "gateway.jwt_secret"),
            ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", "orchestrator:50051", "gateway.orchestrator_url"),
            ("TURBO_CODER__GATEWAY__MAX_BODY_BYTES", "10", "gateway.max_body_bytes"),
        ] {
            let err = Config::load(None, &env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn the_cluster_section_defaults_off_and_env_turns_it_on() {
        let c = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(c.cluster, ClusterConfig::default());
        assert_eq!(c.cluster.nats_url, None);
        let c = Config::load(
            None,
            &env(&[
                ("TURBO_CODER__CLUSTER__NATS_URL", "nats://127.0.0.1:4222"),
                ("TURBO_CODER__CLUSTER__ACK_WAIT_S", "2"),
                ("TURBO_CODER__CLUSTER__WORKER_CAPACITY", "3"),
                ("TURBO_CODER__CLUSTER__TOOL_RUNNER_URL", "http://127.0.0.1:50054"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cluster.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(c.cluster.tool_runner_url.as_deref(), Some("http://127.0.0.1:50054"));
        assert_eq!(c.cluster.ack_wait_s, 2);
        assert_eq!(c.cluster.worker_capacity, 3);
        assert_eq!(c.cluster.max_deliver, 5);
        assert_eq!(c.cluster.tool_runner, ToolRunnerRoute::Auto);
        let c = Config::load(
            None,
            &env(&[
                ("TURBO_CODER__CLUSTER__NATS_URL", "nats://127.0.0.1:4222"),
                ("TURBO_CODER__CLUSTER__TOOL_RUNNER", "queue"),
                ("TURBO_CODER__CLUSTER__TOOL_RUNNER_ID", "tool-runner-0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cluster.tool_runner, ToolRunnerRoute::Queue);
        assert_eq!(c.cluster.tool_runner_id.as_deref(), Some("tool-runner-0"));
    }

    #[test]
    fn bad_cluster_settings_are_named() {
        for (var, value, key) in [
            ("TURBO_CODER__CLUSTER__NATS_URL", "http://nats:4222", "cluster.nats_url"),
            ("TURBO_CODER__CLUSTER__NATS_URL", "nats://", "cluster.nats_url"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER_URL", "tool-runner:50054", "cluster.tool_runner_url"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER_URL", "https://tool-runner:50054", "cluster.tool_runner_url"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER_URL", "http://", "cluster.tool_runner_url"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER", "grpc", "cluster.tool_runner"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER", "queue", "cluster.tool_runner"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER", "carrier-pigeon", "cluster.tool_runner"),
            ("TURBO_CODER__CLUSTER__TOOL_RUNNER_ID", "runner.1", "cluster.tool_runner_id"),
            ("TURBO_CODER__CLUSTER__ACK_WAIT_S", "0", "cluster.ack_wait_s"),
            ("TURBO_CODER__CLUSTER__MAX_DELIVER", "0", "cluster.max_deliver"),
            ("TURBO_CODER__CLUSTER__WORKER_CAPACITY", "0", "cluster.worker_capacity"),
        ] {
            let err = Config::load(None, &env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn the_example_files_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path), &BTreeMap::new()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example config in {}", root.display());
    }
}
