//! Logging through `env_logger` (`RUST_LOG`, default `info`): readable text, or with
//! `LOG_FORMAT=json` one JSON object per line for CloudWatch Logs Insights, with the record's
//! structured fields (`connection_id`, `queue`, `message_id`, ...) as top-level keys.
//!
//! actix-http logs some client mistakes at ERROR (a request that does not parse, a broken
//! fragment): [`LoweredLevels`] lowers those, so an operator is not paged for a client's bug. It
//! lowers the redis crate's own reports to DEBUG too ([`OWN_REPORTS_ELSEWHERE`]).
//!
//! Field values may carry what a client chose (a token's `sub`): in the text format their control
//! characters are escaped ([`escaped_key_values`]), so no value can end a line and write one
//! that reads as the server's; JSON escapes them itself. Messages carry no client data.

use std::{
    fmt,
    io::{self, Write},
};

use log::kv::{Key, Value as KvValue, VisitSource};
use serde_json::{Map, Value};

use crate::config::LogFormat;

/// Installs the logger; a second call (tests start several servers) is a no-op.
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Json => builder.format(|buf, record| writeln!(buf, "{}", json_line(record))),
        LogFormat::Text => builder.format_key_values(escaped_key_values),
    };
    let logger = builder.build();
    let max_level = logger.filter();
    if log::set_boxed_logger(Box::new(LoweredLevels(logger))).is_ok() {
        log::set_max_level(max_level);
    }
}

/// Messages of the HTTP layer that report what a client did wrong, and the level they deserve.
const CLIENT_FAULTS: [(&str, log::Level); 3] = [
    ("stream error: request parse error", log::Level::Debug),
    ("Unfinished fragment", log::Level::Debug),
    ("stream error: ", log::Level::Warn),
];

/// Crates whose WARN and ERROR records the gateway reports better itself, lowered to DEBUG
/// (`RUST_LOG=redis=debug` shows them). The redis crate's cluster client logs each step of a
/// topology change (a connection lost, every failed reconnect, every slot refresh: dozens of
/// WARN and ERROR lines for one failover); the engine says once what happened (a shard without a
/// reachable primary, a replica lost, a primary back: [`crate::engine::redis`]'s `shards`), and
/// each refused publication says why.
const OWN_REPORTS_ELSEWHERE: [&str; 1] = ["redis"];

/// Passes every record on, with actix-http's client-fault errors at the level of
/// [`CLIENT_FAULTS`] and the records of [`OWN_REPORTS_ELSEWHERE`] at DEBUG.
struct LoweredLevels<L>(L);

impl<L: log::Log> LoweredLevels<L> {
    fn level_of(record: &log::Record<'_>) -> log::Level {
        let target = record.target();
        let crate_name = target.split("::").next().unwrap_or(target);
        if OWN_REPORTS_ELSEWHERE.contains(&crate_name) {
            return record.level().max(log::Level::Debug);
        }
        if record.level() != log::Level::Error || !target.starts_with("actix_http") {
            return record.level();
        }
        let message = record.args().to_string();
        CLIENT_FAULTS.iter().find(|(prefix, _)| message.starts_with(prefix)).map_or(record.level(), |(_, level)| *level)
    }
}

impl<L: log::Log> log::Log for LoweredLevels<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = Self::level_of(record);
        if level == record.level() {
            return self.0.log(record);
        }
        let metadata = log::Metadata::builder().level(level).target(record.target()).build();
        if self.0.enabled(&metadata) {
            self.0.log(&record.to_builder().level(level).build());
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// The text format's fields, ` key=value` each as env_logger writes them, with the control
/// characters of values escaped as Rust writes them (`\n`, `\r`, `\u{1b}`).
fn escaped_key_values(buf: &mut env_logger::fmt::Formatter, fields: &dyn log::kv::Source) -> io::Result<()> {
    fields.visit(&mut TextFields(buf)).map_err(io::Error::other)
}

struct TextFields<'a, W: Write>(&'a mut W);

impl<'kvs, W: Write> VisitSource<'kvs> for TextFields<'_, W> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), log::kv::Error> {
        write!(self.0, " {key}=")?;
        fmt::write(&mut EscapeControls(&mut *self.0), format_args!("{value}")).map_err(io::Error::other)?;
        Ok(())
    }
}

/// Writes text through to `W`, each control character escaped.
struct EscapeControls<'a, W: Write>(&'a mut W);

impl<W: Write> fmt::Write for EscapeControls<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some((at, control)) = rest.char_indices().find(|(_, c)| c.is_control()) {
            self.0.write_all(&rest.as_bytes()[..at]).map_err(|_| fmt::Error)?;
            write!(self.0, "{}", control.escape_default()).map_err(|_| fmt::Error)?;
            rest = &rest[at + control.len_utf8()..];
        }
        self.0.write_all(rest.as_bytes()).map_err(|_| fmt::Error)
    }
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
    use std::sync::Mutex;

    use super::*;

    /// Keeps the level and message of what reaches it.
    #[derive(Default)]
    struct Captured(Mutex<Vec<(log::Level, String)>>);

    impl log::Log for Captured {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().unwrap().push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    #[test]
    fn a_clients_malformed_request_is_not_logged_as_an_error() {
        let logger = LoweredLevels(Captured::default());
        let log = |target: &str, message: std::fmt::Arguments<'_>| {
            log::Log::log(
                &logger,
                &log::Record::builder().level(log::Level::Error).target(target).args(message).build(),
            );
        };
        log("actix_http::h1::dispatcher", format_args!("stream error: request parse error: invalid Header provided"));
        log("actix_http::ws::codec", format_args!("Unfinished fragment Ping"));
        log("actix_http::h1::dispatcher", format_args!("stream error: IO error: connection reset"));
        log("agenticai_websocket::server", format_args!("stream error: request parse error (ours, kept)"));
        let seen = logger.0 .0.lock().unwrap().iter().map(|(level, _)| *level).collect::<Vec<_>>();
        assert_eq!(seen, vec![log::Level::Debug, log::Level::Debug, log::Level::Warn, log::Level::Error]);
    }

    #[test]
    fn the_redis_crates_reports_are_debug_the_engines_kept() {
        let logger = LoweredLevels(Captured::default());
        let log = |level: log::Level, target: &str| {
            let record = log::Record::builder().level(level).target(target).args(format_args!("m")).build();
            log::Log::log(&logger, &record);
        };
        log(log::Level::Error, "redis::cluster_handling::async_connection");
        log(log::Level::Warn, "redis::cluster_handling::async_connection");
        log(log::Level::Trace, "redis::cmd");
        log(log::Level::Warn, "agenticai_websocket::engine::redis::shards");
        log(log::Level::Warn, "redisx");
        let seen = logger.0 .0.lock().unwrap().iter().map(|(level, _)| *level).collect::<Vec<_>>();
        use log::Level::{Debug, Trace, Warn};
        assert_eq!(seen, vec![Debug, Debug, Trace, Warn, Warn]);
    }

    #[test]
    fn text_fields_escape_control_characters_so_a_value_cannot_start_a_line() {
        let fields: [(&str, log::kv::Value<'_>); 3] = [
            ("user_id", log::kv::Value::from("mallory\n[2099-01-01T00:00:00Z ERROR forged] hi\r\u{1b}[2K")),
            ("entries", log::kv::Value::from(10u64)),
            ("name", log::kv::Value::from("tab\there, é and ✓ kept")),
        ];
        let mut text = Vec::new();
        log::kv::Source::visit(&fields[..], &mut TextFields(&mut text)).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            " user_id=mallory\\n[2099-01-01T00:00:00Z ERROR forged] hi\\r\\u{1b}[2K entries=10 name=tab\\there, é and ✓ kept"
        );
    }

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
