//! Latency histograms (HDR, microseconds), counters by cause, and their JSON forms.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency in microseconds, 1 us .. 10 min, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Percentiles {
        count: histogram.len(),
        mean_ms: histogram.mean() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

impl Percentiles {
    pub fn line(&self) -> String {
        format!(
            "n={} p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            self.count, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// A histogram as (value, count) pairs, to pass between processes.
pub fn to_pairs(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

pub fn add_pairs(histogram: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = histogram.record_n(value.max(1), count);
    }
}

/// Counts by cause.
pub type Causes = BTreeMap<String, u64>;

pub fn bump(causes: &mut Causes, cause: &str, by: u64) {
    *causes.entry(cause.to_owned()).or_default() += by;
}

pub fn merge(into: &mut Causes, from: &Causes) {
    for (cause, count) in from {
        bump(into, cause, *count);
    }
}

pub fn causes_line(causes: &Causes) -> String {
    if causes.is_empty() {
        return "none".into();
    }
    causes.iter().map(|(cause, count)| format!("{cause}={count}")).collect::<Vec<_>>().join(" ")
}

/// Nanoseconds since the Unix epoch (the clock publishers and subscribers share).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A growable bitset of sequence numbers: what was seen, and how often twice.
#[derive(Clone, Debug, Default)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Marks `seq`; false when it was already marked (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            // Bounded: sequence numbers come from our own publishers, capped by --messages.
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let fresh = self.words[word] & mask == 0;
        self.words[word] |= mask;
        fresh
    }

    /// How many of `self`'s members `other` lacks.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }

    /// How many of `self`'s members are not in `expected` (received but never confirmed).
    pub fn extra_over(&self, expected: &SeqSet) -> u64 {
        self.missing_from(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut histogram = histogram();
        for micros in 1..=1000 {
            record(&mut histogram, micros * 1000);
        }
        let p = percentiles(&histogram);
        assert_eq!(p.count, 1000);
        // 3 significant figures: within 0.1 % of the exact value.
        assert!((p.p50_ms - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() <= 1.0, "{p:?}");
        assert!(p.line().starts_with("n=1000 p50=5"), "{}", p.line());
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let p = percentiles(&histogram());
        assert_eq!((p.count, p.p99_ms, p.max_ms), (0, 0.0, 0.0));
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut sent = histogram();
        for micros in [3, 3, 150, 20_000] {
            record(&mut sent, micros);
        }
        let mut received = histogram();
        add_pairs(&mut received, &to_pairs(&sent));
        assert_eq!(received.len(), 4);
        assert_eq!(received.max(), sent.max());
        assert_eq!(received.value_at_quantile(0.5), sent.value_at_quantile(0.5));
    }

    #[test]
    fn seq_sets_tell_duplicates_losses_and_extras() {
        let (mut confirmed, mut seen) = (SeqSet::default(), SeqSet::default());
        for seq in [0, 1, 2, 200] {
            confirmed.insert(seq);
        }
        assert!(seen.insert(1));
        assert!(!seen.insert(1), "a second 1 is a duplicate");
        seen.insert(200);
        seen.insert(7);
        assert_eq!(confirmed.missing_from(&seen), 2, "0 and 2 never arrived");
        assert_eq!(seen.extra_over(&confirmed), 1, "7 was never confirmed");
    }

    #[test]
    fn causes_are_counted_and_listed() {
        let mut causes = Causes::new();
        assert_eq!(causes_line(&causes), "none");
        bump(&mut causes, "http_503", 2);
        let mut more = Causes::new();
        bump(&mut more, "http_503", 1);
        bump(&mut more, "connect_refused", 1);
        merge(&mut causes, &more);
        assert_eq!(causes_line(&causes), "connect_refused=1 http_503=3");
    }
}
