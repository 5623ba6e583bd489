//! The file tools: read, write, list and search inside the workspace.

mod list;
mod read;
mod search;
pub(crate) mod write;

pub use list::FsList;
pub use read::FsRead;
pub use search::FsSearch;
pub use write::FsWrite;

use std::path::Path;

use ignore::WalkBuilder;

/// How far into a file to look for a NUL byte, as git does to call a file binary.
const BINARY_SNIFF: usize = 8000;

/// Whether these leading bytes of a file look binary (a NUL in the first 8000 bytes).
pub(crate) fn looks_binary(start: &[u8]) -> bool {
    start[..start.len().min(BINARY_SNIFF)].contains(&0)
}

/// A walker that sees what a developer would: .gitignore'd files and `.git` hidden, dotfiles
/// such as `.github` shown, sorted by name for stable output. The user's global gitignore is
/// not read so that results depend only on the workspace.
pub(crate) fn walker(start: &Path, max_depth: Option<usize>) -> WalkBuilder {
    let mut builder = WalkBuilder::new(start);
    builder
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        // Workspaces are often not (yet) git repositories; their .gitignore still says what
        // is noise.
        .require_git(false)
        .parents(true)
        .follow_links(false)
        .max_depth(max_depth)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| entry.file_name() != ".git");
    builder
}

/// Cuts `text` to at most `cap` bytes on a character boundary; whether it cut.
pub(crate) fn cap_text(text: &mut String, cap: usize) -> bool {
    if text.len() <= cap {
        return false;
    }
    let mut at = cap;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_byte_means_binary() {
        assert!(looks_binary(b"\x7fELF\0\0"));
        assert!(!looks_binary("plain text, ünïcode".as_bytes()));
    }

    #[test]
    fn cap_text_cuts_on_a_character_boundary() {
        let mut s = "aé".to_owned();
        assert!(cap_text(&mut s, 2));
        assert_eq!(s, "a");
        let mut short = "ab".to_owned();
        assert!(!cap_text(&mut short, 2));
    }
}
