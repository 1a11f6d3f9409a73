//! `webex-push`: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use webex_push::cli::{Cli, Command};
use webex_push::telemetry::LogTarget;
use webex_push::{commands, telemetry};

fn main() -> ExitCode {
    let command = Cli::parse_env().into_command();
    let target = match command {
        Command::Serve(_) => LogTarget::Stdout,
        Command::Migrate(_) | Command::Push(_) | Command::Check(_) => LogTarget::Stderr,
    };
    if let Err(error) = telemetry::init(command.log(), target) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(command)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "webex-push failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
