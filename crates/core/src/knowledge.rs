//! Knowledge: the spec's KnowledgeChunk, the unit the retrieval system stores and returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::project::{Framework, Language};
use crate::validate::{Validate, not_blank, opt_in_range};

/// Weight of the newest outcome in the success-rate moving average (the spec's alpha).
const SUCCESS_ALPHA: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeChunk {
    pub id: String,
    pub title: String,
    /// At least 10 characters.
    pub content: String,
    /// code, documentation, pattern, example.
    pub chunk_type: String,
    pub category: String,
    pub subcategory: Option<String>,
    pub language: Option<Language>,
    pub framework: Option<Framework>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: String,
    pub source_url: Option<String>,
    pub author: Option<String>,
    /// 0..=1.
    pub quality_score: Option<f64>,
    pub usage_count: u64,
    /// 0..=1.
    pub success_rate: Option<f64>,
    pub embedding: Option<Vec<f32>>,
    pub embedding_model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

impl KnowledgeChunk {
    /// Records one use: count, timestamp, and an exponential moving average of success.
    pub fn update_usage(&mut self, success: bool, now: DateTime<Utc>) {
        self.usage_count += 1;
        self.last_used = Some(now);
        let outcome = if success { 1.0 } else { 0.0 };
        self.success_rate = Some(match self.success_rate {
            None => outcome,
            Some(rate) => SUCCESS_ALPHA * outcome + (1.0 - SUCCESS_ALPHA) * rate,
        });
    }
}

impl Validate for KnowledgeChunk {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        not_blank(&mut errs, "id", &self.id);
        not_blank(&mut errs, "title", &self.title);
        let n = self.content.chars().count();
        if n < 10 {
            errs.push("content", format!("must be at least 10 characters, got {n}"));
        }
        not_blank(&mut errs, "chunk_type", &self.chunk_type);
        not_blank(&mut errs, "category", &self.category);
        not_blank(&mut errs, "source", &self.source);
        opt_in_range(&mut errs, "quality_score", self.quality_score, 0.0, 1.0);
        opt_in_range(&mut errs, "success_rate", self.success_rate, 0.0, 1.0);
        if self.embedding.as_ref().is_some_and(|e| e.iter().any(|x| !x.is_finite())) {
            errs.push("embedding", "must contain only finite numbers");
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_updates_follow_the_moving_average() {
        let now = Utc::now();
        let mut c = KnowledgeChunk {
            id: "k1".into(),
            title: "t".into(),
            content: "0123456789".into(),
            chunk_type: "code".into(),
            category: "c".into(),
            subcategory: None,
            language: None,
            framework: None,
            keywords: vec![],
            tags: vec![],
            source: "s".into(),
            source_url: None,
            author: None,
            quality_score: None,
            usage_count: 0,
            success_rate: None,
            embedding: None,
            embedding_model: None,
            created_at: now,
            updated_at: now,
            last_used: None,
        };
        c.update_usage(true, now);
        assert_eq!(c.success_rate, Some(1.0));
        c.update_usage(false, now);
        assert!((c.success_rate.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(c.usage_count, 2);
        assert_eq!(c.last_used, Some(now));
        assert_eq!(c.validate(), Ok(()));
    }
}
