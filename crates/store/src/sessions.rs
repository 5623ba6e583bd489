//! Interactive sessions: one row per session, opened on a project (and optionally following a
//! task), touched on every message, ended by the user, by the server, or after its idle timeout.
//! Their times are kept to the microsecond (what both backends' timestamp columns hold).

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use turbo_core::ids::{ProjectId, SessionId, TaskId};

use crate::Store;
use crate::entity::session;
use crate::error::{Error, Result, db};

/// A stored session.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    pub id: SessionId,
    pub project_id: ProjectId,
    /// The task it follows, if any.
    pub task_id: Option<TaskId>,
    /// Who opened it.
    pub user: String,
    pub started_at: DateTime<Utc>,
    /// The last message in either direction.
    pub last_active_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended: `ended by <user>`, `idle for 1800 s`, ...
    pub end_reason: Option<String>,
    /// Ended after this long without messages.
    pub idle_timeout: Duration,
    /// The `message_id` of the `ai_request` whose answer the session is owed: set while its
    /// task (`task_id`) runs, cleared by the stream that delivers the answer ("" for a request
    /// that had no message id).
    pub pending_reply: Option<String>,
}

impl StoredSession {
    /// When it ends if nothing happens before.
    pub fn idle_deadline(&self) -> DateTime<Utc> {
        self.last_active_at + chrono::TimeDelta::from_std(self.idle_timeout).unwrap_or(chrono::TimeDelta::MAX)
    }
}

fn from_row(r: session::Model) -> StoredSession {
    StoredSession {
        id: SessionId(r.id),
        project_id: ProjectId(r.project_id),
        task_id: r.task_id.map(TaskId),
        user: r.user_name,
        started_at: r.started_at,
        last_active_at: r.last_active_at,
        ended_at: r.ended_at,
        end_reason: r.end_reason,
        idle_timeout: Duration::from_secs(u64::try_from(r.idle_timeout_s).unwrap_or(0)),
        pending_reply: r.pending_reply,
    }
}

impl Store {
    /// Stores a new session. Its project must be stored.
    pub async fn insert_session(&self, s: &StoredSession) -> Result<()> {
        let row = session::ActiveModel {
            id: Set(s.id.0),
            project_id: Set(s.project_id.0),
            task_id: Set(s.task_id.map(|t| t.0)),
            user_name: Set(s.user.clone()),
            started_at: Set(s.started_at.trunc_subsecs(6)),
            last_active_at: Set(s.last_active_at.trunc_subsecs(6)),
            ended_at: Set(s.ended_at.map(|t| t.trunc_subsecs(6))),
            end_reason: Set(s.end_reason.clone()),
            idle_timeout_s: Set(i64::try_from(s.idle_timeout.as_secs()).unwrap_or(i64::MAX)),
            pending_reply: Set(s.pending_reply.clone()),
        };
        session::Entity::insert(row).exec(&self.db).await.map_err(db(format!("insert session {}", s.id)))?;
        Ok(())
    }

    pub async fn get_session(&self, id: SessionId) -> Result<Option<StoredSession>> {
        let row = session::Entity::find_by_id(id.0).one(&self.db).await.map_err(db(format!("read session {id}")))?;
        Ok(row.map(from_row))
    }

    /// Records activity on an open session and, when `task_id` is set, makes it the task the
    /// session follows. Returns the session as stored; [`Error::NotFound`] when unknown.
    pub async fn touch_session(
        &self,
        id: SessionId,
        at: DateTime<Utc>,
        task_id: Option<TaskId>,
    ) -> Result<StoredSession> {
        use session::Column as C;
        let at = at.trunc_subsecs(6);
        let mut update = session::Entity::update_many().col_expr(C::LastActiveAt, at.into()).filter(C::Id.eq(id.0));
        if let Some(task) = task_id {
            update = update.col_expr(C::TaskId, task.0.into());
        }
        update.filter(C::EndedAt.is_null()).exec(&self.db).await.map_err(db(format!("touch session {id}")))?;
        self.get_session(id).await?.ok_or(Error::NotFound { what: "session", id: id.to_string() })
    }

    /// Makes an open session follow `task`, started by its `ai_request` `reply_to`, whose
    /// answer it is now owed. Returns the session as stored; [`Error::NotFound`] when unknown.
    pub async fn follow_task(
        &self,
        id: SessionId,
        at: DateTime<Utc>,
        task: TaskId,
        reply_to: &str,
    ) -> Result<StoredSession> {
        use session::Column as C;
        session::Entity::update_many()
            .col_expr(C::LastActiveAt, at.trunc_subsecs(6).into())
            .col_expr(C::TaskId, task.0.into())
            .col_expr(C::PendingReply, Some(reply_to.to_string()).into())
            .filter(C::Id.eq(id.0))
            .filter(C::EndedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("make session {id} follow task {task}")))?;
        self.get_session(id).await?.ok_or(Error::NotFound { what: "session", id: id.to_string() })
    }

    /// Takes the answer owed for `task` off the session: the `reply_to` to answer it with, or
    /// None when none is owed (or another stream took it first: the update is conditional).
    pub async fn claim_answer(&self, id: SessionId, task: TaskId) -> Result<Option<String>> {
        use session::Column as C;
        let Some(session) = self.get_session(id).await? else { return Ok(None) };
        let Some(reply_to) = session.pending_reply.filter(|_| session.task_id == Some(task)) else {
            return Ok(None);
        };
        let taken = session::Entity::update_many()
            .col_expr(C::PendingReply, Option::<String>::None.into())
            .filter(C::Id.eq(id.0))
            .filter(C::TaskId.eq(task.0))
            .filter(C::PendingReply.eq(reply_to.clone()))
            .exec(&self.db)
            .await
            .map_err(db(format!("claim the answer of session {id}")))?;
        Ok((taken.rows_affected == 1).then_some(reply_to))
    }

    /// Owes `reply_to` again (an answer claimed but not sent), unless the session has moved on
    /// to another task or owes another answer.
    pub async fn owe_answer(&self, id: SessionId, task: TaskId, reply_to: &str) -> Result<()> {
        use session::Column as C;
        session::Entity::update_many()
            .col_expr(C::PendingReply, Some(reply_to.to_string()).into())
            .filter(C::Id.eq(id.0))
            .filter(C::TaskId.eq(task.0))
            .filter(C::PendingReply.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("owe the answer of session {id} again")))?;
        Ok(())
    }

    /// Ends a session for `reason` unless it has ended already (then it is returned as it
    /// was). [`Error::NotFound`] when unknown.
    pub async fn end_session(&self, id: SessionId, at: DateTime<Utc>, reason: &str) -> Result<StoredSession> {
        use session::Column as C;
        session::Entity::update_many()
            .col_expr(C::EndedAt, Some(at.trunc_subsecs(6)).into())
            .col_expr(C::EndReason, Some(reason.to_string()).into())
            .filter(C::Id.eq(id.0))
            .filter(C::EndedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("end session {id}")))?;
        self.get_session(id).await?.ok_or(Error::NotFound { what: "session", id: id.to_string() })
    }

    /// Ends every open session idle past its timeout at `now`; returns them as ended.
    pub async fn end_idle_sessions(&self, now: DateTime<Utc>) -> Result<Vec<StoredSession>> {
        use session::Column as C;
        let open = session::Entity::find()
            .filter(C::EndedAt.is_null())
            .all(&self.db)
            .await
            .map_err(db("list open sessions"))?;
        let mut ended = Vec::new();
        for s in open.into_iter().map(from_row).filter(|s| s.idle_deadline() <= now) {
            let reason = format!("idle for {} s", s.idle_timeout.as_secs());
            ended.push(self.end_session(s.id, now, &reason).await?);
        }
        Ok(ended)
    }
}
