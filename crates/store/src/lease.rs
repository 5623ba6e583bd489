//! Leases: at most one process at a time holds a named lease on a database, so exactly one
//! orchestrator of a cluster runs the tasks of a store while the others stand by.
//!
//! On Postgres a lease is a session-level advisory lock (`pg_try_advisory_lock`) held on a
//! connection of its own, taken out of the pool. The server releases it the moment that
//! session ends: when the holder exits or is killed, its socket closes and a standby's next
//! attempt wins, with no expiry to wait out. A holder confirms its lease periodically
//! ([`Lease::confirm`]); when the connection was lost (a restart of the database, a network
//! cut) it takes the lock again on a new connection if nobody else has, and otherwise learns
//! that it has lost the lease and must stop.
//!
//! SQLite is one process's database (the embedded mode): its lease is always granted.

use std::time::Duration;

use sea_orm::sqlx::{self, Connection, PgConnection, PgPool};

use crate::Store;
use crate::error::{Error, Result};

/// Longest a lease statement may take before the lease's connection counts as lost.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A held lease; dropping it releases it (the connection closes).
pub struct Lease {
    name: String,
    key: i64,
    holder: Holder,
}

enum Holder {
    /// SQLite: nothing to hold.
    Local,
    Postgres {
        pool: PgPool,
        /// None after the connection was lost, until the lock is taken again.
        conn: Option<PgConnection>,
    },
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("name", &self.name).field("key", &self.key).finish()
    }
}

impl Store {
    /// Takes the lease `name` if no other process holds it; `None` when one does. Errors only
    /// when the database cannot be reached.
    pub async fn try_lease(&self, name: &str) -> Result<Option<Lease>> {
        let key = lease_key(name);
        if self.backend() != "postgres" {
            return Ok(Some(Lease { name: name.to_string(), key, holder: Holder::Local }));
        }
        let pool = self.db.get_postgres_connection_pool().clone();
        Ok(try_lock(&pool, name, key).await?.map(|conn| Lease {
            name: name.to_string(),
            key,
            holder: Holder::Postgres { pool, conn: Some(conn) },
        }))
    }
}

impl Lease {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease is still held: `Ok(true)` when its session is alive, or was lost and
    /// the lock has been taken again on a new one; `Ok(false)` when another process took it
    /// meanwhile (the caller must stop what the lease guards); an error when the database
    /// cannot be reached (nobody else can take the lease then; ask again later).
    pub async fn confirm(&mut self) -> Result<bool> {
        let Holder::Postgres { pool, conn } = &mut self.holder else { return Ok(true) };
        if let Some(held) = conn {
            let alive = tokio::time::timeout(STATEMENT_TIMEOUT, held.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                return Ok(true);
            }
            tracing::warn!(lease = %self.name, "the lease's database session was lost; taking the lease again");
            *conn = None;
        }
        match try_lock(pool, &self.name, self.key).await? {
            Some(fresh) => {
                *conn = Some(fresh);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases the lease now, so a standby can take it at once.
    pub async fn release(mut self) {
        if let Holder::Postgres { conn: Some(conn), .. } = &mut self.holder {
            let unlock = sqlx::query("select pg_advisory_unlock($1)").bind(self.key).execute(&mut *conn);
            let _ = tokio::time::timeout(STATEMENT_TIMEOUT, unlock).await;
        }
    }
}

/// A connection of its own (out of the pool) holding the advisory lock `key`, or None when
/// another session holds it.
async fn try_lock(pool: &PgPool, name: &str, key: i64) -> Result<Option<PgConnection>> {
    let unreachable = |reason: String| Error::Unavailable { action: format!("take the lease '{name}'"), reason };
    let attempt = async {
        let mut conn = pool.acquire().await.map_err(|e| unreachable(e.to_string()))?.detach();
        let (locked,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(locked.then_some(conn))
    };
    tokio::time::timeout(STATEMENT_TIMEOUT + Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(unreachable("the database did not answer in time".into())))
}

/// A stable 64-bit key for `name` (FNV-1a), the advisory lock's id.
fn lease_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(lease_key("orchestrator"), lease_key("orchestrator"));
        assert_ne!(lease_key("orchestrator"), lease_key("orchestrator2"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(lease_key(""), i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes()));
    }

    #[tokio::test]
    async fn sqlite_leases_are_always_granted() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let mut lease = store.try_lease("orchestrator").await.unwrap().expect("granted");
        assert!(lease.confirm().await.unwrap());
        assert_eq!(lease.name(), "orchestrator");
    }
}
