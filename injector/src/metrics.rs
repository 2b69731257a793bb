//! Prometheus metrics, rendered in the text exposition format (0.0.4) by
//! hand: a handful of counters and one histogram need no library.
//!
//! - `sidekey_injector_reviews_total{outcome}`: injected, skipped, denied,
//!   invalid, error (HTTP 4xx answers without a review count as invalid).
//! - `sidekey_injector_review_duration_seconds{outcome}`: from the request's
//!   arrival to the answer, body read included.
//! - `sidekey_injector_injections_total{namespace}`,
//!   `sidekey_injector_denials_total{namespace}`: at most
//!   [`MAX_NAMESPACES`] label values each, then `namespace="_other"`
//!   (short-lived namespaces would otherwise grow the series forever).
//! - `sidekey_injector_certificate_reloads_total{result}` and
//!   `sidekey_injector_audit_failures_total`;
//!   `sidekey_injector_audit_queue_full_total` and
//!   `sidekey_injector_audit_timeouts_total` (503: the audit output is
//!   stalled).
//! - What protects the process from its callers:
//!   `sidekey_injector_connections_open` (gauge),
//!   `sidekey_injector_connections_refused_total` (over `--max-connections`),
//!   `sidekey_injector_connections_evicted_total` (an unfinished handshake
//!   closed to make room at the cap),
//!   `sidekey_injector_tls_handshake_failures_total{reason}` (`error`: no
//!   or a bad client certificate among others; `timeout`),
//!   `sidekey_injector_body_budget_refusals_total` (503: over
//!   `--body-budget`), `sidekey_injector_body_bytes_reserved` (gauge),
//!   `sidekey_injector_idle_connections_closed_total`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Most distinct namespaces kept as label values per counter.
pub const MAX_NAMESPACES: usize = 2048;

/// The label value used once [`MAX_NAMESPACES`] is reached.
pub const OTHER_NAMESPACE: &str = "_other";

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How one request to `/mutate` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Allowed with a patch.
    Injected,
    /// Allowed without a patch (not opted in, excluded namespace, already
    /// injected, not a Pod, not CREATE).
    Skipped,
    /// Refused: a bad annotation (allowed=false, 403).
    Denied,
    /// The body is not a usable review (HTTP 4xx, or an invalid answer).
    Invalid,
    /// An internal failure (HTTP 500).
    Error,
}

impl ReviewOutcome {
    /// Every outcome, in the order metrics are written.
    pub const ALL: [ReviewOutcome; 5] = [
        ReviewOutcome::Injected,
        ReviewOutcome::Skipped,
        ReviewOutcome::Denied,
        ReviewOutcome::Invalid,
        ReviewOutcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Injected => "injected",
            ReviewOutcome::Skipped => "skipped",
            ReviewOutcome::Denied => "denied",
            ReviewOutcome::Invalid => "invalid",
            ReviewOutcome::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct ByNamespace(Mutex<HashMap<String, u64>>);

impl ByNamespace {
    fn inc(&self, namespace: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(namespace) {
            *n += 1;
        } else if map.len() < MAX_NAMESPACES {
            map.insert(namespace.to_owned(), 1);
        } else {
            *map.entry(OTHER_NAMESPACE.to_owned()).or_insert(0) += 1;
        }
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, u64)> = map.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort();
        v
    }

    fn get(&self, namespace: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(namespace).copied().unwrap_or(0)
    }
}

/// The injector's counters and histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    reviews: [AtomicU64; 5],
    latency: [Histogram; 5],
    injections: ByNamespace,
    denials: ByNamespace,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    audit_failures: AtomicU64,
    audit_queue_full: AtomicU64,
    audit_timeouts: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    connections_evicted: AtomicU64,
    handshake_errors: AtomicU64,
    handshake_timeouts: AtomicU64,
    budget_refusals: AtomicU64,
    body_reserved: AtomicU64,
    idle_closed: AtomicU64,
}

impl Metrics {
    /// Counts one request to `/mutate` and its duration.
    pub fn review(&self, outcome: ReviewOutcome, namespace: Option<&str>, took: Duration) {
        self.reviews[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.latency[outcome.index()].observe(took);
        match (outcome, namespace) {
            (ReviewOutcome::Injected, Some(ns)) => self.injections.inc(ns),
            (ReviewOutcome::Denied, Some(ns)) => self.denials.inc(ns),
            _ => {}
        }
    }

    /// Counts a certificate reload attempt.
    pub fn certificate_reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts audit records that could not be written.
    pub fn audit_failures(&self, records: u64) {
        self.audit_failures.fetch_add(records, Ordering::Relaxed);
    }

    /// Counts a review answered 503: the audit queue was full.
    pub fn audit_queue_full(&self) {
        self.audit_queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a review answered 503: its audit record was not written
    /// within the request timeout.
    pub fn audit_timed_out(&self) {
        self.audit_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was accepted (`true`) or has ended (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection closed at once: `--max-connections` reached.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed in its handshake to make room for a new one.
    pub fn connection_evicted(&self) {
        self.connections_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// `sidekey_injector_connections_evicted_total`.
    pub fn connections_evicted(&self) -> u64 {
        self.connections_evicted.load(Ordering::Relaxed)
    }

    /// Counts a failed TLS handshake (`timeout`: it took too long).
    pub fn handshake_failed(&self, timeout: bool) {
        let c = if timeout {
            &self.handshake_timeouts
        } else {
            &self.handshake_errors
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused (503) because its body did not fit the budget.
    pub fn body_budget_refused(&self) {
        self.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Body bytes reserved from the budget (`true`) or given back.
    pub fn body_reserved(&self, bytes: u64, reserved: bool) {
        if reserved {
            self.body_reserved.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.body_reserved.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// `sidekey_injector_body_bytes_reserved`.
    pub fn body_bytes_reserved(&self) -> u64 {
        self.body_reserved.load(Ordering::Relaxed)
    }

    /// Counts a connection closed for being idle.
    pub fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// `sidekey_injector_connections_open`.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// `sidekey_injector_connections_refused_total`.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused.load(Ordering::Relaxed)
    }

    /// `sidekey_injector_tls_handshake_failures_total`, both reasons.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_errors.load(Ordering::Relaxed)
            + self.handshake_timeouts.load(Ordering::Relaxed)
    }

    /// `sidekey_injector_body_budget_refusals_total`.
    pub fn body_budget_refusals(&self) -> u64 {
        self.budget_refusals.load(Ordering::Relaxed)
    }

    /// `sidekey_injector_idle_connections_closed_total`.
    pub fn idle_connections_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// `sidekey_injector_reviews_total{outcome}`.
    pub fn reviews(&self, outcome: ReviewOutcome) -> u64 {
        self.reviews[outcome.index()].load(Ordering::Relaxed)
    }

    /// `sidekey_injector_injections_total{namespace}`.
    pub fn injections(&self, namespace: &str) -> u64 {
        self.injections.get(namespace)
    }

    /// `sidekey_injector_denials_total{namespace}`.
    pub fn denials(&self, namespace: &str) -> u64 {
        self.denials.get(namespace)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP sidekey_injector_reviews_total Admission reviews answered, by outcome.\n",
        );
        out.push_str("# TYPE sidekey_injector_reviews_total counter\n");
        for o in ReviewOutcome::ALL {
            let _ = writeln!(
                out,
                "sidekey_injector_reviews_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.reviews(o)
            );
        }

        out.push_str("# HELP sidekey_injector_review_duration_seconds Time from a review's arrival to its answer.\n");
        out.push_str("# TYPE sidekey_injector_review_duration_seconds histogram\n");
        for o in ReviewOutcome::ALL {
            let h = &self.latency[o.index()];
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "sidekey_injector_review_duration_seconds_bucket{{outcome=\"{}\",le=\"{bound}\"}} {cumulative}",
                    o.as_str()
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "sidekey_injector_review_duration_seconds_bucket{{outcome=\"{}\",le=\"+Inf\"}} {count}",
                o.as_str()
            );
            let _ = writeln!(
                out,
                "sidekey_injector_review_duration_seconds_sum{{outcome=\"{}\"}} {sum}",
                o.as_str()
            );
            let _ = writeln!(
                out,
                "sidekey_injector_review_duration_seconds_count{{outcome=\"{}\"}} {count}",
                o.as_str()
            );
        }

        for (name, help, counter) in [
            (
                "sidekey_injector_injections_total",
                "Pods that received the agent, by namespace.",
                &self.injections,
            ),
            (
                "sidekey_injector_denials_total",
                "Pods refused for a bad annotation, by namespace.",
                &self.denials,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (ns, n) in counter.snapshot() {
                let _ = writeln!(out, "{name}{{namespace=\"{}\"}} {n}", escape_label(&ns));
            }
        }

        out.push_str("# HELP sidekey_injector_certificate_reloads_total Serving certificate reloads from disk, by result.\n");
        out.push_str("# TYPE sidekey_injector_certificate_reloads_total counter\n");
        let _ = writeln!(
            out,
            "sidekey_injector_certificate_reloads_total{{result=\"success\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sidekey_injector_certificate_reloads_total{{result=\"failure\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP sidekey_injector_audit_failures_total Audit records that could not be written.\n");
        out.push_str("# TYPE sidekey_injector_audit_failures_total counter\n");
        let _ = writeln!(
            out,
            "sidekey_injector_audit_failures_total {}",
            self.audit_failures.load(Ordering::Relaxed)
        );
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "sidekey_injector_connections_open",
                "gauge",
                "Connections open now (TLS handshakes included).",
                load(&self.connections_open),
            ),
            (
                "sidekey_injector_audit_queue_full_total",
                "counter",
                "Reviews answered 503 at once: the audit queue was full (the audit output is stalled or slow).",
                load(&self.audit_queue_full),
            ),
            (
                "sidekey_injector_audit_timeouts_total",
                "counter",
                "Reviews answered 503: their audit record was not written within the request timeout.",
                load(&self.audit_timeouts),
            ),
            (
                "sidekey_injector_connections_refused_total",
                "counter",
                "Connections closed at once: --max-connections reached.",
                load(&self.connections_refused),
            ),
            (
                "sidekey_injector_connections_evicted_total",
                "counter",
                "Connections still in their TLS handshake (or on the plain listener) closed to make room at the cap.",
                load(&self.connections_evicted),
            ),
            (
                "sidekey_injector_body_budget_refusals_total",
                "counter",
                "Requests answered 503: their body did not fit --body-budget.",
                load(&self.budget_refusals),
            ),
            (
                "sidekey_injector_body_bytes_reserved",
                "gauge",
                "Review body bytes reserved from --body-budget now.",
                load(&self.body_reserved),
            ),
            (
                "sidekey_injector_idle_connections_closed_total",
                "counter",
                "Connections closed after --idle-timeout without a request.",
                load(&self.idle_closed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out.push_str("# HELP sidekey_injector_tls_handshake_failures_total TLS handshakes that failed (a missing or untrusted client certificate among others) or timed out.\n");
        out.push_str("# TYPE sidekey_injector_tls_handshake_failures_total counter\n");
        let _ = writeln!(
            out,
            "sidekey_injector_tls_handshake_failures_total{{reason=\"error\"}} {}",
            load(&self.handshake_errors)
        );
        let _ = writeln!(
            out,
            "sidekey_injector_tls_handshake_failures_total{{reason=\"timeout\"}} {}",
            load(&self.handshake_timeouts)
        );
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Appends the registry lookup's metrics (`--registry-lookup`) to a
/// [`Metrics::render`] text.
pub fn render_registry(out: &mut String, stats: &sidekey_registry::Stats) {
    use std::fmt::Write as _;
    let counters = [
        (
            "sidekey_injector_image_lookups_total",
            "Image configs asked of the registry lookup (one per container without a command).",
            stats.lookups(),
        ),
        (
            "sidekey_injector_image_lookup_cache_hits_total",
            "Image lookups answered from the cache.",
            stats.cache_hits(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "sidekey_injector_image_lookup_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Image lookups that failed, by reason (refused: the registry rules; credentials: unusable pull secrets)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for r in sidekey_registry::FailureReason::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            r.as_str(),
            stats.failures(r)
        );
    }
    let name = "sidekey_injector_image_lookup_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to read one image config from its registry (cache misses)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let (buckets, sum, count) = stats.latency();
    for (le, n) in sidekey_registry::LATENCY_BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        m.review(
            ReviewOutcome::Injected,
            Some("team-a"),
            Duration::from_micros(300),
        );
        m.review(
            ReviewOutcome::Injected,
            Some("team-a"),
            Duration::from_millis(2),
        );
        m.review(
            ReviewOutcome::Denied,
            Some("b\"\n\\"),
            Duration::from_micros(50),
        );
        m.review(ReviewOutcome::Invalid, None, Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains("sidekey_injector_reviews_total{outcome=\"injected\"} 2\n"));
        assert!(text.contains("sidekey_injector_reviews_total{outcome=\"error\"} 0\n"));
        assert!(text.contains("sidekey_injector_injections_total{namespace=\"team-a\"} 2\n"));
        assert!(text.contains("sidekey_injector_denials_total{namespace=\"b\\\"\\n\\\\\"} 1\n"));
        assert!(text.contains(
            "sidekey_injector_review_duration_seconds_bucket{outcome=\"injected\",le=\"0.0005\"} 1\n"
        ));
        assert!(text.contains(
            "sidekey_injector_review_duration_seconds_bucket{outcome=\"injected\",le=\"0.0025\"} 2\n"
        ));
        // Longer than the last bound: only in +Inf.
        assert!(text.contains(
            "sidekey_injector_review_duration_seconds_bucket{outcome=\"invalid\",le=\"5\"} 0\n"
        ));
        assert!(text.contains(
            "sidekey_injector_review_duration_seconds_bucket{outcome=\"invalid\",le=\"+Inf\"} 1\n"
        ));
        assert!(text
            .contains("sidekey_injector_review_duration_seconds_count{outcome=\"invalid\"} 1\n"));
    }

    #[test]
    fn namespaces_are_capped() {
        let m = Metrics::default();
        for i in 0..MAX_NAMESPACES + 3 {
            m.review(
                ReviewOutcome::Injected,
                Some(&format!("ns-{i}")),
                Duration::ZERO,
            );
        }
        assert_eq!(m.injections(OTHER_NAMESPACE), 3);
        assert_eq!(m.injections("ns-0"), 1);
    }
}
