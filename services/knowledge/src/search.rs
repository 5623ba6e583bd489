//! Hybrid retrieval: the query's vector against the chunk vectors, BM25 over the chunks'
//! text and BM25 over their qualified names (both with identifier-aware tokens), each over the
//! same filter; the union of their candidates is ranked by [`rerank`] (a weighted sum of
//! features of each candidate, the weights fitted on other crates than the evaluation's).
//! [`rrf`], reciprocal rank fusion, was the first fusion and stays as the bench's baseline.
//! Measured by `turbo-knowledge-bench` (docs/benchmarks.md, section 7).

use std::collections::HashMap;

use turbo_core::knowledge::{SearchFilter, SearchHit, SearchMode, SearchRequest};

use crate::dataset::{Dataset, Found, FullText, Row, sql_list, sql_str};
use crate::embed::Embedder;
use crate::{Error, Result, rerank};

/// RRF's rank offset: the usual 60 keeps a single first place from outweighing agreement.
pub const RRF_K: f32 = 60.0;

/// Candidates each retriever contributes to the fusion, per hit asked for.
const CANDIDATES_PER_HIT: usize = 3;
const MIN_CANDIDATES: usize = 30;

/// Runs `req` against the dataset. The request must have passed [`SearchRequest::check`].
pub async fn search(dataset: &Dataset, embedder: &dyn Embedder, req: &SearchRequest) -> Result<Vec<SearchHit>> {
    let filter = filter_sql(&req.filter)?;
    let k = (req.limit * CANDIDATES_PER_HIT).max(MIN_CANDIDATES);
    let hits: Vec<(Row, f32)> = match req.mode {
        SearchMode::Vector => {
            let v = embed_query(embedder, &req.query).await?;
            dataset.nearest(&v, k, filter).await?.into_iter().map(|f| (f.row, 1.0 - f.score)).collect()
        }
        SearchMode::Text => {
            dataset.full_text(&req.query, k, filter).await?.into_iter().map(|f| (f.row, f.score)).collect()
        }
        SearchMode::Hybrid => {
            let v = embed_query(embedder, &req.query).await?;
            let found = candidates(dataset, &v, &req.query, k, filter).await?;
            rerank::rank(&rerank::Query::new(&req.query, &v), found, &rerank::WEIGHTS)
        }
    };
    Ok(hits.into_iter().take(req.limit).map(|(row, score)| hit(row, score)).collect())
}

/// The query's vector.
pub async fn embed_query(embedder: &dyn Embedder, query: &str) -> Result<Vec<f32>> {
    let v = embedder.embed(&[query.to_string()]).await?;
    v.into_iter().next().ok_or_else(|| Error::Search("the embedder returned no vector".into()))
}

/// The hybrid search's candidates: the `k` best of each retriever (vector, BM25 over the text,
/// BM25 over the qualified names), run together over the same filter.
pub async fn candidates(
    dataset: &Dataset,
    vector: &[f32],
    query: &str,
    k: usize,
    filter: Option<String>,
) -> Result<Vec<rerank::Candidate>> {
    let (v, t, s) = tokio::join!(
        dataset.nearest(vector, k, filter.clone()),
        dataset.full_text(query, k, filter.clone()),
        dataset.full_text_in(FullText::Symbol, query, k, filter)
    );
    Ok(rerank::candidates([v?, t?, s?]))
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

/// Whether a chunk is test code: under a `test(s)`, `__tests__` or `spec(s)` directory, in a
/// test file by the usual names (`test_x.py`, `x_test.go`, `x.test.ts`, `x.spec.js`,
/// `tests.rs`), or inside a `tests` module or a `test_` function.
pub fn is_test(path: &str, symbol: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let dir = parts.iter().any(|d| matches!(*d, "test" | "tests" | "__tests__" | "spec" | "specs"));
    let stem = file.split('.').next().unwrap_or_default();
    let named = stem.starts_with("test_")
        || stem.ends_with("_test")
        || matches!(stem, "test" | "tests")
        || file.contains(".test.")
        || file.contains(".spec.");
    let mut names = symbol.split("::");
    let last = symbol.rsplit("::").next().unwrap_or_default();
    let scoped = names.any(|n| n == "tests" || n == "test") || last.starts_with("test_");
    dir || named || scoped
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
        Found { row: Row { id: id.into(), ..Row::default() }, score: 0.0 }
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
    fn test_code_is_known_by_place_name_and_scope() {
        for (path, symbol) in [
            ("tests/walk.rs", "walks"),
            ("pkg/server_test.go", "TestServe"),
            ("app/test_views.py", "TestViews::setup"),
            ("web/src/__tests__/a.js", "renders"),
            ("web/src/button.spec.ts", "clicks"),
            ("src/lib.rs", "tests::parses"),
            ("src/walk.rs", "WalkTests::test_hidden"),
        ] {
            assert!(is_test(path, symbol), "{path} {symbol}");
        }
        for (path, symbol) in [("src/lib.rs", "Url::port"), ("src/testing.rs", "latest"), ("attest/x.py", "attest")] {
            assert!(!is_test(path, symbol), "{path} {symbol}");
        }
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
