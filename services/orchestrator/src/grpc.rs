//! The public gRPC API of the orchestrator: `turbo.tasks.v1.TaskService` (`grpc/tasks.rs`),
//! `turbo.projects.v1.ProjectService` (`grpc/projects.rs`) and
//! `turbo.sessions.v1.SessionService` (`grpc/sessions.rs`), all implemented by [`Api`] over
//! the orchestrator's handle, the recorder's broadcast, the tool-runner and the store.
//!
//! Handlers do their work in functions returning [`crate::Result`]; the one conversion
//! `impl From<Error> for tonic::Status` (in `error.rs`) turns errors into statuses. Every call
//! that changes something (create, execute, cancel a task; create, update, delete, restore a
//! project; start, end a session) is recorded in the store's audit log with its caller and outcome.

mod projects;
mod sessions;
mod tasks;

pub(crate) use sessions::{Sessions, sweep_idle_sessions};

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;
use turbo_core::ids::ProjectId;
use turbo_core::project::ProjectMetadata;
use turbo_proto::projects::v1::project_service_server::ProjectServiceServer;
use turbo_proto::server::Routes;
use turbo_proto::sessions::v1::session_service_server::SessionServiceServer;
use turbo_proto::tasks::v1::task_service_server::TaskServiceServer;
use turbo_store::{Cursor, NewAuditEntry, Store, StoredProject};
use turbo_tool_runner::ToolRunnerClient;

use crate::error::{Error, Result};
use crate::local::Models;
use crate::{OrchestratorHandle, Recorder};

/// Page size when a list request gives 0.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger page sizes are cut to this.
const MAX_PAGE_SIZE: u32 = 500;

/// The running stack's handles, set once this orchestrator holds the store's lease; until
/// then (a standby) the calls that need them fail with [`Error::Standby`].
#[derive(Clone, Default)]
pub(crate) struct Active(Arc<OnceLock<Stack>>);

/// What the API serves through: the orchestrator, its recorder, and the tool-runner that
/// runs the calls of interactive sessions.
pub(crate) struct Stack {
    pub orchestrator: OrchestratorHandle,
    pub recorder: Recorder,
    pub tools: ToolRunnerClient,
}

impl Active {
    /// Makes the API serve through `stack` from now on (once).
    pub fn set(&self, stack: Stack) {
        let _ = self.0.set(stack);
    }
}

/// What the API works with; cheap to clone (one per service).
#[derive(Clone)]
pub(crate) struct Api {
    pub active: Active,
    pub store: Store,
    pub models: Models,
    /// Where projects created without a root path get a fresh workspace (`<dir>/<project id>`).
    pub workspaces: PathBuf,
    /// Cancelled when the server shuts down, after running tasks have drained: ends watches.
    pub closing: CancellationToken,
    /// The streams attached to open sessions.
    pub sessions: Sessions,
}

impl Api {
    fn orchestrator(&self) -> Result<&OrchestratorHandle> {
        self.active.0.get().map(|s| &s.orchestrator).ok_or(Error::Standby)
    }

    fn recorder(&self) -> Result<&Recorder> {
        self.active.0.get().map(|s| &s.recorder).ok_or(Error::Standby)
    }

    fn tools(&self) -> Result<&ToolRunnerClient> {
        self.active.0.get().map(|s| &s.tools).ok_or(Error::Standby)
    }

    /// The three services, ready for [`turbo_proto::server::serve`].
    pub fn routes(self) -> Routes {
        Routes::new(TaskServiceServer::new(self.clone()))
            .add_service(ProjectServiceServer::new(self.clone()))
            .add_service(SessionServiceServer::new(self))
    }

    /// Records in the audit log that `actor` asked for `action` on `target` and how it went.
    /// A failed write is logged, never the call's failure: the call has already happened.
    async fn audit<T>(
        &self,
        actor: String,
        action: &str,
        target: String,
        detail: Option<serde_json::Value>,
        result: &std::result::Result<T, tonic::Status>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(status) => format!("error: {:?}: {}", status.code(), status.message()),
        };
        self.audit_outcome(actor, action, target, detail, outcome).await;
    }

    /// [`Api::audit`] with the outcome already said: `ok` or `error: <what went wrong>`.
    async fn audit_outcome(
        &self,
        actor: String,
        action: &str,
        target: String,
        detail: Option<serde_json::Value>,
        outcome: String,
    ) {
        let entry = NewAuditEntry { at: chrono::Utc::now(), actor, action: action.into(), target, outcome, detail };
        if let Err(error) = self.store.record_audit(entry).await {
            tracing::warn!(%error, action, "cannot record the audit entry");
        }
    }

    /// A project that exists and is not deleted, else [`Error::UnknownProject`].
    async fn live_project(&self, id: ProjectId) -> Result<ProjectMetadata> {
        match self.store.get_project(id).await? {
            Some(StoredProject { project, deleted_at: None }) => Ok(project),
            _ => Err(Error::UnknownProject(id)),
        }
    }

    /// [`Api::live_project`], if `who` may see it ([`Error::UnknownProject`] otherwise, as for
    /// none).
    async fn visible_project(&self, who: &Who, id: ProjectId) -> Result<ProjectMetadata> {
        let project = self.live_project(id).await?;
        if who.sees(&project.team_members) { Ok(project) } else { Err(Error::UnknownProject(id)) }
    }

    /// Whether `who` may see the project `id`: a user while it is live (the tasks of a deleted
    /// project are hidden with it until it is restored, as the project is), a call from inside
    /// the cluster whether deleted or not; false when it is not stored.
    async fn sees_project(&self, who: &Who, id: ProjectId) -> Result<bool> {
        if let Who::Internal { .. } = who {
            return Ok(true);
        }
        Ok(self
            .store
            .get_project(id)
            .await?
            .is_some_and(|p| p.deleted_at.is_none() && who.sees(&p.project.team_members)))
    }
}

/// What a caller may do, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Read,
    Write,
    Admin,
}

/// Whom a call is for. A call through the gateway's gRPC edge names its user
/// ([`turbo_proto::identity`]) and is held to that user's roles and projects: a project is visible to its team members and
/// admins (others get NOT_FOUND, as for nothing), changes need the developer role, restoring
/// needs admin. A call without it comes from inside the cluster (the gateway's REST routes,
/// which check the caller themselves; the CLI; operators) and may do anything: the orchestrator
/// is not exposed outside the cluster, the gateway is.
#[derive(Clone, Debug)]
pub(crate) enum Who {
    Internal { peer: String },
    User { name: String, level: Option<Level> },
}

impl Who {
    pub fn of<T>(request: &tonic::Request<T>) -> Who {
        match turbo_proto::identity::user_of(request) {
            None => Who::Internal {
                peer: request.remote_addr().map_or_else(|| "grpc".to_string(), |peer| format!("grpc:{peer}")),
            },
            Some((name, roles)) => {
                let level = roles
                    .iter()
                    .filter_map(|r| match r.as_str() {
                        "viewer" => Some(Level::Read),
                        "developer" => Some(Level::Write),
                        "admin" => Some(Level::Admin),
                        _ => None,
                    })
                    .max();
                Who::User { name, level }
            }
        }
    }

    /// Who acted, for the audit log: `user:<name>`, or `grpc:<peer address>`.
    pub fn actor(&self) -> String {
        match self {
            Who::Internal { peer } => peer.clone(),
            Who::User { name, .. } => format!("user:{name}"),
        }
    }

    /// The user's name, for a call through the gateway.
    pub fn user(&self) -> Option<&str> {
        match self {
            Who::Internal { .. } => None,
            Who::User { name, .. } => Some(name),
        }
    }

    /// Whom a request acts for: the gateway's user, whatever the request says; else the user
    /// the request names; else the caller itself.
    pub fn on_behalf_of(&self, requested: &str) -> String {
        match self.user() {
            Some(name) => name.to_string(),
            None if requested.trim().is_empty() => self.actor(),
            None => requested.trim().to_string(),
        }
    }

    fn level(&self) -> Option<Level> {
        match self {
            Who::Internal { .. } => Some(Level::Admin),
            Who::User { level, .. } => *level,
        }
    }

    /// PERMISSION_DENIED unless the caller's roles reach `level`.
    pub fn needs(&self, level: Level) -> Result<()> {
        if self.level() >= Some(level) {
            return Ok(());
        }
        let role = match level {
            Level::Read => "viewer",
            Level::Write => "developer",
            Level::Admin => "admin",
        };
        Err(Error::Forbidden(format!("this needs the {role} role")))
    }

    /// Whether the caller may see a project with these members.
    pub fn sees(&self, team_members: &[String]) -> bool {
        match self {
            Who::Internal { .. } => true,
            Who::User { name, level } => *level == Some(Level::Admin) || team_members.contains(name),
        }
    }

    /// Whether the caller owns a project with these members (its first) or is an admin.
    pub fn owns(&self, team_members: &[String]) -> bool {
        match self {
            Who::Internal { .. } => true,
            Who::User { name, level } => *level == Some(Level::Admin) || team_members.first() == Some(name),
        }
    }
}

/// A request's page size: the default for 0, capped at the maximum.
fn page_size(requested: u32) -> u64 {
    u64::from(if requested == 0 { DEFAULT_PAGE_SIZE } else { requested.min(MAX_PAGE_SIZE) })
}

/// A request's page token: None for the first page; a token this server did not issue is
/// INVALID_ARGUMENT naming `page_token`.
fn page_cursor(token: &str) -> Result<Option<Cursor>> {
    if token.is_empty() {
        return Ok(None);
    }
    Cursor::from_token(token).map(Some).ok_or_else(|| {
        Error::invalid(
            "page_token",
            "is not a token this server issued: pass next_page_token of the previous page, or nothing for the first page",
        )
    })
}

fn next_token(next: Option<Cursor>) -> String {
    next.map(|c| c.to_token()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(100_000), 500);
    }

    #[test]
    fn page_tokens_round_trip_and_bad_ones_name_the_field() {
        assert_eq!(page_cursor("").unwrap(), None);
        let c = Cursor { created_at: chrono::Utc::now(), id: uuid::Uuid::new_v4() };
        assert_eq!(page_cursor(&next_token(Some(c))).unwrap(), Some(c));
        let e = page_cursor("abc").unwrap_err();
        assert!(e.to_string().contains("page_token"), "{e}");
    }
}
