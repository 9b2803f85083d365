//! The memory engine: one task, no REDIS_URL. Each project's history is a bounded queue in this
//! process (HISTORY_SIZE publications and HISTORY_MAX_BYTES of them, oldest out first), and all
//! of them together keep at most HISTORY_MAX_TOTAL_BYTES: past it, the least recently published
//! projects' retained publications are dropped (their positions stay; a resume that needed them
//! answers `recovered: false`). Publications reach this task's subscribers only.
//!
//! One delivery path, Centrifuge's memory broker's: [`Engine::publish`] takes the offset,
//! appends, and hands the publication to [`LocalDelivery`] under the history's lock, so delivery
//! order is offset order; the lock is never held across a wait (the hand-over only queues). A
//! restart loses the history, and the new epochs tell resuming clients so.
//!
//! Presence is a map of this task's members; join and leave events go straight to
//! [`LocalDelivery`]. Agent streams are a [`StreamTable`] under the same lock as the history, so
//! a stream's start, appends and end are handed over in the order they applied.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use bytestring::ByteString;
use futures_util::future::{ready, BoxFuture, FutureExt};

use super::{
    approvals::{now_ms, ApprovalTable, AskOutcome, DecideOutcome, Undelivered},
    positions::{new_epoch, page, recover, Entries, HistorySettings, Recovery},
    presence::{Change, Member, Presence, PRESENCE_LIST_LIMIT},
    streams::{
        Append, AppendOutcome, CancelOutcome, End, EndOutcome, StartOutcome, StreamLimits, StreamSnapshot, StreamTable,
    },
    Engine, EngineFuture, Health, LocalDelivery, Published,
};
use crate::protocol::{
    approvals::{ApprovalAsk, Decision},
    request::ProjectId,
    streams::{ended_frame, ended_prefix, snapshot_frame, snapshot_prefix, StreamId, StreamMeta},
    StreamPosition,
};

/// The history, the streams and the approvals, under one lock.
struct MemoryState {
    history: MemoryHistory,
    streams: StreamTable,
    approvals: ApprovalTable,
}

pub(crate) struct MemoryEngine {
    /// Written by publishers, each for the time of an append and a hand-over; read by resumes
    /// and HTTP history reads.
    state: Mutex<MemoryState>,
    /// Changed by the hub's thread, read by presence requests.
    presence: Mutex<MemoryPresence>,
    /// Where publications and join and leave events go; set when the hub starts.
    delivery: OnceLock<Arc<dyn LocalDelivery>>,
}

impl MemoryEngine {
    #[cfg(test)]
    pub(crate) fn new(settings: HistorySettings) -> Self {
        Self::with_stream_limits(settings, StreamLimits::default())
    }

    pub(crate) fn with_stream_limits(settings: HistorySettings, limits: StreamLimits) -> Self {
        let state = MemoryState {
            history: MemoryHistory::new(settings),
            streams: StreamTable::new(limits),
            approvals: ApprovalTable::default(),
        };
        MemoryEngine { state: Mutex::new(state), presence: Mutex::default(), delivery: OnceLock::new() }
    }

    fn members(&self) -> MutexGuard<'_, MemoryPresence> {
        // Each change is one map operation: a panic cannot leave it half done.
        self.presence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn announce(&self, change: Change, project_id: &ProjectId, member: &Member) {
        if let Some(delivery) = self.delivery.get() {
            // Queued when called; nothing to wait for: one event per subscription change the
            // hub made, on the hub's own thread.
            let frame = change.frame(project_id, member);
            drop(delivery.presence_change(project_id, change, member.connection_id.clone(), frame));
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves at worst one publication half appended; the
        // history stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a positioned publication over (under the caller's lock); resolves to the
    /// subscribers it reached.
    fn hand_over(
        &self,
        project_id: &ProjectId,
        position: &StreamPosition,
        frame: ByteString,
    ) -> BoxFuture<'static, usize> {
        match self.delivery.get() {
            Some(delivery) => delivery.publication(project_id, Some(position.clone()), frame),
            None => ready(0).boxed(),
        }
    }
}

impl Engine for MemoryEngine {
    fn describe(&self) -> &'static str {
        "memory"
    }

    fn start(&self, delivery: Arc<dyn LocalDelivery>) {
        // A second hub would be a bug; the first one keeps its deliveries.
        let _ = self.delivery.set(delivery);
    }

    fn subscribe(&self, _project_id: &ProjectId) -> BoxFuture<'static, ()> {
        // Every publication is handed over, followed or not: nothing to wait for.
        ready(()).boxed()
    }

    fn unsubscribe(&self, _project_id: &ProjectId) {}

    fn publish(&self, project_id: &ProjectId, frame: ByteString) -> BoxFuture<'static, Published> {
        let mut state = self.state();
        let (position, framed) = state.history.append(project_id, &frame);
        // Handed over under the lock: the next publication of the project queues behind it.
        let delivered = self.hand_over(project_id, &position, framed);
        drop(state);
        async move {
            let subscribers = delivered.await;
            Published { position: Some(position), subscribers, unavailable: None }
        }
        .boxed()
    }

    fn stream_start(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
        frame: ByteString,
    ) -> EngineFuture<StartOutcome> {
        let mut state = self.state();
        if let Err(refused) = state.streams.start(project_id, stream_id, meta) {
            return ready(Ok(refused)).boxed();
        }
        let (position, framed) = state.history.append(project_id, &frame);
        let delivered = self.hand_over(project_id, &position, framed);
        drop(state);
        async move {
            delivered.await;
            Ok(StartOutcome::Started { position: Some(position) })
        }
        .boxed()
    }

    fn stream_append(&self, project_id: &ProjectId, append: Append) -> EngineFuture<AppendOutcome> {
        let mut state = self.state();
        let outcome = state.streams.append(project_id, &append);
        let delivered = match (&outcome, self.delivery.get()) {
            (AppendOutcome::Applied { length }, Some(delivery)) => {
                Some(delivery.stream_append(project_id, &append.stream_id, append.text.into(), *length))
            }
            _ => None,
        };
        drop(state);
        async move {
            if let Some(delivered) = delivered {
                delivered.await;
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn stream_end(&self, project_id: &ProjectId, end: End) -> EngineFuture<EndOutcome> {
        let mut state = self.state();
        let ending = match state.streams.end(project_id, &end) {
            Ok(ending) => ending,
            Err(refused) => return ready(Ok(refused)).boxed(),
        };
        let length = ending.text.len() as u64;
        let kept = snapshot_frame(
            &snapshot_prefix(project_id, &end.stream_id, end.status, &ending.meta, &end.data),
            &ending.text,
        );
        let live = ended_frame(&ended_prefix(project_id, &end.stream_id, end.status, &end.data), length);
        let (position, framed) = state.history.append_kept_apart(project_id, &kept, &live);
        let delivered = self.hand_over(project_id, &position, framed);
        drop(state);
        async move {
            delivered.await;
            Ok(EndOutcome::Ended { length, position: Some(position) })
        }
        .boxed()
    }

    fn approval_request(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        frame: ByteString,
    ) -> EngineFuture<AskOutcome> {
        let mut state = self.state();
        if let Some(existing) = state.approvals.request(project_id, ask) {
            return ready(Ok(AskOutcome::Existing(existing))).boxed();
        }
        let (position, framed) = state.history.append(project_id, &frame);
        let delivered = self.hand_over(project_id, &position, framed);
        drop(state);
        async move {
            delivered.await;
            Ok(AskOutcome::Asked(position))
        }
        .boxed()
    }

    fn approval_decide(
        &self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        frame: ByteString,
        lease: Duration,
    ) -> EngineFuture<DecideOutcome> {
        let mut state = self.state();
        let outcome = state.approvals.decide(project_id, approval_id, decision, lease);
        let delivered = matches!(outcome, DecideOutcome::Won(_)).then(|| {
            let (position, framed) = state.history.append(project_id, &frame);
            self.hand_over(project_id, &position, framed)
        });
        drop(state);
        async move {
            if let Some(delivered) = delivered {
                delivered.await;
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn approval_delivered(&self, project_id: &ProjectId, approval_id: &str) -> EngineFuture<()> {
        self.state().approvals.delivered(project_id, approval_id);
        ready(Ok(())).boxed()
    }

    fn pending_approvals(&self, project_id: &ProjectId) -> EngineFuture<Vec<ApprovalAsk>> {
        ready(Ok(self.state().approvals.pending(project_id))).boxed()
    }

    fn due_approvals(&self) -> EngineFuture<Vec<(ProjectId, String)>> {
        ready(Ok(self.state().approvals.due(now_ms()))).boxed()
    }

    fn claim_undelivered(&self, lease: Duration) -> EngineFuture<Vec<Undelivered>> {
        ready(Ok(self.state().approvals.claim_undelivered(lease))).boxed()
    }

    fn stream_cancel(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        message_id: &str,
    ) -> EngineFuture<CancelOutcome> {
        ready(Ok(self.state().streams.cancel(project_id, stream_id, message_id))).boxed()
    }

    fn open_streams(&self, project_id: &ProjectId) -> EngineFuture<Vec<StreamSnapshot>> {
        ready(Ok(self.state().streams.open_streams(project_id))).boxed()
    }

    fn stream_snapshot(&self, project_id: &ProjectId, stream_id: &StreamId) -> EngineFuture<Option<StreamSnapshot>> {
        ready(Ok(self.state().streams.snapshot(project_id, stream_id))).boxed()
    }

    fn recover(
        &self,
        project_id: &ProjectId,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> EngineFuture<Recovery> {
        ready(Ok(self.state().history.recover_page(project_id, since, max_bytes))).boxed()
    }

    fn history(
        &self,
        project_id: &ProjectId,
        since_offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> EngineFuture<(StreamPosition, Entries)> {
        ready(Ok(self.state().history.page(project_id, since_offset, limit, max_bytes))).boxed()
    }

    fn health(&self) -> Health {
        Health::InProcess
    }

    fn presence_join(&self, project_id: &ProjectId, member: &Arc<Member>) {
        if self.members().join(project_id, member) {
            self.announce(Change::Join, project_id, member);
        }
    }

    fn presence_leave(&self, project_id: &ProjectId, member: &Arc<Member>) {
        if self.members().leave(project_id, member) {
            self.announce(Change::Leave, project_id, member);
        }
    }

    fn presence(&self, project_id: &ProjectId, list: bool) -> EngineFuture<Presence> {
        ready(Ok(self.members().read(project_id, list))).boxed()
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        // No loops, and the members live and die with this process: nobody else reads them.
        ready(()).boxed()
    }
}

/// Every project's members on this task, and how many connections each user has there.
#[derive(Default)]
struct MemoryPresence {
    projects: HashMap<ProjectId, ProjectPresence>,
}

#[derive(Default)]
struct ProjectPresence {
    members: HashMap<Arc<str>, Arc<Member>>,
    users: HashMap<Arc<str>, usize>,
}

impl MemoryPresence {
    /// Whether the member is new.
    fn join(&mut self, project_id: &ProjectId, member: &Arc<Member>) -> bool {
        let project = self.projects.entry(project_id.clone()).or_default();
        if project.members.insert(member.connection_id.clone(), member.clone()).is_some() {
            return false;
        }
        if let Some(user_id) = &member.user_id {
            *project.users.entry(user_id.clone()).or_default() += 1;
        }
        true
    }

    /// Whether the member was there.
    fn leave(&mut self, project_id: &ProjectId, member: &Member) -> bool {
        let Some(project) = self.projects.get_mut(project_id) else { return false };
        if project.members.remove(&member.connection_id).is_none() {
            return false;
        }
        if let Some(user_id) = &member.user_id {
            if let Some(count) = project.users.get_mut(user_id) {
                *count -= 1;
                if *count == 0 {
                    project.users.remove(user_id);
                }
            }
        }
        if project.members.is_empty() {
            self.projects.remove(project_id);
        }
        true
    }

    fn read(&self, project_id: &ProjectId, list: bool) -> Presence {
        let Some(project) = self.projects.get(project_id) else { return Presence::default() };
        let clients = if list {
            project.members.values().take(PRESENCE_LIST_LIMIT).map(|member| member.json.to_string()).collect()
        } else {
            Vec::new()
        };
        Presence { num_clients: project.members.len(), num_users: project.users.len(), clients }
    }
}

/// One project's retained publications and position.
struct ProjectStream {
    epoch: String,
    top: u64,
    /// Consecutive offsets, oldest first.
    entries: VecDeque<(u64, ByteString)>,
    /// Bytes of the frames in `entries`.
    bytes: usize,
    last_publish: Instant,
}

impl ProjectStream {
    /// The retained entries after `offset`, oldest first (their offsets are consecutive, so the
    /// first is found without a scan).
    fn after(&self, offset: u64) -> impl Iterator<Item = (u64, ByteString)> + '_ {
        let first = self.entries.front().map_or(0, |(first, _)| *first);
        let skip = usize::try_from(offset.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries.iter().skip(skip).cloned()
    }

    /// Drops the oldest retained entry; returns its bytes.
    fn drop_oldest(&mut self) -> usize {
        let dropped = self.entries.pop_front().map_or(0, |(_, frame)| frame.len());
        self.bytes -= dropped;
        dropped
    }
}

/// The in-memory history of every project.
pub(crate) struct MemoryHistory {
    streams: HashMap<ProjectId, ProjectStream>,
    /// Bytes of every project's retained frames, held under HISTORY_MAX_TOTAL_BYTES.
    total_bytes: usize,
    settings: HistorySettings,
}

impl MemoryHistory {
    pub(crate) fn new(settings: HistorySettings) -> Self {
        MemoryHistory { streams: HashMap::new(), total_bytes: 0, settings }
    }

    fn forget(&mut self, project_id: &ProjectId) {
        if let Some(stream) = self.streams.remove(project_id) {
            self.total_bytes -= stream.bytes;
        }
    }

    /// The project's stream, created (new epoch) if absent or expired.
    fn stream(&mut self, project_id: &ProjectId) -> &mut ProjectStream {
        let expired =
            self.streams.get(project_id).is_some_and(|stream| stream.last_publish.elapsed() > self.settings.ttl);
        if expired {
            self.forget(project_id);
        }
        if !self.streams.contains_key(project_id) && self.streams.len() >= self.settings.max_projects {
            self.evict_oldest();
        }
        self.streams.entry(project_id.clone()).or_insert_with(|| ProjectStream {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
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
            self.forget(&project);
        }
    }

    /// Appends a publication; returns its position and its frame with the position.
    pub(crate) fn append(&mut self, project_id: &ProjectId, frame: &str) -> (StreamPosition, ByteString) {
        self.keep(project_id, frame)
    }

    /// Appends a publication kept as `kept` and delivered as `live` (a stream's end: kept with its
    /// final text); returns its position and the live frame with it.
    fn append_kept_apart(&mut self, project_id: &ProjectId, kept: &str, live: &str) -> (StreamPosition, ByteString) {
        let (position, _) = self.keep(project_id, kept);
        let framed = position.spliced_into(live);
        (position, framed)
    }

    /// Positions and keeps a frame; its position and the frame with it.
    fn keep(&mut self, project_id: &ProjectId, frame: &str) -> (StreamPosition, ByteString) {
        let HistorySettings { size, max_bytes, .. } = self.settings;
        let stream = self.stream(project_id);
        stream.top += 1;
        stream.last_publish = Instant::now();
        let position = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        let framed = position.spliced_into(frame);
        let (mut added, mut dropped) = (0, 0);
        if size > 0 {
            stream.entries.push_back((stream.top, framed.clone()));
            stream.bytes += framed.len();
            added = framed.len();
            // The newest stays whatever its size: a resume from just before it still recovers.
            while stream.entries.len() > 1 && (stream.entries.len() > size || stream.bytes > max_bytes) {
                dropped += stream.drop_oldest();
            }
        }
        self.total_bytes = self.total_bytes + added - dropped;
        if self.total_bytes > self.settings.max_total_bytes {
            self.shed(project_id);
        }
        (position, framed)
    }

    /// Brings the retained bytes of every project back under HISTORY_MAX_TOTAL_BYTES: drops the
    /// retained publications of the least recently published projects (their positions stay),
    /// down to nine tenths of the bound so that shedding stays rare; the project just published
    /// to goes last, and keeps its newest publication.
    fn shed(&mut self, current: &ProjectId) {
        let max_total = self.settings.max_total_bytes;
        let target = max_total / 10 * 9;
        let mut by_age: Vec<(Instant, ProjectId)> = self
            .streams
            .iter()
            .filter(|(project, stream)| *project != current && stream.bytes > 0)
            .map(|(project, stream)| (stream.last_publish, project.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(at, _)| *at);
        for (_, project) in by_age {
            if self.total_bytes <= target {
                return;
            }
            if let Some(stream) = self.streams.get_mut(&project) {
                self.total_bytes -= stream.bytes;
                stream.entries = VecDeque::new();
                stream.bytes = 0;
            }
        }
        if let Some(stream) = self.streams.get_mut(current) {
            while self.total_bytes > max_total && stream.entries.len() > 1 {
                self.total_bytes -= stream.drop_oldest();
            }
        }
    }

    /// The project's current position.
    #[cfg(test)]
    pub(crate) fn top(&mut self, project_id: &ProjectId) -> StreamPosition {
        let stream = self.stream(project_id);
        StreamPosition { offset: stream.top, epoch: stream.epoch.clone() }
    }

    /// What a client resuming from `since` missed, all of it (for the tests of the rule).
    #[cfg(test)]
    pub(crate) fn recover(&mut self, project_id: &ProjectId, since: Option<&StreamPosition>) -> Recovery {
        self.recover_page(project_id, since, usize::MAX)
    }

    /// What a client resuming from `since` missed: its first page, at most `max_bytes`.
    pub(crate) fn recover_page(
        &mut self,
        project_id: &ProjectId,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> Recovery {
        let stream = self.stream(project_id);
        let top = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        let entries = match since {
            Some(since) => page(stream.after(since.offset), usize::MAX, max_bytes),
            None => Vec::new(),
        };
        recover(since, top, entries)
    }

    /// Up to `limit` retained publications after `since_offset` and `max_bytes` of them (at
    /// least one), oldest first.
    pub(crate) fn page(
        &mut self,
        project_id: &ProjectId,
        since_offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> (StreamPosition, Entries) {
        let stream = self.stream(project_id);
        let top = StreamPosition { offset: stream.top, epoch: stream.epoch.clone() };
        (top, page(stream.after(since_offset), limit, max_bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> HistorySettings {
        HistorySettings {
            size: 10,
            ttl: Duration::from_secs(60),
            max_projects: 100,
            max_bytes: usize::MAX,
            max_total_bytes: usize::MAX,
        }
    }

    fn history(size: usize) -> MemoryHistory {
        MemoryHistory::new(HistorySettings { size, ..settings() })
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
        let mut history = MemoryHistory::new(HistorySettings { ttl: Duration::ZERO, max_projects: 10, ..settings() });
        let project: ProjectId = "p".into();
        let (first, _) = history.append(&project, "{}");
        std::thread::sleep(Duration::from_millis(2));
        let (second, _) = history.append(&project, "{}");
        assert_ne!(first.epoch, second.epoch);
        assert_eq!(second.offset, 1);
    }

    #[test]
    fn the_least_recently_published_projects_are_evicted() {
        let mut history = MemoryHistory::new(HistorySettings { max_projects: 3, ..settings() });
        for project in ["a", "b", "c", "d"] {
            history.append(&project.into(), "{}");
        }
        assert_eq!(history.streams.len(), 3);
        assert!(!history.streams.contains_key("a"));
    }

    /// A publication frame of about `size` bytes.
    fn frame(size: usize) -> String {
        format!("{{\"data\":\"{}\"}}", "x".repeat(size))
    }

    fn retained(history: &mut MemoryHistory, project: &ProjectId) -> Vec<u64> {
        history.page(project, 0, usize::MAX, usize::MAX).1.iter().map(|(offset, _)| *offset).collect()
    }

    #[test]
    fn a_project_keeps_at_most_its_bytes_and_always_the_newest() {
        let mut history = MemoryHistory::new(HistorySettings { size: 100, max_bytes: 3_500, ..settings() });
        let project: ProjectId = "p".into();
        for _ in 0..10 {
            history.append(&project, &frame(1_000));
        }
        assert_eq!(retained(&mut history, &project), vec![8, 9, 10]);
        assert!(history.total_bytes <= 3_500, "{}", history.total_bytes);
        history.append(&project, &frame(10_000));
        assert_eq!(retained(&mut history, &project), vec![11], "a publication larger than the bound is kept alone");
    }

    #[test]
    fn past_the_total_the_least_recently_published_projects_lose_their_publications_first() {
        let mut history = MemoryHistory::new(HistorySettings { size: 100, max_total_bytes: 10_000, ..settings() });
        let (old, recent, busy): (ProjectId, ProjectId, ProjectId) = ("old".into(), "recent".into(), "busy".into());
        history.append(&old, &frame(3_000));
        std::thread::sleep(Duration::from_millis(2));
        history.append(&recent, &frame(3_000));
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..3 {
            history.append(&busy, &frame(1_000));
        }
        assert_eq!(retained(&mut history, &old), vec![1], "under the total, nothing is shed");
        history.append(&busy, &frame(1_000));
        assert!(history.total_bytes <= 10_000, "{}", history.total_bytes);
        assert!(retained(&mut history, &old).is_empty(), "the least recently published project goes first");
        assert_eq!(retained(&mut history, &recent), vec![1]);
        assert_eq!(retained(&mut history, &busy), vec![1, 2, 3, 4]);
        let (position, _) = history.append(&old, "{}");
        assert_eq!(position.offset, 2, "a shed project keeps its position");
        for _ in 0..20 {
            history.append(&busy, &frame(1_000));
        }
        assert!(history.total_bytes <= 10_000, "{}", history.total_bytes);
        assert_eq!(retained(&mut history, &busy).last(), Some(&24));
    }

    #[test]
    fn a_resume_reads_one_page_and_says_whether_more_follows() {
        let mut history = history(100);
        let project: ProjectId = "p".into();
        for _ in 0..10 {
            history.append(&project, &frame(1_000));
        }
        let epoch = history.top(&project).epoch;
        let recovery = history.recover_page(&project, Some(&StreamPosition { offset: 2, epoch }), 3_200);
        assert!(recovery.recovered);
        assert_eq!(recovery.frames.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(!recovery.complete());
        let (top, rest) = history.page(&project, 5, usize::MAX, usize::MAX);
        assert_eq!((top.offset, rest.len()), (10, 5));
    }
}
