//! Operations endpoints: liveness, readiness, Prometheus metrics.

use actix_web::{web, HttpResponse};

use crate::gateway::Gateway;

/// Liveness, as the original server: 200 "OK" while the process serves HTTP.
pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("OK")
}

/// Readiness: 200 when accepting connections with every dependency up; 503 while starting,
/// draining, or while Redis (when configured) is unreachable (on a cluster: while a shard has no
/// reachable primary; a lost replica is not unreadiness). The body says which:
/// `{"status":"ready"|"starting"|"draining"|"redis_down","redis":null|"up"|"down"}`, so the
/// status of a 503 never reads "ready".
pub(crate) async fn ready(gateway: web::Data<Gateway>) -> HttpResponse {
    let redis_up = gateway.engine.health().backend_up();
    let phase = gateway.lifecycle.phase();
    let status = if gateway.lifecycle.is_ready() && redis_up == Some(false) { "redis_down" } else { phase };
    let ready = status == "ready";
    let mut response = if ready { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    let redis = redis_up.map(|up| if up { "up" } else { "down" });
    response.json(serde_json::json!({ "status": status, "redis": redis }))
}

pub(crate) async fn metrics(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(gateway.metrics.render())
}
