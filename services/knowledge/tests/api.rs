//! The knowledge service's network API, black box: [`turbo_knowledge::serve`] on
//! `127.0.0.1:0` over an in-memory test double of [`Knowledge`], reached through
//! [`RemoteKnowledge`] exactly as agents reach it, through raw gRPC requests for what other
//! clients see, and through NATS request-reply against a real `nats-server` (one per test), as
//! `nats req` and the Python client `nats-py` (tests/python/test_knowledge_nats.py) send them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::DateTime;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use turbo_bus::async_nats;
use turbo_bus::subjects;
use turbo_core::knowledge::{
    ContextRequest, IndexReport, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeErrorKind,
    KnowledgeStats, RetrievedContext, SearchFilter, SearchHit, SearchMode, SearchRequest, SkippedFile,
};
use turbo_core::project::{Framework, Language};
use turbo_proto::RemoteKnowledge;
use turbo_proto::knowledge::v1 as pb;
use turbo_proto::knowledge::v1::knowledge_service_client::KnowledgeServiceClient;
use turbo_testkit::NatsServer;

/// Longest any awaited step may take before the test fails instead of hanging. Not a timing
/// assertion: a healthy run is done far sooner.
const PATIENCE: Duration = Duration::from_secs(30);

const ALL_KINDS: [KnowledgeErrorKind; 5] = [
    KnowledgeErrorKind::InvalidArgument,
    KnowledgeErrorKind::FailedPrecondition,
    KnowledgeErrorKind::NotFound,
    KnowledgeErrorKind::Unavailable,
    KnowledgeErrorKind::Internal,
];

// ---------------------------------------------------------------------------------------------
// Test double

/// A call the double received, with everything it was given.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Index(IndexRequest),
    Add(Box<KnowledgeChunk>),
    Search(SearchRequest),
    Delete(String),
    Stats(Option<String>),
    Context(ContextRequest),
    Outcome(Vec<String>, bool),
}

/// TEST DOUBLE of a knowledge base: records each call, answers with the fixed values below
/// (every field set), or fails every call with the error set by [`Double::fail_with`]. A
/// search for [`PANIC_QUERY`] panics, as a broken implementation might.
#[derive(Default)]
struct Double {
    calls: Mutex<Vec<Call>>,
    failing: Mutex<Option<KnowledgeError>>,
    /// The trace each search was served in, as the handler saw it.
    traces: Mutex<Vec<TraceId>>,
}

const PANIC_QUERY: &str = "panic in the double";

impl Double {
    fn answer(&self, call: Call) -> Result<(), KnowledgeError> {
        self.calls.lock().unwrap().push(call);
        match self.failing.lock().unwrap().clone() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn fail_with(&self, err: Option<KnowledgeError>) {
        *self.failing.lock().unwrap() = err;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn last_call(&self) -> Call {
        self.calls().pop().expect("the double was called")
    }
}

#[async_trait::async_trait]
impl Knowledge for Double {
    async fn index_workspace(&self, req: IndexRequest) -> Result<IndexReport, KnowledgeError> {
        self.answer(Call::Index(req))?;
        Ok(report())
    }

    async fn add_chunk(&self, chunk: KnowledgeChunk) -> Result<String, KnowledgeError> {
        let id = format!("{}-stored", chunk.id);
        self.answer(Call::Add(Box::new(chunk)))?;
        Ok(id)
    }

    async fn search(&self, req: SearchRequest) -> Result<Vec<SearchHit>, KnowledgeError> {
        let trace = tracing::Span::current().context().span().span_context().trace_id();
        self.traces.lock().unwrap().push(trace);
        assert_ne!(req.query, PANIC_QUERY, "the double panics on request");
        self.answer(Call::Search(req))?;
        Ok(hits())
    }

    async fn delete_chunk(&self, id: &str) -> Result<bool, KnowledgeError> {
        self.answer(Call::Delete(id.to_string()))?;
        Ok(id == "k1")
    }

    async fn stats(&self, project_id: Option<&str>) -> Result<KnowledgeStats, KnowledgeError> {
        self.answer(Call::Stats(project_id.map(str::to_string)))?;
        Ok(stats())
    }

    async fn build_context(&self, req: ContextRequest) -> Result<RetrievedContext, KnowledgeError> {
        self.answer(Call::Context(req))?;
        Ok(context())
    }

    async fn record_outcome(&self, chunk_ids: &[String], success: bool) -> Result<(), KnowledgeError> {
        self.answer(Call::Outcome(chunk_ids.to_vec(), success))
    }
}

fn hits() -> Vec<SearchHit> {
    vec![
        SearchHit {
            id: "h1".into(),
            project_id: "p1".into(),
            path: "src/config.rs".into(),
            start_line: 10,
            end_line: 24,
            language: "rust".into(),
            chunk_type: "method".into(),
            symbol: "impl Config > load".into(),
            content: "pub fn load(path: &Path) -> Result<Config> {\n    todo()\n}\n".into(),
            score: 0.75,
            usage_count: 3,
            success_rate: Some(0.625),
        },
        SearchHit {
            id: "h2".into(),
            project_id: String::new(),
            path: String::new(),
            start_line: 1,
            end_line: 1,
            language: "python".into(),
            chunk_type: "pattern".into(),
            symbol: "retry with backoff".into(),
            content: "Retry transient errors with jittered backoff.".into(),
            score: 0.5,
            usage_count: 0,
            success_rate: None,
        },
    ]
}

fn report() -> IndexReport {
    IndexReport {
        files_seen: 42,
        files_changed: 5,
        files_removed: 2,
        files_skipped: vec![
            SkippedFile { path: "logo.png".into(), reason: "binary".into() },
            SkippedFile { path: "dist/app.min.js".into(), reason: "minified or generated".into() },
        ],
        chunks_added: 17,
        chunks_removed: 9,
        chunks_embedded: 17,
        version: 8,
        duration_ms: 1_250,
    }
}

fn stats() -> KnowledgeStats {
    KnowledgeStats {
        chunks: 1_234,
        files: 56,
        projects: 3,
        embedding_model: "all-MiniLM-L6-v2".into(),
        dimension: 384,
        version: 8,
        ann_index: true,
    }
}

fn context() -> RetrievedContext {
    RetrievedContext {
        text: "<retrieved untrusted=\"true\" source=\"src/config.rs:10-24\">...</retrieved>".into(),
        chunk_ids: vec!["h1".into(), "h3".into()],
        sources: vec!["src/config.rs:10-24".into(), "README.md:1-12".into()],
        excerpts: vec!["pub struct Config {".into(), "# Settings".into()],
    }
}

fn chunk() -> KnowledgeChunk {
    let created = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    KnowledgeChunk {
        id: "k1".into(),
        title: "Retry with backoff".into(),
        content: "Retry transient errors with jittered exponential backoff.".into(),
        chunk_type: "pattern".into(),
        category: "resilience".into(),
        subcategory: Some("retries".into()),
        language: Some(Language::Rust),
        framework: Some(Framework::ActixWeb),
        keywords: vec!["retry".into(), "backoff".into()],
        tags: vec!["errors".into()],
        source: "docs/patterns.md".into(),
        source_url: Some("https://example.com/patterns".into()),
        author: Some("ops".into()),
        quality_score: Some(0.875),
        usage_count: 4,
        success_rate: Some(0.5),
        embedding: Some(vec![0.25, -0.5, 1.0]),
        embedding_model: Some("all-MiniLM-L6-v2".into()),
        created_at: created,
        updated_at: DateTime::from_timestamp(1_700_000_100, 5).unwrap(),
        last_used: Some(DateTime::from_timestamp(1_700_000_200, 0).unwrap()),
    }
}

fn search_request() -> SearchRequest {
    SearchRequest {
        query: "where is the config loaded".into(),
        limit: 7,
        filter: SearchFilter {
            project_id: Some("p1".into()),
            languages: vec!["rust".into(), "markdown".into()],
            path_prefix: Some("src/".into()),
            chunk_types: vec!["method".into(), "function".into()],
        },
        mode: SearchMode::Text,
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// [`turbo_knowledge::serve`] over a [`Double`] on a free port; stopped on drop.
struct Served {
    url: String,
    double: Arc<Double>,
    shutdown: CancellationToken,
    served: Option<JoinHandle<turbo_knowledge::Result<()>>>,
}

impl Served {
    async fn start() -> Served {
        Served::start_with(turbo_config::Config::default()).await
    }

    async fn start_with(config: turbo_config::Config) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let double = Arc::new(Double::default());
        let shutdown = CancellationToken::new();
        let (knowledge, token) = (double.clone() as Arc<dyn Knowledge>, shutdown.clone());
        let served = tokio::spawn(async move { turbo_knowledge::serve(knowledge, &config, listener, token).await });
        Served { url, double, shutdown, served: Some(served) }
    }

    /// Served with the NATS subjects on `nats`, once they answer.
    async fn start_on_nats(nats: &NatsServer) -> (Served, async_nats::Client) {
        let mut config = turbo_config::Config::default();
        config.cluster.nats_url = Some(nats.url());
        let served = Served::start_with(config).await;
        let client = async_nats::connect(nats.url()).await.expect("the test's nats client connects");
        eventually("the knowledge subjects to answer", || async {
            client.request(subjects::KNOWLEDGE_STATS, "".into()).await.ok()
        })
        .await;
        (served, client)
    }

    fn remote(&self) -> RemoteKnowledge {
        RemoteKnowledge::connect(&self.url).expect("a valid url")
    }

    async fn raw(&self) -> KnowledgeServiceClient<tonic::transport::Channel> {
        KnowledgeServiceClient::connect(self.url.clone()).await.expect("the service accepts connections")
    }

    /// Stops the service and checks that it stopped cleanly.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            within("the service to stop", served).await.expect("the server task").expect("the service stops cleanly");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

/// Polls `probe` until it gives something, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON reply to `payload` on `subject`; every reply carries `"v": 1`.
async fn request(client: &async_nats::Client, subject: &str, payload: &[u8]) -> Value {
    let reply = within(subject, client.request(subject.to_string(), payload.to_vec().into()))
        .await
        .unwrap_or_else(|e| panic!("{subject}: no reply: {e}"));
    let body: Value = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("{subject}: the reply is not JSON ({e}): {:?}", reply.payload));
    assert_eq!(body["v"], 1, "{subject}: {body}");
    body
}

/// The reply's error, checked to have `code` and a message.
fn error_of(body: &Value, code: &str) -> String {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "an error says what is wrong: {body}");
    message
}

fn field<T: serde::de::DeserializeOwned>(body: &Value, name: &str) -> T {
    serde_json::from_value(body[name].clone()).unwrap_or_else(|e| panic!("{name} of {body}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// gRPC

#[tokio::test]
async fn every_rpc_round_trips_every_field() {
    let served = Served::start().await;
    let remote = served.remote();
    let double = &served.double;

    let index = IndexRequest { project_id: "p1".into(), workspace: "/srv/workspaces/p1".into() };
    assert_eq!(remote.index_workspace(index.clone()).await.unwrap(), report());
    assert_eq!(double.last_call(), Call::Index(index));

    assert_eq!(remote.add_chunk(chunk()).await.unwrap(), "k1-stored");
    assert_eq!(double.last_call(), Call::Add(Box::new(chunk())));

    assert_eq!(remote.search(search_request()).await.unwrap(), hits());
    assert_eq!(double.last_call(), Call::Search(search_request()));

    assert!(remote.delete_chunk("k1").await.unwrap());
    assert_eq!(double.last_call(), Call::Delete("k1".into()));
    assert!(!remote.delete_chunk("k404").await.unwrap(), "an unknown id is not an error");

    assert_eq!(remote.stats(Some("p1")).await.unwrap(), stats());
    assert_eq!(double.last_call(), Call::Stats(Some("p1".into())));
    assert_eq!(remote.stats(None).await.unwrap(), stats());
    assert_eq!(double.last_call(), Call::Stats(None));

    for workspace in [Some("/srv/workspaces/p1".to_string()), None] {
        let req = ContextRequest {
            project_id: "p1".into(),
            workspace,
            query: "add a health endpoint".into(),
            budget_chars: 8_000,
            limit: 20,
        };
        assert_eq!(remote.build_context(req.clone()).await.unwrap(), context());
        assert_eq!(double.last_call(), Call::Context(req));
    }

    let ids = vec!["h1".to_string(), "h3".to_string()];
    remote.record_outcome(&ids, true).await.unwrap();
    assert_eq!(double.last_call(), Call::Outcome(ids.clone(), true));
    remote.record_outcome(&ids, false).await.unwrap();
    assert_eq!(double.last_call(), Call::Outcome(ids, false));
    served.stop().await;
}

#[tokio::test]
async fn each_error_kind_is_its_status_and_comes_back_as_itself() {
    let served = Served::start().await;
    let (remote, mut raw) = (served.remote(), served.raw().await);
    let codes = [Code::InvalidArgument, Code::FailedPrecondition, Code::NotFound, Code::Unavailable, Code::Internal];
    for (kind, code) in ALL_KINDS.into_iter().zip(codes) {
        let err = KnowledgeError::new(kind, format!("the double fails with {kind:?}; do what it says"));
        served.double.fail_with(Some(err.clone()));

        let status = raw.stats(pb::StatsRequest { project_id: None }).await.unwrap_err();
        assert_eq!(status.code(), code, "{kind:?}");
        assert_eq!(status.message(), err.message);

        // Every method maps the same way, and the remote client gives back the very error.
        assert_eq!(remote.stats(None).await.unwrap_err(), err);
        assert_eq!(remote.search(search_request()).await.unwrap_err(), err);
        assert_eq!(remote.add_chunk(chunk()).await.unwrap_err(), err);
        assert_eq!(remote.delete_chunk("k1").await.unwrap_err(), err);
        let index = IndexRequest { project_id: "p1".into(), workspace: "/ws".into() };
        assert_eq!(remote.index_workspace(index).await.unwrap_err(), err);
        let req =
            ContextRequest { project_id: "p1".into(), workspace: None, query: "q".into(), budget_chars: 1, limit: 1 };
        assert_eq!(remote.build_context(req).await.unwrap_err(), err);
        assert_eq!(remote.record_outcome(&["h1".into()], true).await.unwrap_err(), err);
    }
    served.stop().await;
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable_naming_its_url() {
    // A port that was free a moment ago and has no server now.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let remote = RemoteKnowledge::connect(&url).expect("connecting is lazy: nothing is sent yet");
    let err = within("the refused call", remote.stats(None)).await.unwrap_err();
    assert_eq!(err.kind, KnowledgeErrorKind::Unavailable, "{err}");
    assert!(err.message.contains(&url) && err.message.contains("knowledge.url"), "{err}");
}

#[tokio::test]
async fn the_service_may_start_after_its_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let remote = RemoteKnowledge::connect(&url).unwrap();
    let double = Arc::new(Double::default());
    let shutdown = CancellationToken::new();
    let (knowledge, token) = (double.clone() as Arc<dyn Knowledge>, shutdown.clone());
    let served = tokio::spawn(async move {
        turbo_knowledge::serve(knowledge, &turbo_config::Config::default(), listener, token).await
    });
    assert_eq!(remote.stats(None).await.unwrap(), stats());
    shutdown.cancel();
    within("the service to stop", served).await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_that_do_not_convert_are_invalid_argument_naming_the_field() {
    let served = Served::start().await;
    let mut raw = served.raw().await;
    let cases: Vec<(tonic::Status, &str)> = vec![
        (raw.add_chunk(pb::AddChunkRequest { chunk: None, project_id: None }).await.unwrap_err(), "chunk"),
        (
            raw.add_chunk(pb::AddChunkRequest { chunk: Some(chunk().into()), project_id: Some("p1".into()) })
                .await
                .unwrap_err(),
            "project_id",
        ),
        (
            raw.add_chunk(pb::AddChunkRequest {
                chunk: Some(pb::KnowledgeChunk { content: "short".into(), ..chunk().into() }),
                project_id: None,
            })
            .await
            .unwrap_err(),
            "chunk.content",
        ),
        (
            raw.index_workspace(pb::IndexWorkspaceRequest {
                project_id: "p1".into(),
                root_path: "/ws".into(),
                force: true,
            })
            .await
            .unwrap_err(),
            "force",
        ),
        (
            raw.search(pb::SearchRequest { query: "q".into(), mode: 42, ..Default::default() }).await.unwrap_err(),
            "mode",
        ),
        (raw.delete_chunk(pb::DeleteChunkRequest { id: " ".into() }).await.unwrap_err(), "id"),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    assert!(
        !served.double.calls().iter().any(|c| matches!(c, Call::Add(_) | Call::Index(_) | Call::Delete(_))),
        "nothing that failed to convert reached the knowledge base: {:?}",
        served.double.calls()
    );
    served.stop().await;
}

#[tokio::test]
async fn an_older_clients_single_filters_arrive_as_lists() {
    let served = Served::start().await;
    let old = pb::SearchRequest {
        query: "parse args".into(),
        language: Some(turbo_proto::common::v1::Language::Rust as i32),
        chunk_type: Some("function".into()),
        limit: 0,
        ..Default::default()
    };
    let answer = served.raw().await.search(old).await.unwrap().into_inner();
    assert_eq!(answer.hits.len(), hits().len());
    let Call::Search(seen) = served.double.last_call() else { panic!("a search") };
    assert_eq!(seen.filter.languages, ["rust"]);
    assert_eq!(seen.filter.chunk_types, ["function"]);
    assert_eq!(seen.limit, turbo_proto::convert::DEFAULT_SEARCH_LIMIT);
    assert_eq!(seen.mode, SearchMode::Hybrid);
    served.stop().await;
}

#[tokio::test]
async fn health_reports_the_knowledge_service_serving() {
    let served = Served::start().await;
    let channel = tonic::transport::Endpoint::from_shared(served.url.clone()).unwrap().connect().await.unwrap();
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: turbo_knowledge::GRPC_SERVICES[0].into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    served.stop().await;
}

/// Installs, once for this test binary, a subscriber that keeps OpenTelemetry trace context on
/// spans: the server's spans are made on the runtime's threads, which a scoped one would miss.
fn with_trace_context() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_continues_the_callers_trace() {
    with_trace_context();
    let served = Served::start().await;
    let caller = tracing::info_span!("agent_step");
    let trace_id = caller.context().span().span_context().trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    served.remote().search(search_request()).instrument(caller).await.unwrap();
    let seen = served.double.traces.lock().unwrap().clone();
    assert_eq!(seen, [trace_id], "the knowledge base ran in the caller's trace");
    served.stop().await;
}

// ---------------------------------------------------------------------------------------------
// NATS

#[tokio::test]
async fn each_nats_subject_answers_with_its_result() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let (served, client) = Served::start_on_nats(&nats).await;
    let double = &served.double;

    let body = request(&client, subjects::KNOWLEDGE_SEARCH, &serde_json::to_vec(&search_request()).unwrap()).await;
    assert_eq!(field::<Vec<SearchHit>>(&body, "hits"), hits());
    assert_eq!(double.last_call(), Call::Search(search_request()));
    // What an operator types: the rest takes its defaults.
    request(&client, subjects::KNOWLEDGE_SEARCH, br#"{"query": "config", "limit": 5}"#).await;
    assert_eq!(double.last_call(), Call::Search(SearchRequest::new("config", 5)));

    let index = IndexRequest { project_id: "p1".into(), workspace: "/srv/workspaces/p1".into() };
    let body = request(&client, subjects::KNOWLEDGE_INDEX, &serde_json::to_vec(&index).unwrap()).await;
    assert_eq!(field::<IndexReport>(&body, "report"), report());
    assert_eq!(double.last_call(), Call::Index(index));

    let body = request(&client, subjects::KNOWLEDGE_ADD, &serde_json::to_vec(&chunk()).unwrap()).await;
    assert_eq!(body["id"], "k1-stored");
    assert_eq!(double.last_call(), Call::Add(Box::new(chunk())));

    let body = request(&client, subjects::KNOWLEDGE_DELETE, br#"{"id": "k1"}"#).await;
    assert_eq!(body, json!({"v": 1, "deleted": true}));
    assert_eq!(double.last_call(), Call::Delete("k1".into()));
    let body = request(&client, subjects::KNOWLEDGE_DELETE, br#"{"id": "k404"}"#).await;
    assert_eq!(body["deleted"], false);

    for (payload, project) in [(&b""[..], None), (br#"{"project_id": "p1"}"#, Some("p1".to_string()))] {
        let body = request(&client, subjects::KNOWLEDGE_STATS, payload).await;
        assert_eq!(field::<KnowledgeStats>(&body, "stats"), stats());
        assert_eq!(double.last_call(), Call::Stats(project));
    }

    let req = ContextRequest {
        project_id: "p1".into(),
        workspace: Some("/srv/workspaces/p1".into()),
        query: "add a health endpoint".into(),
        budget_chars: 8_000,
        limit: 20,
    };
    let body = request(&client, subjects::KNOWLEDGE_CONTEXT, &serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(field::<RetrievedContext>(&body, "context"), context());
    assert_eq!(double.last_call(), Call::Context(req));
    served.stop().await;
}

#[tokio::test]
async fn bad_nats_requests_get_error_replies_and_serving_goes_on() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let (served, client) = Served::start_on_nats(&nats).await;
    let calls_before = served.double.calls().len();

    let search = subjects::KNOWLEDGE_SEARCH;
    let cases: &[(&str, &[u8], &str)] = &[
        (search, b"{\"query\": ", "is not JSON"),
        (search, b"[1, 2]", "is not a JSON object"),
        (search, br#"{"query": "q"}"#, "missing field `limit`"),
        (search, br#"{"query": "q", "limit": 5, "filter": {"langauges": ["rust"]}}"#, "filter.langauges"),
        (search, br#"{"query": "q", "limit": "five"}"#, "limit"),
        (subjects::KNOWLEDGE_DELETE, b"{}", "missing field `id`"),
        (subjects::KNOWLEDGE_DELETE, br#"{"id": ""}"#, "id: must not be blank"),
        (
            subjects::KNOWLEDGE_ADD,
            &serde_json::to_vec(&KnowledgeChunk { content: "short".into(), ..chunk() }).unwrap(),
            "content",
        ),
        (subjects::KNOWLEDGE_STATS, br#"{"project": "p1"}"#, "project: is not a field"),
    ];
    for (subject, payload, says) in cases {
        let body = request(&client, subject, payload).await;
        let message = error_of(&body, "invalid_argument");
        assert!(message.contains(says), "{subject} {}: {message}", String::from_utf8_lossy(payload));
    }
    assert_eq!(served.double.calls().len(), calls_before, "no malformed request reached the knowledge base");

    // The knowledge base's own errors carry its kind; a panic is an internal error.
    for kind in ALL_KINDS {
        let err = KnowledgeError::new(kind, format!("{kind:?} from the double"));
        served.double.fail_with(Some(err.clone()));
        let body = request(&client, subjects::KNOWLEDGE_STATS, b"{}").await;
        let code = serde_json::to_value(kind).unwrap();
        assert_eq!(error_of(&body, code.as_str().unwrap()), err.message);
    }
    served.double.fail_with(None);
    let panicking = json!({"query": PANIC_QUERY, "limit": 1}).to_string();
    let body = request(&client, search, panicking.as_bytes()).await;
    assert!(error_of(&body, "internal").contains(search), "{body}");

    // After all of that, the subjects still serve.
    let body = request(&client, search, br#"{"query": "still there", "limit": 1}"#).await;
    assert_eq!(field::<Vec<SearchHit>>(&body, "hits"), hits());
    served.stop().await;
}

#[tokio::test]
async fn no_nats_server_at_start_is_an_error_naming_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nats_url = format!("nats://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut config = turbo_config::Config::default();
    config.cluster.nats_url = Some(nats_url.clone());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = turbo_knowledge::serve(Arc::new(Double::default()), &config, grpc, CancellationToken::new());
    let err = within("serve to give up", served).await.unwrap_err().to_string();
    assert!(err.contains(&nats_url) && err.contains("cluster.nats_url"), "{err}");
}

#[tokio::test]
async fn a_knowledge_base_that_cannot_open_is_a_misconfiguration() {
    let data = tempfile::tempdir().unwrap();
    let mut config = turbo_config::Config::default();
    config.store.data_dir = Some(data.path().to_path_buf());
    config.knowledge.model_dir = Some(data.path().join("no-such-model"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = within("run to give up", turbo_knowledge::run(&config, listener, CancellationToken::new()))
        .await
        .expect_err("no model to embed with");
    assert!(err.is::<turbo_service::Misconfigured>(), "exit 2, not 1: {err:#}");
}

// ---------------------------------------------------------------------------------------------
// Another language's client

/// The Python interpreter the contract test runs with.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails (never skips) when the Python client is missing, saying how to install it.
fn require_nats_py() {
    let probe = std::process::Command::new(python()).args(["-c", "import nats"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python NATS client nats-py is not installed for {}: run `make setup` (deploy/scripts/setup.sh) or `{} -m pip install nats-py`\n{}",
            python(),
            python(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}; install Python 3 (`make setup`) or set PYTHON", python()),
    }
}

#[tokio::test]
async fn a_python_nats_client_gets_the_documented_json_contract() {
    require_nats_py();
    let nats = NatsServer::start().await.expect("nats-server starts");
    let (served, _client) = Served::start_on_nats(&nats).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_knowledge_nats.py");
    let run = tokio::process::Command::new(python()).arg(&script).arg(nats.url()).kill_on_drop(true).output();
    let out = within("the Python client", run).await.expect("python runs");
    let said = format!(
        "{} {}\n--- stdout\n{}\n--- stderr\n{}",
        python(),
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the Python contract test failed ({}): {said}", out.status);
    // The script's search reached the knowledge base as it sent it.
    let searched = served.double.calls().into_iter().any(
        |c| matches!(c, Call::Search(r) if r.query == "where is the config loaded" && r.filter.languages == ["rust"]),
    );
    assert!(searched, "{:?}\n{said}", served.double.calls());
    served.stop().await;
}
