//! Projects: the spec's ProjectMetadata and its enums.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::enums::string_enum;
use crate::error::ValidationErrors;
use crate::ids::ProjectId;
use crate::validate::{Validate, len_between, opt_in_range, opt_non_negative};

string_enum!(
    /// Supported project types with specific handling.
    ProjectType: "project type" {
        WebApplication => "web_application",
        ApiService => "api_service",
        MobileApp => "mobile_app",
        DesktopApp => "desktop_app",
        DataScience => "data_science",
        MachineLearning => "machine_learning",
        Blockchain => "blockchain",
        GameDevelopment => "game_development",
        EmbeddedSystem => "embedded_system",
        DevopsInfrastructure => "devops_infrastructure",
    }
);

string_enum!(
    /// Supported programming languages.
    Language: "language" {
        Python => "python",
        Javascript => "javascript",
        Typescript => "typescript",
        Rust => "rust",
        Go => "go",
        Java => "java",
        Csharp => "csharp",
        Cpp => "cpp",
        Swift => "swift",
        Kotlin => "kotlin",
    }
);

string_enum!(
    /// Popular frameworks by language ecosystem.
    Framework: "framework" {
        Fastapi => "fastapi",
        Django => "django",
        Flask => "flask",
        React => "react",
        Vue => "vue",
        Angular => "angular",
        Nodejs => "nodejs",
        Express => "express",
        Nextjs => "nextjs",
        ActixWeb => "actix-web",
        Rocket => "rocket",
        Gin => "gin",
        Echo => "echo",
        SpringBoot => "spring-boot",
        Quarkus => "quarkus",
    }
);

static SLUG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9-]+$").expect("static regex"));

/// Complete project metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectMetadata {
    pub id: ProjectId,
    /// 1..=100 characters.
    pub name: String,
    /// URL-safe identifier matching `^[a-z0-9-]+$`.
    pub slug: String,
    /// At most 1000 characters.
    pub description: Option<String>,
    pub project_type: ProjectType,
    /// At least one.
    pub languages: Vec<Language>,
    #[serde(default)]
    pub frameworks: Vec<Framework>,
    pub repository_url: Option<String>,
    #[serde(default = "default_main_branch")]
    pub main_branch: String,
    /// Absolute path to the project root.
    pub root_path: String,
    #[serde(default)]
    pub source_directories: Vec<String>,
    #[serde(default)]
    pub test_directories: Vec<String>,
    #[serde(default)]
    pub config_files: Vec<String>,
    #[serde(default)]
    pub dependency_files: Vec<String>,
    pub build_system: Option<String>,
    #[serde(default)]
    pub build_commands: Vec<String>,
    #[serde(default)]
    pub test_commands: Vec<String>,
    pub architecture_pattern: Option<String>,
    #[serde(default)]
    pub design_patterns: Vec<String>,
    #[serde(default)]
    pub total_lines: u64,
    /// Percentage, 0..=100.
    pub test_coverage: Option<f64>,
    /// >= 0.
    pub complexity_score: Option<f64>,
    /// >= 0.
    pub technical_debt_hours: Option<f64>,
    #[serde(default)]
    pub team_members: Vec<String>,
    pub coding_standards: Option<String>,
    #[serde(default)]
    pub ai_context: serde_json::Map<String, serde_json::Value>,
    pub last_analyzed: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn default_main_branch() -> String {
    "main".to_string()
}

impl ProjectMetadata {
    /// A project with the required fields set and everything else at its default.
    pub fn new(
        name: impl Into<String>,
        slug: impl Into<String>,
        project_type: ProjectType,
        languages: Vec<Language>,
        root_path: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: ProjectId::new(),
            name: name.into(),
            slug: slug.into(),
            description: None,
            project_type,
            languages,
            frameworks: Vec::new(),
            repository_url: None,
            main_branch: default_main_branch(),
            root_path: root_path.into(),
            source_directories: Vec::new(),
            test_directories: Vec::new(),
            config_files: Vec::new(),
            dependency_files: Vec::new(),
            build_system: None,
            build_commands: Vec::new(),
            test_commands: Vec::new(),
            architecture_pattern: None,
            design_patterns: Vec::new(),
            total_lines: 0,
            test_coverage: None,
            complexity_score: None,
            technical_debt_hours: None,
            team_members: Vec::new(),
            coding_standards: None,
            ai_context: serde_json::Map::new(),
            last_analyzed: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Derives a slug from a free-form name: lowercase, runs of other characters become one `-`.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() { "project".to_string() } else { trimmed.to_string() }
}

/// Top-level directories that belong to the system: a project rooted in one of them would have
/// its agents read, index and write the host itself.
pub const SYSTEM_DIRS: &[&str] =
    &["bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys", "usr"];

/// Top-level directories that hold many users' or programs' files: a project lies below one.
pub const SHARED_DIRS: &[&str] = &["home", "media", "mnt", "nix", "opt", "root", "snap", "srv", "tmp", "var"];

/// Whether `real`, an absolute path with `..` and symbolic links resolved, may be a project's
/// root (or a workspace to index): not `/`, not one of [`SHARED_DIRS`] itself, not in one of
/// [`SYSTEM_DIRS`]. (`/app` or `/workspace` in a container is fine.)
pub fn fit_for_root(real: &std::path::Path) -> bool {
    let parts: Vec<_> = real.components().skip(1).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        _ if !real.is_absolute() => false,
        [] => false,
        [top] => !SHARED_DIRS.contains(&top.as_str()) && !SYSTEM_DIRS.contains(&top.as_str()),
        [top, ..] => !SYSTEM_DIRS.contains(&top.as_str()),
    }
}

impl Validate for ProjectMetadata {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        len_between(&mut errs, "name", &self.name, 1, 100);
        if !SLUG.is_match(&self.slug) {
            errs.push("slug", format!("'{}' must match ^[a-z0-9-]+$ (lowercase letters, digits, dashes)", self.slug));
        }
        if let Some(d) = &self.description {
            len_between(&mut errs, "description", d, 0, 1000);
        }
        if self.languages.is_empty() {
            errs.push("languages", "at least one language must be specified");
        }
        if !std::path::Path::new(&self.root_path).is_absolute() {
            errs.push("root_path", format!("'{}' must be an absolute path", self.root_path));
        }
        if self.main_branch.trim().is_empty() {
            errs.push("main_branch", "must not be empty");
        }
        opt_in_range(&mut errs, "test_coverage", self.test_coverage, 0.0, 100.0);
        opt_non_negative(&mut errs, "complexity_score", self.complexity_score);
        opt_non_negative(&mut errs, "technical_debt_hours", self.technical_debt_hours);
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectMetadata {
        ProjectMetadata::new("My App", "my-app", ProjectType::ApiService, vec![Language::Python], "/srv/app")
    }

    #[test]
    fn accepts_a_minimal_project() {
        assert_eq!(project().validate(), Ok(()));
    }

    #[test]
    fn reports_every_broken_constraint() {
        let mut p = project();
        p.name = String::new();
        p.slug = "My_App".into();
        p.languages.clear();
        p.test_coverage = Some(100.5);
        p.complexity_score = Some(f64::NAN);
        p.root_path = "relative/dir".into();
        let errs = p.validate().unwrap_err();
        let fields: Vec<_> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "slug", "languages", "root_path", "test_coverage", "complexity_score"]);
    }

    #[test]
    fn a_root_is_a_projects_own_directory_not_a_shared_or_system_one() {
        use std::path::Path;
        for fit in ["/srv/app", "/home/ana/app", "/tmp/.tmpAbc/ws", "/var/lib/turbo-coder/workspaces", "/app"] {
            assert!(fit_for_root(Path::new(fit)), "{fit}");
        }
        for unfit in ["/", "/srv", "/tmp", "/home", "/etc", "/etc/ssl", "/usr/lib/python3", "/proc/1", "relative/dir"] {
            assert!(!fit_for_root(Path::new(unfit)), "{unfit}");
        }
    }

    #[test]
    fn slugify_makes_valid_slugs() {
        assert_eq!(slugify("My Awesome_App!"), "my-awesome-app");
        assert_eq!(slugify("***"), "project");
        assert!(SLUG.is_match(&slugify("Ünïcode Nâme 2")));
    }

    #[test]
    fn framework_wire_names_keep_dashes() {
        assert_eq!(serde_json::to_string(&Framework::ActixWeb).unwrap(), "\"actix-web\"");
        assert_eq!("spring-boot".parse::<Framework>().unwrap(), Framework::SpringBoot);
        assert!("springboot".parse::<Framework>().is_err());
    }
}
