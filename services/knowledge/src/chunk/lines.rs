//! Line offsets of a text, so chunks are always runs of whole lines, and the windows a run too
//! big for one chunk is cut into.
//!
//! Lines are 0-based here and end after their `\n` (the last may have none); a text of `n`
//! newline-terminated lines has `n` lines, an empty text none. Every method clamps what it is
//! given, so a bad index yields an empty or shorter result, never a panic.

/// A text and the byte offset where each of its lines starts.
pub(super) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let mut starts = Vec::new();
        if !text.is_empty() {
            starts.push(0);
            starts.extend(text.match_indices('\n').map(|(i, _)| i + 1).filter(|&i| i < text.len()));
        }
        Lines { text, starts }
    }

    pub(super) fn text(&self) -> &'a str {
        self.text
    }

    pub(super) fn count(&self) -> usize {
        self.starts.len()
    }

    /// The line holding byte `offset` (the last line for offsets past the end).
    pub(super) fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next.saturating_sub(1),
        }
    }

    /// The lines a byte range `start..end` touches: the line of its last byte, not of `end`,
    /// which may be the start of the next line.
    pub(super) fn span(&self, start: usize, end: usize) -> (usize, usize) {
        (self.line_of(start), self.line_of(end.saturating_sub(1).max(start)))
    }

    /// Byte range of lines `first..=last`, line endings included.
    fn range(&self, first: usize, last: usize) -> std::ops::Range<usize> {
        let Some(&start) = self.starts.get(first) else { return self.text.len()..self.text.len() };
        let end = self.starts.get(last.saturating_add(1)).copied().unwrap_or(self.text.len()).max(start);
        start..end
    }

    /// Lines `first..=last` as they are in the text.
    pub(super) fn slice(&self, first: usize, last: usize) -> &'a str {
        self.text.get(self.range(first, last)).unwrap_or("")
    }

    fn len(&self, line: usize) -> usize {
        self.range(line, line).len()
    }

    fn is_blank(&self, line: usize) -> bool {
        self.slice(line, line).trim().is_empty()
    }

    /// `first..=last` without blank lines at either end; `None` if all are blank.
    pub(super) fn trim_blank(&self, first: usize, last: usize) -> Option<(usize, usize)> {
        let last = last.min(self.count().checked_sub(1)?);
        let first = (first..=last).find(|&l| !self.is_blank(l))?;
        let last = (first..=last).rev().find(|&l| !self.is_blank(l))?;
        Some((first, last))
    }

    /// Whether lines `first..=last` hold nothing but blanks and closing punctuation, such as
    /// the `}` ending a class whose methods are chunks of their own.
    pub(super) fn is_trivial(&self, first: usize, last: usize) -> bool {
        self.slice(first, last).chars().all(|c| c.is_whitespace() || "{}()[];,".contains(c))
    }

    /// Cuts `first..=last` into windows of at most `max_lines` lines and `max_bytes` bytes (a
    /// single longer line is a window of its own), consecutive windows sharing `overlap` lines
    /// but at most half of the earlier one, so each window moves forward. Trivial lines left
    /// after a window (`}`) get no window of their own.
    pub(super) fn windows(
        &self,
        first: usize,
        last: usize,
        max_bytes: usize,
        max_lines: usize,
        overlap: usize,
    ) -> Vec<(usize, usize)> {
        let mut windows = Vec::new();
        let Some(last) = self.count().checked_sub(1).map(|end| last.min(end)) else { return windows };
        let mut start = first;
        while start <= last {
            let (mut end, mut bytes) = (start, self.len(start));
            while end < last {
                let next = self.len(end + 1);
                if end + 2 - start > max_lines || bytes + next > max_bytes {
                    break;
                }
                end += 1;
                bytes += next;
            }
            windows.push((start, end));
            // Not a window of overlap for a closing brace.
            if end >= last || self.is_trivial(end + 1, last) {
                break;
            }
            let size = end + 1 - start;
            start = end + 1 - overlap.min(size / 2);
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_after_their_newline() {
        let lines = Lines::new("ab\ncd\n\nef");
        assert_eq!(lines.count(), 4);
        assert_eq!(lines.slice(0, 1), "ab\ncd\n");
        assert_eq!(lines.slice(3, 3), "ef");
        assert_eq!(lines.line_of(0), 0);
        assert_eq!(lines.line_of(2), 0);
        assert_eq!(lines.line_of(3), 1);
        assert_eq!(lines.line_of(100), 3);
        assert_eq!(Lines::new("a\n").count(), 1);
        assert_eq!(Lines::new("").count(), 0);
    }

    #[test]
    fn a_span_ending_at_a_line_start_stays_on_the_previous_line() {
        let lines = Lines::new("fn a() {}\nfn b() {}\n");
        assert_eq!(lines.span(0, 10), (0, 0));
        assert_eq!(lines.span(10, 19), (1, 1));
    }

    #[test]
    fn out_of_range_indices_give_empty_results() {
        let lines = Lines::new("a\nb\n");
        assert_eq!(lines.slice(5, 9), "");
        assert_eq!(lines.slice(1, 9), "b\n");
        assert_eq!(lines.trim_blank(0, 9), Some((0, 1)));
        assert_eq!(Lines::new("").windows(0, 3, 10, 10, 2), vec![]);
        assert_eq!(Lines::new("").trim_blank(0, 0), None);
    }

    #[test]
    fn trimming_drops_blank_edges() {
        let lines = Lines::new("\n  \nx\ny\n\t\n");
        assert_eq!(lines.trim_blank(0, 4), Some((2, 3)));
        assert_eq!(lines.trim_blank(0, 1), None);
    }

    #[test]
    fn windows_respect_both_limits_and_overlap() {
        let lines = Lines::new("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
        assert_eq!(lines.windows(0, 9, 1000, 4, 1), [(0, 3), (3, 6), (6, 9)]);
        assert_eq!(lines.windows(0, 9, 1000, 20, 3), [(0, 9)]);
        // 2 bytes a line ("1\n"): at most three lines fit in 6 bytes.
        assert_eq!(lines.windows(0, 5, 6, 100, 0), [(0, 2), (3, 5)]);
        // An overlap as big as the window is cut to half of it.
        assert_eq!(lines.windows(0, 5, 1000, 2, 5), [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
    }

    #[test]
    fn a_closing_brace_gets_no_window_of_its_own() {
        let lines = Lines::new("a\nb\nc\nd\n}\n");
        assert_eq!(lines.windows(0, 4, 1000, 4, 1), [(0, 3)]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_a_window_of_its_own() {
        let lines = Lines::new("short\na very long line\nshort\n");
        assert_eq!(lines.windows(0, 2, 8, 10, 0), [(0, 0), (1, 1), (2, 2)]);
    }
}
