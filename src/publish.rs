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
