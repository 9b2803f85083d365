//! The hub actor: the registry of local connections and their subscriptions, and the fan-out of
//! publications to them.
//!
//! It owns two maps kept in step: connection -> projects and project -> (connection -> outbox).
//! A publication arrives already encoded ([`Deliver`]); the hub pushes the same bytes into each
//! subscriber's [`Outbox`] without waiting on anyone: a full outbox closes that client as a slow
//! consumer and the fan-out goes on.
//!
//! Subscription confirmations are pushed by the hub itself, after it registered the
//! subscription, so a client never sees a project's message before its
//! `subscription_confirmed`, nor misses one published after it.
//!
//! **Mailbox: [`HUB_MAILBOX_CAPACITY`] messages.** Client-driven messages (subscribe,
//! unsubscribe) are sent with `try_send`: when full the client gets `busy`. Publishers `send` and
//! wait for room (their HTTP request, or the session's in-flight budget, bounds them).
//! `Connect` is awaited by the upgrade handler, so accepting slows down instead of queueing.
//! `Disconnect` uses `do_send`, which ignores the bound: there is exactly one per connection, so
//! it is bounded by the number of connections, and losing one would leak a registry entry.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use actix::prelude::*;
use bytestring::ByteString;
use prometheus::IntCounter;

use crate::{
    metrics::Metrics,
    protocol::{request::ProjectId, CloseCode},
    session::outbox::{Outbox, PushError},
};

/// Messages the hub's mailbox holds before senders are told to back off.
pub const HUB_MAILBOX_CAPACITY: usize = 4096;

/// A connection's id as clients see it (a UUID).
pub type ConnectionId = Arc<str>;

/// Registers a connection. Its outbox is where the hub delivers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub id: ConnectionId,
    pub outbox: Outbox,
    /// Projects named on the URL (`?project_id=`), subscribed silently as the original did.
    pub projects: Vec<ProjectId>,
    /// Told to drain when the server shuts down.
    pub session: Recipient<Drain>,
}

/// A connection ended: forget it and its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: ConnectionId,
}

/// Adds a subscription and confirms it to the client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub id: ConnectionId,
    pub project_id: ProjectId,
    /// The encoded `subscription_confirmed` (the session knows the request id and the resume
    /// outcome).
    pub confirmation: ByteString,
    /// Frames to deliver right after the confirmation and before any live message (a resume's
    /// replay), already encoded.
    pub replay: Vec<ByteString>,
}

/// Removes a subscription and confirms it to the client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub id: ConnectionId,
    pub project_id: ProjectId,
    pub confirmation: ByteString,
}

/// Delivers an encoded publication to the project's local subscribers; answers how many it
/// reached.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Deliver {
    pub project_id: ProjectId,
    pub frame: ByteString,
}

/// Whether the hub knows local subscribers of a project (for cross-task routing).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SubscriberCount {
    pub project_id: ProjectId,
}

/// Starts the drain: every connection is told to close with 1012, spread over `window`.
/// Answers when the last connection is gone or `window` plus a grace period has passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainAll {
    pub window: Duration,
}

/// Sent to each session by the drain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Answered when the registry is empty.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ConnectionCount;

struct Registered {
    outbox: Outbox,
    session: Recipient<Drain>,
    projects: HashSet<ProjectId>,
}

pub struct Hub {
    connections: HashMap<ConnectionId, Registered>,
    subscribers: HashMap<ProjectId, HashMap<ConnectionId, Outbox>>,
    metrics: Arc<Metrics>,
    message_frames: IntCounter,
    /// Observers of the project set: told when a project gains its first or loses its last
    /// local subscriber (the cross-task broker subscribes and unsubscribes its channel).
    interest: Option<Recipient<ProjectInterest>>,
}

/// The hub gained or lost its last local subscriber of a project.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum ProjectInterest {
    Gained(ProjectId),
    Lost(ProjectId),
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>, interest: Option<Recipient<ProjectInterest>>) -> Self {
        let message_frames = metrics.message_frames_out();
        Hub { connections: HashMap::new(), subscribers: HashMap::new(), metrics, message_frames, interest }
    }

    /// Registers a subscription (idempotent); the connection's outbox, if it is still here.
    fn add_subscription(&mut self, id: &ConnectionId, project_id: ProjectId) -> Option<Outbox> {
        let registered = self.connections.get_mut(id)?;
        let outbox = registered.outbox.clone();
        if registered.projects.insert(project_id.clone()) {
            let members = self.subscribers.entry(project_id.clone()).or_default();
            if members.is_empty() {
                self.metrics.projects.inc();
                if let Some(interest) = &self.interest {
                    interest.do_send(ProjectInterest::Gained(project_id));
                }
            }
            members.insert(id.clone(), outbox.clone());
            self.metrics.subscriptions.inc();
        }
        Some(outbox)
    }

    fn remove_subscription(&mut self, id: &ConnectionId, project_id: &ProjectId) -> bool {
        let Some(members) = self.subscribers.get_mut(project_id) else {
            return false;
        };
        if members.remove(id).is_none() {
            return false;
        }
        self.metrics.subscriptions.dec();
        if members.is_empty() {
            self.subscribers.remove(project_id);
            self.metrics.projects.dec();
            if let Some(interest) = &self.interest {
                interest.do_send(ProjectInterest::Lost(project_id.clone()));
            }
        }
        true
    }

    fn push(&self, outbox: &Outbox, frame: ByteString, kind: &str) {
        match outbox.push_text(frame) {
            Ok(()) => self.metrics.frame_out(kind),
            Err(PushError::Full) => log::warn!(kind = kind; "outbound queue full, closing slow consumer"),
            Err(PushError::Closed) => {}
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX_CAPACITY);
    }
}

impl Handler<Connect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        let id = msg.id.clone();
        self.connections
            .insert(msg.id, Registered { outbox: msg.outbox, session: msg.session, projects: HashSet::new() });
        for project_id in msg.projects {
            self.add_subscription(&id, project_id);
        }
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        if let Some(registered) = self.connections.remove(&msg.id) {
            for project_id in &registered.projects {
                self.remove_subscription(&msg.id, project_id);
            }
        }
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        let Some(outbox) = self.add_subscription(&msg.id, msg.project_id) else {
            return;
        };
        self.push(&outbox, msg.confirmation, "subscription_confirmed");
        for frame in msg.replay {
            self.push(&outbox, frame, "message");
        }
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        let Some(registered) = self.connections.get_mut(&msg.id) else {
            return;
        };
        registered.projects.remove(&msg.project_id);
        let outbox = registered.outbox.clone();
        self.remove_subscription(&msg.id, &msg.project_id);
        self.push(&outbox, msg.confirmation, "unsubscription_confirmed");
    }
}

impl Handler<Deliver> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) -> usize {
        let Some(members) = self.subscribers.get(&msg.project_id) else {
            self.metrics.publish_fanout.observe(0.0);
            return 0;
        };
        let mut reached = 0;
        for outbox in members.values() {
            match outbox.push_text(msg.frame.clone()) {
                Ok(()) => reached += 1,
                Err(PushError::Full) => {
                    log::warn!(project_id = &*msg.project_id; "outbound queue full, closing slow consumer");
                }
                Err(PushError::Closed) => {}
            }
        }
        self.message_frames.inc_by(reached as u64);
        self.metrics.deliveries.inc_by(reached as u64);
        self.metrics.publish_fanout.observe(reached as f64);
        reached
    }
}

impl Handler<SubscriberCount> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: SubscriberCount, _: &mut Self::Context) -> usize {
        self.subscribers.get(&msg.project_id).map_or(0, HashMap::len)
    }
}

impl Handler<ConnectionCount> for Hub {
    type Result = usize;

    fn handle(&mut self, _: ConnectionCount, _: &mut Self::Context) -> usize {
        self.connections.len()
    }
}

/// How often the drain closes a slice of the connections.
const DRAIN_TICK: Duration = Duration::from_millis(50);

impl Handler<DrainAll> for Hub {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: DrainAll, _: &mut Self::Context) -> Self::Result {
        let mut pending: Vec<Recipient<Drain>> =
            self.connections.values().map(|registered| registered.session.clone()).collect();
        // Spread the reconnects: random order, equal slices per tick over the window.
        fastrand::shuffle(&mut pending);
        let ticks = (msg.window.as_millis() / DRAIN_TICK.as_millis()).max(1) as usize;
        let per_tick = pending.len().div_ceil(ticks).max(1);
        log::info!(
            connections = pending.len(), window_ms = msg.window.as_millis() as u64;
            "draining connections with 1012 (service restart)"
        );
        let drain = async move {
            let mut ticker = tokio::time::interval(DRAIN_TICK);
            while !pending.is_empty() {
                ticker.tick().await;
                let slice = pending.len().saturating_sub(per_tick);
                for session in pending.drain(slice..) {
                    session.do_send(Drain);
                }
            }
        };
        Box::pin(drain.into_actor(self))
    }
}

/// Closes every registered connection at once (used when the drain window is over).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll {
    pub code: CloseCode,
}

impl Handler<CloseAll> for Hub {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) {
        for registered in self.connections.values() {
            registered.outbox.close(msg.code);
        }
    }
}
