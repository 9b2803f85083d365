//! The agent-updates consumer: when SQS_QUEUE_URL_UPDATES is set, every task long-polls that
//! queue (competing consumers: each update is handled by one task) and publishes each update
//! to its project through the [`Publisher`], like any other publication.
//!
//! An update's body is `{"project_id": "P", "type": "<event>", "data": <any JSON>}` (`event`
//! is accepted for `type`). Agents stream through the queue too ([`crate::streams`]): a `type`
//! of `stream_start` (with the `stream_id` the agent chose), `stream_append` (`stream_id`,
//! `text`, `at`) or `stream_end` (`stream_id`, `status`, `data`). With `at`, SQS's redeliveries
//! and reordering are harmless: a repeat is answered as applied, and an append that would leave
//! a gap stays on the queue until the ones before it are in. An agent asks people through it
//! too: `approval_request` (`approval_id` the agent chose, so a redelivery asks nothing new,
//! `agent`, `data`, `options`, `expires_in_secs`). It is deleted from the queue only after the publication is durable
//! in the history (the engine's: Redis, or memory in single-task mode); if publishing fails it
//! stays and SQS delivers it again after its visibility timeout. A malformed update is logged
//! and counted and left alone: the queue's redrive policy moves it to the dead-letter queue after
//! maxReceiveCount receives (the platform stack sets one), so it is never retried forever.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    approvals::Approvals,
    metrics::Metrics,
    protocol::{
        request::{
            parse_object, validate_project_id, ApprovalRequest, ObjectError, ParseLimits, StreamAppendRequest,
            StreamEndRequest, StreamStartRequest,
        },
        ErrorCode, PublishRequest, RequestError,
    },
    publish::{PublishSource, Publisher},
    streams::Streams,
};

/// SQS long-poll wait (the maximum SQS allows).
const WAIT: Duration = Duration::from_secs(20);
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(10);

pub(crate) struct UpdatesConsumer {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    publisher: Publisher,
    streams: Streams,
    approvals: Approvals,
    metrics: Arc<Metrics>,
    limits: ParseLimits,
}

/// What an update asks for.
#[derive(Debug)]
pub(crate) enum Update {
    Publish(PublishRequest),
    StreamStart(StreamStartRequest),
    StreamAppend(StreamAppendRequest),
    StreamEnd(StreamEndRequest),
    ApprovalRequest(ApprovalRequest),
}

impl UpdatesConsumer {
    pub(crate) fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        publisher: Publisher,
        streams: Streams,
        approvals: Approvals,
        metrics: Arc<Metrics>,
        limits: ParseLimits,
    ) -> Self {
        UpdatesConsumer { sqs, queue_url, publisher, streams, approvals, metrics, limits }
    }

    /// Does what the update asks; Ok once it is done (or was already: a redelivery).
    async fn apply(&self, update: Update) -> Result<(), RequestError> {
        match update {
            Update::Publish(request) => {
                self.publisher.publish(request, PublishSource::AgentUpdate, None).await.map(drop)
            }
            Update::StreamStart(request) => {
                self.streams.start(request, PublishSource::AgentUpdate, None).await.map(drop)
            }
            Update::StreamAppend(request) => self.streams.append(request, PublishSource::AgentUpdate).await.map(drop),
            Update::ApprovalRequest(request) => self.approvals.request(request, None).await.map(drop),
            Update::StreamEnd(request) => match self.streams.end(request, PublishSource::AgentUpdate, None).await {
                // Ended already: this is a redelivery of the end.
                Err(error) if error.code == ErrorCode::StreamEnded => Ok(()),
                ended => ended.map(drop),
            },
        }
    }
}

/// Parses an update body into what it asks for.
pub(crate) fn parse_update(body: &str, limits: ParseLimits) -> Result<Update, String> {
    let mut object = match parse_object(body.as_bytes()) {
        Ok(object) => object,
        Err(ObjectError::DuplicateKey(key)) => return Err(format!("body names {key:?} twice")),
        Err(ObjectError::NotJson | ObjectError::NotObject) => return Err("body is not a JSON object".into()),
    };
    let project_id = match object.get("project_id") {
        Some(Value::String(id)) => validate_project_id(id, limits).map_err(|error| error.message)?,
        _ => return Err("missing project_id".into()),
    };
    let update = match object.get("type").and_then(Value::as_str) {
        Some("stream_start") => {
            if object.get("stream_id").is_none() {
                return Err("a stream_start through the queue names its stream_id (redeliveries start it once)".into());
            }
            StreamStartRequest::from_body(project_id, &mut object).map(Update::StreamStart)
        }
        Some("stream_append") => {
            StreamAppendRequest::from_body(project_id, None, &mut object).map(Update::StreamAppend)
        }
        Some("stream_end") => StreamEndRequest::from_body(project_id, None, &mut object).map(Update::StreamEnd),
        Some("approval_request") => {
            if object.get("approval_id").is_none() {
                return Err(
                    "an approval_request through the queue names its approval_id (redeliveries ask once)".into()
                );
            }
            ApprovalRequest::from_body(project_id, &mut object).map(Update::ApprovalRequest)
        }
        _ => PublishRequest::from_body(project_id, &mut object).map(Update::Publish),
    };
    update.map_err(|error| error.message)
}

impl UpdatesConsumer {
    /// Long-polls the queue and publishes what it receives until `stop` fires: a receive in
    /// progress is abandoned (what it would have returned stays on the queue), an update being
    /// published is finished first, and the rest of its batch is left to SQS, which delivers it
    /// again (to another task) after its visibility timeout.
    pub(crate) async fn run(self, stop: CancellationToken) {
        log::info!(queue_url = self.queue_url.as_str(); "consuming agent updates");
        let mut failures = 0;
        let long_poll = aws_sdk_sqs::config::Builder::default().timeout_config(crate::aws::long_poll_timeouts(WAIT));
        while !stop.is_cancelled() {
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(WAIT.as_secs() as i32)
                .customize()
                .config_override(long_poll.clone())
                .send();
            let received = tokio::select! {
                received = receive => received,
                () = stop.cancelled() => break,
            };
            let output = match received {
                Ok(output) => {
                    failures = 0;
                    output
                }
                Err(error) => {
                    if failures == 0 {
                        log::warn!(error = crate::aws::describe(&error).as_str(); "cannot receive agent updates, retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(crate::aws::backoff(failures, RETRY_BASE, RETRY_CAP)) => {}
                        () = stop.cancelled() => break,
                    }
                    failures += 1;
                    continue;
                }
            };
            for message in output.messages() {
                if stop.is_cancelled() {
                    break;
                }
                let message_id = message.message_id().unwrap_or("unknown");
                let request = match parse_update(message.body().unwrap_or_default(), self.limits) {
                    Ok(request) => request,
                    Err(reason) => {
                        self.metrics.updates.with_label_values(&["malformed"]).inc();
                        log::warn!(
                            sqs_message_id = message_id, reason = reason.as_str();
                            "malformed agent update left for the dead-letter queue"
                        );
                        continue;
                    }
                };
                if let Err(error) = self.apply(request).await {
                    self.metrics.updates.with_label_values(&["publish_failed"]).inc();
                    log::warn!(sqs_message_id = message_id, error:% = error; "agent update not applied; SQS will redeliver it");
                    continue;
                }
                let Some(receipt) = message.receipt_handle() else { continue };
                match self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(receipt).send().await {
                    Ok(_) => self.metrics.updates.with_label_values(&["published"]).inc(),
                    Err(error) => {
                        // Published but still on the queue: it will be published again (at least once).
                        self.metrics.updates.with_label_values(&["delete_failed"]).inc();
                        log::warn!(sqs_message_id = message_id, error = crate::aws::describe(&error).as_str(); "agent update published but not deleted");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits { max_project_id_bytes: 64 };

    #[test]
    fn updates_name_their_project() {
        let Ok(Update::Publish(request)) =
            parse_update(r#"{"project_id":"p","type":"status","data":{"ok":true}}"#, LIMITS)
        else {
            panic!("a publication");
        };
        assert_eq!(&*request.project_id, "p");
        assert_eq!(request.event.as_deref(), Some("status"));
        assert_eq!(request.data["ok"], true);
    }

    #[test]
    fn stream_updates_name_their_stream() {
        let append = r#"{"project_id":"p","type":"stream_append","stream_id":"run-1","text":"hi","at":3}"#;
        let Ok(Update::StreamAppend(append)) = parse_update(append, LIMITS) else { panic!("an append") };
        assert_eq!((&*append.stream_id, append.text.as_str(), append.at), ("run-1", "hi", Some(3)));
        let start = r#"{"project_id":"p","type":"stream_start","agent":"dev"}"#;
        assert!(parse_update(start, LIMITS).unwrap_err().contains("stream_id"), "the agent names it");
        let end = r#"{"project_id":"p","type":"stream_end","stream_id":"run-1","status":"failed"}"#;
        assert!(matches!(parse_update(end, LIMITS), Ok(Update::StreamEnd(_))));
    }

    #[test]
    fn malformed_updates_say_why() {
        assert_eq!(parse_update("nope", LIMITS).unwrap_err(), "body is not a JSON object");
        assert_eq!(parse_update(r#"{"data":1}"#, LIMITS).unwrap_err(), "missing project_id");
        assert!(parse_update(r#"{"project_id":""}"#, LIMITS).is_err());
    }
}
