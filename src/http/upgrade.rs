//! `GET /` and `GET /ws`: the WebSocket upgrade. `?project_id=P` subscribes at once; a token
//! may come as `?token=JWT` or `Authorization: Bearer JWT`.
//!
//! In order, before any per-connection memory is spent: the drain, the HTTP version, the
//! `Origin`, protected mode and the loopback `Host` ([`crate::access::AccessPolicy::admit_upgrade`]), the
//! task's and the client address's connection caps (503 / 429, before a signature is checked),
//! the token (a token that fails verification gets 401 and no upgrade), its user's connection
//! cap (429), then the URL's project.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use super::{authorization, client_address, error_response, error_response_with_status, header_str};
use crate::{
    access::{connections::ConnectionRefusal, Action, UpgradeRefusal},
    gateway::Gateway,
    protocol::{request::validate_project_id, ErrorCode, RequestError},
    session::{NewSession, Session},
};

#[derive(serde::Deserialize)]
pub(crate) struct ConnectQuery {
    project_id: Option<String>,
    /// A connection token. URLs end up in access logs (the ALB's among them): browsers should
    /// prefer the `authenticate` frame.
    token: Option<String>,
}

pub(crate) async fn upgrade(
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
    let policy = &gateway.policy;
    let origin = header_str(&request, actix_web::http::header::ORIGIN);
    let host = header_str(&request, actix_web::http::header::HOST);
    let client = client_address(&request, policy);
    if let Err(refusal) = policy.admit_upgrade(origin, host, client) {
        let status = match refusal {
            UpgradeRefusal::AnonymousFromNetwork => StatusCode::UNAUTHORIZED,
            UpgradeRefusal::Origin | UpgradeRefusal::Host => StatusCode::FORBIDDEN,
        };
        return Ok(error_response_with_status(&refusal.to_request_error(), status));
    }
    let refuse = |refusal: ConnectionRefusal| {
        gateway.metrics.limit_refused(refusal.label());
        Ok(error_response(&policy.connection_refusal(refusal)))
    };
    let mut permit = match policy.admit_connection(client) {
        Ok(permit) => permit,
        Err(refusal) => return refuse(refusal),
    };
    let principal = match policy.connection_principal(authorization(&request), query.token.as_deref()).await {
        Ok(principal) => principal,
        Err(error) => {
            gateway.metrics.auth_failures.with_label_values(&[error.label()]).inc();
            let refusal = RequestError::new(ErrorCode::Unauthorized, format!("Invalid token: {error}"));
            return Ok(error_response_with_status(&refusal, StatusCode::UNAUTHORIZED));
        }
    };
    if let Some(identity) = &principal.identity {
        if let Err(refusal) = policy.admit_user(&mut permit, identity) {
            return refuse(refusal);
        }
    }
    if principal.identity.is_some() {
        gateway.metrics.authentications.with_label_values(&["upgrade"]).inc();
    }
    let (mut initial_projects, mut refused_projects) = (Vec::new(), Vec::new());
    if let Some(project_id) = query.project_id.as_deref().filter(|id| !id.is_empty()) {
        let project_id = match validate_project_id(project_id, gateway.session.parse_limits) {
            Ok(project_id) => project_id,
            Err(error) => return Ok(error_response(&error)),
        };
        match policy.check(&principal, Action::Subscribe { project_id: &project_id, held: 0 }) {
            Ok(()) => initial_projects.push(project_id),
            Err(error) => refused_projects.push((project_id, error)),
        }
    }
    let mut handshake = actix_http::ws::handshake(request.head())?;
    let new = NewSession {
        gateway: gateway.into_inner(),
        principal,
        permit,
        remote_addr: request.peer_addr().map(|addr| addr.to_string()),
        initial_projects,
        refused_projects,
    };
    let outbound = Session::start(new, body)
        .await
        .map_err(|error| actix_web::error::ErrorServiceUnavailable(format!("hub unavailable: {error}")))?;
    Ok(HttpResponse::from(handshake.message_body(outbound)?).map_into_boxed_body())
}
