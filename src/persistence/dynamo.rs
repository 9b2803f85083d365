//! The DynamoDB record store: `BatchWriteItem` in chunks of at most 25 items (the emulator
//! does not enforce the limit; we do), and the project audit Query.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde_json::{Map, Number, Value};

use super::records::{project_key, AuditPage, MESSAGE_SORT_PREFIX};
use crate::aws::{classify, Fault};

/// DynamoDB's limit of items per BatchWriteItem call.
pub(crate) const MAX_BATCH_ITEMS: usize = 25;

pub(crate) struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoStore {
    pub(crate) fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        DynamoStore { client, table }
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Writes up to 25 items; returns the ones DynamoDB left unprocessed (to retry).
    pub(crate) async fn write(&self, items: &[Map<String, Value>]) -> Result<Vec<Map<String, Value>>, Fault> {
        debug_assert!(items.len() <= MAX_BATCH_ITEMS);
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let put = PutRequest::builder()
                .set_item(Some(to_attributes(item)))
                .build()
                .map_err(|error| Fault::Permanent(format!("cannot build the put request: {error}")))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let output = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|error| classify(&error))?;
        let unprocessed = output
            .unprocessed_items()
            .and_then(|tables| tables.get(&self.table))
            .map(|requests| {
                requests
                    .iter()
                    .filter_map(|request| request.put_request())
                    .map(|put| from_attributes(put.item()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(unprocessed)
    }

    /// A project's audit items, newest first.
    pub(crate) async fn query_project(
        &self,
        project_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<AuditPage, Fault> {
        let pk = project_key(project_id);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .expression_attribute_values(":prefix", AttributeValue::S(MESSAGE_SORT_PREFIX.into()))
            .scan_index_forward(false)
            .limit(limit.min(i32::MAX as usize) as i32);
        if let Some(cursor) = cursor {
            query = query
                .exclusive_start_key("pk", AttributeValue::S(pk))
                .exclusive_start_key("sk", AttributeValue::S(cursor.to_owned()));
        }
        let output = query.send().await.map_err(|error| classify(&error))?;
        let items = output.items().iter().map(|item| Value::Object(from_attributes(item))).collect();
        let next_cursor =
            output.last_evaluated_key().and_then(|key| key.get("sk")).and_then(|sk| sk.as_s().ok()).cloned();
        Ok(AuditPage { items, next_cursor })
    }
}

/// JSON object -> DynamoDB item.
pub(crate) fn to_attributes(item: &Map<String, Value>) -> HashMap<String, AttributeValue> {
    item.iter().map(|(key, value)| (key.clone(), to_attribute(value))).collect()
}

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(flag) => AttributeValue::Bool(*flag),
        Value::Number(number) => AttributeValue::N(number.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(values) => AttributeValue::L(values.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(to_attributes(map)),
    }
}

/// DynamoDB item -> JSON object.
pub fn from_attributes(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    item.iter().map(|(key, value)| (key.clone(), from_attribute(value))).collect()
}

fn from_attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::N(number) => number
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| number.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number))
            .unwrap_or_else(|| Value::String(number.clone())),
        AttributeValue::Bool(flag) => Value::Bool(*flag),
        AttributeValue::L(values) => Value::Array(values.iter().map(from_attribute).collect()),
        AttributeValue::M(map) => Value::Object(from_attributes(map)),
        AttributeValue::Ss(texts) => Value::from(texts.clone()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn items_round_trip_through_attributes() {
        let Value::Object(item) =
            json!({"pk": "P#1", "n": 3, "f": 1.5, "list": ["a", 2], "map": {"ok": true}, "none": null})
        else {
            unreachable!()
        };
        assert_eq!(from_attributes(&to_attributes(&item)), item);
    }
}
