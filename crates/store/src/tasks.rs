//! Tasks and plans.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Select,
};
use uuid::Uuid;

use turbo_core::ids::{PlanId, TaskId};
use turbo_core::plan::ExecutionPlan;
use turbo_core::task::{DevelopmentTask, TaskStatus};

use crate::Store;
use crate::codec::{body, col, finite, from_i64, to_body, to_i64};
use crate::entity::{phase, plan, project, task};
use crate::error::{Error, Result, db, is_unique_violation};
use crate::projects::{before_cursor, page};
use crate::rows::{Cursor, Page, PhaseStatus, StoredTask, TaskFilter, TaskQuery, TaskSummary};

/// Hex digits a task id prefix needs, so a prefix rarely matches more than one task.
const MIN_PREFIX: usize = 4;
/// Reads and conditional writes [`Store::swap_task_status`] makes before it gives up.
const SWAP_ATTEMPTS: u32 = 5;
/// How many matches an ambiguous prefix lists.
const MAX_LISTED_MATCHES: u64 = 10;

impl Store {
    /// Stores a new task of a stored, live (not deleted) project.
    pub async fn insert_task(&self, t: &DevelopmentTask, workspace: &str) -> Result<()> {
        let project_live = project::Entity::find_by_id(t.project_id.0)
            .select_only()
            .column(project::Column::Id)
            .filter(project::Column::DeletedAt.is_null())
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await
            .map_err(db(format!("look up project {}", t.project_id)))?
            .is_some();
        if !project_live {
            return Err(Error::NotFound { what: "project", id: t.project_id.to_string() });
        }
        let mut am = task_columns(t, Utc::now())?;
        am.id = Set(t.id.0);
        am.project_id = Set(t.project_id.0);
        am.workspace = Set(workspace.to_string());
        am.created_at = Set(t.created_at);
        match task::Entity::insert(am).exec_without_returning(&self.db).await {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("task {}", t.id),
                reason: "a task with this id is already stored; use update_task to change it".to_string(),
            }),
            Err(e) => Err(db(format!("insert task {}", t.id))(e)),
        }
    }

    /// Writes status, progress, current phase, title, description, timestamps and the body.
    /// The project, workspace and creation time never change.
    pub async fn update_task(&self, t: &DevelopmentTask) -> Result<()> {
        let res = task::Entity::update_many()
            .set(task_columns(t, Utc::now())?)
            .filter(task::Column::Id.eq(t.id.0))
            .exec(&self.db)
            .await
            .map_err(db(format!("update task {}", t.id)))?;
        if res.rows_affected == 0 {
            return Err(Error::NotFound { what: "task", id: t.id.to_string() });
        }
        Ok(())
    }

    /// Moves a task from status `from` to `to` when it is in `from`, leaving the rest of it as
    /// stored; returns the status it was in (`from` when it moved), None when it is not stored.
    /// A write made between the read and this one is never overwritten: the update holds only
    /// while `updated_at` is unchanged, and is tried again on a fresh read otherwise.
    pub async fn swap_task_status(&self, id: TaskId, from: TaskStatus, to: TaskStatus) -> Result<Option<TaskStatus>> {
        use task::Column as C;
        for _ in 0..SWAP_ATTEMPTS {
            let q = task::Entity::find().select_only().columns([C::Body, C::UpdatedAt]).filter(C::Id.eq(id.0));
            let Some(row) = self.rows(q).await.map_err(db(format!("read task {id}")))?.into_iter().next() else {
                return Ok(None);
            };
            let what = || format!("task {id}");
            let mut t: DevelopmentTask = body(col(&row, "body", what)?, what)?;
            let read_at: DateTime<Utc> = col(&row, "updated_at", what)?;
            if t.status != from {
                return Ok(Some(t.status));
            }
            t.status = from.transition(to).map_err(|e| Error::Conflict { what: what(), reason: e.to_string() })?;
            let changed = task::Entity::update_many()
                .set(task_columns(&t, Utc::now())?)
                .filter(C::Id.eq(id.0))
                .filter(C::UpdatedAt.eq(read_at))
                .exec(&self.db)
                .await
                .map_err(db(format!("update the status of task {id}")))?;
            if changed.rows_affected == 1 {
                return Ok(Some(from));
            }
        }
        Err(Error::Conflict {
            what: format!("task {id}"),
            reason: format!("it changed {SWAP_ATTEMPTS} times while its status was being set to {}", to.as_str()),
        })
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<StoredTask>> {
        use task::Column as C;
        let q = task::Entity::find().select_only().columns([C::Id, C::Workspace, C::Body]).filter(C::Id.eq(id.0));
        let rows = self.rows(q).await.map_err(db(format!("read task {id}")))?;
        rows.first().map(stored_task).transpose()
    }

    /// A task by its full id or by a unique prefix of at least 4 hex characters, as users copy
    /// short ids from `tasks list`. [`Error::NotFound`] when nothing matches,
    /// [`Error::Ambiguous`] (listing the matches) when several do.
    pub async fn find_task(&self, id_or_prefix: &str) -> Result<StoredTask> {
        let text = id_or_prefix.trim();
        if let Ok(id) = Uuid::parse_str(text) {
            return self.get_task(TaskId(id)).await?.ok_or(Error::NotFound { what: "task", id: text.to_string() });
        }
        let (lo, hi) = prefix_range(text)?;
        use task::Column as C;
        // Uuids compare byte-wise on both backends (Postgres `uuid`, SQLite blob), which is the
        // order of their hex text; so a prefix is a range and the primary key index serves it.
        let ids: Vec<Uuid> = task::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::Id.between(lo, hi))
            .order_by_asc(C::Id)
            .limit(MAX_LISTED_MATCHES + 1)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db(format!("look up task id prefix '{text}'")))?;
        match ids.as_slice() {
            [] => Err(Error::NotFound { what: "task", id: text.to_string() }),
            [id] => self.get_task(TaskId(*id)).await?.ok_or(Error::NotFound { what: "task", id: text.to_string() }),
            many => {
                let mut matches: Vec<String> =
                    many.iter().take(MAX_LISTED_MATCHES as usize).map(Uuid::to_string).collect();
                if many.len() as u64 > MAX_LISTED_MATCHES {
                    matches.push("...".to_string());
                }
                Err(Error::Ambiguous { prefix: text.to_string(), matches })
            }
        }
    }

    /// Tasks newest first, with the tokens they used.
    pub async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<TaskSummary>> {
        use task::Column as C;
        // A correlated subquery rather than a join + GROUP BY keeps the row per task simple;
        // the CAST makes Postgres return bigint (SUM of bigint is numeric there).
        let tokens = Expr::cust(
            "CAST(COALESCE((SELECT SUM(token_usage.prompt_tokens + token_usage.completion_tokens) \
             FROM token_usage WHERE token_usage.task_id = tasks.id), 0) AS BIGINT)",
        );
        let mut q = task::Entity::find()
            .select_only()
            .columns([C::Id, C::Title, C::Status, C::Progress, C::CurrentPhase, C::CreatedAt])
            .expr_as(tokens, "total_tokens")
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id);
        if let Some(status) = filter.status {
            q = q.filter(C::Status.eq(status.as_str()));
        }
        if filter.limit > 0 {
            q = q.limit(filter.limit);
        }
        let rows = self.rows(q).await.map_err(db("list tasks"))?;
        rows.iter().map(task_summary).collect()
    }

    /// Whole tasks newest first, a page at a time, filtered by project and status.
    pub async fn page_tasks(&self, query: TaskQuery) -> Result<Page<StoredTask>> {
        use task::Column as C;
        let limit = query.limit.max(1);
        let mut q = task::Entity::find()
            .select_only()
            .columns([C::Id, C::Workspace, C::Body, C::CreatedAt])
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            .limit(limit + 1);
        if let Some(project) = query.project {
            q = q.filter(C::ProjectId.eq(project.0));
        }
        if !query.statuses.is_empty() {
            q = q.filter(C::Status.is_in(query.statuses.iter().map(|s| s.as_str())));
        }
        if let Some(after) = query.after {
            q = q.filter(before_cursor(C::CreatedAt, C::Id, after));
        }
        let rows = self.rows(q).await.map_err(db("list tasks"))?;
        let mut items = Vec::with_capacity(rows.len());
        let mut cursors = Vec::with_capacity(rows.len());
        for row in &rows {
            let t = stored_task(row)?;
            let created_at: DateTime<Utc> = col(row, "created_at", || format!("task {}", t.task.id))?;
            cursors.push(Cursor { created_at, id: t.task.id.0 });
            items.push(t);
        }
        Ok(page(items, cursors, limit))
    }

    /// Stores the plan and one `pending` phase row per phase, positioned in execution order.
    /// A plan with broken dependencies is refused; a re-plan must use a new plan id and the next
    /// version.
    pub async fn save_plan(&self, plan: &ExecutionPlan) -> Result<()> {
        let what = || format!("plan {} (version {}) of task {}", plan.plan_id, plan.version, plan.task_id);
        let order = plan.execution_order().ok_or_else(|| Error::Invalid {
            what: what(),
            reason: "its phase dependencies name unknown phases or form a cycle; validate the plan first".to_string(),
        })?;
        if !task_exists(&self.db, plan.task_id).await? {
            return Err(Error::NotFound { what: "task", id: plan.task_id.to_string() });
        }
        let now = Utc::now();
        let plan_row = plan::ActiveModel {
            id: Set(plan.plan_id.0),
            task_id: Set(plan.task_id.0),
            version: Set(i64::from(plan.version)),
            body: Set(to_body(plan, what)?),
            created_at: Set(now),
        };
        let phase_rows = order
            .iter()
            .enumerate()
            .map(|(position, p)| {
                Ok(phase::ActiveModel {
                    plan_id: Set(plan.plan_id.0),
                    name: Set(p.name.clone()),
                    task_id: Set(plan.task_id.0),
                    position: Set(to_i64(position, "phase position")?),
                    role: Set(p.role().map(|r| r.as_str().to_string())),
                    status: Set(PhaseStatus::Pending.as_str().to_string()),
                    attempt: Set(0),
                    summary: Set(None),
                    started_at: Set(None),
                    finished_at: Set(None),
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let txn = self.begin_write(&format!("store {}", what())).await?;
        match plan::Entity::insert(plan_row).exec_without_returning(&txn).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict {
                    what: what(),
                    reason: "this plan id or this version of the task's plan is already stored; a re-plan needs a new plan id and the next version".to_string(),
                });
            }
            Err(e) => return Err(db(format!("store {}", what()))(e)),
        }
        if !phase_rows.is_empty() {
            phase::Entity::insert_many(phase_rows)
                .exec_without_returning(&txn)
                .await
                .map_err(db(format!("store the phases of {}", what())))?;
        }
        txn.commit().await.map_err(db(format!("commit {}", what())))
    }

    /// The task's plan with the highest version.
    pub async fn latest_plan(&self, task_id: TaskId) -> Result<Option<ExecutionPlan>> {
        use plan::Column as C;
        let q = plan::Entity::find()
            .select_only()
            .columns([C::Id, C::Body])
            .filter(C::TaskId.eq(task_id.0))
            .order_by_desc(C::Version)
            .limit(1);
        let rows = self.rows(q).await.map_err(db(format!("read the plan of task {task_id}")))?;
        let Some(row) = rows.first() else { return Ok(None) };
        let id: Uuid = col(row, "id", || format!("latest plan of task {task_id}"))?;
        let what = || format!("plan {id} of task {task_id}");
        let p: ExecutionPlan = body(col(row, "body", what)?, what)?;
        if p.plan_id != PlanId(id) || p.task_id != task_id {
            return Err(Error::Corrupt {
                what: what(),
                reason: format!("its body is plan {} of task {}", p.plan_id, p.task_id),
            });
        }
        Ok(Some(p))
    }

    /// Runs a select and returns its raw rows, for columns decoded one by one (see `codec::col`).
    pub(crate) async fn rows<E: EntityTrait>(
        &self,
        q: Select<E>,
    ) -> std::result::Result<Vec<QueryResult>, sea_orm::DbErr> {
        self.db.query_all_raw(q.build(self.db.get_database_backend())).await
    }
}

/// Whether the task is stored; checked before writes that reference it, so a missing task is
/// reported as `NotFound` rather than as a foreign key violation.
pub(crate) async fn task_exists<C: ConnectionTrait>(c: &C, id: TaskId) -> Result<bool> {
    let found = task::Entity::find_by_id(id.0)
        .select_only()
        .column(task::Column::Id)
        .into_tuple::<Uuid>()
        .one(c)
        .await
        .map_err(db(format!("look up task {id}")))?;
    Ok(found.is_some())
}

/// The columns `update_task` writes; `insert_task` adds the ones that never change.
fn task_columns(t: &DevelopmentTask, now: DateTime<Utc>) -> Result<task::ActiveModel> {
    let what = || format!("task {}", t.id);
    Ok(task::ActiveModel {
        id: NotSet,
        project_id: NotSet,
        title: Set(t.title.clone()),
        description: Set(t.description.clone()),
        status: Set(t.status.as_str().to_string()),
        progress: Set(finite(t.progress_percentage, || format!("progress of task {}", t.id))?),
        current_phase: Set(t.current_phase.clone()),
        workspace: NotSet,
        body: Set(to_body(t, what)?),
        created_at: NotSet,
        updated_at: Set(now),
        started_at: Set(t.started_at),
        completed_at: Set(t.completed_at),
    })
}

fn stored_task(row: &QueryResult) -> Result<StoredTask> {
    let id: Uuid = col(row, "id", || "a task row".to_string())?;
    let what = || format!("task {id}");
    let workspace: String = col(row, "workspace", what)?;
    let task: DevelopmentTask = body(col(row, "body", what)?, what)?;
    if task.id.0 != id {
        return Err(Error::Corrupt { what: what(), reason: format!("its body is task {}", task.id) });
    }
    Ok(StoredTask { task, workspace })
}

fn task_summary(row: &QueryResult) -> Result<TaskSummary> {
    let id: Uuid = col(row, "id", || "a task row".to_string())?;
    let what = || format!("task {id}");
    let status: String = col(row, "status", what)?;
    let status: TaskStatus =
        status.parse().map_err(|e: turbo_core::Error| Error::Corrupt { what: what(), reason: e.to_string() })?;
    let total_tokens: i64 = col(row, "total_tokens", what)?;
    Ok(TaskSummary {
        id: TaskId(id),
        title: col(row, "title", what)?,
        status,
        progress: col(row, "progress", what)?,
        current_phase: col(row, "current_phase", what)?,
        created_at: col(row, "created_at", what)?,
        total_tokens: from_i64(total_tokens, || format!("token total of task {id}"))?,
    })
}

/// The smallest and largest uuid starting with `prefix`: hex digits, optionally with the dashes
/// of the canonical form in their places (`3f2a1b4c-9d`).
fn prefix_range(prefix: &str) -> Result<(Uuid, Uuid)> {
    let invalid = |reason: &str| Error::Invalid { what: format!("task id '{prefix}'"), reason: reason.to_string() };
    let mut hex = String::with_capacity(32);
    let dashed = prefix.contains('-');
    for (i, c) in prefix.chars().enumerate() {
        if dashed && matches!(i, 8 | 13 | 18 | 23) {
            if c != '-' {
                return Err(invalid("it is not the start of a task id: give the id as `tasks list` shows it"));
            }
        } else if c.is_ascii_hexdigit() {
            hex.push(c.to_ascii_lowercase());
        } else {
            return Err(invalid(
                "it is not the start of a task id: ids are hex digits and dashes, as `tasks list` shows them",
            ));
        }
    }
    if hex.len() < MIN_PREFIX {
        return Err(invalid("it is too short: give at least 4 characters of the id, as `tasks list` shows it"));
    }
    if hex.len() > 32 {
        return Err(invalid("it is longer than a task id"));
    }
    let pad = |fill: char| {
        let mut s = hex.clone();
        s.extend(std::iter::repeat_n(fill, 32 - hex.len()));
        Uuid::parse_str(&s).map_err(|e| invalid(&e.to_string()))
    };
    Ok((pad('0')?, pad('f')?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_uuid_ranges() {
        let (lo, hi) = prefix_range("3F2a").unwrap();
        assert_eq!(lo.to_string(), "3f2a0000-0000-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "3f2affff-ffff-ffff-ffff-ffffffffffff");
        let (lo, hi) = prefix_range("3f2a1b4c-9d").unwrap();
        assert_eq!(lo.to_string(), "3f2a1b4c-9d00-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "3f2a1b4c-9dff-ffff-ffff-ffffffffffff");
    }

    #[test]
    fn bad_prefixes_say_what_is_wrong() {
        for (p, says) in [("3f2", "too short"), ("zzzz", "hex"), ("3f2a1b4c9-", "not the start"), ("", "too short")] {
            let e = prefix_range(p).unwrap_err().to_string();
            assert!(e.contains(says), "{p}: {e}");
        }
    }
}
