//! The figures of the status page and `GET /api/v1/stats`: the Prometheus metrics, sampled
//! once a second and kept for the last five minutes, so a page opened now draws its charts at
//! once and every rate is measured over the same second for every reader.
//!
//! [`StatsHistory::sample`] reads each figure from the metric's own handle in [`Metrics`]
//! ([`Sample::read`]), never by name, so renaming a metric cannot silently zero the page; a
//! labelled series that has not been created yet reads 0.
//! [`StatsHistory::report`] turns the newest two samples into the JSON answer (rates are their
//! difference over the time between them) and, when asked, the charts' series. The answer's
//! shape is documented in docs/protocol.md (HTTP API, `GET /api/v1/stats`).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus::{
    core::Collector,
    proto::{Metric, MetricType},
};
use serde_json::{json, Value};

use crate::{dispatcher::routing::AgentRole, metrics::Metrics};

/// How often the metrics are sampled: the resolution of every rate and chart.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: five minutes of charts.
pub(crate) const KEPT_SAMPLES: usize = 300;

/// The metrics at one instant: every counter and gauge the report (and the EMF lines,
/// [`crate::emf`]) use.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) unix_ms: i64,
    pub(crate) active: f64,
    pub(crate) authenticated: f64,
    pub(crate) opened: f64,
    pub(crate) closed: BTreeMap<String, f64>,
    pub(crate) projects: f64,
    pub(crate) subscriptions: f64,
    pub(crate) publications: BTreeMap<String, f64>,
    pub(crate) deliveries: f64,
    pub(crate) fanout_sum: f64,
    pub(crate) fanout_count: f64,
    pub(crate) forward_pending: f64,
    pub(crate) queues: BTreeMap<&'static str, QueueSample>,
    pub(crate) records_buffered: f64,
    pub(crate) records_written: f64,
    pub(crate) records_dropped: f64,
    pub(crate) record_retries: f64,
    pub(crate) redis_connected: f64,
    pub(crate) redis_reconnects: f64,
    pub(crate) auth_failures: BTreeMap<String, f64>,
    pub(crate) limit_refusals: BTreeMap<String, f64>,
    pub(crate) errors: BTreeMap<String, f64>,
}

/// One agent queue's forward path at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueSample {
    pub(crate) waiting: f64,
    pub(crate) in_flight: f64,
    pub(crate) sent: f64,
    pub(crate) failed: f64,
    pub(crate) retried: f64,
    /// SendMessageBatch calls (or spool writes) made so far.
    pub(crate) batches: f64,
}

impl QueueSample {
    /// Entries sent in batches, whatever their outcome.
    pub(crate) fn entries(&self) -> f64 {
        self.sent + self.failed + self.retried
    }
}

/// The series one labelled metric holds now, read from its own handle: no name is looked up, so
/// a renamed metric is read all the same.
struct Series {
    kind: MetricType,
    series: Vec<Metric>,
}

impl Series {
    fn of(handle: &impl Collector) -> Self {
        let mut kind = MetricType::UNTYPED;
        let mut series = Vec::new();
        for mut family in handle.collect() {
            kind = family.get_field_type();
            series.extend(family.take_metric());
        }
        Series { kind, series }
    }

    /// The series whose labels include every pair of `only`.
    fn matching<'a>(&'a self, only: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Metric> {
        self.series.iter().filter(move |metric| {
            only.iter().all(|(label, wanted)| {
                metric.get_label().iter().any(|pair| pair.name() == *label && pair.value() == *wanted)
            })
        })
    }

    /// The sum of a counter's or gauge's series whose labels include every pair of `only`.
    fn sum_where(&self, only: &[(&str, &str)]) -> f64 {
        self.matching(only)
            .map(|metric| match self.kind {
                MetricType::COUNTER => metric.get_counter().value(),
                MetricType::GAUGE => metric.get_gauge().value(),
                _ => 0.0,
            })
            .sum()
    }

    fn total(&self) -> f64 {
        self.sum_where(&[])
    }

    /// A counter's or gauge's series summed by one label's values.
    fn by_label(&self, label: &str) -> BTreeMap<String, f64> {
        let mut values = BTreeMap::new();
        for metric in &self.series {
            let Some(pair) = metric.get_label().iter().find(|pair| pair.name() == label) else { continue };
            values.entry(pair.value().to_owned()).or_insert_with(|| self.sum_where(&[(label, pair.value())]));
        }
        values
    }

    /// A histogram's (sum, count) over its series whose labels include every pair of `only`.
    fn histogram_where(&self, only: &[(&str, &str)]) -> (f64, f64) {
        self.matching(only).map(|metric| metric.get_histogram()).fold((0.0, 0.0), |(sum, count), histogram| {
            (sum + histogram.sample_sum(), count + histogram.sample_count() as f64)
        })
    }
}

impl Sample {
    pub(crate) fn read(metrics: &Metrics) -> Self {
        let (entries, held, batches) = (
            Series::of(&metrics.forward_entries),
            Series::of(&metrics.forward_queue_entries),
            Series::of(&metrics.sqs_batch_seconds),
        );
        let queues = AgentRole::ALL
            .iter()
            .map(|role| {
                let queue = role.name();
                let entries = |outcome| entries.sum_where(&[("queue", queue), ("outcome", outcome)]);
                let held = |state| held.sum_where(&[("queue", queue), ("state", state)]);
                let sample = QueueSample {
                    waiting: held("waiting"),
                    in_flight: held("in_flight"),
                    sent: entries("sent"),
                    failed: entries("failed"),
                    retried: entries("retried"),
                    batches: batches.histogram_where(&[("queue", queue)]).1,
                };
                (queue, sample)
            })
            .collect();
        let fanout = &metrics.publish_fanout;
        Sample {
            at: Instant::now(),
            unix_ms: chrono::Utc::now().timestamp_millis(),
            active: metrics.active_connections.get() as f64,
            authenticated: metrics.authenticated_connections.get() as f64,
            opened: metrics.connections_opened.get() as f64,
            closed: Series::of(metrics.closed_by_ending()).by_label("code"),
            projects: metrics.projects.get() as f64,
            subscriptions: metrics.subscriptions.get() as f64,
            publications: Series::of(&metrics.publications).by_label("source"),
            deliveries: metrics.deliveries.get() as f64,
            fanout_sum: fanout.get_sample_sum(),
            fanout_count: fanout.get_sample_count() as f64,
            forward_pending: metrics.forward_pending.get() as f64,
            queues,
            records_buffered: metrics.records_buffered.get() as f64,
            records_written: Series::of(&metrics.records_written).total(),
            records_dropped: metrics.records_dropped.get() as f64,
            record_retries: metrics.record_retries.get() as f64,
            redis_connected: metrics.redis_connected.get() as f64,
            redis_reconnects: metrics.redis_reconnects.get() as f64,
            auth_failures: Series::of(&metrics.auth_failures).by_label("reason"),
            limit_refusals: Series::of(&metrics.limit_refusals).by_label("limit"),
            errors: Series::of(metrics.errors_by_code()).by_label("code"),
        }
    }
}

/// What the report needs from outside the metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerState {
    /// `starting`, `ready` or `draining`.
    pub phase: &'static str,
    /// REDIS_URL is set.
    pub redis_configured: bool,
}

/// The last [`KEPT_SAMPLES`] samples of one server's metrics.
pub(crate) struct StatsHistory {
    metrics: Arc<Metrics>,
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
}

impl StatsHistory {
    /// Starts the history with one sample of `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        let first = Sample::read(&metrics);
        StatsHistory { metrics, started: Instant::now(), samples: Mutex::new(VecDeque::from([first])) }
    }

    /// Takes a sample, forgetting the oldest beyond [`KEPT_SAMPLES`].
    pub(crate) fn sample(&self) {
        let sample = Sample::read(&self.metrics);
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if samples.len() == KEPT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples every [`SAMPLE_INTERVAL`], until the server's runtime stops.
    pub(crate) async fn sample_forever(self: Arc<Self>) {
        // The first sample was taken at construction: the next one a whole interval later, so
        // no rate is measured over a sliver of time.
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_INTERVAL, SAMPLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.sample();
        }
    }

    /// The JSON answer: the newest figures, rates over the last interval, and the charts'
    /// series of the last `history_seconds` (at most the samples kept; 0: none).
    pub(crate) fn report(&self, state: ServerState, history_seconds: usize) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let newest = samples.back().cloned().unwrap_or_else(|| Sample::read(&self.metrics));
        let previous = samples.len().checked_sub(2).and_then(|index| samples.get(index)).unwrap_or(&newest);
        let mut report = figures(&newest, previous);
        let points: Vec<Value> = samples
            .iter()
            .zip(samples.iter().skip(1))
            .skip(samples.len().saturating_sub(history_seconds.min(KEPT_SAMPLES) + 1))
            .map(|(older, newer)| chart_point(newer, older))
            .collect();
        drop(samples);
        report["version"] = json!(env!("CARGO_PKG_VERSION"));
        report["uptime_seconds"] = json!(self.started.elapsed().as_secs());
        report["phase"] = json!(state.phase);
        report["draining"] = json!(state.phase == "draining");
        report["redis"]["configured"] = json!(state.redis_configured);
        if history_seconds > 0 {
            report["history"] = Value::Array(points);
        }
        report
    }
}

/// Per second, between two samples; 0 when they are the same instant.
fn rate(newer: f64, older: f64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    round2((newer - older).max(0.0) / seconds)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub(crate) fn sum(values: &BTreeMap<String, f64>) -> f64 {
    values.values().sum()
}

fn counts(values: &BTreeMap<String, f64>) -> Value {
    values.iter().map(|(label, value)| (label.clone(), json!(*value as u64))).collect::<serde_json::Map<_, _>>().into()
}

/// A mean over the interval, `sum` over `count`; null when nothing was counted.
fn mean(newer: (f64, f64), older: (f64, f64)) -> Value {
    let count = newer.1 - older.1;
    if count <= 0.0 {
        return Value::Null;
    }
    json!(round2((newer.0 - older.0) / count))
}

fn figures(newer: &Sample, older: &Sample) -> Value {
    let seconds = newer.at.saturating_duration_since(older.at).as_secs_f64();
    let per_second = |now: f64, then: f64| rate(now, then, seconds);
    let queues: serde_json::Map<String, Value> = newer
        .queues
        .iter()
        .map(|(queue, now)| {
            let then = older.queues.get(queue).copied().unwrap_or_default();
            let figures = json!({
                "waiting": now.waiting as u64,
                "in_flight": now.in_flight as u64,
                "entries_per_batch": mean((now.entries(), now.batches), (then.entries(), then.batches)),
                "confirmed_per_second": per_second(now.sent, then.sent),
                "failed_per_second": per_second(now.failed, then.failed),
                "confirmed_total": now.sent as u64,
                "failed_total": now.failed as u64,
                "retried_total": now.retried as u64,
            });
            ((*queue).to_owned(), figures)
        })
        .collect();
    json!({
        "sampled_at": chrono::DateTime::from_timestamp_millis(newer.unix_ms).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "interval_seconds": round2(seconds),
        "connections": {
            "active": newer.active as i64,
            "change_per_second": round2(if seconds > 0.0 { (newer.active - older.active) / seconds } else { 0.0 }),
            "authenticated": newer.authenticated as i64,
            "opened_per_second": per_second(newer.opened, older.opened),
            "closed_per_second": per_second(sum(&newer.closed), sum(&older.closed)),
            "opened_total": newer.opened as u64,
            "closed_total": counts(&newer.closed),
        },
        "projects": newer.projects as i64,
        "subscriptions": newer.subscriptions as i64,
        "publications": {
            "per_second": per_second(sum(&newer.publications), sum(&older.publications)),
            "total": counts(&newer.publications),
            "mean_fanout": mean((newer.fanout_sum, newer.fanout_count), (older.fanout_sum, older.fanout_count)),
        },
        "deliveries": {
            "per_second": per_second(newer.deliveries, older.deliveries),
            "total": newer.deliveries as u64,
        },
        "forwards": { "pending": newer.forward_pending as i64, "queues": queues },
        "persistence": {
            "buffered": newer.records_buffered as i64,
            "written_per_second": per_second(newer.records_written, older.records_written),
            "dropped_total": newer.records_dropped as u64,
            "retries_total": newer.record_retries as u64,
        },
        "redis": {
            "connected": newer.redis_connected > 0.0,
            "reconnects_total": newer.redis_reconnects as u64,
        },
        "authentication": {
            "failures_per_second": per_second(sum(&newer.auth_failures), sum(&older.auth_failures)),
            "failures_total": counts(&newer.auth_failures),
        },
        "limits": {
            "refusals_per_second": per_second(sum(&newer.limit_refusals), sum(&older.limit_refusals)),
            "refusals_total": counts(&newer.limit_refusals),
        },
        "errors_total": counts(&newer.errors),
    })
}

/// One point of the page's charts: the figures that change second by second.
fn chart_point(newer: &Sample, older: &Sample) -> Value {
    let seconds = newer.at.saturating_duration_since(older.at).as_secs_f64();
    let per_second = |now: f64, then: f64| rate(now, then, seconds);
    let total = |sample: &Sample, pick: fn(&QueueSample) -> f64| sample.queues.values().map(pick).sum::<f64>();
    json!({
        "t": newer.unix_ms,
        "active": newer.active as i64,
        "opened_per_second": per_second(newer.opened, older.opened),
        "closed_per_second": per_second(sum(&newer.closed), sum(&older.closed)),
        "deliveries_per_second": per_second(newer.deliveries, older.deliveries),
        "publications_per_second": per_second(sum(&newer.publications), sum(&older.publications)),
        "confirmed_per_second": per_second(total(newer, |queue| queue.sent), total(older, |queue| queue.sent)),
        "failed_per_second": per_second(total(newer, |queue| queue.failed), total(older, |queue| queue.failed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: ServerState = ServerState { phase: "ready", redis_configured: false };

    #[test]
    fn rates_are_the_difference_over_the_interval() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let history = StatsHistory::new(metrics.clone());
        metrics.deliveries.inc_by(30);
        metrics.forward_entries.with_label_values(&["dev", "sent"]).inc_by(4);
        metrics.sqs_batch_seconds.with_label_values(&["dev"]).observe(0.01);
        metrics.sqs_batch_seconds.with_label_values(&["dev"]).observe(0.01);
        metrics.active_connections.set(7);
        std::thread::sleep(Duration::from_millis(100));
        history.sample();
        let report = history.report(READY, 0);
        let seconds = report["interval_seconds"].as_f64().unwrap();
        assert!(seconds >= 0.1, "{seconds}");
        let deliveries = report["deliveries"]["per_second"].as_f64().unwrap();
        // interval_seconds is rounded to hundredths: allow for it.
        assert!((deliveries * seconds - 30.0).abs() < 2.0, "{deliveries}/s over {seconds} s");
        assert_eq!(report["deliveries"]["total"], 30);
        assert_eq!(report["connections"]["active"], 7);
        let dev = &report["forwards"]["queues"]["dev"];
        assert_eq!(dev["confirmed_total"], 4);
        assert_eq!(dev["entries_per_batch"], 2.0);
        assert_eq!(report["forwards"]["queues"]["pm"]["entries_per_batch"], Value::Null);
        assert!(report.get("history").is_none());
    }

    #[test]
    fn history_is_bounded_and_labels_are_read_by_name() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let history = StatsHistory::new(metrics.clone());
        metrics.connections_closed("client_closed");
        for _ in 0..KEPT_SAMPLES + 5 {
            history.sample();
        }
        let report = history.report(READY, 10_000);
        assert_eq!(report["history"].as_array().unwrap().len(), KEPT_SAMPLES - 1);
        assert_eq!(history.report(READY, 3)["history"].as_array().unwrap().len(), 3);
        assert_eq!(report["connections"]["closed_total"]["client_closed"], 1);
        // Every limit reads from the start, at zero.
        let refusals = report["limits"]["refusals_total"].as_object().unwrap();
        assert_eq!(refusals.len(), crate::metrics::LIMITS.len());
        assert!(refusals.values().all(|count| count == 0), "{refusals:?}");
        assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    }

    /// Every figure the page shows comes from its own metric: each is given a value no other
    /// has, so a figure no longer read (or read from another metric) fails here, by name.
    #[test]
    fn every_figure_reads_its_own_metric() {
        let metrics = Metrics::new().unwrap();
        metrics.active_connections.set(1);
        metrics.authenticated_connections.set(2);
        metrics.connections_opened.inc_by(3);
        metrics.connections_closed("client_closed");
        metrics.projects.set(5);
        metrics.subscriptions.set(6);
        metrics.publications.with_label_values(&["http"]).inc_by(7);
        metrics.deliveries.inc_by(8);
        metrics.publish_fanout.observe(9.0);
        metrics.forward_pending.set(10);
        for (index, queue) in AgentRole::ALL.iter().map(|role| role.name()).enumerate() {
            let base = 100 * (index as u64 + 1);
            metrics.forward_queue_entries.with_label_values(&[queue, "waiting"]).set(base as i64 + 1);
            metrics.forward_queue_entries.with_label_values(&[queue, "in_flight"]).set(base as i64 + 2);
            metrics.forward_entries.with_label_values(&[queue, "sent"]).inc_by(base + 3);
            metrics.forward_entries.with_label_values(&[queue, "failed"]).inc_by(base + 4);
            metrics.forward_entries.with_label_values(&[queue, "retried"]).inc_by(base + 5);
            for _ in 0..index + 1 {
                metrics.sqs_batch_seconds.with_label_values(&[queue]).observe(0.01);
            }
        }
        metrics.records_buffered.set(11);
        metrics.records_written.with_label_values(&["audit"]).inc_by(12);
        metrics.records_dropped.inc_by(13);
        metrics.record_retries.inc_by(14);
        metrics.redis_connected.set(1);
        metrics.redis_reconnects.inc_by(15);
        metrics.auth_failures.with_label_values(&["expired"]).inc_by(16);
        metrics.limit_refused("rate");
        metrics.error_sent(crate::protocol::ErrorCode::Busy);

        // Named field by field, so a figure added to the sample must be added here too.
        let Sample {
            at: _,
            unix_ms: _,
            active,
            authenticated,
            opened,
            closed,
            projects,
            subscriptions,
            publications,
            deliveries,
            fanout_sum,
            fanout_count,
            forward_pending,
            queues,
            records_buffered,
            records_written,
            records_dropped,
            record_retries,
            redis_connected,
            redis_reconnects,
            auth_failures,
            limit_refusals,
            errors,
        } = Sample::read(&metrics);
        let scalars = [
            ("active", active, 1.0),
            ("authenticated", authenticated, 2.0),
            ("opened", opened, 3.0),
            ("projects", projects, 5.0),
            ("subscriptions", subscriptions, 6.0),
            ("deliveries", deliveries, 8.0),
            ("fanout_sum", fanout_sum, 9.0),
            ("fanout_count", fanout_count, 1.0),
            ("forward_pending", forward_pending, 10.0),
            ("records_buffered", records_buffered, 11.0),
            ("records_written", records_written, 12.0),
            ("records_dropped", records_dropped, 13.0),
            ("record_retries", record_retries, 14.0),
            ("redis_connected", redis_connected, 1.0),
            ("redis_reconnects", redis_reconnects, 15.0),
        ];
        for (figure, read, expected) in scalars {
            assert_eq!(read, expected, "{figure}");
        }
        let labelled = [
            ("closed", &closed, "client_closed", 1.0),
            ("publications", &publications, "http", 7.0),
            ("auth_failures", &auth_failures, "expired", 16.0),
            ("limit_refusals", &limit_refusals, "rate", 1.0),
            ("errors", &errors, crate::protocol::ErrorCode::Busy.as_str(), 1.0),
        ];
        for (figure, read, label, expected) in labelled {
            assert_eq!(read.get(label), Some(&expected), "{figure}: {read:?}");
        }
        assert_eq!(queues.len(), AgentRole::ALL.len());
        for (index, queue) in AgentRole::ALL.iter().map(|role| role.name()).enumerate() {
            let base = 100.0 * (index as f64 + 1.0);
            let read = queues[queue];
            let figures = [
                ("waiting", read.waiting, base + 1.0),
                ("in_flight", read.in_flight, base + 2.0),
                ("sent", read.sent, base + 3.0),
                ("failed", read.failed, base + 4.0),
                ("retried", read.retried, base + 5.0),
                ("batches", read.batches, index as f64 + 1.0),
            ];
            for (figure, read, expected) in figures {
                assert_eq!(read, expected, "{queue} {figure}");
            }
        }
    }
}
