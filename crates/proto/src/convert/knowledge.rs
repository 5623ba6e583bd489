//! `KnowledgeChunk`.

use turbo_core::knowledge::KnowledgeChunk;

use super::enums::opt_enum_from_proto;
use super::{ProtoEnum, opt_timestamp, req_timestamp, timestamp_to_proto, validated};
use crate::Error;
use crate::knowledge::v1 as pb;

impl From<KnowledgeChunk> for pb::KnowledgeChunk {
    fn from(k: KnowledgeChunk) -> Self {
        pb::KnowledgeChunk {
            id: k.id,
            title: k.title,
            content: k.content,
            chunk_type: k.chunk_type,
            category: k.category,
            subcategory: k.subcategory,
            language: k.language.map(ProtoEnum::to_proto),
            framework: k.framework.map(ProtoEnum::to_proto),
            keywords: k.keywords,
            tags: k.tags,
            source: k.source,
            source_url: k.source_url,
            author: k.author,
            quality_score: k.quality_score,
            usage_count: k.usage_count,
            success_rate: k.success_rate,
            embedding: k.embedding.map(|values| pb::Embedding { values }),
            embedding_model: k.embedding_model,
            created_at: Some(timestamp_to_proto(k.created_at)),
            updated_at: Some(timestamp_to_proto(k.updated_at)),
            last_used: k.last_used.map(timestamp_to_proto),
        }
    }
}

impl TryFrom<pb::KnowledgeChunk> for KnowledgeChunk {
    type Error = Error;

    fn try_from(k: pb::KnowledgeChunk) -> Result<Self, Error> {
        validated(KnowledgeChunk {
            id: k.id,
            title: k.title,
            content: k.content,
            chunk_type: k.chunk_type,
            category: k.category,
            subcategory: k.subcategory,
            language: opt_enum_from_proto("language", k.language)?,
            framework: opt_enum_from_proto("framework", k.framework)?,
            keywords: k.keywords,
            tags: k.tags,
            source: k.source,
            source_url: k.source_url,
            author: k.author,
            quality_score: k.quality_score,
            usage_count: k.usage_count,
            success_rate: k.success_rate,
            embedding: k.embedding.map(|e| e.values),
            embedding_model: k.embedding_model,
            created_at: req_timestamp("created_at", k.created_at)?,
            updated_at: req_timestamp("updated_at", k.updated_at)?,
            last_used: opt_timestamp("last_used", k.last_used)?,
        })
    }
}
