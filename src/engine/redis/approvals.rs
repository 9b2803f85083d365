//! Human approvals in Redis: one script per request, decision and delivery, each atomic.
//!
//! Keys of question A in project P: `agenticai:{P}:approval:A` (a hash: the question as JSON,
//! `expires_at` in ms, once decided the winning `decision` as JSON, and `delivered`) and
//! `agenticai:{P}:approvals` (the pending ones, by expiry), both in P's hash slot. Two keys span
//! the projects, so that a task finds the work it may have to take over without knowing the
//! projects: `agenticai:approvals:due` (pending questions by expiry) and
//! `agenticai:approvals:undelivered` (decided, by the end of their delivery lease), members
//! `P<US>A` (the unit separator, which no project id holds). A decided question is kept
//! HISTORY_TTL_SECS after its decision, to tell a late decider who won.
//!
//! **On a Redis Cluster** a script's keys must share one slot, and no set can share the slot of
//! every project: the two sets are then **per project**, `agenticai:{P}:approvals:due` and
//! `agenticai:{P}:approvals:undelivered` (same members, in P's slot, written by the same
//! scripts), and `agenticai:approvals:projects` indexes the projects that ever had a question
//! (added before the question's script runs, so no question is left unindexed). The scans read
//! the index, then each project's set, until a batch is full: their cost grows with the
//! projects that ever asked, a set the index keeps while approvals run (an `SSCAN`-paged scan
//! and pruning the index are left for a later slice).

use redis::{RedisResult, Script, Value};

use super::{channel, cluster::Channels, keys, script_text as text, RedisEngine, NOW_FUNCTION, PUBLISH_FUNCTION};
use crate::{
    engine::{
        approvals::{AskOutcome, DecideOutcome, Undelivered},
        positions::new_epoch,
    },
    protocol::{
        approvals::{ApprovalAsk, Decision},
        request::ProjectId,
        StreamPosition,
    },
};

const DUE: &str = "agenticai:approvals:due";
const UNDELIVERED: &str = "agenticai:approvals:undelivered";
/// On a cluster: the projects with per-project sets.
const PROJECTS: &str = "agenticai:approvals:projects";
/// Separates the project from the approval in the cross-project sets' members.
const SEPARATOR: char = '\u{1f}';

/// KEYS: 1-4 the history's, 5 the question's hash, 6 the project's pending set, 7 the due set.
/// ARGV: 1-6 the publication's, 7 approval id, 8 the question, 9 expires at (ms), 10 the frame,
/// 11 the member of the cross-project sets, 12 the hash's TTL.
const REQUEST: &str = r#"
local asked = redis.call('HGET', KEYS[5], 'ask')
if asked then return {'existing', asked} end
redis.call('HSET', KEYS[5], 'ask', ARGV[8], 'expires_at', ARGV[9])
redis.call('EXPIRE', KEYS[5], ARGV[12])
redis.call('ZADD', KEYS[6], ARGV[9], ARGV[7])
redis.call('ZADD', KEYS[7], ARGV[9], ARGV[11])
local offset, epoch = publish_entry(KEYS, ARGV[10], ARGV[10], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  tonumber(ARGV[6]))
return {'asked', offset, epoch}
"#;

/// KEYS: as [`REQUEST`]'s, 8 the undelivered set. ARGV: 1-6 the publication's, 7 approval id,
/// 8 the decision (JSON), 9 the decision's name, 10 the frame, 11 the member, 12 the lease (ms),
/// 13 the TTL of a decided question.
const DECIDE: &str = r#"
local ask = redis.call('HGET', KEYS[5], 'ask')
if not ask then return {'not_found'} end
local decided = redis.call('HGET', KEYS[5], 'decision')
if decided then return {'already', decided} end
local now = now_ms()
local expiring = ARGV[9] == 'expired'
if expiring ~= (now >= tonumber(redis.call('HGET', KEYS[5], 'expires_at'))) then return {'not_found'} end
if not expiring then
  local known = false
  for _, option in ipairs(cjson.decode(ask)['options']) do
    if option == ARGV[9] then known = true end
  end
  if not known then return {'not_an_option', ask} end
end
redis.call('HSET', KEYS[5], 'decision', ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[13])
redis.call('ZREM', KEYS[6], ARGV[7])
redis.call('ZREM', KEYS[7], ARGV[11])
redis.call('ZADD', KEYS[8], now + tonumber(ARGV[12]), ARGV[11])
publish_entry(KEYS, ARGV[10], ARGV[10], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]))
return {'won', ask}
"#;

/// KEYS: 1 the question's hash, 2 the undelivered set. ARGV: 1 the member.
const DELIVERED: &str = r#"
redis.call('HSET', KEYS[1], 'delivered', '1')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: 1 the project's pending set. ARGV: 1 the questions' key prefix. The pending questions.
const PENDING: &str = r#"
local asks = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ask = redis.call('HGET', ARGV[1] .. id, 'ask')
  if ask then asks[#asks + 1] = ask else redis.call('ZREM', KEYS[1], id) end
end
return asks
"#;

/// KEYS: 1 the undelivered set. ARGV: 1 the lease (ms), 2 the most to claim. Each claimed as
/// {member, question, decision}; a member whose question is gone is dropped.
const CLAIM: &str = r#"
local now = now_ms()
local claimed = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local at = string.find(member, '\31', 1, true)
  local key = 'agenticai:{' .. string.sub(member, 1, at - 1) .. '}:approval:' .. string.sub(member, at + 1)
  local fields = redis.call('HMGET', key, 'ask', 'decision', 'delivered')
  if fields[1] and fields[2] and not fields[3] then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), member)
    claimed[#claimed + 1] = {member, fields[1], fields[2]}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return claimed
"#;

/// KEYS: 1 the due set. ARGV: 1 the most. Members whose question's time has come.
const DUE_NOW: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
"#;

/// Questions and decisions handled per call of the cross-project scans.
const BATCH: usize = 100;

pub(crate) struct ApprovalScripts {
    request: Script,
    decide: Script,
    delivered: Script,
    pending: Script,
    claim: Script,
    due: Script,
    /// Sharded on a cluster: the due and undelivered sets are then per project.
    channels: Channels,
}

impl ApprovalScripts {
    pub(crate) fn new(channels: Channels) -> Self {
        ApprovalScripts {
            request: channels.script(&format!("{PUBLISH_FUNCTION}{REQUEST}")),
            decide: channels.script(&format!("{PUBLISH_FUNCTION}{NOW_FUNCTION}{DECIDE}")),
            delivered: Script::new(DELIVERED),
            pending: Script::new(PENDING),
            claim: Script::new(&format!("{NOW_FUNCTION}{CLAIM}")),
            due: Script::new(&format!("{NOW_FUNCTION}{DUE_NOW}")),
            channels,
        }
    }

    /// The set of pending questions by expiry that holds project P's: the shared one on one
    /// node, P's own on a cluster.
    fn due_key(&self, project_id: &str) -> String {
        self.set_key(DUE, project_id, "due")
    }

    /// The set of decisions by delivery lease that holds project P's (as [`Self::due_key`]).
    fn undelivered_key(&self, project_id: &str) -> String {
        self.set_key(UNDELIVERED, project_id, "undelivered")
    }

    fn set_key(&self, shared: &str, project_id: &str, name: &str) -> String {
        match self.channels {
            Channels::Classic => shared.to_owned(),
            Channels::Sharded => format!("agenticai:{{{project_id}}}:approvals:{name}"),
        }
    }
}

fn approval_key(project_id: &str, approval_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:approval:{approval_id}")
}

fn pending_key(project_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:approvals")
}

fn member(project_id: &str, approval_id: &str) -> String {
    format!("{project_id}{SEPARATOR}{approval_id}")
}

fn split_member(member: &str) -> Option<(ProjectId, String)> {
    let (project_id, approval_id) = member.split_once(SEPARATOR)?;
    Some((project_id.into(), approval_id.to_owned()))
}

fn malformed(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected approval script answer",
        what.to_owned(),
    ))
}

fn json<T: serde::de::DeserializeOwned>(value: Option<&Value>) -> Option<T> {
    serde_json::from_str(&text(value?)?).ok()
}

impl RedisEngine {
    /// Seconds a question's hash lives: past its expiry and the history's TTL.
    fn approval_ttl(&self, expires_at_ms: u64) -> u64 {
        let until_expiry = expires_at_ms.saturating_sub(crate::protocol::approvals::now_ms()) / 1000;
        until_expiry + self.settings.ttl.as_secs().max(1)
    }

    fn publishing_approval<'a>(
        &self,
        script: &'a Script,
        project_id: &str,
        approval_id: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in keys(project_id) {
            invocation.key(key);
        }
        invocation
            .key(approval_key(project_id, approval_id))
            .key(pending_key(project_id))
            .key(self.approval_scripts.due_key(project_id))
            .arg(self.settings.size)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(new_epoch())
            .arg(channel(project_id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(self.settings.max_bytes)
            .arg(approval_id);
        invocation
    }

    pub(super) async fn request_approval(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        frame: &str,
    ) -> RedisResult<AskOutcome> {
        if self.approval_scripts.channels == Channels::Sharded {
            let _: i64 =
                redis::cmd("SADD").arg(PROJECTS).arg(&**project_id).query_async(&mut self.connection.clone()).await?;
        }
        let mut invocation = self.publishing_approval(&self.approval_scripts.request, project_id, &ask.approval_id);
        invocation
            .arg(serde_json::to_string(ask).unwrap_or_default())
            .arg(ask.expires_at_ms)
            .arg(frame)
            .arg(member(project_id, &ask.approval_id))
            .arg(self.approval_ttl(ask.expires_at_ms));
        let answer: Vec<Value> = invocation.invoke_async(&mut self.connection.clone()).await?;
        match answer.first().and_then(text).as_deref() {
            Some("asked") => {
                let offset = answer.get(1).and_then(|offset| redis::from_redis_value_ref(offset).ok());
                let epoch = answer.get(2).and_then(text);
                let (offset, epoch) = offset.zip(epoch).ok_or_else(|| malformed("position"))?;
                Ok(AskOutcome::Asked(StreamPosition { offset, epoch }))
            }
            Some("existing") => Ok(AskOutcome::Existing(json(answer.get(1)).ok_or_else(|| malformed("question"))?)),
            _ => Err(malformed("request")),
        }
    }

    pub(super) async fn decide_approval(
        &self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        frame: &str,
        lease: std::time::Duration,
    ) -> RedisResult<DecideOutcome> {
        let mut invocation = self.publishing_approval(&self.approval_scripts.decide, project_id, approval_id);
        invocation
            .key(self.approval_scripts.undelivered_key(project_id))
            .arg(serde_json::to_string(decision).unwrap_or_default())
            .arg(&decision.decision)
            .arg(frame)
            .arg(member(project_id, approval_id))
            .arg(lease.as_millis() as u64)
            .arg(self.settings.ttl.as_secs().max(1));
        let answer: Vec<Value> = invocation.invoke_async(&mut self.connection.clone()).await?;
        Ok(match answer.first().and_then(text).as_deref() {
            Some("won") => DecideOutcome::Won(json(answer.get(1)).ok_or_else(|| malformed("question"))?),
            Some("already") => DecideOutcome::AlreadyDecided(json(answer.get(1)).ok_or_else(|| malformed("decision"))?),
            Some("not_an_option") => {
                let ask: ApprovalAsk = json(answer.get(1)).ok_or_else(|| malformed("question"))?;
                DecideOutcome::NotAnOption(ask.options)
            }
            Some("not_found") => DecideOutcome::NotFound,
            _ => return Err(malformed("decide")),
        })
    }

    pub(super) async fn approval_was_delivered(&self, project_id: &ProjectId, approval_id: &str) -> RedisResult<()> {
        let _: i64 = self
            .approval_scripts
            .delivered
            .key(approval_key(project_id, approval_id))
            .key(self.approval_scripts.undelivered_key(project_id))
            .arg(member(project_id, approval_id))
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    pub(super) async fn read_pending_approvals(&self, project_id: &ProjectId) -> RedisResult<Vec<ApprovalAsk>> {
        let asks: Vec<String> = self
            .approval_scripts
            .pending
            .key(pending_key(project_id))
            .arg(format!("agenticai:{{{project_id}}}:approval:"))
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(asks.iter().filter_map(|ask| serde_json::from_str(ask).ok()).collect())
    }

    /// The sets a cross-project scan reads: the shared one on one node; on a cluster each
    /// indexed project's.
    async fn scanned_sets(&self, shared: &str, name: &str) -> RedisResult<Vec<String>> {
        if self.approval_scripts.channels == Channels::Classic {
            return Ok(vec![shared.to_owned()]);
        }
        let projects: Vec<String> =
            redis::cmd("SMEMBERS").arg(PROJECTS).query_async(&mut self.connection.clone()).await?;
        Ok(projects.iter().map(|project_id| self.approval_scripts.set_key(shared, project_id, name)).collect())
    }

    pub(super) async fn read_due_approvals(&self) -> RedisResult<Vec<(ProjectId, String)>> {
        let mut due = Vec::new();
        for set in self.scanned_sets(DUE, "due").await? {
            if due.len() >= BATCH {
                break;
            }
            let members: Vec<String> = self
                .approval_scripts
                .due
                .key(set)
                .arg(BATCH - due.len())
                .invoke_async(&mut self.connection.clone())
                .await?;
            due.extend(members.iter().filter_map(|member| split_member(member)));
        }
        Ok(due)
    }

    pub(super) async fn claim_undelivered_decisions(
        &self,
        lease: std::time::Duration,
    ) -> RedisResult<Vec<Undelivered>> {
        let mut undelivered = Vec::new();
        for set in self.scanned_sets(UNDELIVERED, "undelivered").await? {
            if undelivered.len() >= BATCH {
                break;
            }
            let claimed: Vec<Vec<Value>> = self
                .approval_scripts
                .claim
                .key(set)
                .arg(lease.as_millis() as u64)
                .arg(BATCH - undelivered.len())
                .invoke_async(&mut self.connection.clone())
                .await?;
            undelivered.extend(claimed.iter().filter_map(|fields| {
                let (project_id, _) = split_member(&text(fields.first()?)?)?;
                Some(Undelivered { project_id, ask: json(fields.get(1))?, decision: json(fields.get(2))? })
            }));
        }
        Ok(undelivered)
    }
}
