//! Persistence for turbo-coder: projects, tasks, execution plans and each task's event stream
//! with the tables projected from it (phases, steps, tool calls, token usage).
//!
//! One [`Store`] talks to SQLite (the embedded default: a file under the data directory, or
//! `sqlite::memory:`) or to Postgres (the cluster). Both run the same sea-orm migrations, applied
//! on [`Store::connect`]. Callers see domain types from `turbo-core` and the plain row structs of
//! this crate, never sea-orm models.
//!
//! Every domain value is stored whole as a JSON `body`, so it reads back exactly as written
//! (timestamps included, at nanosecond precision); the other columns are copies kept for
//! filtering, ordering and listing. The event log is the record of what happened: appending is
//! idempotent per `(task_id, seq)`, and phases, steps, tool calls and token usage are updated
//! from newly stored events in the same transaction, so a redelivered event never counts twice.
//! Steps and tool calls are keyed by the attempt of their phase, so a phase run again keeps each
//! attempt's rows and a redelivered run of an attempt adds none (see [`Store::append_events`]).
//! The audit log (`audit_entries`) records who did what, for the services' edges.
//!
//! # Layout
//! - `connect`: opening SQLite or Postgres, driver settings, running migrations; creating and
//!   dropping a Postgres database (tests, a cluster's first setup).
//! - `projects`: projects: create and update with unique names and slugs, soft delete,
//!   restore, purge, listing.
//! - `tasks`: tasks (lookup by id prefix, listing) and plans.
//! - `events`: appending events with their projections (a batch at a time, in a few multi-row
//!   statements), and reading the projected tables.
//! - `audit`: the audit log of who did what to which task or project; callers pass no secrets.
//! - `sessions`: interactive sessions: opened, touched, ended (by hand or when idle).
//! - `users`: the gateway's users (name, roles, disabled) and their API keys, kept as hashes.
//! - `lease`: named leases (a Postgres advisory lock; always granted on SQLite), so one
//!   orchestrator runs a store's tasks at a time.
//! - `rows`: the plain structs returned to callers.
//! - `entity/*`: sea-orm entities, one per table (crate-private).
//! - `migration/*`: the schema, one file per migration.
//! - `codec`: column <-> domain conversions that report bad rows as [`Error::Corrupt`].
//! - `error`: [`Error`] and [`Result`].

mod audit;
mod codec;
mod connect;
mod entity;
pub mod error;
mod events;
mod lease;
mod migration;
mod projects;
mod rate;
mod rows;
mod sessions;
mod tasks;
mod users;

use sea_orm::{DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions, TransactionTrait};

pub use audit::MAX_AUDIT_LIMIT;
pub use connect::{create_postgres_database, drop_postgres_database, terminate_postgres_connections};
pub use error::{Error, Result};
pub use lease::Lease;
pub use rate::WindowCounts;
pub use rows::{
    AuditEntry, AuditFilter, Cursor, NewAuditEntry, Page, PhaseRow, PhaseStatus, ProjectQuery, StepRow, StoredProject,
    StoredTask, TaskFilter, TaskQuery, TaskSummary, ToolCallRow, UsageRow,
};
pub use sessions::StoredSession;
pub use users::{StoredApiKey, StoredUser};

/// A handle on the database; cheap to clone (clones share one connection pool).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish()
    }
}

impl Store {
    /// Begins a transaction that will write. On SQLite it takes the write lock at BEGIN: a
    /// deferred transaction that reads first and then writes fails at once with "database is
    /// locked" when another connection wrote in between, whereas BEGIN IMMEDIATE waits out the
    /// busy timeout. Postgres ignores the mode.
    async fn begin_write(&self, action: &str) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        self.db.begin_with_options(options).await.map_err(error::db(format!("begin to {action}")))
    }
}
