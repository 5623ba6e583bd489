//! Opening a database and bringing its schema up to date.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

use crate::Store;
use crate::error::{Error, Result, redact};
use crate::migration::Migrator;

/// The Postgres advisory lock key the migrations run under ("turbo" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_75_72_62_6f;

/// How long a SQLite writer waits for another one before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connects to `sqlite:///abs/path/turbo.db`, `sqlite::memory:` or `postgres://...` and runs
    /// pending migrations. A SQLite file is created if missing, in WAL mode with foreign keys on,
    /// a 5 s busy timeout and `synchronous=NORMAL`.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::connect_postgres(url).await;
        }
        if url.starts_with("sqlite:") {
            let (_, params) = url.split_once('?').unwrap_or((url, ""));
            let memory = url.starts_with("sqlite::memory:") || params.split('&').any(|p| p == "mode=memory");
            if memory {
                return Self::connect_sqlite(url, None).await;
            }
            let opts = SqliteConnectOptions::from_str(url).map_err(|_| Error::UnsupportedUrl { url: redact(url) })?;
            let path = opts.get_filename().to_path_buf();
            return Self::connect_sqlite(url, Some(path)).await;
        }
        Err(Error::UnsupportedUrl { url: redact(url) })
    }

    /// The configured store: `url` when set (Postgres in the cluster, or a SQLite URL), else
    /// the SQLite file `turbo.db` in `data_dir`. Migrations run on open.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Self> {
        match url {
            Some(url) => Self::connect(url).await,
            None => Self::open_sqlite(&data_dir.join("turbo.db")).await,
        }
    }

    /// Opens (creating it and its parent directories if needed) the SQLite database at `path`.
    /// A path that cannot be written gives [`Error::Unwritable`] naming it.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let unwritable = |reason: String| Error::Unwritable { path: path.to_path_buf(), reason };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if parent.exists() && !parent.is_dir() {
                return Err(unwritable(format!("{} is a file, not a directory", parent.display())));
            }
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| unwritable(format!("cannot create directory {}: {e}", parent.display())))?;
        }
        if path.is_dir() {
            return Err(unwritable("it is a directory".to_string()));
        }
        // sea-orm wants a URL, but a path may hold what a URL cannot carry as is (`?`, `#`,
        // `%`, bytes that are not UTF-8); so the URL is a placeholder and the real path is set
        // on the driver's options, which take a `Path`.
        Self::connect_sqlite("sqlite://turbo.db", Some(path.to_path_buf())).await
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            _ => "unsupported",
        }
    }

    /// `file` is None for an in-memory database.
    async fn connect_sqlite(url: &str, file: Option<PathBuf>) -> Result<Self> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false);
        let driver_file = file.clone();
        opts.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .synchronous(SqliteSynchronous::Normal);
            match &driver_file {
                // WAL lets readers go on while one connection writes.
                Some(f) => o.filename(f).journal_mode(SqliteJournalMode::Wal),
                // In-memory databases have no WAL.
                None => o,
            }
        });
        match &file {
            Some(_) => {
                opts.max_connections(4);
            }
            None => {
                // An in-memory database lives as long as one of its connections: keep exactly
                // one open for the life of the pool.
                opts.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            }
        }
        // Processes opening one file together (the embedded services) connect and migrate one
        // at a time: an exclusive lock on a file beside it, held while they do. Connecting is
        // inside it too: the first connection to a new file switches it to WAL, which needs the
        // database to itself, and the busy timeout does not cover that switch.
        let _migrating = match &file {
            // A lock file that cannot be made means the database's place is not writable.
            Some(path) => Some(
                migration_lock(path)
                    .await
                    .map_err(|e| Error::Unwritable { path: path.clone(), reason: e.to_string() })?,
            ),
            None => None,
        };
        let db = Database::connect(opts).await.map_err(|e| match &file {
            Some(path) => sqlite_file_error(path, e.to_string())
                .unwrap_or_else(|| Error::Unwritable { path: path.clone(), reason: e.to_string() }),
            None => Error::Unreachable { url: url.to_string(), reason: e.to_string() },
        })?;
        let store = Store { db };
        store.migrate().await.map_err(|e| match (&file, &e) {
            (Some(path), Error::Db { source, .. }) => sqlite_file_error(path, source.to_string()).unwrap_or(e),
            _ => e,
        })?;
        Ok(store)
    }

    async fn connect_postgres(url: &str) -> Result<Self> {
        let mut opts = ConnectOptions::new(url.to_string());
        // The acquire timeout also bounds connecting: a refused connection (a server still
        // starting) is retried until then, so a cluster whose database comes up a few seconds
        // late still starts, while a wrong address fails within seconds.
        opts.sqlx_logging(false).max_connections(10).acquire_timeout(Duration::from_secs(10));
        let db: DatabaseConnection = Database::connect(opts)
            .await
            .map_err(|e| Error::Unreachable { url: redact(url), reason: e.to_string() })?;
        // Services that start together (replicas, the whole cluster) would race to migrate the
        // same database and fail on each other's half-made tables: the migrations run on one
        // connection holding an advisory lock, so the first migrates and the others then find
        // nothing to do.
        let mut single = ConnectOptions::new(url.to_string());
        single.sqlx_logging(false).max_connections(1).min_connections(1).acquire_timeout(Duration::from_secs(10));
        let locked = Database::connect(single)
            .await
            .map_err(|e| Error::Unreachable { url: redact(url), reason: e.to_string() })?;
        let lock = |verb: &str| format!("SELECT pg_advisory_{verb}({MIGRATION_LOCK})");
        locked
            .execute_unprepared(&lock("lock"))
            .await
            .map_err(|source| Error::Db { action: "wait for the migration lock".to_string(), source })?;
        let migrated = Migrator::up(&locked, None)
            .await
            .map_err(|source| Error::Db { action: "run database migrations".to_string(), source });
        if let Err(error) = locked.execute_unprepared(&lock("unlock")).await {
            tracing::warn!(%error, "cannot release the migration lock; it goes with the connection");
        }
        let _ = locked.close().await;
        migrated?;
        Ok(Store { db })
    }

    /// Applies pending migrations (SQLite: one process at a time by the file's own locks);
    /// applied ones are recorded, so this is a no-op the second time.
    async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|source| Error::Db { action: "run database migrations".to_string(), source })
    }
}

/// Waits for, then holds (until dropped), the exclusive lock on `<database>.migrate.lock`.
async fn migration_lock(database: &Path) -> Result<std::fs::File> {
    let mut name = database.as_os_str().to_owned();
    name.push(".migrate.lock");
    let path = PathBuf::from(name);
    let unwritable = |reason: String| Error::Unwritable { path: path.clone(), reason };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| unwritable(e.to_string()))?;
    let locked =
        tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await.map_err(|e| unwritable(e.to_string()))?;
    locked.map_err(|e| unwritable(format!("cannot lock it for the migrations: {e}")))
}

/// Says what is wrong with a SQLite file that failed to open or migrate, when the driver's
/// message tells: not a database at all, or a place that cannot be written.
fn sqlite_file_error(path: &Path, reason: String) -> Option<Error> {
    if reason.contains("file is not a database") {
        return Some(Error::Corrupt {
            what: format!("database file {}", path.display()),
            reason: format!("it is not a SQLite database ({reason})"),
        });
    }
    let unwritable = ["readonly", "unable to open", "disk I/O error", "Permission denied", "Read-only file system"];
    if unwritable.iter().any(|m| reason.contains(m)) {
        return Some(Error::Unwritable { path: path.to_path_buf(), reason });
    }
    None
}

/// Creates the Postgres database `name` on the server of `server_url` (a URL of any database
/// there, e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and returns the URL of the new
/// database; for test harnesses and a cluster's first setup. `name` must be lowercase letters,
/// digits and `_`, starting with a letter.
pub async fn create_postgres_database(server_url: &str, name: &str) -> Result<String> {
    check_database_name(name)?;
    let admin = admin_connection(server_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|source| Error::Db { action: format!("create database {name}"), source })?;
    Ok(with_database(server_url, name))
}

/// Drops the Postgres database `name` on the server of `server_url`, closing its connections
/// first; nothing happens when there is no such database.
pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<()> {
    check_database_name(name)?;
    let admin = admin_connection(server_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(|source| Error::Db { action: format!("drop database {name}"), source })?;
    Ok(())
}

/// Closes, from the server side, every connection to the Postgres database `name` on the server
/// of `server_url` (`pg_terminate_backend`), as a brief outage of the database would; returns
/// how many were closed. For tests: the clients' pools must open new connections.
pub async fn terminate_postgres_connections(server_url: &str, name: &str) -> Result<u64> {
    check_database_name(name)?;
    let admin = admin_connection(server_url).await?;
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) AS closed FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ),
        ))
        .await
        .map_err(|source| Error::Db { action: format!("close the connections to database {name}"), source })?;
    Ok(rows.iter().filter(|row| row.try_get::<bool>("", "closed").unwrap_or(false)).count() as u64)
}

async fn admin_connection(server_url: &str) -> Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(server_url.to_string());
    // A refused connection is retried until the acquire timeout; a stopped server fails fast.
    opts.sqlx_logging(false).max_connections(1).acquire_timeout(Duration::from_secs(3));
    Database::connect(opts).await.map_err(|e| Error::Unreachable { url: redact(server_url), reason: e.to_string() })
}

fn check_database_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: format!("database name '{name}'"),
            reason: "use at most 63 lowercase letters, digits and _, starting with a letter".to_string(),
        })
    }
}

/// `url` with its database name replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_and_names() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x_1"), "postgres://u@h:5432/x_1");
        assert_eq!(with_database("postgres://h/test?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert!(check_database_name("turbo_cluster_0af3").is_ok());
        for bad in ["", "1abc", "a-b", "A", "a;drop"] {
            assert!(check_database_name(bad).is_err(), "{bad}");
        }
    }
}
