//! agenticai-websocket: the real-time gateway of the AgenticAI platform.
//!
//! Browsers and agents hold WebSocket connections; the gateway tracks which connection watches
//! which project, pushes project updates to them, and forwards their requests to the four
//! agent queues (PM, Dev, QA, Ops) on SQS, recording to DynamoDB.
//!
//! # Layout
//!
//! | where | what |
//! |---|---|
//! | [`server`] | builds everything from [`config`], serves, and owns the drain order |
//! | [`http`] | routes: WebSocket upgrade, publish API, audit read, `/health` `/ready` `/metrics`, the status page |
//! | [`session`] | **session actor**, one per connection: parses and routes frames, heartbeat; [`session::inbound`] decodes its frames, [`session::outbox`] is its bounded outbound queue, [`session::outbound_body`] the body that writes it, [`session::state`] the connection's lifecycle (close signal, open / winding down / closed) |
//! | [`protocol`] | the wire format: [`protocol::request`] parses a frame, [`protocol::reply`] encodes answers and publications, [`protocol::errors`] the error and close-code catalogues |
//! | [`access`] | the one place that decides whether a connection may do an action |
//! | [`hub`] | **hub actor**: this task's connection registry, subscriptions, local fan-out |
//! | [`engine`] | the one interface to history, positions, resume reads, other tasks and presence, and its contracts; [`engine::memory`] (one task) and [`engine::redis`] (with its **Redis subscriber actor** and presence writer) implement it; [`engine::positions`] is the recovery rule both share, [`engine::presence`] the member and its frames |
//! | [`publish`] | the publish path every publication takes (stamp, encode once, engine, audit) |
//! | [`dispatcher`] | **queue-dispatcher actor**: routing by `type`, batching, SQS or the local spool |
//! | [`persistence`] | **persistence actor**: records and audit in DynamoDB or the local store |
//! | [`updates`] | agent updates long-polled from SQS and published to their projects |
//! | [`aws`] | SDK configuration, error classification, backoff |
//! | [`metrics`], [`emf`], [`logging`] | Prometheus, CloudWatch EMF, structured logs |
//! | [`stats`] | the status page's figures: the registry sampled each second, five minutes kept |
//!
//! # Where a frame goes
//!
//! socket -> `session` (parse with `protocol::request`, check with `access`) ->
//! subscribe/unsubscribe: `hub` (which confirms through the session's outbox, and reports the
//! member to the engine's presence, which announces `join`/`leave` back through every task's hub);
//! presence/presence_stats: `engine`;
//! forward: `dispatcher` (batched to SQS, confirmed after SQS accepted, audited by
//! `persistence`); publish: `publish` -> `engine` (position, history, other tasks) -> `hub`
//! fan-out into every subscriber's outbox -> socket.

pub mod access;
pub mod aws;
pub mod config;
pub mod dispatcher;
pub mod emf;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod persistence;
pub mod protocol;
pub mod publish;
pub mod server;
pub mod session;
pub mod stats;
pub mod updates;
