//! HTTP routes: the WebSocket upgrade, the publish API, the audit read path, the operations
//! endpoints (`/health`, `/ready`, `/metrics`) and the status page (`/status`, `/api/v1/stats`).
//! With INTERNAL_PORT, the operator endpoints are on a port of their own ([`ports`]).

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod caller;
pub(crate) mod handshake;
pub(crate) mod history;
pub(crate) mod operations;
pub(crate) mod ports;
pub(crate) mod presence;
pub(crate) mod publish;
pub(crate) mod status;
pub(crate) mod streams;
pub(crate) mod upgrade;

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};

use std::net::IpAddr;

use crate::protocol::{ErrorCode, RequestError};

/// Mounts every route. `cors_origins` may call the `/api/v1` routes from a browser. With
/// `internal_port`, the operator endpoints answer only on the internal port, and the rest only
/// on the public one ([`ports`]). A path no route has is answered with a JSON 404; a known path
/// asked with another method, 405 with `Allow` (RFC 9110 15.5.6).
pub(crate) fn configure(config: &mut web::ServiceConfig, cors_origins: &[String], internal_port: bool) {
    config
        .app_data(web::QueryConfig::default().error_handler(|error, _| bad_query(error)))
        .app_data(web::PathConfig::default().error_handler(|error, _| bad_query(error)))
        .default_service(web::to(not_found));
    if internal_port {
        config
            .service(
                web::scope("")
                    .guard(ports::on(ports::Port::Internal))
                    .configure(operator_pages)
                    .service(web::resource("/api/v1/stats").get(status::stats).default_service(allowing("GET"))),
            )
            .service(
                web::scope("")
                    .guard(ports::on(ports::Port::Public))
                    .configure(|routes| public_routes(routes, cors_origins, false)),
            );
    } else {
        public_routes(config, cors_origins, true);
    }
}

/// The routes of the public port; `with_operator`: the operator endpoints too.
fn public_routes(config: &mut web::ServiceConfig, cors_origins: &[String], with_operator: bool) {
    config
        .service(web::resource(["/", "/ws"]).get(upgrade::upgrade).default_service(allowing("GET")))
        .service(web::resource("/health").get(operations::health).default_service(allowing("GET")))
        .service(web::resource("/ready").get(operations::ready).default_service(allowing("GET")));
    if with_operator {
        operator_pages(config);
    }
    let project = "/projects/{project_id}";
    let api = web::scope("/api/v1")
        .wrap(cors(cors_origins))
        .service(web::resource("/publish").post(publish::publish).default_service(allowing("POST")))
        .service(
            web::resource(format!("{project}/messages")).get(audit::project_messages).default_service(allowing("GET")),
        )
        .service(
            web::resource(format!("{project}/history")).get(history::project_history).default_service(allowing("GET")),
        )
        .service(
            web::resource(format!("{project}/presence"))
                .get(presence::project_presence)
                .default_service(allowing("GET")),
        )
        .service(
            web::resource(format!("{project}/approvals"))
                .post(approvals::request)
                .get(approvals::pending)
                .default_service(allowing("GET, POST")),
        )
        .service(
            web::resource(format!("{project}/approvals/{{approval_id}}/decide"))
                .post(approvals::decide)
                .default_service(allowing("POST")),
        )
        .service(
            web::resource(format!("{project}/streams"))
                .post(streams::start)
                .get(streams::list)
                .default_service(allowing("GET, POST")),
        )
        .service(
            web::resource(format!("{project}/streams/{{stream_id}}"))
                .get(streams::one)
                .default_service(allowing("GET")),
        )
        .service(
            web::resource(format!("{project}/streams/{{stream_id}}/append"))
                .post(streams::append)
                .default_service(allowing("POST")),
        )
        .service(
            web::resource(format!("{project}/streams/{{stream_id}}/end"))
                .post(streams::end)
                .default_service(allowing("POST")),
        );
    config.service(if with_operator {
        api.service(web::resource("/stats").get(status::stats).default_service(allowing("GET")))
    } else {
        api
    });
}

/// The operator endpoints but `/api/v1/stats`: the metrics and the status page.
fn operator_pages(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/metrics").get(operations::metrics).default_service(allowing("GET")))
        .service(web::resource("/status").get(status::page).default_service(allowing("GET")))
        .service(web::resource("/status/app.js").get(status::script).default_service(allowing("GET")))
        .service(web::resource("/status/style.css").get(status::style).default_service(allowing("GET")));
}

/// What a path answers to a method none of its routes take: 405, `Allow` naming `methods`.
fn allowing(methods: &'static str) -> actix_web::Route {
    web::to(move |request: HttpRequest| async move {
        let error = RequestError::new(
            ErrorCode::InvalidRequest,
            format!("{} is not a method of {}: use {methods}", request.method(), request.path()),
        );
        let mut response = error_response_with_status(&error, StatusCode::METHOD_NOT_ALLOWED);
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(methods));
        response
    })
}

/// What a path no route has is answered with.
async fn not_found(request: HttpRequest) -> HttpResponse {
    let error = RequestError::new(ErrorCode::NotFound, format!("No such path: {}", request.path()));
    error_response_with_status(&error, StatusCode::NOT_FOUND)
}

/// The API's CORS policy: the listed origins, the methods and headers the API uses; with no
/// origins, browsers may not call it cross-origin at all.
fn cors(origins: &[String]) -> actix_cors::Cors {
    origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST"])
        .allowed_headers([actix_web::http::header::AUTHORIZATION, actix_web::http::header::CONTENT_TYPE])
        .max_age(3600)
}

/// The HTTP status an error code is answered with.
pub(crate) fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        // A refusal without any credential presented; see `refusal_status` for the others.
        ErrorCode::Forbidden | ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Busy | ErrorCode::Draining | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::RateLimited | ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StreamConflict | ErrorCode::StreamEnded | ErrorCode::TooManyStreams => StatusCode::CONFLICT,
        ErrorCode::StreamNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyDecided => StatusCode::CONFLICT,
        ErrorCode::StreamTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An error answer and its HTTP status; from a bare [`RequestError`] the status is its code's.
/// A handler or extractor returns it as its error and it renders itself
/// ([`error_response_with_status`]).
#[derive(Debug, thiserror::Error)]
#[error("{status}: {error}")]
pub(crate) struct Refusal {
    pub error: RequestError,
    pub status: StatusCode,
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        let status = status_for(error.code);
        Refusal { error, status }
    }
}

impl Refusal {
    pub(crate) fn new(error: RequestError, status: StatusCode) -> Self {
        Refusal { error, status }
    }

    /// An access refusal: 403 when the caller presented a valid credential that does not allow
    /// this, 401 when it presented none.
    pub(crate) fn access(error: RequestError, principal: &crate::access::Principal) -> Self {
        let status = if error.code == ErrorCode::Forbidden && !principal.is_anonymous() {
            StatusCode::FORBIDDEN
        } else {
            status_for(error.code)
        };
        Refusal { error, status }
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        error_response_with_status(&self.error, self.status)
    }
}

/// The client's address: the TCP peer, or behind a trusted proxy the address it forwarded
/// ([`crate::access::AccessPolicy::client_address`]).
pub(crate) fn client_address(request: &HttpRequest, policy: &crate::access::AccessPolicy) -> Option<IpAddr> {
    let forwarded_for: Vec<&str> =
        request.headers().get_all("x-forwarded-for").filter_map(|value| value.to_str().ok()).collect();
    policy.client_address(request.peer_addr().map(|addr| addr.ip()), &forwarded_for)
}

/// An HTTP error body in the protocol's error shape: `{"type":"error","code","message"}`.
pub(crate) fn error_response(error: &RequestError) -> HttpResponse {
    error_response_with_status(error, status_for(error.code))
}

/// The challenge of every 401.
const BEARER_CHALLENGE: &str = "Bearer realm=\"agenticai-websocket\"";

/// The protocol's error shape with a status of the caller's choosing (a 401 with its
/// `WWW-Authenticate` challenge); an error that says when
/// to retry also carries `retry_after_ms` and the `Retry-After` header (whole seconds).
pub(crate) fn error_response_with_status(error: &RequestError, status: StatusCode) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        // RFC 9110 11.6.1: a 401 names the scheme that would succeed (RFC 6750's Bearer, which
        // carries both a publish API key and a connection token).
        response.insert_header((header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
    }
    // Every 401 says `unauthorized`, whichever check refused the missing or wrong credential
    // (the policy calls a missing publish key `forbidden`, as the WebSocket's frames still do).
    let code = if status == StatusCode::UNAUTHORIZED { ErrorCode::Unauthorized } else { error.code };
    let mut body = serde_json::json!({
        "type": "error",
        "code": code,
        "message": error.message,
    });
    if let Some(retry_after_ms) = error.retry_after_ms() {
        response.insert_header((header::RETRY_AFTER, retry_after_ms.div_ceil(1000).to_string()));
        body["retry_after_ms"] = retry_after_ms.into();
    }
    let details =
        [error.stream.as_deref().map(serde_json::to_value), error.approval.as_deref().map(serde_json::to_value)];
    for detail in details.into_iter().flatten() {
        if let (Some(body), Ok(serde_json::Value::Object(fields))) = (body.as_object_mut(), detail) {
            body.extend(fields);
        }
    }
    response.json(body)
}

/// A request header, if present and readable as text.
pub(crate) fn header_str(request: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|value| value.to_str().ok())
}

/// The `Authorization` header, if readable.
pub(crate) fn authorization(request: &HttpRequest) -> Option<&str> {
    header_str(request, header::AUTHORIZATION)
}

/// actix answers a query string or path that does not deserialize with plain text; the API
/// answers in its own error shape, naming what was wrong.
fn bad_query(error: impl std::fmt::Display) -> actix_web::Error {
    let message = format!("Invalid query string: {error}");
    actix_web::error::InternalError::from_response(
        message.clone(),
        error_response(&RequestError::new(ErrorCode::InvalidRequest, message)),
    )
    .into()
}
