//! NATS header names the bus uses, and W3C trace context (`traceparent`, `tracestate`) carried in
//! headers so one trace follows a task from the orchestrator through a worker.
//!
//! Trace context is read from and written to the current `tracing` span through
//! `tracing-opentelemetry`; when no OpenTelemetry layer is installed (no OTLP endpoint) there is
//! no trace to carry, and nothing is written.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// JetStream's de-duplication id: a second publish with the same id within the stream's
/// duplicate window is stored once.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The task a work item belongs to, readable even when the body is not.
pub const TASK_ID: &str = "Turbo-Task-Id";
/// The request id of a work item, readable even when the body is not.
pub const REQUEST_ID: &str = "Turbo-Request-Id";
/// Why a message was dead-lettered.
pub const DLQ_REASON: &str = "Turbo-Dlq-Reason";
/// The subject the dead-lettered message was consumed from.
pub const DLQ_SUBJECT: &str = "Turbo-Dlq-Subject";
/// How many times the dead-lettered message had been delivered.
pub const DLQ_DELIVERED: &str = "Turbo-Dlq-Delivered";
/// The dead-lettered message's sequence in its stream.
pub const DLQ_STREAM_SEQ: &str = "Turbo-Dlq-Stream-Seq";
/// The worker that dead-lettered the message.
pub const DLQ_WORKER: &str = "Turbo-Dlq-Worker";

/// Longest header value written; NATS headers are one line each, and a reason is for people.
const MAX_VALUE_CHARS: usize = 1_000;

/// Makes `text` a valid one-line header value of bounded length.
pub fn value(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    turbo_core::event::clip(line.trim(), MAX_VALUE_CHARS)
}

/// The value of header `name`, if present.
pub fn get<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current span's trace context into `headers` (nothing when there is none).
pub fn inject_trace(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut Inject(headers));
}

/// Makes the trace context in `headers`, if any, the parent of `span`.
pub fn continue_trace(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else { return };
    if headers.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Extract(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn values_are_one_bounded_line() {
        assert_eq!(value(" a\r\nb\tc "), "a  b c");
        assert!(value(&"x".repeat(5_000)).starts_with(&"x".repeat(MAX_VALUE_CHARS)));
        assert!(value(&"x".repeat(5_000)).len() < 1_100);
    }

    #[test]
    fn trace_context_crosses_headers() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let sender = tracing::info_span!("sender");
            let mut headers = HeaderMap::new();
            sender.in_scope(|| inject_trace(&mut headers));
            let traceparent = get(Some(&headers), "traceparent").expect("a traceparent header").to_string();
            let sent_trace = sender.context().span().span_context().trace_id();
            assert!(traceparent.contains(&sent_trace.to_string()), "{traceparent}");

            let receiver = tracing::info_span!("receiver");
            continue_trace(&receiver, Some(&headers));
            assert_eq!(receiver.context().span().span_context().trace_id(), sent_trace);
        });
    }

    #[test]
    fn without_a_trace_nothing_is_written() {
        let mut headers = HeaderMap::new();
        inject_trace(&mut headers);
        assert!(headers.is_empty());
        continue_trace(&tracing::info_span!("receiver"), Some(&headers));
    }
}
