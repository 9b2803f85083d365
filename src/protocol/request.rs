//! Parsing a client frame into a [`Request`].
//!
//! A frame is parsed once into a JSON object; `action` picks the request and the fields it
//! needs are taken and checked here, so the session only ever sees well-formed requests. Unknown
//! fields are ignored, as the original server did.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    reply::StreamPosition,
    streams::{is_valid_stream_id, StreamId, StreamStatus},
    ErrorCode, RequestError,
};

/// A client's correlation id, echoed verbatim on the reply (string or number).
pub(crate) type RequestId = Value;

/// A project id, validated, cheap to clone (the hub keys its maps by it).
pub(crate) type ProjectId = Arc<str>;

/// What a client asked for.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    Ping,
    /// Present (or refresh) the connection's token.
    Authenticate {
        token: String,
    },
    Subscribe(SubscribeRequest),
    Unsubscribe {
        project_id: ProjectId,
    },
    Forward(ForwardRequest),
    Publish(PublishRequest),
    /// Who is subscribed to a project, on every task (the counts and a bounded list).
    Presence {
        project_id: ProjectId,
    },
    /// The counts only.
    PresenceStats {
        project_id: ProjectId,
    },
    StreamStart(StreamStartRequest),
    StreamAppend(StreamAppendRequest),
    StreamEnd(StreamEndRequest),
    /// Asks a stream's agent to stop.
    Cancel(CancelRequest),
    /// An agent asks people a question.
    ApprovalRequest(ApprovalRequest),
    /// A person answers one.
    ApprovalDecide(ApprovalDecision),
}

impl Request {
    /// Label for metrics and logs.
    pub(crate) fn action(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Authenticate { .. } => "authenticate",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Forward(_) => "forward",
            Request::Publish(_) => "publish",
            Request::Presence { .. } => "presence",
            Request::PresenceStats { .. } => "presence_stats",
            Request::StreamStart(_) => "stream_start",
            Request::StreamAppend(_) => "stream_append",
            Request::StreamEnd(_) => "stream_end",
            Request::Cancel(_) => "cancel",
            Request::ApprovalRequest(_) => "approval_request",
            Request::ApprovalDecide(_) => "approval_decide",
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) struct SubscribeRequest {
    pub project_id: ProjectId,
    /// Resume after this position (replay what was missed), when given.
    pub since: Option<StreamPosition>,
    /// The confirmation carries the project's position (`"recover": true`, or implied by
    /// `since`). Off by default: the original clients compare the confirmation's exact shape.
    pub with_position: bool,
    /// Deliver the project's `join` and `leave` events (`"join_leave": true`).
    pub join_leave: bool,
}

/// A message for an agent queue.
#[derive(Debug, PartialEq)]
pub(crate) struct ForwardRequest {
    /// The `type` as the client sent it; routing to a queue happens in the dispatcher.
    pub message_type: String,
    /// The client's id for the message, or a generated one when it sent none.
    pub message_id: String,
    pub project_id: ProjectId,
    /// The whole request object as the client sent it: it becomes the SQS body.
    pub body: Map<String, Value>,
}

/// A message to push to a project's subscribers.
#[derive(Debug, PartialEq)]
pub(crate) struct PublishRequest {
    pub project_id: ProjectId,
    pub event: Option<String>,
    pub data: Value,
}

impl PublishRequest {
    /// The publication a body asks for, its project already read from it: each source (frame,
    /// HTTP body, queued update) reads and refuses the project id in its own words and order,
    /// and shares the rest. Takes `data` out of `body`.
    pub(crate) fn from_body(project_id: ProjectId, body: &mut Map<String, Value>) -> Result<Self, RequestError> {
        let event = event_name(body.get("type").or_else(|| body.get("event")))?;
        let data = body.remove("data").unwrap_or(Value::Null);
        Ok(PublishRequest { project_id, event, data })
    }
}

/// The agents a stream's `agent` may name: the queues a cancel can reach.
const STREAM_AGENTS: [&str; 4] = ["pm", "dev", "qa", "ops"];

/// Opens an agent stream.
#[derive(Debug, PartialEq)]
pub(crate) struct StreamStartRequest {
    pub project_id: ProjectId,
    /// The agent's own id for it (a start naming an existing stream answers with that one);
    /// None: the server names it.
    pub stream_id: Option<StreamId>,
    pub agent: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Appends text to an agent stream.
#[derive(Debug, PartialEq)]
pub(crate) struct StreamAppendRequest {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub text: String,
    /// The stream's length before `text`, in UTF-8 bytes, when the agent says so.
    pub at: Option<u64>,
}

/// Ends an agent stream.
#[derive(Debug, PartialEq)]
pub(crate) struct StreamEndRequest {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub status: StreamStatus,
    pub data: Value,
}

fn stream_id_field(value: Option<&Value>) -> Result<Option<StreamId>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if is_valid_stream_id(id) => Ok(Some(StreamId::from(id.as_str()))),
        Some(_) => Err(RequestError::new(
            ErrorCode::InvalidRequest,
            "\"stream_id\" must be 1 to 64 letters, digits, '.', '_' or '-'",
        )),
    }
}

fn required_stream_id(body: &Map<String, Value>) -> Result<StreamId, RequestError> {
    stream_id_field(body.get("stream_id"))?
        .ok_or_else(|| RequestError::new(ErrorCode::InvalidRequest, "Missing field: stream_id"))
}

impl StreamStartRequest {
    /// The start a body asks for (its project already read from it); takes `data` out of it.
    pub(crate) fn from_body(project_id: ProjectId, body: &mut Map<String, Value>) -> Result<Self, RequestError> {
        let agent = match body.get("agent") {
            None | Some(Value::Null) => None,
            Some(Value::String(agent)) if STREAM_AGENTS.contains(&agent.as_str()) => Some(agent.clone()),
            Some(_) => {
                return Err(RequestError::new(ErrorCode::InvalidRequest, "\"agent\" must be one of pm, dev, qa, ops"))
            }
        };
        let event = match body.get("event") {
            None | Some(Value::Null) => None,
            Some(Value::String(event)) => Some(event.clone()),
            Some(_) => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"event\" must be a string")),
        };
        let stream_id = stream_id_field(body.get("stream_id"))?;
        let data = body.remove("data").unwrap_or(Value::Null);
        Ok(StreamStartRequest { project_id, stream_id, agent, event, data })
    }
}

impl StreamAppendRequest {
    /// The append a body asks for; `stream_id` from the body unless the caller has it (a URL).
    pub(crate) fn from_body(
        project_id: ProjectId,
        stream_id: Option<StreamId>,
        body: &mut Map<String, Value>,
    ) -> Result<Self, RequestError> {
        let stream_id = match stream_id {
            Some(stream_id) => stream_id,
            None => required_stream_id(body)?,
        };
        let text = match body.remove("text") {
            Some(Value::String(text)) if !text.is_empty() => text,
            _ => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"text\" must be a non-empty string")),
        };
        let at = match body.get("at") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                RequestError::new(ErrorCode::InvalidRequest, "\"at\" must be a whole number of bytes")
            })?),
        };
        Ok(StreamAppendRequest { project_id, stream_id, text, at })
    }
}

impl StreamEndRequest {
    /// The end a body asks for; `stream_id` from the body unless the caller has it (a URL).
    pub(crate) fn from_body(
        project_id: ProjectId,
        stream_id: Option<StreamId>,
        body: &mut Map<String, Value>,
    ) -> Result<Self, RequestError> {
        let stream_id = match stream_id {
            Some(stream_id) => stream_id,
            None => required_stream_id(body)?,
        };
        let status = match body.get("status") {
            None | Some(Value::Null) => StreamStatus::Completed,
            Some(Value::String(status)) => StreamStatus::parse_final(status).ok_or_else(|| {
                RequestError::new(ErrorCode::InvalidRequest, "\"status\" must be completed, failed or cancelled")
            })?,
            Some(_) => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"status\" must be a string")),
        };
        let data = body.remove("data").unwrap_or(Value::Null);
        Ok(StreamEndRequest { project_id, stream_id, status, data })
    }
}

/// Asks a stream's agent to stop.
#[derive(Debug, PartialEq)]
pub(crate) struct CancelRequest {
    pub project_id: ProjectId,
    pub stream_id: StreamId,
    pub reason: Option<String>,
}

impl CancelRequest {
    fn from_body(project_id: ProjectId, body: &Map<String, Value>) -> Result<Self, RequestError> {
        let stream_id = required_stream_id(body)?;
        let reason = match body.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(reason)) => Some(reason.clone()),
            Some(_) => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"reason\" must be a string")),
        };
        Ok(CancelRequest { project_id, stream_id, reason })
    }
}

/// Options an approval request may offer at most.
const MAX_APPROVAL_OPTIONS: usize = 16;
/// The longest an approval request may stay pending: a week.
const MAX_APPROVAL_SECS: u64 = 7 * 24 * 3600;

/// An agent's question to people.
#[derive(Debug, PartialEq)]
pub(crate) struct ApprovalRequest {
    pub project_id: ProjectId,
    /// The agent's own id for it: a request naming one that exists asks nothing new (what an
    /// agent asking through a queue, which may deliver twice, names).
    pub approval_id: Option<String>,
    pub agent: String,
    pub data: Value,
    pub options: Vec<String>,
    pub expires_in_secs: u64,
}

impl ApprovalRequest {
    /// The request a body asks for; takes `data` out of it.
    pub(crate) fn from_body(project_id: ProjectId, body: &mut Map<String, Value>) -> Result<Self, RequestError> {
        let invalid = |message: &str| RequestError::new(ErrorCode::InvalidRequest, message);
        let agent = match body.get("agent") {
            Some(Value::String(agent)) if STREAM_AGENTS.contains(&agent.as_str()) => agent.clone(),
            _ => return Err(invalid("\"agent\" (the queue the decision goes to) must be one of pm, dev, qa, ops")),
        };
        let options = match body.get("options") {
            None | Some(Value::Null) => vec!["approve".to_owned(), "reject".to_owned()],
            Some(Value::Array(options)) => options
                .iter()
                .map(|option| match option {
                    Value::String(option) if !option.is_empty() && option != "expired" => Ok(option.clone()),
                    _ => Err(invalid("each option must be a non-empty string other than \"expired\"")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("\"options\" must be an array of strings")),
        };
        if options.is_empty() || options.len() > MAX_APPROVAL_OPTIONS {
            return Err(invalid("\"options\" must hold 1 to 16 choices"));
        }
        let expires_in_secs = match body.get("expires_in_secs") {
            None | Some(Value::Null) => 3600,
            Some(value) => value
                .as_u64()
                .filter(|secs| (1..=MAX_APPROVAL_SECS).contains(secs))
                .ok_or_else(|| invalid("\"expires_in_secs\" must be a whole number from 1 to 604800"))?,
        };
        let approval_id = match body.get("approval_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if is_valid_stream_id(id) => Some(id.clone()),
            Some(_) => return Err(invalid("\"approval_id\" must be 1 to 64 letters, digits, '.', '_' or '-'")),
        };
        let data = body.remove("data").unwrap_or(Value::Null);
        Ok(ApprovalRequest { project_id, approval_id, agent, data, options, expires_in_secs })
    }
}

/// A person's answer to an approval request.
#[derive(Debug, PartialEq)]
pub(crate) struct ApprovalDecision {
    pub project_id: ProjectId,
    pub approval_id: String,
    pub decision: String,
    pub comment: Option<String>,
}

impl ApprovalDecision {
    /// The decision a body asks for; `approval_id` from the body unless the caller has it.
    pub(crate) fn from_body(
        project_id: ProjectId,
        approval_id: Option<String>,
        body: &Map<String, Value>,
    ) -> Result<Self, RequestError> {
        let invalid = |message: &str| RequestError::new(ErrorCode::InvalidRequest, message);
        let approval_id = match (approval_id, body.get("approval_id")) {
            (Some(approval_id), _) => approval_id,
            (None, Some(Value::String(approval_id))) if is_valid_stream_id(approval_id) => approval_id.clone(),
            _ => return Err(invalid("Missing or malformed field: approval_id")),
        };
        let decision = match body.get("decision") {
            Some(Value::String(decision)) if !decision.is_empty() && decision != "expired" => decision.clone(),
            _ => return Err(invalid("\"decision\" must be one of the request's options")),
        };
        let comment = match body.get("comment") {
            None | Some(Value::Null) => None,
            Some(Value::String(comment)) => Some(comment.clone()),
            Some(_) => return Err(invalid("\"comment\" must be a string")),
        };
        Ok(ApprovalDecision { project_id, approval_id, decision, comment })
    }
}

/// A parsed frame: the request (or why it is not one) and the id to echo.
#[derive(Debug)]
pub(crate) struct ParsedFrame {
    pub request_id: Option<RequestId>,
    pub request: Result<Request, RequestError>,
}

/// Limits that parsing enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParseLimits {
    pub max_project_id_bytes: usize,
}

/// Why a body is not a usable JSON object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ObjectError {
    /// Not JSON at all.
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// An object naming this key twice at its top level.
    DuplicateKey(String),
}

/// Parses a JSON object whose top-level keys are unique. serde_json (like most parsers) lets the
/// last of two equal keys win, while other parsers let the first win: a forward saying
/// `"type":"dev","type":"qa"` would reach QA while an agent reading its body saw `dev`. So a
/// repeated key is refused rather than resolved. Numbers keep their exact digits (serde_json's
/// `arbitrary_precision`), so what a client sent is what an agent or a subscriber reads.
pub(crate) fn parse_object(text: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    let mut duplicate = None;
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let parsed = serde::de::DeserializeSeed::deserialize(UniqueKeys { duplicate: &mut duplicate }, &mut deserializer)
        .and_then(|object| deserializer.end().map(|()| object));
    match parsed {
        Ok(object) => Ok(object),
        Err(_) if duplicate.is_some() => Err(ObjectError::DuplicateKey(duplicate.unwrap_or_default())),
        Err(error) if error.is_syntax() || error.is_eof() => Err(ObjectError::NotJson),
        Err(_) => Err(ObjectError::NotObject),
    }
}

/// Deserializes a top-level object, noting the first key it meets twice.
struct UniqueKeys<'a> {
    duplicate: &'a mut Option<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value::<Value>()?;
            if object.contains_key(&key) {
                *self.duplicate = Some(key);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            object.insert(key, value);
        }
        Ok(object)
    }
}

impl ObjectError {
    /// The error a client gets for it.
    pub(crate) fn to_request_error(&self, not_object: &str) -> RequestError {
        match self {
            ObjectError::NotJson => RequestError::invalid_json(),
            ObjectError::NotObject => RequestError::new(ErrorCode::InvalidRequest, not_object),
            ObjectError::DuplicateKey(key) => {
                RequestError::new(ErrorCode::InvalidRequest, format!("Duplicate key {key:?}: each key may appear once"))
            }
        }
    }
}

/// Parses one text frame.
pub(crate) fn parse(text: &str, limits: ParseLimits) -> ParsedFrame {
    let mut object = match parse_object(text.as_bytes()) {
        Ok(object) => object,
        Err(error) => {
            let error = error.to_request_error("A request must be a JSON object with an \"action\"");
            return ParsedFrame { request_id: None, request: Err(error) };
        }
    };
    let request_id = object.get("request_id").cloned();
    let action = match object.get("action") {
        Some(Value::String(action)) => action.clone(),
        Some(other) => {
            let shown = other.to_string();
            return ParsedFrame { request_id, request: Err(RequestError::unknown_action(&shown)) };
        }
        None => {
            return ParsedFrame {
                request_id,
                request: Err(RequestError::new(ErrorCode::InvalidRequest, "Missing field: action")),
            }
        }
    };
    let request = match action.as_str() {
        "ping" => Ok(Request::Ping),
        "authenticate" => match object.get("token") {
            Some(Value::String(token)) if !token.is_empty() => Ok(Request::Authenticate { token: token.clone() }),
            _ => Err(RequestError::new(ErrorCode::InvalidRequest, "\"token\" must be a non-empty string (a JWT)")),
        },
        "subscribe" => parse_subscribe(&object, limits).map(Request::Subscribe),
        "unsubscribe" => project_id(&object, limits).map(|project_id| Request::Unsubscribe { project_id }),
        "forward" => parse_forward(&mut object, limits).map(Request::Forward),
        "publish" => parse_publish(&mut object, limits).map(Request::Publish),
        "presence" => project_id(&object, limits).map(|project_id| Request::Presence { project_id }),
        "presence_stats" => project_id(&object, limits).map(|project_id| Request::PresenceStats { project_id }),
        "stream_start" => project_id(&object, limits)
            .and_then(|project_id| StreamStartRequest::from_body(project_id, &mut object))
            .map(Request::StreamStart),
        "stream_append" => project_id(&object, limits)
            .and_then(|project_id| StreamAppendRequest::from_body(project_id, None, &mut object))
            .map(Request::StreamAppend),
        "approval_request" => project_id(&object, limits)
            .and_then(|project_id| ApprovalRequest::from_body(project_id, &mut object))
            .map(Request::ApprovalRequest),
        "approval_decide" => project_id(&object, limits)
            .and_then(|project_id| ApprovalDecision::from_body(project_id, None, &object))
            .map(Request::ApprovalDecide),
        "cancel" => project_id(&object, limits)
            .and_then(|project_id| CancelRequest::from_body(project_id, &object))
            .map(Request::Cancel),
        "stream_end" => project_id(&object, limits)
            .and_then(|project_id| StreamEndRequest::from_body(project_id, None, &mut object))
            .map(Request::StreamEnd),
        other => Err(RequestError::unknown_action(other)),
    };
    ParsedFrame { request_id, request }
}

fn parse_subscribe(object: &Map<String, Value>, limits: ParseLimits) -> Result<SubscribeRequest, RequestError> {
    let project_id = project_id(object, limits)?;
    let since = match object.get("since") {
        None | Some(Value::Null) => None,
        Some(value) => Some(serde_json::from_value(value.clone()).map_err(|_| {
            RequestError::new(
                ErrorCode::InvalidRequest,
                "\"since\" must be {\"offset\": <integer>, \"epoch\": \"<string>\"}",
            )
        })?),
    };
    let with_position = since.is_some() || object.get("recover") == Some(&Value::Bool(true));
    let join_leave = match object.get("join_leave") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(join_leave)) => *join_leave,
        Some(_) => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"join_leave\" must be true or false")),
    };
    Ok(SubscribeRequest { project_id, since, with_position, join_leave })
}

fn parse_forward(object: &mut Map<String, Value>, limits: ParseLimits) -> Result<ForwardRequest, RequestError> {
    let project_id = project_id(object, limits)?;
    let message_type = match object.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
        Some(Value::String(_)) | None => {
            return Err(RequestError::new(
                ErrorCode::InvalidRequest,
                "Missing field: type (the agent queue: pm, dev, qa or ops)",
            ))
        }
        Some(_) => return Err(RequestError::new(ErrorCode::InvalidRequest, "\"type\" must be a string")),
    };
    let message_id = match object.get("message_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        None | Some(Value::Null) => {
            let generated = uuid::Uuid::new_v4().to_string();
            object.insert("message_id".into(), Value::String(generated.clone()));
            generated
        }
        Some(_) => {
            return Err(RequestError::new(ErrorCode::InvalidRequest, "\"message_id\" must be a non-empty string"))
        }
    };
    Ok(ForwardRequest { message_type, message_id, project_id, body: std::mem::take(object) })
}

fn parse_publish(object: &mut Map<String, Value>, limits: ParseLimits) -> Result<PublishRequest, RequestError> {
    let project_id = project_id(object, limits)?;
    PublishRequest::from_body(project_id, object)
}

/// The optional event name of a publication (`type` or `event`).
fn event_name(value: Option<&Value>) -> Result<Option<String>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(event)) => Ok(Some(event.clone())),
        Some(_) => Err(RequestError::new(ErrorCode::InvalidRequest, "\"type\" must be a string")),
    }
}

fn project_id(object: &Map<String, Value>, limits: ParseLimits) -> Result<ProjectId, RequestError> {
    match object.get("project_id") {
        Some(Value::String(id)) => validate_project_id(id, limits),
        None | Some(Value::Null) => Err(RequestError::new(ErrorCode::InvalidProjectId, "Missing field: project_id")),
        Some(_) => Err(RequestError::new(ErrorCode::InvalidProjectId, "project_id must be a string")),
    }
}

/// Checks a project id from any source (frame, URL, HTTP body).
pub(crate) fn validate_project_id(id: &str, limits: ParseLimits) -> Result<ProjectId, RequestError> {
    if id.is_empty() {
        return Err(RequestError::new(ErrorCode::InvalidProjectId, "project_id must not be empty"));
    }
    if id.len() > limits.max_project_id_bytes {
        return Err(RequestError::new(
            ErrorCode::InvalidProjectId,
            format!("project_id is longer than {} bytes", limits.max_project_id_bytes),
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace() || is_format_character(c)) {
        return Err(RequestError::new(
            ErrorCode::InvalidProjectId,
            "project_id must not contain whitespace, control or invisible format characters",
        ));
    }
    Ok(ProjectId::from(id))
}

/// Unicode's format characters (general category Cf, Unicode 15): invisible, they make one id
/// look like another in a dashboard or a log (U+200B zero-width space, U+FEFF), and the bidi
/// controls among them (U+202A-U+202E, U+2066-U+2069) reorder what is shown.
fn is_format_character(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: ParseLimits = ParseLimits { max_project_id_bytes: 16 };

    fn error_of(text: &str) -> RequestError {
        parse(text, LIMITS).request.unwrap_err()
    }

    #[test]
    fn original_shapes_parse() {
        assert_eq!(parse(r#"{"action":"ping"}"#, LIMITS).request.unwrap(), Request::Ping);
        let subscribe = parse(r#"{"action":"subscribe","project_id":"p1"}"#, LIMITS).request.unwrap();
        assert_eq!(
            subscribe,
            Request::Subscribe(SubscribeRequest {
                project_id: "p1".into(),
                since: None,
                with_position: false,
                join_leave: false
            })
        );
    }

    #[test]
    fn errors_keep_the_original_wording() {
        assert_eq!(error_of("not json").message, "Invalid JSON format");
        assert_eq!(error_of(r#"{"action":"dance"}"#).message, "Unknown action: dance");
        assert_eq!(error_of(r#"{"action":"dance"}"#).code, ErrorCode::UnknownAction);
    }

    #[test]
    fn project_ids_are_checked() {
        for frame in [
            r#"{"action":"subscribe"}"#,
            r#"{"action":"subscribe","project_id":""}"#,
            r#"{"action":"subscribe","project_id":7}"#,
            r#"{"action":"subscribe","project_id":"a-very-long-project-id"}"#,
            r#"{"action":"subscribe","project_id":"two words"}"#,
        ] {
            assert_eq!(error_of(frame).code, ErrorCode::InvalidProjectId, "{frame}");
        }
    }

    #[test]
    fn forward_keeps_the_body_and_fills_a_missing_message_id() {
        let parsed = parse(r#"{"action":"forward","type":"dev","project_id":"p","data":{"x":1}}"#, LIMITS);
        let Ok(Request::Forward(forward)) = parsed.request else { panic!("not a forward") };
        assert_eq!(forward.message_type, "dev");
        assert_eq!(forward.body["data"], json!({"x": 1}));
        assert_eq!(forward.body["message_id"], json!(forward.message_id));
        assert_eq!(forward.message_id.len(), 36);
    }

    #[test]
    fn request_id_is_kept_even_on_errors() {
        let parsed = parse(r#"{"action":"nope","request_id":42}"#, LIMITS);
        assert_eq!(parsed.request_id, Some(json!(42)));
        assert!(parsed.request.is_err());
    }

    #[test]
    fn a_repeated_top_level_key_is_refused_not_resolved() {
        let error = error_of(r#"{"action":"forward","type":"dev","type":"qa","project_id":"p"}"#);
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains("\"type\""), "{}", error.message);
        // Nested objects are the client's data, passed on as they are.
        assert!(parse(r#"{"action":"ping","data":{"a":1,"a":2}}"#, LIMITS).request.is_ok());
    }

    #[test]
    fn not_json_not_an_object_and_trailing_garbage_are_told_apart() {
        assert_eq!(parse_object(b"{\"a\":1} x"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(b"{\"a\":"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(b"[1,2]"), Err(ObjectError::NotObject));
        assert_eq!(parse_object(b"\"text\""), Err(ObjectError::NotObject));
        assert_eq!(parse_object(br#"{"k":1,"k":1}"#), Err(ObjectError::DuplicateKey("k".into())));
    }

    #[test]
    fn numbers_keep_every_digit() {
        let parsed = parse(
            r#"{"action":"forward","type":"dev","project_id":"p","data":{"a":123456789012345678901234567890,"b":0.1000000000000000055511151231257827}}"#,
            LIMITS,
        );
        let Ok(Request::Forward(forward)) = parsed.request else { panic!("not a forward") };
        assert_eq!(
            serde_json::to_string(&forward.body["data"]).unwrap(),
            r#"{"a":123456789012345678901234567890,"b":0.1000000000000000055511151231257827}"#
        );
        let parsed = parse(r#"{"action":"ping","request_id":12345678901234567890123}"#, LIMITS);
        assert_eq!(serde_json::to_string(&parsed.request_id).unwrap(), "12345678901234567890123");
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_in_project_ids() {
        for id in ["acme\u{202E}gpj", "ac\u{200B}me", "\u{FEFF}acme", "acme\u{2066}", "a\u{E0041}"] {
            let error = validate_project_id(id, LIMITS).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidProjectId, "{id:?}");
        }
        assert!(validate_project_id("projet-été", LIMITS).is_ok());
    }

    #[test]
    fn since_must_be_a_position() {
        let ok = parse(r#"{"action":"subscribe","project_id":"p","since":{"offset":3,"epoch":"e"}}"#, LIMITS);
        let Ok(Request::Subscribe(subscribe)) = ok.request else { panic!("not a subscribe") };
        assert_eq!(subscribe.since, Some(StreamPosition { offset: 3, epoch: "e".into() }));
        assert!(subscribe.with_position);
        let bad = error_of(r#"{"action":"subscribe","project_id":"p","since":"yesterday"}"#);
        assert_eq!(bad.code, ErrorCode::InvalidRequest);
    }
}
