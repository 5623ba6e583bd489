//! The gateway: the cluster's public door. It serves the REST API under `/v1` (`rest`), each
//! request authenticated with a bearer token (`auth`) and forwarded to the orchestrator over
//! gRPC, errors in one JSON shape with the spec's codes (`problem`), and the OpenAPI document
//! at `/v1/openapi.json`. On the same port it answers gRPC health checking ([`GRPC_SERVICES`])
//! and reflection, so probes and `grpcurl` work as for every service.
//!
//! It is started by [`run`], from `turbo-coder serve gateway` or from its own binary
//! `turbo-gateway` (`src/main.rs`); it refuses to start without `gateway.jwt_secret`
//! ([`check`]). `turbo-coder token` issues tokens with the same key ([`auth::Tokens::issue`]).
//!
//! # Layout
//! - `auth`: bearer tokens (HS256 JWTs, or RS256 ones of an identity provider with its JWKS), API keys, roles and permissions.
//! - `knowledge`: the knowledge routes, forwarded to the knowledge service.
//! - `edge`: per-user rate limits shared by the replicas, and the audit of every change.
//! - `problem`: the JSON error body and the status of each error.
//! - `rest`: the routes, their request and response types, the OpenAPI document.
//! - `sessions`: interactive sessions and their WebSocket, bridged to the orchestrator.
//! - `error`: errors of the gateway process itself.
//! - this file: [`run`], the network entry point.

pub mod auth;
pub mod edge;
mod error;
pub mod knowledge;
pub mod problem;
pub mod rest;
pub mod sessions;

use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::ServingStatus;

pub use error::{Error, Result};

/// The gRPC services the gateway reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] =
    &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService", "turbo.sessions.v1.SessionService"];

/// What answers a path no route has: gRPC's Unimplemented to a gRPC request, else a JSON 404.
async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("{} is not served here", request.uri().path())).into_http();
    }
    problem::ApiError::not_found("no such route: see /v1/openapi.json").into_response()
}

/// How often the identity provider's keys are fetched again (besides on an unknown key id).
const KEYS_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

/// Fetches `gateway.jwks_url` again every [`KEYS_REFRESH`], so withdrawn keys stop working.
async fn refresh_keys(tokens: auth::Tokens, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEYS_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = tokens.refresh(true).await {
            tracing::warn!(%error, "cannot refresh the identity provider's keys; the ones held stay in use");
        }
    }
}

/// Fails when the gateway cannot start with `config`: no key to check tokens with.
pub fn check(config: &turbo_config::Config) -> Result<auth::Tokens> {
    auth::Tokens::from_config(&config.gateway).map_err(Error::NoKey)
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then reports not-serving
/// and drains: the REST API (`rest::routes`) forwarding to `gateway.orchestrator_url`, with
/// request bodies bounded by `gateway.max_body_bytes`, and gRPC health and reflection.
pub async fn run(config: &turbo_config::Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    let tokens = check(config)?;
    // An identity provider's published keys: needed before any token can be checked.
    if tokens.fetches_keys() {
        tokens.refresh(true).await.map_err(Error::NoKey)?;
        tokio::spawn(refresh_keys(tokens.clone(), shutdown.clone()));
    }
    let url = &config.gateway.orchestrator_url;
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::BadUrl { url: url.clone(), reason: e.to_string() })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    let store = turbo_store::Store::open(config.store.url.as_deref(), &config.store.data_dir())
        .await
        .map_err(|e| Error::Serve { addr: addr.clone(), reason: format!("cannot open the store: {e}") })?;
    let edge = edge::Edge::new(store, config.gateway.rate_limit_per_hour);
    let knowledge = match &config.knowledge.url {
        Some(url) => Some(
            turbo_proto::knowledge_client::RemoteKnowledge::connect(url)
                .map_err(|e| Error::Serve { addr: addr.clone(), reason: e.to_string() })?,
        ),
        None => None,
    };
    let mut app = rest::App::new(tokens, Some(edge), endpoint.connect_lazy()).with_knowledge(knowledge);
    app.ws_max_message_bytes = config.gateway.ws_max_message_bytes;

    let (reporter, health) = tonic_health::server::health_reporter();
    for service in GRPC_SERVICES.iter().chain([&""]) {
        reporter.set_service_status(*service, ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(turbo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets are generated at build time and always decode");
    let grpc = tonic::service::Routes::new(health).add_service(reflection).into_axum_router();
    // tonic's router answers unknown paths with gRPC's Unimplemented; the gateway's fallback
    // keeps that for gRPC requests and answers the rest with a JSON 404.
    let router =
        grpc.merge(rest::routes(app).layer(DefaultBodyLimit::max(config.gateway.max_body_bytes))).fallback(fallback);

    tracing::info!(%addr, orchestrator = %url, services = ?GRPC_SERVICES, "gateway serving REST and gRPC health");
    let drain = {
        let reporter = reporter.clone();
        async move {
            shutdown.cancelled().await;
            for service in GRPC_SERVICES {
                reporter.set_service_status(*service, ServingStatus::NotServing).await;
            }
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(drain)
        .await
        .map_err(|e| Error::Serve { addr, reason: e.to_string() })
}
