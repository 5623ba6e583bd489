use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub phase: String,
    /// The attempt of the phase the step ran in; a redelivered run of the attempt repeats it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub attempt: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub step: i64,
    pub role: Option<String>,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
