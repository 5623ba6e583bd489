//! `turbo.knowledge.v1.KnowledgeService` over any [`Knowledge`]: what [`crate::serve`] serves
//! and `turbo_proto::RemoteKnowledge` calls.
//!
//! A request that does not convert (a missing chunk, an unknown enum, a chunk that breaks its
//! constraints) is INVALID_ARGUMENT naming the field, as every turbo service answers it. A
//! [`KnowledgeError`] of the knowledge base becomes its status through the one mapping in
//! `turbo_proto::convert` ([`knowledge_error_to_status`]), which a remote client reads back
//! into the same error.
//!
//! Handlers do their work in methods returning a [`KnowledgeError`], each in a span that is a
//! child of the request's (itself continuing the caller's trace, see `turbo_proto::trace`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use turbo_core::knowledge::{
    ContextRequest, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeErrorKind, SearchRequest,
};
use turbo_proto::convert::knowledge_error_to_status;
use turbo_proto::knowledge::v1 as pb;
use turbo_proto::knowledge::v1::knowledge_service_server::{KnowledgeService, KnowledgeServiceServer};
use turbo_proto::server::Routes;

/// Largest message accepted or sent: an added chunk with its embedding, or a search's hits.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

type Answer<T> = std::result::Result<Response<T>, Status>;

/// The knowledge service's gRPC API over a knowledge base; cheap to clone.
#[derive(Clone)]
pub struct KnowledgeGrpc {
    inner: Arc<dyn Knowledge>,
}

impl KnowledgeGrpc {
    pub fn new(inner: Arc<dyn Knowledge>) -> Self {
        Self { inner }
    }

    /// The service, ready for [`turbo_proto::server::serve`].
    pub fn routes(self) -> Routes {
        Routes::new(
            KnowledgeServiceServer::new(self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    #[tracing::instrument(name = "add_chunk", skip_all, fields(id = %chunk.id))]
    async fn add(&self, chunk: KnowledgeChunk) -> Result<pb::KnowledgeChunk, KnowledgeError> {
        let id = self.inner.add_chunk(chunk.clone()).await?;
        Ok(KnowledgeChunk { id, ..chunk }.into())
    }

    #[tracing::instrument(name = "search", skip_all, fields(limit = req.limit, mode = ?req.mode))]
    async fn find(&self, req: SearchRequest) -> Result<pb::SearchResponse, KnowledgeError> {
        let hits = self.inner.search(req).await?;
        Ok(pb::SearchResponse { results: Vec::new(), hits: hits.into_iter().map(Into::into).collect() })
    }

    #[tracing::instrument(name = "delete_chunk", skip_all, fields(%id))]
    async fn delete(&self, id: String) -> Result<pb::DeleteChunkResponse, KnowledgeError> {
        if id.trim().is_empty() {
            return Err(KnowledgeError::invalid("id: must not be blank; send the id a search or AddChunk returned"));
        }
        Ok(pb::DeleteChunkResponse { deleted: self.inner.delete_chunk(&id).await? })
    }

    #[tracing::instrument(name = "index_workspace", skip_all, fields(project_id = %req.project_id, workspace = %req.workspace))]
    async fn index(&self, req: IndexRequest) -> Result<pb::IndexWorkspaceResponse, KnowledgeError> {
        Ok(self.inner.index_workspace(req).await?.into())
    }

    #[tracing::instrument(name = "stats", skip_all, fields(project_id = ?project_id))]
    async fn count(&self, project_id: Option<String>) -> Result<pb::StatsResponse, KnowledgeError> {
        Ok(self.inner.stats(project_id.as_deref()).await?.into())
    }

    #[tracing::instrument(name = "build_context", skip_all, fields(project_id = %req.project_id))]
    async fn context(&self, req: ContextRequest) -> Result<pb::BuildContextResponse, KnowledgeError> {
        Ok(self.inner.build_context(req).await?.into())
    }

    #[tracing::instrument(name = "record_outcome", skip_all, fields(chunks = chunk_ids.len(), success))]
    async fn outcome(
        &self,
        chunk_ids: Vec<String>,
        success: bool,
    ) -> Result<pb::RecordOutcomeResponse, KnowledgeError> {
        self.inner.record_outcome(&chunk_ids, success).await?;
        Ok(pb::RecordOutcomeResponse {})
    }
}

/// `answer` as a gRPC answer: the message, or the error's status (logged when internal: the
/// caller cannot fix it, an operator may).
fn reply<T>(answer: Result<T, KnowledgeError>) -> Answer<T> {
    match answer {
        Ok(message) => Ok(Response::new(message)),
        Err(err) => {
            if err.kind == KnowledgeErrorKind::Internal {
                tracing::error!(error = %err, "knowledge request failed");
            }
            Err(knowledge_error_to_status(&err))
        }
    }
}

#[tonic::async_trait]
impl KnowledgeService for KnowledgeGrpc {
    async fn add_chunk(&self, request: Request<pb::AddChunkRequest>) -> Answer<pb::KnowledgeChunk> {
        let chunk = KnowledgeChunk::try_from(request.into_inner())?;
        reply(self.add(chunk).await)
    }

    async fn search(&self, request: Request<pb::SearchRequest>) -> Answer<pb::SearchResponse> {
        let req = SearchRequest::try_from(request.into_inner())?;
        reply(self.find(req).await)
    }

    async fn delete_chunk(&self, request: Request<pb::DeleteChunkRequest>) -> Answer<pb::DeleteChunkResponse> {
        reply(self.delete(request.into_inner().id).await)
    }

    async fn index_workspace(&self, request: Request<pb::IndexWorkspaceRequest>) -> Answer<pb::IndexWorkspaceResponse> {
        let req = IndexRequest::try_from(request.into_inner())?;
        reply(self.index(req).await)
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Answer<pb::StatsResponse> {
        reply(self.count(request.into_inner().project_id).await)
    }

    async fn build_context(&self, request: Request<pb::BuildContextRequest>) -> Answer<pb::BuildContextResponse> {
        reply(self.context(request.into_inner().into()).await)
    }

    async fn record_outcome(&self, request: Request<pb::RecordOutcomeRequest>) -> Answer<pb::RecordOutcomeResponse> {
        let req = request.into_inner();
        reply(self.outcome(req.chunk_ids, req.success).await)
    }
}
