//! A session remembers the request it still owes an answer to (the `message_id` of an
//! `ai_request` whose task runs), so that a stream attached later, to this orchestrator or to
//! one that took over, delivers it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("sessions").add_column(text_null("pending_reply")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("sessions").drop_column("pending_reply").to_owned()).await
    }
}
