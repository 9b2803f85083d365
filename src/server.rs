//! Assembling and running the gateway: builds the stores and actors from the configuration,
//! binds the HTTP server, serves until SIGTERM/SIGINT (or a [`ShutdownTrigger`]), then drains.
//!
//! The drain order lives in [`Server::drain`] and nowhere else.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use futures_util::future::LocalBoxFuture;
use tokio::sync::Notify;

use crate::{
    access::AccessPolicy,
    approvals::Approvals,
    background::BackgroundLoops,
    config::{AwsSettings, Config},
    dispatcher::{spool::Spool, sqs::SqsQueues, QueueBackend, QueueDispatcher},
    emf,
    engine::{memory::MemoryEngine, positions::HistorySettings, redis::RedisEngine, streams::StreamLimits, Engine},
    gateway::{Gateway, SessionSettings},
    hub::{streams::StreamHubSettings, HoldLimits, Hub},
    lifecycle::Lifecycle,
    metrics::Metrics,
    persistence::{dynamo::DynamoStore, local::LocalStore, Persistence, RecordStore},
    publish::Publisher,
    streams::Streams,
    updates::UpdatesConsumer,
};

/// How often the publish API's budgets of idle callers are forgotten.
const API_BUDGET_SWEEP: Duration = Duration::from_secs(60);

/// Fires the same drain as SIGTERM. Cheap to clone, usable from any thread.
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<Notify>);

impl ShutdownTrigger {
    pub fn fire(&self) {
        // notify_one keeps a permit, so a trigger fired before `run` waits is not lost.
        self.0.notify_one();
    }
}

/// A bound, not yet running gateway.
pub struct Server {
    local_addr: SocketAddr,
    /// The operator endpoints' own address, with INTERNAL_PORT.
    internal_addr: Option<SocketAddr>,
    http: actix_web::dev::Server,
    gateway: web::Data<Gateway>,
    shutdown: ShutdownTrigger,
    config: Config,
    /// The threads of the hub and of the AWS-facing actors; stopped after the drain.
    arbiters: Vec<Arbiter>,
}

impl Server {
    /// Validates the configuration, opens the stores, starts the actors and binds the socket.
    /// Must be called inside an actix System.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        let queue_urls = config.queues.agent_queue_urls()?;
        let table = config.storage.table_name();
        let needs_aws = queue_urls.is_some() || table.is_some() || config.queues.updates_queue_url().is_some();
        let sdk = if needs_aws {
            let AwsSettings { aws_region: region, aws_endpoint_url: endpoint } = &config.aws;
            log::info!(
                region = region.as_str(),
                endpoint = endpoint.as_deref().unwrap_or("AWS (the region's public endpoints)");
                "AWS configured"
            );
            Some(crate::aws::sdk_config(region, endpoint.as_deref()).await)
        } else {
            None
        };
        let data_dir = &config.storage.data_dir;
        let store = match (table, &sdk) {
            (Some(table), Some(sdk)) => {
                RecordStore::Dynamo(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table.to_owned()))
            }
            _ => RecordStore::Local(LocalStore::open(data_dir, config.storage.records_max_bytes.get())?),
        };
        let backend = match (queue_urls, &sdk) {
            (Some(urls), Some(sdk)) => QueueBackend::Sqs(SqsQueues::new(aws_sdk_sqs::Client::new(sdk), urls)),
            _ => QueueBackend::Spool(Spool::open(data_dir, config.storage.spool_max_bytes.get())?),
        };
        log::info!(
            forwards = backend.describe().as_str(), records = store.describe().as_str();
            "storage configured"
        );

        let io_arbiter = Arbiter::new();
        let hub_arbiter = Arbiter::new();
        let (persistence, records) = Persistence::new(
            store,
            config.storage.persistence_buffer_records.get(),
            config.storage.record_ttl,
            metrics.clone(),
        );
        let persistence = Persistence::start_in_arbiter(&io_arbiter.handle(), move |_| persistence);
        let dispatcher = {
            let (settings, metrics, records) = (config.dispatcher, metrics.clone(), records.clone());
            QueueDispatcher::start_in_arbiter(&io_arbiter.handle(), move |_| {
                QueueDispatcher::new(backend, settings, metrics, records)
            })
        };
        let engine_settings = &config.engine;
        let history = HistorySettings::from(engine_settings);
        let stream_limits = StreamLimits::from(&config.streams);
        let engine: Arc<dyn Engine> = match engine_settings.redis_url() {
            Some(_) => Arc::new(
                RedisEngine::connect(
                    &engine_settings.redis_seeds(),
                    engine_settings.redis_cluster,
                    history,
                    engine_settings.presence_ttl,
                    metrics.clone(),
                )
                .await?
                .with_stream_limits(stream_limits),
            ),
            None => Arc::new(MemoryEngine::with_stream_limits(history, stream_limits)),
        };
        metrics.engine_is(engine.describe());
        let session = SessionSettings::configure(&config);
        let hub = {
            let (metrics, engine) = (metrics.clone(), engine.clone());
            let hold = HoldLimits::quarter_of_queue(session.outbound_queue_messages, session.outbound_queue_bytes);
            // A replay's page fits the queue's replay share (src/connection/outbox.rs).
            let replay_page_bytes = engine_settings.history_page_bytes.get().min(session.outbound_queue_bytes / 2);
            let presence = engine_settings.presence;
            let streams = StreamHubSettings {
                rollup: config.streams.stream_rollup,
                idle_timeout: config.streams.stream_idle_timeout,
                idle_sweep: StreamHubSettings::IDLE_SWEEP,
            };
            Hub::start_in_arbiter(&hub_arbiter.handle(), move |_| {
                Hub::new(metrics, engine, hold, replay_page_bytes, presence, streams)
            })
        };
        log::info!(
            engine = engine.describe(), history_size = history.size;
            "engine configured (history, positions, fan-out across tasks)"
        );
        let (intake, loops) = (BackgroundLoops::default(), BackgroundLoops::default());
        let policy = AccessPolicy::configure(&config.access, config.server.binds_loopback_only(), &loops)?;
        log::info!("{}", policy.describe());
        log::info!("{}", policy.describe_authentication());
        log::info!("{}", policy.describe_limits());
        let gateway = web::Data::new(Gateway {
            publisher: Publisher::new(engine.clone(), records.clone(), metrics.clone()),
            approvals: Approvals::new(
                engine.clone(),
                dispatcher.clone(),
                records.clone(),
                config.dispatcher.forward_deadline,
            ),
            streams: Streams::new(
                engine.clone(),
                dispatcher.clone(),
                metrics.clone(),
                config.streams.stream_cancel_grace,
            ),
            engine,
            history_page_bytes: engine_settings.history_page_bytes.get(),
            stats: Arc::new(crate::stats::StatsHistory::new(metrics.clone())),
            hub,
            dispatcher,
            persistence,
            records,
            policy,
            metrics,
            lifecycle: Lifecycle::default(),
            intake,
            loops,
            session,
        });

        if let (Some(url), Some(sdk)) = (config.queues.updates_queue_url(), &sdk) {
            let consumer = UpdatesConsumer::new(
                aws_sdk_sqs::Client::new(sdk),
                url.to_owned(),
                gateway.publisher.clone(),
                gateway.streams.clone(),
                gateway.approvals.clone(),
                gateway.metrics.clone(),
                gateway.session.parse_limits,
            );
            gateway.intake.spawn_on(&io_arbiter.handle(), move |stop| consumer.run(stop));
        }

        let app_data = gateway.clone();
        let server = &config.server;
        let cors_origins = config.access.cors_allowed_origins.clone();
        let (send_timeout, head_timeout) = (server.send_timeout, server.http_request_timeout);
        let connection_gateway = gateway.clone();
        let ports = crate::http::ports::Ports::new(server.internal_port.is_some());
        let app_ports = ports.clone();
        let mut http = HttpServer::new(move || {
            let (ports, internal_port) = (app_ports.clone(), app_ports.has_internal());
            App::new()
                .app_data(app_data.clone())
                // A request on a connection refused at the accept is answered, never handled. The
                // future is boxed: actix-http keeps the app's request future inline in each
                // connection's dispatcher for the connection's life, so every byte of it is paid by
                // every held WebSocket, not only during the handshake (docs/benchmarks.md, "Issue
                // 22's changes"); boxed, a connection holds a pointer to it.
                .wrap_fn(|request, service| -> LocalBoxFuture<'static, _> {
                    match crate::http::handshake::request_arrived(request.request()) {
                        Some(refusal) => Box::pin(std::future::ready(Ok(request.into_response(refusal)))),
                        None => {
                            let handling = actix_web::dev::Service::call(service, request);
                            Box::pin(async move { handling.await.map(|response| response.map_into_boxed_body()) })
                        }
                    }
                })
                // Which port a request came in on, for the routes' guards (before routing).
                .wrap_fn(move |request, service| {
                    ports.mark(&request);
                    actix_web::dev::Service::call(service, request)
                })
                .configure(|routes| crate::http::configure(routes, &cors_origins, internal_port))
        })
        .disable_signals()
        .backlog(4096)
        // Every frame is written as soon as it is queued. With Nagle's algorithm a frame that
        // follows one not yet acknowledged waits for the ACK, which a client holds back for up to
        // 40 ms (delayed ACK): that was the p99 of the 150k deliveries/s benchmark.
        .tcp_nodelay(true)
        .on_connect(move |connection, extensions| {
            limit_unacknowledged_sends(connection, send_timeout);
            let Gateway { policy, metrics, .. } = &**connection_gateway;
            crate::http::handshake::watch_connection(connection, extensions, policy, metrics, head_timeout);
        })
        .client_request_timeout(head_timeout)
        .shutdown_timeout(2);
        if server.workers > 0 {
            http = http.workers(server.workers);
        }
        let addresses = server.bind_addresses()?;
        let http = http
            .bind(&addresses[..])
            .with_context(|| format!("WEBSOCKET_HOST/WEBSOCKET_PORT: cannot bind {}:{}", server.host, server.port))?;
        let local_addr = *http.addrs().first().context("the server bound no address")?;
        let public_listeners = http.addrs().len();
        let http = match server.internal_bind_addresses()? {
            Some(internal) => http.bind(&internal[..]).with_context(|| {
                format!("WEBSOCKET_HOST/INTERNAL_PORT: cannot bind {}:{}", server.host, internal[0].port())
            })?,
            None => http,
        };
        let internal_addresses = http.addrs()[public_listeners..].to_vec();
        let internal_addr = internal_addresses.first().copied();
        ports.set_internal(internal_addresses);
        Ok(Server {
            local_addr,
            internal_addr,
            http: http.run(),
            gateway,
            shutdown: ShutdownTrigger::default(),
            config,
            arbiters: vec![io_arbiter, hub_arbiter],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the operator endpoints are served when INTERNAL_PORT is set.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
    }

    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the trigger, then drains; returns when the drain is done.
    pub async fn run(self) -> anyhow::Result<()> {
        let handle = self.http.handle();
        let serving = actix_rt::spawn(self.http);
        self.gateway.lifecycle.set_ready();
        let loops = &self.gateway.loops;
        loops.spawn(self.gateway.stats.clone().sample_forever());
        // Expiry and redelivery start decisions: new work, stopped with the intake.
        let approvals = self.gateway.approvals.clone();
        self.gateway.intake.spawn_with_stop(move |stop| approvals.run(stop));
        let telemetry = &self.config.telemetry;
        if !telemetry.emf_interval.is_zero() {
            let emitter = emf::EmfEmitter::new(telemetry.service_name.clone(), self.gateway.metrics.clone());
            let interval = telemetry.emf_interval;
            loops.spawn_with_stop(move |stop| emitter.emit_until_stopped(interval, stop));
        }
        let gateway = self.gateway.clone();
        loops.spawn(async move {
            let mut sweep = tokio::time::interval(API_BUDGET_SWEEP);
            loop {
                sweep.tick().await;
                gateway.policy.forget_idle_api_callers();
            }
        });
        match self.internal_addr {
            Some(internal) => log::info!(
                address:% = self.local_addr, internal_address:% = internal;
                "agenticai-websocket listening (operator endpoints on the internal address only)"
            ),
            None => log::info!(address:% = self.local_addr; "agenticai-websocket listening"),
        }
        wait_for_shutdown(&self.shutdown).await;
        crate::lifecycle::drain(self.gateway.drained(), self.config.server.drain_window).await;
        handle.stop(true).await;
        let _ = serving.await;
        for arbiter in self.arbiters {
            arbiter.stop();
        }
        log::info!("shutdown complete");
        Ok(())
    }
}

/// Sets TCP_USER_TIMEOUT on an accepted connection. A client that stops reading fills its
/// socket buffers; the HTTP connection task then waits on the socket and nothing in the server
/// can end it (the session has long closed it as a slow consumer), so the kernel must.
fn limit_unacknowledged_sends(connection: &dyn std::any::Any, timeout: Duration) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        log::warn!(error:% = error; "cannot set TCP_USER_TIMEOUT; a client that stops reading keeps its socket");
    }
}

async fn wait_for_shutdown(trigger: &ShutdownTrigger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut terminate, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        _ => {
            log::error!("cannot install signal handlers; only the shutdown trigger will stop the server");
            trigger.0.notified().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => log::info!(signal = "SIGTERM"; "shutdown requested"),
        _ = interrupt.recv() => log::info!(signal = "SIGINT"; "shutdown requested"),
        () = trigger.0.notified() => log::info!("shutdown requested by trigger"),
    }
}
