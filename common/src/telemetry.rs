//! Tracing and OpenTelemetry, set up once per process.
//!
//! Log lines go to stdout through an `EnvFilter`-filtered fmt layer. When an OTLP endpoint
//! is configured (a runtime setting, not a build feature), spans also go through an
//! OpenTelemetry tracer and leave the process, whatever the log filter says; without one,
//! `tracecontext` carries each request's trace id to log and to propagate.

use std::io::IsTerminal;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::{LogFormat, TelemetryArgs};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter did not parse.
    #[error("--log-filter / RUST_LOG `{filter}` is not a valid filter: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built from the endpoint.
    #[error("--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}`: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Something else already installed a global subscriber.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter. Call once, before exit.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not flush the last spans");
        }
    }
}

/// Installs the global subscriber and propagator for `service`.
///
/// Fails when the filter does not parse, the exporter cannot be built, or a subscriber is
/// already installed (so call it once, from `main`).
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&args.log_filter).map_err(|source| TelemetryError::Filter {
        filter: args.log_filter.clone(),
        source,
    })?;

    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if let Some(endpoint) = &args.otlp_endpoint {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);
    global::set_text_map_propagator(TraceContextPropagator::new());

    // Without an exporter the log filter is the only one, and it filters for the whole
    // subscriber: a span no log line would show is then never built (its callsite is
    // disabled), and the trace context is propagated by `tracecontext` alone. With an
    // exporter, every INFO span goes to OpenTelemetry and the filter only picks log lines.
    let exporting = args.otlp_endpoint.is_some();
    if exporting {
        let otel_layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_default(Level::INFO));
        tracing_subscriber::registry()
            .with(fmt_layer(args.log_format).with_filter(filter))
            .with(otel_layer)
            .try_init()?;
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(args.log_format))
            .try_init()?;
    }
    crate::tracecontext::set_exporting(exporting);
    Ok(Telemetry { provider })
}

/// Log lines on stdout, human or JSON.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    match format {
        LogFormat::Human => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
}

/// The OTLP/HTTP traces URL for a collector base URL, as the OpenTelemetry spec derives it
/// from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn a_bad_filter_names_the_flag() {
        let args = TelemetryArgs {
            log_filter: "info,=[".to_owned(),
            ..TelemetryArgs::default()
        };
        let err = init("test", &args).unwrap_err().to_string();
        assert!(err.contains("--log-filter / RUST_LOG"), "{err}");
    }
}
