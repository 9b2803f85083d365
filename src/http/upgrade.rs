//! `GET /` and `GET /ws`: the WebSocket upgrade. `?project_id=P` subscribes at once.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{authorization, error_response};
use crate::{
    gateway::Gateway,
    protocol::{request::validate_project_id, ErrorCode, RequestError},
    session::{NewSession, Session},
};

#[derive(serde::Deserialize)]
pub struct ConnectQuery {
    project_id: Option<String>,
}

pub async fn upgrade(
    request: HttpRequest,
    body: web::Payload,
    query: web::Query<ConnectQuery>,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, actix_web::Error> {
    if gateway.lifecycle.is_draining() {
        let error = RequestError::new(ErrorCode::Draining, "The server is restarting; connect to another instance");
        return Ok(error_response(&error));
    }
    if request.version() < actix_web::http::Version::HTTP_11 {
        // RFC 6455 4.1: the opening handshake is an HTTP/1.1 (or later) request.
        let error = RequestError::new(ErrorCode::InvalidRequest, "A WebSocket upgrade needs HTTP/1.1");
        return Ok(error_response(&error));
    }
    let mut initial_projects = Vec::new();
    if let Some(project_id) = query.project_id.as_deref().filter(|id| !id.is_empty()) {
        match validate_project_id(project_id, gateway.session.parse_limits) {
            Ok(project_id) => initial_projects.push(project_id),
            Err(error) => return Ok(error_response(&error)),
        }
    }
    let principal = gateway.policy.principal(authorization(&request));
    let mut handshake = actix_http::ws::handshake(request.head())?;
    let new = NewSession {
        gateway: gateway.into_inner(),
        principal,
        remote_addr: request.peer_addr().map(|addr| addr.to_string()),
        initial_projects,
    };
    let outbound = Session::start(new, body)
        .await
        .map_err(|error| actix_web::error::ErrorServiceUnavailable(format!("hub unavailable: {error}")))?;
    Ok(HttpResponse::from(handshake.message_body(outbound)?).map_into_boxed_body())
}
