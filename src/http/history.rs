//! `GET /api/v1/projects/{project_id}/history?since=N&epoch=E&limit=M`: catch up over HTTP.
//!
//! Answers `{"project_id","offset","epoch","recovered","publications":[...]}`: the project's
//! current position and up to `limit` publications after offset `since`, oldest first, each
//! exactly as subscribers received it, at most HISTORY_PAGE_BYTES of them (at least one): a
//! history of large publications is read a page at a time, never whole. When more follow the
//! page, `next_since` is the `since` of the next request. `recovered` is false when `epoch` was given and differs,
//! or the history no longer reaches back to `since`: then `publications` is empty, and the
//! client reloads from the source of truth and follows on from the returned `offset`/`epoch`.
//! Readable by anyone who may subscribe: the same data reaches subscribers.

use actix_web::{web, HttpResponse};
use serde_json::value::RawValue;

use super::{
    caller::{ProjectRequest, ReadHistory},
    Refusal,
};
use crate::{
    engine::positions::covers,
    gateway::Gateway,
    protocol::{ErrorCode, RequestError, StreamPosition},
};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(serde::Deserialize)]
pub(crate) struct HistoryQuery {
    since: Option<u64>,
    epoch: Option<String>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
struct HistoryResponse<'a> {
    project_id: &'a str,
    offset: u64,
    epoch: &'a str,
    recovered: bool,
    publications: Vec<&'a RawValue>,
    /// The offset to ask the next page after, when the history holds more than this page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_since: Option<u64>,
}

pub(crate) async fn project_history(
    query: web::Query<HistoryQuery>,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadHistory>,
) -> Result<HttpResponse, Refusal> {
    let project_id = project.project_id;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let (top, frames) = gateway
        .engine
        .history(&project_id, query.since.unwrap_or(0), limit, gateway.history_page_bytes)
        .await
        .map_err(|error| RequestError::new(ErrorCode::Unavailable, format!("history unavailable: {error}")))?;
    let since = StreamPosition {
        offset: query.since.unwrap_or(0),
        epoch: query.epoch.clone().unwrap_or_else(|| top.epoch.clone()),
    };
    let recovered = covers(&since, &top, frames.first().map(|(offset, _)| *offset));
    // Without recovery the publications after `since` are not what the client missed (another
    // epoch's offsets, or a gap before the first retained one): none are listed, as a resume
    // over WebSocket replays none.
    let publications: Vec<&RawValue> = if recovered {
        frames.iter().filter_map(|(_, frame)| serde_json::from_str::<&RawValue>(frame).ok()).collect()
    } else {
        Vec::new()
    };
    let next_since = frames.last().map(|(offset, _)| *offset).filter(|last| recovered && *last < top.offset);
    gateway.metrics.history_reads.with_label_values(&[if recovered { "hit" } else { "miss" }]).inc();
    Ok(HttpResponse::Ok().json(HistoryResponse {
        project_id: &project_id,
        offset: top.offset,
        epoch: &top.epoch,
        recovered,
        publications,
        next_since,
    }))
}
