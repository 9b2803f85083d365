//! CloudWatch Embedded Metric Format: when EMF_INTERVAL_SECS > 0, JSON lines on stdout every
//! interval, which the awslogs driver ships and CloudWatch turns into metrics (namespace
//! [`NAMESPACE`]). Autoscaling tracks the per-task average of `ActiveConnections` (the ALB has
//! no per-task connection metric); the service stack's dashboard and alarms read the rest.
//!
//! Each interval prints one line for the service (dimension `ServiceName`) and one per agent
//! queue (dimensions `ServiceName`, `Queue`; `ForwardsFailed` also rolled up to `ServiceName`
//! alone, for the forward-failure alarm). Counts are per interval; gauges are the value at the
//! end of it. The figures come from the same registry reading as the status page
//! ([`crate::stats`]).

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    stats::{sum, Sample},
};

pub(crate) const NAMESPACE: &str = "AgenticAI/WebSocket";

/// Prints the EMF lines: every interval, and what is left of the last one at shutdown (the
/// drain's final forwards and closes would otherwise never reach CloudWatch).
pub(crate) struct EmfEmitter {
    service_name: String,
    metrics: Arc<Metrics>,
    /// The reading the next lines count from.
    previous: Sample,
}

impl EmfEmitter {
    pub(crate) fn new(service_name: String, metrics: Arc<Metrics>) -> Self {
        let previous = Sample::read(&metrics);
        EmfEmitter { service_name, metrics, previous }
    }

    /// Prints the lines of the time since the last print.
    fn emit(&mut self) {
        let now = Sample::read(&self.metrics);
        for line in lines(&self.service_name, &now, &self.previous) {
            println!("{line}");
        }
        self.previous = now;
    }

    /// Prints every `interval`, and once more when `stop` fires: what was counted since the
    /// last interval (the drain's final figures) is not lost with the task.
    pub(crate) async fn emit_until_stopped(mut self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.emit(),
                () = stop.cancelled() => {
                    self.emit();
                    return;
                }
            }
        }
    }
}

fn directive(dimensions: Value, metrics: &[(&str, &str)]) -> Value {
    let metrics: Vec<Value> = metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect();
    json!({"Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": metrics})
}

/// The interval's lines: the service's, then one per queue.
fn lines(service_name: &str, now: &Sample, earlier: &Sample) -> Vec<String> {
    let timestamp = chrono::Utc::now().timestamp_millis();
    let counted = |newer: f64, older: f64| (newer - older).max(0.0) as u64;
    let service = json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [directive(json!([["ServiceName"]]), &[
                ("ActiveConnections", "Count"),
                ("ConnectionsOpened", "Count"),
                ("ConnectionsClosed", "Count"),
                ("MessagesForwarded", "Count"),
                ("PublicationsDelivered", "Count"),
                ("RedisConnected", "Count"),
                ("RedisReconnects", "Count"),
            ])]
        },
        "ServiceName": service_name,
        "ActiveConnections": now.active as i64,
        "ConnectionsOpened": counted(now.opened, earlier.opened),
        "ConnectionsClosed": counted(sum(&now.closed), sum(&earlier.closed)),
        "MessagesForwarded": counted(
            now.queues.values().map(|queue| queue.sent).sum(),
            earlier.queues.values().map(|queue| queue.sent).sum(),
        ),
        "PublicationsDelivered": counted(now.deliveries, earlier.deliveries),
        "RedisConnected": now.redis_connected as i64,
        "RedisReconnects": counted(now.redis_reconnects, earlier.redis_reconnects),
    });
    let queues = now.queues.iter().map(|(queue, newer)| {
        let older = earlier.queues.get(queue).copied().unwrap_or_default();
        let batches = newer.batches - older.batches;
        let mut per_queue = vec![("ForwardsConfirmed", "Count"), ("ForwardsFailed", "Count")];
        let mut line = json!({
            "ServiceName": service_name,
            "Queue": queue,
            "ForwardsConfirmed": counted(newer.sent, older.sent),
            "ForwardsFailed": counted(newer.failed, older.failed),
        });
        // No batch in the interval: no datapoint, rather than a misleading zero.
        if batches > 0.0 {
            per_queue.push(("EntriesPerBatch", "Count"));
            line["EntriesPerBatch"] = json!(((newer.entries() - older.entries()) / batches * 100.0).round() / 100.0);
        }
        line["_aws"] = json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [
                directive(json!([["ServiceName", "Queue"]]), &per_queue),
                directive(json!([["ServiceName"]]), &[("ForwardsFailed", "Count")]),
            ]
        });
        line
    });
    std::iter::once(service).chain(queues).map(|line| line.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("an EMF line is JSON")
    }

    /// Every metric a directive declares has a value in the line, and every dimension too.
    fn assert_valid_emf(value: &Value) {
        for directive in value["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
            assert_eq!(directive["Namespace"], NAMESPACE);
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(value[name].is_number(), "{name} has no value in {value}");
            }
            for set in directive["Dimensions"].as_array().unwrap() {
                for dimension in set.as_array().unwrap() {
                    assert!(value[dimension.as_str().unwrap()].is_string(), "{dimension} in {value}");
                }
            }
        }
    }

    #[test]
    fn lines_are_valid_emf_with_counts_per_interval() {
        let metrics = Metrics::new().unwrap();
        metrics.deliveries.inc_by(10);
        let earlier = Sample::read(&metrics);
        metrics.active_connections.set(12);
        metrics.connections_opened.inc_by(3);
        metrics.connections_closed("client_closed");
        metrics.deliveries.inc_by(40);
        metrics.forward_entries.with_label_values(&["dev", "sent"]).inc_by(6);
        metrics.forward_entries.with_label_values(&["qa", "failed"]).inc();
        metrics.sqs_batch_seconds.with_label_values(&["dev"]).observe(0.01);
        metrics.sqs_batch_seconds.with_label_values(&["dev"]).observe(0.01);
        let now = Sample::read(&metrics);

        let lines: Vec<Value> = lines("svc", &now, &earlier).iter().map(|line| parse(line)).collect();
        assert_eq!(lines.len(), 5, "the service and four queues");
        lines.iter().for_each(assert_valid_emf);
        let service = &lines[0];
        assert_eq!(service["ServiceName"], "svc");
        assert_eq!(service["ActiveConnections"], 12);
        assert_eq!(service["ConnectionsOpened"], 3);
        assert_eq!(service["ConnectionsClosed"], 1);
        assert_eq!(service["MessagesForwarded"], 6);
        assert_eq!(service["PublicationsDelivered"], 40);
        assert_eq!(service["RedisConnected"], 0);
        let queue = |name: &str| lines.iter().find(|line| line["Queue"] == name).expect("a line per queue");
        assert_eq!(queue("dev")["ForwardsConfirmed"], 6);
        assert_eq!(queue("dev")["EntriesPerBatch"], 3.0);
        assert_eq!(queue("qa")["ForwardsFailed"], 1);
        assert!(queue("pm").get("EntriesPerBatch").is_none(), "no batch, no datapoint");
    }
}
