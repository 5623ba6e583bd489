//! The audit log: who did what to which task or project, and how it went.
//!
//! The services record an entry at their edges (gRPC handlers, the NATS control plane, tool
//! approvals). **Callers pass no secrets**, in any field: no API keys, tokens, passwords, URLs
//! with credentials, request bodies or file contents; the detail names what was acted on (ids,
//! names, counts), never the data itself. As a safety net only, detail fields whose names look
//! secret (`password`, `api_key`, `access_token`, `authorization`, ...) are stored as
//! `"[redacted]"`, and every field is clipped, so an entry stays small whatever it is given.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use turbo_core::event::clip;

use crate::Store;
use crate::entity::audit_entry;
use crate::error::{Error, Result, db};
use crate::rows::{AuditEntry, AuditFilter, NewAuditEntry};

/// Entries [`Store::list_audit`] returns at most, whatever the filter asks.
pub const MAX_AUDIT_LIMIT: u64 = 1000;
/// Characters kept of an actor or a target.
const MAX_NAME_CHARS: usize = 256;
/// Characters an action may have; actions are short dotted names like `project.restore`.
const MAX_ACTION_CHARS: usize = 64;
/// Characters kept of an outcome (an error message).
const MAX_OUTCOME_CHARS: usize = 1000;
/// Bytes of a detail's JSON text; a larger detail is stored as a clipped preview.
const MAX_DETAIL_BYTES: usize = 4096;
/// Characters of the JSON text kept in the preview of a clipped detail.
const DETAIL_PREVIEW_CHARS: usize = 512;
const REDACTED: &str = "[redacted]";
/// Ends of field names (lowercased, letters and digits only) whose values are never stored.
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secretkey",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "credential",
    "credentials",
];

impl Store {
    /// Stores an audit entry and returns its id (ids grow with each entry). Refuses an entry
    /// without an actor, an action that is not a short lowercase dotted name, or an outcome
    /// other than `ok` or `error: ...`; clips long fields and redacts secret-looking detail
    /// fields (see the module docs: callers must not pass secrets in the first place).
    pub async fn record_audit(&self, entry: NewAuditEntry) -> Result<i64> {
        let NewAuditEntry { at, actor, action, target, outcome, detail } = entry;
        let invalid = |what: &str, reason: String| Error::Invalid { what: format!("audit entry {what}"), reason };
        let actor = actor.trim();
        if actor.is_empty() {
            return Err(invalid(
                "actor",
                "it is empty; name who acted, e.g. grpc:<peer>, nats-cli or a user id".into(),
            ));
        }
        let valid_action = !action.is_empty()
            && action.len() <= MAX_ACTION_CHARS
            && action.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !valid_action {
            return Err(invalid(
                &format!("action '{}'", clip(&action, MAX_ACTION_CHARS)),
                format!("use at most {MAX_ACTION_CHARS} lowercase letters, digits, '.', '_' and '-', e.g. task.cancel"),
            ));
        }
        if outcome != "ok" && !outcome.starts_with("error: ") {
            return Err(invalid(
                &format!("outcome '{}'", clip(&outcome, 40)),
                "use \"ok\" or \"error: <what went wrong>\"".into(),
            ));
        }
        let row = audit_entry::ActiveModel {
            id: NotSet,
            at: Set(at),
            actor: Set(clip(actor, MAX_NAME_CHARS)),
            action: Set(action.clone()),
            target: Set(clip(target.trim(), MAX_NAME_CHARS)),
            outcome: Set(clip(&outcome, MAX_OUTCOME_CHARS)),
            detail: Set(detail.map(safe_detail)),
        };
        let inserted = audit_entry::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(db(format!("record audit entry {action}")))?;
        Ok(inserted.last_insert_id)
    }

    /// Audit entries matching every field the filter sets, newest first, at most
    /// `filter.limit` of them (clamped to 1..=[`MAX_AUDIT_LIMIT`]).
    pub async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        use audit_entry::Column as C;
        let mut q = audit_entry::Entity::find()
            .order_by_desc(C::At)
            .order_by_desc(C::Id)
            .limit(filter.limit.clamp(1, MAX_AUDIT_LIMIT));
        if let Some(actor) = filter.actor {
            q = q.filter(C::Actor.eq(actor));
        }
        if let Some(action) = filter.action {
            q = q.filter(C::Action.eq(action));
        }
        if let Some(target) = filter.target {
            q = q.filter(C::Target.eq(target));
        }
        if let Some(since) = filter.since {
            q = q.filter(C::At.gte(since));
        }
        let rows = q.all(&self.db).await.map_err(db("list audit entries"))?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                detail: r.detail,
            })
            .collect())
    }
}

/// The detail as stored: secret-looking fields redacted, and a preview of its JSON text in
/// place of a detail larger than [`MAX_DETAIL_BYTES`].
fn safe_detail(mut detail: Value) -> Value {
    redact(&mut detail);
    let text = detail.to_string();
    if text.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    serde_json::json!({
        "clipped": true,
        "bytes": text.len(),
        "preview": clip(&text, DETAIL_PREVIEW_CHARS),
    })
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if is_secret_name(name) {
                    *value = Value::String(REDACTED.to_string());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn is_secret_name(name: &str) -> bool {
    let name: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    SECRET_NAMES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_looking_fields_are_redacted_at_any_depth() {
        let detail = json!({
            "project": "my-app",
            "api_key": "sk-123",
            "nested": [{"Access-Token": "abc", "prompt_tokens": 12}, {"DB_PASSWORD": "x"}],
            "headers": {"Authorization": "Bearer abc", "accept": "json"},
        });
        assert_eq!(
            safe_detail(detail),
            json!({
                "project": "my-app",
                "api_key": REDACTED,
                "nested": [{"Access-Token": REDACTED, "prompt_tokens": 12}, {"DB_PASSWORD": REDACTED}],
                "headers": {"Authorization": REDACTED, "accept": "json"},
            })
        );
        for name in ["max_tokens", "token_count", "keyword", "tokens", "monkey"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn large_details_become_a_clipped_preview() {
        let small = json!({"files": ["a.rs", "b.rs"]});
        assert_eq!(safe_detail(small.clone()), small);
        let large = json!({"text": "é".repeat(5000)});
        let stored = safe_detail(large.clone());
        assert_eq!(stored["clipped"], true);
        assert_eq!(stored["bytes"], large.to_string().len());
        let preview = stored["preview"].as_str().unwrap();
        assert!(preview.starts_with(r#"{"text":"éé"#) && preview.ends_with("more chars]"), "{preview}");
        assert!(stored.to_string().len() <= MAX_DETAIL_BYTES);
    }
}
