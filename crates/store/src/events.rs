//! The event log and the tables projected from it.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    TryInsertResult,
};
use uuid::Uuid;

use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent, clip};
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::tool::TokenUsage;

use crate::Store;
use crate::codec::{body, col, from_i64, opt_role, role, to_body, to_i64};
use crate::entity::{event, phase, plan, step, token_usage, tool_call};
use crate::error::{Error, Result, db};
use crate::rows::{PhaseRow, PhaseStatus, StepRow, ToolCallRow, UsageRow};
use crate::tasks::task_exists;

/// Characters of a tool's output kept in `tool_calls.output`; the event body keeps what the
/// event carried.
const MAX_OUTPUT_CHARS: usize = 2000;

impl Store {
    /// Appends events in one transaction, with their projections:
    /// - `PhaseStarted`: the phase (of the task's latest plan) becomes `running`, with the
    ///   attempt and start time; a finish of an earlier attempt is cleared.
    /// - `PhaseFinished`: `succeeded` or `failed`, with the summary and finish time.
    /// - `ToolCall`: a `steps` row (if new) and an open `tool_calls` row.
    /// - `ToolResult`: completes the latest open `tool_calls` row of (task, phase, step, tool).
    /// - `ModelCall`: a `token_usage` row.
    ///
    /// Idempotent: an event whose `(task_id, seq)` is already stored is skipped together with its
    /// projections, so a redelivered event never duplicates a row. All tasks must be stored.
    pub async fn append_events(&self, events: &[TaskEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            if e.seq == 0 {
                return Err(Error::Invalid {
                    what: format!("event {} of task {}", e.kind.name(), e.task_id),
                    reason: "seq is 0; seqs start at 1 (see next_seq)".to_string(),
                });
            }
        }
        let txn = self.begin_write("append events").await?;
        let tasks: BTreeSet<TaskId> = events.iter().map(|e| e.task_id).collect();
        for id in tasks {
            if !task_exists(&txn, id).await? {
                return Err(Error::NotFound { what: "task", id: id.to_string() });
            }
        }
        for e in events {
            let what = || format!("event {}#{} of task {}", e.kind.name(), e.seq, e.task_id);
            let row = event::ActiveModel {
                task_id: Set(e.task_id.0),
                seq: Set(to_i64(e.seq, &what())?),
                at: Set(e.at),
                kind: Set(e.kind.name().to_string()),
                body: Set(to_body(e, what)?),
            };
            let inserted = event::Entity::insert(row)
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await
                .map_err(db(format!("append {}", what())))?;
            match inserted {
                TryInsertResult::Inserted(n) if n > 0 => apply_projections(&txn, e).await?,
                _ => tracing::debug!(task = %e.task_id, seq = e.seq, "event already stored; skipped"),
            }
        }
        txn.commit().await.map_err(db("commit appended events"))
    }

    /// The seq the task's next event gets: one past the highest stored, 1 when none is.
    pub async fn next_seq(&self, task_id: TaskId) -> Result<u64> {
        let max: Option<i64> = event::Entity::find()
            .select_only()
            .expr(Expr::col(event::Column::Seq).max())
            .filter(event::Column::TaskId.eq(task_id.0))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await
            .map_err(db(format!("read the last event of task {task_id}")))?
            .flatten();
        let last: u64 = from_i64(max.unwrap_or(0), || format!("last event seq of task {task_id}"))?;
        Ok(last + 1)
    }

    /// The task's events with a seq above `after_seq`, in order; 0 gives all of them.
    pub async fn events(&self, task_id: TaskId, after_seq: u64) -> Result<Vec<TaskEvent>> {
        use event::Column as C;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let q = event::Entity::find()
            .select_only()
            .columns([C::Seq, C::Body])
            .filter(C::TaskId.eq(task_id.0))
            .filter(C::Seq.gt(after))
            .order_by_asc(C::Seq);
        let rows = self.rows(q).await.map_err(db(format!("read the events of task {task_id}")))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = col(row, "seq", || format!("an event of task {task_id}"))?;
                let what = || format!("event #{seq} of task {task_id}");
                let e: TaskEvent = body(col(row, "body", what)?, what)?;
                if e.task_id != task_id || i64::try_from(e.seq).ok() != Some(seq) {
                    return Err(Error::Corrupt {
                        what: what(),
                        reason: format!("its body is event #{} of task {}", e.seq, e.task_id),
                    });
                }
                Ok(e)
            })
            .collect()
    }

    /// The phases of the task's latest plan, in execution order; empty without a plan.
    pub async fn phases(&self, task_id: TaskId) -> Result<Vec<PhaseRow>> {
        let Some(plan_id) = latest_plan_id(&self.db, task_id).await? else { return Ok(Vec::new()) };
        let rows = phase::Entity::find()
            .filter(phase::Column::PlanId.eq(plan_id))
            .order_by_asc(phase::Column::Position)
            .all(&self.db)
            .await
            .map_err(db(format!("read the phases of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("phase '{}' of plan {}", r.name, r.plan_id);
                Ok(PhaseRow {
                    task_id: TaskId(r.task_id),
                    plan_id: PlanId(r.plan_id),
                    position: from_i64(r.position, what)?,
                    role: opt_role(r.role.as_deref(), what)?,
                    status: PhaseStatus::parse(&r.status).ok_or_else(|| Error::Corrupt {
                        what: what(),
                        reason: format!("unknown status '{}'", r.status),
                    })?,
                    attempt: from_i64(r.attempt, what)?,
                    summary: r.summary,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    name: r.name,
                })
            })
            .collect()
    }

    /// The task's tool-loop steps, in the order they began.
    pub async fn steps(&self, task_id: TaskId) -> Result<Vec<StepRow>> {
        use step::Column as C;
        let rows = step::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::CreatedAt)
            .order_by_asc(C::Phase)
            .order_by_asc(C::Step)
            .all(&self.db)
            .await
            .map_err(db(format!("read the steps of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("step {} of phase '{}' of task {task_id}", r.step, r.phase);
                Ok(StepRow {
                    task_id,
                    step: from_i64(r.step, what)?,
                    role: opt_role(r.role.as_deref(), what)?,
                    created_at: r.created_at,
                    phase: r.phase,
                })
            })
            .collect()
    }

    /// The task's tool calls in the order they were made.
    pub async fn tool_calls(&self, task_id: TaskId) -> Result<Vec<ToolCallRow>> {
        use tool_call::Column as C;
        let rows = tool_call::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::CallSeq)
            .all(&self.db)
            .await
            .map_err(db(format!("read the tool calls of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("tool call #{} of task {task_id}", r.call_seq);
                Ok(ToolCallRow {
                    task_id,
                    step: from_i64(r.step, what)?,
                    call_seq: from_i64(r.call_seq, what)?,
                    duration_ms: r.duration_ms.map(|d| from_i64(d, what)).transpose()?,
                    phase: r.phase,
                    tool: r.tool,
                    arguments: r.arguments,
                    success: r.success,
                    output: r.output,
                    created_at: r.created_at,
                    finished_at: r.finished_at,
                })
            })
            .collect()
    }

    /// One row per model call of the task, in order.
    pub async fn token_usage(&self, task_id: TaskId) -> Result<Vec<UsageRow>> {
        use token_usage::Column as C;
        let rows = token_usage::Entity::find()
            .filter(C::TaskId.eq(task_id.0))
            .order_by_asc(C::EventSeq)
            .all(&self.db)
            .await
            .map_err(db(format!("read the token usage of task {task_id}")))?;
        rows.into_iter()
            .map(|r| {
                let what = || format!("model call #{} of task {task_id}", r.event_seq);
                Ok(UsageRow {
                    task_id,
                    event_seq: from_i64(r.event_seq, what)?,
                    role: role(&r.role, what)?,
                    usage: TokenUsage {
                        prompt_tokens: from_i64(r.prompt_tokens, what)?,
                        completion_tokens: from_i64(r.completion_tokens, what)?,
                    },
                    latency_ms: from_i64(r.latency_ms, what)?,
                    ttft_ms: r.ttft_ms.map(|t| from_i64(t, what)).transpose()?,
                    at: r.created_at,
                    phase: r.phase,
                    model: r.model,
                })
            })
            .collect()
    }

    /// Tokens the task used, summed per role; roles that made no call are absent.
    pub async fn usage_by_role(&self, task_id: TaskId) -> Result<BTreeMap<AgentRole, TokenUsage>> {
        let mut by_role: BTreeMap<AgentRole, TokenUsage> = BTreeMap::new();
        for row in self.token_usage(task_id).await? {
            *by_role.entry(row.role).or_default() += row.usage;
        }
        Ok(by_role)
    }
}

/// The id of the task's plan with the highest version.
async fn latest_plan_id<C: ConnectionTrait>(c: &C, task_id: TaskId) -> Result<Option<Uuid>> {
    plan::Entity::find()
        .select_only()
        .column(plan::Column::Id)
        .filter(plan::Column::TaskId.eq(task_id.0))
        .order_by_desc(plan::Column::Version)
        .limit(1)
        .into_tuple::<Uuid>()
        .one(c)
        .await
        .map_err(db(format!("look up the plan of task {task_id}")))
}

/// Applies one newly stored event to the projected tables.
async fn apply_projections(txn: &DatabaseTransaction, e: &TaskEvent) -> Result<()> {
    let task = e.task_id;
    let seq = to_i64(e.seq, "event seq")?;
    let what = || format!("event {}#{} of task {task}", e.kind.name(), e.seq);
    match &e.kind {
        EventKind::PhaseStarted { phase, role, attempt } => {
            let set = phase::ActiveModel {
                role: Set(Some(role.as_str().to_string())),
                status: Set(PhaseStatus::Running.as_str().to_string()),
                attempt: Set(i64::from(*attempt)),
                started_at: Set(Some(e.at)),
                // A repeated phase is running again: the earlier attempt's end no longer holds.
                summary: Set(None),
                finished_at: Set(None),
                ..Default::default()
            };
            update_phase(txn, task, phase, set, &what()).await
        }
        EventKind::PhaseFinished { phase, success, summary, .. } => {
            let status = if *success { PhaseStatus::Succeeded } else { PhaseStatus::Failed };
            let set = phase::ActiveModel {
                status: Set(status.as_str().to_string()),
                summary: Set(Some(summary.clone())),
                finished_at: Set(Some(e.at)),
                ..Default::default()
            };
            update_phase(txn, task, phase, set, &what()).await
        }
        EventKind::ToolCall { phase, step, tool, arguments } => {
            let step = i64::from(*step);
            let role = phase_role(txn, task, phase).await?;
            let new_step = step::ActiveModel {
                task_id: Set(task.0),
                phase: Set(phase.clone()),
                step: Set(step),
                role: Set(role),
                created_at: Set(e.at),
            };
            // A step with several tool calls gets its row from the first one.
            step::Entity::insert(new_step)
                .on_conflict_do_nothing()
                .exec_without_returning(txn)
                .await
                .map_err(db(format!("record the step of {}", what())))?;
            let call = tool_call::ActiveModel {
                id: NotSet,
                task_id: Set(task.0),
                phase: Set(phase.clone()),
                step: Set(step),
                tool: Set(tool.clone()),
                call_seq: Set(seq),
                arguments: Set(arguments.clone()),
                success: Set(None),
                output: Set(None),
                duration_ms: Set(None),
                created_at: Set(e.at),
                finished_at: Set(None),
            };
            use tool_call::Column as C;
            tool_call::Entity::insert(call)
                .on_conflict(
                    OnConflict::columns([C::TaskId, C::Phase, C::Step, C::Tool, C::CallSeq]).do_nothing().to_owned(),
                )
                .exec_without_returning(txn)
                .await
                .map_err(db(format!("record the tool call of {}", what())))?;
            Ok(())
        }
        EventKind::ToolResult { phase, step, tool, success, output, duration_ms } => {
            use tool_call::Column as C;
            let open: Option<i64> = tool_call::Entity::find()
                .select_only()
                .column(C::Id)
                .filter(C::TaskId.eq(task.0))
                .filter(C::Phase.eq(phase.as_str()))
                .filter(C::Step.eq(i64::from(*step)))
                .filter(C::Tool.eq(tool.as_str()))
                .filter(C::FinishedAt.is_null())
                .order_by_desc(C::CallSeq)
                .limit(1)
                .into_tuple()
                .one(txn)
                .await
                .map_err(db(format!("find the tool call of {}", what())))?;
            let Some(id) = open else {
                tracing::warn!(%task, seq = e.seq, %phase, step, %tool, "tool result without an open tool call; not projected");
                return Ok(());
            };
            let set = tool_call::ActiveModel {
                success: Set(Some(*success)),
                output: Set(Some(clip(output, MAX_OUTPUT_CHARS))),
                duration_ms: Set(Some(to_i64(*duration_ms, "tool duration_ms")?)),
                finished_at: Set(Some(e.at)),
                ..Default::default()
            };
            tool_call::Entity::update_many()
                .set(set)
                .filter(C::Id.eq(id))
                .exec(txn)
                .await
                .map_err(db(format!("complete the tool call of {}", what())))?;
            Ok(())
        }
        EventKind::ModelCall { role, phase, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, .. } => {
            let usage = token_usage::ActiveModel {
                id: NotSet,
                task_id: Set(task.0),
                role: Set(role.as_str().to_string()),
                phase: Set(phase.clone()),
                model: Set(model.clone()),
                prompt_tokens: Set(i64::from(*prompt_tokens)),
                completion_tokens: Set(i64::from(*completion_tokens)),
                latency_ms: Set(to_i64(*latency_ms, "model call latency_ms")?),
                ttft_ms: Set(ttft_ms.map(|t| to_i64(t, "model call ttft_ms")).transpose()?),
                event_seq: Set(seq),
                created_at: Set(e.at),
            };
            use token_usage::Column as C;
            token_usage::Entity::insert(usage)
                .on_conflict(OnConflict::columns([C::TaskId, C::EventSeq]).do_nothing().to_owned())
                .exec_without_returning(txn)
                .await
                .map_err(db(format!("record the token usage of {}", what())))?;
            Ok(())
        }
        EventKind::TaskCreated { .. }
        | EventKind::StatusChanged { .. }
        | EventKind::PlanReady { .. }
        | EventKind::TestRun { .. }
        | EventKind::Review { .. }
        | EventKind::Progress { .. }
        | EventKind::AgentMessage { .. } => Ok(()),
    }
}

/// Updates the named phase of the task's latest plan. Events for a phase the plan does not have
/// (or before any plan is stored) stay in the log but change no phase row.
async fn update_phase(
    txn: &DatabaseTransaction,
    task: TaskId,
    name: &str,
    set: phase::ActiveModel,
    what: &str,
) -> Result<()> {
    let Some(plan_id) = latest_plan_id(txn, task).await? else {
        tracing::warn!(%task, phase = name, "phase event before any plan is stored; not projected");
        return Ok(());
    };
    let res = phase::Entity::update_many()
        .set(set)
        .filter(phase::Column::PlanId.eq(plan_id))
        .filter(phase::Column::Name.eq(name))
        .exec(txn)
        .await
        .map_err(db(format!("update phase '{name}' for {what}")))?;
    if res.rows_affected == 0 {
        tracing::warn!(%task, phase = name, "phase event for a phase the latest plan does not have; not projected");
    }
    Ok(())
}

/// The role recorded for the phase in the task's latest plan.
async fn phase_role(txn: &DatabaseTransaction, task: TaskId, name: &str) -> Result<Option<String>> {
    let Some(plan_id) = latest_plan_id(txn, task).await? else { return Ok(None) };
    let role: Option<Option<String>> = phase::Entity::find()
        .select_only()
        .column(phase::Column::Role)
        .filter(phase::Column::PlanId.eq(plan_id))
        .filter(phase::Column::Name.eq(name))
        .into_tuple()
        .one(txn)
        .await
        .map_err(db(format!("look up the role of phase '{name}' of task {task}")))?;
    Ok(role.flatten())
}
