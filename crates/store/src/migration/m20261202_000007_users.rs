//! The gateway's users and their API keys (stored as SHA-256 hashes, never in the clear).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("users")
                .col(text("name").primary_key())
                .col(text("roles"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("disabled_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("api_keys")
                .col(uuid("id").primary_key())
                .col(text("user_name"))
                .col(text("label"))
                .col(text("prefix"))
                .col(text("hash").unique_key())
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("last_used_at"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_api_keys_user")
                        .from("api_keys", "user_name")
                        .to("users", "name")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("api_keys").if_exists().to_owned()).await?;
        m.drop_table(Table::drop().table("users").if_exists().to_owned()).await
    }
}
