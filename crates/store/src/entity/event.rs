use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub at: DateTimeUtc,
    /// `EventKind::name`, so events can be filtered without decoding bodies.
    pub kind: String,
    /// The whole `TaskEvent`.
    #[sea_orm(column_type = "JsonBinary")]
    pub body: Json,
}

impl ActiveModelBehavior for ActiveModel {}
