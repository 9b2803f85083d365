//! Operations endpoints: liveness, readiness, Prometheus metrics.

use actix_web::{web, HttpResponse};

use crate::gateway::Gateway;

/// Liveness, as the original server: 200 "OK" while the process serves HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("OK")
}

/// Readiness: 200 when accepting connections, 503 while starting or draining.
pub async fn ready(gateway: web::Data<Gateway>) -> HttpResponse {
    let phase = gateway.lifecycle.phase();
    let mut response =
        if gateway.lifecycle.is_ready() { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    response.json(serde_json::json!({ "status": phase }))
}

pub async fn metrics(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(gateway.metrics.render())
}
