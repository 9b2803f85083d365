//! Scraping the servers' `GET /metrics` (Prometheus text), and /proc of the servers' processes
//! when they run on this machine (`--server-pid`), and comparing two samples.

use std::collections::BTreeMap;

/// One scrape of every server, each series summed over the servers.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub series: BTreeMap<String, f64>,
    pub ok: bool,
}

impl Sample {
    /// A series by its exact text (`name` or `name{label="x"}`); 0 when absent.
    pub fn get(&self, key: &str) -> f64 {
        self.series.get(key).copied().unwrap_or(0.0)
    }

    /// Every series of a labelled metric: label text -> value.
    pub fn labelled(&self, name: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{name}{{");
        self.series
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(&prefix).map(|labels| (labels.trim_end_matches('}').to_owned(), *value))
            })
            .collect()
    }
}

pub const RSS: &str = "process_resident_memory_bytes";
pub const CPU: &str = "process_cpu_seconds_total";
/// Not a Prometheus series: the summed Pss of the --server-pids, read from /proc.
pub const PSS: &str = "proc_pss_bytes";
pub const FDS: &str = "process_open_fds";
pub const ACTIVE: &str = "agenticai_ws_active_connections";
pub const DELIVERIES: &str = "agenticai_ws_deliveries_total";
pub const BATCH_SUM: &str = "agenticai_ws_sqs_batch_entries_sum";
pub const BATCH_COUNT: &str = "agenticai_ws_sqs_batch_entries_count";
pub const SLOW_CLOSED: &str = "agenticai_ws_slow_consumers_closed_total";
pub const CLOSED: &str = "agenticai_ws_connections_closed_total";

/// The servers' processes when they run on this machine (`--server-pid`): their CPU time is then
/// read from /proc at 10 ms resolution (the Prometheus process collector counts whole seconds).
pub static SERVER_PROCESSES: std::sync::OnceLock<ServerProcesses> = std::sync::OnceLock::new();

#[derive(Debug, Default)]
pub struct ServerProcesses {
    pub pids: Vec<u32>,
    /// Their memory ([`PSS`]) and open files ([`FDS`]) are read from /proc too: what a server
    /// without /metrics (Nchan) has, and what makes two servers' memory comparable.
    pub memory: bool,
}

/// The --server-pids, when there are any.
fn server_processes() -> Option<&'static ServerProcesses> {
    SERVER_PROCESSES.get().filter(|processes| !processes.pids.is_empty())
}

/// (utime, stime) of a process, in seconds (USER_HZ = 100 on Linux); `process` is a PID or "self".
pub fn proc_cpu(process: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / 100.0, stime / 100.0))
}

/// utime + stime of a process, in seconds.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    proc_cpu(&pid.to_string()).map(|(user, system)| user + system)
}

/// A process's proportional set size in bytes: its private pages, and each page it shares
/// divided among its sharers (a forked worker's pages shared with its master count half).
fn proc_pss_bytes(pid: u32) -> Option<f64> {
    pss_bytes(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// The `Pss:` line of a `smaps_rollup`, in bytes.
fn pss_bytes(smaps_rollup: &str) -> Option<f64> {
    let line = smaps_rollup.lines().find_map(|line| line.strip_prefix("Pss:"))?;
    let kib: f64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024.0)
}

/// A process's open files.
fn proc_open_fds(pid: u32) -> Option<f64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64)
}

/// CPU seconds of the whole machine (busy, all cores) and of this process and its waited-for
/// children, from /proc: on a shared 2-core machine, what else ran during a run shows here.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub busy: f64,
    pub loadtest: f64,
}

pub fn machine_cpu() -> MachineCpu {
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.to_owned();
            let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            Some((v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?) / 100.0)
        })
        .unwrap_or(0.0);
    let loadtest = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat[stat.rfind(')')? + 2..].to_owned();
            let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            // utime stime cutime cstime are fields 14-17 (indices 11-14 after the state field).
            Some(f.get(10..14)?.iter().sum::<f64>() / 100.0)
        })
        .unwrap_or(0.0);
    MachineCpu { busy, loadtest }
}

/// The machine's CPU over a run: busy, this load generator, the server(s), and everything else.
pub fn machine_json(before: &MachineCpu, after: &MachineCpu, server_cpu: f64, seconds: f64) -> serde_json::Value {
    let busy = after.busy - before.busy;
    let loadtest = after.loadtest - before.loadtest;
    serde_json::json!({
        "seconds": seconds,
        "busy_cpu_s": busy,
        "loadtest_cpu_s": loadtest,
        "server_cpu_s": server_cpu,
        "other_cpu_s": busy - loadtest - server_cpu,
    })
}

/// The machine line of a human report, from [`machine_json`]'s figures, to 10 ms.
pub fn machine_line(machine: &serde_json::Value) -> String {
    let seconds = |key: &str| machine[key].as_f64().unwrap_or(0.0);
    format!(
        "busy {:.2} s (load generator {:.2} s, server {}, other {:.2} s) over {:.1} s",
        seconds("busy_cpu_s"),
        seconds("loadtest_cpu_s"),
        cpu_text(seconds("server_cpu_s")),
        seconds("other_cpu_s"),
        seconds("seconds"),
    )
}

/// Server CPU seconds as a report shows them: to 10 ms when read from /proc (`--server-pid`),
/// else as the whole seconds Prometheus' process collector counts, said so.
pub fn cpu_text(seconds: f64) -> String {
    if server_processes().is_some() {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.0} s (whole seconds from /metrics; --server-pid reads it to 10 ms)")
    }
}

/// Scrapes every URL; a server that does not answer leaves `ok` false (the figures that need it
/// are then reported as unknown, the run goes on).
pub async fn scrape(client: &reqwest::Client, urls: &[String]) -> Sample {
    let mut sample = Sample { ok: true, ..Sample::default() };
    for url in urls {
        let text = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => response.text().await.ok(),
            _ => None,
        };
        let Some(text) = text else {
            sample.ok = false;
            continue;
        };
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            *sample.series.entry(key.to_owned()).or_default() += value;
        }
    }
    if let Some(processes) = server_processes() {
        let mut read = |series: &str, per_process: fn(u32) -> Option<f64>| {
            let mut total = 0.0;
            for &pid in &processes.pids {
                match per_process(pid) {
                    Some(value) => total += value,
                    None => sample.ok = false,
                }
            }
            sample.series.insert(series.to_owned(), total);
        };
        read(CPU, proc_cpu_seconds);
        if processes.memory {
            read(PSS, proc_pss_bytes);
            read(FDS, proc_open_fds);
        }
    }
    sample
}

/// `after - before` of one series.
pub fn delta(before: &Sample, after: &Sample, key: &str) -> f64 {
    after.get(key) - before.get(key)
}

/// Entries per SendMessageBatch call between two samples (None when there was no call).
pub fn entries_per_batch(before: &Sample, after: &Sample) -> Option<f64> {
    let calls = delta(before, after, BATCH_COUNT);
    (calls > 0.0).then(|| delta(before, after, BATCH_SUM) / calls)
}

/// Increase of each `connections_closed_total{code=...}` series.
pub fn closed_by_code(before: &Sample, after: &Sample) -> BTreeMap<String, u64> {
    let old = before.labelled(CLOSED);
    after
        .labelled(CLOSED)
        .into_iter()
        .filter_map(|(labels, value)| {
            let grown = value - old.get(&labels).copied().unwrap_or(0.0);
            (grown > 0.0).then(|| (labels.trim_start_matches("code=").trim_matches('"').to_owned(), grown as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_is_read_from_smaps_rollup_in_bytes() {
        let rollup = "55e7f1219000-7fff3500a000 ---p 00000000 00:00 0                          [rollup]\n\
                      Rss:                1696 kB\n\
                      Pss:                 252 kB\n\
                      Pss_Dirty:           112 kB\n";
        assert_eq!(pss_bytes(rollup), Some(252.0 * 1024.0));
        assert_eq!(pss_bytes("Rss: 1696 kB\n"), None);
    }

    #[test]
    fn this_process_has_a_pss_and_open_files() {
        let me = std::process::id();
        assert!(proc_pss_bytes(me).is_some_and(|bytes| bytes > 0.0));
        assert!(proc_open_fds(me).is_some_and(|fds| fds >= 3.0));
    }
}
