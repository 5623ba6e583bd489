//! The hybrid search's last step: every candidate of the three retrievers (vector, BM25 over
//! the text, BM25 over the qualified names) gets a score that is a weighted sum of
//! [`FEATURES`] features, and the best come first.
//!
//! Reciprocal rank fusion, the step before this one, keeps only each list's ranks: a chunk
//! whose name says what the query says and a chunk that only shares its file's words count
//! the same at the same rank. The features keep what the ranks lose: the cosine similarity
//! itself and its gap to the best, BM25 scores against each list's best, how much of the
//! chunk's name the query's words cover (stemmed: "Adds the glob" covers `add_glob`), whether
//! the chunk is test code or a container (an impl block, a class), and its length.
//!
//! The weights are [`WEIGHTS`], fitted by [`fit`] (softmax cross-entropy over each query's
//! candidates, the right answer the target) on doc-comment queries of crates that are not the
//! evaluation's: `turbo-knowledge-bench --fit` prints them, and the evaluation's figures in
//! docs/benchmarks.md (section 7) are of crates the weights never saw.

use std::collections::HashSet;

use crate::dataset::{Found, Row};
use crate::index::identifier_words;
use crate::search::is_test;

/// How many features describe a candidate.
pub const FEATURES: usize = 23;

/// The features, in order, as the bench prints them. "Words" are stemmed, without stop words;
/// "abbreviated" also counts a word that begins the other (`dir` for "directory").
pub const NAMES: [&str; FEATURES] = [
    "cosine",
    "vector 1/rank",
    "text bm25 / best",
    "text 1/rank",
    "names bm25 / best",
    "names 1/rank",
    "test code (query not about tests)",
    "container (impl, class)",
    "callable (function, method)",
    "ln(1 + lines) / 5",
    "name words in the query",
    "name words in the query, abbreviated",
    "query words in the name and path",
    "query words in the name and path, abbreviated",
    "query words in the enclosing scope",
    "query words in the signature",
    "query words in the first 800 characters",
    "the name begins with the query's first word",
    "setter: set_ name, query begins set/change/toggle/enable/disable",
    "constructor: new/with_/from_ name, query begins create/construct/build/new/make",
    "yes/no query (returns true if, whether, is) and a predicate (bool result or is_/has_ name)",
    "public: part of its module's interface (pub, public, export, a capital in Go, no _ in Python)",
    "count query (the number of, how many, count, total) and an integer result",
];

/// Fitted by `turbo-knowledge-bench --fit` on 2,653 doc-comment queries of 18 crates (walkdir,
/// tempfile, same-file, smallvec, similar, base64, itertools, bytes, http, indexmap, either,
/// anyhow, bstr, num-traits, fst, arrayvec, dashmap, crossbeam-channel), none of them an
/// evaluation crate (docs/benchmarks.md, section 7); the order of [`NAMES`].
#[rustfmt::skip]
pub const WEIGHTS: [f32; FEATURES] = [
    5.304, 0.755, 1.433, 0.574, 0.079, 0.482, -1.379,
    0.594, 1.800, 1.290, -0.840, 1.531, -0.156, 1.587,
    1.420, 2.608, -1.411, 0.377, 0.323, 1.157, 2.464,
    1.376, 2.225,
];

/// The retrievers whose lists make the candidates, in the order of [`Candidate::found`].
pub const RETRIEVERS: usize = 3;

/// One chunk found by at least one retriever: its 0-based rank and score in each list.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub row: Row,
    /// Per retriever (vector, text, names): (rank, score), `None` when it did not list it.
    /// The vector score is the cosine distance (smaller is better), the others BM25.
    pub found: [Option<(usize, f32)>; RETRIEVERS],
}

/// The union of the retrievers' lists (best first each), in order of first appearance.
pub fn candidates(lists: [Vec<Found>; RETRIEVERS]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (list, found) in lists.into_iter().enumerate() {
        for (rank, f) in found.into_iter().enumerate() {
            let i = *at.entry(f.row.id.clone()).or_insert_with(|| {
                out.push(Candidate { row: f.row, found: [None; RETRIEVERS] });
                out.len() - 1
            });
            out[i].found[list].get_or_insert((rank, f.score));
        }
    }
    out
}

/// What the features need of the query: its vector, its words and first word, and whether
/// it asks about tests or reads as a yes/no question.
pub struct Query<'a> {
    vector: &'a [f32],
    words: HashSet<String>,
    first: String,
    about_tests: bool,
    yes_no: bool,
    count: bool,
}

impl<'a> Query<'a> {
    pub fn new(text: &str, vector: &'a [f32]) -> Self {
        let words: HashSet<String> = content_words(text).collect();
        let first = identifier_words(text).split_whitespace().next().map(stem).unwrap_or_default();
        let about_tests = text.split(|c: char| !c.is_alphanumeric()).any(|w| {
            let w = w.to_lowercase();
            w.starts_with("test") || w == "spec" || w == "specs"
        });
        let lower = text.trim_start().to_lowercase();
        let yes_no = ["returns true", "return true", "whether", "check", "tests whether", "is ", "are ", "does "]
            .iter()
            .any(|p| lower.starts_with(p));
        let plain: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let count = plain.windows(2).any(|w| matches!(w, ["number", "of"] | ["how", "many"]))
            || plain.iter().any(|w| matches!(*w, "count" | "counts" | "total"));
        Self { vector, words, first, about_tests, yes_no, count }
    }

    /// The share of `words` among the query's words.
    fn covers(&self, words: &HashSet<String>, abbreviated: bool) -> f32 {
        share(self.words.iter(), |q| contains(words, q, abbreviated))
    }
}

const SETTER_VERBS: &[&str] = &["set", "change", "toggle", "enable", "disable", "configure"];
const CONSTRUCTOR_VERBS: &[&str] = &["create", "construct", "build", "new", "make"];

/// Each candidate's features, in the order of [`NAMES`].
pub fn features(q: &Query, candidates: &[Candidate]) -> Vec<[f32; FEATURES]> {
    let best = |list: usize| {
        candidates.iter().filter_map(|c| c.found[list].map(|(_, s)| s)).fold(0.0f32, f32::max).max(f32::EPSILON)
    };
    let (best_text, best_names) = (best(1), best(2));
    let rr = |c: &Candidate, list: usize| c.found[list].map_or(0.0, |(rank, _)| 1.0 / (rank as f32 + 1.0));
    let score = |c: &Candidate, list: usize| c.found[list].map_or(0.0, |(_, s)| s);
    let flag = |b: bool| b as u8 as f32;
    candidates
        .iter()
        .map(|c| {
            let row = &c.row;
            let (scope, last) = match row.symbol.rsplit_once("::") {
                Some((scope, last)) => (scope, last),
                None => ("", row.symbol.as_str()),
            };
            let name: Vec<String> = words(last).collect();
            let name_in_query = |abbreviated: bool| share(name.iter(), |w| contains(&q.words, w, abbreviated));
            let around: HashSet<String> = words(&row.symbol).chain(words(&row.path)).collect();
            let signature = signature(row);
            let head: String = row.content.chars().take(800).collect();
            let lines = row.end_line.saturating_sub(row.start_line) as f32 + 1.0;
            let first_name_word = name.first().map(String::as_str).unwrap_or_default();
            let lower_last = last.to_lowercase();
            let begins = |verbs: &[&str]| verbs.iter().any(|v| stem(v) == q.first);
            let setter = first_name_word == "set" && begins(SETTER_VERBS);
            let constructor = (matches!(lower_last.as_str(), "new" | "default" | "build")
                || ["with_", "from_", "new_"].iter().any(|p| lower_last.starts_with(p)))
                && begins(CONSTRUCTOR_VERBS);
            let predicate = returns_bool(&signature) || matches!(first_name_word, "is" | "has" | "can" | "contain");
            [
                // A vector hit's score is its cosine distance (its vector is not read); a
                // chunk only the full-text searches found carries its vector.
                c.found[0].map_or_else(|| cosine(q.vector, &row.vector), |(_, distance)| 1.0 - distance),
                rr(c, 0),
                score(c, 1) / best_text,
                rr(c, 1),
                score(c, 2) / best_names,
                rr(c, 2),
                flag(!q.about_tests && is_test(&row.path, &row.symbol)),
                flag(matches!(row.chunk_type.as_str(), "impl" | "class")),
                flag(matches!(row.chunk_type.as_str(), "function" | "method")),
                lines.ln_1p() / 5.0,
                name_in_query(false),
                name_in_query(true),
                q.covers(&around, false),
                q.covers(&around, true),
                q.covers(&words(scope).collect(), false),
                q.covers(&words(&signature).collect(), false),
                q.covers(&words(&head).collect(), false),
                flag(!q.first.is_empty() && first_name_word == q.first),
                flag(setter),
                flag(constructor),
                flag(q.yes_no && predicate),
                flag(is_public(row, last, &signature)),
                flag(q.count && returns_integer(&signature)),
            ]
        })
        .collect()
}

/// The chunk's signature: what its full-text line holds after its path and name.
fn signature(row: &Row) -> String {
    let line = row.text.lines().next().unwrap_or_default();
    let rest = line.strip_prefix(row.path.as_str()).unwrap_or(line).trim_start();
    rest.strip_prefix(row.symbol.as_str()).unwrap_or(rest).trim().to_string()
}

/// Whether a signature returns a boolean: `-> bool` (Rust, Python), `): boolean` (TypeScript),
/// `) bool {` (Go), `public boolean isX(` (Java).
fn returns_bool(signature: &str) -> bool {
    let after = signature.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let before = signature.split('(').next().unwrap_or_default();
    after.contains("bool") || before.split_whitespace().any(|w| w == "bool" || w == "boolean")
}

/// Whether a unit is part of its module's interface: `pub` (any `pub(...)` too) in Rust,
/// `public` in Java, `export` (or a method neither private nor `#`) in JavaScript and
/// TypeScript, a capital initial in Go, and a name without a leading underscore (dunders
/// count) in Python. Other languages: never.
fn is_public(row: &Row, name: &str, signature: &str) -> bool {
    let mut tokens =
        signature.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '#')).filter(|t| !t.is_empty());
    match row.language.as_str() {
        "rust" => tokens.any(|t| t == "pub"),
        "java" => tokens.any(|t| t == "public"),
        "javascript" | "typescript" => {
            let tokens: Vec<&str> = tokens.collect();
            tokens.contains(&"export")
                || (row.chunk_type == "method"
                    && !name.starts_with('#')
                    && !tokens.iter().any(|t| matches!(*t, "private" | "protected")))
        }
        "go" => name.starts_with(|c: char| c.is_uppercase()),
        "python" => !name.starts_with('_') || (name.starts_with("__") && name.ends_with("__")),
        _ => false,
    }
}

/// Whether a signature returns an integer (alone, optional or in a result): `-> usize`
/// (Rust), `-> int` (Python), `) int {` (Go), `public long count(` (Java), `): number`
/// (TypeScript).
fn returns_integer(signature: &str) -> bool {
    const INTEGERS: &[&str] =
        &["usize", "isize", "u64", "i64", "u32", "i32", "u16", "i16", "u8", "i8", "int", "long", "integer", "number"];
    let after = signature.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let before = signature.split('(').next().unwrap_or_default();
    let words =
        |s: &str| s.split(|c: char| !c.is_alphanumeric()).any(|w| INTEGERS.contains(&w.to_lowercase().as_str()));
    words(after) || before.split_whitespace().rev().nth(1).is_some_and(words)
}

/// The share of `items` for which `hit` holds (0 when there are none).
fn share<'w>(items: impl Iterator<Item = &'w String>, hit: impl Fn(&str) -> bool) -> f32 {
    let (mut n, mut yes) = (0usize, 0usize);
    for w in items {
        n += 1;
        yes += hit(w) as usize;
    }
    if n == 0 { 0.0 } else { yes as f32 / n as f32 }
}

/// Whether `set` holds `word`; abbreviated, also a word of three letters or more that begins
/// `word` or that `word` begins.
fn contains(set: &HashSet<String>, word: &str, abbreviated: bool) -> bool {
    set.contains(word)
        || (abbreviated
            && word.len() >= 3
            && set.iter().any(|w| w.len() >= 3 && (w.starts_with(word) || word.starts_with(w.as_str()))))
}

/// The candidates by `weights · features`, best first (ties keep their order), with that
/// score.
pub fn rank(q: &Query, candidates: Vec<Candidate>, weights: &[f32; FEATURES]) -> Vec<(Row, f32)> {
    let features = features(q, &candidates);
    let mut scored: Vec<(Row, f32)> =
        candidates.into_iter().zip(&features).map(|(c, f)| (c.row, dot(weights, f))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

/// Candidate indices by `weights · features`, best first (ties keep their order).
pub fn order(features: &[[f32; FEATURES]], weights: &[f32; FEATURES]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..features.len()).collect();
    order.sort_by(|&a, &b| dot(weights, &features[b]).total_cmp(&dot(weights, &features[a])));
    order
}

/// One training query: its candidates' features and which of them are right answers.
#[derive(Clone, Debug)]
pub struct Sample {
    pub query: String,
    pub features: Vec<[f32; FEATURES]>,
    pub right: Vec<usize>,
}

/// Weights that maximise the probability a softmax over each query's candidate scores gives
/// its right answers (summed when a query has several), with a little L2 regularisation;
/// full-batch gradient descent with Adam from zero. Samples without a right answer among
/// their candidates teach nothing and are skipped.
pub fn fit(samples: &[Sample], steps: usize) -> [f32; FEATURES] {
    const RATE: f32 = 0.05;
    const L2: f32 = 1e-3;
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut w = [0.0f32; FEATURES];
    let (mut m, mut v) = ([0.0f32; FEATURES], [0.0f32; FEATURES]);
    let used: Vec<&Sample> = samples.iter().filter(|s| !s.right.is_empty() && !s.features.is_empty()).collect();
    for step in 1..=steps {
        let mut grad = [0.0f32; FEATURES];
        for s in &used {
            let p = softmax(s.features.iter().map(|f| dot(&w, f)));
            let right_p: f32 = s.right.iter().map(|&i| p[i]).sum::<f32>().max(f32::MIN_POSITIVE);
            // d(-ln Σ_right p_i)/dw = E_p[f] - E_{p restricted to right}[f]
            for (i, f) in s.features.iter().enumerate() {
                let q = if s.right.contains(&i) { p[i] / right_p } else { 0.0 };
                for k in 0..FEATURES {
                    grad[k] += (p[i] - q) * f[k];
                }
            }
        }
        let n = used.len().max(1) as f32;
        for k in 0..FEATURES {
            let g = grad[k] / n + L2 * w[k];
            m[k] = b1 * m[k] + (1.0 - b1) * g;
            v[k] = b2 * v[k] + (1.0 - b2) * g * g;
            let m_hat = m[k] / (1.0 - b1.powi(step as i32));
            let v_hat = v[k] / (1.0 - b2.powi(step as i32));
            w[k] -= RATE * m_hat / (v_hat.sqrt() + eps);
        }
    }
    w
}

fn softmax(scores: impl Iterator<Item = f32>) -> Vec<f32> {
    let s: Vec<f32> = scores.collect();
    let max = s.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

fn dot(a: &[f32; FEATURES], b: &[f32; FEATURES]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa.sqrt() * bb.sqrt()) }
}

/// Lowercase words of `text`, identifiers split (`WalkBuilder::add_glob` gives walk, build,
/// add, glob), each stemmed.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    identifier_words(text).split_whitespace().map(stem).collect::<Vec<_>>().into_iter()
}

/// [`words`] without stop words.
fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    identifier_words(text)
        .split_whitespace()
        .filter(|w| !STOP_WORDS.contains(w))
        .map(stem)
        .collect::<Vec<_>>()
        .into_iter()
}

/// A light English stemmer for matching a query's words to a name's: plural, verb and agent
/// endings ("matches", "matching" and "matcher" to "match", "entries" to "entry", "added" to
/// "add", "parse" and "parser" to "pars"). Both sides go through it, so its stems need only
/// agree, not be words.
pub fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    if !w.is_ascii() || w.len() <= 3 {
        return w;
    }
    let mut w = inflection(w);
    if let Some(s) = w.strip_suffix("er").filter(|s| s.len() >= 3) {
        w = undouble(s);
    }
    if w.len() > 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

fn inflection(w: String) -> String {
    let n = w.len();
    if let Some(s) = w.strip_suffix("ies").filter(|s| s.len() >= 2) {
        return format!("{s}y");
    }
    for suffix in ["sses", "shes", "ches", "xes", "zes"] {
        if w.ends_with(suffix) {
            return w[..n - 2].to_string();
        }
    }
    if let Some(s) = w.strip_suffix("ing").filter(|s| s.len() >= 3) {
        return undouble(s);
    }
    if let Some(s) = w.strip_suffix("ed").filter(|s| s.len() >= 3) {
        return undouble(s);
    }
    if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..n - 1].to_string();
    }
    w
}

/// "stopp" to "stop", "add" stays.
fn undouble(s: &str) -> String {
    let b = s.as_bytes();
    let n = b.len();
    if n >= 3 && b[n - 1] == b[n - 2] && !matches!(b[n - 1], b'l' | b's' | b'z' | b'd' | b'f') {
        s[..n - 1].to_string()
    } else {
        s.to_string()
    }
}

const STOP_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "to",
    "in",
    "on",
    "for",
    "and",
    "or",
    "is",
    "are",
    "be",
    "this",
    "that",
    "it",
    "its",
    "if",
    "with",
    "by",
    "as",
    "at",
    "from",
    "into",
    "when",
    "which",
    "not",
    "no",
    "any",
    "all",
    "given",
    "otherwise",
    "return",
    "true",
    "false",
    "whether",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, symbol: &str, path: &str, chunk_type: &str, vector: Vec<f32>) -> Row {
        Row {
            id: id.into(),
            path: path.into(),
            language: "rust".into(),
            chunk_type: chunk_type.into(),
            symbol: symbol.into(),
            start_line: 1,
            end_line: 10,
            vector,
            ..Row::default()
        }
    }

    fn found(row: Row, score: f32) -> Found {
        Found { row, score }
    }

    #[test]
    fn stems_match_a_querys_words_to_a_names() {
        for (a, b) in [
            ("matches", "matching"),
            ("matcher", "match"),
            ("entries", "entry"),
            ("added", "add"),
            ("adds", "add"),
            ("Globs", "glob"),
            ("stopped", "stop"),
            ("parser", "parse"),
            ("setter", "set"),
            ("builder", "build"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} and {b}");
        }
        for (a, b) in [("class", "clas"), ("status", "statu"), ("user", "us"), ("is", "i")] {
            assert_ne!(stem(a), stem(b), "{a} and {b}");
        }
    }

    #[test]
    fn candidates_keep_each_lists_rank_and_score() {
        let a = row("a", "A::x", "src/a.rs", "method", vec![1.0, 0.0]);
        let b = row("b", "B::y", "src/b.rs", "method", vec![0.0, 1.0]);
        let c = candidates([vec![found(a.clone(), 0.1), found(b.clone(), 0.4)], vec![found(b.clone(), 7.0)], vec![]]);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].row.id.as_str(), c[0].found), ("a", [Some((0, 0.1)), None, None]));
        assert_eq!((c[1].row.id.as_str(), c[1].found), ("b", [Some((1, 0.4)), Some((0, 7.0)), None]));
    }

    #[test]
    fn features_say_what_the_ranks_do_not() {
        let v = vec![1.0, 0.0];
        let q = Query::new("Adds a glob to the directory set", &v);
        let mut add = row("a", "GlobSetBuilder::add", "src/set.rs", "method", vec![0.6, 0.8]);
        add.text = "src/set.rs GlobSetBuilder::add pub fn add(&mut self, glob: Glob) -> &mut Self\n".into();
        add.content = "pub fn add(&mut self, glob: Glob) -> &mut Self {\n    self.pats.push(glob);\n}".into();
        let c = candidates([
            vec![
                found(row("t", "tests::add_glob", "src/set.rs", "function", vec![1.0, 0.0]), 0.0),
                found(add.clone(), 0.4),
                found(row("i", "GlobSet", "src/set.rs", "impl", vec![0.0, 1.0]), 1.0),
                found(row("d", "is_dir", "src/walk.rs", "function", vec![0.0, 1.0]), 1.0),
            ],
            vec![found(add, 4.0)],
            vec![],
        ]);
        let f = features(&q, &c);
        let (t, a, i, d) = (&f[0], &f[1], &f[2], &f[3]);
        assert!((t[0] - 1.0).abs() < 1e-6 && (a[0] - 0.6).abs() < 1e-6 && i[0].abs() < 1e-6, "cosine");
        assert_eq!((t[1], a[1], i[1]), (1.0, 0.5, 1.0 / 3.0), "vector 1/rank");
        assert_eq!((a[2], a[3], t[2], t[3]), (1.0, 1.0, 0.0, 0.0), "text score and rank");
        assert_eq!((t[6], a[6]), (1.0, 0.0), "test code");
        assert_eq!((i[7], a[7]), (1.0, 0.0), "container");
        assert_eq!((a[8], i[8]), (1.0, 0.0), "callable");
        assert_eq!((t[10], a[10]), (1.0, 1.0), "'add glob' and 'add' are in the query");
        // "dir" abbreviates "directory": only counted as such.
        assert_eq!((d[10], d[11]), (0.0, 0.5), "is_dir: 'dir' abbreviated, 'is' not in the query");
        // Query words: add, glob, directory, set. The builder's name and path hold add, glob
        // and set; its signature and its first lines add and glob.
        assert_eq!((a[12], a[15], a[16]), (0.75, 0.5, 0.5));
        assert_eq!((a[14], t[14]), (0.5, 0.0), "the scope GlobSetBuilder holds glob and set");
        assert_eq!((a[17], t[17], d[17]), (1.0, 1.0, 0.0), "the name begins with 'add'");
        // A chunk only the text search found: its cosine comes from its vector.
        let only_text =
            candidates([vec![], vec![found(row("x", "f", "src/x.rs", "function", vec![0.8, 0.6]), 2.0)], vec![]]);
        assert!((features(&q, &only_text)[0][0] - 0.8).abs() < 1e-6, "cosine of a text hit");
        // A vector hit's vector is not read: its distance says its cosine.
        let no_vector = candidates([vec![found(row("y", "g", "src/y.rs", "function", vec![]), 0.25)], vec![], vec![]]);
        assert!((features(&q, &no_vector)[0][0] - 0.75).abs() < 1e-6, "cosine of a vector hit");
        let about_tests = Query::new("Tests adding a glob", &v);
        assert_eq!(features(&about_tests, &c)[0][6], 0.0, "a query about tests does not count test code down");
    }

    #[test]
    fn conventions_of_doc_comments_are_features() {
        let v = vec![1.0, 0.0];
        let mut set_port = row("s", "Url::set_port", "src/lib.rs", "method", vec![1.0, 0.0]);
        set_port.text =
            "src/lib.rs Url::set_port pub fn set_port(&mut self, port: Option<u16>) -> Result<(), ()>".into();
        let mut new = row("n", "Walk::new", "src/walk.rs", "method", vec![1.0, 0.0]);
        new.text = "src/walk.rs Walk::new pub fn new<P: AsRef<Path>>(path: P) -> Walk".into();
        let mut hidden = row("h", "Glob::hidden", "src/lib.rs", "method", vec![1.0, 0.0]);
        hidden.text = "src/lib.rs Glob::hidden fn hidden(&self) -> bool".into();
        let java = row("j", "Walker::isHidden", "W.java", "method", vec![1.0, 0.0]);
        let c = candidates([
            vec![found(set_port, 0.0), found(new, 0.0), found(hidden, 0.0), found(java, 0.0)],
            vec![],
            vec![],
        ]);
        let at = |query: &str| features(&Query::new(query, &v), &c);
        let f = at("Change this URL's port");
        assert_eq!((f[0][18], f[1][18]), (1.0, 0.0), "setter");
        let f = at("Creates a new walker");
        assert_eq!((f[0][19], f[1][19]), (0.0, 1.0), "constructor");
        let f = at("Returns true if this glob matches hidden files");
        assert_eq!((f[0][20], f[2][20], f[3][20]), (0.0, 1.0, 1.0), "predicates: a bool result or an is_ name");
        assert_eq!(at("The glob's hidden files")[2][20], 0.0, "not a yes/no query");
        assert!(returns_bool("func (w *Walker) Hidden() bool {") && returns_bool("public boolean isHidden()"));
        assert!(returns_bool("hidden(): boolean") && !returns_bool("fn booleans(&self) -> Vec<u8>"));
    }

    #[test]
    fn what_a_module_offers_and_counts_asked_for_are_features() {
        let v = vec![1.0, 0.0];
        let unit = |id: &str, language: &str, kind: &str, symbol: &str, signature: &str| {
            let mut r = row(id, symbol, "src/x", kind, vec![1.0, 0.0]);
            r.language = language.into();
            r.text = format!("src/x {symbol} {signature}");
            found(r, 0.0)
        };
        let c = candidates([
            vec![
                unit("r", "rust", "method", "Types::len", "pub fn len(&self) -> usize"),
                unit("rc", "rust", "function", "walk::count", "pub(crate) fn count(n: &[u8]) -> Option<u64>"),
                unit("rp", "rust", "method", "Types::names", "pub fn names(&self) -> Vec<String>"),
                unit("ri", "rust", "method", "Types::width", "fn width(&self) -> u32"),
                unit("j", "java", "method", "Walker::size", "public long size()"),
                unit("jp", "java", "method", "Walker::grow", "private void grow(int n)"),
                unit("t", "typescript", "function", "count", "export function count(xs: string[]): number"),
                unit("tp", "typescript", "method", "Walker::reset", "private reset(): void"),
                unit("g", "go", "method", "Walker::Len", "func (w *Walker) Len() int {"),
                unit("gp", "go", "function", "grow", "func grow(n int) {"),
                unit("p", "python", "method", "Walker::__len__", "def __len__(self) -> int:"),
                unit("pp", "python", "method", "Walker::_grow", "def _grow(self, n: int):"),
                unit("m", "markdown", "section", "Counting", "# Counting"),
            ],
            vec![],
            vec![],
        ]);
        let f = features(&Query::new("Returns the number of file types", &v), &c);
        let marked = |k: usize| -> Vec<&str> {
            c.iter().zip(&f).filter(|(_, f)| f[k] == 1.0).map(|(c, _)| c.row.id.as_str()).collect()
        };
        assert_eq!(marked(21), ["r", "rc", "rp", "j", "t", "g", "p"], "public");
        assert_eq!(
            marked(22),
            ["r", "rc", "ri", "j", "t", "g", "p"],
            "integer results; a parameter's int does not count"
        );
        for query in ["How many types are there", "Count the types", "The total of the types"] {
            assert_eq!(features(&Query::new(query, &v), &c)[0][22], 1.0, "{query}");
        }
        assert_eq!(features(&Query::new("Returns the file types", &v), &c)[0][22], 0.0, "not a count");
    }

    #[test]
    fn fitting_learns_which_feature_marks_the_right_answer() {
        // Feature 0 marks the right answer; feature 1 is noise that is high as often on wrong
        // candidates as on right ones.
        let mut samples = Vec::new();
        for i in 0..40 {
            let mut features = Vec::new();
            for j in 0..5 {
                let mut f = [0.0; FEATURES];
                f[0] = if j == i % 5 { 1.0 } else { 0.2 };
                f[1] = ((i + j) % 5) as f32 / 5.0;
                features.push(f);
            }
            samples.push(Sample { query: String::new(), features, right: vec![i % 5] });
        }
        samples.push(Sample { query: String::new(), features: vec![[1.0; FEATURES]], right: vec![] });
        let w = fit(&samples, 300);
        assert!(w[0] > 2.0, "the marking feature weighs: {w:?}");
        assert!(w[1].abs() < w[0] / 4.0, "the noise weighs little: {w:?}");
        let ranked = samples[..40].iter().filter(|s| {
            let best =
                (0..s.features.len()).max_by(|&a, &b| dot(&w, &s.features[a]).total_cmp(&dot(&w, &s.features[b])));
            best == Some(s.right[0])
        });
        assert_eq!(ranked.count(), 40);
    }

    #[test]
    fn ranking_orders_by_the_weighted_sum() {
        let v = vec![1.0, 0.0];
        let q = Query::new("parse the header", &v);
        let c = candidates([
            vec![
                found(row("x", "Other::thing", "src/a.rs", "method", vec![0.9, 0.1]), 0.05),
                found(row("p", "Header::parse", "src/h.rs", "method", vec![0.8, 0.2]), 0.1),
            ],
            vec![],
            vec![],
        ]);
        let mut w = [0.0; FEATURES];
        w[10] = 1.0; // name words in the query
        let ranked = rank(&q, c.clone(), &w);
        assert_eq!(ranked[0].0.id, "p");
        w[10] = 0.0;
        w[0] = 1.0; // cosine alone
        assert_eq!(rank(&q, c, &w)[0].0.id, "x");
    }

    #[test]
    fn the_shipped_weights_put_a_method_above_its_impl_block_and_its_test() {
        // Three candidates the retrievers cannot tell apart: the shipped weights rank the
        // method first, unless the query is about tests.
        let v = vec![1.0, 0.0];
        let same = |id: &str, symbol: &str, kind: &str| found(row(id, symbol, "src/lib.rs", kind, vec![1.0, 0.0]), 0.0);
        let c = candidates([
            vec![same("t", "tests::port", "function"), same("i", "Url", "impl"), same("m", "Url::port", "method")],
            vec![],
            vec![],
        ]);
        let scores = |query: &str| -> Vec<(String, f32)> {
            rank(&Query::new(query, &v), c.clone(), &WEIGHTS).into_iter().map(|(r, s)| (r.id, s)).collect()
        };
        let plain = scores("the port of this URL");
        assert_eq!(plain[0].0, "m", "{plain:?}");
        let score_of = |list: &[(String, f32)], id: &str| list.iter().find(|(i, _)| i == id).map(|(_, s)| *s).unwrap();
        let about_tests = scores("the test of URL ports");
        assert!(score_of(&about_tests, "t") >= score_of(&about_tests, "m"), "{about_tests:?}");
        assert!(score_of(&plain, "t") < score_of(&plain, "m"), "{plain:?}");
    }
}
