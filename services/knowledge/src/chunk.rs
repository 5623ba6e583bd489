//! Code-aware chunking: one file's bytes in, the pieces worth retrieving out.
//!
//! [`Chunker::chunk`] screens the file ([`SkipReason`] for binaries, invalid UTF-8, oversized
//! and minified or generated files), picks the chunking from the extension ([`Language`]), and
//! returns [`Chunk`]s:
//! - code (Rust, Python, JavaScript, TypeScript and TSX, Go, Java) is parsed with tree-sitter;
//!   functions, methods, classes (structs, enums, traits, interfaces) and impl blocks become
//!   units with their signature and enclosing scope. A method is its own chunk, scoped by its
//!   class or impl; a class that fits the size limit is also a chunk as a whole, while a larger
//!   one keeps only what lies between its methods (header, fields). Comments, attributes and
//!   decorators directly above a unit belong to it. Top-level code outside units (imports,
//!   constants) becomes `module` chunks. Code the parser could not make sense of joins the
//!   module code, and a file that is mostly syntax errors is chunked as text, either way with
//!   a [`Fallback`] saying why;
//! - Markdown is cut at ATX headings (`#` to `######`, outside fenced code), each section
//!   scoped by the headings above it;
//! - any other text is cut by size.
//!
//! Anything over the size limit ([`Limits`]) is cut into line windows that overlap by
//! [`Limits::overlap_lines`] (module code does not overlap), each part keeping the symbol and
//! scope. Every chunk is a run of whole lines: its `content` is exactly lines `start_line..=
//! end_line` (1-based) of the file, so callers can cite and re-read it.
//!
//! # Layout
//! - this file: the public types ([`Chunker`], [`Chunk`], [`Chunked`], [`Limits`], the
//!   reasons) and the last step shared by every kind of file: trimming, splitting by size,
//!   hashing.
//! - `language`: [`Language`] and the tree-sitter grammar from a path's extension.
//! - `screen`: whether a file is worth chunking at all ([`SkipReason`]).
//! - `lines`: line offsets of a text and the line windows big pieces are split into.
//! - `code`: the syntax-tree walk shared by all languages (units, scopes, attached comments,
//!   gaps, module code).
//! - `syntax`: what a unit is in each grammar (node kinds, names, bodies), the only
//!   per-language code.
//! - `markdown`: sections by heading.

mod code;
mod language;
mod lines;
mod markdown;
mod screen;
mod syntax;

use std::fmt;
use std::time::Duration;

pub use language::Language;
pub use screen::SkipReason;

use crate::hash::sha256_hex;
use lines::Lines;

/// What a chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// A free function (also a Rust macro, a function bound to a JavaScript variable).
    Function,
    /// A function inside a class, impl, trait or interface, or a Go method.
    Method,
    /// A class, struct, enum, union, trait, interface or type declaration.
    Class,
    /// A Rust impl block.
    Impl,
    /// Code outside any unit (imports, constants, statements), or an inline module.
    Module,
    /// A Markdown section, from a heading to the next.
    Section,
    /// Plain text cut by size, or a code file that could not be parsed.
    Text,
}

impl ChunkKind {
    /// The lowercase name stored with a chunk and used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Function => "function",
            ChunkKind::Method => "method",
            ChunkKind::Class => "class",
            ChunkKind::Impl => "impl",
            ChunkKind::Module => "module",
            ChunkKind::Section => "section",
            ChunkKind::Text => "text",
        }
    }
}

impl fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One retrievable piece of a file: whole lines, with what they are and where they sit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The file's path as given to [`Chunker::chunk`] (workspace-relative, `/`-separated when
    /// it comes from [`crate::scan()`]).
    pub path: String,
    pub language: Language,
    pub kind: ChunkKind,
    /// The unit's name (function, class, impl type, heading text); `None` for module and text
    /// chunks.
    pub symbol: Option<String>,
    /// The declaration up to its body, whitespace collapsed: `pub fn parse(input: &str) ->
    /// Result<Ast>`, `class Parser(Base)`, `impl fmt::Display for Point`.
    pub signature: Option<String>,
    /// Names of the enclosing classes, impls, traits and modules, outermost first (for a Go
    /// method, its receiver type); for a Markdown section, the headings above it.
    pub scope: Vec<String>,
    /// First line, 1-based.
    pub start_line: usize,
    /// Last line, 1-based, inclusive.
    pub end_line: usize,
    /// Exactly lines `start_line..=end_line` of the file, line endings included.
    pub content: String,
    /// SHA-256 of `content`, lowercase hex.
    pub content_hash: String,
}

/// The outcome of chunking one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The file's chunks in line order (none for an empty or blank file).
    Chunks {
        chunks: Vec<Chunk>,
        /// Set when all or part of a code file was chunked as plain text, and why.
        fallback: Option<Fallback>,
    },
    /// The file is not worth indexing, and why.
    Skip { reason: SkipReason },
}

impl Chunked {
    /// The chunks, none for a skipped file.
    pub fn chunks(&self) -> &[Chunk] {
        match self {
            Chunked::Chunks { chunks, .. } => chunks,
            Chunked::Skip { .. } => &[],
        }
    }
}

/// Why a code file was chunked as plain text instead of by its syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The parser found syntax errors (or syntax newer than its grammar). Code it could not
    /// place in a unit was chunked as text among the units it did parse; `whole_file`: most of
    /// the file did not parse, so all of it was chunked as text.
    SyntaxErrors { language: Language, first_error_line: usize, whole_file: bool },
    /// Parsing took longer than [`Limits::parse_timeout`].
    ParseTimeout { language: Language, timeout: Duration },
    /// The grammar could not be loaded (a tree-sitter version mismatch in this build).
    GrammarUnavailable { language: Language, reason: String },
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::SyntaxErrors { language, first_error_line, whole_file: true } => write!(
                f,
                "chunked as plain text: the {language} parser found syntax errors in most of the file, the \
                 first at line {first_error_line}; fix them (or the file is not {language}) to get \
                 function-level chunks"
            ),
            Fallback::SyntaxErrors { language, first_error_line, whole_file: false } => write!(
                f,
                "partly chunked as plain text: the {language} parser found syntax errors, the first at line \
                 {first_error_line}, and code it could not place in a function or class was cut by size"
            ),
            Fallback::ParseTimeout { language, timeout } => write!(
                f,
                "chunked as plain text: parsing as {language} took longer than {timeout:?}; raise the \
                 parse timeout to get function-level chunks"
            ),
            Fallback::GrammarUnavailable { language, reason } => write!(
                f,
                "chunked as plain text: the {language} grammar could not be loaded ({reason}); this is a \
                 build problem, rebuild the knowledge service"
            ),
        }
    }
}

/// Size limits for files and chunks. Sizes are in bytes of UTF-8, which is what storage and
/// embedding costs follow; for ASCII code they equal characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Larger files are skipped.
    pub max_file_bytes: usize,
    /// A chunk larger than this (or longer than [`Limits::max_chunk_lines`]) is split.
    pub max_chunk_bytes: usize,
    pub max_chunk_lines: usize,
    /// Lines shared by consecutive parts of a split chunk, so a statement cut at a boundary is
    /// whole in one of them. At most half a part.
    pub overlap_lines: usize,
    /// A file with a longer line is taken as minified or generated and skipped.
    pub max_line_bytes: usize,
    /// A code file whose average line is longer is taken as minified and skipped (prose is
    /// exempt: a paragraph is often one line).
    pub max_average_line_bytes: usize,
    /// Parsing that takes longer falls back to text chunking.
    pub parse_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_chunk_bytes: 4000,
            max_chunk_lines: 150,
            overlap_lines: 10,
            max_line_bytes: 5000,
            max_average_line_bytes: 500,
            parse_timeout: Duration::from_secs(10),
        }
    }
}

/// Turns files into [`Chunk`]s. Cheap to clone and shareable across threads: each call builds
/// its own parser.
#[derive(Clone, Debug, Default)]
pub struct Chunker {
    limits: Limits,
}

/// A unit before the last step: 0-based inclusive lines, not yet trimmed or split.
#[derive(Clone, Debug)]
struct Draft {
    kind: ChunkKind,
    symbol: Option<String>,
    signature: Option<String>,
    scope: Vec<String>,
    first: usize,
    last: usize,
}

impl Chunker {
    pub fn new(limits: Limits) -> Self {
        Chunker { limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Chunks the file at `path` (used for its extension and copied into each chunk) whose
    /// content is `bytes`. Never panics: input that cannot be chunked is skipped with a reason.
    pub fn chunk(&self, path: &str, bytes: &[u8]) -> Chunked {
        let language = Language::from_path(path);
        let text = match screen::screen(path, bytes, language, &self.limits) {
            Ok(text) => text,
            Err(reason) => return Chunked::Skip { reason },
        };
        let lines = Lines::new(text);
        let (drafts, fallback) = match language::grammar(path) {
            Some(grammar) => match code::drafts(grammar, &lines, &self.limits) {
                Ok(parsed) => parsed,
                Err(fallback) => (whole(&lines, ChunkKind::Text), Some(fallback)),
            },
            None if language == Language::Markdown => (markdown::drafts(&lines), None),
            None => (whole(&lines, ChunkKind::Text), None),
        };
        let chunks = self.finish(path, language, &lines, drafts);
        Chunked::Chunks { chunks, fallback }
    }

    /// Trims blank lines off each draft, splits what is over the limits into overlapping
    /// windows, and hashes each piece.
    fn finish(&self, path: &str, language: Language, lines: &Lines, drafts: Vec<Draft>) -> Vec<Chunk> {
        let mut chunks = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let Some((first, last)) = lines.trim_blank(draft.first, draft.last) else { continue };
            // Module code is imports and declarations: a statement cut at a window boundary
            // loses little, and overlapping it would only repeat them.
            let overlap = if draft.kind == ChunkKind::Module { 0 } else { self.limits.overlap_lines };
            let windows = lines.windows(first, last, self.limits.max_chunk_bytes, self.limits.max_chunk_lines, overlap);
            for (start, end) in windows {
                let content = lines.slice(start, end);
                if content.trim().is_empty() {
                    continue;
                }
                chunks.push(Chunk {
                    path: path.to_owned(),
                    language,
                    kind: draft.kind,
                    symbol: draft.symbol.clone(),
                    signature: draft.signature.clone(),
                    scope: draft.scope.clone(),
                    start_line: start + 1,
                    end_line: end + 1,
                    content_hash: sha256_hex(content.as_bytes()),
                    content: content.to_owned(),
                });
            }
        }
        // A class before its methods, each in file order.
        chunks.sort_by_key(|c| (c.start_line, std::cmp::Reverse(c.end_line)));
        chunks
    }
}

/// The whole file as one draft, to be cut by size.
fn whole(lines: &Lines, kind: ChunkKind) -> Vec<Draft> {
    match lines.count() {
        0 => Vec::new(),
        n => vec![Draft { kind, symbol: None, signature: None, scope: Vec::new(), first: 0, last: n - 1 }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Chunker {
        Chunker::new(Limits { max_chunk_lines: 4, overlap_lines: 1, ..Limits::default() })
    }

    #[test]
    fn text_is_cut_into_overlapping_windows_of_whole_lines() {
        let text = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n";
        let chunks = small().chunk("notes.txt", text.as_bytes());
        let Chunked::Chunks { chunks, fallback: None } = chunks else { panic!("not chunked: {chunks:?}") };
        let ranges: Vec<_> = chunks.iter().map(|c| (c.start_line, c.end_line)).collect();
        assert_eq!(ranges, [(1, 4), (4, 7)]);
        assert_eq!(chunks[1].content, "four\nfive\nsix\nseven\n");
        assert!(chunks.iter().all(|c| c.kind == ChunkKind::Text && c.language == Language::Text));
        assert_eq!(chunks[0].content_hash, sha256_hex(b"one\ntwo\nthree\nfour\n"));
    }

    #[test]
    fn blank_files_have_no_chunks() {
        for text in ["", "\n\n  \n", "\t"] {
            assert_eq!(small().chunk("a.txt", text.as_bytes()).chunks(), &[], "{text:?}");
            assert_eq!(small().chunk("a.rs", text.as_bytes()).chunks(), &[], "{text:?}");
        }
    }

    #[test]
    fn module_code_is_split_without_overlap() {
        let text = "use a;\nuse b;\nuse c;\nuse d;\nuse e;\nuse f;\n";
        let chunks = small().chunk("lib.rs", text.as_bytes());
        let ranges: Vec<_> = chunks.chunks().iter().map(|c| (c.kind, c.start_line, c.end_line)).collect();
        assert_eq!(ranges, [(ChunkKind::Module, 1, 4), (ChunkKind::Module, 5, 6)]);
    }

    #[test]
    fn fallback_says_what_happened_and_what_to_do() {
        let fallback = Fallback::SyntaxErrors { language: Language::Rust, first_error_line: 3, whole_file: true };
        assert_eq!(
            fallback.to_string(),
            "chunked as plain text: the rust parser found syntax errors in most of the file, the first at \
             line 3; fix them (or the file is not rust) to get function-level chunks"
        );
    }
}
