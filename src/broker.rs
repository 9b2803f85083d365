//! The publish path. Every publication, whatever its source (HTTP publish API, a WebSocket
//! `publish`), goes through [`Broker::publish`]: it is stamped, encoded once, delivered to the
//! project's local subscribers through the hub, counted and audited.
//!
//! This is the seam for scale-out: a cross-task engine (Redis) takes the place of the direct
//! hub delivery, and a history assigns each publication its [`StreamPosition`].

use std::sync::Arc;

use actix::Addr;

use crate::{
    hub::{Deliver, Hub},
    metrics::Metrics,
    persistence::{PublicationAudit, Record, RecordSink},
    protocol::{ErrorCode, Publication, PublishRequest, RequestError, StreamPosition},
};

/// Where a publication came from (metrics label and audit field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishSource {
    Http,
    WebSocket,
}

impl PublishSource {
    pub fn label(self) -> &'static str {
        match self {
            PublishSource::Http => "http",
            PublishSource::WebSocket => "websocket",
        }
    }
}

/// What a publisher is told.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PublishReceipt {
    pub id: String,
    pub project_id: String,
    /// Local subscribers the publication was queued to.
    pub subscribers: usize,
    pub published_at: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
}

#[derive(Clone)]
pub struct Broker {
    hub: Addr<Hub>,
    records: RecordSink,
    metrics: Arc<Metrics>,
}

impl Broker {
    pub fn new(hub: Addr<Hub>, records: RecordSink, metrics: Arc<Metrics>) -> Self {
        Broker { hub, records, metrics }
    }

    /// Publishes to the project's subscribers; answers once the publication is queued to each.
    pub async fn publish(
        &self,
        request: PublishRequest,
        source: PublishSource,
    ) -> Result<PublishReceipt, RequestError> {
        let publication = Publication::new(&request.project_id, request.event, request.data);
        let frame = publication.to_frame();
        let size = frame.len();
        let reached = self
            .hub
            .send(Deliver { project_id: request.project_id, frame })
            .await
            .map_err(|error| RequestError::new(ErrorCode::Internal, format!("hub unavailable: {error}")))?;
        self.metrics.publications.with_label_values(&[source.label()]).inc();
        self.records.record(Record::Publication(PublicationAudit {
            project_id: publication.project_id.clone(),
            publication_id: publication.id.clone(),
            event: publication.event.clone(),
            size,
            subscribers: reached,
            source: source.label().to_owned(),
            at: publication.published_at.clone(),
            offset: publication.position.as_ref().map(|position| position.offset),
        }));
        Ok(PublishReceipt {
            id: publication.id,
            project_id: publication.project_id,
            subscribers: reached,
            published_at: publication.published_at,
            position: publication.position,
        })
    }
}
