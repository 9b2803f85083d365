//! What every scenario's result is made of, in one place: the measured window (the servers'
//! `/metrics` and the machine's CPU at its start and end), the figures as a summary writes them,
//! and the printing of a result (human summary, JSON) with its exit status.
//!
//! A scenario gathers its figures into a plain struct, and a pure function of that struct builds
//! its [`Report`]: the JSON field names and the summary lines are what scripts/bench/benchmarks.sh and
//! docs/benchmarks.md read, so they are built (and unit-tested) apart from the sockets.

use std::{process::ExitCode, time::Instant};

use crate::scrape::{self, MachineCpu, Sample};

/// The start of a measured phase: the servers' metrics and the machine's CPU counters.
pub struct Window {
    before: Sample,
    cpu_before: MachineCpu,
    opened: Instant,
}

impl Window {
    pub async fn open(http: &reqwest::Client, metrics_urls: &[String]) -> Window {
        let before = scrape::scrape(http, metrics_urls).await;
        Window { before, cpu_before: scrape::machine_cpu(), opened: Instant::now() }
    }

    /// Scrapes again: the window's differences, and the machine's CPU split over its duration.
    pub async fn close(self, http: &reqwest::Client, metrics_urls: &[String]) -> Measured {
        let after = scrape::scrape(http, metrics_urls).await;
        let machine = scrape::machine_json(
            &self.cpu_before,
            &scrape::machine_cpu(),
            scrape::delta(&self.before, &after, scrape::CPU),
            self.opened.elapsed().as_secs_f64(),
        );
        Measured { before: self.before, after, machine }
    }
}

/// A closed [`Window`].
pub struct Measured {
    pub before: Sample,
    pub after: Sample,
    /// [`scrape::machine_json`] over the window.
    pub machine: serde_json::Value,
}

impl Measured {
    /// How much a server series grew over the window.
    pub fn delta(&self, key: &str) -> f64 {
        scrape::delta(&self.before, &self.after, key)
    }

    /// Server CPU seconds spent in the window.
    pub fn server_cpu(&self) -> f64 {
        self.delta(scrape::CPU)
    }

    /// Both scrapes reached every server (else the server figures are incomplete).
    pub fn metrics_ok(&self) -> bool {
        self.before.ok && self.after.ok
    }

    /// The last line of every summary.
    pub fn machine_line(&self) -> String {
        format!("machine CPU over the run: {}", scrape::machine_line(&self.machine))
    }
}

/// A scenario's result: the JSON document, the human summary, and whether the run passed.
pub struct Report {
    pub ok: bool,
    pub value: serde_json::Value,
    pub human: String,
}

impl Report {
    pub fn print(&self, json: bool) -> ExitCode {
        finish(json, &self.human, &self.value, self.ok)
    }
}

/// Prints a result and picks the exit status: the JSON on stdout with `--json` (the summary then
/// on stderr), else the summary on stdout; 1 when the run failed.
pub fn finish(json: bool, human: &str, value: &serde_json::Value, ok: bool) -> ExitCode {
    if json {
        eprintln!("{human}");
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        println!("{human}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("loadtest: FAILED (see the failures above)");
        ExitCode::from(1)
    }
}

/// `count / seconds`, 0 over an empty interval.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// A figure that may be unknown (no metrics, nothing to divide by), as a summary writes it.
pub fn or_unknown<T>(figure: Option<T>, show: impl FnOnce(T) -> String) -> String {
    figure.map_or_else(|| "unknown".to_owned(), show)
}

/// Bytes in MiB.
pub fn mib(bytes: f64) -> f64 {
    bytes / 1_048_576.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A [`Measured`] for the scenarios' report tests: the servers' series before and after.
    pub(crate) fn measured_for_test(before: &[(&str, f64)], after: &[(&str, f64)]) -> Measured {
        let sample = |series: &[(&str, f64)]| Sample {
            series: series.iter().map(|&(key, value)| (key.to_owned(), value)).collect(),
            ok: true,
        };
        Measured {
            before: sample(before),
            after: sample(after),
            machine: scrape::machine_json(&MachineCpu::default(), &MachineCpu::default(), 0.0, 1.0),
        }
    }

    #[test]
    fn per_second_is_zero_over_an_empty_interval() {
        assert_eq!(per_second(1500, 2.0), 750.0);
        assert_eq!(per_second(1500, 0.0), 0.0);
    }

    #[test]
    fn unknown_figures_say_so() {
        assert_eq!(or_unknown(Some(4.5), |us| format!("{us:.3} us")), "4.500 us");
        assert_eq!(or_unknown(None::<f64>, |us| format!("{us:.3} us")), "unknown");
    }

    #[test]
    fn the_machine_line_names_each_share() {
        let before = MachineCpu { busy: 10.0, loadtest: 1.0 };
        let after = MachineCpu { busy: 15.0, loadtest: 3.0 };
        let measured = Measured {
            before: Sample::default(),
            after: Sample::default(),
            machine: scrape::machine_json(&before, &after, 2.5, 4.0),
        };
        let line = measured.machine_line();
        assert!(line.starts_with("machine CPU over the run: busy 5.00 s (load generator 2.00 s, server "), "{line}");
        assert!(line.ends_with(", other 0.50 s) over 4.0 s"), "{line}");
        assert_eq!(measured.machine["other_cpu_s"], 0.5);
    }
}
