//! The AWS emulator (moto) over its real wire protocol: where it is, SDK configuration, queues.

use std::{
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use super::free_port;

/// The AWS emulator: `MOTO_ENDPOINT` when the test command started one, else one started here
/// (once per test binary) with `moto_server` from PyPI, which ends with the test binary.
pub fn moto_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            ensure_dummy_credentials();
            if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
                return endpoint;
            }
            let (endpoint, child) = start_moto();
            MOTO_CHILDREN.lock().unwrap().push(child);
            endpoint
        })
        .clone()
}

/// The started emulators' keepers: held for the binary's life. Statics are never dropped, so
/// the process exit is what stops the emulator: it closes the keeper's stdin.
static MOTO_CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Starts a moto server on a free port; returns its endpoint and its keeper, a shell that kills
/// it when its stdin reaches the end (when this process exits, however it exits).
fn start_moto() -> (String, Child) {
    ensure_dummy_credentials();
    let port = free_port();
    let child = Command::new("sh")
        .args(["-c", "moto_server -H 127.0.0.1 -p \"$1\" & moto=$!; cat >/dev/null; kill $moto", "moto-keeper"])
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on {endpoint} (installed? pip install 'moto[server]'; scripts/test.sh does)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (endpoint, child)
}

/// moto accepts any credentials; the SDK wants some.
fn ensure_dummy_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")] {
            if std::env::var_os(name).is_none() {
                // Set before any client reads the environment (first use of the emulator).
                std::env::set_var(name, value);
            }
        }
    });
}

/// SDK configuration against an emulator endpoint.
pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    agenticai_websocket::sdk_config("us-east-1", Some(endpoint)).await
}

/// Creates a queue with a unique name (FIFO when `fifo`); returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, prefix: &str, fifo: bool) -> String {
    let mut name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut request = sqs.create_queue();
    if fifo {
        name.push_str(".fifo");
        request = request.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    request.queue_name(name).send().await.expect("create queue").queue_url().expect("queue url").to_owned()
}

/// Every message on a queue (received and deleted), waiting up to `expected` messages.
pub async fn drain_queue(sqs: &aws_sdk_sqs::Client, url: &str, expected: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages.len() < expected && Instant::now() < deadline {
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in output.messages() {
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("delete");
            }
            messages.push(message.clone());
        }
    }
    messages
}
