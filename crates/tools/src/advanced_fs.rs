//! `advanced_fs`: the spec's file-system tool. `read_file`, `write_file` and `search_content`
//! are `fs_read`, `fs_write` and `fs_search` (one implementation, two names); the others are
//! here: file metrics, templates (minijinja, the Jinja2 language), backups and restores inside
//! the workspace, and bulk operations applied as one transaction.
//!
//! Every path is confined as the file tools' are: checked by `Workspace::resolve`, then opened
//! beneath the root by the kernel. `refactor_code` renames an identifier with the file's
//! tree-sitter grammar (`turbo_syntax::rename`): names, never strings or comments.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use nix::fcntl::OFlag;
use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::catalogue::{Catalogued, Operation, PerCall, describe, operation_tool};
use crate::error::{Error, Result};
use crate::fs::write::write;
use crate::fs::{FsList, FsRead, FsSearch, FsWrite, looks_binary, walker};
use crate::schema::{self, Args};
use crate::tool::{ResourceEstimate, Tool, ToolOutput};
use crate::workspace::Workspace;

/// Where backups are kept, in the workspace (so the sandboxed tools can reach them).
pub const BACKUP_DIR: &str = ".turbo-backups";
/// Largest file analysed, backed up or used as a template.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Files one backup may hold.
const MAX_BACKUP_FILES: usize = 10_000;
/// Operations in one bulk transaction.
const MAX_BULK_OPERATIONS: usize = 200;
/// Template rendering steps before a template is stopped (a runaway loop).
const TEMPLATE_FUEL: u64 = 5_000_000;

fn operations() -> Vec<Operation> {
    let op = |name: &'static str, tool: Arc<dyn Tool>| Operation { name, tool };
    vec![
        op("read_file", Arc::new(FsRead)),
        op("write_file", Arc::new(FsWrite)),
        op("list_directory", Arc::new(FsList)),
        op("search_content", Arc::new(FsSearch)),
        op("analyze_file", Arc::new(AnalyzeFile)),
        op("refactor_code", Arc::new(Refactor)),
        op("create_from_template", Arc::new(FromTemplate)),
        op("bulk_operation", Arc::new(Bulk)),
        op("backup_files", Arc::new(Backup)),
        op("restore_files", Arc::new(Restore)),
    ]
}

static DESCRIPTION: LazyLock<String> = LazyLock::new(|| {
    describe(
        "File operations in the workspace beyond single reads and writes: file metrics, syntax-aware renames, files from Jinja2 templates, several changes as one all-or-nothing transaction, backups and restores.",
        &operations(),
    )
});

/// The `advanced_fs` tool.
pub fn advanced_fs() -> Catalogued {
    Catalogued::new("advanced_fs", &DESCRIPTION, ToolCategory::FileSystem, operations())
}

/// A regular file's bytes, opened beneath the root; at most `MAX_FILE_BYTES`.
pub(crate) fn read_bytes(ws: &Workspace, abs: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let rel = ws.relative(abs);
    let mut file = ws.open_file(abs, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let meta = file.metadata().map_err(|e| Error::io(&rel, e))?;
    if !meta.is_file() {
        return Err(Error::bad_args("advanced_fs", format!("'{rel}' is not a regular file")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::bad_args(
            "advanced_fs",
            format!("'{rel}' is {} bytes, over the {MAX_FILE_BYTES}-byte limit", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(&rel, e))?;
    Ok(bytes)
}

/// Whether a file (or anything) is at `abs`, not following a symlink at the leaf.
fn exists(abs: &Path) -> bool {
    std::fs::symlink_metadata(abs).is_ok()
}

operation_tool!(
    AnalyzeFile,
    "advanced_fs.analyze_file",
    ToolCategory::FileSystem,
    RiskLevel::Safe,
    false,
    "Measure a text file: lines (code, comment, blank), size, longest line, deepest indentation, functions, TODO/FIXME markers, language.",
    blocking
);
operation_tool!(
    FromTemplate,
    "advanced_fs.create_from_template",
    ToolCategory::FileSystem,
    RiskLevel::Medium,
    true,
    "Render a Jinja2 template (given inline or as a workspace file) with variables into a new file; an undefined variable is an error.",
    blocking
);
operation_tool!(
    Bulk,
    "advanced_fs.bulk_operation",
    ToolCategory::FileSystem,
    RiskLevel::Medium,
    true,
    "Apply several file changes (write, delete, move, mkdir) as one transaction: if any fails, every one before it is undone.",
    blocking
);
operation_tool!(
    Backup,
    "advanced_fs.backup_files",
    ToolCategory::FileSystem,
    RiskLevel::Low,
    true,
    "Copy files or directories into a named backup in .turbo-backups, to restore later.",
    blocking
);
operation_tool!(
    Restore,
    "advanced_fs.restore_files",
    ToolCategory::FileSystem,
    RiskLevel::Medium,
    true,
    "Copy files from a named backup back to their places (all of them, or the paths given).",
    blocking
);

// ---- analyze_file ----

/// Line comment markers by file extension.
fn comment_marker(ext: &str) -> (&'static str, &'static str) {
    match ext {
        "py" | "sh" | "bash" | "rb" | "toml" | "yaml" | "yml" | "pl" | "r" => ("#", "python-like"),
        "rs" | "js" | "jsx" | "ts" | "tsx" | "go" | "java" | "c" | "h" | "cc" | "cpp" | "hpp" | "cs" | "swift"
        | "kt" | "scala" => ("//", "c-like"),
        "sql" | "lua" | "hs" => ("--", "sql-like"),
        _ => ("", "text"),
    }
}

fn language(ext: &str) -> &'static str {
    match ext {
        "py" => "python",
        "rs" => "rust",
        "js" | "jsx" => "javascript",
        "ts" | "tsx" => "typescript",
        "go" => "go",
        "java" => "java",
        "c" | "h" => "c",
        "cc" | "cpp" | "hpp" => "cpp",
        "cs" => "csharp",
        "swift" => "swift",
        "kt" => "kotlin",
        "rb" => "ruby",
        "sh" | "bash" => "shell",
        "md" => "markdown",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "json" => "json",
        "sql" => "sql",
        _ => "unknown",
    }
}

/// Whether a line (trimmed) starts a function or method, by the language's keyword.
fn starts_function(lang: &str, line: &str) -> bool {
    let line = line
        .trim_start_matches("pub ")
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("async ")
        .trim_start_matches("export ");
    match lang {
        "python" => line.starts_with("def ") || line.starts_with("async def "),
        "rust" => line.starts_with("fn ") || line.starts_with("const fn ") || line.starts_with("unsafe fn "),
        "javascript" | "typescript" => {
            line.starts_with("function ") || line.contains("=> {") && line.contains("const ")
        }
        "go" => line.starts_with("func "),
        "shell" => line.ends_with("() {"),
        "java" | "csharp" | "kotlin" | "swift" => {
            (line.starts_with("public ")
                || line.starts_with("private ")
                || line.starts_with("protected ")
                || line.starts_with("fun ")
                || line.starts_with("func "))
                && line.contains('(')
                && !line.contains(" class ")
                && !line.ends_with(';')
        }
        _ => false,
    }
}

impl PerCall for AnalyzeFile {
    fn estimate_call(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate { cpu_seconds: 0.1, memory_mb: 16, disk_mb: 0 }
    }
}

impl AnalyzeFile {
    fn schema() -> Value {
        schema::object(json!({"path": {"type": "string", "description": "the file to measure"}}), &["path"])
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        let abs = ws.resolve(args.string("path")?)?;
        let rel = ws.relative(&abs);
        let bytes = read_bytes(ws, &abs)?;
        if looks_binary(&bytes) {
            return Ok(ToolOutput {
                content: format!("'{rel}' is a binary file ({} bytes)", bytes.len()),
                success: false,
                ..ToolOutput::default()
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let ext = abs.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        let (marker, _) = comment_marker(&ext);
        let lang = language(&ext);
        let (mut blank, mut comment, mut code, mut functions, mut markers) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut longest, mut deepest) = (0usize, 0usize);
        for line in text.lines() {
            let trimmed = line.trim();
            longest = longest.max(line.chars().count());
            if trimmed.is_empty() {
                blank += 1;
                continue;
            }
            let indent: usize =
                line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 4 } else { 1 }).sum();
            deepest = deepest.max(indent / 4);
            if trimmed.contains("TODO") || trimmed.contains("FIXME") {
                markers += 1;
            }
            if !marker.is_empty() && trimmed.starts_with(marker) {
                comment += 1;
            } else {
                code += 1;
                if starts_function(lang, trimmed) {
                    functions += 1;
                }
            }
        }
        let lines = blank + comment + code;
        let report = json!({
            "path": rel,
            "language": lang,
            "bytes": bytes.len(),
            "lines": lines,
            "code_lines": code,
            "comment_lines": comment,
            "blank_lines": blank,
            "functions": functions,
            "longest_line": longest,
            "max_indent_levels": deepest,
            "todo_markers": markers,
        });
        Ok(ToolOutput::ok(serde_json::to_string_pretty(&report).unwrap_or_default()))
    }
}

// ---- refactor_code ----

operation_tool!(
    Refactor,
    "advanced_fs.refactor_code",
    ToolCategory::FileSystem,
    RiskLevel::Medium,
    true,
    "Rename an identifier (a variable, function, type, field or method) in source files, by their syntax tree: every use of the name changes, strings, comments and longer names that contain it do not. Rust, Python, JavaScript, TypeScript, Go and Java.",
    blocking
);

impl PerCall for Refactor {}

impl Refactor {
    fn schema() -> Value {
        schema::object(
            json!({
                "paths": {"type": "array", "items": {"type": "string"}, "description": "the source files to rename in"},
                "refactor_type": {"type": "string", "enum": ["rename"], "description": "rename (the only one so far)"},
                "old_name": {"type": "string", "description": "the identifier to rename"},
                "new_name": {"type": "string", "description": "its new name"},
            }),
            &["paths", "refactor_type", "old_name", "new_name"],
        )
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        const NAME: &str = "advanced_fs.refactor_code";
        match args.string("refactor_type")? {
            "rename" => {}
            other => {
                return Err(Error::bad_args(NAME, format!("refactor_type '{other}' is not supported: use rename")));
            }
        }
        let (old, new) = (args.string("old_name")?, args.string("new_name")?);
        // Every file is renamed in memory first: one that cannot be leaves all of them as they were.
        let mut renamed = Vec::new();
        for value in args.array("paths")? {
            let path = value.as_str().ok_or_else(|| Error::bad_args(NAME, "paths must be strings"))?;
            let abs = ws.resolve(path)?;
            let rel = ws.relative(&abs);
            let grammar = turbo_syntax::Grammar::for_path(&rel).ok_or_else(|| {
                Error::bad_args(NAME, format!("'{rel}' is not Rust, Python, JavaScript, TypeScript, Go or Java source"))
            })?;
            let source = String::from_utf8(read_bytes(ws, &abs)?)
                .map_err(|_| Error::bad_args(NAME, format!("'{rel}' is not UTF-8 text")))?;
            let (out, n) = turbo_syntax::rename(grammar, &source, old, new)
                .map_err(|e| Error::bad_args(NAME, format!("'{rel}': {e}")))?;
            renamed.push((abs, rel, out, n));
        }
        let total: usize = renamed.iter().map(|r| r.3).sum();
        if total == 0 {
            return Ok(ToolOutput {
                content: format!("no identifier named '{old}' in those files: nothing changed"),
                ..ToolOutput::default()
            });
        }
        let mut changed = Vec::new();
        let mut lines = Vec::new();
        for (abs, rel, out, n) in renamed.into_iter().filter(|r| r.3 > 0) {
            write(ws, &abs, &rel, out.as_bytes())?;
            lines.push(format!("{rel}: {n}"));
            changed.push(rel);
        }
        Ok(ToolOutput {
            files_changed: changed,
            ..ToolOutput::ok(format!("renamed {old} to {new}: {total} occurrence(s) ({})", lines.join(", ")))
        })
    }
}

// ---- create_from_template ----

impl PerCall for FromTemplate {
    fn estimate_call(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate { cpu_seconds: 0.5, memory_mb: 32, disk_mb: 1 }
    }
}

impl FromTemplate {
    fn schema() -> Value {
        schema::object(
            json!({
                "output_path": {"type": "string", "description": "the file to create"},
                "template": {"type": "string", "description": "the template text (Jinja2), or give template_path"},
                "template_path": {"type": "string", "description": "a template file in the workspace"},
                "variables": {"type": "object", "description": "values the template uses, e.g. {\"name\": \"api\"}"},
                "overwrite": {"type": "boolean", "description": "replace output_path if it exists (default false)"},
            }),
            &["output_path"],
        )
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        const NAME: &str = "advanced_fs.create_from_template";
        let source = match (args.opt_string("template")?, args.opt_string("template_path")?) {
            (Some(text), None) => text.to_string(),
            (None, Some(path)) => {
                let bytes = read_bytes(ws, &ws.resolve(path)?)?;
                String::from_utf8(bytes)
                    .map_err(|_| Error::bad_args(NAME, format!("template_path '{path}' is not UTF-8 text")))?
            }
            (Some(_), Some(_)) => return Err(Error::bad_args(NAME, "give template or template_path, not both")),
            (None, None) => {
                return Err(Error::bad_args(
                    NAME,
                    "give the template text (template) or a template file (template_path)",
                ));
            }
        };
        let variables = args.opt_object("variables")?.cloned().unwrap_or_default();
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let rendered = env
            .render_str(&source, Value::Object(variables))
            .map_err(|e| Error::bad_args(NAME, format!("the template cannot be rendered: {e:#}")))?;
        let out = ws.resolve_no_follow(args.string("output_path")?)?;
        let rel = ws.relative(&out);
        if exists(&out) && !args.opt_bool("overwrite")?.unwrap_or(false) {
            return Err(Error::bad_args(NAME, format!("'{rel}' exists: pass overwrite=true to replace it")));
        }
        let mut written = write(ws, &out, &rel, rendered.as_bytes())?;
        written.content = format!("{} from the template", written.content);
        Ok(written)
    }
}

// ---- bulk_operation ----

/// A path's state before the transaction touched it, to put back on failure.
enum Before {
    File(Vec<u8>),
    Absent,
    /// A directory the transaction created.
    NoDir,
}

struct Journal<'a> {
    ws: &'a Workspace,
    saved: Vec<(PathBuf, Before)>,
}

impl Journal<'_> {
    /// Remembers `abs` as it is, the first time the transaction touches it.
    fn save(&mut self, abs: &Path) -> Result<()> {
        if self.saved.iter().any(|(p, _)| p == abs) {
            return Ok(());
        }
        let before = match std::fs::symlink_metadata(abs) {
            Ok(meta) if meta.is_file() => Before::File(read_bytes(self.ws, abs)?),
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(Error::bad_args(
                    "advanced_fs.bulk_operation",
                    format!("'{}' is not a regular file", self.ws.relative(abs)),
                ));
            }
            Err(_) => Before::Absent,
        };
        self.saved.push((abs.to_path_buf(), before));
        Ok(())
    }

    /// Puts every saved path back, newest first. Best effort: returns what could not be.
    fn roll_back(self) -> Vec<String> {
        let mut failed = Vec::new();
        for (abs, before) in self.saved.into_iter().rev() {
            let rel = self.ws.relative(&abs);
            let undone = match before {
                Before::File(bytes) => write(self.ws, &abs, &rel, &bytes).map(|_| ()),
                Before::Absent => match std::fs::remove_file(&abs) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&rel, e)),
                    _ => Ok(()),
                },
                Before::NoDir => std::fs::remove_dir(&abs)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .map_err(|e| Error::io(&rel, e)),
            };
            if let Err(e) = undone {
                failed.push(format!("{rel}: {e}"));
            }
        }
        failed
    }
}

impl PerCall for Bulk {
    fn estimate_call(&self, args: &Value) -> ResourceEstimate {
        let n = args["operations"].as_array().map_or(0, Vec::len) as f64;
        ResourceEstimate { cpu_seconds: 0.01 * n, memory_mb: 16, disk_mb: 1 }
    }
}

impl Bulk {
    fn schema() -> Value {
        schema::object(
            json!({
                "operations": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "in order, each {\"action\": \"write\"|\"delete\"|\"move\"|\"mkdir\", \"path\": ..., \"content\": (write), \"to\": (move)}",
                },
            }),
            &["operations"],
        )
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        const NAME: &str = "advanced_fs.bulk_operation";
        let ops = args.array("operations")?;
        if ops.is_empty() || ops.len() > MAX_BULK_OPERATIONS {
            return Err(Error::bad_args(
                NAME,
                format!("give 1 to {MAX_BULK_OPERATIONS} operations, got {}", ops.len()),
            ));
        }
        // Every operation is checked before any runs.
        let mut planned = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let at = |reason: String| Error::bad_args(NAME, format!("operations[{i}]: {reason}"));
            let field = |key: &str| op.get(key).and_then(Value::as_str);
            let action = field("action").ok_or_else(|| at("'action' must be write, delete, move or mkdir".into()))?;
            let path = ws.resolve_no_follow(field("path").ok_or_else(|| at("'path' is missing".into()))?)?;
            let step = match action {
                "write" => Step::Write(
                    path,
                    field("content").ok_or_else(|| at("a write needs 'content' (a string)".into()))?.to_string(),
                ),
                "delete" => Step::Delete(path),
                "move" => {
                    Step::Move(path, ws.resolve_no_follow(field("to").ok_or_else(|| at("a move needs 'to'".into()))?)?)
                }
                "mkdir" => Step::Mkdir(path),
                other => return Err(at(format!("unknown action '{other}': use write, delete, move or mkdir"))),
            };
            planned.push(step);
        }
        let mut journal = Journal { ws, saved: Vec::new() };
        let mut changed: Vec<String> = Vec::new();
        for (i, step) in planned.iter().enumerate() {
            if let Err(e) = step.apply(&mut journal, &mut changed) {
                let n = planned.len();
                let left = journal.roll_back();
                let undone = if left.is_empty() {
                    "every change before it was undone: the workspace is as it was".to_string()
                } else {
                    format!("these could not be undone: {}", left.join("; "))
                };
                return Ok(ToolOutput {
                    content: format!("operation {} of {n} failed: {e}; {undone}", i + 1),
                    success: false,
                    ..ToolOutput::default()
                });
            }
        }
        changed.dedup();
        Ok(ToolOutput {
            files_changed: changed.clone(),
            ..ToolOutput::ok(format!("applied {} operation(s): {}", planned.len(), changed.join(", ")))
        })
    }
}

enum Step {
    Write(PathBuf, String),
    Delete(PathBuf),
    Move(PathBuf, PathBuf),
    Mkdir(PathBuf),
}

impl Step {
    fn apply(&self, journal: &mut Journal<'_>, changed: &mut Vec<String>) -> Result<()> {
        let ws = journal.ws;
        match self {
            Step::Write(abs, content) => {
                journal.save(abs)?;
                write(ws, abs, &ws.relative(abs), content.as_bytes())?;
                changed.push(ws.relative(abs));
            }
            Step::Delete(abs) => {
                let rel = ws.relative(abs);
                if !exists(abs) {
                    return Err(Error::NotFound { path: rel });
                }
                journal.save(abs)?;
                std::fs::remove_file(abs).map_err(|e| Error::io(&rel, e))?;
                changed.push(rel);
            }
            Step::Move(from, to) => {
                let (from_rel, to_rel) = (ws.relative(from), ws.relative(to));
                if !exists(from) {
                    return Err(Error::NotFound { path: from_rel });
                }
                if exists(to) {
                    return Err(Error::bad_args(
                        "advanced_fs.bulk_operation",
                        format!("'{to_rel}' exists: delete it first"),
                    ));
                }
                journal.save(from)?;
                journal.save(to)?;
                // Both ends through descriptors opened beneath the root.
                let (Some(from_dir), Some(to_dir)) = (from.parent(), to.parent()) else {
                    return Err(Error::bad_args("advanced_fs.bulk_operation", "give file paths"));
                };
                std::fs::create_dir_all(to_dir).map_err(|e| Error::io(&to_rel, e))?;
                let (fd_from, fd_to) = (ws.open_dir(from_dir)?, ws.open_dir(to_dir)?);
                let (Some(from_leaf), Some(to_leaf)) = (from.file_name(), to.file_name()) else {
                    return Err(Error::bad_args("advanced_fs.bulk_operation", "give file paths"));
                };
                std::fs::rename(Workspace::fd_path(&fd_from).join(from_leaf), Workspace::fd_path(&fd_to).join(to_leaf))
                    .map_err(|e| Error::io(&from_rel, e))?;
                changed.push(from_rel);
                changed.push(to_rel);
            }
            Step::Mkdir(abs) => {
                let rel = ws.relative(abs);
                if !exists(abs) {
                    journal.saved.push((abs.clone(), Before::NoDir));
                    std::fs::create_dir(abs).map_err(|e| Error::io(&rel, e))?;
                    ws.open_dir(abs)?;
                }
            }
        }
        Ok(())
    }
}

// ---- backup_files / restore_files ----

/// A backup's name: letters, digits, '-', '_' and '.', not starting with '.'.
fn backup_name(tool: &str, name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::bad_args(
            tool,
            format!("'{name}' is not a usable backup name: use letters, digits, '-', '_' and '.'"),
        ))
    }
}

/// The regular files under `abs` (itself when a file), as the file tools see them (.gitignore
/// applies; backups are never backed up, unless the walk is of a backup).
fn files_under(ws: &Workspace, abs: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::symlink_metadata(abs).map_err(|_| Error::NotFound { path: ws.relative(abs) })?;
    if meta.is_file() {
        return Ok(vec![abs.to_path_buf()]);
    }
    let backups = ws.root().join(BACKUP_DIR);
    let files: Vec<PathBuf> = walker(abs, None)
        .build()
        .flatten()
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| e.into_path())
        .filter(|p| abs.starts_with(&backups) || !p.starts_with(&backups))
        .collect();
    Ok(files)
}

impl PerCall for Backup {
    fn estimate_call(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate { cpu_seconds: 1.0, memory_mb: 32, disk_mb: 64 }
    }
}

impl Backup {
    fn schema() -> Value {
        schema::object(
            json!({
                "paths": {"type": "array", "items": {"type": "string"}, "description": "files or directories to back up"},
                "name": {"type": "string", "description": "the backup's name (default backup-<UTC time>)"},
            }),
            &["paths"],
        )
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        const NAME: &str = "advanced_fs.backup_files";
        let name = match args.opt_string("name")? {
            Some(n) => backup_name(NAME, n)?,
            None => format!("backup-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")),
        };
        let dest = ws.root().join(BACKUP_DIR).join(&name);
        if exists(&dest) {
            return Err(Error::bad_args(NAME, format!("a backup named '{name}' exists: choose another name")));
        }
        let mut files = Vec::new();
        for value in args.array("paths")? {
            let path = value.as_str().ok_or_else(|| Error::bad_args(NAME, "paths must be strings"))?;
            files.extend(files_under(ws, &ws.resolve(path)?)?);
        }
        if files.is_empty() || files.len() > MAX_BACKUP_FILES {
            return Err(Error::bad_args(
                NAME,
                format!("the paths hold {} files: back up 1 to {MAX_BACKUP_FILES}", files.len()),
            ));
        }
        for file in &files {
            let rel = ws.relative(file);
            let bytes = read_bytes(ws, file)?;
            let target = dest.join(&rel);
            write(ws, &target, &ws.relative(&target), &bytes)?;
        }
        Ok(ToolOutput::ok(format!("backed up {} file(s) as '{name}' in {BACKUP_DIR}/{name}", files.len())))
    }
}

impl PerCall for Restore {
    fn estimate_call(&self, _args: &Value) -> ResourceEstimate {
        ResourceEstimate { cpu_seconds: 1.0, memory_mb: 32, disk_mb: 64 }
    }
}

impl Restore {
    fn schema() -> Value {
        schema::object(
            json!({
                "name": {"type": "string", "description": "the backup to restore from"},
                "paths": {"type": "array", "items": {"type": "string"}, "description": "only these files or directories (default all)"},
            }),
            &["name"],
        )
    }

    fn run(args: &Args<'_>, ws: &Workspace) -> Result<ToolOutput> {
        const NAME: &str = "advanced_fs.restore_files";
        let name = backup_name(NAME, args.string("name")?)?;
        let source = ws.root().join(BACKUP_DIR).join(&name);
        if !source.is_dir() {
            return Err(Error::bad_args(NAME, format!("there is no backup named '{name}' in {BACKUP_DIR}")));
        }
        let wanted: Option<Vec<String>> = match args.opt_array("paths")? {
            None => None,
            Some(values) => Some(
                values
                    .iter()
                    .map(|v| {
                        let p = v.as_str().ok_or_else(|| Error::bad_args(NAME, "paths must be strings"))?;
                        Ok(ws.relative(&ws.resolve(p)?))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let mut restored = Vec::new();
        for file in files_under(ws, &source)? {
            let Ok(rel) = file.strip_prefix(&source).map(|r| r.to_string_lossy().into_owned()) else { continue };
            if let Some(wanted) = &wanted
                && !wanted.iter().any(|w| rel == *w || rel.starts_with(&format!("{w}/")))
            {
                continue;
            }
            let bytes = read_bytes(ws, &file)?;
            let target = ws.resolve_no_follow(&rel)?;
            write(ws, &target, &rel, &bytes)?;
            restored.push(rel);
        }
        if restored.is_empty() {
            return Err(Error::bad_args(NAME, format!("backup '{name}' holds none of the paths given")));
        }
        Ok(ToolOutput {
            files_changed: restored.clone(),
            ..ToolOutput::ok(format!("restored {} file(s) from '{name}': {}", restored.len(), restored.join(", ")))
        })
    }
}
