//! One orchestrator per store: the one holding the store's lease ([`turbo_store::Lease`], a
//! Postgres advisory lock) runs the tasks; the others stand by, serving health (their task and
//! project services NOT_SERVING, so a load balancer or Kubernetes sends them nothing) and
//! taking the lease the moment its holder is gone.
//!
//! The leader confirms its lease every [`CONFIRM_EVERY`]. While the database cannot be reached
//! nobody can take the lease, so the leader keeps running and asks again; when another process
//! took it (the leader's session was cut and a standby was faster) the leader stops at once
//! ([`Error::LeaseLost`]) without writing anything more. A new leader waits [`SETTLE`] before
//! it starts, so an old leader that lost its session has noticed and stopped by then.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use turbo_store::{Lease, Store};

use crate::error::Error;

/// The lease that makes an orchestrator the one running a store's tasks.
pub const LEASE: &str = "turbo.orchestrator";
/// How often a standby tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How often the leader confirms it still holds the lease.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);
/// How long a new leader waits before it starts: more than an old leader takes to notice.
const SETTLE: Duration = Duration::from_millis(2 * 1000 + 500);

/// Waits until this process holds the store's lease; None when `shutdown` fires first.
pub async fn acquire(store: &Store, shutdown: &CancellationToken) -> Option<Lease> {
    let mut standing_by = false;
    loop {
        match store.try_lease(LEASE).await {
            Ok(Some(lease)) => {
                if standing_by {
                    // The previous holder may have lost only its session and still be running:
                    // give it the time to notice before anything is resumed.
                    tracing::info!("took over the store's lease; starting after the old leader has stopped");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(SETTLE) => {}
                    }
                }
                return Some(lease);
            }
            Ok(None) if !standing_by => {
                tracing::info!("another orchestrator runs this store's tasks; standing by");
                standing_by = true;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot ask for the store's lease; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// Confirms the lease until it is lost to another process, then returns why. The caller keeps
/// the lease, so it is held until the caller has stopped writing and drops it.
pub async fn hold(lease: &mut Lease) -> Error {
    let mut unreachable = false;
    loop {
        tokio::time::sleep(CONFIRM_EVERY).await;
        match lease.confirm().await {
            Ok(true) => {
                if std::mem::take(&mut unreachable) {
                    tracing::info!("the store is reachable again; still holding its lease");
                }
            }
            Ok(false) => return Error::LeaseLost("its session was cut and another orchestrator took it".into()),
            Err(error) => {
                if !std::mem::replace(&mut unreachable, true) {
                    tracing::warn!(%error, "cannot confirm the store's lease; nobody else can take it meanwhile");
                }
            }
        }
    }
}
