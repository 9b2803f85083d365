//! Forwarding to SQS over the real AWS wire protocol, against the moto emulator.

pub mod common;

use std::{collections::HashSet, time::Duration};

use agenticai_websocket::config::Config;
use common::{aws_config, create_queue, drain_queue, moto_endpoint, Client, TestServer};
use serde_json::{json, Value};

struct Queues {
    sqs: aws_sdk_sqs::Client,
    pm: String,
    dev: String,
    qa: String,
    ops: String,
}

impl Queues {
    async fn create(endpoint: &str, fifo: bool) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&aws_config(endpoint).await);
        Queues {
            pm: create_queue(&sqs, "pm", fifo).await,
            dev: create_queue(&sqs, "dev", fifo).await,
            qa: create_queue(&sqs, "qa", fifo).await,
            ops: create_queue(&sqs, "ops", fifo).await,
            sqs,
        }
    }

    fn configure(&self, config: &mut Config, endpoint: &str) {
        config.aws.aws_endpoint_url = Some(endpoint.to_owned());
        config.queues.sqs_queue_url_pm = Some(self.pm.clone());
        config.queues.sqs_queue_url_dev = Some(self.dev.clone());
        config.queues.sqs_queue_url_qa = Some(self.qa.clone());
        config.queues.sqs_queue_url_ops = Some(self.ops.clone());
    }
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> String {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn every_route_lands_in_its_queue_with_the_attributes() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let server = TestServer::start(|config| queues.configure(config, &endpoint));
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let routes = [
        ("plan", &queues.pm),
        ("Planning", &queues.pm),
        ("PM", &queues.pm),
        ("code", &queues.dev),
        ("develop", &queues.dev),
        ("dev", &queues.dev),
        ("test", &queues.qa),
        ("qa", &queues.qa),
        ("quality", &queues.qa),
        ("deploy", &queues.ops),
        ("ops", &queues.ops),
        ("OPERATIONS", &queues.ops),
    ];
    for (kind, _) in routes {
        let message_id = format!("m-{kind}");
        client
            .send(json!({"action": "forward", "type": kind, "message_id": message_id, "project_id": "proj-9", "data": {"task": kind}}))
            .await;
    }
    let mut confirmed = HashSet::new();
    for _ in routes {
        let reply = client.recv().await;
        assert_eq!(reply["type"], "forward_confirmed", "{reply}");
        assert!(!reply["sqs_message_id"].as_str().unwrap().is_empty());
        confirmed.insert(reply["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(confirmed.len(), routes.len());

    for url in [&queues.pm, &queues.dev, &queues.qa, &queues.ops] {
        let messages = drain_queue(&queues.sqs, url, 3).await;
        assert_eq!(messages.len(), 3, "queue {url}");
        for message in messages {
            let kind = attribute(&message, "MessageType");
            let expected_url = routes.iter().find(|(k, _)| *k == kind).map(|(_, url)| *url).unwrap();
            assert_eq!(expected_url, url, "{kind} went to the wrong queue");
            assert_eq!(attribute(&message, "ProjectId"), "proj-9");
            assert_eq!(attribute(&message, "MessageId"), format!("m-{kind}"));
            assert!(chrono::DateTime::parse_from_rfc3339(&attribute(&message, "Timestamp")).is_ok());
            let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            assert_eq!(body["action"], "forward");
            assert_eq!(body["data"], json!({"task": kind}));
            assert_eq!(body["gateway"]["connection_id"], client.connection_id.as_str());
            assert!(body["gateway"]["received_at"].is_string());
        }
    }
}

#[tokio::test]
async fn a_thousand_forwards_from_twenty_clients_arrive_exactly_once_in_full_batches() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let server = TestServer::start(|config| {
        queues.configure(config, &endpoint);
        // A linger no loaded machine outruns: twenty clients' forwards fill each batch first.
        config.dispatcher.sqs_batch_linger = Duration::from_millis(250);
    });
    let roles = ["pm", "dev", "qa", "ops"];
    let mut tasks = Vec::new();
    for client_index in 0..20 {
        let url = server.ws_url("/ws");
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            for n in 0..50 {
                let role = roles[(client_index + n) % roles.len()];
                client
                    .send(json!({"action": "forward", "type": role, "message_id": format!("c{client_index}-{n}"), "project_id": "bulk", "data": {"n": n}}))
                    .await;
            }
            let mut confirmed = Vec::new();
            while confirmed.len() < 50 {
                let reply = client.recv().await;
                assert_eq!(reply["type"], "forward_confirmed", "{reply}");
                confirmed.push(reply["message_id"].as_str().unwrap().to_owned());
            }
            confirmed
        }));
    }
    let mut confirmed = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(confirmed.insert(id), "confirmed twice");
        }
    }
    assert_eq!(confirmed.len(), 1000);

    let mut received = HashSet::new();
    for url in [&queues.pm, &queues.dev, &queues.qa, &queues.ops] {
        for message in drain_queue(&queues.sqs, url, 250).await {
            assert!(received.insert(attribute(&message, "MessageId")), "delivered twice");
        }
    }
    assert_eq!(received, confirmed);
    let calls = server.metric("agenticai_ws_sqs_batch_entries_count").await;
    let entries = server.metric("agenticai_ws_sqs_batch_entries_sum").await;
    assert_eq!(entries, 1000.0);
    assert!(entries / calls >= 8.0, "only {:.1} entries per SendMessageBatch call", entries / calls);
}

#[tokio::test]
async fn fifo_queues_get_group_and_deduplication_ids_and_keep_order() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, true).await;
    let server = TestServer::start(|config| queues.configure(config, &endpoint));
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    for n in 0..15 {
        client
            .send(json!({"action": "forward", "type": "dev", "message_id": format!("f{n}"), "project_id": "ordered"}))
            .await;
    }
    for _ in 0..15 {
        assert_eq!(client.recv().await["type"], "forward_confirmed");
    }
    let mut order = Vec::new();
    while order.len() < 15 {
        let output = queues
            .sqs
            .receive_message()
            .queue_url(&queues.dev)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        assert!(!output.messages().is_empty(), "queue ran dry after {}", order.len());
        for message in output.messages() {
            let system = message.attributes().unwrap();
            assert_eq!(system[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId], "ordered");
            let id = attribute(message, "MessageId");
            assert_eq!(system[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId], id);
            order.push(id);
            queues
                .sqs
                .delete_message()
                .queue_url(&queues.dev)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let expected: Vec<String> = (0..15).map(|n| format!("f{n}")).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_missing_queue_is_reported_per_message() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let server = TestServer::start(|config| {
        queues.configure(config, &endpoint);
        config.queues.sqs_queue_url_qa = Some(format!("{endpoint}/123456789012/no-such-queue"));
    });
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let reply =
        client.request(json!({"action": "forward", "type": "qa", "message_id": "lost-1", "project_id": "p"})).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "forward_failed");
    assert_eq!(reply["message_id"], "lost-1");
    assert!(reply["message"].as_str().unwrap().contains("lost-1"), "{reply}");
    let fine =
        client.request(json!({"action": "forward", "type": "dev", "message_id": "ok-1", "project_id": "p"})).await;
    assert_eq!(fine["type"], "forward_confirmed");
    assert_eq!(server.metric("agenticai_ws_forward_entries_total{outcome=\"failed\",queue=\"qa\"}").await, 1.0);
}

/// The emulator becomes unreachable: forwards are retried through a short outage and confirmed
/// once it is back; through an outage longer than the deadline each is reported, none confirmed.
#[tokio::test]
async fn an_emulator_outage_loses_nothing_confirmed_and_reports_the_rest() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let proxy = common::OutageProxy::start(&endpoint).await;
    let server = TestServer::start(|config| {
        queues.configure(config, &proxy.endpoint);
        config.dispatcher.forward_deadline = Duration::from_secs(4);
    });
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let before =
        client.request(json!({"action": "forward", "type": "dev", "message_id": "before", "project_id": "p"})).await;
    assert_eq!(before["type"], "forward_confirmed");

    // A short outage: the forward waits, is retried, and lands when the queue is back.
    proxy.set_down(true);
    client.send(json!({"action": "forward", "type": "dev", "message_id": "through-outage", "project_id": "p"})).await;
    client.expect_silence(Duration::from_millis(1500)).await;
    proxy.set_down(false);
    let through = client.recv().await;
    assert_eq!(through["type"], "forward_confirmed", "{through}");
    assert_eq!(through["message_id"], "through-outage");
    let landed: Vec<String> =
        drain_queue(&queues.sqs, &queues.dev, 2).await.iter().map(|m| attribute(m, "MessageId")).collect();
    assert_eq!(landed.len(), 2);
    assert!(landed.contains(&"before".to_owned()) && landed.contains(&"through-outage".to_owned()));
    assert!(server.metric("agenticai_ws_forward_entries_total{outcome=\"retried\",queue=\"dev\"}").await >= 1.0);

    // An outage longer than the deadline: every forward is reported, by message id.
    proxy.set_down(true);
    for n in 0..5 {
        client
            .send(json!({"action": "forward", "type": "ops", "message_id": format!("doomed-{n}"), "project_id": "p"}))
            .await;
    }
    let mut reported = HashSet::new();
    for _ in 0..5 {
        let reply = client.recv().await;
        assert_eq!(reply["code"], "forward_failed", "{reply}");
        reported.insert(reply["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(reported.len(), 5);
    proxy.set_down(false);
    let leftover = queues.sqs.receive_message().queue_url(&queues.ops).wait_time_seconds(1).send().await.unwrap();
    assert!(leftover.messages().is_empty(), "a reported forward was delivered");
}

#[tokio::test]
async fn forwards_with_no_aws_go_to_the_local_spool_before_confirmation() {
    let server = TestServer::start(|_| {});
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let reply = client
        .request(json!({"action": "forward", "type": "plan", "message_id": "spooled", "project_id": "p", "data": {"goal": "x"}}))
        .await;
    assert_eq!(reply["type"], "forward_confirmed");
    assert_eq!(reply["queue"], "pm");
    let spool = std::fs::read_to_string(server.data_dir.join("spool/pm.jsonl")).unwrap();
    let line: Value = serde_json::from_str(spool.lines().next().unwrap()).unwrap();
    assert_eq!(line["sqs_message_id"], reply["sqs_message_id"]);
    assert_eq!(line["attributes"]["MessageType"], "plan");
    assert_eq!(line["attributes"]["ProjectId"], "p");
    assert_eq!(line["body"]["data"], json!({"goal": "x"}));
    assert_eq!(line["body"]["gateway"]["connection_id"], client.connection_id.as_str());
}

/// Every line in the local spool's files, parsed.
fn spool_lines(data_dir: &std::path::Path) -> Vec<Value> {
    ["pm", "dev", "qa", "ops"]
        .iter()
        .flat_map(|queue| {
            std::fs::read_to_string(data_dir.join(format!("spool/{queue}.jsonl")))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|line| serde_json::from_str(&line).expect("a whole JSON line"))
        .collect()
}

#[tokio::test]
async fn the_local_spool_refuses_forwards_past_spool_max_bytes_and_keeps_every_confirmed_one() {
    const CAP: u64 = 600 * 1024;
    let data = tempfile::tempdir().unwrap();
    let start = || {
        TestServer::start(|config| {
            config.storage.data_dir = data.path().to_path_buf();
            config.storage.spool_max_bytes = std::num::NonZeroU64::new(CAP).unwrap();
        })
    };
    let forward = |id: &str, queue: &str, bytes: usize| json!({"action": "forward", "type": queue, "message_id": id, "project_id": "p", "data": "x".repeat(bytes)});
    let server = start();
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    // Two forwards of 240 KiB fit; the third would take the spool past 600 KiB.
    for id in ["big-1", "big-2"] {
        let reply = client.request(forward(id, "dev", 240 * 1024)).await;
        assert_eq!(reply["type"], "forward_confirmed", "{reply}");
    }
    let refused = client.request(forward("big-3", "dev", 240 * 1024)).await;
    assert_eq!((refused["code"].as_str(), refused["message_id"].as_str()), (Some("forward_failed"), Some("big-3")));
    assert!(refused["message"].as_str().unwrap().contains("SPOOL_MAX_BYTES"), "{refused}");
    // The cap is the four files together: a small forward to another queue still fits.
    assert_eq!(client.request(forward("small", "qa", 1024)).await["type"], "forward_confirmed");
    assert_eq!(client.request(forward("big-4", "ops", 240 * 1024)).await["code"], "forward_failed");
    drop(client);
    drop(server);

    let confirmed: Vec<Value> =
        spool_lines(data.path()).iter().map(|line| line["body"]["message_id"].clone()).collect();
    assert_eq!(confirmed, ["big-1", "big-2", "small"].map(Value::from), "every confirmed forward, nothing else");
    let size: u64 =
        std::fs::read_dir(data.path().join("spool")).unwrap().map(|file| file.unwrap().metadata().unwrap().len()).sum();
    assert!(size <= CAP, "the spool holds {size} bytes");

    // What is on disk counts after a restart; once an operator moved the files away, forwards
    // are accepted again.
    let server = start();
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(forward("after-restart", "dev", 240 * 1024)).await["code"], "forward_failed");
    drop(client);
    drop(server);
    std::fs::rename(data.path().join("spool"), data.path().join("spool-drained")).unwrap();
    let server = start();
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(forward("after-drain", "dev", 240 * 1024)).await["type"], "forward_confirmed");
}

/// An authenticated connection's forward reaches SQS naming who asked: in the body (replacing a
/// client's own `user_id`), in `gateway.user_id` and in the `UserId` attribute.
#[tokio::test]
async fn a_forward_carries_the_verified_user_to_sqs() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let server = TestServer::start(|config| {
        queues.configure(config, &endpoint);
        config.access.jwt_secret = Some(common::tokens::SECRET.into());
    });
    let token = common::tokens::hs256(&common::tokens::claims("olivia", &["proj-*"], 300, json!({})));
    let mut client = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    let forward = json!({"action": "forward", "type": "ops", "message_id": "m-who", "project_id": "proj-1",
                         "user_id": "someone-else", "data": {"task": "deploy"}});
    assert_eq!(client.request(forward).await["type"], "forward_confirmed");
    let messages = drain_queue(&queues.sqs, &queues.ops, 1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attribute(&messages[0], "UserId"), "olivia");
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(body["user_id"], "olivia");
    assert_eq!(body["gateway"]["user_id"], "olivia");
}

/// Passes an SQS call on to the emulator at `url` with the request's headers (the signature among
/// them): its status and body.
async fn post(
    client: &reqwest::Client,
    url: String,
    request: &actix_web::HttpRequest,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut upstream = client.post(url).body(body);
    for (name, value) in request.headers() {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let response = upstream.send().await.expect("the emulator answers");
    (response.status().as_u16(), response.bytes().await.expect("a body").to_vec())
}

/// A `SendMessageBatch` proxy in front of the emulator that answers some entries itself, the way
/// SQS answers a batch in part: an entry whose body holds `fault:sender` is failed as the
/// sender's fault (every time), `fault:server-once` is failed as SQS's own fault once,
/// `fault:drop-once` is left out of the answer once (neither successful nor failed). The rest
/// go to the emulator, and its `Successful` list comes back in reverse order, so only the entry
/// ids tie a result to its message. `batches` holds the entry ids of each call.
struct SqsBatchFaultProxy {
    endpoint: String,
    batches: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl SqsBatchFaultProxy {
    fn start(upstream: String) -> Self {
        use std::sync::{Arc, Mutex};

        use actix_web::{web, HttpRequest, HttpResponse};

        struct State {
            upstream: String,
            batches: Arc<Mutex<Vec<Vec<String>>>>,
            /// Markers already applied once.
            spent: Mutex<HashSet<String>>,
        }

        fn once(state: &State, body: &str, marker: &str) -> bool {
            body.contains(marker) && state.spent.lock().unwrap().insert(format!("{marker}{body}"))
        }

        async fn forward(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
            let client = reqwest::Client::new();
            let url = format!("{}{}", state.upstream, request.uri());
            let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !target.ends_with("SendMessageBatch") {
                let (status, bytes) = post(&client, url, &request, body.to_vec()).await;
                return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(bytes);
            }
            let mut call: Value = serde_json::from_slice(&body).expect("a JSON SendMessageBatch");
            let entries = call["Entries"].as_array().cloned().unwrap_or_default();
            let ids = entries.iter().map(|entry| entry["Id"].as_str().unwrap_or_default().to_owned()).collect();
            state.batches.lock().unwrap().push(ids);
            let (mut passed, mut failed) = (Vec::new(), Vec::new());
            for entry in entries {
                let message = entry["MessageBody"].as_str().unwrap_or_default();
                if message.contains("fault:sender") {
                    failed.push(json!({"Id": entry["Id"], "SenderFault": true, "Code": "InvalidParameterValue",
                                       "Message": "the message is invalid"}));
                } else if once(&state, message, "fault:server-once") {
                    failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError",
                                       "Message": "try again"}));
                } else if !once(&state, message, "fault:drop-once") {
                    passed.push(entry);
                }
            }
            let mut successful = Vec::new();
            if !passed.is_empty() {
                call["Entries"] = Value::Array(passed);
                let (status, bytes) = post(&client, url, &request, serde_json::to_vec(&call).unwrap()).await;
                assert_eq!(status, 200, "the emulator took the batch: {}", String::from_utf8_lossy(&bytes));
                let answer: Value = serde_json::from_slice(&bytes).expect("a JSON answer");
                successful = answer["Successful"].as_array().cloned().unwrap_or_default();
                successful.reverse();
            }
            HttpResponse::Ok()
                .content_type("application/x-amz-json-1.0")
                .body(json!({"Successful": successful, "Failed": failed}).to_string())
        }

        let batches = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State { upstream, batches: batches.clone(), spent: Mutex::new(HashSet::new()) });
        let (addr, thread) = common::serve_on_loopback(move |routes| {
            routes.app_data(state.clone()).default_service(web::to(forward));
        });
        SqsBatchFaultProxy { endpoint: format!("http://{addr}"), batches, _thread: thread }
    }
}

/// The usual SQS failure: a batch answered in part. The sender's fault is reported at once; SQS's
/// own fault and an entry it did not report are retried, then confirmed; every confirmation
/// carries the MessageId SQS gave that very message.
#[tokio::test]
async fn a_batch_answered_in_part_fails_retries_and_confirms_entry_by_entry() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let proxy = SqsBatchFaultProxy::start(endpoint.clone());
    let server = TestServer::start(|config| {
        queues.configure(config, &proxy.endpoint);
        // Long enough that the six forwards, sent back to back, share one batch.
        config.dispatcher.sqs_batch_linger = Duration::from_millis(300);
    });
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let forwards = [
        ("ok-1", "fine"),
        ("bad-1", "fault:sender"),
        ("ok-2", "fine"),
        ("flaky-1", "fault:server-once"),
        ("unreported-1", "fault:drop-once"),
        ("ok-3", "fine"),
    ];
    for (message_id, marker) in forwards {
        client
            .send(json!({"action": "forward", "type": "dev", "message_id": message_id, "project_id": "p",
                         "data": {"marker": marker, "of": message_id}}))
            .await;
    }
    let mut replies = Vec::new();
    for _ in forwards {
        replies.push(client.recv().await);
    }
    let position = |message_id: &str| replies.iter().position(|reply| reply["message_id"] == message_id).unwrap();
    let refused = &replies[position("bad-1")];
    assert_eq!(refused["code"], "forward_failed", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("InvalidParameterValue"), "{refused}");
    // At once: before the retried entries are confirmed.
    assert!(position("bad-1") < position("flaky-1") && position("bad-1") < position("unreported-1"), "{replies:?}");
    let first_batch = proxy.batches.lock().unwrap().first().cloned().unwrap_or_default();
    assert_eq!(first_batch.len(), 6, "the six forwards shared a batch: {first_batch:?}");

    let mut confirmed = std::collections::HashMap::new();
    for reply in replies.iter().filter(|reply| reply["message_id"] != "bad-1") {
        assert_eq!(reply["type"], "forward_confirmed", "{reply}");
        confirmed.insert(reply["message_id"].as_str().unwrap().to_owned(), reply["sqs_message_id"].clone());
    }
    let landed = drain_queue(&queues.sqs, &queues.dev, 5).await;
    assert_eq!(landed.len(), 5, "each confirmed forward once, the refused one never");
    for message in &landed {
        let message_id = attribute(message, "MessageId");
        assert_eq!(
            confirmed.get(&message_id).and_then(Value::as_str),
            message.message_id(),
            "{message_id} was confirmed with another message's SQS id"
        );
    }
    assert!(server.metric("agenticai_ws_forward_entries_total{outcome=\"retried\",queue=\"dev\"}").await >= 2.0);
}

/// A proxy in front of the emulator that answers each `SendMessageBatch` only after `delay`, as a
/// distant SQS does, and keeps the most such calls it had in flight at once.
struct SlowSqsProxy {
    endpoint: String,
    most_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl SlowSqsProxy {
    fn start(upstream: String, delay: Duration) -> Self {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };

        use actix_web::{web, HttpRequest, HttpResponse};

        struct State {
            upstream: String,
            delay: Duration,
            in_flight: AtomicUsize,
            most_in_flight: Arc<AtomicUsize>,
        }

        async fn relay(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
            let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
            let batch = target.ends_with("SendMessageBatch");
            if batch {
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(state.delay).await;
            }
            let url = format!("{}{}", state.upstream, request.uri());
            let (status, bytes) = post(&reqwest::Client::new(), url, &request, body.to_vec()).await;
            if batch {
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(bytes)
        }

        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let state = web::Data::new(State {
            upstream,
            delay,
            in_flight: AtomicUsize::new(0),
            most_in_flight: most_in_flight.clone(),
        });
        let (addr, thread) = common::serve_on_loopback(move |routes| {
            routes.app_data(state.clone()).default_service(web::to(relay));
        });
        SlowSqsProxy { endpoint: format!("http://{addr}"), most_in_flight, _thread: thread }
    }
}

/// The most `SendMessageBatch` calls in flight at once while 40 forwards, four full batches, go
/// to the dev queue through a slow SQS.
async fn most_batches_in_flight(fifo: bool) -> usize {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, fifo).await;
    let proxy = SlowSqsProxy::start(endpoint.clone(), Duration::from_secs(1));
    let server = TestServer::start(|config| queues.configure(config, &proxy.endpoint));
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    for n in 0..40 {
        client
            .send(json!({"action": "forward", "type": "dev", "message_id": format!("f{n}"), "project_id": "p"}))
            .await;
    }
    for _ in 0..40 {
        let reply = client.recv().await;
        assert_eq!(reply["type"], "forward_confirmed", "{reply}");
    }
    proxy.most_in_flight.load(std::sync::atomic::Ordering::SeqCst)
}

/// Throughput: a standard queue does not wait for one batch's answer before sending the next.
#[tokio::test]
async fn a_standard_queue_has_several_batches_in_flight_at_once() {
    let most = most_batches_in_flight(false).await;
    assert!(most >= 2, "the four batches went one at a time");
}

/// Order: a FIFO queue's next batch leaves only once the previous one is answered.
#[tokio::test]
async fn a_fifo_queue_has_one_batch_in_flight_at_a_time() {
    assert_eq!(most_batches_in_flight(true).await, 1);
}

/// A queue that is down is retried with a growing, jittered wait (at most 2 s apart), not
/// hammered: through a 2 s outage a forward is tried again a handful of times.
#[tokio::test]
async fn an_outage_is_retried_with_backoff() {
    let endpoint = moto_endpoint();
    let queues = Queues::create(&endpoint, false).await;
    let proxy = common::OutageProxy::start(&endpoint).await;
    let server = TestServer::start(|config| queues.configure(config, &proxy.endpoint));
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    proxy.set_down(true);
    client.send(json!({"action": "forward", "type": "dev", "message_id": "patient", "project_id": "p"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_down(false);
    assert_eq!(client.recv().await["type"], "forward_confirmed");
    let retries = server.metric("agenticai_ws_forward_entries_total{outcome=\"retried\",queue=\"dev\"}").await;
    // Doubling from 50 ms: about 7 tries in 2 s; without the doubling, about 80.
    assert!((1.0..=20.0).contains(&retries), "{retries} retries in a 2 s outage");
}
