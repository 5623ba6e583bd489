//! The project a workdir belongs to: found by its root path, or created from what the
//! directory contains.

use std::path::Path;

use turbo_core::project::{Language, ProjectMetadata, ProjectType, slugify};
use turbo_store::Store;

use crate::exit::{self, Exit};

/// Languages seen in the first levels of the tree, most files first.
fn detect_languages(root: &Path) -> Vec<Language> {
    let mut counts: Vec<(Language, usize)> = Vec::new();
    let walker = ignore::WalkBuilder::new(root).max_depth(Some(3)).require_git(false).build();
    for entry in walker.flatten().take(5_000) {
        let ext = entry.path().extension().and_then(|e| e.to_str()).unwrap_or_default();
        let lang = match ext {
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
            _ => continue,
        };
        match counts.iter_mut().find(|(l, _)| *l == lang) {
            Some((_, n)) => *n += 1,
            None => counts.push((lang, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.into_iter().map(|(l, _)| l).collect()
}

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
