//! The publish path. Every publication, whatever its source (HTTP publish API, a WebSocket
//! `publish`, an agent update from SQS), goes through [`Broker::publish`]: it is stamped and
//! encoded once, given its position in the project's stream, delivered to the project's
//! subscribers on every task, counted and audited.
//!
//! - Single task (no REDIS_URL): the hub stamps the position from its memory history as it fans
//!   out locally.
//! - With Redis: [`RedisEngine::publish`] stamps it, keeps it in the project's stream and
//!   publishes it on the project's channel; every task's Redis subscriber (this one included)
//!   hands it to its hub. If Redis is down the publication still reaches this task's
//!   subscribers, without a position, and the publisher gets `unavailable` saying so.

use std::sync::Arc;

use actix::Addr;

use crate::{
    history::Entries,
    hub::{HistoryPage, Hub, Publish, SubscriberCount},
    metrics::Metrics,
    persistence::{PublicationAudit, Record, RecordSink},
    protocol::{request::ProjectId, ErrorCode, Publication, PublishRequest, RequestError, StreamPosition},
    redis_engine::RedisEngine,
};

/// Where a publication came from (metrics label and audit field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishSource {
    Http,
    WebSocket,
    AgentUpdate,
}

impl PublishSource {
    pub fn label(self) -> &'static str {
        match self {
            PublishSource::Http => "http",
            PublishSource::WebSocket => "websocket",
            PublishSource::AgentUpdate => "agent_update",
        }
    }
}

/// What a publisher is told.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PublishReceipt {
    pub id: String,
    pub project_id: String,
    /// Local subscribers the publication was queued to (with Redis: this task's subscribers).
    pub subscribers: usize,
    pub published_at: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub position: Option<StreamPosition>,
}

#[derive(Clone)]
pub struct Broker {
    hub: Addr<Hub>,
    redis: Option<RedisEngine>,
    records: RecordSink,
    metrics: Arc<Metrics>,
}

fn hub_unavailable(error: actix::MailboxError) -> RequestError {
    RequestError::new(ErrorCode::Internal, format!("hub unavailable: {error}"))
}

impl Broker {
    pub fn new(hub: Addr<Hub>, redis: Option<RedisEngine>, records: RecordSink, metrics: Arc<Metrics>) -> Self {
        Broker { hub, redis, records, metrics }
    }

    /// Publishes to the project's subscribers; answers once the publication is in the history
    /// (Redis or memory) and queued to this task's subscribers.
    /// `user_id`: who published, when a token authorized it (for the audit).
    pub async fn publish(
        &self,
        request: PublishRequest,
        source: PublishSource,
        user_id: Option<&str>,
    ) -> Result<PublishReceipt, RequestError> {
        let publication = Publication::new(&request.project_id, request.event, request.data);
        let frame = publication.to_frame();
        let size = frame.len();
        let project_id = request.project_id;
        let (reached, position, redis_error) = match &self.redis {
            None => {
                let published = self.hub.send(Publish { project_id, frame }).await.map_err(hub_unavailable)?;
                (published.reached, published.position, None)
            }
            Some(engine) => match engine.publish(&project_id, &frame).await {
                Ok(position) => {
                    let reached = self.hub.send(SubscriberCount { project_id }).await.map_err(hub_unavailable)?;
                    (reached, Some(position), None)
                }
                Err(error) => {
                    let local = self.hub.send(Publish { project_id, frame }).await.map_err(hub_unavailable)?;
                    log::warn!(error:% = error, local_subscribers = local.reached; "redis publish failed; delivered locally only");
                    (local.reached, None, Some(error))
                }
            },
        };
        self.metrics.publications.with_label_values(&[source.label()]).inc();
        // Audited even when Redis was down: local subscribers saw it (the record has no offset).
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
        if let Some(error) = redis_error {
            return Err(RequestError::new(
                ErrorCode::Unavailable,
                format!(
                    "Redis is unavailable ({error}): delivered to {reached} local subscribers only, not to other tasks \
                     and not kept in history"
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

    /// The project's position and up to `limit` publications after `since_offset`.
    pub async fn history(
        &self,
        project_id: ProjectId,
        since_offset: u64,
        limit: usize,
    ) -> Result<(StreamPosition, Entries), RequestError> {
        match &self.redis {
            Some(engine) => engine
                .page(&project_id, since_offset, limit)
                .await
                .map_err(|error| RequestError::new(ErrorCode::Unavailable, format!("history unavailable: {error}"))),
            None => self
                .hub
                .send(HistoryPage { project_id, since_offset, limit })
                .await
                .map_err(hub_unavailable)?
                .ok_or_else(|| RequestError::new(ErrorCode::Internal, "no history configured")),
        }
    }
}
