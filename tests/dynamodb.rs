//! Records in DynamoDB over the real wire protocol (moto), the 25-item batch limit, retry of
//! unprocessed items, and the audit read path.

pub mod common;

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::{AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType};
use common::{aws_config, moto_endpoint, Client, DynamoFaultProxy, TestServer};
use serde_json::{json, Value};

async fn create_table(endpoint: &str) -> (aws_sdk_dynamodb::Client, String) {
    let dynamo = aws_sdk_dynamodb::Client::new(&aws_config(endpoint).await);
    let table = format!("records-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap();
    let attribute = |name: &str| {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    dynamo
        .create_table()
        .table_name(&table)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    (dynamo, table)
}

async fn items_with_pk(dynamo: &aws_sdk_dynamodb::Client, table: &str, pk: &str, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = dynamo
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
            .send()
            .await
            .unwrap();
        let items: Vec<Value> =
            output.items().iter().map(|item| Value::Object(agenticai_websocket::dynamo_item_json(item))).collect();
        if items.len() >= expected || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One stored item with this partition key, its attributes as DynamoDB holds them.
async fn raw_item(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    let output = dynamo
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .limit(1)
        .send()
        .await
        .expect("query");
    output.items().first().cloned().unwrap_or_else(|| panic!("no item with pk {pk}"))
}

#[tokio::test]
async fn connections_forwards_and_publications_are_recorded_and_read_back_newest_first() {
    let endpoint = moto_endpoint();
    let (dynamo, table) = create_table(&endpoint).await;
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.storage.dynamodb_table_name = Some(table.clone());
    });
    let mut client = Client::connect(&server.ws_url("/ws?project_id=audited")).await;
    let connection_id = client.connection_id.clone();
    let forward = client
        .request(json!({"action": "forward", "type": "dev", "message_id": "fw-1", "project_id": "audited", "data": {"a": 1}}))
        .await;
    assert_eq!(forward["type"], "forward_confirmed");
    for n in 0..3 {
        server.publish(json!({"project_id": "audited", "data": n, "type": "step"})).await;
        client.recv_type("message").await;
    }
    client.stream.close(None).await.unwrap();
    drop(client);

    let connection = items_with_pk(&dynamo, &table, &format!("CONN#{connection_id}"), 1).await;
    assert_eq!(connection.len(), 1);
    // Read the stored attributes themselves, not through the crate's own decoder: DynamoDB's TTL
    // expires only items whose TTL attribute is a Number of epoch seconds.
    let raw = raw_item(&dynamo, &table, &format!("CONN#{connection_id}")).await;
    use aws_sdk_dynamodb::types::AttributeValue;
    assert_eq!(raw["pk"], AttributeValue::S(format!("CONN#{connection_id}")));
    assert_eq!(raw["kind"], AttributeValue::S("connection".into()));
    assert_eq!(raw["projects"], AttributeValue::L(vec![AttributeValue::S("audited".into())]));
    let AttributeValue::N(ttl) = &raw["ttl"] else { panic!("ttl is not a Number: {:?}", raw["ttl"]) };
    assert!(ttl.parse::<i64>().expect("whole epoch seconds") > chrono::Utc::now().timestamp());
    let audit_raw = raw_item(&dynamo, &table, "PROJECT#audited").await;
    assert!(matches!(audit_raw["sk"], AttributeValue::S(_)), "{audit_raw:?}");
    let record = &connection[0];
    assert_eq!(record["kind"], "connection");
    assert_eq!(record["projects"], json!(["audited"]));
    assert_eq!(record["close_reason"], "client_closed");
    assert!(record["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(record["ttl"].as_i64().unwrap() > chrono::Utc::now().timestamp());

    let audit = items_with_pk(&dynamo, &table, "PROJECT#audited", 4).await;
    assert_eq!(audit.len(), 4);
    let forward_item = audit.iter().find(|item| item["kind"] == "forward").unwrap();
    assert_eq!(forward_item["message_id"], "fw-1");
    assert_eq!(forward_item["sqs_message_id"], forward["sqs_message_id"]);
    assert_eq!(forward_item["queue"], "dev");
    assert!(forward_item["size"].as_i64().unwrap() > 0);
    assert_eq!(audit.iter().filter(|item| item["kind"] == "publication").count(), 3);

    // The read path: newest first, two at a time.
    let http = reqwest::Client::new();
    let first: Value = http
        .get(server.http_url("/api/v1/projects/audited/messages?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_items = first["items"].as_array().unwrap();
    assert_eq!(first_items.len(), 2);
    assert!(first_items[0]["sk"].as_str() > first_items[1]["sk"].as_str());
    assert_eq!(first_items[0]["data"], Value::Null);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = http
        .get(server.http_url("/api/v1/projects/audited/messages"))
        .query(&[("limit", "10"), ("cursor", cursor)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_items = second["items"].as_array().unwrap();
    assert_eq!(second_items.len(), 2);
    assert!(second_items[0]["sk"].as_str() < first_items[1]["sk"].as_str());
    assert_eq!(second_items.last().unwrap()["kind"], "forward", "the forward came first, so it is last");
}

/// A table in moto, a [`DynamoFaultProxy`] in front of it (unprocessed items on the first
/// `unprocessed_once` batches) and a server writing its records through the proxy.
async fn server_behind_fault_proxy(
    unprocessed_once: usize,
) -> (aws_sdk_dynamodb::Client, String, DynamoFaultProxy, TestServer) {
    let endpoint = moto_endpoint();
    let (dynamo, table) = create_table(&endpoint).await;
    let proxy = DynamoFaultProxy::start(endpoint, unprocessed_once);
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(proxy.endpoint.clone());
        config.storage.dynamodb_table_name = Some(table.clone());
    });
    (dynamo, table, proxy, server)
}

#[tokio::test]
async fn batches_stay_within_25_items_and_unprocessed_items_are_retried() {
    let (dynamo, table, proxy, server) = server_behind_fault_proxy(3).await;
    for n in 0..120 {
        server.publish(json!({"project_id": "many", "data": n})).await;
    }
    let audit = items_with_pk(&dynamo, &table, "PROJECT#many", 120).await;
    assert_eq!(audit.len(), 120, "every record arrived despite unprocessed items");
    let sizes = proxy.batch_sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&size| size <= 25), "a batch exceeded 25 items: {sizes:?}");
    assert!(server.metric("agenticai_ws_record_retries_total").await >= 1.0);
    assert_eq!(server.metric("agenticai_ws_records_dropped_total").await, 0.0);
}

#[tokio::test]
async fn a_refused_batch_loses_only_its_bad_record() {
    let (dynamo, table, proxy, server) = server_behind_fault_proxy(0).await;
    // Published at once, so their records reach the persistence actor together and share a
    // batch with the one DynamoDB refuses.
    let publishes = (0..40).map(|n| {
        let project = if n == 20 { common::POISON } else { "healthy" };
        server.publish(json!({"project_id": project, "data": n}))
    });
    for response in futures_util::future::join_all(publishes).await {
        assert_eq!(response.status(), 200);
    }
    let audit = items_with_pk(&dynamo, &table, "PROJECT#healthy", 39).await;
    assert_eq!(audit.len(), 39, "every good record of the refused batch was written");
    server.wait_for_metric("agenticai_ws_records_dropped_total", 1.0).await;
    let poisoned = proxy.poisoned_batches.lock().unwrap().clone();
    assert!(poisoned.iter().any(|&items| items > 1), "the bad record never shared a batch: {poisoned:?}");
    assert_eq!(poisoned.last(), Some(&1), "the bad record was tried alone last: {poisoned:?}");
}

#[tokio::test]
async fn the_local_record_store_serves_the_same_read_path() {
    let server = TestServer::start(|_| {});
    for n in 0..3 {
        server.publish(json!({"project_id": "local", "data": n})).await;
    }
    // Records are written after the publishes are answered: wait for all three, then page.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = common::get_json(server.http_url("/api/v1/projects/local/messages")).await;
        if all["items"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "records never appeared: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = common::get_json(server.http_url("/api/v1/projects/local/messages?limit=2")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string(), "a third record remains: {page}");
    assert_eq!(page["items"][0]["kind"], "publication");
}

#[tokio::test]
async fn a_table_that_stays_down_drops_records_past_the_buffer_but_never_blocks_clients() {
    let endpoint = moto_endpoint();
    let (_, table) = create_table(&endpoint).await;
    let outage = common::OutageProxy::start(&endpoint).await;
    outage.set_down(true);
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(outage.endpoint.clone());
        config.storage.dynamodb_table_name = Some(table.clone());
        config.storage.persistence_buffer_records = NonZeroUsize::new(10).unwrap();
    });
    let mut client = Client::connect(&server.ws_url("/ws?project_id=down")).await;
    for n in 0..60 {
        let response = server.publish(json!({"project_id": "down", "data": n})).await;
        assert_eq!(response.status(), 200, "publishing must not wait for the table");
        assert_eq!(client.recv().await["data"], n);
    }
    assert!(server.metric("agenticai_ws_records_dropped_total").await >= 20.0);
    assert!(server.metric("agenticai_ws_record_retries_total").await >= 1.0);
    // The buffer (10) plus the one batch (at most 25) the writer keeps retrying.
    assert!(server.metric("agenticai_ws_records_buffered").await <= 35.0);
}
