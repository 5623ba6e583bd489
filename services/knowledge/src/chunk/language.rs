//! Which language a file is in, and which tree-sitter grammar parses it, from its extension.

use std::fmt;

/// The language of a chunk, from the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    /// TypeScript, including TSX.
    TypeScript,
    Go,
    Java,
    Markdown,
    /// Anything else that is text: configuration, scripts, prose.
    Text,
}

impl Language {
    /// The language of the file at `path`, by its extension (case-insensitive); [`Language::Text`]
    /// for unknown extensions and names without one.
    pub fn from_path(path: &str) -> Language {
        match extension(path).as_deref() {
            Some("rs") => Language::Rust,
            Some("py" | "pyi") => Language::Python,
            Some("js" | "mjs" | "cjs" | "jsx") => Language::JavaScript,
            Some("ts" | "mts" | "cts" | "tsx") => Language::TypeScript,
            Some("go") => Language::Go,
            Some("java") => Language::Java,
            Some("md" | "markdown" | "mdown" | "mkd") => Language::Markdown,
            _ => Language::Text,
        }
    }

    /// The lowercase name stored with a chunk and used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Go => "go",
            Language::Java => "java",
            Language::Markdown => "markdown",
            Language::Text => "text",
        }
    }

    /// The spec's programming language, for the KnowledgeChunk's `language`; `None` for prose.
    pub fn project_language(self) -> Option<turbo_core::project::Language> {
        use turbo_core::project::Language as Project;
        match self {
            Language::Rust => Some(Project::Rust),
            Language::Python => Some(Project::Python),
            Language::JavaScript => Some(Project::Javascript),
            Language::TypeScript => Some(Project::Typescript),
            Language::Go => Some(Project::Go),
            Language::Java => Some(Project::Java),
            Language::Markdown | Language::Text => None,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) use turbo_syntax::Grammar;

/// The language of a grammar's files (TSX files are TypeScript).
pub(super) fn language_of(grammar: Grammar) -> Language {
    match grammar {
        Grammar::Rust => Language::Rust,
        Grammar::Python => Language::Python,
        Grammar::JavaScript => Language::JavaScript,
        Grammar::TypeScript | Grammar::Tsx => Language::TypeScript,
        Grammar::Go => Language::Go,
        Grammar::Java => Language::Java,
    }
}

/// The grammar for the file at `path`, `None` for files not chunked by syntax.
pub(super) fn grammar(path: &str) -> Option<Grammar> {
    Grammar::for_path(path)
}

/// The lowercased extension of the last path component (either separator), if it has one.
fn extension(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let (stem, ext) = name.rsplit_once('.')?;
    // ".gitignore" is a name, not an extension.
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_from_extensions() {
        let cases = [
            ("src/lib.rs", Language::Rust),
            ("a/b.PY", Language::Python),
            ("web/app.jsx", Language::JavaScript),
            ("web/app.tsx", Language::TypeScript),
            ("main.go", Language::Go),
            ("Main.java", Language::Java),
            ("README.md", Language::Markdown),
            ("Makefile", Language::Text),
            (".gitignore", Language::Text),
            ("dir.rs/notes", Language::Text),
            ("config.toml", Language::Text),
        ];
        for (path, language) in cases {
            assert_eq!(Language::from_path(path), language, "{path}");
        }
    }

    #[test]
    fn tsx_has_its_own_grammar() {
        assert_eq!(grammar("app.tsx"), Some(Grammar::Tsx));
        assert_eq!(grammar("app.ts"), Some(Grammar::TypeScript));
        assert_eq!(grammar("README.md"), None);
    }
}
