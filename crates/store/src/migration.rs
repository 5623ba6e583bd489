//! Schema migrations, run by [`crate::Store::connect`]. The same migrations run on SQLite and
//! Postgres, so they use only what sea-query renders portably.

use sea_orm_migration::{MigrationTrait, MigratorTrait};

mod m20261125_000001_init;
mod m20261125_000002_audit_entries;
mod m20261125_000003_open_tool_calls;
mod m20261125_000004_step_attempts;
mod m20261202_000005_rate_limits;
mod m20261202_000006_sessions;
mod m20261202_000007_users;
mod m20261203_000008_session_answers;

pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_init::Migration),
            Box::new(m20261125_000002_audit_entries::Migration),
            Box::new(m20261125_000003_open_tool_calls::Migration),
            Box::new(m20261125_000004_step_attempts::Migration),
            Box::new(m20261202_000005_rate_limits::Migration),
            Box::new(m20261202_000006_sessions::Migration),
            Box::new(m20261202_000007_users::Migration),
            Box::new(m20261203_000008_session_answers::Migration),
        ]
    }
}
