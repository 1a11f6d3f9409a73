//! Logging set-up: readable lines by default, one JSON object per line with
//! `LOG_FORMAT=json`, filtered by `RUST_LOG`. The server logs to stdout (12-factor);
//! one-shot commands log to stderr, keeping stdout for their result.

use std::fmt;
use std::io::IsTerminal as _;

use chrono::SecondsFormat;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{LogArgs, LogFormat};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. Fails when `RUST_LOG` is not a valid filter.
pub fn init(args: &LogArgs, target: LogTarget) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(args.rust_log.trim())
        .map_err(|e| anyhow::anyhow!("RUST_LOG: not a valid log filter: {e}"))?;
    let (writer, terminal) = match target {
        LogTarget::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogTarget::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match args.log_format {
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Keys every JSON line has, in this order; a field of the same name cannot replace them.
const RESERVED: [&str; 5] = ["timestamp", "level", "target", "message", "spans"];

/// One flat JSON object per line, for collectors that index top-level keys:
/// `timestamp`, `level`, `target`, `message`, then the fields of every span the event
/// happened in (`request_id`, `route`, `kind`, `call_id`, ...; an inner span's value
/// wins over an outer one's) and the event's own fields, which win over both; `spans`
/// lists the spans' names, outermost first.
///
/// Values keep their JSON types: numbers and booleans as such, `Display` and `Debug`
/// values as their text. Fields are only ever `Debug`-formatted when written with `?`,
/// which the code does not do for values an operator reads.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(Value::from(span.name()));
                let extensions = span.extensions();
                // JsonFields stores each span's fields as one JSON object.
                let recorded: Option<Value> = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|formatted| serde_json::from_str(formatted.as_str()).ok());
                if let Some(Value::Object(recorded)) = recorded {
                    for (name, value) in recorded {
                        fields.set(name, value);
                    }
                }
            }
        }
        let mut message = None;
        event.record(&mut EventVisitor {
            fields: &mut fields,
            message: &mut message,
        });

        let mut text = String::from("{");
        let timestamp = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        push_pair(&mut text, "timestamp", &Value::from(timestamp));
        push_pair(&mut text, "level", &Value::from(metadata.level().as_str()));
        push_pair(&mut text, "target", &Value::from(metadata.target()));
        push_pair(
            &mut text,
            "message",
            &Value::from(message.unwrap_or_default()),
        );
        for (name, value) in &fields.0 {
            push_pair(&mut text, name, value);
        }
        push_pair(&mut text, "spans", &Value::Array(spans));
        text.push('}');
        writeln!(writer, "{text}")
    }
}

/// Appends `"key":value` (with a comma unless it is the first pair).
fn push_pair(text: &mut String, key: &str, value: &Value) {
    if text.len() > 1 {
        text.push(',');
    }
    text.push_str(&Value::from(key).to_string());
    text.push(':');
    text.push_str(&value.to_string());
}

/// Fields in the order first seen; setting one again replaces its value in place.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, name: String, value: Value) {
        if RESERVED.contains(&name.as_str()) {
            return;
        }
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }
}

struct EventVisitor<'a> {
    fields: &'a mut Fields,
    message: &'a mut Option<String>,
}

impl EventVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            *self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.fields.set(field.name().to_owned(), value);
        }
    }
}

impl Visit for EventVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` (format arguments) and `%` fields arrive here; their Debug is
        // their text.
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(log: impl FnOnce()) -> Vec<Value> {
        raw_lines_of(log)
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn raw_lines_of(log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn span_fields_are_top_level_keys_and_values_keep_their_json_types() {
        let lines = lines_of(|| {
            let request = tracing::info_span!(
                "request",
                request_id = "req-1",
                route = tracing::field::Empty,
                kind = tracing::field::Empty,
            );
            let _entered = request.enter();
            request.record("route", "/webhook");
            request.record("kind", "ring");
            let waiting: Option<usize> = None;
            tracing::info!(
                status = 204_u16,
                recorded = true,
                waiting,
                depth = Some(3_usize),
                reason = %"Unregistered",
                "webhook accepted"
            );
        });
        let line = &lines[0];
        assert_eq!(line["message"], "webhook accepted");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["route"], "/webhook");
        assert_eq!(line["kind"], "ring");
        assert_eq!(line["status"], 204);
        assert_eq!(line["recorded"], true);
        assert_eq!(line["depth"], 3);
        assert_eq!(line["reason"], "Unregistered");
        assert!(
            line.get("waiting").is_none(),
            "an absent value is left out: {line}"
        );
        assert_eq!(line["spans"], serde_json::json!(["request"]));
        let text = line.to_string();
        assert!(!text.contains("None") && !text.contains("Some("), "{text}");
    }

    #[test]
    fn an_inner_span_wins_and_fields_cannot_replace_the_reserved_keys() {
        let lines = raw_lines_of(|| {
            let outer = tracing::info_span!("request", request_id = "outer", kind = "ring");
            let _outer = outer.enter();
            let inner = tracing::info_span!("push_job", request_id = "inner");
            let _inner = inner.enter();
            tracing::warn!(level = "fake", kind = "message", "event relayed");
        });
        assert_eq!(lines[0].matches(r#""level":"#).count(), 1, "{}", lines[0]);
        assert!(lines[0].starts_with(r#"{"timestamp":"#), "{}", lines[0]);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["request_id"], "inner");
        assert_eq!(line["kind"], "message", "the event's own field wins");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["spans"], serde_json::json!(["request", "push_job"]));
    }
}
