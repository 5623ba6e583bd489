//! `ProjectMetadata`.

use turbo_core::project::ProjectMetadata;

use super::enums::{enums_from_proto, enums_to_proto};
use super::{
    ProtoEnum, id_from_proto, json_map_from_proto, json_map_to_proto, opt_timestamp, req_timestamp, timestamp_to_proto,
    validated,
};
use crate::Error;
use crate::projects::v1 as pb;

impl From<ProjectMetadata> for pb::ProjectMetadata {
    fn from(p: ProjectMetadata) -> Self {
        pb::ProjectMetadata {
            id: p.id.to_string(),
            name: p.name,
            slug: p.slug,
            description: p.description,
            project_type: p.project_type.to_proto(),
            languages: enums_to_proto(&p.languages),
            frameworks: enums_to_proto(&p.frameworks),
            repository_url: p.repository_url,
            main_branch: p.main_branch,
            root_path: p.root_path,
            source_directories: p.source_directories,
            test_directories: p.test_directories,
            config_files: p.config_files,
            dependency_files: p.dependency_files,
            build_system: p.build_system,
            build_commands: p.build_commands,
            test_commands: p.test_commands,
            architecture_pattern: p.architecture_pattern,
            design_patterns: p.design_patterns,
            total_lines: p.total_lines,
            test_coverage: p.test_coverage,
            complexity_score: p.complexity_score,
            technical_debt_hours: p.technical_debt_hours,
            team_members: p.team_members,
            coding_standards: p.coding_standards,
            ai_context_json: json_map_to_proto(&p.ai_context),
            last_analyzed: p.last_analyzed.map(timestamp_to_proto),
            created_at: Some(timestamp_to_proto(p.created_at)),
            updated_at: Some(timestamp_to_proto(p.updated_at)),
        }
    }
}

impl TryFrom<pb::ProjectMetadata> for ProjectMetadata {
    type Error = Error;

    fn try_from(p: pb::ProjectMetadata) -> Result<Self, Error> {
        validated(ProjectMetadata {
            id: id_from_proto("id", &p.id)?,
            name: p.name,
            slug: p.slug,
            description: p.description,
            project_type: ProtoEnum::from_proto("project_type", p.project_type)?,
            languages: enums_from_proto("languages", &p.languages)?,
            frameworks: enums_from_proto("frameworks", &p.frameworks)?,
            repository_url: p.repository_url,
            main_branch: p.main_branch,
            root_path: p.root_path,
            source_directories: p.source_directories,
            test_directories: p.test_directories,
            config_files: p.config_files,
            dependency_files: p.dependency_files,
            build_system: p.build_system,
            build_commands: p.build_commands,
            test_commands: p.test_commands,
            architecture_pattern: p.architecture_pattern,
            design_patterns: p.design_patterns,
            total_lines: p.total_lines,
            test_coverage: p.test_coverage,
            complexity_score: p.complexity_score,
            technical_debt_hours: p.technical_debt_hours,
            team_members: p.team_members,
            coding_standards: p.coding_standards,
            ai_context: json_map_from_proto("ai_context_json", &p.ai_context_json)?,
            last_analyzed: opt_timestamp("last_analyzed", p.last_analyzed)?,
            created_at: req_timestamp("created_at", p.created_at)?,
            updated_at: req_timestamp("updated_at", p.updated_at)?,
        })
    }
}
