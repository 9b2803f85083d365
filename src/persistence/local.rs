//! The local record store, used when no DynamoDB table is configured: JSON lines in
//! `DATA_DIR/records/records.jsonl`, one item per line in the same shape as the table's items.
//! Its read path scans the file; it is for development, not for volume.

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
    file: Arc<Mutex<File>>,
}

impl LocalStore {
    pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("records");
        std::fs::create_dir_all(&dir)
            .map_err(|error| anyhow::anyhow!("cannot create the record directory {}: {error}", dir.display()))?;
        let path = dir.join("records.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| anyhow::anyhow!("cannot open the record file {}: {error}", path.display()))?;
        Ok(LocalStore { path, file: Arc::new(Mutex::new(file)) })
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
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = file.lock().map_err(|_| std::io::Error::other("record file lock poisoned"))?;
            file.write_all(lines.as_bytes())?;
            file.flush()
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
        let path = self.path.clone();
        let pk = project_key(project_id);
        let cursor = cursor.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut items: Vec<Map<String, Value>> = Vec::new();
            for line in BufReader::new(File::open(path)?).lines() {
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
