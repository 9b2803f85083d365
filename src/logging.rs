//! Logging through `env_logger` (`RUST_LOG`, default `info`): readable text, or with
//! `LOG_FORMAT=json` one JSON object per line for CloudWatch Logs Insights, with the record's
//! structured fields (`connection_id`, `queue`, `message_id`, ...) as top-level keys.

use std::io::Write;

use log::kv::{Key, Value as KvValue, VisitSource};
use serde_json::{Map, Value};

use crate::config::LogFormat;

/// Installs the logger; a second call (tests start several servers) is a no-op.
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|buf, record| writeln!(buf, "{}", json_line(record)));
    }
    let _ = builder.try_init();
}

/// One log record as a JSON object: timestamp, level, target, message and its fields.
fn json_line(record: &log::Record<'_>) -> Value {
    let mut line = Map::new();
    line.insert("timestamp".into(), Value::String(crate::protocol::now_iso8601()));
    line.insert("level".into(), Value::String(record.level().to_string()));
    line.insert("target".into(), Value::String(record.target().to_owned()));
    line.insert("message".into(), Value::String(record.args().to_string()));
    let _ = record.key_values().visit(&mut JsonFields(&mut line));
    Value::Object(line)
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), log::kv::Error> {
        let json = if let Some(number) = value.to_i64() {
            Value::from(number)
        } else if let Some(number) = value.to_u64() {
            Value::from(number)
        } else if let Some(flag) = value.to_bool() {
            Value::Bool(flag)
        } else {
            Value::String(value.to_string())
        };
        self.0.insert(key.as_str().to_owned(), json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_structured_fields_typed() {
        let fields: [(&str, log::kv::Value<'_>); 4] = [
            ("connection_id", log::kv::Value::from("c-1")),
            ("entries", log::kv::Value::from(10u64)),
            ("delta", log::kv::Value::from(-3i64)),
            ("draining", log::kv::Value::from(true)),
        ];
        let fields: &[(&str, log::kv::Value<'_>)] = &fields;
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("agenticai_websocket::hub")
            .args(format_args!("outbound queue full"))
            .key_values(&fields)
            .build();
        let line = json_line(&record);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "agenticai_websocket::hub");
        assert_eq!(line["message"], "outbound queue full");
        assert_eq!(line["connection_id"], "c-1");
        assert_eq!(line["entries"], 10);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["draining"], true);
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
