//! The syntax-tree walk, the same for every language: units with their signatures, scopes and
//! attached comments, containers with their members, and what lies between units.

use std::ops::ControlFlow;
use std::time::Instant;

use turbo_syntax::tree_sitter::{Node, ParseOptions, ParseState, Parser, Point, Tree};

use super::language::{Grammar, language_of};
use super::lines::Lines;
use super::syntax::{Unit, Units, signature_start};
use super::{ChunkKind, Draft, Fallback, Limits};

/// Containers nested deeper than this are chunked whole, without looking for their methods:
/// the walk recurses once per level, and input can nest as deep as it likes.
const MAX_DEPTH: usize = 32;

/// Longer signatures are cut (on a character boundary).
const MAX_SIGNATURE_BYTES: usize = 400;

/// Drafts for a code file, with a note when parts of it did not parse; or why all of it must
/// be chunked as text.
pub(super) fn drafts(
    grammar: Grammar,
    lines: &Lines,
    limits: &Limits,
) -> Result<(Vec<Draft>, Option<Fallback>), Fallback> {
    let language = language_of(grammar);
    let bytes = lines.text().as_bytes();
    let tree = parse(grammar, bytes, limits)?;
    let root = tree.root_node();
    // Grammars lag behind their languages (about one Rust file in ten in a cargo registry has
    // syntax tree-sitter-rust does not know, mostly inside function bodies), so a few errors
    // must not cost the whole file its structure: units that parsed are kept, and the rest is
    // chunked by size with the module code. A file that is mostly errors, or where no unit
    // parsed (not this language, or badly broken), is chunked as text.
    let errors = root.has_error().then(|| (first_error_line(root, lines) + 1, error_bytes(root)));
    let whole_file = |first_error_line| Fallback::SyntaxErrors { language, first_error_line, whole_file: true };
    if let Some((line, error_bytes)) = errors
        && error_bytes * 2 > bytes.len()
    {
        return Err(whole_file(line));
    }
    let mut walk = Walk { grammar, lines, limits, drafts: Vec::new() };
    let covered = walk.level(root, &[], false, 0);
    if let Some((line, _)) = errors
        && walk.drafts.is_empty()
    {
        return Err(whole_file(line));
    }
    let note =
        errors.map(|(first_error_line, _)| Fallback::SyntaxErrors { language, first_error_line, whole_file: false });
    if let Some(last) = lines.count().checked_sub(1) {
        for (first, last) in gaps(0, last, covered) {
            if !lines.is_trivial(first, last) {
                walk.drafts.push(Draft {
                    kind: ChunkKind::Module,
                    symbol: None,
                    signature: None,
                    scope: Vec::new(),
                    first,
                    last,
                });
            }
        }
    }
    Ok((walk.drafts, note))
}

/// The syntax tree, unless the grammar cannot be loaded or parsing overruns the timeout.
fn parse(grammar: Grammar, bytes: &[u8], limits: &Limits) -> Result<Tree, Fallback> {
    let language = language_of(grammar);
    let mut parser = Parser::new();
    parser
        .set_language(&grammar.language())
        .map_err(|e| Fallback::GrammarUnavailable { language, reason: e.to_string() })?;
    let deadline = Instant::now() + limits.parse_timeout;
    let mut progress =
        |_: &ParseState| if Instant::now() > deadline { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let options = ParseOptions::new().progress_callback(&mut progress);
    let mut read = |offset: usize, _: Point| bytes.get(offset..).unwrap_or_default();
    parser
        .parse_with_options(&mut read, None, Some(options))
        .ok_or(Fallback::ParseTimeout { language, timeout: limits.parse_timeout })
}

/// Bytes inside ERROR nodes, found without recursion.
fn error_bytes(root: Node<'_>) -> usize {
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.is_error() {
            total += node.byte_range().len();
        } else if node.has_error() {
            let mut cursor = node.walk();
            stack.extend(node.children(&mut cursor));
        }
    }
    total
}

/// The line of the first error or missing node, found without recursion.
fn first_error_line(root: Node<'_>, lines: &Lines) -> usize {
    let mut node = root;
    loop {
        if node.is_error() || node.is_missing() {
            break;
        }
        let mut cursor = node.walk();
        let next = node.children(&mut cursor).find(|c| c.has_error() || c.is_missing());
        match next {
            Some(child) => node = child,
            None => break,
        }
    }
    lines.line_of(node.start_byte())
}

struct Walk<'a, 'l> {
    grammar: Grammar,
    lines: &'a Lines<'l>,
    limits: &'a Limits,
    drafts: Vec<Draft>,
}

impl Walk<'_, '_> {
    fn span(&self, node: Node<'_>) -> (usize, usize) {
        self.lines.span(node.start_byte(), node.end_byte())
    }

    /// Drafts every unit among `container`'s members; returns the lines they cover, each with
    /// the comments attached above it.
    fn level(&mut self, container: Node<'_>, scope: &[String], in_type: bool, depth: usize) -> Vec<(usize, usize)> {
        let mut covered = Vec::new();
        // Comments, attributes and decorators waiting for the unit below them.
        let mut attached: Vec<Node<'_>> = Vec::new();
        let mut previous_end: Option<usize> = None;
        for child in self.grammar.members(container) {
            let (start, end) = self.span(child);
            if self.grammar.attaches(child.kind()) {
                let adjacent = attached.last().is_some_and(|a| self.span(*a).1 + 1 >= start);
                if !adjacent {
                    attached.clear();
                }
                // A comment after code on the same line belongs to that code.
                if previous_end.is_none_or(|p| start > p) {
                    attached.push(child);
                }
                previous_end = Some(end);
                continue;
            }
            if child.is_error() && depth < MAX_DEPTH {
                // The parser could not place this code, but may have recognised units inside.
                covered.extend(self.level(child, scope, in_type, depth + 1));
            } else if let Some(unit) = self.grammar.unit(child, self.lines.text(), in_type) {
                let first = match (attached.first(), attached.last()) {
                    (Some(top), Some(bottom)) if self.span(*bottom).1 + 1 >= start => self.span(*top).0,
                    _ => start,
                };
                self.unit(unit, first, scope, depth);
                covered.push((first, end));
            }
            attached.clear();
            previous_end = Some(end);
        }
        covered
    }

    fn unit(&mut self, unit: Unit<'_>, first: usize, scope: &[String], depth: usize) {
        let (_, last) = self.span(unit.outer);
        let mut scope = scope.to_vec();
        scope.extend(unit.receiver.clone());
        let draft = Draft {
            kind: unit.kind,
            symbol: unit.name.clone(),
            signature: self.signature(&unit),
            scope: scope.clone(),
            first,
            last,
        };
        let Some((members, in_type)) = unit.members.filter(|_| depth < MAX_DEPTH) else {
            self.drafts.push(draft);
            return;
        };
        scope.extend(unit.name);
        let covered = self.level(members, &scope, in_type, depth + 1);
        if covered.is_empty() || self.fits(first, last) {
            self.drafts.push(draft);
            return;
        }
        // Too big to be a chunk besides its methods: keep what lies between them.
        for (gap_first, gap_last) in gaps(first, last, covered) {
            if !self.lines.is_trivial(gap_first, gap_last) {
                self.drafts.push(Draft { first: gap_first, last: gap_last, ..draft.clone() });
            }
        }
    }

    fn fits(&self, first: usize, last: usize) -> bool {
        last + 1 - first <= self.limits.max_chunk_lines
            && self.lines.slice(first, last).len() <= self.limits.max_chunk_bytes
    }

    /// The declaration from its first keyword up to its body, whitespace collapsed, without a
    /// trailing `{`, `:` or `;`.
    fn signature(&self, unit: &Unit<'_>) -> Option<String> {
        let src = self.lines.text();
        let start = signature_start(unit.outer);
        let end = match unit.body {
            Some(body) if body.start_byte() > start => body.start_byte(),
            _ => {
                let rest = src.get(start..unit.outer.end_byte())?;
                start + rest.find(['{', '\n']).unwrap_or(rest.len())
            }
        };
        let mut signature = tidy(src.get(start..end)?);
        if signature.len() > MAX_SIGNATURE_BYTES {
            let mut cut = MAX_SIGNATURE_BYTES;
            while !signature.is_char_boundary(cut) {
                cut -= 1;
            }
            signature.truncate(cut);
            signature.push('…');
        }
        (!signature.is_empty()).then_some(signature)
    }
}

/// Whitespace collapsed, none just inside brackets (`f( a, b, )` is `f(a, b)`), and no
/// trailing `{`, `:`, `;` or `,` (the start of a body, a `where` clause's last comma).
fn tidy(declaration: &str) -> String {
    let collapsed = declaration.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(collapsed.len());
    for c in collapsed.chars() {
        if matches!(c, ')' | ']') {
            while out.ends_with(' ') || out.ends_with(',') {
                out.pop();
            }
        }
        if c == ' ' && (out.ends_with('(') || out.ends_with('[')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches(|c: char| c.is_whitespace() || "{:;,".contains(c)).to_owned()
}

/// The runs of lines in `first..=last` outside the `covered` ranges.
fn gaps(first: usize, last: usize, mut covered: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut next = first;
    for (start, end) in covered {
        if start > next {
            gaps.push((next, start - 1));
        }
        next = next.max(end + 1);
    }
    if next <= last {
        gaps.push((next, last));
    }
    gaps.retain(|&(a, b)| a <= b && b <= last);
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_tidied() {
        assert_eq!(
            tidy("async def restock(\n    self, sku: str,\n) -> None:"),
            "async def restock(self, sku: str) -> None"
        );
        assert_eq!(
            tidy("impl<T> Shape for Circle<T>\nwhere\n    T: Copy,\n"),
            "impl<T> Shape for Circle<T> where T: Copy"
        );
        assert_eq!(tidy("func (s *Stack[ T ]) Push(v T) {"), "func (s *Stack[T]) Push(v T)");
    }

    #[test]
    fn gaps_are_the_uncovered_runs() {
        assert_eq!(gaps(0, 9, vec![(2, 3), (5, 5)]), [(0, 1), (4, 4), (6, 9)]);
        assert_eq!(gaps(0, 3, vec![(0, 3)]), []);
        // Units on one line, out of order, overlapping.
        assert_eq!(gaps(0, 4, vec![(3, 3), (1, 2), (2, 2)]), [(0, 0), (4, 4)]);
        assert_eq!(gaps(2, 4, vec![]), [(2, 4)]);
    }

    fn drafts_of(grammar: Grammar, text: &str) -> Vec<Draft> {
        let lines = Lines::new(text);
        let (drafts, note) = drafts(grammar, &lines, &Limits::default()).expect("parses");
        assert_eq!(note, None);
        drafts
    }

    #[test]
    fn comments_directly_above_a_unit_belong_to_it() {
        let text = "use std::fmt;\n\n// not attached: a blank line follows\n\n/// Adds.\n#[inline]\nfn add() {}\nfn b() {} // trailing\nfn c() {}\n";
        let drafts = drafts_of(Grammar::Rust, text);
        let spans: Vec<_> = drafts.iter().map(|d| (d.kind, d.symbol.as_deref(), d.first, d.last)).collect();
        assert_eq!(
            spans,
            [
                (ChunkKind::Function, Some("add"), 4, 6),
                (ChunkKind::Function, Some("b"), 7, 7),
                (ChunkKind::Function, Some("c"), 8, 8),
                (ChunkKind::Module, None, 0, 3),
            ]
        );
    }

    #[test]
    fn a_file_that_is_mostly_errors_falls_back_whole() {
        let lines = Lines::new("fn ok() {}\n\n<html> is not rust, <body> nor is this </body></html>\n");
        let err = drafts(Grammar::Rust, &lines, &Limits::default()).unwrap_err();
        assert!(matches!(err, Fallback::SyntaxErrors { first_error_line: 3, whole_file: true, .. }), "{err:?}");
    }

    #[test]
    fn units_that_parse_survive_a_few_errors() {
        // `try!` is a keyword since Rust 2018; old crates still use the macro.
        let text = "fn first() -> u8 {\n    1\n}\n\nfn old_style() -> Result<(), E> {\n    let x = try!(thing());\n    Ok(x)\n}\n\nfn last() {}\n";
        let lines = Lines::new(text);
        let (drafts, note) = drafts(Grammar::Rust, &lines, &Limits::default()).expect("mostly parses");
        assert!(
            matches!(note, Some(Fallback::SyntaxErrors { first_error_line: 6, whole_file: false, .. })),
            "{note:?}"
        );
        let units: Vec<_> = drafts.iter().map(|d| (d.symbol.as_deref(), d.first, d.last)).collect();
        assert_eq!(units, [(Some("first"), 0, 2), (Some("old_style"), 4, 7), (Some("last"), 9, 9)]);
    }

    #[test]
    fn a_parse_over_the_timeout_falls_back() {
        let text = "def f():\n    return 1\n".repeat(20_000);
        let lines = Lines::new(&text);
        let limits = Limits { parse_timeout: std::time::Duration::ZERO, ..Limits::default() };
        let err = drafts(Grammar::Python, &lines, &limits).unwrap_err();
        assert!(matches!(err, Fallback::ParseTimeout { .. }), "{err:?}");
    }

    #[test]
    fn deeply_nested_containers_do_not_overflow_the_stack() {
        let depth = 2000;
        let text = "mod m {\n".repeat(depth) + &"}\n".repeat(depth);
        let drafts = drafts_of(Grammar::Rust, &text);
        assert_eq!(drafts.iter().filter(|d| d.kind == ChunkKind::Module && d.symbol.is_some()).count(), MAX_DEPTH + 1);
    }
}
