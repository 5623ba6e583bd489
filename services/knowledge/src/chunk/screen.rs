//! Whether a file is worth chunking: text, not too large, written by a person.

use std::fmt;

use super::{Language, Limits};

/// How far into a file to look for a NUL byte, as git does to call a file binary.
const BINARY_SNIFF: usize = 8 * 1024;

/// File names of lock files and build output: generated, and noise to retrieval.
const GENERATED_NAMES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "uv.lock",
    "go.sum",
    "composer.lock",
];

/// Name endings of minified bundles and source maps.
const GENERATED_SUFFIXES: &[&str] = &[".min.js", ".min.css", ".min.mjs", ".js.map", ".css.map"];

/// Why a file was not chunked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Larger than [`Limits::max_file_bytes`].
    TooLarge { bytes: usize, limit: usize },
    /// A NUL byte in the first 8 KiB.
    Binary,
    /// Not UTF-8: the first invalid byte is at `offset`.
    InvalidUtf8 { offset: usize },
    /// A lock file, a minified bundle or a source map.
    Generated { marker: String },
    /// Lines too long for code a person wrote.
    Minified { longest_line: usize, average_line: usize },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::TooLarge { bytes, limit } => {
                write!(f, "skipped: {bytes} bytes is over the {limit}-byte limit for a file to index")
            }
            SkipReason::Binary => f.write_str("skipped: binary (a NUL byte in the first 8 KiB)"),
            SkipReason::InvalidUtf8 { offset } => {
                write!(f, "skipped: not UTF-8 (invalid byte at offset {offset}); convert the file to UTF-8 to index it")
            }
            SkipReason::Generated { marker } => write!(f, "skipped: generated ({marker})"),
            SkipReason::Minified { longest_line, average_line } => write!(
                f,
                "skipped: looks minified or generated (longest line {longest_line} bytes, average \
                 {average_line}); index the source it was built from instead"
            ),
        }
    }
}

/// The file's text when it is worth chunking, else why not.
pub(super) fn screen<'a>(
    path: &str,
    bytes: &'a [u8],
    language: Language,
    limits: &Limits,
) -> Result<&'a str, SkipReason> {
    if bytes.len() > limits.max_file_bytes {
        return Err(SkipReason::TooLarge { bytes: bytes.len(), limit: limits.max_file_bytes });
    }
    if bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0) {
        return Err(SkipReason::Binary);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| SkipReason::InvalidUtf8 { offset: e.valid_up_to() })?;
    let is_code = !matches!(language, Language::Markdown | Language::Text);
    if let Some(marker) = generated_marker(path) {
        return Err(SkipReason::Generated { marker });
    }
    let (mut longest, mut total, mut count) = (0, 0, 0);
    for line in text.lines() {
        longest = longest.max(line.len());
        total += line.len();
        count += 1;
    }
    let average = total.checked_div(count).unwrap_or(0);
    if longest > limits.max_line_bytes || (is_code && average > limits.max_average_line_bytes) {
        return Err(SkipReason::Minified { longest_line: longest, average_line: average });
    }
    Ok(text)
}

/// Lock files and bundles, by name. Generated code marked as such (`@generated`) is kept: in a
/// project it is often committed and used (ORM entities, gRPC stubs), so agents need to find it.
fn generated_marker(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    if GENERATED_NAMES.contains(&name) {
        return Some(format!("{name} is a lock file"));
    }
    let lower = name.to_ascii_lowercase();
    GENERATED_SUFFIXES.iter().find(|s| lower.ends_with(**s)).map(|suffix| format!("a {suffix} file is build output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, bytes: &[u8]) -> Result<(), SkipReason> {
        screen(path, bytes, Language::from_path(path), &Limits::default()).map(|_| ())
    }

    #[test]
    fn binaries_and_invalid_utf8_are_skipped() {
        assert_eq!(check("a.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Err(SkipReason::Binary));
        assert_eq!(check("a.txt", b"caf\xe9 au lait"), Err(SkipReason::InvalidUtf8 { offset: 3 }));
        assert_eq!(check("a.txt", "café".as_bytes()), Ok(()));
    }

    #[test]
    fn a_nul_past_the_sniff_window_is_invalid_text_not_binary() {
        let mut bytes = vec![b'a'; BINARY_SNIFF];
        bytes.extend_from_slice(b"\0\xff");
        assert_eq!(check("a.txt", &bytes), Err(SkipReason::InvalidUtf8 { offset: BINARY_SNIFF + 1 }));
    }

    #[test]
    fn oversized_files_are_skipped_before_reading_further() {
        let limits = Limits { max_file_bytes: 10, ..Limits::default() };
        let err = screen("a.rs", b"fn main() {}", Language::Rust, &limits).unwrap_err();
        assert_eq!(err, SkipReason::TooLarge { bytes: 12, limit: 10 });
        assert_eq!(err.to_string(), "skipped: 12 bytes is over the 10-byte limit for a file to index");
    }

    #[test]
    fn minified_code_is_skipped_but_long_prose_lines_are_not() {
        let long_average = "x".repeat(600) + "\n" + &"y".repeat(600);
        assert!(matches!(
            check("app.js", long_average.as_bytes()),
            Err(SkipReason::Minified { average_line: 600, .. })
        ));
        assert_eq!(check("README.md", long_average.as_bytes()), Ok(()));
        let one_huge_line = format!("fn main() {{}}\n// {}\n", "z".repeat(6000));
        assert!(matches!(
            check("main.rs", one_huge_line.as_bytes()),
            Err(SkipReason::Minified { longest_line: 6003, .. })
        ));
        assert!(matches!(check("notes.txt", one_huge_line.as_bytes()), Err(SkipReason::Minified { .. })));
    }

    #[test]
    fn lock_files_and_bundles_are_generated_but_marked_code_is_kept() {
        assert!(matches!(check("sub/Cargo.lock", b"# lock"), Err(SkipReason::Generated { .. })));
        assert!(matches!(check("dist/app.min.js", b"var a=1;"), Err(SkipReason::Generated { .. })));
        // Generated code people commit and call is kept.
        let go = "// Code generated by protoc-gen-go. DO NOT EDIT.\npackage pb\n";
        assert_eq!(check("api.pb.go", go.as_bytes()), Ok(()));
    }
}
