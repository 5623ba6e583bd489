//! Logging and tracing setup shared by every binary: `tracing` to stderr (text or JSON) and,
//! when an OTLP endpoint is configured, spans exported over OTLP/gRPC so one trace follows a
//! task across services.
//!
//! # Layout
//! - this file: [`init`] and the [`Guard`] that flushes spans on drop.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid log filter '{filter}': {reason}; use e.g. 'info' or 'turbo=debug,warn'")]
    Filter { filter: String, reason: String },
    #[error("cannot set up the otlp exporter for {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The spans exported over OTLP, independent of the log filter: turbo-coder's own at `info`
/// and up (a task's run, agent calls, work items, tool calls, gRPC requests), others' warnings.
const TRACE_FILTER: &str = "warn,turbo=info";

/// What to set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Service name reported with every span, e.g. `turbo-orchestrator`.
    pub service: String,
    /// `tracing` filter directive; `RUST_LOG` wins when set.
    pub filter: String,
    pub json: bool,
    pub otlp_endpoint: Option<String>,
}

/// Keeps the exporter alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Best effort: a collector that is gone must not block shutdown.
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. Logs go to stderr so stdout stays clean for `--json` output.
pub fn init(opts: &Options) -> Result<Guard> {
    let filter = env_filter(&opts.filter, std::env::var("RUST_LOG").ok())?;
    let fmt = if opts.json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
    };
    let (otel, provider) = match &opts.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| Error::Otlp { endpoint: endpoint.clone(), reason: e.to_string() })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(opts.service.clone()).build())
                .build();
            let tracer = provider.tracer(opts.service.clone());
            opentelemetry::global::set_tracer_provider(provider.clone());
            // Spans are exported whatever the log level: a quiet log must not cut the traces.
            let spans = EnvFilter::new(TRACE_FILTER);
            (Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans).boxed()), Some(provider))
        }
        None => (None, None),
    };
    // A second init (tests, embedded services) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    Ok(Guard { provider })
}

fn env_filter(configured: &str, rust_log: Option<String>) -> Result<EnvFilter> {
    let directive = rust_log.unwrap_or_else(|| configured.to_string());
    EnvFilter::try_new(&directive).map_err(|e| Error::Filter { filter: directive.clone(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_bad_filter_with_a_hint() {
        let err = env_filter("turbo=loud", None).expect_err("bad filter");
        assert!(err.to_string().contains("turbo=loud"), "{err}");
        assert!(env_filter("warn", None).is_ok());
        assert!(env_filter("warn", Some("turbo=loud".into())).is_err(), "RUST_LOG wins");
    }
}
