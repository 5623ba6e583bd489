//! The knowledge service for operators: NATS request-reply subjects answered in plain JSON, so
//! `nats req turbo.knowledge.search '{"query": "where is the config loaded", "limit": 5}'` is
//! all an operator needs. Agents use gRPC (`turbo_proto::RemoteKnowledge`).
//!
//! | subject | request (the serde JSON of) | reply |
//! |---|---|---|
//! | `turbo.knowledge.search` | `SearchRequest`: `{"query", "limit", "filter"?: {"project_id", "languages", "path_prefix", "chunk_types"}, "mode"?: "hybrid"\|"vector"\|"text"}` | `{"v":1,"hits":[SearchHit...]}` |
//! | `turbo.knowledge.index` | `IndexRequest`: `{"project_id", "workspace"}` | `{"v":1,"report":IndexReport}` |
//! | `turbo.knowledge.add` | `KnowledgeChunk` | `{"v":1,"id":"..."}` |
//! | `turbo.knowledge.delete` | `{"id"}` | `{"v":1,"deleted":bool}` |
//! | `turbo.knowledge.stats` | `{}` or `{"project_id"}` | `{"v":1,"stats":KnowledgeStats}` |
//! | `turbo.knowledge.context` | `ContextRequest`: `{"project_id", "workspace"?, "query", "budget_chars", "limit"}` | `{"v":1,"context":RetrievedContext}` |
//!
//! The types are `turbo_core::knowledge`'s. Replies have the shape of the orchestrator's
//! control subjects: every failure is a reply too,
//! `{"v":1,"error":{"code":"invalid_argument","message":...}}`, its code the snake_case
//! `KnowledgeErrorKind` (`invalid_argument`, `failed_precondition`, `not_found`,
//! `unavailable`, `internal`). A request that is not JSON, is not an object, lacks a field or
//! has one the request type does not know is `invalid_argument` with an example of a good
//! request; an empty payload reads as `{}`. A request is answered on its own task, so a slow
//! or failing one (even one that panics) never stops the subscription, and each has a
//! deadline.
//!
//! Replicas subscribe in the queue group [`subjects::KNOWLEDGE_QUEUE_GROUP`], so each request
//! is answered by one knowledge service.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use turbo_bus::async_nats::{self, Message};
use turbo_bus::subjects;
use turbo_core::Validate;
use turbo_core::knowledge::{
    ContextRequest, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeErrorKind, SearchRequest,
};

use crate::{Error, Result};

/// The version every reply carries as `"v"`.
pub const REPLY_VERSION: u64 = 1;

/// Requests answered at once; more wait in the subscription until one is done.
const MAX_IN_FLIGHT: usize = 32;
/// Longest a search, add, delete or stats request may take before it is answered
/// `unavailable` (an embedding server that hangs).
const QUICK_DEADLINE: Duration = Duration::from_secs(60);
/// Longest an index (or a context with a workspace to re-index first) may take: embedding a
/// large repository on a CPU takes minutes.
const INDEX_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// At shutdown, how long requests already delivered may take to be read from the subscription
/// (the server confirms the unsubscribe; on a broken connection it never does).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

const SEARCH_EXAMPLE: &str = r#"{"query": "where is the config loaded", "limit": 5}"#;
const INDEX_EXAMPLE: &str = r#"{"project_id": "my-app", "workspace": "/srv/workspaces/my-app"}"#;
const ADD_EXAMPLE: &str = r#"{"id": "k1", "title": "...", "content": "at least 10 characters", "chunk_type": "pattern", "category": "...", "source": "...", "usage_count": 0, "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}"#;
const DELETE_EXAMPLE: &str = r#"{"id": "k1"}"#;
const STATS_EXAMPLE: &str = r#"{"project_id": "my-app"}"#;
const CONTEXT_EXAMPLE: &str =
    r#"{"project_id": "my-app", "query": "add a health endpoint", "budget_chars": 8000, "limit": 20}"#;

/// Subscribes to the knowledge subjects (in the queue group
/// [`subjects::KNOWLEDGE_QUEUE_GROUP`]), then answers requests with `knowledge` until
/// `shutdown` is cancelled. On shutdown it unsubscribes, answers the requests already
/// delivered, flushes the replies and returns. Fails when it cannot subscribe, or when the
/// connection closes for good while serving.
pub async fn serve_nats(
    client: async_nats::Client,
    knowledge: Arc<dyn Knowledge>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut requests = StreamMap::new();
    for subject in subjects::KNOWLEDGE_SUBJECTS {
        let subscriber = client
            .queue_subscribe(subject.to_string(), subjects::KNOWLEDGE_QUEUE_GROUP.to_string())
            .await
            .map_err(|e| serve_error(subject, format!("cannot subscribe: {e}")))?;
        requests.insert(*subject, subscriber);
    }
    // The server has the subscriptions once it answers a ping sent after them.
    client.flush().await.map_err(|e| serve_error("NATS", format!("cannot reach the server: {e}")))?;
    tracing::info!(
        subjects = ?subjects::KNOWLEDGE_SUBJECTS,
        queue_group = subjects::KNOWLEDGE_QUEUE_GROUP,
        "knowledge subjects serving"
    );
    let limits = turbo_bus::RequestLimits { max_in_flight: MAX_IN_FLIGHT, drain_wait: DRAIN_WAIT };
    let served = turbo_bus::serve_requests(&mut requests, &shutdown, limits, "knowledge", |message| {
        answer(client.clone(), knowledge.clone(), message)
    })
    .await
    .map_err(|closed| serve_error("turbo.knowledge.*", closed.to_string()));
    // Replies handed to the client are sent before returning, so a requester gets them.
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "cannot flush the last knowledge replies");
    }
    served
}

fn serve_error(subject: &str, reason: String) -> Error {
    Error::Serve { addr: format!("NATS subject {subject}"), reason }
}

/// Answers one request: the reply is always sent, whatever happens to the handler.
async fn answer(client: async_nats::Client, knowledge: Arc<dyn Knowledge>, message: Message) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::debug!(subject = %message.subject, "ignoring a knowledge message without a reply subject: use `nats req`");
        return;
    };
    let subject = message.subject.to_string();
    let deadline = deadline_of(&subject, &message.payload);
    // On its own task, so a panic becomes an `internal` reply instead of silence.
    let handler = tokio::spawn(async move {
        tokio::time::timeout(deadline, handle(knowledge.as_ref(), message.subject.as_str(), &message.payload)).await
    });
    let reply = match handler.await {
        Ok(Ok(Ok(body))) => ok_body(body),
        Ok(Ok(Err(error))) => error_body(&error),
        Ok(Err(_)) => {
            tracing::warn!(%subject, ?deadline, "knowledge request past its deadline");
            error_body(&KnowledgeError::unavailable(format!(
                "the request took longer than {deadline:?}: the embedding server or the dataset may be overloaded; retry"
            )))
        }
        Err(error) => {
            tracing::error!(%subject, %error, "knowledge request handler failed");
            error_body(&KnowledgeError::internal(format!("internal error answering {subject}: {error}")))
        }
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    let max = client.server_info().max_payload;
    if max > 0 && bytes.len() > max {
        let too_big = error_body(&KnowledgeError::invalid(format!(
            "the reply is {} bytes, over the server's max_payload of {max}: ask for less (a smaller limit or budget_chars)",
            bytes.len()
        )));
        bytes = serde_json::to_vec(&too_big).unwrap_or_default();
    }
    if let Err(error) = client.publish(reply_to, bytes.into()).await {
        tracing::warn!(%subject, %error, "cannot send a knowledge reply");
    }
}

/// How long a request may take: an index, or a context that re-indexes first, may take long.
fn deadline_of(subject: &str, payload: &[u8]) -> Duration {
    let reindexes =
        || serde_json::from_slice::<Value>(payload).is_ok_and(|v| v.get("workspace").is_some_and(|w| !w.is_null()));
    match subject {
        subjects::KNOWLEDGE_INDEX => INDEX_DEADLINE,
        subjects::KNOWLEDGE_CONTEXT if reindexes() => INDEX_DEADLINE,
        _ => QUICK_DEADLINE,
    }
}

/// The body of `delete` requests.
#[derive(Serialize, Deserialize)]
struct DeleteRequest {
    id: String,
}

/// The body of `stats` requests.
#[derive(Serialize, Deserialize)]
struct StatsRequest {
    #[serde(default)]
    project_id: Option<String>,
}

/// The result of one request, as the fields of its reply beside `"v"`.
async fn handle(
    knowledge: &dyn Knowledge,
    subject: &str,
    payload: &[u8],
) -> std::result::Result<Value, KnowledgeError> {
    match subject {
        subjects::KNOWLEDGE_SEARCH => {
            let req: SearchRequest = parse(payload, subject, SEARCH_EXAMPLE)?;
            Ok(json!({ "hits": knowledge.search(req).await? }))
        }
        subjects::KNOWLEDGE_INDEX => {
            let req: IndexRequest = parse(payload, subject, INDEX_EXAMPLE)?;
            Ok(json!({ "report": knowledge.index_workspace(req).await? }))
        }
        subjects::KNOWLEDGE_ADD => {
            let chunk: KnowledgeChunk = parse(payload, subject, ADD_EXAMPLE)?;
            chunk.validate().map_err(|errs| KnowledgeError::invalid(format!("invalid chunk: {errs}")))?;
            Ok(json!({ "id": knowledge.add_chunk(chunk).await? }))
        }
        subjects::KNOWLEDGE_DELETE => {
            let req: DeleteRequest = parse(payload, subject, DELETE_EXAMPLE)?;
            if req.id.trim().is_empty() {
                return Err(KnowledgeError::invalid("id: must not be blank; send the id a search or add returned"));
            }
            Ok(json!({ "deleted": knowledge.delete_chunk(&req.id).await? }))
        }
        subjects::KNOWLEDGE_STATS => {
            let req: StatsRequest = parse(payload, subject, STATS_EXAMPLE)?;
            Ok(json!({ "stats": knowledge.stats(req.project_id.as_deref()).await? }))
        }
        subjects::KNOWLEDGE_CONTEXT => {
            let req: ContextRequest = parse(payload, subject, CONTEXT_EXAMPLE)?;
            Ok(json!({ "context": knowledge.build_context(req).await? }))
        }
        other => Err(KnowledgeError::invalid(format!(
            "{other} is not a knowledge subject: use one of {}",
            subjects::KNOWLEDGE_SUBJECTS.join(", ")
        ))),
    }
}

/// The request of `subject` in `payload`: empty bytes are `{}` (a bare `nats req SUBJECT ''`);
/// anything but a JSON object of `T`'s fields is refused, naming the problem and showing
/// `example`.
fn parse<T: DeserializeOwned + Serialize>(
    payload: &[u8],
    subject: &str,
    example: &str,
) -> std::result::Result<T, KnowledgeError> {
    let text = payload.trim_ascii();
    let value: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(text).map_err(|e| {
            KnowledgeError::invalid(format!("request is not JSON ({e}): send a JSON object such as {example}"))
        })?
    };
    if !value.is_object() {
        return Err(KnowledgeError::invalid(format!("request is not a JSON object: send one such as {example}")));
    }
    let parsed = T::deserialize(&value).map_err(|e| {
        KnowledgeError::invalid(format!("request does not fit {subject} ({e}): send a JSON object such as {example}"))
    })?;
    // serde skips fields it does not know; a misspelt filter would then silently not filter.
    let known = serde_json::to_value(&parsed).unwrap_or(Value::Null);
    if let Some(unknown) = unknown_field(&value, &known, "") {
        return Err(KnowledgeError::invalid(format!(
            "{unknown}: is not a field of a {subject} request; send one such as {example}"
        )));
    }
    Ok(parsed)
}

/// The first key of `sent` (by dotted path) that `known`, the same request as parsed and
/// written back, lacks.
fn unknown_field(sent: &Value, known: &Value, prefix: &str) -> Option<String> {
    let (Value::Object(sent), Value::Object(known)) = (sent, known) else { return None };
    sent.iter().find_map(|(key, value)| {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match known.get(key) {
            None => Some(path),
            Some(parsed) => unknown_field(value, parsed, &path),
        }
    })
}

fn ok_body(body: Value) -> Value {
    let mut body = body;
    if let Value::Object(map) = &mut body {
        map.insert("v".into(), REPLY_VERSION.into());
    }
    body
}

/// `{"v":1,"error":{"code":...,"message":...}}`.
fn error_body(error: &KnowledgeError) -> Value {
    if error.kind == KnowledgeErrorKind::Internal {
        tracing::error!(%error, "internal error answering a knowledge request");
    }
    json!({"v": REPLY_VERSION, "error": {"code": error.kind, "message": error.message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "request is not JSON"),
            (b"[1, 2]", "is not a JSON object"),
            (b"\"x\"", "is not a JSON object"),
            (br#"{"query": "q"}"#, "missing field `limit`"),
            (br#"{"query": "q", "limit": 5, "limt": 5}"#, "limt: is not a field"),
            (br#"{"query": "q", "limit": 5, "filter": {"language": ["rust"]}}"#, "filter.language: is not a field"),
            (br#"{"query": "q", "limit": 5, "mode": "fuzzy"}"#, "unknown variant `fuzzy`"),
        ];
        for (payload, says) in cases {
            let e = parse::<SearchRequest>(payload, subjects::KNOWLEDGE_SEARCH, SEARCH_EXAMPLE).expect_err("refused");
            assert_eq!(e.kind, KnowledgeErrorKind::InvalidArgument);
            assert!(e.message.contains(says), "{payload:?}: {e}");
            assert!(e.message.contains(SEARCH_EXAMPLE), "{e}");
        }
        let ok: SearchRequest =
            parse(br#"{"query": "q", "limit": 5, "filter": {"languages": ["rust"]}}"#, "s", "{}").unwrap();
        assert_eq!(ok.filter.languages, ["rust"]);
        let empty: StatsRequest = parse(b"  \n", "s", "{}").unwrap();
        assert_eq!(empty.project_id, None, "an empty body is an empty request");
    }

    #[test]
    fn replies_carry_the_version_and_the_error_code() {
        let body = error_body(&KnowledgeError::new(KnowledgeErrorKind::FailedPrecondition, "re-index"));
        assert_eq!(body, json!({"v": 1, "error": {"code": "failed_precondition", "message": "re-index"}}));
        assert_eq!(ok_body(json!({"deleted": true})), json!({"v": 1, "deleted": true}));
    }

    #[test]
    fn only_indexing_gets_the_long_deadline() {
        assert_eq!(deadline_of(subjects::KNOWLEDGE_INDEX, b"{}"), INDEX_DEADLINE);
        assert_eq!(deadline_of(subjects::KNOWLEDGE_CONTEXT, br#"{"workspace": "/ws"}"#), INDEX_DEADLINE);
        assert_eq!(deadline_of(subjects::KNOWLEDGE_CONTEXT, br#"{"workspace": null}"#), QUICK_DEADLINE);
        assert_eq!(deadline_of(subjects::KNOWLEDGE_SEARCH, b"{}"), QUICK_DEADLINE);
    }
}
