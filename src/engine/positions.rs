//! Stream positions and the recovery rule, shared by both engines. Centrifugo's model:
//! `offset` grows by one per publication in a project; `epoch` names one unbroken run of
//! offsets and changes when the history was lost (process restart without Redis, Redis data
//! loss, expiry after HISTORY_TTL_SECS without a publication), so an offset from another epoch
//! means nothing.
//!
//! The stores themselves are the engines' ([`super::memory`] in a map, [`super::redis`] in Redis
//! streams); this module holds what both must agree on: how a position is spliced into a frame,
//! and when a history covers what a resuming client missed.

use std::time::Duration;

use bytestring::ByteString;

use crate::protocol::StreamPosition;

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
}

/// Adds the position to an encoded publication frame (a JSON object this crate serialized,
/// so it ends in `}`), without re-serializing it.
pub(crate) fn with_position(frame: &str, position: &StreamPosition) -> ByteString {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let epoch = serde_json::to_string(&position.epoch).unwrap_or_else(|_| "\"\"".into());
    ByteString::from(format!("{body},\"offset\":{},\"epoch\":{epoch}}}", position.offset))
}

/// A fresh random epoch.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// What a resuming subscriber gets.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Whether `frames` is everything published after the client's position.
    pub recovered: bool,
    /// The missed publications, oldest first, positions included (empty when not recovered).
    pub frames: Entries,
    /// The project's current position (the last publication), for the client to resume from.
    pub top: StreamPosition,
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

/// Decides a recovery from a project's state: `entries` are the retained publications after
/// `since.offset`, oldest first.
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

    #[test]
    fn positions_are_spliced_into_the_frame() {
        let position = StreamPosition { offset: 12, epoch: "ab\"c".into() };
        let frame = with_position(r#"{"type":"message","data":{"x":1}}"#, &position);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["offset"], 12);
        assert_eq!(value["epoch"], "ab\"c");
        assert_eq!(value["data"]["x"], 1);
    }
}
