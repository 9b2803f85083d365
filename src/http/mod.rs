//! HTTP routes: the WebSocket upgrade, the publish API, the audit read path, and the
//! operations endpoints (`/health`, `/ready`, `/metrics`).

pub mod audit;
pub mod history;
pub mod operations;
pub mod publish;
pub mod upgrade;

use actix_web::{
    dev::ServiceResponse,
    http::StatusCode,
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    web, HttpResponse,
};

use crate::protocol::{ErrorCode, RequestError};

/// Mounts every route. `cors_origins` may call the `/api/v1` routes from a browser.
pub fn configure(config: &mut web::ServiceConfig, cors_origins: &[String]) {
    config
        .route("/", web::get().to(upgrade::upgrade))
        .route("/ws", web::get().to(upgrade::upgrade))
        .route("/health", web::get().to(operations::health))
        .route("/ready", web::get().to(operations::ready))
        .route("/metrics", web::get().to(operations::metrics))
        .service(
            web::scope("/api/v1")
                .wrap(ErrorHandlers::new().handler(StatusCode::PAYLOAD_TOO_LARGE, payload_too_large))
                .wrap(cors(cors_origins))
                .route("/publish", web::post().to(publish::publish))
                .route("/projects/{project_id}/messages", web::get().to(audit::project_messages))
                .route("/projects/{project_id}/history", web::get().to(history::project_history)),
        );
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

/// actix answers an oversized body with plain text; the API answers in its own error shape.
fn payload_too_large<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (request, _) = response.into_parts();
    let error = RequestError::new(ErrorCode::InvalidRequest, "Body larger than MAX_FRAME_BYTES");
    let mut answer = error_response(&error);
    *answer.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(request, answer).map_into_right_body()))
}

/// An HTTP error body in the protocol's error shape: `{"type":"error","code","message"}`.
pub fn error_response(error: &RequestError) -> HttpResponse {
    let status = match error.code {
        ErrorCode::Forbidden => actix_web::http::StatusCode::UNAUTHORIZED,
        ErrorCode::Busy | ErrorCode::Draining | ErrorCode::Unavailable => {
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        _ => actix_web::http::StatusCode::BAD_REQUEST,
    };
    HttpResponse::build(status).json(serde_json::json!({
        "type": "error",
        "code": error.code,
        "message": error.message,
    }))
}

/// The `Authorization` header, if readable.
pub fn authorization(request: &actix_web::HttpRequest) -> Option<&str> {
    request.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}
