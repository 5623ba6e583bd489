//! A retrieval-quality evaluation built from public code: doc comment -> function pairs mined
//! from Rust crates (those in the local cargo registry). The method of code-search sets such as
//! CodeSearchNet: each documented function's doc comment is removed from a copy of the crate,
//! the copy is indexed, and the doc comment's first sentence is the query whose right answer
//! is the chunk holding that function. Scores are MRR@10, recall@10 and top-1 accuracy.

use std::path::{Path, PathBuf};

/// A query and where its answer is in the stripped copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub query: String,
    /// Workspace-relative path of the file.
    pub path: String,
    /// 1-based line of the `fn` in the stripped copy.
    pub line: u32,
    pub function: String,
}

/// Copies the `.rs` files under `crate_dir/src` to `dest/src`, removing the doc comment of each
/// function whose doc has a usable first sentence (three words or more, not code), and returns
/// one [`Pair`] per such function. Other docs stay.
pub fn mine_rust_crate(crate_dir: &Path, dest: &Path) -> std::io::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    let mut files = Vec::new();
    collect_rs(&crate_dir.join("src"), &mut files)?;
    files.sort();
    for file in files {
        let Ok(rel) = file.strip_prefix(crate_dir) else { continue };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let (stripped, found) = strip_file(&text, &rel);
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, stripped)?;
        pairs.extend(found);
    }
    Ok(pairs)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// One file: its text without function doc comments, and the pairs found.
pub fn strip_file(text: &str, rel: &str) -> (String, Vec<Pair>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut keep = Vec::with_capacity(lines.len());
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with("///") {
            keep.push(lines[i]);
            i += 1;
            continue;
        }
        let doc_start = i;
        while i < lines.len() && lines[i].trim_start().starts_with("///") {
            i += 1;
        }
        let mut j = i;
        while j < lines.len() && (lines[j].trim_start().starts_with("#[") || lines[j].trim().is_empty()) {
            j += 1;
        }
        let function = lines.get(j).and_then(|l| fn_name(l));
        match (function, first_sentence(&lines[doc_start..i])) {
            (Some(name), Some(query)) => {
                // The fn's line once the doc lines are gone: lines kept so far, plus the
                // attribute lines between the doc and the fn, plus one.
                let line = (keep.len() + (j - i) + 1) as u32;
                pairs.push(Pair { query, path: rel.to_string(), line, function: name });
            }
            // Not a function's, or no usable query in it: the doc stays.
            _ => keep.extend_from_slice(&lines[doc_start..i]),
        }
    }
    let mut out = keep.join("\n");
    out.push('\n');
    (out, pairs)
}

/// The function declared on `line`, if it declares one.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe ", "extern \"C\" ", "default "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
        rest = rest.trim_start();
    }
    for prefix in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// The doc comment's first sentence as plain text, when it is a usable query.
fn first_sentence(doc: &[&str]) -> Option<String> {
    let mut text = String::new();
    for line in doc {
        let l = line.trim_start().trim_start_matches('/').trim();
        if l.is_empty() {
            break;
        }
        if l.starts_with("```") || l.starts_with('#') {
            return None;
        }
        text.push_str(l);
        text.push(' ');
    }
    let mut sentence = match text.find(". ") {
        Some(end) => text[..end].to_string(),
        None => text.trim_end().trim_end_matches('.').to_string(),
    };
    sentence.retain(|c| c != '`' && c != '[' && c != ']' && c != '*');
    let sentence = sentence.trim().to_string();
    (sentence.split_whitespace().count() >= 3).then_some(sentence)
}

/// Where the right answer came in a ranked list of (path, start, end), if in the first `k`.
pub fn rank_of(pair: &Pair, hits: &[(String, u32, u32)], k: usize) -> Option<usize> {
    hits.iter().take(k).position(|(path, start, end)| *path == pair.path && *start <= pair.line && pair.line <= *end)
}

/// Where the first of several equally right answers came in a ranked list, if in the first
/// `k`: a query whose sentence documents several functions of the project (two `is_match`
/// methods with the same doc) is answered by any of them.
pub fn rank_of_any(answers: &[&Pair], hits: &[(String, u32, u32)], k: usize) -> Option<usize> {
    answers.iter().filter_map(|p| rank_of(p, hits, k)).min()
}

/// For each pair of `pairs` (project, pair), every pair of the same project with the same
/// query: its equally right answers (itself included).
pub fn same_query(pairs: &[(String, Pair)]) -> Vec<Vec<&Pair>> {
    let mut by_query: std::collections::HashMap<(&str, &str), Vec<&Pair>> = std::collections::HashMap::new();
    for (project, p) in pairs {
        by_query.entry((project, &p.query)).or_default().push(p);
    }
    pairs.iter().map(|(project, p)| by_query[&(project.as_str(), p.query.as_str())].clone()).collect()
}

/// Quality of one retriever over a set of queries.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    pub queries: usize,
    /// Mean of 1/rank over queries whose answer is in the first 10 (0 otherwise).
    pub mrr_at_10: f64,
    /// Share of queries whose answer is in the first 10.
    pub recall_at_10: f64,
    /// Share of queries whose answer is first.
    pub top1: f64,
}

/// Scores from each query's 0-based rank (`None`: not in the first 10).
pub fn score(ranks: &[Option<usize>]) -> Scores {
    let n = ranks.len();
    if n == 0 {
        return Scores::default();
    }
    let mrr: f64 = ranks.iter().map(|r| r.map_or(0.0, |r| 1.0 / (r as f64 + 1.0))).sum();
    let found = ranks.iter().filter(|r| r.is_some()).count();
    let first = ranks.iter().filter(|r| **r == Some(0)).count();
    Scores {
        queries: n,
        mrr_at_10: mrr / n as f64,
        recall_at_10: found as f64 / n as f64,
        top1: first as f64 / n as f64,
    }
}

/// The newest `<name>-<version>` directory of the local cargo registry, if any.
pub fn registry_crate(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join("registry").join("src"))
        .ok()?
        .flatten()
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(name))
                .and_then(|v| v.strip_prefix('-'))
                .is_some_and(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        })
        .filter(|p| p.join("src").is_dir())
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_of_functions_become_queries_and_leave_the_copy() {
        let src = "\
//! Module doc stays.

/// A struct doc stays.
pub struct S;

impl S {
    /// Parses the version string into parts.
    ///
    /// More detail.
    #[inline]
    pub fn parse(s: &str) -> S {
        S
    }

    /// Short.
    fn tiny() {}
}

/// ```
/// code only
/// ```
pub async fn skipped() {}
";
        let (out, pairs) = strip_file(src, "src/lib.rs");
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        let p = &pairs[0];
        assert_eq!((p.query.as_str(), p.function.as_str()), ("Parses the version string into parts", "parse"));
        assert_eq!(out.lines().nth(p.line as usize - 1).unwrap().trim(), "pub fn parse(s: &str) -> S {");
        assert!(out.contains("//! Module doc stays.") && out.contains("/// A struct doc stays."));
        assert!(!out.contains("Parses the version"), "the query's doc is gone: {out}");
        // Docs that are no query stay, as in any real repository.
        assert!(out.contains("/// Short.") && out.contains("/// code only"), "{out}");
    }

    #[test]
    fn a_query_documenting_several_functions_is_answered_by_any() {
        let pair = |line, function: &str| Pair {
            query: "Returns true if any glob matches".into(),
            path: "src/lib.rs".into(),
            line,
            function: function.into(),
        };
        let (a, b) = (pair(10, "is_match"), pair(40, "is_match_candidate"));
        let other = Pair { query: "Builds the set".into(), ..pair(70, "build") };
        let pairs =
            vec![("p".to_string(), a.clone()), ("p".into(), b.clone()), ("q".into(), a.clone()), ("p".into(), other)];
        let same = same_query(&pairs);
        assert_eq!(same[0], [&a, &b]);
        assert_eq!(same[2], [&a], "another project's function is not an answer");
        assert_eq!(same[3].len(), 1);
        let hits = vec![("src/lib.rs".to_string(), 35, 50), ("src/lib.rs".to_string(), 5, 20)];
        assert_eq!(rank_of(&a, &hits, 10), Some(1));
        assert_eq!(rank_of_any(&same[0], &hits, 10), Some(0));
        assert_eq!(rank_of_any(&same[2], &hits, 10), Some(1));
        assert_eq!(rank_of_any(&same[0], &hits, 1), Some(0));
        assert_eq!(rank_of_any(&same[2], &hits, 1), None);
    }

    #[test]
    fn ranks_and_scores() {
        let pair = Pair { query: "q".into(), path: "src/a.rs".into(), line: 12, function: "f".into() };
        let hits = vec![("src/b.rs".to_string(), 1, 50), ("src/a.rs".to_string(), 10, 20)];
        assert_eq!(rank_of(&pair, &hits, 10), Some(1));
        assert_eq!(rank_of(&pair, &hits, 1), None);
        let s = score(&[Some(0), Some(1), None, Some(3)]);
        assert_eq!(s.queries, 4);
        assert!((s.mrr_at_10 - (1.0 + 0.5 + 0.0 + 0.25) / 4.0).abs() < 1e-12);
        assert!((s.recall_at_10 - 0.75).abs() < 1e-12);
        assert!((s.top1 - 0.25).abs() < 1e-12);
    }
}
