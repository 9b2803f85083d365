//! Per-project publication history: positions (offset + epoch), bounded retention, and what a
//! resuming client missed. Centrifugo's model: `offset` grows by one per publication in a
//! project; `epoch` names one unbroken run of offsets and changes when the history was lost
//! (process restart without Redis, Redis data loss, expiry after HISTORY_TTL_SECS without a
//! publication), so an offset from another epoch means nothing.
//!
//! [`MemoryHistory`] is the single-task store, owned by the hub (which assigns positions as it
//! fans out, so delivery order is offset order). With Redis, `crate::redis_engine` keeps the
//! same model in Redis streams and this module only supplies the shared pieces.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytestring::ByteString;

use crate::protocol::{request::ProjectId, StreamPosition};

/// Retention of each project's history.
#[derive(Clone, Copy, Debug)]
pub struct HistorySettings {
    /// Publications kept per project.
    pub size: usize,
    /// A project's history is forgotten (and its epoch renewed) after this long without a
    /// publication.
    pub ttl: Duration,
    /// Projects whose history the memory store keeps; the least recently published are
    /// forgotten first.
    pub max_projects: usize,
}

/// Adds the position to an encoded publication frame (a JSON object this crate serialized,
/// so it ends in `}`), without re-serializing it.
pub fn with_position(frame: &str, position: &StreamPosition) -> ByteString {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let epoch = serde_json::to_string(&position.epoch).unwrap_or_else(|_| "\"\"".into());
    ByteString::from(format!("{body},\"offset\":{},\"epoch\":{epoch}}}", position.offset))
}

/// A fresh random epoch.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// What a resuming subscriber gets.
#[derive(Debug)]
pub struct Recovery {
    /// Whether `frames` is everything published after the client's position.
    pub recovered: bool,
    /// The missed publications, oldest first, positions included (empty when not recovered).
    pub frames: Entries,
    /// The project's current position (the last publication), for the client to resume from.
    pub top: StreamPosition,
}

/// Retained publications, oldest first: (offset, frame with position).
pub type Entries = Vec<(u64, ByteString)>;

/// Whether a history whose first retained publication after `since` is `first_after` (and
/// whose last is `top`) holds everything published after `since`.
pub fn covers(since: &StreamPosition, top: &StreamPosition, first_after: Option<u64>) -> bool {
    since.epoch == top.epoch
        && since.offset <= top.offset
        && match first_after {
            Some(first) => first == since.offset + 1,
            None => since.offset == top.offset,
        }
}

/// Decides a recovery from a project's state: `entries` are the retained publications after
/// `since.offset`, oldest first.
pub fn recover(since: Option<&StreamPosition>, top: StreamPosition, entries: Entries) -> Recovery {
    let Some(since) = since else {
        return Recovery { recovered: false, frames: Vec::new(), top };
    };
    if covers(since, &top, entries.first().map(|(offset, _)| *offset)) {
        Recovery { recovered: true, frames: entries, top }
    } else {
        Recovery { recovered: false, frames: Vec::new(), top }
    }
}

struct ProjectStream {
    epoch: String,
    top: u64,
    entries: VecDeque<(u64, ByteString)>,
    last_publish: Instant,
}

/// The in-memory history of every project (single-task mode).
pub struct MemoryHistory {
    streams: HashMap<ProjectId, ProjectStream>,
    settings: HistorySettings,
}

impl MemoryHistory {
    pub fn new(settings: HistorySettings) -> Self {
        MemoryHistory { streams: HashMap::new(), settings }
    }

    /// The project's stream, created (new epoch) if absent or expired.
    fn stream(&mut self, project_id: &ProjectId) -> &mut ProjectStream {
        let expired =
            self.streams.get(project_id).is_some_and(|stream| stream.last_publish.elapsed() > self.settings.ttl);
        if expired {
            self.streams.remove(project_id);
        }
        if !self.streams.contains_key(project_id) && self.streams.len() >= self.settings.max_projects {
            self.evict_oldest();
        }
        self.streams.entry(project_id.clone()).or_insert_with(|| ProjectStream {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            last_publish: Instant::now(),
        })
    }

    fn evict_oldest(&mut self) {
        // Forget the least recently published tenth at once, so eviction stays rare.
        let mut by_age: Vec<(Instant, ProjectId)> =
            self.streams.iter().map(|(project, stream)| (stream.last_publish, project.clone())).collect();
        by_age.sort_unstable_by_key(|(at, _)| *at);
        let evict = (self.settings.max_projects / 10).max(1);
        for (_, project) in by_age.into_iter().take(evict) {
            self.streams.remove(&project);
        }
    }

    /// Appends a publication; returns its position and its frame with the position.
    pub fn append(&mut self, project_id: &ProjectId, frame: &str) -> (StreamPosition, ByteString) {
        let size = self.settings.size;
        let stream = self.stream(project_id);
        stream.top += 1;
        stream.last_publish = Instant::now();
        let position = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        let framed = with_position(frame, &position);
        if size > 0 {
            stream.entries.push_back((stream.top, framed.clone()));
            while stream.entries.len() > size {
                stream.entries.pop_front();
            }
        }
        (position, framed)
    }

    /// The project's current position.
    pub fn top(&mut self, project_id: &ProjectId) -> StreamPosition {
        let stream = self.stream(project_id);
        StreamPosition { offset: stream.top, epoch: stream.epoch.clone() }
    }

    /// What a client resuming from `since` missed.
    pub fn recover(&mut self, project_id: &ProjectId, since: Option<&StreamPosition>) -> Recovery {
        let stream = self.stream(project_id);
        let top = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        let after = since.map_or(u64::MAX, |since| since.offset);
        let entries = stream.entries.iter().filter(|(offset, _)| *offset > after).cloned().collect();
        recover(since, top, entries)
    }

    /// Up to `limit` retained publications after `since_offset`, oldest first.
    pub fn page(&mut self, project_id: &ProjectId, since_offset: u64, limit: usize) -> (StreamPosition, Entries) {
        let stream = self.stream(project_id);
        let top = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        let frames = stream.entries.iter().filter(|(offset, _)| *offset > since_offset).take(limit).cloned().collect();
        (top, frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(size: usize) -> MemoryHistory {
        MemoryHistory::new(HistorySettings { size, ttl: Duration::from_secs(60), max_projects: 100 })
    }

    #[test]
    fn positions_are_spliced_into_the_frame() {
        let position = StreamPosition { offset: 12, epoch: "ab\"c".into() };
        let frame = with_position(r#"{"type":"message","data":{"x":1}}"#, &position);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["offset"], 12);
        assert_eq!(value["epoch"], "ab\"c");
        assert_eq!(value["data"]["x"], 1);
    }

    #[test]
    fn offsets_grow_by_one_within_an_epoch() {
        let mut history = history(10);
        let project: ProjectId = "p".into();
        let (first, _) = history.append(&project, "{}");
        let (second, _) = history.append(&project, "{}");
        assert_eq!((first.offset, second.offset), (1, 2));
        assert_eq!(first.epoch, second.epoch);
        assert_ne!(history.top(&"other".into()).epoch, first.epoch);
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed() {
        let mut history = history(10);
        let project: ProjectId = "p".into();
        for _ in 0..5 {
            history.append(&project, "{}");
        }
        let epoch = history.top(&project).epoch;
        let recovery = history.recover(&project, Some(&StreamPosition { offset: 2, epoch: epoch.clone() }));
        assert!(recovery.recovered);
        assert_eq!(recovery.frames.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(), vec![3, 4, 5]);
        let up_to_date = history.recover(&project, Some(&StreamPosition { offset: 5, epoch: epoch.clone() }));
        assert!(up_to_date.recovered && up_to_date.frames.is_empty());
        let other_epoch = history.recover(&project, Some(&StreamPosition { offset: 2, epoch: "old".into() }));
        assert!(!other_epoch.recovered && other_epoch.frames.is_empty());
        let from_the_future = history.recover(&project, Some(&StreamPosition { offset: 9, epoch }));
        assert!(!from_the_future.recovered);
    }

    #[test]
    fn trimmed_history_cannot_recover() {
        let mut history = history(3);
        let project: ProjectId = "p".into();
        for _ in 0..6 {
            history.append(&project, "{}");
        }
        let epoch = history.top(&project).epoch;
        assert!(!history.recover(&project, Some(&StreamPosition { offset: 1, epoch: epoch.clone() })).recovered);
        let recovery = history.recover(&project, Some(&StreamPosition { offset: 3, epoch }));
        assert!(recovery.recovered);
        assert_eq!(recovery.frames.len(), 3);
    }

    #[test]
    fn expiry_starts_a_new_epoch() {
        let mut history = MemoryHistory::new(HistorySettings { size: 10, ttl: Duration::ZERO, max_projects: 10 });
        let project: ProjectId = "p".into();
        let (first, _) = history.append(&project, "{}");
        std::thread::sleep(Duration::from_millis(2));
        let (second, _) = history.append(&project, "{}");
        assert_ne!(first.epoch, second.epoch);
        assert_eq!(second.offset, 1);
    }

    #[test]
    fn the_least_recently_published_projects_are_evicted() {
        let mut history =
            MemoryHistory::new(HistorySettings { size: 10, ttl: Duration::from_secs(60), max_projects: 3 });
        for project in ["a", "b", "c", "d"] {
            history.append(&project.into(), "{}");
        }
        assert_eq!(history.streams.len(), 3);
        assert!(!history.streams.contains_key("a"));
    }
}
