//! The gRPC plumbing every service shares: health checking (grpc.health.v1) and server
//! reflection for all turbo packages, served until a shutdown token fires.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// Serves health and reflection on `listener`, reporting `services` (and the whole server,
/// name "") as serving, until `shutdown` is cancelled; then reports not-serving and drains.
pub async fn serve_health(
    services: &[&str],
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    for s in services {
        reporter.set_service_status(*s, ServingStatus::Serving).await;
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
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await
}
