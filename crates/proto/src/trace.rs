//! W3C trace context (`traceparent`, `tracestate`) carried in gRPC metadata, so one trace
//! follows a request from a client through the service that answers it: the gRPC twin of
//! `turbo_bus::headers` for NATS.
//!
//! - Clients: [`TraceInterceptor`] (`FooClient::with_interceptor(channel, TraceInterceptor)`)
//!   or [`inject`] write the current span's context into each request's metadata.
//! - Servers: [`server_span`] makes the span of an incoming request a child of the caller's
//!   span; [`crate::server::serve`] installs it for every service, so handlers (and the spans
//!   they open) continue the caller's trace without doing anything.
//!
//! Trace context is read from and written to `tracing` spans through `tracing-opentelemetry`;
//! when no OpenTelemetry layer is installed (no OTLP endpoint) there is no trace to carry, and
//! nothing is written.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Request paths that get no span of their own: probes and tooling, polled every few seconds,
/// would bury the traces of real work.
const UNTRACED_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

struct Inject<'a>(&'a mut MetadataMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only its own ASCII keys and values; anything else is dropped
        // rather than sent malformed.
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

struct Extract<'a>(&'a http::HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into `metadata` (nothing when there is none).
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut Inject(metadata));
}

/// Makes the trace context in `headers` (a request's HTTP/2 headers, where gRPC metadata
/// travels), if any, the parent of `span`.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Extract(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(cx);
}

/// The span an incoming request is served in: named after the method
/// (`turbo.tools.v1.ToolService/CallTool`), a child of the caller's span when the request
/// carries trace context. Health checks and reflection get none.
pub fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    if UNTRACED_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return tracing::Span::none();
    }
    let method = path.trim_start_matches('/');
    let span = tracing::info_span!("grpc", otel.name = %method, otel.kind = "server", rpc.system = "grpc");
    continue_trace(&span, request.headers());
    span
}

/// A client interceptor that sends the current span's trace context with every request:
/// `ToolServiceClient::with_interceptor(channel, TraceInterceptor)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tonic::service::Interceptor;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn with_otel(f: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    /// What a server sees of a client's request: its metadata as HTTP/2 headers.
    fn as_http(request: tonic::Request<()>, path: &str) -> http::Request<()> {
        let mut http = http::Request::builder().uri(path).body(()).expect("a valid request");
        *http.headers_mut() = request.metadata().clone().into_headers();
        http
    }

    #[test]
    fn trace_context_crosses_metadata() {
        with_otel(|| {
            let client = tracing::info_span!("client");
            let request = client
                .in_scope(|| TraceInterceptor.call(tonic::Request::new(())))
                .expect("the interceptor never refuses");
            let traceparent = request.metadata().get("traceparent").expect("a traceparent").to_str().unwrap();
            let sent_trace = client.context().span().span_context().trace_id();
            assert!(traceparent.contains(&sent_trace.to_string()), "{traceparent}");

            let server = server_span(&as_http(request, "/turbo.tools.v1.ToolService/CallTool"));
            assert_eq!(server.context().span().span_context().trace_id(), sent_trace);
            // Spans opened inside the request's span stay in the trace.
            let handler = server.in_scope(|| tracing::info_span!("handler"));
            assert_eq!(handler.context().span().span_context().trace_id(), sent_trace);
        });
    }

    #[test]
    fn a_request_without_trace_context_starts_its_own_trace() {
        with_otel(|| {
            let server = server_span(&as_http(tonic::Request::new(()), "/turbo.tools.v1.ToolService/ListTools"));
            assert!(server.context().span().span_context().is_valid());
        });
    }

    #[test]
    fn health_checks_get_no_span() {
        with_otel(|| {
            let probe = as_http(tonic::Request::new(()), "/grpc.health.v1.Health/Check");
            assert!(server_span(&probe).is_none());
        });
    }

    #[test]
    fn without_a_trace_nothing_is_written() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
        continue_trace(&tracing::info_span!("server"), &metadata.into_headers());
    }
}
