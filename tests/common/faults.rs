//! Fault injection on the real wire: proxies that fail, trim or cut what passes through them.

use std::{net::SocketAddr, sync::Mutex, thread::JoinHandle};

use serde_json::Value;
use tokio::net::TcpStream;

use super::TIMEOUT;

/// A fault-injecting HTTP proxy in front of the emulator, on the real wire: it enforces
/// DynamoDB's 25-item BatchWriteItem limit (moto does not), and on the first `unprocessed_once`
/// BatchWriteItem calls forwards only the first half of the items, answering the rest as
/// `UnprocessedItems` the way DynamoDB does under throttling. A BatchWriteItem carrying
/// [`POISON`] anywhere is refused whole with a ValidationException, as DynamoDB refuses a batch
/// with one invalid item; `poisoned_batches` keeps the item counts of those calls.
pub const POISON: &str = "poison-record";

pub struct DynamoFaultProxy {
    pub endpoint: String,
    pub batch_sizes: std::sync::Arc<Mutex<Vec<usize>>>,
    pub poisoned_batches: std::sync::Arc<Mutex<Vec<usize>>>,
    _thread: JoinHandle<()>,
}

impl DynamoFaultProxy {
    pub fn start(upstream: String, unprocessed_once: usize) -> Self {
        use actix_web::{web, HttpRequest, HttpResponse};
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };

        struct State {
            upstream: String,
            remaining_faults: AtomicUsize,
            batch_sizes: Arc<Mutex<Vec<usize>>>,
            poisoned_batches: Arc<Mutex<Vec<usize>>>,
        }

        async fn forward(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
            let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let mut body = body.to_vec();
            let mut unprocessed: Option<Value> = None;
            if target.ends_with("BatchWriteItem") {
                let mut parsed: Value = serde_json::from_slice(&body).unwrap();
                let tables = parsed["RequestItems"].as_object_mut().unwrap();
                let count: usize = tables.values().map(|v| v.as_array().map_or(0, Vec::len)).sum();
                state.batch_sizes.lock().unwrap().push(count);
                if count > 25 {
                    return HttpResponse::BadRequest().content_type("application/x-amz-json-1.0").body(
                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Too many items requested for the BatchWriteItem call"}"#,
                    );
                }
                if body.windows(POISON.len()).any(|window| window == POISON.as_bytes()) {
                    state.poisoned_batches.lock().unwrap().push(count);
                    return HttpResponse::BadRequest().content_type("application/x-amz-json-1.0").body(
                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"One or more parameter values were invalid"}"#,
                    );
                }
                let fault = state
                    .remaining_faults
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fault && count > 1 {
                    let mut held_back = serde_json::Map::new();
                    for (table, requests) in tables.iter_mut() {
                        let requests = requests.as_array_mut().unwrap();
                        let keep = requests.len().div_ceil(2);
                        held_back.insert(table.clone(), Value::Array(requests.split_off(keep)));
                    }
                    unprocessed = Some(Value::Object(held_back));
                    body = serde_json::to_vec(&parsed).unwrap();
                }
            }
            let client = reqwest::Client::new();
            let mut upstream = client.post(format!("{}{}", state.upstream, request.uri())).body(body);
            for (name, value) in request.headers() {
                if name != "host" && name != "content-length" {
                    upstream = upstream.header(name.as_str(), value.as_bytes());
                }
            }
            let response = match upstream.send().await {
                Ok(response) => response,
                Err(_) => return HttpResponse::BadGateway().finish(),
            };
            let status = response.status().as_u16();
            let content_type = response.headers().get("content-type").map(|v| v.as_bytes().to_vec());
            let mut bytes = response.bytes().await.unwrap_or_default().to_vec();
            if let Some(held_back) = unprocessed {
                let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
                answer["UnprocessedItems"] = held_back;
                bytes = serde_json::to_vec(&answer).unwrap();
            }
            let mut builder = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(content_type) = content_type {
                builder.insert_header(("content-type", content_type));
            }
            builder.body(bytes)
        }

        let batch_sizes = Arc::new(Mutex::new(Vec::new()));
        let poisoned_batches = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State {
            upstream,
            remaining_faults: AtomicUsize::new(unprocessed_once),
            batch_sizes: batch_sizes.clone(),
            poisoned_batches: poisoned_batches.clone(),
        });
        let (addr, thread) = serve_on_loopback(move |routes| {
            routes.app_data(state.clone()).default_service(web::to(forward));
        });
        DynamoFaultProxy { endpoint: format!("http://{addr}"), batch_sizes, poisoned_batches, _thread: thread }
    }
}

/// Serves HTTP with the routes `configure` mounts on a free loopback port, with one worker in a
/// thread of its own (its own actix System), for as long as the test binary runs: the tests'
/// fault-injecting proxies. Returns its address and thread.
pub fn serve_on_loopback(
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
                .workers(1)
                .bind(("127.0.0.1", 0))
                .expect("a free loopback port");
            let _ = tx.send(server.addrs()[0]);
            let _ = server.run().await;
        })
    });
    (rx.recv_timeout(TIMEOUT).expect("the server thread answered"), thread)
}

/// A TCP proxy that can be switched off: while down it drops every connection at once, so the
/// service behind it looks stopped without losing its state.
pub struct OutageProxy {
    pub endpoint: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl OutageProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = down.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        OutageProxy { endpoint, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A TCP proxy in front of Redis that can hold back the requests of its command connections
/// (every connection that has not sent SUBSCRIBE) while pub/sub traffic flows on: a history read
/// asked meanwhile waits in the proxy and runs in Redis only when the test lets go, after
/// whatever the test published in between. Or, made by [`RequestHoldingProxy::holding_subscriptions`],
/// the other way round: a SUBSCRIBE waits while publications go through.
/// [`RequestHoldingProxy::wait_for_held`] says when a request naming a given key is waiting.
pub struct RequestHoldingProxy {
    /// `redis://` URL of the proxy.
    pub url: String,
    holding: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// The requests held since the hold began, as sent.
    held: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl RequestHoldingProxy {
    /// Holds the command connections' requests.
    pub async fn start(redis_url: &str) -> Self {
        Self::holding(redis_url, false).await
    }

    /// Holds the pub/sub connection's requests (its SUBSCRIBEs) from its first SUBSCRIBE on.
    pub async fn holding_subscriptions(redis_url: &str) -> Self {
        Self::holding(redis_url, true).await
    }

    async fn holding(redis_url: &str, subscriptions: bool) -> Self {
        let upstream = redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let holding = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let held = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (holding_in, held_in) = (holding.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(Self::relay(inbound, outbound, subscriptions, holding_in.subscribe(), held_in.clone()));
            }
        });
        RequestHoldingProxy { url, holding, held }
    }

    async fn relay(
        inbound: TcpStream,
        outbound: TcpStream,
        subscriptions: bool,
        mut holding: tokio::sync::watch::Receiver<bool>,
        held: std::sync::Arc<Mutex<Vec<u8>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut from_client, mut to_client) = inbound.into_split();
        let (mut from_redis, mut to_redis) = outbound.into_split();
        // Requests are read on while held, so a request made later is seen (and held) too.
        let (requests_tx, mut requests_rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, bool)>();
        let reading = {
            let holding = holding.clone();
            async move {
                let (mut buffer, mut subscriber) = (vec![0; 64 * 1024], false);
                loop {
                    let read = match from_client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => read,
                    };
                    let chunk = buffer[..read].to_vec();
                    subscriber |= chunk.windows(9).any(|window| window.eq_ignore_ascii_case(b"SUBSCRIBE"));
                    if subscriber == subscriptions && *holding.borrow() {
                        held.lock().unwrap().extend_from_slice(&chunk);
                    }
                    if requests_tx.send((chunk, subscriber)).is_err() {
                        return;
                    }
                }
            }
        };
        let writing = async move {
            while let Some((chunk, subscriber)) = requests_rx.recv().await {
                if subscriber == subscriptions && holding.wait_for(|holding| !holding).await.is_err() {
                    return;
                }
                if to_redis.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        };
        let replies = async move {
            let _ = tokio::io::copy(&mut from_redis, &mut to_client).await;
        };
        tokio::join!(reading, writing, replies);
    }

    /// Holds (true) or lets go (false) the command connections' requests.
    pub fn hold(&self, hold: bool) {
        if hold {
            self.held.lock().unwrap().clear();
        }
        self.holding.send_replace(hold);
    }

    /// Waits until a request containing `needle` is held.
    pub async fn wait_for_held(&self, needle: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !self.held.lock().unwrap().windows(needle.len()).any(|window| window == needle.as_bytes()) {
            assert!(std::time::Instant::now() < deadline, "no request with {needle:?} held within {TIMEOUT:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
