//! What can go wrong in the store, each message saying what to do about it.

use std::path::PathBuf;

use sea_orm::DbErr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement.
    #[error("cannot {action}: {source}; check that the database is reachable and not full")]
    Db {
        /// What the store was doing, e.g. `insert task 3f2a…`.
        action: String,
        #[source]
        source: DbErr,
    },

    #[error("no {what} with id '{id}' is stored; list what is stored (e.g. `tasks list`) and use one of those ids")]
    NotFound { what: &'static str, id: String },

    #[error("id prefix '{prefix}' matches {} tasks ({}); type more characters of the id", matches.len(), matches.join(", "))]
    Ambiguous { prefix: String, matches: Vec<String> },

    /// A stored row that no longer decodes: edited by hand or written by an incompatible version.
    #[error("{what} is stored but cannot be read: {reason}; restore it from a backup or remove it")]
    Corrupt { what: String, reason: String },

    #[error("cannot open database at {}: {reason}; set TURBO_CODER__STORE__URL or --data-dir to a writable place", path.display())]
    Unwritable { path: PathBuf, reason: String },

    /// A database server that could not be reached (the URL is shown without its password).
    #[error(
        "cannot connect to database at {url}: {reason}; check that the server is running and that the URL's host, user, password and database are right (TURBO_CODER__STORE__URL)"
    )]
    Unreachable { url: String, reason: String },

    #[error(
        "unsupported database url '{url}': use sqlite:///abs/path/turbo.db, sqlite::memory: or postgres://user@host:5432/db"
    )]
    UnsupportedUrl { url: String },

    /// The database went away while in use (a restart, a network cut) and did not come back
    /// within the pool's reconnect time.
    #[error("cannot {action}: the database is unreachable ({reason}); check that it is running, then try again")]
    Unavailable { action: String, reason: String },

    /// A value the store refuses, e.g. an event seq of 0 or a task id prefix of 2 characters.
    #[error("{what} is invalid: {reason}")]
    Invalid { what: String, reason: String },

    /// A write that collides with a stored row.
    #[error("{what} conflicts with a stored row: {reason}")]
    Conflict { what: String, reason: String },

    /// A value that must be unique (a project's name or slug) is held by another row.
    #[error("{field} '{value}' is already used by {holder}; choose another {field}")]
    Taken {
        /// The field, e.g. `name` or `slug`.
        field: &'static str,
        value: String,
        /// Who holds it, e.g. `project 3f2a… ('My App')`.
        holder: String,
    },

    /// The row exists but is not in a state the operation needs, e.g. restoring a project that
    /// is not deleted.
    #[error("{what} {reason}")]
    WrongState { what: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `map_err` adapter naming the action that failed.
/// A lost connection (the pool could not reconnect in time) is [`Error::Unavailable`].
pub(crate) fn db(action: impl Into<String>) -> impl FnOnce(DbErr) -> Error {
    move |source| match is_connection_error(&source) {
        true => Error::Unavailable { action: action.into(), reason: source.to_string() },
        false => Error::Db { action: action.into(), source },
    }
}

impl Error {
    /// Whether the database could not be reached (trying again later may work), as opposed to
    /// a statement it refused.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Unavailable { .. } => true,
            Error::Db { source, .. } => is_connection_error(source),
            _ => false,
        }
    }
}

/// Whether `e` is the connection failing (pool timed out reconnecting, socket closed, the
/// server shutting down) rather than the statement.
pub(crate) fn is_connection_error(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => match s.as_ref() {
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed | Sqlx::Tls(_) => true,
            // SQLSTATE class 08: connection exception; 57P0x: the server is shutting down.
            Sqlx::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a statement failed on a unique or primary key constraint.
pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// A URL as it may be shown: the password replaced, so errors and logs never leak it.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@db:5432/x"), "postgres://u:***@db:5432/x");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::Unwritable { path: "/x/turbo.db".into(), reason: "permission denied".into() };
        assert_eq!(
            e.to_string(),
            "cannot open database at /x/turbo.db: permission denied; set TURBO_CODER__STORE__URL or --data-dir to a writable place"
        );
        let e = Error::Ambiguous { prefix: "abcd".into(), matches: vec!["abcd1".into(), "abcd2".into()] };
        assert_eq!(e.to_string(), "id prefix 'abcd' matches 2 tasks (abcd1, abcd2); type more characters of the id");
    }
}
