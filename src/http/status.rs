//! The status page (`GET /status`, its script and style) and the figures it shows
//! (`GET /api/v1/stats?history=SECONDS`, from [`crate::stats`]).
//!
//! The page is a shell compiled into the binary (`src/http/status/`): no CDN, works offline,
//! and holds no figure itself, so it is served to anyone; everything it shows comes from
//! `/api/v1/stats`, which is protected like the audit read ([`AccessPolicy::check_operator`]),
//! unless it came in on INTERNAL_PORT (`super::ports`): that port is the operators' own.
//! Where a credential is needed the page asks for one and sends it as `Authorization: Bearer`.
//! Its Content-Security-Policy allows only its own script, style and API: an injected string
//! cannot run, and no other site may frame it.
//!
//! [`AccessPolicy::check_operator`]: crate::access::AccessPolicy::check_operator

use actix_web::{http::header, web, HttpResponse};

use super::caller::Operator;
use crate::{
    gateway::Gateway,
    stats::{ServerState, KEPT_SAMPLES},
};

const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/app.js");
const STYLE: &str = include_str!("status/style.css");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
                                       connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

pub(crate) async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

pub(crate) async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

#[derive(serde::Deserialize)]
pub(crate) struct StatsQuery {
    /// Seconds of chart series to include (at most the five minutes kept); absent: none.
    history: Option<usize>,
}

/// `_operator`: on the internal port (INTERNAL_PORT), reachable only from the operators'
/// network, anyone; elsewhere a caller the policy admits as an operator.
pub(crate) async fn stats(
    query: web::Query<StatsQuery>,
    gateway: web::Data<Gateway>,
    _operator: Operator,
) -> HttpResponse {
    let state = ServerState {
        phase: gateway.lifecycle.phase(),
        redis_configured: gateway.engine.health().backend_up().is_some(),
    };
    let history = query.history.unwrap_or(0).min(KEPT_SAMPLES);
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(gateway.stats.report(state, history))
}
