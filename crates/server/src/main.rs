//! `webex-push`: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use webex_push::cli::{Cli, Command};
use webex_push::telemetry::LogTarget;
use webex_push::{commands, telemetry};

fn main() -> ExitCode {
    let command = Cli::parse_env().into_command();
    let (name, target) = match command {
        Command::Serve(_) => ("serve", LogTarget::Stdout),
        Command::Migrate(_) => ("migrate", LogTarget::Stderr),
        Command::Push(_) => ("push", LogTarget::Stderr),
        Command::Check(_) => ("check", LogTarget::Stderr),
        Command::Webhooks(_) => ("webhooks", LogTarget::Stderr),
    };
    if let Err(error) = telemetry::init(command.log(), target) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    // The first line of every run says which build it is.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = name,
        "webex-push starting"
    );
    let runtime = match runtime(&command) {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(command)) {
        Ok(code) => code,
        Err(error) => {
            report(&format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The runtime the command runs on. `serve` relays on `RELAY_THREADS` threads (1: this
/// thread alone, so a ring's queue, store and APNs hops wake no other runtime thread;
/// HTTP runs on actix's own workers and database calls on Tokio's blocking pool); the
/// other commands use the default multi-thread runtime.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Serve(args) if args.webhook.relay_threads <= 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Serve(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(args.webhook.relay_threads);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// Says why the command failed, once: as an error log line where the logs go (stdout
/// for `serve`, stderr otherwise; JSON with `LOG_FORMAT=json`), or on stderr when
/// `RUST_LOG` filters errors out.
fn report(error: &str) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(error = %error, "webex-push failed");
    } else {
        eprintln!("error: {error}");
    }
}
