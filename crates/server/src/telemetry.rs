//! Logging set-up: readable lines by default, one JSON object per line with
//! `LOG_FORMAT=json`, filtered by `RUST_LOG`. The server logs to stdout (12-factor);
//! one-shot commands log to stderr, keeping stdout for their result.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
