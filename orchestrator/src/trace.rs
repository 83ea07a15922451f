//! One trace per saga: W3C trace context derived from ids, the log
//! subscriber, and (feature `otlp`) trace export over OTLP/HTTP.
//!
//! A saga's trace id comes from its id: saga ids are UUIDv7, and the 32 hex
//! digits of a UUID are a valid W3C trace id. Nothing is stored, so every
//! orchestrator instance, after a restart or a takeover, names the same trace.
//! A command attempt's span id is the first 8 bytes of the SHA-256 of its
//! `Nats-Msg-Id` (`<command id>/<attempt>`): the relay derives the
//! `traceparent` header from the outbox row at publish time, and a re-publish
//! of the same attempt carries the same header.
//!
//! The orchestrator's spans (`start`, `handle`, `publish`) carry `saga_id` and
//! `trace_id`; the participant SDK's `command` span carries the `trace_id` it
//! reads from the header, so logs of both sides join on it. With the `otlp`
//! feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported, each
//! made a child of its saga's trace by [`link`].

use sha2::{Digest, Sha256};

/// The W3C trace id (32 lowercase hex digits, never all zeros) of a saga.
///
/// A UUID's own digits; any other id (saga ids are chosen by Skald, but the
/// protocol allows `[A-Za-z0-9_-]{1,128}`) is hashed.
#[must_use]
pub fn trace_id(saga_id: &str) -> String {
    let digits: String = saga_id.chars().filter(|c| *c != '-').collect();
    if digits.len() == 32
        && digits.bytes().all(|b| b.is_ascii_hexdigit())
        && digits.bytes().any(|b| b != b'0')
    {
        return digits.to_ascii_lowercase();
    }
    hex_not_zero(&Sha256::digest(saga_id.as_bytes())[..16])
}

/// A W3C span id (16 lowercase hex digits, never all zeros) derived from `id`.
#[must_use]
pub fn span_id(id: &str) -> String {
    hex_not_zero(&Sha256::digest(id.as_bytes())[..8])
}

/// The `traceparent` header of one command attempt: version 00, the saga's
/// trace, the attempt's span, sampled.
#[must_use]
pub fn traceparent(saga_id: &str, msg_id: &str) -> String {
    format!("00-{}-{}-01", trace_id(saga_id), span_id(msg_id))
}

/// Lowercase hex of `bytes`, with the last byte set to 1 if all were zero
/// (W3C forbids all-zero ids; a hash gives that with probability 2^-64).
fn hex_not_zero(bytes: &[u8]) -> String {
    let mut bytes = bytes.to_vec();
    if bytes.iter().all(|b| *b == 0)
        && let Some(last) = bytes.last_mut()
    {
        *last = 1;
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Put `span` into its saga's trace in exported traces, under a root span
/// whose id is derived from the saga id. Does nothing without the `otlp`
/// feature or while export is off.
pub fn link(span: &tracing::Span, saga_id: &str) {
    #[cfg(feature = "otlp")]
    otlp::link(span, saga_id);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, saga_id);
}

/// Keeps the log output (and trace export) set up by [`init_logging`];
/// dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
pub struct LogGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LogGuard");
        #[cfg(feature = "otlp")]
        d.field("otlp", &self.provider.is_some());
        d.finish()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("skald: spans not exported at exit: {e}");
        }
    }
}

/// Log to stderr, filtered by `RUST_LOG` (else `default_filter`), and, with
/// the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, export spans over
/// OTLP/HTTP. Call it once, from `main`, before any async runtime starts (the
/// exporter's HTTP client is a blocking one, run on its own thread).
pub fn init_logging(default_filter: &str) -> LogGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    #[cfg(feature = "otlp")]
    let (export, guard) = {
        use opentelemetry::trace::TracerProvider as _;
        let provider = otlp::provider();
        let layer = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("skald")));
        (layer, LogGuard { provider })
    };
    #[cfg(not(feature = "otlp"))]
    let (export, guard) = (tracing_subscriber::layer::Identity::new(), LogGuard {});
    if tracing_subscriber::registry().with(filter).with(fmt).with(export).try_init().is_err() {
        eprintln!("skald: a log subscriber was already set; keeping it");
    }
    guard
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Where spans go; unset or empty: no export.
    const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

    /// A tracer provider exporting over OTLP/HTTP (protobuf), when configured.
    pub(super) fn provider() -> Option<SdkTracerProvider> {
        if std::env::var(ENDPOINT_VAR).map_or(true, |v| v.trim().is_empty()) {
            return None;
        }
        // Endpoint, headers and timeout come from the standard OTEL_* variables.
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("skald: OTLP trace export off: {e}");
                return None;
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("skald");
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    }

    pub(super) fn link(span: &tracing::Span, saga_id: &str) {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&super::trace_id(saga_id)),
            SpanId::from_hex(&super::span_id(saga_id)),
        ) else {
            return;
        };
        let root = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::NONE);
        // Fails only when export is off or the span is disabled: nothing to link then.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(root));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a `traceparent` the way a W3C trace-context parser does.
    fn assert_valid(tp: &str) {
        assert_eq!(tp.len(), 55, "{tp}");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        let lower_hex =
            |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        for (part, len) in parts.iter().zip([2, 32, 16, 2]) {
            assert_eq!(part.len(), len, "{tp}");
            assert!(lower_hex(part), "{tp}");
        }
        assert_eq!(parts[0], "00");
        assert!(parts[1].bytes().any(|b| b != b'0'), "all-zero trace id: {tp}");
        assert!(parts[2].bytes().any(|b| b != b'0'), "all-zero span id: {tp}");
        assert_eq!(parts[3], "01");
    }

    #[test]
    fn a_uuid_saga_id_is_its_own_trace_id() {
        let saga_id = "0190F3C2-7A1B-7C3D-8E4F-0123456789AB";
        assert_eq!(trace_id(saga_id), "0190f3c27a1b7c3d8e4f0123456789ab");
        let tp = traceparent(saga_id, &format!("{saga_id}.charge.do/1"));
        assert_valid(&tp);
        assert!(tp.starts_with("00-0190f3c27a1b7c3d8e4f0123456789ab-"), "{tp}");
        let fresh = uuid::Uuid::now_v7().to_string();
        assert_eq!(trace_id(&fresh), fresh.replace('-', ""));
    }

    #[test]
    fn span_ids_follow_the_attempt_and_are_stable() {
        let saga_id = uuid::Uuid::now_v7().to_string();
        let first = traceparent(&saga_id, &format!("{saga_id}.hold.do/1"));
        assert_eq!(first, traceparent(&saga_id, &format!("{saga_id}.hold.do/1")));
        let second = traceparent(&saga_id, &format!("{saga_id}.hold.do/2"));
        assert_valid(&first);
        assert_valid(&second);
        assert_eq!(first[..36], second[..36], "one trace for the saga");
        assert_ne!(first[36..52], second[36..52], "one span per attempt");
        // The first 8 bytes of SHA-256("a") = ca978112ca1bbdca…
        assert_eq!(span_id("a"), "ca978112ca1bbdca");
    }

    #[test]
    fn other_ids_are_hashed_into_a_valid_trace_id() {
        for saga_id in ["s1", "order-42", "00000000-0000-0000-0000-000000000000", "x"] {
            let id = trace_id(saga_id);
            assert_eq!(id.len(), 32, "{saga_id}");
            assert_ne!(id, "0".repeat(32), "{saga_id}");
            assert_valid(&traceparent(saga_id, "m"));
        }
        assert_ne!(trace_id("s1"), trace_id("s2"));
    }

    #[test]
    fn all_zero_bytes_never_make_an_id() {
        assert_eq!(hex_not_zero(&[0; 8]), "0000000000000001");
        assert_eq!(hex_not_zero(&[0, 0xab]), "00ab");
    }
}
