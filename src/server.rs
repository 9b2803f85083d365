//! Assembling and running the gateway: builds the stores and actors from the configuration,
//! binds the HTTP server, serves until SIGTERM/SIGINT (or a [`ShutdownTrigger`]), then drains.
//!
//! The drain order lives in [`Server::drain`] and nowhere else.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use futures_util::future::Either;
use tokio::sync::Notify;

use crate::{
    access::{
        client_address::TrustedProxies,
        connections::{ConnectionCaps, ConnectionLimits},
        jwks::Jwks,
        origin::OriginAllowList,
        rate::{ApiBudgets, ClientRates, Rate},
        token::{TokenVerifier, VerifierSettings},
        AccessPolicy, Authentication, Limits,
    },
    config::Config,
    dispatcher::{self, spool::Spool, sqs::SqsQueues, DispatcherSettings, QueueBackend, QueueDispatcher},
    emf,
    engine::{memory::MemoryEngine, positions::HistorySettings, redis::RedisEngine, Engine},
    gateway::{Gateway, SessionSettings},
    hub::{CloseAll, ConnectionCount, DrainAll, HoldLimits, Hub},
    lifecycle::Lifecycle,
    metrics::Metrics,
    persistence::{self, dynamo::DynamoStore, local::LocalStore, Persistence, RecordStore},
    protocol::{request::ParseLimits, CloseCode},
    publish::Publisher,
    updates::UpdatesConsumer,
};

/// Extra time after the drain window for the last clients to finish closing.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Longest the shutdown waits for the queue dispatcher to answer every accepted forward.
const DISPATCHER_FLUSH_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest the shutdown waits for the engine to end its loops (this task's presence removed).
const ENGINE_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the shutdown waits for buffered records to be written.
const PERSISTENCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a draining session waits for its in-flight forwards before closing.
const DRAIN_INFLIGHT_GRACE: Duration = Duration::from_secs(5);
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
        let queue_urls = config.agent_queue_urls()?;
        let needs_aws = queue_urls.is_some() || config.table_name().is_some() || config.updates_queue_url().is_some();
        let sdk = if needs_aws {
            log::info!(
                region = config.aws_region.as_str(),
                endpoint = config.aws_endpoint_url.as_deref().unwrap_or("AWS (the region's public endpoints)");
                "AWS configured"
            );
            Some(crate::aws::sdk_config(&config.aws_region, config.aws_endpoint_url.as_deref()).await)
        } else {
            None
        };
        let store = match (config.table_name(), &sdk) {
            (Some(table), Some(sdk)) => {
                RecordStore::Dynamo(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table.to_owned()))
            }
            _ => RecordStore::Local(LocalStore::open(&config.data_dir)?),
        };
        let backend = match (queue_urls, &sdk) {
            (Some(urls), Some(sdk)) => QueueBackend::Sqs(SqsQueues::new(aws_sdk_sqs::Client::new(sdk), urls)),
            _ => QueueBackend::Spool(Spool::open(&config.data_dir, config.spool_max_bytes.get())?),
        };
        log::info!(
            forwards = backend.describe().as_str(), records = store.describe().as_str();
            "storage configured"
        );

        let io_arbiter = Arbiter::new();
        let hub_arbiter = Arbiter::new();
        let (persistence, records) =
            Persistence::new(store, config.persistence_buffer_records.get(), config.record_ttl, metrics.clone());
        let persistence = Persistence::start_in_arbiter(&io_arbiter.handle(), move |_| persistence);
        let settings = DispatcherSettings {
            linger: config.sqs_batch_linger,
            max_batch_bytes: config.sqs_max_batch_bytes.get(),
            deadline: config.forward_deadline,
            max_pending: config.dispatcher_max_pending.get(),
        };
        let dispatcher = {
            let (metrics, records) = (metrics.clone(), records.clone());
            QueueDispatcher::start_in_arbiter(&io_arbiter.handle(), move |_| {
                QueueDispatcher::new(backend, settings, metrics, records)
            })
        };
        let history_settings = HistorySettings {
            size: config.history_size,
            ttl: config.history_ttl,
            max_projects: config.history_max_projects.get(),
            max_bytes: config.history_max_bytes.get(),
            max_total_bytes: config.history_max_total_bytes.get(),
        };
        let engine: Arc<dyn Engine> = match config.redis_url() {
            Some(url) => {
                Arc::new(RedisEngine::connect(url, history_settings, config.presence_ttl, metrics.clone()).await?)
            }
            None => Arc::new(MemoryEngine::new(history_settings)),
        };
        let hub = {
            let (metrics, engine) = (metrics.clone(), engine.clone());
            let (queue_messages, queue_bytes) =
                (config.outbound_queue_messages.get(), config.outbound_queue_bytes.get());
            let hold = HoldLimits::half_of_queue(queue_messages, queue_bytes);
            // A replay's page fits the queue's replay share (src/connection/outbox.rs).
            let replay_page_bytes = config.history_page_bytes.get().min(queue_bytes / 2);
            let presence = config.presence;
            Hub::start_in_arbiter(&hub_arbiter.handle(), move |_| {
                Hub::new(metrics, engine, hold, replay_page_bytes, presence)
            })
        };
        log::info!(
            engine = engine.describe(), history_size = config.history_size;
            "engine configured (history, positions, fan-out across tasks)"
        );
        let policy = AccessPolicy::new(
            config.publish_api_keys.clone(),
            config.binds_loopback_only(),
            config.max_subscriptions_per_connection.get(),
        )
        .with_authentication(authentication(&config)?)
        .with_limits(limits(&config)?);
        log::info!("{}", policy.describe());
        log::info!("{}", policy.describe_authentication());
        log::info!("{}", policy.describe_limits());
        let gateway = web::Data::new(Gateway {
            publisher: Publisher::new(engine.clone(), records.clone(), metrics.clone()),
            engine,
            history_page_bytes: config.history_page_bytes.get(),
            stats: Arc::new(crate::stats::StatsHistory::new(metrics.clone())),
            hub,
            dispatcher,
            persistence,
            records,
            policy,
            metrics,
            lifecycle: Lifecycle::default(),
            session: SessionSettings {
                ping_interval: config.ping_interval,
                client_timeout: config.client_timeout,
                max_frame_bytes: config.max_frame_bytes.get(),
                outbound_queue_messages: config.outbound_queue_messages.get(),
                outbound_queue_bytes: config.outbound_queue_bytes.get(),
                write_delay: config.write_delay,
                max_inflight: config.max_inflight_per_connection.get(),
                parse_limits: ParseLimits { max_project_id_bytes: config.max_project_id_bytes.get() },
                drain_inflight_grace: DRAIN_INFLIGHT_GRACE.min(config.forward_deadline),
                http_body_timeout: config.http_request_timeout,
                auth_timeout: config.auth_timeout,
                jwt_leeway: config.jwt_leeway,
                presence: config.presence,
            },
        });

        if let (Some(url), Some(sdk)) = (config.updates_queue_url(), &sdk) {
            let consumer = UpdatesConsumer::new(
                aws_sdk_sqs::Client::new(sdk),
                url.to_owned(),
                gateway.publisher.clone(),
                gateway.metrics.clone(),
                gateway.session.parse_limits,
            );
            UpdatesConsumer::start_in_arbiter(&io_arbiter.handle(), move |_| consumer);
        }

        let app_data = gateway.clone();
        let cors_origins = config.cors_allowed_origins.clone();
        let send_timeout = config.send_timeout;
        let head_timeout = config.http_request_timeout;
        let connection_gateway = gateway.clone();
        let ports = crate::http::ports::Ports::new(config.internal_port.is_some());
        let app_ports = ports.clone();
        let mut http = HttpServer::new(move || {
            let (ports, internal_port) = (app_ports.clone(), app_ports.has_internal());
            App::new()
                .app_data(app_data.clone())
                // A request on a connection refused at the accept is answered, never handled.
                .wrap_fn(|request, service| {
                    let handled = match crate::http::handshake::request_arrived(request.request()) {
                        Some(refusal) => Either::Left(request.into_response(refusal)),
                        None => Either::Right(actix_web::dev::Service::call(service, request)),
                    };
                    async move {
                        match handled {
                            Either::Left(refused) => Ok(refused),
                            Either::Right(handling) => handling.await.map(|response| response.map_into_boxed_body()),
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
        .client_request_timeout(config.http_request_timeout)
        .shutdown_timeout(2);
        if config.workers > 0 {
            http = http.workers(config.workers);
        }
        let addresses = config.bind_addresses()?;
        let http = http
            .bind(&addresses[..])
            .with_context(|| format!("WEBSOCKET_HOST/WEBSOCKET_PORT: cannot bind {}:{}", config.host, config.port))?;
        let local_addr = *http.addrs().first().context("the server bound no address")?;
        let public_listeners = http.addrs().len();
        let http = match config.internal_bind_addresses()? {
            Some(internal) => http.bind(&internal[..]).with_context(|| {
                format!("WEBSOCKET_HOST/INTERNAL_PORT: cannot bind {}:{}", config.host, internal[0].port())
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
        actix_rt::spawn(self.gateway.stats.clone().sample_forever());
        let emf = (!self.config.emf_interval.is_zero()).then(|| {
            let emitter = emf::EmfEmitter::new(self.config.service_name.clone(), self.gateway.metrics.clone());
            actix_rt::spawn(emitter.clone().emit_every(self.config.emf_interval));
            emitter
        });
        let gateway = self.gateway.clone();
        actix_rt::spawn(async move {
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
        drain(&self.gateway, self.config.drain_window).await;
        if let Some(emf) = emf {
            emf.emit();
        }
        handle.stop(true).await;
        let _ = serving.await;
        for arbiter in self.arbiters {
            arbiter.stop();
        }
        log::info!("shutdown complete");
        Ok(())
    }
}

/// How connections authenticate, from the configuration: a verifier for JWT_SECRET or
/// JWT_JWKS_URL (whose keys are fetched now, and refreshed in the background), the protected
/// mode's ALLOW_ANONYMOUS, and ALLOWED_ORIGINS.
fn authentication(config: &Config) -> anyhow::Result<Authentication> {
    let settings = || VerifierSettings {
        issuer: config.jwt_issuer.clone().filter(|issuer| !issuer.is_empty()),
        audience: config.jwt_audience.clone().filter(|audience| !audience.is_empty()),
        leeway_secs: config.jwt_leeway.as_secs(),
    };
    let verifier = match (config.jwt_secret(), config.jwt_jwks_url()) {
        (Some(secret), _) => Some(
            TokenVerifier::with_secret(secret.as_bytes(), settings())
                .map_err(|error| anyhow::anyhow!("JWT_SECRET: {error}"))?,
        ),
        (None, Some(url)) => {
            let jwks = Arc::new(Jwks::new(url.to_owned()));
            // A first fetch now, so the first tokens need not wait; a failure is retried when a
            // token arrives (refused meanwhile as keys_unavailable) and in the background.
            let first = jwks.clone();
            actix_rt::spawn(async move {
                if let Err(error) = first.refresh().await {
                    log::warn!(error = error.as_str(); "cannot fetch the JWKS at start-up; tokens wait for it");
                }
            });
            jwks.refresh_in_background();
            Some(TokenVerifier::with_jwks(jwks, settings()))
        }
        (None, None) => None,
    };
    Ok(Authentication {
        verifier: verifier.map(Arc::new),
        allow_anonymous: config.allow_anonymous,
        origins: OriginAllowList::new(&config.allowed_origins),
    })
}

/// The abuse limits from the configuration. MAX_CONNECTIONS defaults to what the open-files
/// limit allows, after raising its soft value to the hard one (a container's soft limit is
/// often far below what the task may hold).
fn limits(config: &Config) -> anyhow::Result<Limits> {
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            log::warn!(error:% = error; "cannot read or raise the open-files limit; assuming 1024");
            1024
        }
    };
    let caps = ConnectionCaps {
        max_connections: config.max_connections(open_files),
        max_per_user: config.max_connections_per_user,
        max_per_ip: config.max_connections_per_ip,
    };
    if caps.max_connections as u64 > open_files {
        log::warn!(
            max_connections = caps.max_connections, open_files;
            "MAX_CONNECTIONS is above the open-files limit: accepts will fail before the cap answers 503"
        );
    }
    Ok(Limits {
        trusted_proxies: TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|reason| anyhow::anyhow!("TRUSTED_PROXIES: {reason}"))?,
        connections: ConnectionLimits::new(caps),
        client_rates: ClientRates {
            client: Rate::new(config.client_rate_per_second, config.client_rate_burst.get()),
            service: Rate::new(config.service_rate_per_second, config.service_rate_burst.get()),
            close_after: config.client_rate_close_after,
        },
        api: ApiBudgets::new(Rate::new(config.api_rate_per_second, config.api_rate_burst.get())),
    })
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

/// The drain, in order:
/// 1. `/ready` answers 503 and new upgrades are refused;
/// 2. every client is told to reconnect (1012), spread over DRAIN_SECONDS, each after its
///    in-flight forwards were answered (bounded);
/// 3. whoever is still connected after the window and a grace period is closed at once;
/// 4. the queue dispatcher sends every accepted forward (bounded);
/// 5. the engine ends its loops: this task's members leave presence (bounded);
/// 6. the persistence actor writes every buffered record (bounded).
///
/// Then the caller stops the HTTP server and the process exits 0.
async fn drain(gateway: &Gateway, window: Duration) {
    gateway.lifecycle.set_draining();
    gateway.metrics.draining.set(1);
    let started = tokio::time::Instant::now();
    if gateway.hub.send(DrainAll { window }).await.is_err() {
        log::error!("hub unavailable during drain");
    }
    let deadline = started + window + DRAIN_GRACE;
    loop {
        let remaining = gateway.hub.send(ConnectionCount).await.unwrap_or(0);
        if remaining == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            log::warn!(connections = remaining; "drain window over, closing the remaining connections");
            let _ = gateway.hub.send(CloseAll { code: CloseCode::ServiceRestart }).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flushed = tokio::time::timeout(DISPATCHER_FLUSH_TIMEOUT, gateway.dispatcher.send(dispatcher::Flush)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        log::error!("queue dispatcher did not finish within {DISPATCHER_FLUSH_TIMEOUT:?}; unanswered forwards were not confirmed to clients");
    }
    if tokio::time::timeout(ENGINE_CLOSE_TIMEOUT, gateway.engine.close()).await.is_err() {
        log::error!("engine did not close within {ENGINE_CLOSE_TIMEOUT:?}; this task's presence expires after the TTL");
    }
    let flushed = tokio::time::timeout(PERSISTENCE_FLUSH_TIMEOUT, gateway.persistence.send(persistence::Flush)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        log::error!(records = gateway.records.outstanding(); "records not written before exit");
    }
    log::info!(elapsed_ms = started.elapsed().as_millis() as u64; "drain complete");
}
