//! The project a workdir belongs to: found by its root path, or created from what the
//! directory contains. [`Guess`] is what the directory tells; the local store and the
//! orchestrator's API (`remote.rs`) both create projects from it.

use std::path::Path;

use turbo_core::project::{Language, ProjectMetadata, ProjectType, slugify};
use turbo_orchestrator::analysis::detect_languages;
use turbo_store::Store;

use crate::exit::{self, Exit};

/// What a directory tells about the project rooted at it.
pub struct Guess {
    /// The directory's name (at most 100 characters), or "project" for `/`.
    pub name: String,
    pub project_type: ProjectType,
    /// At least one.
    pub languages: Vec<Language>,
    /// No language was detected and [`Guess::languages`] is the default.
    pub languages_guessed: bool,
}

impl Guess {
    pub fn of(root: &Path) -> Guess {
        let name: String = root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "project".into())
            .chars()
            .take(100)
            .collect();
        let mut languages = detect_languages(root);
        let languages_guessed = languages.is_empty();
        if languages_guessed {
            // The spec requires one language; an empty directory is most often a new Python project.
            languages.push(Language::Python);
        }
        Guess { name, project_type: ProjectType::ApiService, languages, languages_guessed }
    }
}

pub async fn project_for(store: &Store, root: &Path) -> Result<ProjectMetadata, Exit> {
    let root_str = root.to_string_lossy().to_string();
    if let Some(p) = store.project_by_root(&root_str).await.map_err(|e| Exit::new(exit::STORAGE, e.to_string()))? {
        return Ok(p);
    }
    let guess = Guess::of(root);
    // Two checkouts with the same folder name are different projects: the slug carries a hash of the path.
    let hash = root_str.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let slug = format!("{}-{:08x}", slugify(&guess.name), hash as u32);
    let mut project = ProjectMetadata::new(guess.name, slug, guess.project_type, guess.languages, root_str);
    if guess.languages_guessed {
        project.ai_context.insert("languages_guessed".into(), true.into());
    }
    store.upsert_project(&project).await.map_err(|e| Exit::new(exit::STORAGE, e.to_string()))?;
    Ok(project)
}
