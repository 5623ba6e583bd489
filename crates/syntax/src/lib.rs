//! The tree-sitter grammars of the languages turbo-coder reads as syntax (Rust, Python,
//! JavaScript, TypeScript and TSX, Go, Java), and what is done with them outside the knowledge
//! service: a syntax-aware rename of an identifier ([`rename`]).
//!
//! The knowledge service's chunker parses with [`Grammar::language`] through the re-exported
//! [`tree_sitter`]; this is the only crate that depends on the grammar crates.

pub use tree_sitter;

/// A tree-sitter grammar. TSX is a grammar of its own, though its files are TypeScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grammar {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
}

impl Grammar {
    pub const ALL: [Grammar; 7] = [
        Grammar::Rust,
        Grammar::Python,
        Grammar::JavaScript,
        Grammar::TypeScript,
        Grammar::Tsx,
        Grammar::Go,
        Grammar::Java,
    ];

    /// The grammar of the file at `path`, by its extension (case-insensitive).
    pub fn for_path(path: &str) -> Option<Grammar> {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let (stem, ext) = name.rsplit_once('.')?;
        // ".rs" alone is a name, not an extension.
        if stem.is_empty() {
            return None;
        }
        let ext = ext.to_ascii_lowercase();
        Some(match ext.as_str() {
            "rs" => Grammar::Rust,
            "py" | "pyi" => Grammar::Python,
            "js" | "mjs" | "cjs" | "jsx" => Grammar::JavaScript,
            "ts" | "mts" | "cts" => Grammar::TypeScript,
            "tsx" => Grammar::Tsx,
            "go" => Grammar::Go,
            "java" => Grammar::Java,
            _ => return None,
        })
    }

    pub fn language(self) -> tree_sitter::Language {
        match self {
            Grammar::Rust => tree_sitter_rust::LANGUAGE.into(),
            Grammar::Python => tree_sitter_python::LANGUAGE.into(),
            Grammar::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Grammar::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Grammar::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Grammar::Go => tree_sitter_go::LANGUAGE.into(),
            Grammar::Java => tree_sitter_java::LANGUAGE.into(),
        }
    }

    /// A parser for this grammar.
    pub fn parser(self) -> tree_sitter::Parser {
        let mut parser = tree_sitter::Parser::new();
        // The grammars are compiled in with the ABI of the linked tree-sitter.
        parser.set_language(&self.language()).expect("a grammar built for this tree-sitter");
        parser
    }
}

/// Why a rename could not be done.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    #[error("'{0}' is not an identifier: use letters, digits and '_', not starting with a digit")]
    NotAnIdentifier(String),
    #[error("the file does not parse as {0:?} (line {1}): fix the syntax error first")]
    DoesNotParse(Grammar, usize),
    #[error("the parser gave up on the file")]
    NoTree,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Renames every identifier token `old` in `source` to `new`: names of variables, functions,
/// types, fields, properties and parameters, wherever they are used; never text inside
/// strings or comments, nor identifiers that merely contain `old`. Returns the new source and
/// how many tokens changed. A source with a syntax error is refused, so a rename never works
/// from a guessed tree.
pub fn rename(grammar: Grammar, source: &str, old: &str, new: &str) -> Result<(String, usize), RenameError> {
    for name in [old, new] {
        if !is_identifier(name) {
            return Err(RenameError::NotAnIdentifier(name.to_string()));
        }
    }
    let tree = grammar.parser().parse(source, None).ok_or(RenameError::NoTree)?;
    let root = tree.root_node();
    if root.has_error() {
        let line = first_error(root).map_or(1, |n| n.start_position().row + 1);
        return Err(RenameError::DoesNotParse(grammar, line));
    }
    let mut ranges = Vec::new();
    let mut cursor = root.walk();
    let mut descending = true;
    loop {
        let node = cursor.node();
        if descending && node.child_count() == 0 && is_name_token(node.kind()) && &source[node.byte_range()] == old {
            ranges.push(node.byte_range());
        }
        if descending && cursor.goto_first_child() {
            continue;
        }
        if cursor.goto_next_sibling() {
            descending = true;
            continue;
        }
        if !cursor.goto_parent() {
            break;
        }
        descending = false;
    }
    let mut out = source.to_string();
    for range in ranges.iter().rev() {
        out.replace_range(range.clone(), new);
    }
    Ok((out, ranges.len()))
}

/// Token kinds that name something in the grammars here (`identifier`, `type_identifier`,
/// `field_identifier`, `property_identifier`, `shorthand_property_identifier`, ...).
fn is_name_token(kind: &str) -> bool {
    kind.ends_with("identifier") || kind == "constant"
}

fn first_error(node: tree_sitter::Node<'_>) -> Option<tree_sitter::Node<'_>> {
    if node.is_error() || node.is_missing() {
        return Some(node);
    }
    let mut cursor = node.walk();
    node.children(&mut cursor).filter(|c| c.has_error() || c.is_missing()).find_map(first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grammar_loads() {
        for grammar in Grammar::ALL {
            assert!(grammar.parser().parse("", None).is_some(), "{grammar:?}");
        }
    }

    #[test]
    fn a_rename_changes_names_not_strings_comments_or_longer_names() {
        let source = "def total(items):\n    # total of the items\n    subtotal = sum(items)\n    return total_of(subtotal, 'total')\n\nprint(total([1]))\n";
        let (out, n) = rename(Grammar::Python, source, "total", "grand_total").unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            out,
            "def grand_total(items):\n    # total of the items\n    subtotal = sum(items)\n    return total_of(subtotal, 'total')\n\nprint(grand_total([1]))\n"
        );
    }

    #[test]
    fn a_rename_reaches_types_fields_and_methods_in_rust_and_typescript() {
        let rust = "struct Point { x: i32 }\nimpl Point { fn new(x: i32) -> Point { Point { x } } }\n// Point\nlet p = Point::new(1);\n";
        let (out, n) = rename(Grammar::Rust, rust, "Point", "Vec2").unwrap();
        assert_eq!(n, 5, "{out}");
        assert!(out.contains("// Point") && !out.contains("Point {"), "{out}");
        let ts = "class Cart { count = 0; add() { this.count += 1; } }\nconst c = new Cart(); c.count;\n";
        let (out, n) = rename(Grammar::TypeScript, ts, "count", "size").unwrap();
        assert_eq!(n, 3, "{out}");
        assert_eq!(out.matches("size").count(), 3);
    }

    #[test]
    fn bad_names_and_broken_files_are_refused() {
        assert_eq!(rename(Grammar::Go, "package a", "x", "1y"), Err(RenameError::NotAnIdentifier("1y".into())));
        assert_eq!(rename(Grammar::Go, "package a", "x y", "z"), Err(RenameError::NotAnIdentifier("x y".into())));
        let err = rename(Grammar::Java, "class A {\n  void f( {\n}\n", "f", "g").unwrap_err();
        assert!(matches!(err, RenameError::DoesNotParse(Grammar::Java, _)), "{err}");
    }

    #[test]
    fn grammars_come_from_extensions() {
        assert_eq!(Grammar::for_path("src/App.TSX"), Some(Grammar::Tsx));
        assert_eq!(Grammar::for_path("lib/a.mjs"), Some(Grammar::JavaScript));
        assert_eq!(Grammar::for_path("README.md"), None);
        assert_eq!(Grammar::for_path("Makefile"), None);
        assert_eq!(Grammar::for_path("src\\main.go"), Some(Grammar::Go));
        assert_eq!(Grammar::for_path("dir/.rs"), None);
    }
}
