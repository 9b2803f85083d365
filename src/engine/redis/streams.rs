//! Agent streams in Redis: one script per start, append and end, each atomic with the
//! publication it makes (the start's and the end's go through `publish_entry`, the publish
//! script's own step).
//!
//! Keys of stream S in project P, in P's hash slot: `agenticai:{P}:s:S` (a hash: `status`,
//! `meta` as JSON, `last` append in ms of Redis's clock, the end's `result`, the current
//! second's append count), `agenticai:{P}:s:S:text` (the text: `APPEND` answers the new length
//! atomically), and `agenticai:{P}:streams` (a sorted set of the open ones, by start time). All
//! expire HISTORY_TTL_SECS after their last write, like the history they belong to.
//!
//! An append travels on the project's channel as `a:<stream id>:<length>:<text>` (stream ids
//! hold no `:`), in order with the project's publications.

use bytestring::ByteString;
use redis::{RedisResult, Script, Value};

use super::{channel, cluster::Channels, keys, script_text as text, RedisEngine, NOW_FUNCTION, PUBLISH_FUNCTION};
use crate::{
    engine::{
        positions::new_epoch,
        streams::{Append, AppendOutcome, CancelOutcome, End, EndOutcome, StartOutcome, StreamSnapshot},
    },
    protocol::{
        request::ProjectId,
        streams::{ended_prefix, snapshot_prefix_around_meta, StreamId, StreamMeta, StreamStatus},
        StreamPosition,
    },
};

/// KEYS: 1-4 the history's (stream, offset, epoch, bytes), 5 the stream's hash, 6 its text, 7 the
/// open set. ARGV: 1-6 the publication's (HISTORY_SIZE, TTL, a new epoch, channel, published-at,
/// HISTORY_MAX_BYTES), 7 stream id, 8 meta, 9 STREAM_MAX_OPEN_PER_PROJECT, 10 the start frame.
const START: &str = r#"
local status = redis.call('HGET', KEYS[5], 'status')
if status then
  return {'existing', status, redis.call('STRLEN', KEYS[6]), redis.call('HGET', KEYS[5], 'meta')}
end
if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[9]) then return {'too_many'} end
local now = now_ms()
redis.call('HSET', KEYS[5], 'status', 'open', 'meta', ARGV[8], 'last', now)
redis.call('SET', KEYS[6], '')
redis.call('ZADD', KEYS[7], now, ARGV[7])
for i = 5, 7 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
local offset, epoch = publish_entry(KEYS, ARGV[10], ARGV[10], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  tonumber(ARGV[6]))
return {'started', offset, epoch}
"#;

/// KEYS: 1 the stream's hash, 2 its text. ARGV: 1 text, 2 `at` ('' none), 3 STREAM_MAX_BYTES,
/// 4 STREAM_MAX_APPENDS_PER_SEC, 5 STREAM_IDLE_TIMEOUT in ms, 6 TTL, 7 channel, 8 stream id.
const APPEND: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'not_found', 0} end
local length = redis.call('STRLEN', KEYS[2])
local text = ARGV[1]
local at = tonumber(ARGV[2])
-- A retry of an append that applied (before the end, too) is answered as applied.
if at and at < length and at + #text <= length and redis.call('GETRANGE', KEYS[2], at, at + #text - 1) == text then
  return {'duplicate', length}
end
if status ~= 'open' then return {'ended', length, status} end
local now = now_ms()
if now - tonumber(redis.call('HGET', KEYS[1], 'last') or now) >= tonumber(ARGV[5]) then return {'idle', length} end
if at and at ~= length then return {'conflict', length} end
if length + #text > tonumber(ARGV[3]) then return {'too_large', length} end
local rate = tonumber(ARGV[4])
if rate > 0 then
  local second = math.floor(now / 1000)
  if tonumber(redis.call('HGET', KEYS[1], 'second') or '-1') ~= second then
    redis.call('HSET', KEYS[1], 'second', second, 'appends', 0)
  end
  if tonumber(redis.call('HGET', KEYS[1], 'appends')) >= rate then
    return {'rate_limited', length, 1000 - now % 1000}
  end
  redis.call('HINCRBY', KEYS[1], 'appends', 1)
end
length = redis.call('APPEND', KEYS[2], text)
redis.call('HSET', KEYS[1], 'last', now)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[7], 'a:' .. ARGV[8] .. ':' .. length .. ':' .. text)
return {'applied', length}
"#;

/// KEYS: as [`START`]'s. ARGV: 1-6 the publication's, 7 stream id, 8 status, 9 the end's data
/// (JSON), 10 the live end frame up to its length, 11 and 12 the snapshot prefix around the
/// meta's members, 13 STREAM_IDLE_TIMEOUT in ms when only an idle stream is to end ('' else).
const END: &str = r#"
local status = redis.call('HGET', KEYS[5], 'status')
if not status then return {'not_found'} end
local length = redis.call('STRLEN', KEYS[6])
if status ~= 'open' then return {'already', status, length} end
if ARGV[13] ~= '' and now_ms() - tonumber(redis.call('HGET', KEYS[5], 'last') or '0') < tonumber(ARGV[13]) then
  return {'not_idle', length}
end
redis.call('HSET', KEYS[5], 'status', ARGV[8], 'result', ARGV[9])
redis.call('ZREM', KEYS[7], ARGV[7])
local meta = redis.call('HGET', KEYS[5], 'meta') or '{}'
local text = redis.call('GET', KEYS[6]) or ''
local live = ARGV[10] .. length .. '}'
local kept = ARGV[11] .. ',' .. string.sub(meta, 2, -2) .. ARGV[12] .. length .. ',"text":' .. cjson.encode(text) .. '}'
for i = 5, 6 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
local offset, epoch = publish_entry(KEYS, kept, live, tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  tonumber(ARGV[6]))
return {'ended', length, offset, epoch}
"#;

/// KEYS: 1 the stream's hash, 2 its text. ARGV: 1 the cancel's message id. The first cancel of an
/// open stream is recorded (`cancel`), a later one answered with it.
const CANCEL: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'not_found'} end
if status ~= 'open' then return {'ended', status, redis.call('STRLEN', KEYS[2])} end
local first = redis.call('HGET', KEYS[1], 'cancel')
if first then return {'repeat', first} end
redis.call('HSET', KEYS[1], 'cancel', ARGV[1])
return {'first', redis.call('HGET', KEYS[1], 'meta') or '{}'}
"#;

/// KEYS: 1 the open set. ARGV: 1 the streams' key prefix (`agenticai:{P}:s:`). Each open
/// stream as {id, status, meta, result, idle ms, text}; an id whose keys expired is dropped.
const READ_OPEN: &str = r#"
local now = now_ms()
local streams = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. id
  local fields = redis.call('HMGET', key, 'status', 'meta', 'result', 'last')
  if fields[1] then
    streams[#streams + 1] = {id, fields[1], fields[2] or '{}', fields[3] or '', now - tonumber(fields[4] or now),
      redis.call('GET', key .. ':text') or ''}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return streams
"#;

/// KEYS: 1 the stream's hash, 2 its text. The stream as one entry of [`READ_OPEN`], or nothing.
const READ_ONE: &str = r#"
local fields = redis.call('HMGET', KEYS[1], 'status', 'meta', 'result', 'last')
if not fields[1] then return {} end
local now = now_ms()
return {'', fields[1], fields[2] or '{}', fields[3] or '', now - tonumber(fields[4] or now),
  redis.call('GET', KEYS[2]) or ''}
"#;

pub(crate) struct StreamScripts {
    start: Script,
    append: Script,
    end: Script,
    read_open: Script,
    read_one: Script,
    cancel: Script,
}

impl StreamScripts {
    pub(crate) fn new(channels: Channels) -> Self {
        StreamScripts {
            start: channels.script(&format!("{PUBLISH_FUNCTION}{NOW_FUNCTION}{START}")),
            append: channels.script(&format!("{NOW_FUNCTION}{APPEND}")),
            end: channels.script(&format!("{PUBLISH_FUNCTION}{NOW_FUNCTION}{END}")),
            read_open: Script::new(&format!("{NOW_FUNCTION}{READ_OPEN}")),
            read_one: Script::new(&format!("{NOW_FUNCTION}{READ_ONE}")),
            cancel: Script::new(CANCEL),
        }
    }
}

fn stream_key(project_id: &str, stream_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:s:{stream_id}")
}

fn open_set_key(project_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:streams")
}

/// A script's answer that is not what the script returns.
fn malformed(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected stream script answer",
        what.to_owned(),
    ))
}

fn number(value: &Value) -> Option<u64> {
    redis::from_redis_value_ref(value).ok()
}

/// One entry of [`READ_OPEN`] or [`READ_ONE`].
fn snapshot(stream_id: StreamId, fields: &[Value]) -> Option<StreamSnapshot> {
    let [_, status, meta, result, idle_ms, body] = fields else { return None };
    let status = StreamStatus::parse(&text(status)?)?;
    let meta: StreamMeta = serde_json::from_str(&text(meta)?).ok()?;
    let result = text(result).filter(|result| !result.is_empty());
    let result = result.and_then(|result| serde_json::from_str(&result).ok()).unwrap_or_default();
    let idle_for = std::time::Duration::from_millis(number(idle_ms).unwrap_or(0));
    Some(StreamSnapshot { stream_id, status, meta, result, text: text(body)?, idle_for })
}

impl RedisEngine {
    /// The script invocation with the history's keys and the publication's arguments, shared by
    /// start and end.
    fn publishing<'a>(&self, script: &'a Script, project_id: &str, stream_id: &str) -> redis::ScriptInvocation<'a> {
        let stream = stream_key(project_id, stream_id);
        let mut invocation = script.prepare_invoke();
        for key in keys(project_id) {
            invocation.key(key);
        }
        invocation
            .key(&stream)
            .key(format!("{stream}:text"))
            .key(open_set_key(project_id))
            .arg(self.settings.size)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(new_epoch())
            .arg(channel(project_id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(self.settings.max_bytes)
            .arg(stream_id);
        invocation
    }

    pub(super) async fn start_stream(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
        frame: &ByteString,
    ) -> RedisResult<StartOutcome> {
        let meta_json = serde_json::to_string(meta).unwrap_or_default();
        let mut invocation = self.publishing(&self.stream_scripts.start, project_id, stream_id);
        invocation.arg(meta_json).arg(self.stream_limits.max_open_per_project).arg(&**frame);
        let answer: Vec<Value> = invocation.invoke_async(&mut self.connection.clone()).await?;
        match answer.first().and_then(text).as_deref() {
            Some("started") => {
                let offset = answer.get(1).and_then(number).ok_or_else(|| malformed("start offset"))?;
                let epoch = answer.get(2).and_then(text).ok_or_else(|| malformed("start epoch"))?;
                Ok(StartOutcome::Started { position: Some(StreamPosition { offset, epoch }) })
            }
            Some("existing") => {
                let status = answer.get(1).and_then(text).and_then(|status| StreamStatus::parse(&status));
                let length = answer.get(2).and_then(number).unwrap_or(0);
                let meta = answer.get(3).and_then(text).and_then(|meta| serde_json::from_str(&meta).ok());
                Ok(StartOutcome::Existing {
                    meta: meta.unwrap_or_default(),
                    status: status.ok_or_else(|| malformed("stream status"))?,
                    length,
                })
            }
            Some("too_many") => Ok(StartOutcome::TooMany),
            _ => Err(malformed("start")),
        }
    }

    pub(super) async fn append_to_stream(&self, project_id: &ProjectId, append: &Append) -> RedisResult<AppendOutcome> {
        let key = stream_key(project_id, &append.stream_id);
        let limits = &self.stream_limits;
        let answer: Vec<Value> = self
            .stream_scripts
            .append
            .key(&key)
            .key(format!("{key}:text"))
            .arg(&append.text)
            .arg(append.at.map(|at| at.to_string()).unwrap_or_default())
            .arg(limits.max_bytes)
            .arg(limits.max_appends_per_sec)
            .arg(limits.idle_timeout.as_millis() as u64)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(channel(project_id))
            .arg(&*append.stream_id)
            .invoke_async(&mut self.connection.clone())
            .await?;
        let length = answer.get(1).and_then(number).unwrap_or(0);
        Ok(match answer.first().and_then(text).as_deref() {
            Some("applied") => AppendOutcome::Applied { length },
            Some("duplicate") => AppendOutcome::Duplicate { length },
            Some("conflict") => AppendOutcome::Conflict { length },
            Some("too_large") => AppendOutcome::TooLarge { length },
            Some("idle") => AppendOutcome::Idle,
            Some("not_found") => AppendOutcome::NotFound,
            Some("ended") => {
                let status = answer.get(2).and_then(text).and_then(|status| StreamStatus::parse(&status));
                AppendOutcome::Ended { status: status.ok_or_else(|| malformed("stream status"))?, length }
            }
            Some("rate_limited") => {
                let retry_after_ms = answer.get(2).and_then(number).unwrap_or(1000);
                AppendOutcome::RateLimited { retry_after: std::time::Duration::from_millis(retry_after_ms) }
            }
            _ => return Err(malformed("append")),
        })
    }

    pub(super) async fn end_stream(&self, project_id: &ProjectId, end: &End) -> RedisResult<EndOutcome> {
        let (head, tail) = snapshot_prefix_around_meta(project_id, &end.stream_id, end.status, &end.data);
        let idle_ms = end.only_if_idle.then(|| (self.stream_limits.idle_timeout.as_millis() as u64).to_string());
        let mut invocation = self.publishing(&self.stream_scripts.end, project_id, &end.stream_id);
        invocation
            .arg(end.status.as_str())
            .arg(serde_json::to_string(&end.data).unwrap_or_default())
            .arg(ended_prefix(project_id, &end.stream_id, end.status, &end.data))
            .arg(head)
            .arg(tail)
            .arg(idle_ms.unwrap_or_default());
        let answer: Vec<Value> = invocation.invoke_async(&mut self.connection.clone()).await?;
        let length = answer.get(if answer.len() > 2 { 2 } else { 1 }).and_then(number);
        Ok(match answer.first().and_then(text).as_deref() {
            Some("ended") => {
                let length = answer.get(1).and_then(number).ok_or_else(|| malformed("end length"))?;
                let offset = answer.get(2).and_then(number).ok_or_else(|| malformed("end offset"))?;
                let epoch = answer.get(3).and_then(text).ok_or_else(|| malformed("end epoch"))?;
                EndOutcome::Ended { length, position: Some(StreamPosition { offset, epoch }) }
            }
            Some("already") => {
                let status = answer.get(1).and_then(text).and_then(|status| StreamStatus::parse(&status));
                EndOutcome::AlreadyEnded {
                    status: status.ok_or_else(|| malformed("stream status"))?,
                    length: length.unwrap_or(0),
                }
            }
            Some("not_idle") => EndOutcome::NotIdle,
            Some("not_found") => EndOutcome::NotFound,
            _ => return Err(malformed("end")),
        })
    }

    pub(super) async fn cancel_stream(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        message_id: &str,
    ) -> RedisResult<CancelOutcome> {
        let key = stream_key(project_id, stream_id);
        let answer: Vec<Value> = self
            .stream_scripts
            .cancel
            .key(&key)
            .key(format!("{key}:text"))
            .arg(message_id)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(match answer.first().and_then(text).as_deref() {
            Some("first") => {
                let meta: Option<StreamMeta> =
                    answer.get(1).and_then(text).and_then(|meta| serde_json::from_str(&meta).ok());
                CancelOutcome::First { agent: meta.and_then(|meta| meta.agent) }
            }
            Some("repeat") => CancelOutcome::Repeat {
                message_id: answer.get(1).and_then(text).ok_or_else(|| malformed("cancel id"))?,
            },
            Some("ended") => {
                let status = answer.get(1).and_then(text).and_then(|status| StreamStatus::parse(&status));
                CancelOutcome::Ended {
                    status: status.ok_or_else(|| malformed("stream status"))?,
                    length: answer.get(2).and_then(number).unwrap_or(0),
                }
            }
            Some("not_found") => CancelOutcome::NotFound,
            _ => return Err(malformed("cancel")),
        })
    }

    pub(super) async fn read_open_streams(&self, project_id: &ProjectId) -> RedisResult<Vec<StreamSnapshot>> {
        let prefix = format!("agenticai:{{{project_id}}}:s:");
        let streams: Vec<Vec<Value>> = self
            .stream_scripts
            .read_open
            .key(open_set_key(project_id))
            .arg(prefix)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(streams
            .iter()
            .filter_map(|fields| {
                let stream_id: String = text(fields.first()?)?;
                snapshot(stream_id.into(), fields)
            })
            .collect())
    }

    pub(super) async fn read_stream(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
    ) -> RedisResult<Option<StreamSnapshot>> {
        let key = stream_key(project_id, stream_id);
        let fields: Vec<Value> = self
            .stream_scripts
            .read_one
            .key(&key)
            .key(format!("{key}:text"))
            .invoke_async(&mut self.connection.clone())
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        snapshot(stream_id.clone(), &fields).map(Some).ok_or_else(|| malformed("stream"))
    }
}
