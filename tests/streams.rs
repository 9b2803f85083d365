//! Agent streams (docs/protocol.md, "Agent streams"), through real sockets on both engines: each
//! test runs as `memory::NAME` (no REDIS_URL) and `redis::NAME` (a private redis-server). An
//! agent starts, appends and ends; viewers get rollups whose texts concatenate to the stream's,
//! a late joiner a snapshot, a resume an ended stream whole in one place of the history; `at`
//! makes retries harmless; refusals name the stream; a quiet stream is abandoned. Then two tasks
//! over one Redis: appends through either reach a viewer in one order.

pub mod common;

use std::time::Duration;

use common::{Backend, Client, OutageProxy, RedisServer, TestServer};
use serde_json::{json, Value};

on_both_engines!(
    viewers_get_rollups_that_concatenate_to_the_text_then_the_end,
    a_late_joiner_gets_the_text_so_far_then_the_live_appends,
    a_resume_gets_an_ended_stream_whole_at_its_end_and_it_takes_two_places,
    retries_with_at_apply_once_and_refusals_name_the_stream,
    the_http_api_starts_appends_ends_and_reads_streams,
    a_quiet_stream_is_abandoned_by_the_gateway,
    an_open_stream_reaches_its_viewers_window_by_window_and_is_counted_open,
);

async fn viewer(server: &TestServer, project: &str) -> Client {
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = client.request(json!({"action": "subscribe", "project_id": project})).await;
    assert_eq!(confirmed["type"], "subscription_confirmed", "{confirmed}");
    client
}

/// Starts a stream from `agent`; its id.
async fn start(agent: &mut Client, project: &str) -> String {
    let started = agent
        .request(json!({"action": "stream_start", "project_id": project, "agent": "dev", "event": "answer",
                        "data": {"task": 7}, "request_id": "s1"}))
        .await;
    assert_eq!(
        (started["type"].as_str(), started["request_id"].as_str()),
        (Some("stream_started"), Some("s1")),
        "{started}"
    );
    started["stream_id"].as_str().expect("a stream id").to_owned()
}

/// Reads a viewer's stream frames until the stream's end; the text they concatenate to (from
/// `text` on), checking each frame continues the last, and how many append frames came.
async fn follow_to_end(viewer: &mut Client, stream_id: &str, mut text: String) -> (String, usize, Value) {
    let mut frames = 0;
    loop {
        let frame = viewer.recv().await;
        if frame["stream_id"] != stream_id {
            continue;
        }
        match frame["type"].as_str() {
            Some("stream_append") => {
                let added = frame["text"].as_str().expect("text");
                assert_eq!(frame["length"].as_u64(), Some((text.len() + added.len()) as u64), "continuity: {frame}");
                text.push_str(added);
                frames += 1;
            }
            Some("stream_snapshot") => text = frame["text"].as_str().expect("text").to_owned(),
            Some("stream_ended") => return (text, frames, frame),
            _ => {}
        }
    }
}

/// The project's epoch, from a subscription with its position.
async fn confirmed_epoch(server: &TestServer, project: &str) -> Value {
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = client.request(json!({"action": "subscribe", "project_id": project, "recover": true})).await;
    confirmed["epoch"].clone()
}

fn token(n: usize) -> String {
    format!("tok{n} é ")
}

async fn viewers_get_rollups_that_concatenate_to_the_text_then_the_end(backend: Backend) {
    let server = backend.server(|_| {});
    let mut viewers = vec![viewer(&server, "roll").await, viewer(&server, "roll").await];
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "roll").await;
    for viewer in &mut viewers {
        let started = viewer.recv_type("stream_started").await;
        assert_eq!((started["stream_id"].as_str(), started["agent"].as_str()), (Some(&*stream_id), Some("dev")));
        assert_eq!((started["event"].as_str(), started["data"]["task"].as_u64()), (Some("answer"), Some(7)));
        assert!(started["offset"].as_u64().is_some() && started["epoch"].is_string(), "{started}");
    }
    let mut expected = String::new();
    for n in 0..200 {
        let text = token(n);
        agent
            .send(json!({"action": "stream_append", "project_id": "roll", "stream_id": stream_id, "text": text,
                         "at": expected.len()}))
            .await;
        expected.push_str(&text);
    }
    let ended = agent
        .request(json!({"action": "stream_end", "project_id": "roll", "stream_id": stream_id, "status": "completed",
                        "data": {"tokens": 200}}))
        .await;
    assert_eq!(
        (ended["type"].as_str(), ended["length"].as_u64()),
        (Some("stream_ended"), Some(expected.len() as u64)),
        "{ended}"
    );
    for viewer in &mut viewers {
        let (text, frames, end) = follow_to_end(viewer, &stream_id, String::new()).await;
        assert_eq!(text, expected, "the frames concatenate to the stream's text");
        assert!(frames < 200, "200 appends sent at once reach a viewer rolled up: {frames} frames");
        assert_eq!((end["status"].as_str(), end["length"].as_u64()), (Some("completed"), Some(expected.len() as u64)));
        assert_eq!(end["data"]["tokens"], 200);
    }
    let metrics = server.metrics().await;
    assert_eq!(common::metric_value(&metrics, "agenticai_ws_stream_appends_total{source=\"websocket\"}"), 200.0);
    assert!(common::metric_value(&metrics, "agenticai_ws_stream_rollups_total") < 200.0);
    assert_eq!(common::metric_value(&metrics, "agenticai_ws_streams_open"), 0.0);
}

async fn a_late_joiner_gets_the_text_so_far_then_the_live_appends(backend: Backend) {
    let server = backend.server(|_| {});
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "late").await;
    let mut expected = String::new();
    for n in 0..50 {
        let text = token(n);
        let appended = agent
            .request(json!({"action": "stream_append", "project_id": "late", "stream_id": stream_id, "text": text,
                            "request_id": n}))
            .await;
        expected.push_str(&text);
        assert_eq!(
            (appended["type"].as_str(), appended["length"].as_u64()),
            (Some("stream_appended"), Some(expected.len() as u64))
        );
    }
    let mut late = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = late.request(json!({"action": "subscribe", "project_id": "late"})).await;
    assert_eq!(confirmed["type"], "subscription_confirmed");
    let snapshot = late.recv().await;
    assert_eq!(snapshot["type"], "stream_snapshot", "right after the confirmation: {snapshot}");
    assert_eq!((snapshot["status"].as_str(), snapshot["text"].as_str()), (Some("open"), Some(&*expected)));
    assert_eq!((snapshot["agent"].as_str(), snapshot["length"].as_u64()), (Some("dev"), Some(expected.len() as u64)));
    let mut resumed = Client::connect(&server.ws_url("/ws")).await;
    let since = json!({"offset": 0, "epoch": confirmed_epoch(&server, "late").await});
    let confirmed = resumed.request(json!({"action": "subscribe", "project_id": "late", "since": since})).await;
    assert_eq!(confirmed["recovered"], true, "{confirmed}");
    assert_eq!(resumed.recv().await["type"], "stream_started", "the replayed start");
    let resumed_snapshot = resumed.recv().await;
    assert_eq!(
        (resumed_snapshot["type"].as_str(), resumed_snapshot["text"].as_str()),
        (Some("stream_snapshot"), Some(&*expected)),
        "after the replay, the open stream whole"
    );
    let listed = common::get_json(server.http_url("/api/v1/projects/late/streams")).await;
    assert_eq!(listed["streams"][0]["text"].as_str(), Some(&*expected), "{listed}");
    for n in 50..80 {
        let text = token(n);
        agent
            .send(json!({"action": "stream_append", "project_id": "late", "stream_id": stream_id, "text": text}))
            .await;
        expected.push_str(&text);
    }
    agent.send(json!({"action": "stream_end", "project_id": "late", "stream_id": stream_id})).await;
    let seen = snapshot["text"].as_str().expect("text").to_owned();
    let (text, _, end) = follow_to_end(&mut late, &stream_id, seen).await;
    assert_eq!(text, expected, "nothing missing, nothing doubled after the snapshot");
    assert_eq!(end["status"], "completed");
}

async fn a_resume_gets_an_ended_stream_whole_at_its_end_and_it_takes_two_places(backend: Backend) {
    let server = backend.server(|config| config.engine.history_size = 10);
    let published = server.publish(json!({"project_id": "replay", "data": {"before": true}})).await;
    let before: Value = published.json().await.expect("a receipt");
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "replay").await;
    let mut expected = String::new();
    for n in 0..100 {
        expected.push_str(&token(n));
        agent
            .send(json!({"action": "stream_append", "project_id": "replay", "stream_id": stream_id, "text": token(n)}))
            .await;
    }
    let ended = agent
        .request(json!({"action": "stream_end", "project_id": "replay", "stream_id": stream_id, "status": "failed"}))
        .await;
    assert_eq!(ended["offset"].as_u64(), Some(3), "a hundred appends took no place: start 2, end 3: {ended}");
    let mut resumed = Client::connect(&server.ws_url("/ws")).await;
    let since = json!({"offset": before["offset"], "epoch": before["epoch"]});
    let confirmed = resumed.request(json!({"action": "subscribe", "project_id": "replay", "since": since})).await;
    assert_eq!(confirmed["recovered"], true, "{confirmed}");
    let start_frame = resumed.recv().await;
    assert_eq!((start_frame["type"].as_str(), start_frame["offset"].as_u64()), (Some("stream_started"), Some(2)));
    let whole = resumed.recv().await;
    assert_eq!((whole["type"].as_str(), whole["offset"].as_u64()), (Some("stream_snapshot"), Some(3)), "{whole}");
    assert_eq!((whole["status"].as_str(), whole["text"].as_str()), (Some("failed"), Some(&*expected)));
    resumed.expect_silence(Duration::from_millis(200)).await;
    let one = common::get_json(server.http_url(&format!("/api/v1/projects/replay/streams/{stream_id}"))).await;
    assert_eq!((one["status"].as_str(), one["length"].as_u64()), (Some("failed"), Some(expected.len() as u64)));
}

async fn retries_with_at_apply_once_and_refusals_name_the_stream(backend: Backend) {
    let server = backend.server(|config| {
        config.streams.stream_max_bytes = std::num::NonZeroUsize::new(12).expect("not zero");
        config.streams.stream_max_open_per_project = std::num::NonZeroUsize::new(1).expect("not zero");
    });
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "rules").await;
    let append = |text: &str, at: u64| {
        json!({"action": "stream_append", "project_id": "rules", "stream_id": stream_id, "text": text, "at": at,
               "request_id": "a"})
    };
    assert_eq!(agent.request(append("hello", 0)).await["length"], 5);
    let retry = agent.request(append("hello", 0)).await;
    assert_eq!((retry["length"].as_u64(), retry["duplicate"].as_bool()), (Some(5), Some(true)), "{retry}");
    let gap = agent.request(append("!", 9)).await;
    assert_eq!((gap["code"].as_str(), gap["length"].as_u64()), (Some("stream_conflict"), Some(5)), "{gap}");
    assert_eq!(gap["stream_id"].as_str(), Some(&*stream_id));
    let overlap = agent.request(append("HELLO", 3)).await;
    assert_eq!(overlap["code"], "stream_conflict", "{overlap}");
    let too_large = agent.request(append(" world, again", 5)).await;
    assert_eq!((too_large["code"].as_str(), too_large["length"].as_u64()), (Some("stream_too_large"), Some(5)));
    let second = agent.request(json!({"action": "stream_start", "project_id": "rules", "request_id": "b"})).await;
    assert_eq!(second["code"], "too_many_streams", "{second}");
    let again = agent
        .request(json!({"action": "stream_start", "project_id": "rules", "stream_id": stream_id, "request_id": "c"}))
        .await;
    assert_eq!(
        (again["type"].as_str(), again["length"].as_u64()),
        (Some("stream_started"), Some(5)),
        "the same one: {again}"
    );
    agent.request(json!({"action": "stream_end", "project_id": "rules", "stream_id": stream_id})).await;
    let late = agent.request(append("x", 5)).await;
    assert_eq!((late["code"].as_str(), late["status"].as_str()), (Some("stream_ended"), Some("completed")), "{late}");
    let retried_before_end = agent.request(append("hello", 0)).await;
    assert_eq!(retried_before_end["duplicate"], true, "a redelivery of an applied append: {retried_before_end}");
    let elsewhere = agent
        .request(json!({"action": "stream_append", "project_id": "other", "stream_id": stream_id, "text": "x"}))
        .await;
    assert_eq!(elsewhere["code"], "stream_not_found", "another project's stream is not found: {elsewhere}");
    let bad =
        agent.request(json!({"action": "stream_append", "project_id": "rules", "stream_id": "a:b", "text": "x"})).await;
    assert_eq!(bad["code"], "invalid_request");
}

async fn the_http_api_starts_appends_ends_and_reads_streams(backend: Backend) {
    let server = backend.server(|_| {});
    let http = reqwest::Client::new();
    let url = |path: &str| server.http_url(&format!("/api/v1/projects/api{path}"));
    let created = common::wire::send(http.post(url("/streams")).json(&json!({"agent": "qa", "event": "log"}))).await;
    assert_eq!(created.status(), 201);
    let started: Value = created.json().await.expect("JSON");
    let stream_id = started["stream_id"].as_str().expect("an id").to_owned();
    let post = |path: String, body: Value| common::wire::send(http.post(url(&path)).json(&body));
    let appended = post(format!("/streams/{stream_id}/append"), json!({"text": "line 1\n", "at": 0})).await;
    assert_eq!(appended.status(), 200);
    assert_eq!(appended.json::<Value>().await.expect("JSON")["length"], 7);
    let conflict = post(format!("/streams/{stream_id}/append"), json!({"text": "x", "at": 3})).await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(conflict.json::<Value>().await.expect("JSON")["length"], 7);
    let listed = common::get_json(url("/streams")).await;
    assert_eq!(listed["streams"][0]["text"], "line 1\n", "{listed}");
    let ended = post(format!("/streams/{stream_id}/end"), json!({"status": "completed"})).await;
    assert_eq!(ended.status(), 200);
    assert_eq!(ended.json::<Value>().await.expect("JSON")["length"], 7);
    assert_eq!(common::get_json(url("/streams")).await["streams"], json!([]));
    let missing = common::wire::send(http.get(url("/streams/nope"))).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.expect("JSON")["code"], "stream_not_found");
    let after_end = post(format!("/streams/{stream_id}/append"), json!({"text": "x"})).await;
    assert_eq!(after_end.status(), 409);
}

async fn a_quiet_stream_is_abandoned_by_the_gateway(backend: Backend) {
    let server = backend.server(|config| config.streams.stream_idle_timeout = Duration::from_secs(1));
    let mut watcher = viewer(&server, "quiet").await;
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "quiet").await;
    agent
        .send(json!({"action": "stream_append", "project_id": "quiet", "stream_id": stream_id, "text": "thinking"}))
        .await;
    let began = std::time::Instant::now();
    let (text, _, end) = follow_to_end(&mut watcher, &stream_id, String::new()).await;
    assert_eq!((text.as_str(), end["status"].as_str()), ("thinking", Some("abandoned")));
    assert!(began.elapsed() < Duration::from_secs(4), "ended within a second or two of the deadline");
    server.wait_for_metric("agenticai_ws_streams_abandoned_total", 1.0).await;
    let late = agent
        .request(json!({"action": "stream_append", "project_id": "quiet", "stream_id": stream_id, "text": "!"}))
        .await;
    assert_eq!((late["code"].as_str(), late["status"].as_str()), (Some("stream_ended"), Some("abandoned")));
}

/// A viewer of a stream that stays open gets each append within a window of it, not at the
/// stream's end: the first at once, the next at the end of the window the first opened, and one
/// after a quiet spell longer than a window at once again (the window closed). Meanwhile the
/// stream is counted open.
async fn an_open_stream_reaches_its_viewers_window_by_window_and_is_counted_open(backend: Backend) {
    let server = backend.server(|_| {});
    let mut watcher = viewer(&server, "open").await;
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "open").await;
    watcher.recv_type("stream_started").await;
    server.wait_for_metric("agenticai_ws_streams_open", 1.0).await;
    let mut length = 0;
    for (text, quiet_before) in
        [("first ", Duration::ZERO), ("second ", Duration::ZERO), ("third", Duration::from_millis(300))]
    {
        tokio::time::sleep(quiet_before).await;
        agent
            .send(json!({"action": "stream_append", "project_id": "open", "stream_id": stream_id, "text": text}))
            .await;
        length += text.len();
        let frame = watcher.recv_type("stream_append").await;
        assert_eq!(
            (frame["text"].as_str(), frame["length"].as_u64()),
            (Some(text), Some(length as u64)),
            "each append reaches the viewer while the stream is open: {frame}"
        );
    }
    assert_eq!(server.metric("agenticai_ws_streams_open").await, 1.0);
    agent.request(json!({"action": "stream_end", "project_id": "open", "stream_id": stream_id})).await;
    watcher.recv_type("stream_ended").await;
    server.wait_for_metric("agenticai_ws_streams_open", 0.0).await;
}

/// Two tasks over one Redis, a viewer on the first and an agent appending through the second;
/// [`MissedAppends::miss`] cuts the first off Redis pub/sub (a proxy that refuses it, its
/// subscriber killed) while appends go on: what a Redis reconnect does to a task's copy of a
/// stream.
struct MissedAppends {
    /// The viewer's task and its viewer.
    cut_off: TestServer,
    watcher: Client,
    /// The other task and the agent appending through it.
    _appending: TestServer,
    agent: Client,
    stream_id: String,
    /// The stream's text so far.
    expected: String,
    redis: RedisServer,
    proxy: OutageProxy,
}

impl MissedAppends {
    /// A stream of 10 appends the viewer follows; then 10 it misses.
    async fn set_up() -> Self {
        let redis = RedisServer::start();
        let proxy = OutageProxy::start(redis.url().trim_start_matches("redis://").trim_end_matches('/')).await;
        let behind_proxy = format!("redis://{}/", proxy.endpoint.trim_start_matches("http://"));
        let cut_off = TestServer::start(move |config| config.engine.redis_url = Some(behind_proxy));
        let url = redis.url();
        let appending = TestServer::start(move |config| config.engine.redis_url = Some(url));
        let watcher = viewer(&cut_off, "shared").await;
        let mut agent = Client::connect(&appending.ws_url("/ws")).await;
        let stream_id = start(&mut agent, "shared").await;
        let mut setup = MissedAppends {
            cut_off,
            watcher,
            _appending: appending,
            agent,
            stream_id,
            expected: String::new(),
            redis,
            proxy,
        };
        setup.append(0..10).await;
        setup.miss(10..20).await;
        setup
    }

    /// Appends tokens `numbers`, each answered.
    async fn append(&mut self, numbers: std::ops::Range<usize>) {
        for n in numbers {
            append_through(&mut self.agent, &self.stream_id, n, &mut self.expected).await;
        }
    }

    /// Appends tokens `numbers` while the viewer's task is cut off Redis pub/sub; back when it
    /// has resubscribed.
    async fn miss(&mut self, numbers: std::ops::Range<usize>) {
        self.proxy.set_down(true);
        let killed: i64 = self.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed >= 1, "the viewer's task has a pub/sub connection to cut");
        self.cut_off.wait_for_metric("agenticai_ws_redis_connected", 0.0).await;
        self.append(numbers).await;
        self.proxy.set_down(false);
        self.cut_off.wait_for_metric("agenticai_ws_redis_connected", 1.0).await;
    }

    /// Appends tokens `numbers`, the first of which reveals the gap in the cut-off task's copy:
    /// the viewer's next snapshot, while the stream is open, holds at least the text up to them.
    async fn append_until_snapshot(&mut self, numbers: std::ops::Range<usize>) -> String {
        let before = self.expected.clone();
        self.append(numbers).await;
        let snapshot = self.watcher.recv_type("stream_snapshot").await;
        let text = snapshot["text"].as_str().expect("text").to_owned();
        assert_eq!(snapshot["status"], "open", "{snapshot}");
        assert!(self.expected.starts_with(&text) && text.starts_with(&before), "the snapshot fills the gap: {text}");
        text
    }
}

/// The next append the cut-off task gets reveals the gap in its copy: it reads the project's
/// streams again and sends its viewer the text so far as a snapshot while the stream is still
/// open, as often as it happens; the viewer ends with the exact text.
// Multi-threaded: the proxy's tasks serve the servers' start-up while this thread waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_missed_appends_reads_the_stream_again_and_its_viewer_gets_it_whole() {
    let mut gap = MissedAppends::set_up().await;
    gap.append_until_snapshot(20..30).await;
    gap.miss(30..40).await;
    let text = gap.append_until_snapshot(40..50).await;
    gap.agent.send(json!({"action": "stream_end", "project_id": "shared", "stream_id": gap.stream_id})).await;
    let (text, _, _) = follow_to_end(&mut gap.watcher, &gap.stream_id, text).await;
    assert_eq!(text, gap.expected);
}

/// A stream that ends before the cut-off task learnt of the gap in its copy: its viewer gets the
/// `stream_ended` (whose `length` its copy falls short of), then the final text as a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ended_while_a_task_missed_appends_reaches_its_viewer_whole_after_the_end() {
    let mut gap = MissedAppends::set_up().await;
    let ended = gap
        .agent
        .request(json!({"action": "stream_end", "project_id": "shared", "stream_id": gap.stream_id,
                        "status": "completed"}))
        .await;
    assert_eq!(ended["type"], "stream_ended", "{ended}");
    let (text, _, end) = follow_to_end(&mut gap.watcher, &gap.stream_id, String::new()).await;
    let expected = &gap.expected;
    assert!(text.len() < expected.len(), "the viewer's copy missed appends 10 to 19: {text}");
    assert_eq!(end["length"].as_u64(), Some(expected.len() as u64), "the end says how long the text is");
    let snapshot = gap.watcher.recv_type("stream_snapshot").await;
    assert_eq!(
        (snapshot["stream_id"].as_str(), snapshot["status"].as_str(), snapshot["text"].as_str()),
        (Some(&*gap.stream_id), Some("completed"), Some(expected.as_str())),
        "the final text after the end"
    );
}

/// Two tasks over one Redis, appends alternating between them (as HTTP appends behind the ALB
/// would): a viewer on either gets one text in one order, and one joining on the other task
/// mid-stream gets the same text as a snapshot.
#[tokio::test]
async fn appends_through_two_tasks_reach_viewers_on_both_in_one_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let tasks = [
        TestServer::start({
            let url = url.clone();
            move |config| config.engine.redis_url = Some(url)
        }),
        TestServer::start(move |config| config.engine.redis_url = Some(url)),
    ];
    let mut first = viewer(&tasks[0], "shared").await;
    let mut agents = [Client::connect(&tasks[0].ws_url("/ws")).await, Client::connect(&tasks[1].ws_url("/ws")).await];
    let stream_id = start(&mut agents[0], "shared").await;
    let mut expected = String::new();
    for n in 0..30 {
        append_through(&mut agents[n % 2], &stream_id, n, &mut expected).await;
    }
    let mut second = viewer(&tasks[1], "shared").await;
    let snapshot = second.recv_type("stream_snapshot").await;
    assert_eq!(snapshot["text"].as_str(), Some(&*expected), "the other task's copy is the same text");
    let mut seen_by_second = snapshot["text"].as_str().expect("text").to_owned();
    for n in 30..60 {
        append_through(&mut agents[n % 2], &stream_id, n, &mut expected).await;
    }
    agents[1].send(json!({"action": "stream_end", "project_id": "shared", "stream_id": stream_id})).await;
    let (text, _, _) = follow_to_end(&mut first, &stream_id, String::new()).await;
    assert_eq!(text, expected);
    (seen_by_second, _, _) = follow_to_end(&mut second, &stream_id, seen_by_second).await;
    assert_eq!(seen_by_second, expected);
}

/// Appends token `n` through `agent` and waits for its answer.
async fn append_through(agent: &mut Client, stream_id: &str, n: usize, expected: &mut String) {
    let text = token(n);
    let appended = agent
        .request(json!({"action": "stream_append", "project_id": "shared", "stream_id": stream_id, "text": text,
                        "at": expected.len(), "request_id": n}))
        .await;
    expected.push_str(&text);
    assert_eq!(appended["length"].as_u64(), Some(expected.len() as u64), "{appended}");
}

/// A viewer moved by a drain: its task closes it with 1012 mid-stream, it subscribes on the
/// other task, gets the text so far as a snapshot, and ends with the exact text.
#[tokio::test]
async fn a_viewer_moved_by_a_drain_gets_a_snapshot_and_ends_with_the_exact_text() {
    let redis = RedisServer::start();
    let url = redis.url();
    let draining = TestServer::start({
        let url = url.clone();
        move |config| {
            config.engine.redis_url = Some(url);
            config.server.drain_window = Duration::from_millis(100);
        }
    });
    let staying = TestServer::start(move |config| config.engine.redis_url = Some(url));
    let mut watcher = viewer(&draining, "shared").await;
    let mut agent = Client::connect(&staying.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "shared").await;
    let mut expected = String::new();
    for n in 0..20 {
        append_through(&mut agent, &stream_id, n, &mut expected).await;
    }
    draining.begin_drain();
    assert_eq!(watcher.expect_close().await, 1012);
    let mut moved = viewer(&staying, "shared").await;
    let snapshot = moved.recv_type("stream_snapshot").await;
    let mut seen = snapshot["text"].as_str().expect("text").to_owned();
    assert_eq!(seen, expected, "the text so far, whole");
    for n in 20..40 {
        append_through(&mut agent, &stream_id, n, &mut expected).await;
    }
    agent.send(json!({"action": "stream_end", "project_id": "shared", "stream_id": stream_id})).await;
    (seen, _, _) = follow_to_end(&mut moved, &stream_id, seen).await;
    assert_eq!(seen, expected);
}

/// A project left by its last viewer and followed again keeps one rollup window per stream:
/// a viewer gets at most 1000/STREAM_ROLLUP_MS + 1 frames a second however often the project
/// was left before (the windows scheduled for the dropped copy do nothing).
#[tokio::test]
async fn a_project_left_and_followed_again_keeps_one_rollup_window_per_stream() {
    let server = TestServer::start(|_| {});
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start(&mut agent, "window").await;
    let appending = {
        let stream_id = stream_id.clone();
        async move {
            let mut expected = String::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(5));
            for n in 0..400 {
                ticks.tick().await;
                agent
                    .send(json!({"action": "stream_append", "project_id": "window", "stream_id": stream_id,
                                  "text": token(n)}))
                    .await;
                expected.push_str(&token(n));
            }
            agent.request(json!({"action": "stream_end", "project_id": "window", "stream_id": stream_id})).await;
            expected
        }
    };
    let watching = async {
        // Each one leaves as the next arrives, within the 40 ms of a window.
        let mut passer = viewer(&server, "window").await;
        for _ in 0..8 {
            passer.recv_type("stream_append").await;
            let next = viewer(&server, "window").await;
            drop(std::mem::replace(&mut passer, next));
            passer.send(json!({"action": "unsubscribe", "project_id": "window"})).await;
            passer = viewer(&server, "window").await;
        }
        drop(passer);
        let mut last = viewer(&server, "window").await;
        let snapshot = last.recv_type("stream_snapshot").await;
        let began = std::time::Instant::now();
        let (text, frames, _) =
            follow_to_end(&mut last, &stream_id, snapshot["text"].as_str().expect("text").to_owned()).await;
        (text, frames, began.elapsed())
    };
    let (expected, (text, frames, watched)) = tokio::join!(appending, watching);
    assert_eq!(text, expected);
    let allowed = (watched.as_secs_f64() * (1000.0 / 40.0) + 2.0).ceil() as usize;
    assert!(frames <= allowed, "{frames} frames in {watched:?}: more than one window per 40 ms");
}
