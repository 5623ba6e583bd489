use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_entries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// Who: `grpc:<peer>`, `nats-cli`, a user id.
    pub actor: String,
    /// What, e.g. `task.create`, `project.purge`.
    pub action: String,
    /// The id of the task, project or tool call acted on.
    pub target: String,
    /// `ok` or `error: <message>`.
    pub outcome: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub detail: Option<Json>,
}

impl ActiveModelBehavior for ActiveModel {}
