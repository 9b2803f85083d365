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
//! | [`config`] | the settings, one group per component (flat environment variable names) |
//! | [`server`] | builds everything from [`config`] and serves until a stop signal |
//! | [`lifecycle`] | the server's phase and the drain: the order of a shutdown, written once |
//! | [`background`] | the loops beside the actors (stats, EMF, budget sweep, JWKS refresh, updates consumer), stopped by one signal and waited for |
//! | [`http`] | routes: WebSocket upgrade, publish API, audit read, `/health` `/ready` `/metrics`, the status page (`/metrics` and the status page on INTERNAL_PORT when set: `http::ports`) |
//! | [`session`] | **session actor**, one per connection: parses and routes frames, heartbeat; [`session::inbound`] decodes its frames |
//! | [`connection`] | what the session and the hub share about a connection, below both: its id, [`connection::outbox`] its bounded outbound queue, [`connection::outbound_body`] the body that writes it, [`connection::state`] its lifecycle (close signal, open / winding down / closed) |
//! | [`protocol`] | the wire format: [`protocol::request`] parses a frame, [`protocol::reply`] encodes answers and publications, [`protocol::errors`] the error and close-code catalogues |
//! | [`access`] | the one place that decides whether a connection may do an action |
//! | [`hub`] | **hub actor**: this task's connection registry, subscriptions, local fan-out of what the engine delivers |
//! | [`engine`] | the one interface to history, positions, resume reads, other tasks and presence, and its contracts; [`engine::memory`] (one task) and [`engine::redis`] (one Redis or a Redis Cluster, with its subscriber and presence writer loops) implement it, delivering through [`engine::LocalDelivery`], which the hub implements; [`engine::positions`] is the recovery rule both share, [`engine::presence`] the member and its frames |
//! | [`publish`] | the publish path every publication takes (stamp, encode once, engine, audit) |
//! | [`approvals`] | human approvals: an agent's question, exactly one decision, delivered to the agent at least once (the engine keeps them; [`protocol::approvals`] is their frames) |
//! | [`streams`] | the agent-stream path every start, append and end takes (engine, counted, answered); the hub rolls appends up for viewers ([`hub::streams`]), the engines keep the text ([`engine::streams`]), [`protocol::streams`] is their frames |
//! | [`dispatcher`] | **queue-dispatcher actor**: routing by `type`, batching, SQS or the local spool |
//! | [`persistence`] | **persistence actor**: records and audit in DynamoDB or the local store |
//! | [`updates`] | agent updates long-polled from SQS and published to their projects |
//! | [`aws`] | SDK configuration, error classification, backoff |
//! | [`metrics`], [`emf`], [`logging`] | Prometheus, CloudWatch EMF, structured logs |
//! | [`stats`] | the status page's figures: the metrics sampled each second, five minutes kept |
//!
//! Beside this crate in the Cargo workspace: `loadtest/`, the load generator, a crate of its own
//! with its own dependencies, so the gateway (and its image) builds only what it ships.
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

// An item the public surface (the end of this file) does not reach is `pub(crate)`.
#![warn(unreachable_pub)]

mod access;
mod approvals;
mod aws;
mod background;
pub mod config;
mod connection;
mod dispatcher;
mod emf;
mod engine;
mod gateway;
mod http;
mod hub;
mod lifecycle;
pub mod logging;
mod metrics;
mod persistence;
mod protocol;
mod publish;
pub mod server;
mod session;
mod stats;
mod streams;
mod updates;

// The public surface is what the binary (`src/main.rs`) and the integration tests use: start a
// server from a configuration, mint or check a token, reach the AWS endpoints the server
// uses, read a DynamoDB record as JSON. Everything else is the crate's own.
pub use access::{
    check_token,
    token::{mint_hs256, MintedClaims},
    TokenCheckError,
};
pub use aws::sdk_config;
pub use persistence::dynamo::from_attributes as dynamo_item_json;
