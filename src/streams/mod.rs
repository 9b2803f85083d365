//! The agent-stream path. Every start, append and end of an agent stream, whatever its source
//! (a WebSocket frame, the HTTP API, an agent update from SQS), goes through [`Streams`]: the
//! engine applies it (text and state live there, [`crate::engine::streams`]), it is counted,
//! and its outcome is answered in the protocol's words: a refusal is a [`RequestError`] naming
//! the stream and where it stands.
//!
//! What viewers get (rollups, snapshots) is the hub's ([`crate::hub::streams`]); the frames are
//! the wire format's ([`crate::protocol::streams`]).

use std::sync::Arc;

use bytestring::ByteString;
use serde_json::Value;

use crate::{
    engine::{
        streams::{Append, AppendOutcome, End, EndOutcome, StartOutcome, StreamSnapshot},
        Engine,
    },
    metrics::Metrics,
    protocol::{
        errors::StreamRefusal,
        now_iso8601,
        request::{ProjectId, StreamAppendRequest, StreamEndRequest, StreamStartRequest},
        streams::{new_stream_id, started_frame, StreamId, StreamMeta, StreamStatus},
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
    metrics: Arc<Metrics>,
}

impl Streams {
    pub(crate) fn new(engine: Arc<dyn Engine>, metrics: Arc<Metrics>) -> Self {
        Streams { engine, metrics }
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
