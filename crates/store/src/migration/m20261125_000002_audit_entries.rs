//! The audit log: who did what to which task or project, and how it went.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn index(name: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut ix = Index::create();
    ix.name(name).table("audit_entries").if_not_exists();
    for c in cols {
        ix.col(*c);
    }
    ix.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // No foreign keys: the log outlives what it names (a purged project, a deleted task)
        // and also names what never existed (a failed create, an unknown id).
        m.create_table(
            Table::create()
                .table("audit_entries")
                .col(big_pk_auto("id"))
                .col(timestamp_with_time_zone("at"))
                .col(text("actor"))
                .col(text("action"))
                .col(text("target"))
                .col(text("outcome"))
                .col(json_binary_null("detail"))
                .to_owned(),
        )
        .await?;
        // Listings are newest first, optionally narrowed to one actor, action or target.
        m.create_index(index("ix_audit_entries_at", &["at", "id"])).await?;
        m.create_index(index("ix_audit_entries_actor", &["actor", "at"])).await?;
        m.create_index(index("ix_audit_entries_action", &["action", "at"])).await?;
        m.create_index(index("ix_audit_entries_target", &["target", "at"])).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("audit_entries").if_exists().to_owned()).await
    }

    /// As for the initial schema: the table and its indexes appear together or not at all.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
