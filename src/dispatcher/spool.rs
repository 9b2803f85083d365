//! The local durable spool: what the agents would receive when no SQS queues are configured.
//!
//! One JSON-lines file per agent queue, `DATA_DIR/spool/{pm,dev,qa,ops}.jsonl`. A batch is
//! appended, flushed and `fdatasync`ed before its forwards are confirmed, so a confirmed
//! forward survives a crash. Watch it with `tail -f data/spool/dev.jsonl`.
//!
//! **Bound.** The four files together hold at most SPOOL_MAX_BYTES ([`SpoolSize`]): the lines of
//! a batch that would go past it are not written, and their forwards are answered
//! `forward_failed` (never confirmed, so nothing confirmed is lost; the client may resend with
//! the same `message_id` later). What is there at start-up counts: the spool is emptied by an
//! operator (README, "Local mode"), not by the server.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde_json::value::RawValue;

use super::{message::QueueMessage, routing::AgentRole, EntryOutcome};

pub(crate) struct Spool {
    dir: PathBuf,
    /// One open file per role, appended under its lock (the dispatcher sends one batch per role
    /// at a time, so the lock is never contended; it makes the file shareable with the blocking
    /// pool).
    files: [Arc<Mutex<File>>; 4],
    size: Arc<SpoolSize>,
}

/// The bytes in the spool's files, against SPOOL_MAX_BYTES. Room is reserved before a batch is
/// written, under one lock for the four files (batches of different roles are written at once),
/// and given back for whatever a failed write did not put on disk.
struct SpoolSize {
    max_bytes: u64,
    /// Bytes in the files, plus those reserved by batches being written.
    used: Mutex<u64>,
}

impl SpoolSize {
    fn used(&self) -> std::sync::MutexGuard<'_, u64> {
        // A plain number, consistent whatever a panicking holder did.
        self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves room for the longest prefix of `lines` (their sizes in bytes) that fits; how
    /// many lines and bytes that is.
    fn reserve(&self, lines: &[usize]) -> (usize, u64) {
        let mut used = self.used();
        let (mut count, mut bytes) = (0, 0u64);
        for &line in lines {
            if *used + bytes + line as u64 > self.max_bytes {
                break;
            }
            bytes += line as u64;
            count += 1;
        }
        *used += bytes;
        (count, bytes)
    }

    fn release(&self, bytes: u64) {
        let mut used = self.used();
        *used = used.saturating_sub(bytes);
    }
}

/// One line of a spool file.
#[derive(serde::Serialize)]
struct SpoolLine<'a> {
    sqs_message_id: &'a str,
    queue: &'a str,
    attributes: std::collections::BTreeMap<&'a str, &'a str>,
    body: &'a RawValue,
}

impl Spool {
    /// Opens (creating) the spool files under `data_dir/spool`; their four files may hold
    /// `max_bytes` together, what they hold already included.
    pub(crate) fn open(data_dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let dir = data_dir.join("spool");
        std::fs::create_dir_all(&dir)
            .map_err(|error| anyhow::anyhow!("cannot create the spool directory {}: {error}", dir.display()))?;
        let mut used = 0;
        let mut open = |role: AgentRole| -> anyhow::Result<Arc<Mutex<File>>> {
            let path = dir.join(format!("{}.jsonl", role.name()));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| anyhow::anyhow!("cannot open spool file {}: {error}", path.display()))?;
            used += file
                .metadata()
                .map_err(|error| anyhow::anyhow!("cannot read the size of spool file {}: {error}", path.display()))?
                .len();
            Ok(Arc::new(Mutex::new(file)))
        };
        let files = [open(AgentRole::Pm)?, open(AgentRole::Dev)?, open(AgentRole::Qa)?, open(AgentRole::Ops)?];
        if used >= max_bytes {
            log::warn!(
                spool = dir.display().to_string().as_str(), bytes = used, max_bytes;
                "the local spool is full (SPOOL_MAX_BYTES): forwards are refused until an operator empties it"
            );
        }
        Ok(Spool { files, dir, size: Arc::new(SpoolSize { max_bytes, used: Mutex::new(used) }) })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// SPOOL_MAX_BYTES.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.size.max_bytes
    }

    /// Appends the batch and syncs it to disk; every entry written shares the outcome, those
    /// past SPOOL_MAX_BYTES are refused.
    pub(crate) async fn send_batch(&self, role: AgentRole, messages: &[&QueueMessage]) -> Vec<EntryOutcome> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut lines = Vec::with_capacity(messages.len());
        for message in messages {
            let id = format!("local-{}", uuid::Uuid::new_v4());
            let body = match RawValue::from_string(message.body.clone()) {
                Ok(body) => body,
                Err(error) => return vec![EntryOutcome::Failed(format!("body is not JSON: {error}")); messages.len()],
            };
            let line = SpoolLine {
                sqs_message_id: &id,
                queue: role.name(),
                attributes: message.attributes().collect(),
                body: &body,
            };
            match serde_json::to_string(&line) {
                Ok(json) => lines.push(json + "\n"),
                Err(error) => return vec![EntryOutcome::Failed(format!("cannot encode: {error}")); messages.len()],
            }
            ids.push(id);
        }
        let file = self.files[role.index()].clone();
        let size = self.size.clone();
        let written = tokio::task::spawn_blocking(move || -> (usize, std::io::Result<()>) {
            let sizes: Vec<usize> = lines.iter().map(String::len).collect();
            let (count, reserved) = size.reserve(&sizes);
            if count == 0 {
                return (0, Ok(()));
            }
            let mut file = match file.lock() {
                Ok(file) => file,
                Err(_) => {
                    size.release(reserved);
                    return (count, Err(std::io::Error::other("spool lock poisoned")));
                }
            };
            let before = file.metadata().map(|metadata| metadata.len());
            let result = file
                .write_all(lines[..count].concat().as_bytes())
                .and_then(|()| file.flush())
                .and_then(|()| file.sync_data());
            if result.is_err() {
                // What did reach the file stays counted; when that cannot be read, all of it.
                let landed = match (before, file.metadata()) {
                    (Ok(before), Ok(after)) => after.len().saturating_sub(before).min(reserved),
                    _ => reserved,
                };
                size.release(reserved - landed);
            }
            (count, result)
        })
        .await;
        let full = || {
            EntryOutcome::Failed(format!(
                "the local spool is full (SPOOL_MAX_BYTES={} bytes); an operator must empty it",
                self.size.max_bytes
            ))
        };
        match written {
            Ok((count, Ok(()))) => {
                let refused = ids.len() - count;
                ids.into_iter()
                    .take(count)
                    .map(EntryOutcome::Sent)
                    .chain(std::iter::repeat_with(full).take(refused))
                    .collect()
            }
            Ok((count, Err(error))) => {
                let failed = EntryOutcome::Retry(format!("spool write failed: {error}"));
                std::iter::repeat_n(failed, count).chain(std::iter::repeat_with(full).take(ids.len() - count)).collect()
            }
            Err(error) => vec![EntryOutcome::Retry(format!("spool task failed: {error}")); messages.len()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_reserved_for_the_lines_that_fit_in_order_and_given_back() {
        let size = SpoolSize { max_bytes: 100, used: Mutex::new(40) };
        assert_eq!(
            size.reserve(&[30, 40, 10]),
            (1, 30),
            "the second line would pass the cap: it and those after are refused"
        );
        assert_eq!(size.reserve(&[30]), (1, 30));
        assert_eq!(size.reserve(&[1]), (0, 0), "full");
        size.release(30);
        assert_eq!(size.reserve(&[10, 20]), (2, 30));
    }
}
