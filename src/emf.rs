//! CloudWatch Embedded Metric Format: when EMF_INTERVAL_SECS > 0, one JSON line on stdout per
//! interval, which the awslogs driver ships and CloudWatch turns into metrics. Autoscaling
//! tracks the per-task average of `ActiveConnections` (the ALB has no per-task connection
//! metric).

use std::{sync::Arc, time::Duration};

use crate::metrics::Metrics;

pub const NAMESPACE: &str = "AgenticAI/WebSocket";

/// Prints an EMF line every `interval`, forever.
pub async fn emit_every(interval: Duration, service_name: String, metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(interval);
    let mut previous = Totals::read(&metrics);
    loop {
        ticker.tick().await;
        let now = Totals::read(&metrics);
        println!("{}", line(&service_name, metrics.active_connections.get(), &now.since(&previous)));
        previous = now;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    forwarded: u64,
    delivered: u64,
}

impl Totals {
    fn read(metrics: &Metrics) -> Self {
        let forwarded = crate::dispatcher::routing::AgentRole::ALL
            .iter()
            .map(|role| metrics.forward_entries.with_label_values(&[role.name(), "sent"]).get())
            .sum();
        Totals { forwarded, delivered: metrics.deliveries.get() }
    }

    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            delivered: self.delivered.saturating_sub(earlier.delivered),
        }
    }
}

fn line(service_name: &str, active_connections: i64, interval: &Totals) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["ServiceName"]],
                "Metrics": [
                    {"Name": "ActiveConnections", "Unit": "Count"},
                    {"Name": "MessagesForwarded", "Unit": "Count"},
                    {"Name": "PublicationsDelivered", "Unit": "Count"}
                ]
            }]
        },
        "ServiceName": service_name,
        "ActiveConnections": active_connections,
        "MessagesForwarded": interval.forwarded,
        "PublicationsDelivered": interval.delivered,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_valid_emf() {
        let text = line("svc", 12, &Totals { forwarded: 3, delivered: 40 });
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(value["ServiceName"], "svc");
        assert_eq!(value["ActiveConnections"], 12);
        assert_eq!(value["MessagesForwarded"], 3);
        assert_eq!(value["PublicationsDelivered"], 40);
        for metric in value["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(value.get(name).is_some(), "{name} has no value");
        }
    }

    #[test]
    fn totals_are_per_interval() {
        let earlier = Totals { forwarded: 5, delivered: 10 };
        let now = Totals { forwarded: 8, delivered: 10 };
        assert_eq!(now.since(&earlier), Totals { forwarded: 3, delivered: 0 });
    }
}
