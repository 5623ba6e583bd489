//! Markdown sections: from one ATX heading (`#` to `######`) to the next, scoped by the
//! headings above. Written by hand rather than with a Markdown grammar: finding headings and
//! code fences is a line scan, and another C grammar would cost build time for nothing more.
//! Setext headings (a line underlined with `===`) are not recognised; their text stays in the
//! section around them.

use super::lines::Lines;
use super::{ChunkKind, Draft};

/// One draft per section; text before the first heading is a section without a symbol.
pub(super) fn drafts(lines: &Lines) -> Vec<Draft> {
    let mut drafts = Vec::new();
    // Headings above the current line: (level, title).
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut current =
        Draft { kind: ChunkKind::Section, symbol: None, signature: None, scope: Vec::new(), first: 0, last: 0 };
    let mut fence: Option<(char, usize)> = None;
    for index in 0..lines.count() {
        let line = lines.slice(index, index).trim_end_matches(['\n', '\r']);
        if let Some((ch, len, bare)) = fence_marker(line) {
            fence = match fence {
                None => Some((ch, len)),
                // Closed by a fence of the same character, at least as long, with nothing after.
                Some((open, open_len)) if ch == open && len >= open_len && bare => None,
                still_open => still_open,
            };
            continue;
        }
        if fence.is_some() {
            continue;
        }
        let Some((level, title)) = heading(line) else { continue };
        if index > current.first {
            drafts.push(Draft { last: index - 1, ..current.clone() });
        }
        while path.last().is_some_and(|(l, _)| *l >= level) {
            path.pop();
        }
        let scope = path.iter().map(|(_, t)| t.clone()).collect();
        current = Draft {
            kind: ChunkKind::Section,
            symbol: (!title.is_empty()).then(|| title.clone()),
            signature: None,
            scope,
            first: index,
            last: index,
        };
        path.push((level, title));
    }
    if let Some(last) = lines.count().checked_sub(1) {
        drafts.push(Draft { last, ..current });
    }
    drafts
}

/// An ATX heading's level and title: up to three spaces, one to six `#`, then a space or the
/// end of the line; a closing run of `#` is not part of the title.
fn heading(line: &str) -> Option<(usize, String)> {
    let rest = strip_indent(line)?;
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let title = rest.trim();
    let without_closing = title.trim_end_matches('#');
    let title =
        if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) { without_closing } else { title };
    Some((level, title.trim().to_owned()))
}

/// A code fence line: its character, length, and whether nothing but spaces follow it (only
/// such a line can close a fence).
fn fence_marker(line: &str) -> Option<(char, usize, bool)> {
    let rest = strip_indent(line)?;
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.chars().take_while(|c| *c == ch).count();
    (len >= 3).then(|| (ch, len, rest[len..].trim().is_empty()))
}

/// The line without up to three leading spaces; `None` if indented further (a code block).
fn strip_indent(line: &str) -> Option<&str> {
    let spaces = line.bytes().take_while(|&b| b == b' ').count();
    (spaces <= 3).then(|| &line[spaces..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_follow_commonmark_atx_rules() {
        assert_eq!(heading("# Title"), Some((1, "Title".into())));
        assert_eq!(heading("###   Spaced out  "), Some((3, "Spaced out".into())));
        assert_eq!(heading("## Closed ##"), Some((2, "Closed".into())));
        assert_eq!(heading("## C# tips"), Some((2, "C# tips".into())));
        assert_eq!(heading("#"), Some((1, String::new())));
        assert_eq!(heading("#hashtag"), None);
        assert_eq!(heading("####### seven"), None);
        assert_eq!(heading("    # indented code"), None);
    }

    #[test]
    fn fences_open_and_close() {
        assert_eq!(fence_marker("```rust"), Some(('`', 3, false)));
        assert_eq!(fence_marker("~~~~"), Some(('~', 4, true)));
        assert_eq!(fence_marker("``"), None);
    }

    #[test]
    fn headings_inside_code_fences_are_code() {
        let text = "# Setup\n```sh\n# not a heading\n```\n## Next\n";
        let lines = Lines::new(text);
        let drafts = drafts(&lines);
        let spans: Vec<_> = drafts.iter().map(|d| (d.symbol.as_deref(), d.first, d.last)).collect();
        assert_eq!(spans, [(Some("Setup"), 0, 3), (Some("Next"), 4, 4)]);
    }

    #[test]
    fn a_shorter_or_different_fence_does_not_close() {
        let text = "````\n```\n# still code\n~~~\n````\n# Out\n";
        let drafts = drafts(&Lines::new(text));
        let spans: Vec<_> = drafts.iter().map(|d| (d.symbol.as_deref(), d.first, d.last)).collect();
        assert_eq!(spans, [(None, 0, 4), (Some("Out"), 5, 5)]);
    }
}
