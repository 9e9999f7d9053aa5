//! `GET /metrics`: the server's counters in the OpenMetrics text format
//! (which Prometheus scrapes), with `prometheus-client`.
//!
//! No metric is labelled with a tenant, a session id or anything else a
//! client chose: every label value is one of a fixed set of static
//! strings, so the set of series is bounded and the page tells a scraper
//! about load, never about who. That is why `/metrics` needs no token
//! (scrapers seldom carry one); `--no-metrics` removes it for a server
//! whose port is reachable by people who should not see even that.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

type Labels<const N: usize> = [(&'static str, &'static str); N];

pub(crate) struct Metrics {
    registry: Registry,
    runs: Family<Labels<3>, Counter>,
    latency: Family<Labels<1>, Histogram, fn() -> Histogram>,
    /// Requests admitted that wait for a turn to run (all tenants).
    pub queued: Gauge,
    live_sessions: Gauge,
    pub saved: Counter,
    pub restored: Counter,
    rss: Gauge,
}

/// 1 ms to about a minute, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pynbox");
        let runs = Family::<Labels<3>, Counter>::default();
        registry.register(
            "runs",
            "Requests that run guest code (kind: run, start, exec, eval), by outcome (ok, exit, error, limit, crash, ended, dead, input, or the error type of a refusal) and limit (time, memory, output)",
            runs.clone(),
        );
        let latency: Family<Labels<1>, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer (waiting in the queue included), by kind (run, start, exec, eval)",
            Unit::Seconds,
            latency.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests admitted and waiting for a turn to run guest code",
            queued.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register(
            "sessions_live",
            "Sessions in memory (idle ones saved to the store are not)",
            live_sessions.clone(),
        );
        let saved = Counter::default();
        registry.register(
            "sessions_saved",
            "Sessions saved to the store (idle, or at shutdown)",
            saved.clone(),
        );
        let restored = Counter::default();
        registry.register(
            "sessions_restored",
            "Sessions restored from the store by a call",
            restored.clone(),
        );
        let rss = Gauge::default();
        registry.register_with_unit(
            "resident_memory",
            "The server process's resident memory (Linux: /proc/self/statm)",
            Unit::Bytes,
            rss.clone(),
        );
        Metrics {
            registry,
            runs,
            latency,
            queued,
            live_sessions,
            saved,
            restored,
            rss,
        }
    }

    /// Counts one request answered (only those that run guest code).
    pub fn request(&self, route: &str, outcome: &'static str, limit: &'static str, took: Duration) {
        let kind = match route {
            "/v1/run" => "run",
            "/v1/sessions" => "start",
            "/v1/sessions/{id}/exec" => "exec",
            "/v1/sessions/{id}/eval" => "eval",
            _ => return,
        };
        self.runs
            .get_or_create(&[("kind", kind), ("outcome", outcome), ("limit", limit)])
            .inc();
        self.latency
            .get_or_create(&[("kind", kind)])
            .observe(took.as_secs_f64());
    }

    /// The page, with the gauges read now.
    pub fn render(&self, live_sessions: usize) -> String {
        self.live_sessions
            .set(i64::try_from(live_sessions).unwrap_or(i64::MAX));
        if let Some(rss) = resident_bytes() {
            self.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Resident memory of this process, in bytes.
#[cfg(target_os = "linux")]
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page).ok()?)
}

#[cfg(not(target_os = "linux"))]
fn resident_bytes() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_every_metric() {
        let m = Metrics::new();
        m.request("/v1/run", "limit", "time", Duration::from_millis(3));
        m.request("/healthz", "ok", "", Duration::from_millis(3));
        m.saved.inc();
        let page = m.render(2);
        for line in [
            "pynbox_runs_total{kind=\"run\",outcome=\"limit\",limit=\"time\"} 1",
            "pynbox_request_duration_seconds_count{kind=\"run\"} 1",
            "pynbox_sessions_live 2",
            "pynbox_sessions_saved_total 1",
            "pynbox_sessions_restored_total 0",
            "pynbox_queue_depth 0",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
        }
        assert!(!page.contains("healthz"));
        #[cfg(target_os = "linux")]
        assert!(page.contains("pynbox_resident_memory_bytes "));
    }
}
