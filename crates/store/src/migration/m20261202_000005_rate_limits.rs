//! Request counts per caller and time window, shared by every gateway replica: the rate limit
//! holds across replicas because they count in the same table.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("rate_limits")
                .col(text("subject"))
                .col(big_integer("window_start"))
                .col(big_integer("count"))
                .primary_key(Index::create().col("subject").col("window_start"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("rate_limits").if_exists().to_owned()).await
    }
}
