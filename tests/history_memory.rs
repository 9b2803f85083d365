//! The memory the history costs the server, measured from outside as the server process's peak
//! resident memory (VmHWM in /proc/PID/status): 300 publications of 250 KiB to one project (75
//! MB published), then four clients reading its history at once, must not grow the server by
//! 40 MiB. The history keeps HISTORY_MAX_BYTES (8 MiB) of the project, and each history answer
//! carries HISTORY_PAGE_BYTES (1 MiB) at most; before those bounds, the history kept all 75 MB
//! and each read answered all of it at once.
//!
//! It runs this build's server, or the binary `HISTORY_MEMORY_BIN` names (the release build, for
//! docs/benchmarks.md):
//! `HISTORY_MEMORY_BIN=target/release/agenticai-websocket cargo test --test history_memory -- --nocapture`.

pub mod common;

use std::time::Duration;

use common::ChildServer;
use futures_util::future::join_all;
use serde_json::{json, Value};

/// The growth the workload may cost, peak included (the bound).
const MAX_GROWTH_MIB: u64 = 40;

const PUBLICATIONS: u64 = 300;
const PUBLICATION_BYTES: usize = 250 * 1024;
const READERS: usize = 4;

#[tokio::test]
async fn a_history_of_large_publications_and_concurrent_reads_stay_within_bounds() {
    let server = match std::env::var("HISTORY_MEMORY_BIN") {
        Ok(binary) => {
            ChildServer::spawn_binary(&binary, &[], std::process::Stdio::null(), std::process::Stdio::inherit()).await
        }
        Err(_) => ChildServer::spawn(&[]).await,
    };
    let pid = server.child.id();
    // The first publication and read, so the allocator and the code paths are warm.
    server.publish(json!({"project_id": "warm-up", "data": "x"})).await;
    common::get_json(server.http_url("/api/v1/projects/warm-up/history")).await;
    let before = settled_kib(pid, "VmRSS:").await;

    let http = reqwest::Client::new();
    let pad = "x".repeat(PUBLICATION_BYTES);
    for n in 1..=PUBLICATIONS {
        let body = json!({"project_id": "heavy", "data": {"n": n, "pad": pad}});
        let response = http.post(server.http_url("/api/v1/publish")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // What the issue measured: `?limit=1000` from the start, four at once.
    let from_the_start = (0..READERS).map(|_| read_history(&http, &server, 0));
    let answers = join_all(from_the_start).await;
    // And what a client that can resume reads: everything still kept, following the cursor.
    let top = answers[0].0;
    let kept = (0..READERS).map(|_| read_history(&http, &server, top - 30));
    for (_, publications, bytes) in join_all(kept).await {
        assert_eq!(publications, 30, "the last 30 publications are kept and read");
        assert!(bytes > 30 * PUBLICATION_BYTES, "{bytes} bytes read");
    }
    let peak = settled_kib(pid, "VmHWM:").await;
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "server resident memory: {} MiB before, peak {} MiB after {PUBLICATIONS} publications of {} KiB and \
         {READERS}+{READERS} concurrent history reads: +{growth_mib} MiB",
        before / 1024,
        peak / 1024,
        PUBLICATION_BYTES / 1024,
    );
    assert!(growth_mib < MAX_GROWTH_MIB, "the server grew by {growth_mib} MiB (bound {MAX_GROWTH_MIB} MiB)");
}

/// Reads a project's history after `since`, following `next_since`: the project's top offset,
/// how many publications were listed, and how many bytes the answers had.
async fn read_history(http: &reqwest::Client, server: &ChildServer, since: u64) -> (u64, usize, usize) {
    let (mut since, mut publications, mut bytes) = (since, 0, 0);
    loop {
        let url = server.http_url(&format!("/api/v1/projects/heavy/history?since={since}&limit=1000"));
        let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
        bytes += body.len();
        let page: Value = serde_json::from_slice(&body).unwrap();
        publications += page["publications"].as_array().map_or(0, Vec::len);
        match page["next_since"].as_u64() {
            Some(next) => since = next,
            None => return (page["offset"].as_u64().unwrap(), publications, bytes),
        }
    }
}

/// A figure of the server's /proc status in KiB (`VmRSS:`, `VmHWM:`), read once it has stopped
/// changing.
async fn settled_kib(pid: u32, field: &str) -> u64 {
    let mut last = status_kib(pid, field);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = status_kib(pid, field);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}
