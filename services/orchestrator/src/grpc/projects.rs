//! `turbo.projects.v1.ProjectService`: create (with an initial analysis), read, list, update by
//! field mask, soft-delete and restore projects.

use std::path::Path;

use chrono::Utc;
use tonic::{Request, Response, Status};
use turbo_core::ValidationErrors;
use turbo_core::ids::ProjectId;
use turbo_core::project::{ProjectMetadata, ProjectType, SHARED_DIRS, SYSTEM_DIRS, fit_for_root, slugify};
use turbo_core::validate::Validate;
use turbo_proto::convert::{
    ProtoEnum, duration_to_proto, id_from_proto, json_map_from_proto, timestamp_from_proto, timestamp_to_proto,
};
use turbo_proto::projects::v1 as pb;
use turbo_proto::projects::v1::project_service_server::ProjectService;
use turbo_store::ProjectQuery;

use super::{Api, Level, Who, next_token, page_cursor, page_size};
use crate::RESTORE_WINDOW;
use crate::analysis::{Analysis, analyze};
use crate::error::{Error, Result};

/// The `ProjectMetadata` fields an update mask may name.
const UPDATABLE: &[&str] = &[
    "name",
    "slug",
    "description",
    "project_type",
    "languages",
    "frameworks",
    "repository_url",
    "main_branch",
    "root_path",
    "source_directories",
    "test_directories",
    "config_files",
    "dependency_files",
    "build_system",
    "build_commands",
    "test_commands",
    "architecture_pattern",
    "design_patterns",
    "total_lines",
    "test_coverage",
    "complexity_score",
    "technical_debt_hours",
    "team_members",
    "coding_standards",
    "ai_context_json",
    "last_analyzed",
];

#[tonic::async_trait]
impl ProjectService for Api {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> std::result::Result<Response<pb::CreateProjectResponse>, Status> {
        let who = Who::of(&request);
        let mut r = request.into_inner();
        let detail = serde_json::json!({ "name": r.name });
        // A user through the gateway owns what they create: first of its team members.
        if let Some(name) = who.user() {
            r.team_members.retain(|m| m != name);
            r.team_members.insert(0, name.to_string());
        }
        let created = match who.needs(Level::Write) {
            Ok(()) => self.create_project(r).await.map_err(Status::from),
            Err(e) => Err(Status::from(e)),
        };
        let target = created.as_ref().ok().and_then(|c| c.project.as_ref()).map(|p| p.id.clone()).unwrap_or_default();
        self.audit(who.actor(), "project.create", target, Some(detail), &created).await;
        Ok(Response::new(created?))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> std::result::Result<Response<pb::ProjectMetadata>, Status> {
        let who = Who::of(&request);
        let id = project_id(&request.get_ref().project_id)?;
        Ok(Response::new(self.visible_project(&who, id).await?.into()))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> std::result::Result<Response<pb::ListProjectsResponse>, Status> {
        let who = Who::of(&request);
        let r = request.into_inner();
        let query = ProjectQuery {
            include_deleted: r.include_deleted,
            limit: page_size(r.page_size),
            after: page_cursor(&r.page_token)?,
        };
        let page = self.store.list_projects(query).await.map_err(Error::from)?;
        // A page may hold fewer projects than asked once those the caller cannot see are left
        // out; the token still leads on.
        Ok(Response::new(pb::ListProjectsResponse {
            projects: page
                .items
                .into_iter()
                .filter(|p| who.sees(&p.project.team_members))
                .map(|p| p.project.into())
                .collect(),
            next_page_token: next_token(page.next),
        }))
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> std::result::Result<Response<pb::ProjectMetadata>, Status> {
        let who = Who::of(&request);
        let r = request.into_inner();
        let (target, paths) = (r.project_id.clone(), r.update_mask.as_ref().map(|m| m.paths.clone()));
        let updated = async {
            who.needs(Level::Write)?;
            let project = self.visible_project(&who, project_id(&r.project_id)?).await?;
            let members = paths.as_ref().is_some_and(|p| p.iter().any(|f| f == "team_members"));
            if members && !who.owns(&project.team_members) {
                return Err(Error::Forbidden(
                    "only the project's owner (its first team member) or an admin may change its team".into(),
                ));
            }
            self.update_project(r).await
        }
        .await
        .map_err(Status::from);
        let detail = paths.map(|fields| serde_json::json!({ "fields": fields }));
        self.audit(who.actor(), "project.update", target, detail, &updated).await;
        Ok(Response::new(updated?))
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> std::result::Result<Response<pb::DeleteProjectResponse>, Status> {
        let who = Who::of(&request);
        let target = request.into_inner().project_id;
        let deleted = async {
            who.needs(Level::Write)?;
            let id = project_id(&target)?;
            let project = self.visible_project(&who, id).await?;
            if !who.owns(&project.team_members) {
                return Err(Error::Forbidden(
                    "only the project's owner (its first team member) or an admin may delete it".into(),
                ));
            }
            self.delete_project(id).await
        }
        .await
        .map_err(Status::from);
        self.audit(who.actor(), "project.delete", target, None, &deleted).await;
        Ok(Response::new(deleted?))
    }

    async fn restore_project(
        &self,
        request: Request<pb::RestoreProjectRequest>,
    ) -> std::result::Result<Response<pb::ProjectMetadata>, Status> {
        let who = Who::of(&request);
        let target = request.into_inner().project_id;
        let restored = match who.needs(Level::Admin).and_then(|()| project_id(&target)) {
            Ok(id) => self
                .store
                .restore_project(id, Utc::now() - RESTORE_WINDOW)
                .await
                .map(Into::into)
                .map_err(|e| Status::from(unknown(id, e))),
            Err(e) => Err(Status::from(e)),
        };
        self.audit(who.actor(), "project.restore", target, None, &restored).await;
        Ok(Response::new(restored?))
    }
}

fn project_id(text: &str) -> Result<ProjectId> {
    Ok(id_from_proto("project_id", text)?)
}

/// The store's "no such project" as the API's, which says how to find or restore one.
fn unknown(id: ProjectId, e: turbo_store::Error) -> Error {
    match e {
        turbo_store::Error::NotFound { what: "project", .. } => Error::UnknownProject(id),
        other => other.into(),
    }
}

/// A repeated enum field; a bad element is named `field[i]`.
fn enums<E: ProtoEnum>(field: &str, values: &[i32]) -> Result<Vec<E>> {
    values.iter().enumerate().map(|(i, v)| E::from_proto(&format!("{field}[{i}]"), *v).map_err(Error::from)).collect()
}

fn dirs(names: &[&str]) -> String {
    names.iter().map(|d| format!("/{d}")).collect::<Vec<_>>().join(", ")
}

/// Checks that `path` names a directory a project may own on the orchestrator's host: one that
/// exists and, once `..` and symbolic links are resolved, is fit to be a root
/// ([`fit_for_root`]: not `/`, a shared top-level directory or in a system one).
fn check_root(field: &str, path: &str) -> Result<()> {
    if !Path::new(path).is_absolute() {
        return Err(Error::invalid(field, format!("'{path}' must be an absolute path")));
    }
    let Some(real) = Path::new(path).canonicalize().ok().filter(|real| real.is_dir()) else {
        return Err(Error::invalid(
            field,
            format!(
                "'{path}' is not a directory on the orchestrator's host: create it first, or leave root_path out for a fresh workspace"
            ),
        ));
    };
    if !fit_for_root(&real) {
        let shown = if real.as_os_str() == path { String::new() } else { format!(" (that is {})", real.display()) };
        return Err(Error::invalid(
            field,
            format!(
                "'{path}'{shown} cannot be a project's root: name a directory of the project's own, such as /srv/app or /home/ana/app, not /, a shared directory ({}) or a system one ({})",
                dirs(SHARED_DIRS),
                dirs(SYSTEM_DIRS)
            ),
        ));
    }
    Ok(())
}

impl Api {
    async fn create_project(&self, r: pb::CreateProjectRequest) -> Result<pb::CreateProjectResponse> {
        let project_type = ProjectType::from_proto("project_type", r.project_type)?;
        let languages = enums("languages", &r.languages)?;
        let frameworks = enums("frameworks", &r.frameworks)?;
        let configuration = json_map_from_proto("configuration_json", &r.configuration_json)?;
        let id = ProjectId::new();
        let slug = r.slug.unwrap_or_else(|| slugify(&r.name));
        let (root, fresh) = match r.root_path {
            Some(root) => (root, false),
            None => (self.workspaces.join(id.to_string()).display().to_string(), true),
        };
        let mut p = ProjectMetadata::new(r.name, slug, project_type, languages, root);
        p.id = id;
        p.description = r.description;
        p.frameworks = frameworks;
        p.repository_url = r.repository_url;
        p.team_members = r.team_members;
        if let Some(branch) = r.main_branch {
            p.main_branch = branch;
        }
        p.ai_context.extend(configuration);

        if !fresh {
            check_root("root_path", &p.root_path)?;
        }
        let root = Path::new(&p.root_path);
        let analysis = if fresh { Analysis { empty: true, ..Analysis::default() } } else { analyze(root) };
        if p.languages.is_empty() {
            p.languages = analysis.languages.clone();
        }
        p.validate().map_err(|e| Error::Request(e.into()))?;
        p.dependency_files = analysis.dependency_files.clone();
        p.build_system = analysis.build_system.clone();
        p.test_directories = analysis.test_directories.clone();
        p.last_analyzed = Some(Utc::now());

        if fresh {
            std::fs::create_dir_all(&p.root_path).map_err(|e| Error::Workspace {
                path: p.root_path.clone(),
                reason: format!("cannot be created: {e}; make the data directory (store.data_dir) writable"),
            })?;
        }
        if let Err(e) = self.store.create_project(&p).await {
            if fresh {
                // Only the empty directory made above; never anything with content.
                let _ = std::fs::remove_dir(&p.root_path);
            }
            return Err(e.into());
        }
        tracing::info!(project_id = %p.id, name = %p.name, root = %p.root_path, "project created");
        Ok(pb::CreateProjectResponse {
            analysis: Some(pb::ProjectAnalysis {
                detected_languages: analysis.languages.iter().map(|l| l.to_proto()).collect(),
                recommended_tools: analysis.recommended_tools(&p.languages),
                estimated_complexity: analysis.complexity().to_proto(),
                setup_time_estimate: Some(duration_to_proto(analysis.setup_time())),
            }),
            next_steps: analysis.next_steps(),
            project: Some(p.into()),
        })
    }

    async fn update_project(&self, r: pb::UpdateProjectRequest) -> Result<pb::ProjectMetadata> {
        let id = project_id(&r.project_id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut p = self.live_project(id).await?;
        if paths.is_empty() {
            return Ok(p.into());
        }
        let src = r.project.ok_or_else(|| turbo_proto::Error::Missing { field: "project".into() })?;
        let old_root = p.root_path.clone();
        apply_mask(&mut p, &src, &paths)?;
        p.updated_at = Utc::now();
        if let Err(errs) = p.validate() {
            let mut nested = ValidationErrors::default();
            nested.nest("project", errs);
            return Err(Error::Request(nested.into()));
        }
        if p.root_path != old_root {
            check_root("project.root_path", &p.root_path)?;
        }
        self.store.update_project(&p).await.map_err(|e| unknown(id, e))?;
        Ok(p.into())
    }

    async fn delete_project(&self, id: ProjectId) -> Result<pb::DeleteProjectResponse> {
        self.live_project(id).await?;
        let mut busy = Vec::new();
        for task_id in self.orchestrator()?.running().await? {
            if let Some(stored) = self.store.get_task(task_id).await?
                && stored.task.project_id == id
            {
                busy.push(task_id);
            }
        }
        if !busy.is_empty() {
            return Err(Error::ProjectBusy { project_id: id, tasks: busy });
        }
        let deleted_at = self.store.delete_project(id, Utc::now()).await.map_err(|e| unknown(id, e))?;
        tracing::info!(project_id = %id, "project deleted");
        Ok(pb::DeleteProjectResponse {
            project_id: id.to_string(),
            deleted_at: Some(timestamp_to_proto(deleted_at)),
            purge_after: Some(timestamp_to_proto(deleted_at + RESTORE_WINDOW)),
        })
    }
}

/// Copies the fields `paths` names from `src` into `p`; conversion errors name
/// `project.<field>`, bad paths `update_mask.paths[i]`.
fn apply_mask(p: &mut ProjectMetadata, src: &pb::ProjectMetadata, paths: &[String]) -> Result<()> {
    for (i, path) in paths.iter().enumerate() {
        let field = format!("project.{path}");
        match path.as_str() {
            "name" => p.name = src.name.clone(),
            "slug" => p.slug = src.slug.clone(),
            "description" => p.description = src.description.clone(),
            "project_type" => p.project_type = ProjectType::from_proto(&field, src.project_type)?,
            "languages" => p.languages = enums(&field, &src.languages)?,
            "frameworks" => p.frameworks = enums(&field, &src.frameworks)?,
            "repository_url" => p.repository_url = src.repository_url.clone(),
            "main_branch" => p.main_branch = src.main_branch.clone(),
            "root_path" => p.root_path = src.root_path.clone(),
            "source_directories" => p.source_directories = src.source_directories.clone(),
            "test_directories" => p.test_directories = src.test_directories.clone(),
            "config_files" => p.config_files = src.config_files.clone(),
            "dependency_files" => p.dependency_files = src.dependency_files.clone(),
            "build_system" => p.build_system = src.build_system.clone(),
            "build_commands" => p.build_commands = src.build_commands.clone(),
            "test_commands" => p.test_commands = src.test_commands.clone(),
            "architecture_pattern" => p.architecture_pattern = src.architecture_pattern.clone(),
            "design_patterns" => p.design_patterns = src.design_patterns.clone(),
            "total_lines" => p.total_lines = src.total_lines,
            "test_coverage" => p.test_coverage = src.test_coverage,
            "complexity_score" => p.complexity_score = src.complexity_score,
            "technical_debt_hours" => p.technical_debt_hours = src.technical_debt_hours,
            "team_members" => p.team_members = src.team_members.clone(),
            "coding_standards" => p.coding_standards = src.coding_standards.clone(),
            "ai_context_json" => p.ai_context = json_map_from_proto(&field, &src.ai_context_json)?,
            "last_analyzed" => {
                p.last_analyzed = src.last_analyzed.map(|t| timestamp_from_proto(&field, t)).transpose()?;
            }
            "id" | "created_at" | "updated_at" => {
                return Err(Error::invalid(
                    format!("update_mask.paths[{i}]"),
                    format!("'{path}' cannot be changed; leave it out of the mask"),
                ));
            }
            _ => {
                return Err(Error::invalid(
                    format!("update_mask.paths[{i}]"),
                    format!("'{path}' is not a field of ProjectMetadata: use one of {}", UPDATABLE.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use turbo_core::project::Language;

    use super::*;

    fn project() -> ProjectMetadata {
        ProjectMetadata::new("App", "app", ProjectType::ApiService, vec![Language::Python], "/srv/app")
    }

    #[test]
    fn masks_copy_only_the_named_fields() {
        let mut p = project();
        let src = pb::ProjectMetadata {
            name: "Renamed".into(),
            description: Some("new".into()),
            languages: vec![turbo_proto::common::v1::Language::Rust as i32],
            ..Default::default()
        };
        apply_mask(&mut p, &src, &["description".into(), "languages".into()]).unwrap();
        assert_eq!(p.name, "App", "not in the mask");
        assert_eq!(p.description.as_deref(), Some("new"));
        assert_eq!(p.languages, [Language::Rust]);
    }

    #[test]
    fn bad_masks_name_the_path() {
        for (path, says) in
            [("id", "cannot be changed"), ("colour", "not a field"), ("project_type", "project.project_type")]
        {
            let e =
                apply_mask(&mut project(), &pb::ProjectMetadata::default(), &["name".into(), path.into()]).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(says), "{path}: {text}");
            if says != "project.project_type" {
                assert!(text.contains("update_mask.paths[1]"), "{text}");
            }
        }
    }
}
