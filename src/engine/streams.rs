//! Agent streams in the engine: what both engines keep of a stream and answer about it, and the
//! memory engine's table of them ([`StreamTable`]; the Redis engine keeps the same in Redis,
//! [`super::redis::streams`]).
//!
//! A stream's text and length live in the engine, so appends that reach different tasks apply
//! in one order and every viewer sees the same bytes: in memory under the engine's lock, in Redis
//! in one script per append (`APPEND` answers the new length atomically). Its start and its end
//! are publications of the project (two places in its history whatever the number of appends);
//! the end's place in the history holds the final text (a `stream_snapshot`), so the history's
//! byte bound counts streams and a replay shows an ended stream whole. Appends take no place in
//! the history: they reach the tasks' hubs through [`super::LocalDelivery::stream_append`].

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytestring::ByteString;
use serde_json::Value;

use crate::{
    config::StreamSettings,
    protocol::{
        request::ProjectId,
        streams::{snapshot_frame, snapshot_prefix, StreamId, StreamMeta, StreamStatus},
        StreamPosition,
    },
};

/// How far a stream may grow and how long it may stay quiet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// Bytes of text per stream (STREAM_MAX_BYTES).
    pub max_bytes: usize,
    /// Streams open at once per project (STREAM_MAX_OPEN_PER_PROJECT).
    pub max_open_per_project: usize,
    /// Appends a second per stream, 0 = no limit (STREAM_MAX_APPENDS_PER_SEC).
    pub max_appends_per_sec: u32,
    /// A stream quiet this long is ended as `abandoned` (STREAM_IDLE_TIMEOUT_SECS).
    pub idle_timeout: Duration,
}

impl Default for StreamLimits {
    /// The settings' defaults.
    fn default() -> Self {
        StreamLimits {
            max_bytes: 1 << 20,
            max_open_per_project: 32,
            max_appends_per_sec: 500,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl From<&StreamSettings> for StreamLimits {
    fn from(settings: &StreamSettings) -> Self {
        StreamLimits {
            max_bytes: settings.stream_max_bytes.get(),
            max_open_per_project: settings.stream_max_open_per_project.get(),
            max_appends_per_sec: settings.stream_max_appends_per_sec,
            idle_timeout: settings.stream_idle_timeout,
        }
    }
}

/// A stream as a late joiner gets it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StreamSnapshot {
    pub stream_id: StreamId,
    pub status: StreamStatus,
    pub meta: StreamMeta,
    /// The end's `data`, once ended.
    pub result: Value,
    pub text: String,
    /// How long since its last append (or start).
    pub idle_for: Duration,
}

impl StreamSnapshot {
    /// `{"type":"stream_snapshot",...}`, without position.
    pub(crate) fn frame(&self, project_id: &str) -> ByteString {
        let prefix = snapshot_prefix(project_id, &self.stream_id, self.status, &self.meta, &self.result);
        ByteString::from(snapshot_frame(&prefix, &self.text))
    }
}

/// What a start did.
#[derive(Debug)]
pub(crate) enum StartOutcome {
    /// Started: its start is the publication at `position` (None: the back end did not take it).
    Started { position: Option<StreamPosition> },
    /// A stream of that id exists: nothing new was started.
    Existing { meta: StreamMeta, status: StreamStatus, length: u64 },
    /// The project has STREAM_MAX_OPEN_PER_PROJECT streams open.
    TooMany,
}

/// An append, as the engine applies it.
#[derive(Clone, Debug)]
pub(crate) struct Append {
    pub stream_id: StreamId,
    pub text: String,
    /// The stream's length before `text`, when the appender says so (retries are then
    /// harmless).
    pub at: Option<u64>,
}

/// What an append did; `length` is the stream's length after it (or now, when refused).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    Applied {
        length: u64,
    },
    /// `at` showed the text is there already: nothing applied.
    Duplicate {
        length: u64,
    },
    /// `at` would leave a gap or overlap.
    Conflict {
        length: u64,
    },
    Ended {
        status: StreamStatus,
        length: u64,
    },
    NotFound,
    /// STREAM_MAX_BYTES would be passed: nothing applied.
    TooLarge {
        length: u64,
    },
    /// STREAM_MAX_APPENDS_PER_SEC reached: retry after this.
    RateLimited {
        retry_after: Duration,
    },
    /// Quiet past STREAM_IDLE_TIMEOUT_SECS: its agent is taken for dead, the stream is to be
    /// ended as `abandoned`; nothing applied.
    Idle,
}

/// An end, as the engine applies it.
#[derive(Clone, Debug)]
pub(crate) struct End {
    pub stream_id: StreamId,
    pub status: StreamStatus,
    pub data: Value,
    /// End only a stream quiet for STREAM_IDLE_TIMEOUT_SECS (the gateway's own `abandoned`
    /// end, which must not race a late append).
    pub only_if_idle: bool,
}

/// What an end did.
#[derive(Debug, PartialEq)]
pub(crate) enum EndOutcome {
    /// Ended at `length`; its end is the publication at `position`.
    Ended {
        length: u64,
        position: Option<StreamPosition>,
    },
    AlreadyEnded {
        status: StreamStatus,
        length: u64,
    },
    NotFound,
    /// `only_if_idle`, and it was not.
    NotIdle,
}

/// One stream in the memory engine.
struct StreamRecord {
    meta: StreamMeta,
    status: StreamStatus,
    result: Value,
    text: String,
    last_activity: Instant,
    /// The second (since the table's start) whose appends `appends_this_second` counts.
    second: u64,
    appends_this_second: u32,
}

impl StreamRecord {
    fn snapshot(&self, stream_id: &StreamId) -> StreamSnapshot {
        StreamSnapshot {
            stream_id: stream_id.clone(),
            status: self.status,
            meta: self.meta.clone(),
            result: self.result.clone(),
            text: self.text.clone(),
            idle_for: self.last_activity.elapsed(),
        }
    }
}

/// Whether the append names a place (`at`) before the text's end where its text already is: a
/// retry of one that applied.
fn is_applied(text: &str, append: &Append) -> bool {
    let Some(at) = append.at.and_then(|at| usize::try_from(at).ok()) else { return false };
    let end = at.saturating_add(append.text.len());
    at < text.len() && end <= text.len() && text.as_bytes().get(at..end) == Some(append.text.as_bytes())
}

/// Ended streams the memory engine keeps for `GET .../streams/{id}` (the history keeps each one's
/// final text at its end for resumes anyway).
const ENDED_KEPT: usize = 64;

/// The memory engine's streams: the open ones per project, and the last [`ENDED_KEPT`] ended.
pub(crate) struct StreamTable {
    open: HashMap<ProjectId, HashMap<StreamId, StreamRecord>>,
    ended: VecDeque<(ProjectId, StreamId, StreamRecord)>,
    limits: StreamLimits,
    origin: Instant,
}

/// What ending a stream leaves for the history and the viewers.
pub(crate) struct Ending {
    pub meta: StreamMeta,
    pub text: String,
}

impl StreamTable {
    pub(crate) fn new(limits: StreamLimits) -> Self {
        StreamTable { open: HashMap::new(), ended: VecDeque::new(), limits, origin: Instant::now() }
    }

    fn ended(&self, project_id: &ProjectId, stream_id: &str) -> Option<&StreamRecord> {
        self.ended
            .iter()
            .find(|(project, id, _)| project == project_id && &**id == stream_id)
            .map(|(.., record)| record)
    }

    /// Opens a stream, or says why not; `Ok(())`: started.
    pub(crate) fn start(
        &mut self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
    ) -> Result<(), StartOutcome> {
        if let Some(record) = self.open.get(project_id).and_then(|streams| streams.get(stream_id)) {
            let length = record.text.len() as u64;
            return Err(StartOutcome::Existing { meta: record.meta.clone(), status: record.status, length });
        }
        if let Some(record) = self.ended(project_id, stream_id) {
            let length = record.text.len() as u64;
            return Err(StartOutcome::Existing { meta: record.meta.clone(), status: record.status, length });
        }
        let streams = self.open.entry(project_id.clone()).or_default();
        if streams.len() >= self.limits.max_open_per_project {
            return Err(StartOutcome::TooMany);
        }
        let record = StreamRecord {
            meta: meta.clone(),
            status: StreamStatus::Open,
            result: Value::Null,
            text: String::new(),
            last_activity: Instant::now(),
            second: 0,
            appends_this_second: 0,
        };
        streams.insert(stream_id.clone(), record);
        Ok(())
    }

    pub(crate) fn append(&mut self, project_id: &ProjectId, append: &Append) -> AppendOutcome {
        let Some(record) = self.open.get_mut(project_id).and_then(|streams| streams.get_mut(&append.stream_id)) else {
            return match self.ended(project_id, &append.stream_id) {
                // A retry of an append that made it before the end is answered as applied.
                Some(record) if is_applied(&record.text, append) => {
                    AppendOutcome::Duplicate { length: record.text.len() as u64 }
                }
                Some(record) => AppendOutcome::Ended { status: record.status, length: record.text.len() as u64 },
                None => AppendOutcome::NotFound,
            };
        };
        let length = record.text.len();
        if is_applied(&record.text, append) {
            return AppendOutcome::Duplicate { length: length as u64 };
        }
        if record.last_activity.elapsed() >= self.limits.idle_timeout {
            return AppendOutcome::Idle;
        }
        if let Some(at) = append.at {
            if at != length as u64 {
                return AppendOutcome::Conflict { length: length as u64 };
            }
        }
        if length + append.text.len() > self.limits.max_bytes {
            return AppendOutcome::TooLarge { length: length as u64 };
        }
        if self.limits.max_appends_per_sec > 0 {
            let elapsed = self.origin.elapsed();
            let second = elapsed.as_secs();
            if record.second != second {
                (record.second, record.appends_this_second) = (second, 0);
            }
            if record.appends_this_second >= self.limits.max_appends_per_sec {
                let retry_after = Duration::from_secs(second + 1).saturating_sub(elapsed);
                return AppendOutcome::RateLimited { retry_after };
            }
            record.appends_this_second += 1;
        }
        record.text.push_str(&append.text);
        record.last_activity = Instant::now();
        AppendOutcome::Applied { length: record.text.len() as u64 }
    }

    /// Ends an open stream: what its end publications are made of; or why not.
    pub(crate) fn end(&mut self, project_id: &ProjectId, end: &End) -> Result<Ending, EndOutcome> {
        let Some(streams) = self.open.get_mut(project_id) else {
            return Err(self.not_open(project_id, &end.stream_id));
        };
        let Some(record) = streams.get(&end.stream_id) else {
            return Err(self.not_open(project_id, &end.stream_id));
        };
        if end.only_if_idle && record.last_activity.elapsed() < self.limits.idle_timeout {
            return Err(EndOutcome::NotIdle);
        }
        let Some(mut record) = streams.remove(&end.stream_id) else { return Err(EndOutcome::NotFound) };
        if streams.is_empty() {
            self.open.remove(project_id);
        }
        record.status = end.status;
        record.result = end.data.clone();
        let ending = Ending { meta: record.meta.clone(), text: record.text.clone() };
        if self.ended.len() >= ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((project_id.clone(), end.stream_id.clone(), record));
        Ok(ending)
    }

    fn not_open(&self, project_id: &ProjectId, stream_id: &str) -> EndOutcome {
        match self.ended(project_id, stream_id) {
            Some(record) => EndOutcome::AlreadyEnded { status: record.status, length: record.text.len() as u64 },
            None => EndOutcome::NotFound,
        }
    }

    /// The project's open streams.
    pub(crate) fn open_streams(&self, project_id: &ProjectId) -> Vec<StreamSnapshot> {
        let Some(streams) = self.open.get(project_id) else { return Vec::new() };
        streams.iter().map(|(stream_id, record)| record.snapshot(stream_id)).collect()
    }

    /// One stream, open or among the ended ones kept.
    pub(crate) fn snapshot(&self, project_id: &ProjectId, stream_id: &str) -> Option<StreamSnapshot> {
        let open = self.open.get(project_id).and_then(|streams| streams.get_key_value(stream_id));
        if let Some((stream_id, record)) = open {
            return Some(record.snapshot(stream_id));
        }
        self.ended
            .iter()
            .find(|(project, id, _)| project == project_id && &**id == stream_id)
            .map(|(_, stream_id, record)| record.snapshot(stream_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limits: StreamLimits) -> (StreamTable, ProjectId, StreamId) {
        let mut table = StreamTable::new(limits);
        let (project, stream): (ProjectId, StreamId) = ("p".into(), "s".into());
        table.start(&project, &stream, &StreamMeta::default()).expect("started");
        (table, project, stream)
    }

    fn append(text: &str, at: Option<u64>) -> Append {
        Append { stream_id: "s".into(), text: text.into(), at }
    }

    #[test]
    fn appends_apply_in_order_and_a_retry_with_at_applies_once() {
        let (mut table, project, _) = table(StreamLimits::default());
        assert_eq!(table.append(&project, &append("héllo", None)), AppendOutcome::Applied { length: 6 });
        assert_eq!(table.append(&project, &append(" world", Some(6))), AppendOutcome::Applied { length: 12 });
        assert_eq!(table.append(&project, &append(" world", Some(6))), AppendOutcome::Duplicate { length: 12 });
        assert_eq!(table.append(&project, &append("!", Some(13))), AppendOutcome::Conflict { length: 12 }, "a gap");
        assert_eq!(
            table.append(&project, &append("XX", Some(11))),
            AppendOutcome::Conflict { length: 12 },
            "an overlap"
        );
        assert_eq!(table.snapshot(&project, "s").expect("kept").text, "héllo world");
    }

    #[test]
    fn bounds_refuse_without_applying() {
        let limits =
            StreamLimits { max_bytes: 4, max_open_per_project: 1, max_appends_per_sec: 2, ..Default::default() };
        let (mut table, project, _) = table(limits);
        assert!(matches!(table.start(&project, &"t".into(), &StreamMeta::default()), Err(StartOutcome::TooMany)));
        assert_eq!(table.append(&project, &append("abcde", None)), AppendOutcome::TooLarge { length: 0 });
        assert_eq!(table.append(&project, &append("a", None)), AppendOutcome::Applied { length: 1 });
        assert_eq!(table.append(&project, &append("b", None)), AppendOutcome::Applied { length: 2 });
        assert!(matches!(table.append(&project, &append("c", None)), AppendOutcome::RateLimited { .. }));
        assert_eq!(table.snapshot(&project, "s").expect("kept").text, "ab");
    }

    #[test]
    fn an_ended_stream_refuses_appends_and_a_second_end_and_frees_its_place() {
        let limits = StreamLimits { max_open_per_project: 1, ..Default::default() };
        let (mut table, project, stream) = table(limits);
        table.append(&project, &append("done", None));
        let end =
            End { stream_id: stream.clone(), status: StreamStatus::Completed, data: Value::Null, only_if_idle: false };
        assert_eq!(table.end(&project, &end).expect("ended").text, "done");
        let again = table.end(&project, &end).err();
        assert_eq!(again, Some(EndOutcome::AlreadyEnded { status: StreamStatus::Completed, length: 4 }));
        let late = table.append(&project, &append("x", None));
        assert_eq!(late, AppendOutcome::Ended { status: StreamStatus::Completed, length: 4 });
        assert!(table.open_streams(&project).is_empty());
        assert!(table.start(&project, &"t".into(), &StreamMeta::default()).is_ok(), "its place is free");
    }

    #[test]
    fn a_quiet_stream_is_idle_and_only_an_idle_one_is_abandoned() {
        let limits = StreamLimits { idle_timeout: Duration::from_millis(20), ..Default::default() };
        let (mut table, project, stream) = table(limits);
        let abandon =
            End { stream_id: stream.clone(), status: StreamStatus::Abandoned, data: Value::Null, only_if_idle: true };
        assert_eq!(table.end(&project, &abandon).err(), Some(EndOutcome::NotIdle));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(table.append(&project, &append("late", None)), AppendOutcome::Idle);
        assert!(table.end(&project, &abandon).is_ok());
    }
}
