//! [`RemoteKnowledge`]: `turbo_core::knowledge::Knowledge` served by a knowledge service,
//! over gRPC (`turbo.knowledge.v1.KnowledgeService`).
//!
//! It behaves as the knowledge base in the caller's process would: an error the service
//! answers comes back with the same kind and message (the service sends the kind as the
//! status's reason, see [`crate::convert::knowledge_error_to_status`]). What the service did
//! not say is the transport's: a service that cannot be reached, or does not answer within
//! the call's deadline, is [`turbo_core::knowledge::KnowledgeErrorKind::Unavailable`] with a message naming its URL.
//! The channel connects on first use and again after a failure, so the service may start
//! after its clients. Each request carries the caller's trace context ([`TraceInterceptor`]).

use std::time::Duration;

use async_trait::async_trait;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use turbo_core::knowledge::{
    ContextRequest, IndexReport, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeStats,
    RetrievedContext, SearchHit, SearchRequest,
};

use crate::convert::{is_knowledge_status, knowledge_error_from_status};
use crate::knowledge::v1 as pb;
use crate::knowledge::v1::knowledge_service_client::KnowledgeServiceClient;
use crate::trace::TraceInterceptor;

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the calls that embed at most a query or one chunk.
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of the calls that (re-)index a workspace: embedding a large repository on a CPU
/// takes minutes.
const INDEX_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Largest message sent or accepted: a search answers at most 200 chunks of a few KiB.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

type Client = KnowledgeServiceClient<InterceptedService<Channel, TraceInterceptor>>;

/// A knowledge service reached over gRPC; cheap to clone.
#[derive(Clone)]
pub struct RemoteKnowledge {
    url: String,
    client: Client,
}

impl RemoteKnowledge {
    /// The knowledge service at `url` (`http://HOST:PORT`). Nothing is sent until the first
    /// call, so this succeeds while the service is still starting. Needs a Tokio runtime.
    pub fn connect(url: &str) -> Result<Self, KnowledgeError> {
        let bad = |reason: &str| {
            KnowledgeError::invalid(format!(
                "'{url}' is not a knowledge service URL ({reason}): set knowledge.url to http://HOST:PORT"
            ))
        };
        if !url.starts_with("http://") {
            return Err(bad("it must start with http://; TLS is not supported yet"));
        }
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(&e.to_string()))?;
        let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy();
        let client = KnowledgeServiceClient::with_interceptor(channel, TraceInterceptor)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { url: url.to_string(), client })
    }

    /// The URL this client sends to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `message` as a request with `deadline`, which the service enforces too (grpc-timeout).
    fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// Runs `rpc`'s future with `deadline` also enforced here, so a service that stopped
    /// answering (a partition, a hung process) cannot hold the caller forever.
    async fn within<T>(
        &self,
        rpc: &'static str,
        deadline: Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, KnowledgeError> {
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(self.error(rpc, deadline, &status)),
            Err(_) => Err(self.late(rpc, deadline)),
        }
    }

    /// The error `status` stands for: the service's own error as it sent it, else the
    /// transport's, naming this client's URL.
    fn error(&self, rpc: &'static str, deadline: Duration, status: &tonic::Status) -> KnowledgeError {
        use tonic::Code;
        if is_knowledge_status(status) {
            return knowledge_error_from_status(status);
        }
        let url = &self.url;
        match status.code() {
            // What tonic answers itself when it cannot connect or the connection drops.
            Code::Unavailable => KnowledgeError::unavailable(format!(
                "cannot reach the knowledge service at {url} ({rpc}): {}; check that it runs and that knowledge.url points at it",
                transport_reason(status)
            )),
            Code::Unknown if std::error::Error::source(status).is_some() => KnowledgeError::unavailable(format!(
                "lost the connection to the knowledge service at {url} ({rpc}): {}; retry",
                transport_reason(status)
            )),
            Code::DeadlineExceeded => self.late(rpc, deadline),
            // A request field the service could not read (its message names the field).
            Code::InvalidArgument => KnowledgeError::invalid(status.message()),
            code => KnowledgeError::new(
                knowledge_error_from_status(status).kind,
                format!("the knowledge service at {url} failed {rpc} ({code:?}): {}", status.message()),
            ),
        }
    }

    fn late(&self, rpc: &'static str, deadline: Duration) -> KnowledgeError {
        KnowledgeError::unavailable(format!(
            "the knowledge service at {} did not answer {rpc} within {}s; it may be overloaded, try again",
            self.url,
            deadline.as_secs()
        ))
    }

    /// An answer this client cannot read: a service of another version.
    fn bad_answer(&self, rpc: &'static str, err: crate::Error) -> KnowledgeError {
        KnowledgeError::internal(format!(
            "the knowledge service at {} sent an unreadable {rpc} answer ({err}); is it the same version as this client?",
            self.url
        ))
    }
}

/// The innermost cause of a transport error (e.g. `Connection refused (os error 111)`), which
/// says more than tonic's `transport error`.
fn transport_reason(status: &tonic::Status) -> String {
    let mut reason = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

/// A workspace as the service needs it: absolute, as a knowledge base in this process would
/// resolve it.
fn absolute(workspace: String) -> String {
    match std::path::absolute(&workspace) {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(_) => workspace,
    }
}

#[async_trait]
impl Knowledge for RemoteKnowledge {
    #[tracing::instrument(name = "remote_index_workspace", skip_all, fields(project_id = %req.project_id))]
    async fn index_workspace(&self, req: IndexRequest) -> Result<IndexReport, KnowledgeError> {
        let req = IndexRequest { workspace: absolute(req.workspace), ..req };
        let mut client = self.client.clone();
        let request = Self::request(pb::IndexWorkspaceRequest::from(req), INDEX_TIMEOUT);
        let answer = self.within("IndexWorkspace", INDEX_TIMEOUT, client.index_workspace(request)).await?;
        IndexReport::try_from(answer).map_err(|e| self.bad_answer("IndexWorkspace", e))
    }

    #[tracing::instrument(name = "remote_add_chunk", skip_all, fields(id = %chunk.id))]
    async fn add_chunk(&self, chunk: KnowledgeChunk) -> Result<String, KnowledgeError> {
        let message = pb::AddChunkRequest { chunk: Some(chunk.into()), project_id: None };
        let mut client = self.client.clone();
        let request = Self::request(message, QUICK_TIMEOUT);
        Ok(self.within("AddChunk", QUICK_TIMEOUT, client.add_chunk(request)).await?.id)
    }

    #[tracing::instrument(name = "remote_search", skip_all, fields(limit = req.limit))]
    async fn search(&self, req: SearchRequest) -> Result<Vec<SearchHit>, KnowledgeError> {
        // Refused here as a knowledge base in this process refuses it (on the wire a limit of
        // 0 would mean the default).
        req.check()?;
        let mut client = self.client.clone();
        let request = Self::request(pb::SearchRequest::from(req), QUICK_TIMEOUT);
        let answer = self.within("Search", QUICK_TIMEOUT, client.search(request)).await?;
        Ok(answer.hits.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(name = "remote_delete_chunk", skip_all, fields(%id))]
    async fn delete_chunk(&self, id: &str) -> Result<bool, KnowledgeError> {
        let mut client = self.client.clone();
        let request = Self::request(pb::DeleteChunkRequest { id: id.to_string() }, QUICK_TIMEOUT);
        Ok(self.within("DeleteChunk", QUICK_TIMEOUT, client.delete_chunk(request)).await?.deleted)
    }

    #[tracing::instrument(name = "remote_stats", skip_all)]
    async fn stats(&self, project_id: Option<&str>) -> Result<KnowledgeStats, KnowledgeError> {
        let mut client = self.client.clone();
        let request = Self::request(pb::StatsRequest { project_id: project_id.map(str::to_string) }, QUICK_TIMEOUT);
        Ok(self.within("Stats", QUICK_TIMEOUT, client.stats(request)).await?.into())
    }

    #[tracing::instrument(name = "remote_build_context", skip_all, fields(project_id = %req.project_id))]
    async fn build_context(&self, req: ContextRequest) -> Result<RetrievedContext, KnowledgeError> {
        // With a workspace the service re-indexes it first.
        let deadline = if req.workspace.is_some() { INDEX_TIMEOUT } else { QUICK_TIMEOUT };
        let req = ContextRequest { workspace: req.workspace.map(absolute), ..req };
        let mut client = self.client.clone();
        let request = Self::request(pb::BuildContextRequest::from(req), deadline);
        Ok(self.within("BuildContext", deadline, client.build_context(request)).await?.into())
    }

    #[tracing::instrument(name = "remote_record_outcome", skip_all, fields(chunks = chunk_ids.len(), success))]
    async fn record_outcome(&self, chunk_ids: &[String], success: bool) -> Result<(), KnowledgeError> {
        let message = pb::RecordOutcomeRequest { chunk_ids: chunk_ids.to_vec(), success };
        let mut client = self.client.clone();
        let request = Self::request(message, QUICK_TIMEOUT);
        self.within("RecordOutcome", QUICK_TIMEOUT, client.record_outcome(request)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use turbo_core::knowledge::KnowledgeErrorKind;

    use super::*;

    #[tokio::test]
    async fn urls_must_be_plain_http() {
        for url in ["knowledge:50053", "https://knowledge:50053", "http://know ledge:1"] {
            let err = RemoteKnowledge::connect(url).err().expect("refused");
            assert_eq!(err.kind, KnowledgeErrorKind::InvalidArgument);
            assert!(err.message.contains(url) && err.message.contains("knowledge.url"), "{err}");
        }
        assert_eq!(RemoteKnowledge::connect("http://knowledge:50053").unwrap().url(), "http://knowledge:50053");
    }

    #[tokio::test]
    async fn statuses_the_service_did_not_send_name_the_url() {
        let remote = RemoteKnowledge::connect("http://knowledge:50053").unwrap();
        let late = remote.error("Search", QUICK_TIMEOUT, &tonic::Status::deadline_exceeded("deadline"));
        assert_eq!(late.kind, KnowledgeErrorKind::Unavailable);
        assert!(late.message.contains("http://knowledge:50053") && late.message.contains("60s"), "{late}");
        let old = remote.error("BuildContext", QUICK_TIMEOUT, &tonic::Status::unimplemented("unknown method"));
        assert_eq!(old.kind, KnowledgeErrorKind::Internal);
        assert!(old.message.contains("BuildContext") && old.message.contains("unknown method"), "{old}");
        let field = remote.error("Search", QUICK_TIMEOUT, &tonic::Status::invalid_argument("mode is unknown"));
        assert_eq!(field, KnowledgeError::invalid("mode is unknown"));
    }

    #[test]
    fn relative_workspaces_are_made_absolute_here() {
        assert!(std::path::Path::new(&absolute("proj".into())).is_absolute());
        assert_eq!(absolute("/srv/proj".into()), "/srv/proj");
    }
}
