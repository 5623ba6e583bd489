//! The gRPC plumbing every service shares: health checking (grpc.health.v1) and server
//! reflection for all turbo packages, served beside a service's own APIs until a shutdown
//! token fires ([`serve`]; [`serve_health`] when there are no APIs yet), each request served in
//! a span that continues the caller's trace ([`crate::trace::server_span`]); and the two
//! process-edge helpers every entry point needs (`turbo-coder serve` and each service's own
//! binary): binding the listen address and turning SIGTERM/Ctrl-C into that token.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
pub use tonic::service::Routes;
use tonic_health::ServingStatus;

/// Serves health and reflection on `listener`, reporting `services` (and the whole server,
/// name "") as serving, until `shutdown` is cancelled; then reports not-serving and drains.
pub async fn serve_health(
    services: &[&str],
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve(services, Routes::default(), listener, shutdown).await
}

/// Serves `routes` (a service's tonic APIs) with health and reflection on `listener`,
/// reporting `services` (and the whole server, name "") as serving, until `shutdown` is
/// cancelled; then reports `services` not-serving and drains: no new connections, and the
/// call returns once the open calls (server streams included) have ended.
pub async fn serve(
    services: &[&str],
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_inner(services, routes, listener, shutdown, None).await
}

/// [`serve`], reporting `services` serving only while `ready` holds true (e.g. while the
/// service's connection to NATS is up), so a load balancer or Kubernetes stops sending work to
/// a process that cannot do it. The whole server (name "") stays serving: the process is alive.
pub async fn serve_while_ready(
    services: &[&str],
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    serve_inner(services, routes, listener, shutdown, Some(ready)).await
}

async fn serve_inner(
    services: &[&str],
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let status = |up: bool| if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    let initially = ready.as_ref().is_none_or(|r| *r.borrow());
    for s in services {
        reporter.set_service_status(*s, status(initially)).await;
    }
    let stop_following = CancellationToken::new();
    let _stop_following = stop_following.clone().drop_guard();
    if let Some(mut ready) = ready {
        let reporter = reporter.clone();
        let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let (shutdown, stop) = (shutdown.clone(), stop_following.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = stop.cancelled() => return,
                    changed = ready.changed() => if changed.is_err() { return },
                }
                let up = *ready.borrow_and_update();
                if shutdown.is_cancelled() {
                    return;
                }
                for s in &names {
                    reporter.set_service_status(s, status(up)).await;
                }
            }
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets are generated at build time and always decode");
    let drain = {
        let reporter = reporter.clone();
        let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        async move {
            shutdown.cancelled().await;
            for s in &names {
                reporter.set_service_status(s, ServingStatus::NotServing).await;
            }
        }
    };
    tonic::transport::Server::builder()
        .trace_fn(crate::trace::server_span)
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await
}

/// Binds `addr` (`host:port`; port 0 picks a free one). The error names the address and what
/// to do, so callers can show it as is.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}; pick a free --listen address"))
    })
}

/// A token cancelled on the first SIGTERM (what Kubernetes sends) or Ctrl-C. The handlers are
/// installed before this returns, so a signal that arrives right after is not lost to the
/// default action (which would kill the process without draining). Needs a Tokio runtime.
pub fn shutdown_on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            cancel.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    Ok(token)
}
