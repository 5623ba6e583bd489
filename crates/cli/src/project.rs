//! The project a workdir belongs to: found by its root path, or created from what the
//! directory contains.

use std::path::Path;

use turbo_core::project::{Language, ProjectMetadata, ProjectType, slugify};
use turbo_orchestrator::analysis::detect_languages;
use turbo_store::Store;

use crate::exit::{self, Exit};

pub async fn project_for(store: &Store, root: &Path) -> Result<ProjectMetadata, Exit> {
    let root_str = root.to_string_lossy().to_string();
    if let Some(p) = store.project_by_root(&root_str).await.map_err(|e| Exit::new(exit::STORAGE, e.to_string()))? {
        return Ok(p);
    }
    let name: String = root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "project".into())
        .chars()
        .take(100)
        .collect();
    // Two checkouts with the same folder name are different projects: the slug carries a hash of the path.
    let hash = root_str.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let slug = format!("{}-{:08x}", slugify(&name), hash as u32);
    let mut languages = detect_languages(root);
    let guessed = languages.is_empty();
    if guessed {
        // The spec requires one language; an empty directory is most often a new Python project.
        languages.push(Language::Python);
    }
    let mut project = ProjectMetadata::new(name, slug, ProjectType::ApiService, languages, root_str);
    if guessed {
        project.ai_context.insert("languages_guessed".into(), true.into());
    }
    store.upsert_project(&project).await.map_err(|e| Exit::new(exit::STORAGE, e.to_string()))?;
    Ok(project)
}
