//! Agent streams on this task: the hub's copy of each open stream of the projects it follows,
//! the rollup of appends into one frame per window for its viewers, and the snapshots a viewer
//! gets when it (re)joins.
//!
//! **The copy.** When a project gets its first local subscriber, the hub reads its open streams
//! from the engine ([`Engine::open_streams`](crate::engine::Engine::open_streams), once the
//! engine delivers the project's traffic here, so nothing falls between the read and the live
//! appends); appends that arrive meanwhile wait in order and are applied after it, minus what the
//! read already held. From then on each append the engine delivers is applied in order: one
//! already held (a repeat) is skipped, one that starts past the copy's end (appends were lost, a
//! Redis reconnect) makes the hub read the project's streams again, and every viewer then gets
//! a snapshot. So a viewer's frames always concatenate to the stream's text.
//!
//! **Rollup.** The first append to a quiet stream goes out at once and opens a window of
//! STREAM_ROLLUP_MS; appends within it go out together at its end (one frame, encoded once for
//! every viewer), which opens the next window; a window with nothing to send closes. An end sends
//! what is pending first. At most 1000/window + 1 frames per stream a second reach a viewer.
//!
//! **Appends within a window skip the mailbox** ([`KeptAppends`]): while a stream's window is
//! open, the engine's appends to it are kept beside the hub, not sent to its mailbox, and the
//! hub takes them at the window's end (or at the stream's end, which flushes first). An agent
//! streams a token every few milliseconds and a window holds several: each sent alone woke the
//! hub's thread for nothing but to keep it for the window (docs/benchmarks.md, "Agent
//! streams"). The first append to a quiet stream still goes through the mailbox and out at once.
//!
//! **Snapshots.** A viewer that joins (a subscription that goes live: after its confirmation
//! and any replay) gets a `stream_snapshot` of each open stream with the text sent to the other
//! viewers so far; what is pending reaches it with the next frame, like everyone. A viewer
//! still in its resume seam gets no appends: its snapshots, when its seam ends, hold them; and a
//! stream that ends meanwhile reaches its hold as the final snapshot in place of `stream_ended`.
//!
//! **Pending approvals** ride along: the copy also holds the project's pending approval
//! requests (read with the streams, then kept by their `approval_requested` and
//! `approval_resolved` publications), and a joining viewer gets each as an `approval_requested`
//! frame after its confirmation, with the snapshots.
//!
//! **Abandoned streams.** Every second the hub looks for open streams without an append for
//! STREAM_IDLE_TIMEOUT_SECS and asks the engine to end them as `abandoned` (only if still idle
//! there: another task may have seen a later append). A stream nobody follows is ended when
//! next touched (an append to it is refused as ended).
//!
//! Memory: each open stream's text once per task that follows its project (at most
//! STREAM_MAX_BYTES each, STREAM_MAX_OPEN_PER_PROJECT per project), and while a read is in
//! flight at most [`MAX_WAITING`] events.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use bytestring::ByteString;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    engine::streams::StreamSnapshot,
    protocol::{
        request::ProjectId,
        streams::{append_frame, snapshot_frame, snapshot_prefix, StreamId, StreamMeta, StreamStatus},
    },
};

/// Events held while a project's streams are read; past it the read starts over.
pub(super) const MAX_WAITING: usize = 4096;

/// Appends kept for the open rollup windows, shared by the hub and the engine's delivery (see
/// the module documentation). A stream has an entry exactly while the hub's copy has a window
/// open for it, numbered as the window is; the engine's delivery keeps an append there when
/// there is one and sends it to the mailbox otherwise. The hub opens, takes and closes entries
/// under one lock, so an append is never kept where nobody will take it.
///
/// **Bound**: what a window holds, at most STREAM_MAX_APPENDS_PER_SEC x STREAM_ROLLUP_MS per
/// stream while the hub keeps up; if its thread stalls, at most the stream's text
/// (STREAM_MAX_BYTES, the engine refuses past it) per open stream.
#[derive(Default)]
pub(super) struct KeptAppends(Mutex<HashMap<ProjectId, HashMap<StreamId, Kept>>>);

/// One open window's appends.
pub(super) struct Kept {
    pub window: u64,
    pub appends: Vec<(ByteString, u64)>,
}

impl KeptAppends {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<ProjectId, HashMap<StreamId, Kept>>> {
        // Each change is one map or vector operation: a panic cannot leave one half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an append for the stream's open window; gives it back when no window is open.
    pub(super) fn keep(&self, project_id: &str, stream_id: &str, text: ByteString, length: u64) -> Option<ByteString> {
        match self.lock().get_mut(project_id).and_then(|streams| streams.get_mut(stream_id)) {
            Some(kept) => {
                kept.appends.push((text, length));
                None
            }
            None => Some(text),
        }
    }

    /// The stream's window `window` opened: what arrives from now on is kept for it (and what an
    /// earlier window left, arriving after the append that opened this one, stays).
    pub(super) fn open(&self, project_id: &ProjectId, stream_id: &StreamId, window: u64) {
        let mut kept = self.lock();
        let streams = kept.entry(project_id.clone()).or_default();
        streams.entry(stream_id.clone()).or_insert_with(|| Kept { window, appends: Vec::new() }).window = window;
    }

    /// What the stream's entry holds, whatever its window.
    pub(super) fn take(&self, project_id: &str, stream_id: &str) -> Vec<(ByteString, u64)> {
        self.lock()
            .get_mut(project_id)
            .and_then(|streams| streams.get_mut(stream_id))
            .map(|kept| std::mem::take(&mut kept.appends))
            .unwrap_or_default()
    }

    /// The project's copy was dropped: nothing of it is kept.
    pub(super) fn forget(&self, project_id: &str) {
        self.lock().remove(project_id);
    }
}

/// Settings the hub applies to streams.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamHubSettings {
    /// STREAM_ROLLUP_MS; zero sends every append alone.
    pub rollup: Duration,
    /// STREAM_IDLE_TIMEOUT_SECS.
    pub idle_timeout: Duration,
    /// How often the hub looks for streams quiet past `idle_timeout`: [`Self::IDLE_SWEEP`] in
    /// service. The hub's unit tests make it long: a sweep is a wake-up of the hub they do not
    /// order, and some of them order the hub's wake-ups exactly.
    pub idle_sweep: Duration,
}

impl StreamHubSettings {
    pub(crate) const IDLE_SWEEP: Duration = Duration::from_secs(1);
}

/// One open stream as this task knows it.
pub(super) struct LiveStream {
    meta: StreamMeta,
    text: String,
    /// Bytes of `text` sent to the viewers; the rest waits for the window's end.
    sent: usize,
    /// The open rollup window: the number its scheduled end carries. A copy read again after
    /// its project was left and followed anew is a new copy; an end scheduled for the old one
    /// then finds another number (or none) and does nothing.
    window: Option<u64>,
    last_activity: Instant,
    /// The hub asked the engine to end it as abandoned and has no answer yet.
    pub(super) abandoning: bool,
}

impl LiveStream {
    fn new(meta: StreamMeta, text: String, last_activity: Instant) -> Self {
        let sent = text.len();
        LiveStream { meta, text, sent, window: None, last_activity, abandoning: false }
    }

    /// The snapshot a joining viewer gets: the text sent to the others so far.
    pub(super) fn snapshot(&self, project_id: &str, stream_id: &str) -> ByteString {
        let prefix = snapshot_prefix(project_id, stream_id, StreamStatus::Open, &self.meta, &Value::Null);
        ByteString::from(snapshot_frame(&prefix, &self.text[..self.sent]))
    }

    /// The final snapshot, for a viewer still in its seam when the stream ended at `length`;
    /// None when this copy does not hold the whole text.
    pub(super) fn final_snapshot(&self, project_id: &str, stream_id: &str, ended: &EndedStream) -> Option<ByteString> {
        if !self.holds_whole(ended) {
            return None;
        }
        let prefix = snapshot_prefix(project_id, stream_id, ended.status, &self.meta, &ended.data);
        Some(ByteString::from(snapshot_frame(&prefix, &self.text)))
    }

    /// Whether this copy holds the whole text the stream `ended` with.
    pub(super) fn holds_whole(&self, ended: &EndedStream) -> bool {
        self.text.len() as u64 == ended.length
    }

    /// The frame of what is pending, if anything is; it counts as sent.
    pub(super) fn take_pending(&mut self, project_id: &str, stream_id: &str) -> Option<ByteString> {
        if self.sent == self.text.len() {
            return None;
        }
        let frame = append_frame(project_id, stream_id, &self.text[self.sent..], self.text.len() as u64);
        self.sent = self.text.len();
        Some(frame)
    }

    /// Whether it has been quiet for `idle_timeout` and is not being ended already.
    pub(super) fn is_idle(&self, idle_timeout: Duration) -> bool {
        !self.abandoning && self.last_activity.elapsed() >= idle_timeout
    }

    /// The engine saw activity the hub did not: count from now.
    pub(super) fn touched(&mut self) {
        self.last_activity = Instant::now();
        self.abandoning = false;
    }
}

/// What applying an append asks of the hub.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// Nothing new (a repeat, or a stream this copy does not follow while reading).
    Nothing,
    /// Send what is pending now and open a window (the stream was quiet).
    SendNowAndOpenWindow,
    /// It waits for the open window's end.
    Pending,
    /// The copy misses text (lost appends, an unknown stream): read the project again.
    Reread,
}

/// A stream's end as its publication tells it.
#[derive(Debug, Deserialize)]
pub(super) struct EndedStream {
    pub stream_id: String,
    pub status: StreamStatus,
    pub length: u64,
    #[serde(default)]
    pub data: Value,
}

/// A stream's start as its publication tells it.
#[derive(Debug, Deserialize)]
pub(super) struct StartedStream {
    pub stream_id: String,
    #[serde(flatten)]
    pub meta: StreamMeta,
}

/// An approval request's id, as its publications tell it.
#[derive(Debug, Deserialize)]
pub(super) struct ApprovalPublication {
    pub approval_id: String,
}

/// What a project's publication means to its streams and pending approvals.
pub(super) enum StreamPublication {
    Started(StartedStream),
    Ended(EndedStream),
    /// A pending approval request: its id and its frame without position.
    ApprovalRequested(String, ByteString),
    ApprovalResolved(String),
}

/// A positioned publication frame without its position (what [`crate::protocol::StreamPosition::spliced_into`]
/// added at its end).
fn without_position(frame: &str) -> ByteString {
    match frame.rfind(",\"offset\":") {
        Some(at) => ByteString::from(format!("{}}}", &frame[..at])),
        None => ByteString::from(frame.to_owned()),
    }
}

impl StreamPublication {
    /// Reads a stream's start or end out of a publication frame (only those frames begin so: a
    /// plain publication is `{"type":"message",...`).
    pub(super) fn of(frame: &str) -> Option<Self> {
        if frame.starts_with(r#"{"type":"stream_started""#) {
            serde_json::from_str(frame).ok().map(StreamPublication::Started)
        } else if frame.starts_with(r#"{"type":"stream_ended""#) {
            serde_json::from_str(frame).ok().map(StreamPublication::Ended)
        } else if frame.starts_with(r#"{"type":"approval_requested""#) {
            let approval: ApprovalPublication = serde_json::from_str(frame).ok()?;
            Some(StreamPublication::ApprovalRequested(approval.approval_id, without_position(frame)))
        } else if frame.starts_with(r#"{"type":"approval_resolved""#) {
            let approval: ApprovalPublication = serde_json::from_str(frame).ok()?;
            Some(StreamPublication::ApprovalResolved(approval.approval_id))
        } else {
            None
        }
    }
}

/// An event that arrived while the project's streams were being read.
enum Waiting {
    Started(StreamId, StreamMeta),
    Appended(StreamId, ByteString, u64),
    Ended(StreamId),
    ApprovalRequested(String, ByteString),
    ApprovalResolved(String),
}

/// The open streams of one followed project.
pub(super) struct ProjectStreams {
    pub(super) open: HashMap<StreamId, LiveStream>,
    /// Pending approval requests: their `approval_requested` frames, without position.
    pub(super) approvals: BTreeMap<String, ByteString>,
    /// While a read of the project's streams is in flight: its number and what arrived since.
    reading: Option<(u64, Vec<Waiting>)>,
}

impl ProjectStreams {
    /// A project whose streams read number `read` is reading.
    pub(super) fn reading(read: u64) -> Self {
        ProjectStreams { open: HashMap::new(), approvals: BTreeMap::new(), reading: Some((read, Vec::new())) }
    }

    pub(super) fn is_read(&self) -> bool {
        self.reading.is_none()
    }

    /// Starts another read, number `read`: what the copy holds is replaced when it answers.
    pub(super) fn reread(&mut self, read: u64) {
        self.reading = Some((read, Vec::new()));
    }

    /// The number of the read in flight, if one is.
    pub(super) fn awaits_read(&self) -> Option<u64> {
        self.reading.as_ref().map(|(number, _)| *number)
    }

    /// Whether the read in flight is number `read`.
    pub(super) fn awaits(&self, read: u64) -> bool {
        self.reading.as_ref().is_some_and(|(number, _)| *number == read)
    }

    /// Whether the events waiting for the read overflowed (the read must start over).
    fn wait(&mut self, event: Waiting) -> bool {
        let Some((_, waiting)) = &mut self.reading else { return false };
        waiting.push(event);
        waiting.len() > MAX_WAITING
    }

    /// A stream started. Whether the waiting events overflowed.
    pub(super) fn started(&mut self, stream_id: StreamId, meta: StreamMeta) -> bool {
        if self.reading.is_some() {
            return self.wait(Waiting::Started(stream_id, meta));
        }
        self.open.entry(stream_id).or_insert_with(|| LiveStream::new(meta, String::new(), Instant::now()));
        false
    }

    /// An approval request is pending. Whether the waiting events overflowed.
    pub(super) fn approval_requested(&mut self, approval_id: String, frame: ByteString) -> bool {
        if self.reading.is_some() {
            return self.wait(Waiting::ApprovalRequested(approval_id, frame));
        }
        self.approvals.insert(approval_id, frame);
        false
    }

    /// An approval request was decided. Whether the waiting events overflowed.
    pub(super) fn approval_resolved(&mut self, approval_id: String) -> bool {
        if self.reading.is_some() {
            return self.wait(Waiting::ApprovalResolved(approval_id));
        }
        self.approvals.remove(&approval_id);
        false
    }

    /// A stream ended: its copy, when it had one and is not reading.
    pub(super) fn ended(&mut self, stream_id: &str) -> Option<LiveStream> {
        if self.reading.is_some() {
            self.wait(Waiting::Ended(stream_id.into()));
            return None;
        }
        self.open.remove(stream_id)
    }

    /// Applies an append that made the stream `length` bytes long. `window`: the number a
    /// window opened now gets (None: no rollup, every append goes alone).
    pub(super) fn append(
        &mut self,
        stream_id: &StreamId,
        text: ByteString,
        length: u64,
        window: Option<u64>,
    ) -> Applied {
        if self.reading.is_some() {
            return if self.wait(Waiting::Appended(stream_id.clone(), text, length)) {
                Applied::Reread
            } else {
                Applied::Nothing
            };
        }
        let Some(stream) = self.open.get_mut(stream_id) else { return Applied::Reread };
        let held = stream.text.len() as u64;
        let Some(start) = length.checked_sub(text.len() as u64) else { return Applied::Reread };
        if length <= held {
            return Applied::Nothing;
        }
        if start > held {
            return Applied::Reread;
        }
        // Starts inside what is held (a read that already had part of it): the rest, cut at
        // an append's boundary, so a character boundary.
        let Some(new) = text.get((held - start) as usize..) else { return Applied::Reread };
        stream.text.push_str(new);
        stream.last_activity = Instant::now();
        if window.is_some() && stream.window.is_some() {
            Applied::Pending
        } else {
            stream.window = window;
            Applied::SendNowAndOpenWindow
        }
    }

    /// Window `number` of the stream ended: the frame of what is pending (and the window stays
    /// open for another), or None (and it closes; also when `number` is not the open window's).
    pub(super) fn window_ended(&mut self, project_id: &str, stream_id: &str, number: u64) -> Option<ByteString> {
        let stream = self.open.get_mut(stream_id).filter(|stream| stream.window == Some(number))?;
        let frame = stream.take_pending(project_id, stream_id);
        if frame.is_none() {
            stream.window = None;
        }
        frame
    }

    /// The read answered: the copy is what it read plus what arrived meanwhile. `Err(())`: the
    /// events since show a gap again, read once more.
    pub(super) fn read(
        &mut self,
        snapshots: Vec<StreamSnapshot>,
        approvals: BTreeMap<String, ByteString>,
    ) -> Result<(), ()> {
        self.approvals = approvals;
        let waiting = self.reading.take().map(|(_, waiting)| waiting).unwrap_or_default();
        let now = Instant::now();
        self.open = snapshots
            .into_iter()
            .filter(|snapshot| snapshot.status == StreamStatus::Open)
            .map(|snapshot| {
                let last_activity = now.checked_sub(snapshot.idle_for).unwrap_or(now);
                (snapshot.stream_id, LiveStream::new(snapshot.meta, snapshot.text, last_activity))
            })
            .collect();
        for event in waiting {
            match event {
                Waiting::Started(stream_id, meta) => {
                    self.started(stream_id, meta);
                }
                Waiting::Appended(stream_id, text, length) => {
                    if self.append(&stream_id, text, length, None) == Applied::Reread {
                        return Err(());
                    }
                }
                Waiting::Ended(stream_id) => {
                    self.open.remove(&stream_id);
                }
                Waiting::ApprovalRequested(approval_id, frame) => {
                    self.approvals.insert(approval_id, frame);
                }
                Waiting::ApprovalResolved(approval_id) => {
                    self.approvals.remove(&approval_id);
                }
            }
        }
        for stream in self.open.values_mut() {
            stream.sent = stream.text.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_project(streams: Vec<StreamSnapshot>) -> ProjectStreams {
        let mut project = ProjectStreams::reading(1);
        project.read(streams, BTreeMap::new()).expect("read");
        project
    }

    fn snapshot(id: &str, text: &str) -> StreamSnapshot {
        StreamSnapshot {
            stream_id: id.into(),
            status: StreamStatus::Open,
            meta: StreamMeta::default(),
            result: Value::Null,
            text: text.into(),
            idle_for: Duration::ZERO,
        }
    }

    fn text_of(project: &ProjectStreams, id: &str) -> String {
        project.open[id].text.clone()
    }

    #[test]
    fn appends_apply_once_and_in_order_and_a_gap_asks_for_a_reread() {
        let mut project = read_project(vec![snapshot("s", "ab")]);
        let s: StreamId = "s".into();
        assert_eq!(project.append(&s, "cd".into(), 4, Some(1)), Applied::SendNowAndOpenWindow);
        assert_eq!(project.append(&s, "e".into(), 5, Some(1)), Applied::Pending, "within the window");
        assert_eq!(project.append(&s, "de".into(), 5, Some(1)), Applied::Nothing, "a repeat");
        assert_eq!(project.append(&s, "efg".into(), 7, Some(1)), Applied::Pending, "overlapping: the new part");
        assert_eq!(text_of(&project, "s"), "abcdefg");
        assert_eq!(project.append(&s, "z".into(), 9, Some(1)), Applied::Reread, "a byte is missing");
        assert_eq!(project.append(&"t".into(), "z".into(), 1, Some(1)), Applied::Reread, "an unknown stream");
    }

    #[test]
    fn a_window_sends_what_it_gathered_then_closes_when_quiet() {
        let mut project = read_project(vec![snapshot("s", "")]);
        let s: StreamId = "s".into();
        project.append(&s, "a".into(), 1, Some(1));
        let first = project.open.get_mut("s").unwrap().take_pending("p", "s").expect("the first goes at once");
        assert!(first.contains(r#""text":"a","length":1"#), "{first}");
        project.append(&s, "b".into(), 2, Some(1));
        project.append(&s, "c".into(), 3, Some(1));
        assert!(project.window_ended("p", "s", 7).is_none(), "another window's end does nothing");
        let rolled = project.window_ended("p", "s", 1).expect("the window's appends");
        assert!(rolled.contains(r#""text":"bc","length":3"#), "{rolled}");
        assert!(project.window_ended("p", "s", 1).is_none(), "nothing new: the window closes");
        assert_eq!(project.append(&s, "d".into(), 4, Some(2)), Applied::SendNowAndOpenWindow);
        assert!(project.window_ended("p", "s", 1).is_none(), "the closed window's end is stale");
        assert_eq!(project.append(&s, "e".into(), 5, Some(3)), Applied::Pending, "window 2 is open");
    }

    #[test]
    fn what_arrives_during_a_read_is_applied_after_it_minus_what_it_held() {
        let mut project = ProjectStreams::reading(7);
        assert!(project.awaits(7) && !project.is_read());
        let s: StreamId = "s".into();
        project.append(&s, "b".into(), 2, Some(1));
        project.append(&s, "c".into(), 3, Some(1));
        project.started("t".into(), StreamMeta::default());
        project.ended("u");
        project.read(vec![snapshot("s", "ab"), snapshot("u", "x")], BTreeMap::new()).expect("no gap");
        assert_eq!(text_of(&project, "s"), "abc");
        assert!(project.open.contains_key("t") && !project.open.contains_key("u"));
        let joining = project.open["s"].snapshot("p", "s");
        assert!(joining.contains(r#""text":"abc""#), "a joiner gets all of it: {joining}");
    }

    #[test]
    fn stream_publications_are_recognised_by_their_type() {
        let started =
            r#"{"type":"stream_started","project_id":"p","stream_id":"s","started_at":"t","offset":1,"epoch":"e"}"#;
        assert!(matches!(StreamPublication::of(started), Some(StreamPublication::Started(s)) if s.stream_id == "s"));
        let ended = r#"{"type":"stream_ended","project_id":"p","stream_id":"s","status":"failed","length":3}"#;
        assert!(
            matches!(StreamPublication::of(ended), Some(StreamPublication::Ended(e)) if e.length == 3 && e.status == StreamStatus::Failed)
        );
        assert!(StreamPublication::of(r#"{"type":"message","data":{"type":"stream_ended"}}"#).is_none());
    }
}
