//! The gRPC API of turbo-coder: Rust code generated from the `.proto` files in the
//! workspace's `proto/` directory, and the lossless conversions between those messages and
//! the domain types of [`turbo_core`].
//!
//! # Layout
//! - [`turbo`]: one module per versioned proto package, mirroring the package names
//!   (`turbo.tasks.v1` is [`turbo::tasks::v1`]). Each also sits at the crate root, so
//!   [`tasks::v1::DevelopmentTask`] is the message and, with the `server` feature,
//!   `tasks::v1::task_service_server::TaskServiceServer` the tonic server
//!   (`task_service_client::TaskServiceClient` with the `client` feature).
//!   - `common::v1`: shared enums, `TokenUsage`, `FieldError`/`ValidationErrors`.
//!   - `projects::v1`: `ProjectMetadata`, `ProjectService`.
//!   - `tasks::v1`: `DevelopmentTask`, `ExecutionPlan`, `TaskEvent`, `TaskService`.
//!   - `sessions::v1`: interactive session messages, `SessionService`.
//!   - `knowledge::v1`: `KnowledgeChunk`, search hits, index reports, context, `KnowledgeService`.
//!   - `tools::v1`: `ToolSpec`, tool call streaming and approvals, `ToolService`.
//!   - `agents::v1`: orchestrator <-> agent messages, `AgentService`.
//!   - `config::v1`: `SystemConfiguration`.
//! - [`convert`]: `From<domain> for proto` and `TryFrom<proto> for domain` for every model,
//!   plus [`convert::ProtoEnum`] for enum fields (which prost stores as `i32`) and the
//!   timestamp, duration, id and JSON helpers. `TryFrom` finishes with the domain's
//!   `validate()`, so a converted value always satisfies the domain's constraints.
//! - [`Error`]: why a message could not become a domain value, naming the field (dotted
//!   path); it converts into an `INVALID_ARGUMENT` [`tonic::Status`].
//!   [`error::status_with_reason`] and [`error::reason_of`] carry a machine-readable reason
//!   (`google.rpc.ErrorInfo`) beside a status, for clients that act on the kind of failure.
//! - `knowledge_client` (feature `client`): `RemoteKnowledge`, the
//!   `turbo_core::knowledge::Knowledge` of a knowledge service over gRPC. It lives here rather
//!   than in the service's crate so that agents reach the service without building its
//!   dataset and model dependencies.
//! - [`identity`]: the user a call through the gateway is made for, in metadata.
//! - [`trace`]: W3C trace context in gRPC metadata: the client interceptor and the server span
//!   that continues the caller's trace.
//! - `server` (feature `server`): health, reflection and per-request trace spans around a
//!   service's routes; binding and the shutdown signal.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of every package, for tonic-reflection.

pub mod convert;
pub mod error;
pub mod identity;
#[cfg(feature = "client")]
pub mod knowledge_client;
#[cfg(feature = "server")]
pub mod server;
pub mod trace;

pub use error::Error;
#[cfg(feature = "client")]
pub use knowledge_client::RemoteKnowledge;

/// Generated code, one module per proto package.
#[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
pub mod turbo {
    /// `turbo.common.v1`: shared enums and messages.
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("turbo.common.v1");
        }
    }
    /// `turbo.projects.v1`: projects and `ProjectService`.
    pub mod projects {
        pub mod v1 {
            tonic::include_proto!("turbo.projects.v1");
        }
    }
    /// `turbo.tasks.v1`: tasks, plans, events and `TaskService`.
    pub mod tasks {
        pub mod v1 {
            tonic::include_proto!("turbo.tasks.v1");
        }
    }
    /// `turbo.sessions.v1`: interactive sessions and `SessionService`.
    pub mod sessions {
        pub mod v1 {
            tonic::include_proto!("turbo.sessions.v1");
        }
    }
    /// `turbo.knowledge.v1`: knowledge chunks and `KnowledgeService`.
    pub mod knowledge {
        pub mod v1 {
            tonic::include_proto!("turbo.knowledge.v1");
        }
    }
    /// `turbo.tools.v1`: tools, tool calls, approvals and `ToolService`.
    pub mod tools {
        pub mod v1 {
            tonic::include_proto!("turbo.tools.v1");
        }
    }
    /// `turbo.agents.v1`: orchestrator <-> agent messages and `AgentService`.
    pub mod agents {
        pub mod v1 {
            tonic::include_proto!("turbo.agents.v1");
        }
    }
    /// `turbo.config.v1`: `SystemConfiguration`.
    pub mod config {
        pub mod v1 {
            tonic::include_proto!("turbo.config.v1");
        }
    }
}

pub use turbo::{agents, common, config, knowledge, projects, sessions, tasks, tools};

/// Encoded `google.protobuf.FileDescriptorSet` of every turbo package (and the well-known
/// types they import), for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("turbo_descriptor");

/// Fully qualified names of every gRPC service, e.g. `turbo.tasks.v1.TaskService`.
pub const SERVICE_NAMES: &[&str] = &[
    "turbo.projects.v1.ProjectService",
    "turbo.tasks.v1.TaskService",
    "turbo.sessions.v1.SessionService",
    "turbo.knowledge.v1.KnowledgeService",
    "turbo.tools.v1.ToolService",
    "turbo.agents.v1.AgentService",
];

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_decodes_and_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let mut services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        services.sort();
        let mut expected: Vec<String> = SERVICE_NAMES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(services, expected);
        assert!(services.contains(&"turbo.tasks.v1.TaskService".to_string()));

        let packages: Vec<&str> = set.file.iter().map(|f| f.package()).collect();
        for p in ["turbo.common.v1", "turbo.config.v1", "turbo.tasks.v1"] {
            assert!(packages.contains(&p), "{p} missing from {packages:?}");
        }
        // The generated service names agree with the descriptors.
        #[cfg(feature = "server")]
        {
            use tonic::server::NamedService;
            assert_eq!(
                <tasks::v1::task_service_server::TaskServiceServer<NoTasks> as NamedService>::NAME,
                "turbo.tasks.v1.TaskService"
            );
        }
    }

    #[cfg(feature = "server")]
    struct NoTasks;
}
