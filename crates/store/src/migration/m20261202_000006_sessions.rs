//! Interactive sessions: who opened one on which project (and task), and until when it lives.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("sessions")
                .col(uuid("id").primary_key())
                .col(uuid("project_id"))
                .col(uuid_null("task_id"))
                .col(text("user_name"))
                .col(timestamp_with_time_zone("started_at"))
                .col(timestamp_with_time_zone("last_active_at"))
                .col(timestamp_with_time_zone_null("ended_at"))
                .col(text_null("end_reason"))
                .col(big_integer("idle_timeout_s"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_sessions_project")
                        .from("sessions", "project_id")
                        .to("projects", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_sessions_project").table("sessions").col("project_id").to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("sessions").if_exists().to_owned()).await
    }
}
