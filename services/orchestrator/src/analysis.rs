//! A project's initial analysis: what a quick look at its directory tells (languages, manifests,
//! test directories, size), and what follows from it (tools to use, complexity, setup time,
//! next steps). Deterministic and bounded: at most [`MAX_FILES`] entries three levels deep.

use std::path::Path;
use std::time::Duration;

use turbo_core::project::Language;
use turbo_core::task::Complexity;

/// Entries looked at, at most; enough to tell a project's languages and size.
const MAX_FILES: usize = 5_000;
/// Source files below this count make a project of low complexity, below the next medium.
const LOW_BELOW: usize = 20;
const MEDIUM_BELOW: usize = 200;

/// Dependency manifests at the root and the build system each implies.
const MANIFESTS: &[(&str, &str)] = &[
    ("pyproject.toml", "python"),
    ("requirements.txt", "pip"),
    ("setup.py", "setuptools"),
    ("package.json", "npm"),
    ("Cargo.toml", "cargo"),
    ("go.mod", "go"),
    ("pom.xml", "maven"),
    ("build.gradle", "gradle"),
    ("build.gradle.kts", "gradle"),
    ("Package.swift", "swiftpm"),
    ("CMakeLists.txt", "cmake"),
];

/// Directory names that hold tests.
const TEST_DIRS: &[&str] = &["test", "tests", "spec", "__tests__"];

/// What the directory holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    /// Languages seen, most files first.
    pub languages: Vec<Language>,
    /// Source files of those languages.
    pub source_files: usize,
    /// Manifests found at the root, e.g. `pyproject.toml`.
    pub dependency_files: Vec<String>,
    /// The build system the first manifest implies, e.g. `cargo`.
    pub build_system: Option<String>,
    /// Top-level test directories, e.g. `tests`.
    pub test_directories: Vec<String>,
    /// Whether the directory holds anything at all.
    pub empty: bool,
}

impl Analysis {
    /// Low, medium or high by the number of source files.
    pub fn complexity(&self) -> Complexity {
        match self.source_files {
            n if n < LOW_BELOW => Complexity::Low,
            n if n < MEDIUM_BELOW => Complexity::Medium,
            _ => Complexity::High,
        }
    }

    /// A rough time to get a development environment going: more for bigger projects, and
    /// a little more when there is no manifest to install from.
    pub fn setup_time(&self) -> Duration {
        let minutes = match self.complexity() {
            Complexity::Low => 5,
            Complexity::Medium => 15,
            Complexity::High => 30,
        } + if self.dependency_files.is_empty() { 5 } else { 0 };
        Duration::from_secs(minutes * 60)
    }

    /// Tools that fit the languages (tests, linting, formatting), without repeats.
    pub fn recommended_tools(&self, languages: &[Language]) -> Vec<String> {
        let mut tools: Vec<String> = Vec::new();
        for lang in languages {
            let for_lang: &[&str] = match lang {
                Language::Python => &["pytest", "ruff"],
                Language::Javascript => &["npm", "eslint", "prettier"],
                Language::Typescript => &["npm", "tsc", "eslint", "prettier"],
                Language::Rust => &["cargo test", "clippy", "rustfmt"],
                Language::Go => &["go test", "go vet", "gofmt"],
                Language::Java => &["maven", "junit"],
                Language::Csharp => &["dotnet test"],
                Language::Cpp => &["cmake", "ctest", "clang-format"],
                Language::Swift => &["swift test"],
                Language::Kotlin => &["gradle", "ktlint"],
            };
            for t in for_lang {
                if !tools.iter().any(|have| have == t) {
                    tools.push((*t).to_string());
                }
            }
        }
        tools
    }

    /// Human-readable suggestions for what to do first.
    pub fn next_steps(&self) -> Vec<String> {
        let mut steps = Vec::new();
        if self.empty {
            steps.push("Initialize repository structure".to_string());
        }
        if self.dependency_files.is_empty() {
            steps.push("Add a dependency manifest (e.g. pyproject.toml, package.json, Cargo.toml)".to_string());
        } else {
            steps.push("Set up development environment".to_string());
        }
        if self.test_directories.is_empty() {
            steps.push("Add a test suite so agents can check their changes".to_string());
        }
        steps.push("Create a task: TaskService.CreateTask with this project's id".to_string());
        steps
    }
}

/// Looks at `root` (three levels deep, honouring .gitignore). A directory that cannot be read
/// gives an empty analysis.
pub fn analyze(root: &Path) -> Analysis {
    let mut counts: Vec<(Language, usize)> = Vec::new();
    let mut entries = 0usize;
    let walker = ignore::WalkBuilder::new(root).max_depth(Some(3)).require_git(false).build();
    for entry in walker.flatten().take(MAX_FILES) {
        if entry.depth() == 0 {
            continue;
        }
        entries += 1;
        let Some(lang) = entry.path().extension().and_then(|e| e.to_str()).and_then(language_of) else { continue };
        match counts.iter_mut().find(|(l, _)| *l == lang) {
            Some((_, n)) => *n += 1,
            None => counts.push((lang, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let source_files = counts.iter().map(|c| c.1).sum();
    let dependency_files: Vec<String> =
        MANIFESTS.iter().filter(|(f, _)| root.join(f).is_file()).map(|(f, _)| (*f).to_string()).collect();
    let build_system = MANIFESTS.iter().find(|(f, _)| root.join(f).is_file()).map(|(_, build)| (*build).to_string());
    let test_directories = TEST_DIRS.iter().filter(|d| root.join(d).is_dir()).map(|d| (*d).to_string()).collect();
    Analysis {
        languages: counts.into_iter().map(|(l, _)| l).collect(),
        source_files,
        dependency_files,
        build_system,
        test_directories,
        empty: entries == 0,
    }
}

/// Languages seen in the first levels of the tree, most files first.
pub fn detect_languages(root: &Path) -> Vec<Language> {
    analyze(root).languages
}

fn language_of(ext: &str) -> Option<Language> {
    Some(match ext {
        "py" => Language::Python,
        "js" | "mjs" | "cjs" | "jsx" => Language::Javascript,
        "ts" | "tsx" => Language::Typescript,
        "rs" => Language::Rust,
        "go" => Language::Go,
        "java" => Language::Java,
        "cs" => Language::Csharp,
        "c" | "cc" | "cpp" | "h" | "hpp" => Language::Cpp,
        "swift" => Language::Swift,
        "kt" | "kts" => Language::Kotlin,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_project_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("pyproject.toml"), "[project]\nname='x'\n").unwrap();
        std::fs::create_dir(root.join("tests")).unwrap();
        std::fs::write(root.join("app.py"), "print(1)\n").unwrap();
        std::fs::write(root.join("tests/test_app.py"), "def test(): pass\n").unwrap();
        std::fs::write(root.join("ui.js"), "1\n").unwrap();
        let a = analyze(root);
        assert_eq!(a.languages, [Language::Python, Language::Javascript]);
        assert_eq!(a.source_files, 3);
        assert_eq!(a.dependency_files, ["pyproject.toml"]);
        assert_eq!(a.build_system.as_deref(), Some("python"));
        assert_eq!(a.test_directories, ["tests"]);
        assert_eq!(a.complexity(), Complexity::Low);
        assert_eq!(a.setup_time(), Duration::from_secs(300));
        assert_eq!(a.recommended_tools(&a.languages), ["pytest", "ruff", "npm", "eslint", "prettier"]);
        assert_eq!(
            a.next_steps(),
            ["Set up development environment", "Create a task: TaskService.CreateTask with this project's id"]
        );
    }

    #[test]
    fn an_empty_directory_needs_everything() {
        let dir = tempfile::tempdir().unwrap();
        let a = analyze(dir.path());
        assert!(a.empty && a.languages.is_empty() && a.build_system.is_none());
        assert_eq!(a.next_steps().len(), 4);
        assert_eq!(a.setup_time(), Duration::from_secs(600));
    }
}
