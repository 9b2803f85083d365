//! Stream positions and the recovery rule, shared by both engines. Centrifugo's model:
//! `offset` grows by one per publication in a project; `epoch` names one unbroken run of
//! offsets and changes when the history was lost (process restart without Redis, Redis data
//! loss, expiry after HISTORY_TTL_SECS without a publication), so an offset from another epoch
//! means nothing.
//!
//! The stores themselves are the engines' ([`super::memory`] in a map, [`super::redis`] in Redis
//! streams); this module holds what both must agree on: how a page of it is cut, and when a
//! history covers what a resuming client missed. (How a position is spliced into a frame is
//! the wire format's: [`StreamPosition::spliced_into`].)

use std::time::Duration;

use bytestring::ByteString;

use crate::{config::EngineSettings, protocol::StreamPosition};

/// Retention of each project's history.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistorySettings {
    /// Publications kept per project.
    pub size: usize,
    /// A project's history is forgotten (and its epoch renewed) after this long without a
    /// publication.
    pub ttl: Duration,
    /// Projects whose history the memory store keeps; the least recently published are
    /// forgotten first.
    pub max_projects: usize,
    /// Bytes of publications kept per project (HISTORY_MAX_BYTES): past it the oldest go, as
    /// past `size`. The newest publication is always kept, whatever its size.
    pub max_bytes: usize,
    /// Bytes of publications the memory store keeps across projects (HISTORY_MAX_TOTAL_BYTES):
    /// past it the least recently published projects are forgotten, as past `max_projects`.
    pub max_total_bytes: usize,
}

impl From<&EngineSettings> for HistorySettings {
    /// The retention both engines apply to each project's history.
    fn from(settings: &EngineSettings) -> Self {
        HistorySettings {
            size: settings.history_size,
            ttl: settings.history_ttl,
            max_projects: settings.history_max_projects.get(),
            max_bytes: settings.history_max_bytes.get(),
            max_total_bytes: settings.history_max_total_bytes.get(),
        }
    }
}

/// Takes entries (oldest first) for one answer: at most `limit` of them, and while they add up
/// to at most `max_bytes` of frames; the first is always taken, so a page over one publication
/// larger than the bound still makes progress.
pub(crate) fn page(entries: impl IntoIterator<Item = (u64, ByteString)>, limit: usize, max_bytes: usize) -> Entries {
    let mut bytes = 0usize;
    let mut taken = Vec::new();
    for (offset, frame) in entries.into_iter().take(limit) {
        bytes = bytes.saturating_add(frame.len());
        if !taken.is_empty() && bytes > max_bytes {
            break;
        }
        taken.push((offset, frame));
    }
    taken
}

/// A fresh random epoch.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// What a resuming subscriber gets.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Whether the history holds everything published after the client's position: `frames`
    /// and, when they stop before `top`, the pages after them.
    pub recovered: bool,
    /// The first page of the missed publications, oldest first, positions included (empty when
    /// not recovered); the replay reads the rest ([`Recovery::complete`] says whether any).
    pub frames: Entries,
    /// The project's current position (the last publication), for the client to resume from.
    pub top: StreamPosition,
}

impl Recovery {
    /// Whether `frames` reach the top: nothing more to read after them.
    pub(crate) fn complete(&self) -> bool {
        self.frames.last().is_none_or(|(offset, _)| *offset >= self.top.offset)
    }
}

/// Retained publications, oldest first: (offset, frame with position).
pub(crate) type Entries = Vec<(u64, ByteString)>;

/// Whether a history whose first retained publication after `since` is `first_after` (and
/// whose last is `top`) holds everything published after `since`.
pub(crate) fn covers(since: &StreamPosition, top: &StreamPosition, first_after: Option<u64>) -> bool {
    since.epoch == top.epoch
        && since.offset <= top.offset
        && match first_after {
            Some(first) => first == since.offset + 1,
            None => since.offset == top.offset,
        }
}

/// Decides a recovery from a project's state: `entries` are the first page of the retained
/// publications after `since.offset`, oldest first.
pub(crate) fn recover(since: Option<&StreamPosition>, top: StreamPosition, entries: Entries) -> Recovery {
    let Some(since) = since else {
        return Recovery { recovered: false, frames: Vec::new(), top };
    };
    if covers(since, &top, entries.first().map(|(offset, _)| *offset)) {
        Recovery { recovered: true, frames: entries, top }
    } else {
        Recovery { recovered: false, frames: Vec::new(), top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Entries {
        sizes.iter().enumerate().map(|(index, size)| (index as u64 + 1, "x".repeat(*size).into())).collect()
    }

    fn offsets(page: &Entries) -> Vec<u64> {
        page.iter().map(|(offset, _)| *offset).collect()
    }

    #[test]
    fn a_page_stops_before_the_entry_that_would_pass_its_bytes() {
        assert_eq!(offsets(&page(entries(&[4, 4, 4, 4]), 10, 8)), vec![1, 2]);
        assert_eq!(offsets(&page(entries(&[4, 4, 4, 4]), 10, 9)), vec![1, 2]);
        assert_eq!(offsets(&page(entries(&[4, 4, 4, 4]), 3, 100)), vec![1, 2, 3]);
    }

    #[test]
    fn a_page_holds_at_least_one_entry() {
        assert_eq!(offsets(&page(entries(&[100, 1]), 10, 8)), vec![1]);
        assert!(page(entries(&[]), 10, 8).is_empty());
    }
}
