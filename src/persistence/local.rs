//! The local record store, used when no DynamoDB table is configured: JSON lines in
//! `DATA_DIR/records/records.jsonl`, one item per line in the same shape as the table's items.
//! Its read path scans the file; it is for development, not for volume.
//!
//! **Bound: RECORDS_MAX_BYTES** (what DynamoDB's TTL is to the table). When the file reaches it,
//! it becomes `records.1.jsonl` (the previous one deleted) and a new file starts: the store
//! holds the newest RECORDS_MAX_BYTES to twice that, and the audit reads both files.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde_json::{Map, Value};

use super::records::{project_key, AuditPage, MESSAGE_SORT_PREFIX};

pub(crate) struct LocalStore {
    path: PathBuf,
    /// Where the file goes when full.
    rotated_path: PathBuf,
    current: Arc<Mutex<CurrentFile>>,
    max_bytes: u64,
}

/// The file being appended to, and its length.
struct CurrentFile {
    file: File,
    bytes: u64,
}

fn open_append(path: &Path) -> std::io::Result<CurrentFile> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let bytes = file.metadata()?.len();
    Ok(CurrentFile { file, bytes })
}

impl LocalStore {
    /// The store in `data_dir/records`, rotated at `max_bytes` (RECORDS_MAX_BYTES).
    pub(crate) fn open(data_dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let dir = data_dir.join("records");
        std::fs::create_dir_all(&dir)
            .map_err(|error| anyhow::anyhow!("cannot create the record directory {}: {error}", dir.display()))?;
        let path = dir.join("records.jsonl");
        let current = open_append(&path)
            .map_err(|error| anyhow::anyhow!("cannot open the record file {}: {error}", path.display()))?;
        Ok(LocalStore {
            path,
            rotated_path: dir.join("records.1.jsonl"),
            current: Arc::new(Mutex::new(current)),
            max_bytes,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn write(&self, items: &[Map<String, Value>]) -> std::io::Result<()> {
        let mut lines = String::new();
        for item in items {
            lines.push_str(&Value::Object(item.clone()).to_string());
            lines.push('\n');
        }
        let (current, path, rotated_path, max_bytes) =
            (self.current.clone(), self.path.clone(), self.rotated_path.clone(), self.max_bytes);
        tokio::task::spawn_blocking(move || {
            let mut current = current.lock().map_err(|_| std::io::Error::other("record file lock poisoned"))?;
            current.file.write_all(lines.as_bytes())?;
            current.file.flush()?;
            current.bytes += lines.len() as u64;
            if current.bytes >= max_bytes {
                std::fs::rename(&path, &rotated_path)?;
                *current = open_append(&path)?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub(crate) async fn query_project(
        &self,
        project_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> std::io::Result<AuditPage> {
        let (current, path, rotated_path) = (self.current.clone(), self.path.clone(), self.rotated_path.clone());
        let pk = project_key(project_id);
        let cursor = cursor.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            // Both opened while no write can rotate them: each record is in exactly one.
            let files = {
                let _no_rotation = current.lock().map_err(|_| std::io::Error::other("record file lock poisoned"))?;
                let rotated = File::open(&rotated_path).map(Some).or_else(|error| match error.kind() {
                    std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(error),
                })?;
                [rotated, Some(File::open(&path)?)]
            };
            let mut items: Vec<Map<String, Value>> = Vec::new();
            let lines = files.into_iter().flatten().flat_map(|file| BufReader::new(file).lines());
            for line in lines {
                let Ok(Value::Object(item)) = serde_json::from_str::<Value>(&line?) else { continue };
                let sk = item.get("sk").and_then(Value::as_str).unwrap_or_default();
                let older_than_cursor = cursor.as_deref().is_none_or(|cursor| sk < cursor);
                if item.get("pk").and_then(Value::as_str) == Some(&pk)
                    && sk.starts_with(MESSAGE_SORT_PREFIX)
                    && older_than_cursor
                {
                    items.push(item);
                }
            }
            let sort_key =
                |item: &Map<String, Value>| item.get("sk").and_then(Value::as_str).unwrap_or_default().to_owned();
            items.sort_by_key(|item| std::cmp::Reverse(sort_key(item)));
            let more = items.len() > limit;
            items.truncate(limit);
            let next_cursor = if more { items.last().map(sort_key) } else { None };
            Ok(AuditPage { items: items.into_iter().map(Value::Object).collect(), next_cursor })
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(project_id: &str, n: usize) -> Map<String, Value> {
        let item = json!({"pk": project_key(project_id), "sk": format!("{MESSAGE_SORT_PREFIX}{n:04}"), "n": n});
        item.as_object().cloned().unwrap_or_default()
    }

    #[actix_web::test]
    async fn the_file_is_rotated_at_its_bound_and_the_audit_reads_both_files() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = LocalStore::open(dir.path(), 1_000).expect("the store");
        let line_bytes = Value::Object(record("p", 0)).to_string().len() as u64 + 1;
        for n in 0..100 {
            store.write(&[record("p", n), record("other", n)]).await.expect("written");
        }
        let on_disk = |name: &str| std::fs::metadata(dir.path().join("records").join(name)).map_or(0, |m| m.len());
        let (current, rotated) = (on_disk("records.jsonl"), on_disk("records.1.jsonl"));
        assert!(current < 1_000 && (1_000..1_000 + 2 * line_bytes).contains(&rotated), "{current} {rotated}");

        let page = store.query_project("p", 1_000, None).await.expect("read");
        let held: Vec<u64> = page.items.iter().filter_map(|item| item["n"].as_u64()).collect();
        let newest_first: Vec<u64> = (100 - held.len() as u64..100).rev().collect();
        assert_eq!(held, newest_first, "the newest records, from both files, newest first");
        assert!(held.len() as u64 * 2 * line_bytes >= 1_000, "at least the bound's worth: {}", held.len());
    }
}
