//! Hybrid retrieval: the query's vector against the chunk vectors, and BM25 over
//! identifier-aware tokens, each over the same filter, fused by reciprocal rank (RRF): a
//! chunk's score is the sum over the lists it appears in of `1 / (60 + rank)`, so agreement
//! between the two retrievers counts more than either's raw score, whose scales differ.

use std::collections::HashMap;

use turbo_core::knowledge::{SearchFilter, SearchHit, SearchMode, SearchRequest};

use crate::dataset::{Dataset, Found, Row, sql_list, sql_str};
use crate::embed::Embedder;
use crate::{Error, Result};

/// RRF's rank offset: the usual 60 keeps a single first place from outweighing agreement.
pub const RRF_K: f32 = 60.0;

/// Candidates each retriever contributes to the fusion, per hit asked for.
const CANDIDATES_PER_HIT: usize = 3;
const MIN_CANDIDATES: usize = 30;

/// Runs `req` against the dataset. The request must have passed [`SearchRequest::check`].
pub async fn search(dataset: &Dataset, embedder: &dyn Embedder, req: &SearchRequest) -> Result<Vec<SearchHit>> {
    let filter = filter_sql(&req.filter)?;
    let k = (req.limit * CANDIDATES_PER_HIT).max(MIN_CANDIDATES);
    let vector = || async {
        let v = embedder.embed(std::slice::from_ref(&req.query)).await?;
        let v = v.into_iter().next().ok_or_else(|| Error::Search("the embedder returned no vector".into()))?;
        dataset.nearest(&v, k, filter.clone()).await
    };
    let hits: Vec<(Row, f32)> = match req.mode {
        SearchMode::Vector => vector().await?.into_iter().map(|f| (f.row, 1.0 - f.score)).collect(),
        SearchMode::Text => {
            dataset.full_text(&req.query, k, filter.clone()).await?.into_iter().map(|f| (f.row, f.score)).collect()
        }
        SearchMode::Hybrid => {
            let (v, t) = tokio::join!(vector(), dataset.full_text(&req.query, k, filter.clone()));
            rrf(&[v?, t?])
        }
    };
    Ok(hits.into_iter().take(req.limit).map(|(row, score)| hit(row, score)).collect())
}

/// Reciprocal rank fusion of ranked lists (best first), best fused score first; ties keep the
/// order of first appearance.
pub fn rrf(lists: &[Vec<Found>]) -> Vec<(Row, f32)> {
    let mut scores: HashMap<String, (usize, f32)> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for list in lists {
        for (rank, found) in list.iter().enumerate() {
            let add = 1.0 / (RRF_K + rank as f32 + 1.0);
            match scores.get_mut(&found.row.id) {
                Some((_, s)) => *s += add,
                None => {
                    scores.insert(found.row.id.clone(), (rows.len(), add));
                    rows.push(found.row.clone());
                }
            }
        }
    }
    let mut fused: Vec<(Row, f32)> = rows
        .into_iter()
        .map(|r| {
            let score = scores.get(&r.id).map(|(_, s)| *s).unwrap_or_default();
            (r, score)
        })
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

/// The filter as a SQL predicate; `None` when it restricts nothing. A project filter also
/// admits shared knowledge (project id "").
pub fn filter_sql(f: &SearchFilter) -> Result<Option<String>> {
    let mut parts = Vec::new();
    let plain = |field: &str, v: &str| -> Result<()> {
        if v.trim().is_empty() || v.len() > 1000 || v.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "filter.{field}: '{}' must be a non-blank name without control characters, at most 1000 bytes",
                v.escape_debug()
            )));
        }
        Ok(())
    };
    if let Some(p) = &f.project_id {
        plain("project_id", p)?;
        parts.push(format!("(project_id = {} OR project_id = '')", sql_str(p)));
    }
    if !f.languages.is_empty() {
        for l in &f.languages {
            plain("languages", l)?;
        }
        let lower: Vec<String> = f.languages.iter().map(|l| l.to_lowercase()).collect();
        parts.push(format!("language IN ({})", sql_list(&lower)));
    }
    if let Some(prefix) = &f.path_prefix {
        plain("path_prefix", prefix)?;
        let prefix = prefix.trim_start_matches("./");
        parts.push(format!("starts_with(path, {})", sql_str(prefix)));
    }
    if !f.chunk_types.is_empty() {
        for t in &f.chunk_types {
            plain("chunk_types", t)?;
        }
        parts.push(format!("chunk_type IN ({})", sql_list(&f.chunk_types)));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" AND ")))
}

pub(crate) fn hit(row: Row, score: f32) -> SearchHit {
    SearchHit {
        id: row.id,
        project_id: row.project_id,
        path: row.path,
        start_line: row.start_line,
        end_line: row.end_line,
        language: row.language,
        chunk_type: row.chunk_type,
        symbol: row.symbol,
        content: row.content,
        score,
        usage_count: row.usage_count,
        success_rate: row.success_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str) -> Found {
        Found {
            row: Row {
                id: id.into(),
                project_id: String::new(),
                path: String::new(),
                file_hash: String::new(),
                language: String::new(),
                chunk_type: String::new(),
                symbol: String::new(),
                start_line: 0,
                end_line: 0,
                content: String::new(),
                content_hash: String::new(),
                text: String::new(),
                usage_count: 0,
                success_rate: None,
                updated_at: 0,
                meta: String::new(),
                vector: vec![],
            },
            score: 0.0,
        }
    }

    fn ids(fused: &[(Row, f32)]) -> Vec<&str> {
        fused.iter().map(|(r, _)| r.id.as_str()).collect()
    }

    #[test]
    fn fusion_ranks_agreement_above_a_single_first_place() {
        let vector = vec![found("a"), found("b"), found("c")];
        let text = vec![found("d"), found("b"), found("e")];
        let fused = rrf(&[vector, text]);
        // b: 1/62 + 1/62; a and d: 1/61; c and e: 1/63; ties keep the order of first appearance.
        assert_eq!(ids(&fused), ["b", "a", "d", "c", "e"]);
        let b = 2.0 / 62.0;
        assert!((fused[0].1 - b).abs() < 1e-6, "{}", fused[0].1);
        assert!((fused[1].1 - 1.0 / 61.0).abs() < 1e-6, "{}", fused[1].1);
    }

    #[test]
    fn fusion_of_one_list_keeps_its_order() {
        let fused = rrf(&[vec![found("x"), found("y")], vec![]]);
        assert_eq!(ids(&fused), ["x", "y"]);
    }

    #[test]
    fn filters_become_escaped_predicates() {
        let f = SearchFilter {
            project_id: Some("p'1".into()),
            languages: vec!["Rust".into(), "python".into()],
            path_prefix: Some("./src/".into()),
            chunk_types: vec!["function".into()],
        };
        assert_eq!(
            filter_sql(&f).unwrap().unwrap(),
            "(project_id = 'p''1' OR project_id = '') AND language IN ('rust', 'python') \
             AND starts_with(path, 'src/') AND chunk_type IN ('function')"
        );
        assert_eq!(filter_sql(&SearchFilter::default()).unwrap(), None);
        let bad = SearchFilter { path_prefix: Some("a\0b".into()), ..Default::default() };
        let err = filter_sql(&bad).unwrap_err().to_string();
        assert!(err.contains("filter.path_prefix"), "{err}");
    }
}
