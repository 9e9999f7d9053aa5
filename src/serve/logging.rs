//! Request ids and logs: every response carries an `x-request-id`, and
//! every request is one log line on stderr (text or JSON, `--log-format`)
//! with that id, the tenant, the route, the status, the latency and what
//! became of the guest's work. Never the code, the body or the token.
//!
//! The request's handlers write what only they know (the tenant, the
//! outcome) into a [`Note`] the middleware put in the request's
//! extensions; the middleware reads it back once the response is made,
//! for the log line and for [`metrics`](super::metrics).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{random_id, State};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME LEVEL message key=value ...`, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}: give text or json")),
        }
    }
}

/// Sends this process's log lines to stderr in `format` (once; later
/// calls, as from tests that start several servers in one process, keep
/// the first).
pub fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // pynbox's own lines; of the libraries (the object store's client
    // retrying, say), only warnings and errors.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("pynbox", tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(targets))
        .try_init();
}

/// What the handlers of one request found out, for its log line and the
/// metrics.
#[derive(Default)]
pub(crate) struct Note {
    pub tenant: Option<String>,
    /// What became of the guest's work: `ok`, `exit` (a run's non-zero
    /// exit), `error` (a call's exception), `limit`, `crash`, `ended`,
    /// `dead`, `input`; for a request refused before any guest work, the
    /// error's type (`TooManyRequests`, `QuotaExceeded`, `BadRequest`...).
    pub outcome: Option<&'static str>,
    /// The limit that ended the guest: `time`, `memory` or `output`.
    pub limit: Option<&'static str>,
}

pub(crate) type Noted = Arc<Mutex<Note>>;

/// Sets what the handlers know, if the request has a note (it always has,
/// behind the middleware).
pub(crate) fn note(extensions: &axum::http::Extensions, f: impl FnOnce(&mut Note)) {
    if let Some(n) = extensions.get::<Noted>() {
        f(&mut n.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The error type of an error response, put in its extensions by
/// [`ApiError`](super::ApiError).
#[derive(Clone, Copy)]
pub(crate) struct ErrorType(pub &'static str);

/// The longest client-given request id that is echoed.
const MAX_ID: usize = 64;

/// The client's `x-request-id` when it is sane (1 to 64 letters, digits
/// and `-_.:`, so that it cannot forge log lines or headers); else a
/// fresh one, 16 hex digits.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| random_id()[..16].to_string())
}

/// The middleware around every request: the id, the log line, the metrics.
pub(super) async fn observe(
    state: axum::extract::State<Arc<State>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    // The route's pattern, never the path itself: a path is the client's
    // text (and holds session ids).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", |m| route_name(m.as_str()));
    let method = req.method().clone();
    let noted: Noted = Arc::default();
    req.extensions_mut().insert(noted.clone());
    let mut r = next.run(req).await;
    r.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&id).expect("checked to be a header value"),
    );
    let latency = started.elapsed();
    let note = std::mem::take(&mut *noted.lock().unwrap_or_else(|p| p.into_inner()));
    let outcome = note
        .outcome
        .or_else(|| r.extensions().get::<ErrorType>().map(|e| e.0))
        .unwrap_or(if r.status() == StatusCode::OK || r.status().is_success() {
            "ok"
        } else {
            "error"
        });
    let limit = note.limit.unwrap_or("");
    let status = r.status().as_u16();
    state.metrics.request(route, outcome, limit, latency);
    tracing::info!(
        request_id = %id,
        tenant = note.tenant.as_deref().unwrap_or("-"),
        method = %method,
        route,
        status,
        latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3,
        outcome,
        limit,
        "request"
    );
    r
}

/// The routes by name; a static string each, so that neither the log
/// nor the metrics take text from the client.
fn route_name(pattern: &str) -> &'static str {
    match pattern {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/run" => "/v1/run",
        "/v1/sessions" => "/v1/sessions",
        "/v1/sessions/{id}" => "/v1/sessions/{id}",
        "/v1/sessions/{id}/exec" => "/v1/sessions/{id}/exec",
        "/v1/sessions/{id}/eval" => "/v1/sessions/{id}/eval",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_echoed_only_when_sane() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_str(v).unwrap());
            request_id(&h)
        };
        assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
        for bad in ["", "a b", "a\"b", "x=1 outcome=ok", &"a".repeat(65)] {
            let id = with(bad);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 16);
        }
        assert_eq!(request_id(&HeaderMap::new()).len(), 16);
    }
}
