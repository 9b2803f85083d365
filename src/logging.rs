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
        builder.format(|buf, record| {
            let mut line = Map::new();
            line.insert("timestamp".into(), Value::String(crate::protocol::now_iso8601()));
            line.insert("level".into(), Value::String(record.level().to_string()));
            line.insert("target".into(), Value::String(record.target().to_owned()));
            line.insert("message".into(), Value::String(record.args().to_string()));
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            writeln!(buf, "{}", Value::Object(line))
        });
    }
    let _ = builder.try_init();
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
