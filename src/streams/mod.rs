//! The agent-stream path. Every start, append and end of an agent stream, whatever its source
//! (a WebSocket frame, the HTTP API, an agent update from SQS), goes through [`Streams`]: the
//! engine applies it (text and state live there, [`crate::engine::streams`]), it is counted,
//! and its outcome is answered in the protocol's words: a refusal is a [`RequestError`] naming
//! the stream and where it stands.
//!
//! A **cancel** ([`Streams::cancel`]) is recorded in the engine (the first one per stream wins;
//! a later one is answered with its message id and sends nothing), announced to the project's
//! viewers (`stream_cancel_requested`, a publication), and sent to the stream's agent queue
//! through the queue dispatcher, with a forward's guarantee: answered once the queue has it.
//! The agent then ends the stream as `cancelled`; if it has not within
//! STREAM_CANCEL_GRACE_SECS, the task that took the cancel ends it itself. A stream without an
//! agent is ended at once.
//!
//! What viewers get (rollups, snapshots) is the hub's ([`crate::hub::streams`]); the frames are
//! the wire format's ([`crate::protocol::streams`]).

use std::{sync::Arc, time::Duration};

use actix::Addr;
use bytestring::ByteString;
use serde_json::{json, Map, Value};

use crate::{
    dispatcher::{message::QueueMessage, routing::AgentRole, Forward, QueueDispatcher},
    engine::{
        streams::{Append, AppendOutcome, CancelOutcome, End, EndOutcome, StartOutcome, StreamSnapshot},
        Engine,
    },
    metrics::Metrics,
    protocol::{
        errors::StreamRefusal,
        now_iso8601,
        request::{CancelRequest, ProjectId, StreamAppendRequest, StreamEndRequest, StreamStartRequest},
        streams::{cancel_requested_frame, new_stream_id, started_frame, StreamId, StreamMeta, StreamStatus},
        ErrorCode, Reply, RequestError, StreamPosition,
    },
    publish::PublishSource,
};

/// A started stream, as its starter is told.
#[derive(Debug)]
pub(crate) struct Started {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub meta: StreamMeta,
    pub position: Option<StreamPosition>,
    /// A stream of that id existed: its status and length (nothing new was started).
    pub existing: Option<(StreamStatus, u64)>,
}

impl Started {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::StreamStarted {
            project_id: &self.project_id,
            stream_id: &self.stream_id,
            meta: &self.meta,
            position: self.position.as_ref(),
            status: self.existing.map(|(status, _)| status),
            length: self.existing.map(|(_, length)| length),
        }
    }
}

/// An applied append, as its appender is told.
#[derive(Debug)]
pub(crate) struct Appended {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub length: u64,
    /// It was applied already (its `at` said so): nothing applied now.
    pub duplicate: bool,
}

impl Appended {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::StreamAppended {
            project_id: &self.project_id,
            stream_id: &self.stream_id,
            length: self.length,
            duplicate: self.duplicate,
        }
    }
}

/// An ended stream, as its ender is told.
#[derive(Debug)]
pub(crate) struct Ended {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub status: StreamStatus,
    pub length: u64,
    pub data: Value,
    pub position: Option<StreamPosition>,
}

impl Ended {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::StreamEnded {
            project_id: &self.project_id,
            stream_id: &self.stream_id,
            status: self.status,
            length: self.length,
            data: &self.data,
            position: self.position.as_ref(),
        }
    }
}

/// A cancel, as its requester is told.
#[derive(Debug)]
pub(crate) struct CancelRequested {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    /// The message the agent's queue has (the first cancel's, for a repeat); None: the stream had
    /// no agent and was ended at once.
    pub message_id: Option<String>,
}

impl CancelRequested {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::CancelRequested {
            project_id: &self.project_id,
            stream_id: &self.stream_id,
            message_id: self.message_id.as_deref(),
        }
    }
}

/// Who asks for a cancel: the connection and its verified user.
pub(crate) struct Canceller<'a> {
    pub connection_id: &'a str,
    pub user_id: Option<&'a str>,
}

fn engine_error(error: crate::engine::EngineError) -> RequestError {
    RequestError::new(ErrorCode::Unavailable, format!("{error}: nothing was applied; retry later"))
}

fn not_found(stream_id: &StreamId) -> RequestError {
    RequestError::new(ErrorCode::StreamNotFound, format!("No stream {stream_id} in this project"))
        .about_stream(StreamRefusal { stream_id: stream_id.to_string(), length: None, status: None })
}

fn ended(stream_id: &StreamId, status: StreamStatus, length: u64) -> RequestError {
    RequestError::new(ErrorCode::StreamEnded, format!("Stream {stream_id} has ended ({})", status.as_str()))
        .about_stream(StreamRefusal { stream_id: stream_id.to_string(), length: Some(length), status: Some(status) })
}

#[derive(Clone)]
pub(crate) struct Streams {
    engine: Arc<dyn Engine>,
    dispatcher: Addr<QueueDispatcher>,
    metrics: Arc<Metrics>,
    /// STREAM_CANCEL_GRACE_SECS.
    cancel_grace: Duration,
}

impl Streams {
    pub(crate) fn new(
        engine: Arc<dyn Engine>,
        dispatcher: Addr<QueueDispatcher>,
        metrics: Arc<Metrics>,
        cancel_grace: Duration,
    ) -> Self {
        Streams { engine, dispatcher, metrics, cancel_grace }
    }

    /// Asks the stream's agent to stop; see the module documentation.
    pub(crate) async fn cancel(
        &self,
        request: CancelRequest,
        canceller: Canceller<'_>,
    ) -> Result<CancelRequested, RequestError> {
        let CancelRequest { project_id, stream_id, reason } = request;
        let requested_at = now_iso8601();
        let mut fields = Map::new();
        fields.insert("stream_id".into(), json!(&*stream_id));
        fields.insert("reason".into(), json!(reason));
        fields.insert("user_id".into(), json!(canceller.user_id));
        fields.insert("requested_at".into(), json!(requested_at));
        // The role is settled once the engine names the agent; the id is the message's.
        let draft = QueueMessage::control(
            AgentRole::Dev,
            "cancel",
            &project_id,
            fields,
            canceller.connection_id,
            canceller.user_id,
        );
        let outcome =
            self.engine.stream_cancel(&project_id, &stream_id, &draft.message_id).await.map_err(engine_error)?;
        let agent = match outcome {
            CancelOutcome::Repeat { message_id } => {
                return Ok(CancelRequested { project_id, stream_id, message_id: Some(message_id) })
            }
            CancelOutcome::Ended { status, length } => return Err(ended(&stream_id, status, length)),
            CancelOutcome::NotFound => return Err(not_found(&stream_id)),
            CancelOutcome::First { agent } => agent,
        };
        let announcement = cancel_requested_frame(&project_id, &stream_id, canceller.user_id);
        let announced = self.engine.publish(&project_id, announcement).await;
        if let Some(reason) = announced.unavailable {
            log::warn!(project_id = &*project_id, error = reason.as_str(); "stream_cancel_requested reached this task's viewers only");
        }
        let Some(role) = agent.as_deref().and_then(|agent| AgentRole::route(agent).ok()) else {
            // Nobody to tell: it ends now.
            self.end_cancelled(&project_id, &stream_id).await?;
            return Ok(CancelRequested { project_id, stream_id, message_id: None });
        };
        let message = QueueMessage { role, ..draft };
        let message_id = message.message_id.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.dispatcher
            .try_send(Forward { message, reply })
            .map_err(|_| RequestError::busy("The agent queues are busy"))?;
        self.end_after_grace(project_id.clone(), stream_id.clone());
        match answer.await {
            Ok(Ok(_receipt)) => Ok(CancelRequested { project_id, stream_id, message_id: Some(message_id) }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(RequestError::new(ErrorCode::ForwardFailed, "The queue dispatcher stopped before answering")),
        }
    }

    /// Ends the stream as `cancelled` after STREAM_CANCEL_GRACE_SECS, unless its agent did.
    fn end_after_grace(&self, project_id: ProjectId, stream_id: StreamId) {
        let (streams, grace) = (self.clone(), self.cancel_grace);
        actix::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Err(error) = streams.end_cancelled(&project_id, &stream_id).await {
                log::warn!(project_id = &*project_id, stream_id = &*stream_id, error:% = error; "cancelled stream not ended after its grace");
            }
        });
    }

    /// Ends the stream as `cancelled` if it is still open.
    async fn end_cancelled(&self, project_id: &ProjectId, stream_id: &StreamId) -> Result<(), RequestError> {
        let end = End {
            stream_id: stream_id.clone(),
            status: StreamStatus::Cancelled,
            data: Value::Null,
            only_if_idle: false,
        };
        self.engine.stream_end(project_id, end).await.map_err(engine_error)?;
        Ok(())
    }

    pub(crate) async fn start(
        &self,
        request: StreamStartRequest,
        source: PublishSource,
        user_id: Option<&str>,
    ) -> Result<Started, RequestError> {
        let StreamStartRequest { project_id, stream_id, agent, event, data } = request;
        let stream_id = stream_id.unwrap_or_else(new_stream_id);
        let meta = StreamMeta { agent, event, data, started_at: now_iso8601() };
        let frame: ByteString = started_frame(&project_id, &stream_id, &meta);
        let outcome = self.engine.stream_start(&project_id, &stream_id, &meta, frame).await.map_err(engine_error)?;
        match outcome {
            StartOutcome::Started { position } => {
                log::debug!(project_id = &*project_id, stream_id = &*stream_id, source = source.label(), user_id = user_id; "agent stream started");
                Ok(Started { project_id, stream_id, meta, position, existing: None })
            }
            StartOutcome::Existing { meta, status, length } => {
                Ok(Started { project_id, stream_id, meta, position: None, existing: Some((status, length)) })
            }
            StartOutcome::TooMany => Err(RequestError::new(
                ErrorCode::TooManyStreams,
                "The project has STREAM_MAX_OPEN_PER_PROJECT streams open; end one first",
            )),
        }
    }

    pub(crate) async fn append(
        &self,
        request: StreamAppendRequest,
        source: PublishSource,
    ) -> Result<Appended, RequestError> {
        let StreamAppendRequest { project_id, stream_id, text, at } = request;
        let append = Append { stream_id: stream_id.clone(), text, at };
        let outcome = self.engine.stream_append(&project_id, append).await.map_err(engine_error)?;
        let refusal = |code, message: String, length| {
            RequestError::new(code, message).about_stream(StreamRefusal {
                stream_id: stream_id.to_string(),
                length: Some(length),
                status: None,
            })
        };
        match outcome {
            AppendOutcome::Applied { length } => {
                self.metrics.stream_appends.with_label_values(&[source.label()]).inc();
                Ok(Appended { project_id, stream_id, length, duplicate: false })
            }
            AppendOutcome::Duplicate { length } => Ok(Appended { project_id, stream_id, length, duplicate: true }),
            AppendOutcome::Conflict { length } => Err(refusal(
                ErrorCode::StreamConflict,
                format!("\"at\" must be the stream's length, {length}: nothing applied"),
                length,
            )),
            AppendOutcome::TooLarge { length } => Err(refusal(
                ErrorCode::StreamTooLarge,
                format!("The stream would pass STREAM_MAX_BYTES (it holds {length} bytes): nothing applied"),
                length,
            )),
            AppendOutcome::RateLimited { retry_after } => Err(RequestError::rate_limited(
                "This stream takes at most STREAM_MAX_APPENDS_PER_SEC appends a second",
                retry_after,
            )),
            AppendOutcome::Ended { status, length } => Err(ended(&stream_id, status, length)),
            AppendOutcome::NotFound => Err(not_found(&stream_id)),
            AppendOutcome::Idle => {
                // Its agent was taken for dead: it ends now, and this append is refused like any
                // after an end.
                let abandoned = self.abandon(&project_id, &stream_id).await?;
                Err(ended(&stream_id, StreamStatus::Abandoned, abandoned))
            }
        }
    }

    /// Ends an idle stream as `abandoned`; its length (at the end, or now if it was not idle
    /// after all).
    async fn abandon(&self, project_id: &ProjectId, stream_id: &StreamId) -> Result<u64, RequestError> {
        let end = End {
            stream_id: stream_id.clone(),
            status: StreamStatus::Abandoned,
            data: Value::Null,
            only_if_idle: true,
        };
        match self.engine.stream_end(project_id, end).await.map_err(engine_error)? {
            EndOutcome::Ended { length, .. } => {
                self.metrics.streams_abandoned.inc();
                log::info!(project_id = &**project_id, stream_id = &**stream_id; "agent stream abandoned: idle past STREAM_IDLE_TIMEOUT_SECS");
                Ok(length)
            }
            EndOutcome::AlreadyEnded { length, .. } => Ok(length),
            EndOutcome::NotIdle | EndOutcome::NotFound => Ok(0),
        }
    }

    pub(crate) async fn end(
        &self,
        request: StreamEndRequest,
        source: PublishSource,
        user_id: Option<&str>,
    ) -> Result<Ended, RequestError> {
        let StreamEndRequest { project_id, stream_id, status, data } = request;
        let end = End { stream_id: stream_id.clone(), status, data: data.clone(), only_if_idle: false };
        match self.engine.stream_end(&project_id, end).await.map_err(engine_error)? {
            EndOutcome::Ended { length, position } => {
                log::debug!(project_id = &*project_id, stream_id = &*stream_id, status = status.as_str(), source = source.label(), user_id = user_id; "agent stream ended");
                Ok(Ended { project_id, stream_id, status, length, data, position })
            }
            EndOutcome::AlreadyEnded { status, length } => Err(ended(&stream_id, status, length)),
            EndOutcome::NotFound | EndOutcome::NotIdle => Err(not_found(&stream_id)),
        }
    }

    /// The project's open streams, whole.
    pub(crate) async fn open_streams(&self, project_id: &ProjectId) -> Result<Vec<StreamSnapshot>, RequestError> {
        self.engine.open_streams(project_id).await.map_err(engine_error)
    }

    /// One stream, open or ended (while kept).
    pub(crate) async fn snapshot(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
    ) -> Result<StreamSnapshot, RequestError> {
        self.engine
            .stream_snapshot(project_id, stream_id)
            .await
            .map_err(engine_error)?
            .ok_or_else(|| not_found(stream_id))
    }
}
