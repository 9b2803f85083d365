//! The publish path. Every publication, whatever its source (HTTP publish API, a WebSocket
//! `publish`, an agent update from SQS), goes through [`Publisher::publish`]: it is stamped and
//! encoded once, given its position in the project's stream by the
//! [`Engine`](crate::engine::Engine), delivered to the project's subscribers on every task,
//! counted and audited.
//!
//! One path whichever engine runs: the engine positions it, keeps it and delivers it to every
//! task's subscribers ([`Engine::publish`]); the receipt says how many of this task's it reached.
//! While the engine's back end is down it reaches this task's subscribers only, without a
//! position, and the publisher gets `unavailable` saying so.

use std::sync::Arc;

use crate::{
    engine::{Engine, Published},
    metrics::Metrics,
    persistence::{PublicationAudit, Record, RecordSink},
    protocol::{ErrorCode, Publication, PublishRequest, RequestError, StreamPosition},
};

/// Where a publication came from (metrics label and audit field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishSource {
    Http,
    WebSocket,
    AgentUpdate,
}

impl PublishSource {
    pub(crate) fn label(self) -> &'static str {
        match self {
            PublishSource::Http => "http",
            PublishSource::WebSocket => "websocket",
            PublishSource::AgentUpdate => "agent_update",
        }
    }
}

/// What a publisher is told.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct PublishReceipt {
    pub id: String,
    pub project_id: String,
    /// Local subscribers the publication was queued to (with Redis: this task's subscribers).
    pub subscribers: usize,
    pub published_at: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
}

#[derive(Clone)]
pub(crate) struct Publisher {
    engine: Arc<dyn Engine>,
    records: RecordSink,
    metrics: Arc<Metrics>,
}

impl Publisher {
    pub(crate) fn new(engine: Arc<dyn Engine>, records: RecordSink, metrics: Arc<Metrics>) -> Self {
        Publisher { engine, records, metrics }
    }

    /// Publishes to the project's subscribers; answers once the publication is in the history
    /// (Redis or memory) and queued to this task's subscribers.
    /// `user_id`: who published, when a token authorized it (for the audit).
    pub(crate) async fn publish(
        &self,
        request: PublishRequest,
        source: PublishSource,
        user_id: Option<&str>,
    ) -> Result<PublishReceipt, RequestError> {
        let publication = Publication::new(&request.project_id, request.event, request.data);
        let frame = publication.to_frame();
        let size = frame.len();
        let Published { position, subscribers: reached, unavailable } =
            self.engine.publish(&request.project_id, frame).await;
        if let Some(reason) = &unavailable {
            log::warn!(error = reason.as_str(), local_subscribers = reached; "publish failed on the engine; delivered locally only");
        }
        self.metrics.publications.with_label_values(&[source.label()]).inc();
        // Audited even when the back end was down: local subscribers saw it (the record has no
        // offset).
        self.records.record(Record::Publication(PublicationAudit {
            project_id: publication.project_id.clone(),
            publication_id: publication.id.clone(),
            event: publication.event.clone(),
            size,
            subscribers: reached,
            source: source.label().to_owned(),
            at: publication.published_at.clone(),
            offset: position.as_ref().map(|position| position.offset),
            user_id: user_id.map(str::to_owned),
        }));
        if let Some(reason) = unavailable {
            return Err(RequestError::new(
                ErrorCode::Unavailable,
                format!(
                    "{reason}: delivered to {reached} local subscribers only, not to other tasks and not kept in \
                     history"
                ),
            ));
        }
        Ok(PublishReceipt {
            id: publication.id,
            project_id: publication.project_id,
            subscribers: reached,
            published_at: publication.published_at,
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use bytestring::ByteString;
    use futures_util::future::{ready, BoxFuture, FutureExt};
    use serde_json::json;

    use super::*;
    use crate::{
        connection::ConnectionId,
        engine::{memory::MemoryEngine, positions::HistorySettings, presence::Change, LocalDelivery},
        persistence::{local::LocalStore, Persistence, RecordStore},
        protocol::{request::ProjectId, streams::StreamId},
    };

    /// Records what the engine hands over, and answers that it reached `reach` subscribers.
    struct Delivered {
        frames: Mutex<Vec<(Option<StreamPosition>, ByteString)>>,
        reach: usize,
    }

    impl LocalDelivery for Delivered {
        fn publication(
            &self,
            _project_id: &ProjectId,
            position: Option<StreamPosition>,
            frame: ByteString,
        ) -> BoxFuture<'static, usize> {
            self.frames.lock().unwrap().push((position, frame));
            ready(self.reach).boxed()
        }

        fn presence_change(&self, _: &ProjectId, _: Change, _: ConnectionId, _: ByteString) -> BoxFuture<'static, ()> {
            ready(()).boxed()
        }

        fn subscriber_count(&self, _project_id: &ProjectId) -> usize {
            self.reach
        }

        fn stream_append(&self, _: &ProjectId, _: &StreamId, _: ByteString, _: u64) -> BoxFuture<'static, ()> {
            ready(()).boxed()
        }
    }

    #[actix_rt::test]
    async fn a_publication_is_positioned_delivered_once_and_its_receipt_names_both() {
        let settings = HistorySettings {
            size: 10,
            ttl: Duration::from_secs(60),
            max_projects: 10,
            max_bytes: usize::MAX,
            max_total_bytes: usize::MAX,
        };
        let engine = Arc::new(MemoryEngine::new(settings));
        let delivered = Arc::new(Delivered { frames: Mutex::default(), reach: 4 });
        engine.start(delivered.clone());
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let data = tempfile::tempdir().expect("a temporary directory");
        let store = RecordStore::Local(LocalStore::open(data.path(), 1 << 30).expect("a local store"));
        let (_persistence, records) = Persistence::new(store, 16, Duration::from_secs(60), metrics.clone());
        let publisher = Publisher::new(engine, records, metrics);
        let mut receipts = Vec::new();
        for n in 1..=2 {
            let request = PublishRequest { project_id: "p".into(), event: None, data: json!({ "n": n }) };
            receipts.push(publisher.publish(request, PublishSource::Http, None).await.expect("published"));
        }
        let frames = delivered.frames.lock().unwrap().clone();
        assert_eq!(frames.len(), 2, "each delivered once");
        for (receipt, (position, frame)) in receipts.iter().zip(&frames) {
            assert_eq!(receipt.subscribers, 4);
            assert_eq!(&receipt.position, position, "the receipt names the delivered position");
            let message: serde_json::Value = serde_json::from_str(frame).expect("JSON");
            assert_eq!(
                (message["id"].as_str(), message["offset"].as_u64()),
                (Some(&*receipt.id), position.as_ref().map(|p| p.offset))
            );
        }
        let offsets: Vec<_> =
            receipts.iter().filter_map(|receipt| receipt.position.as_ref().map(|p| p.offset)).collect();
        assert_eq!(offsets, [1, 2]);
    }
}
