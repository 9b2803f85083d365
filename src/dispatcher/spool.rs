//! The local durable spool: what the agents would receive when no SQS queues are configured.
//!
//! One JSON-lines file per agent queue, `DATA_DIR/spool/{pm,dev,qa,ops}.jsonl`. A batch is
//! appended, flushed and `fdatasync`ed before its forwards are confirmed, so a confirmed
//! forward survives a crash. Watch it with `tail -f data/spool/dev.jsonl`.

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
    /// Opens (creating) the spool files under `data_dir/spool`.
    pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("spool");
        std::fs::create_dir_all(&dir)
            .map_err(|error| anyhow::anyhow!("cannot create the spool directory {}: {error}", dir.display()))?;
        let open = |role: AgentRole| -> anyhow::Result<Arc<Mutex<File>>> {
            let path = dir.join(format!("{}.jsonl", role.name()));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| anyhow::anyhow!("cannot open spool file {}: {error}", path.display()))?;
            Ok(Arc::new(Mutex::new(file)))
        };
        Ok(Spool {
            files: [open(AgentRole::Pm)?, open(AgentRole::Dev)?, open(AgentRole::Qa)?, open(AgentRole::Ops)?],
            dir,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the batch and syncs it to disk; every entry shares the outcome.
    pub(crate) async fn send_batch(&self, role: AgentRole, messages: &[&QueueMessage]) -> Vec<EntryOutcome> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut lines = String::new();
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
                Ok(json) => {
                    lines.push_str(&json);
                    lines.push('\n');
                }
                Err(error) => return vec![EntryOutcome::Failed(format!("cannot encode: {error}")); messages.len()],
            }
            ids.push(id);
        }
        let file = self.files[role.index()].clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = file.lock().map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            file.write_all(lines.as_bytes())?;
            file.flush()?;
            file.sync_data()
        })
        .await;
        match written {
            Ok(Ok(())) => ids.into_iter().map(EntryOutcome::Sent).collect(),
            Ok(Err(error)) => vec![EntryOutcome::Retry(format!("spool write failed: {error}")); messages.len()],
            Err(error) => vec![EntryOutcome::Retry(format!("spool task failed: {error}")); messages.len()],
        }
    }
}
