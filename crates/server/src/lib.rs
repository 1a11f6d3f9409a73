//! The webex-push server: configuration, HTTP routes, the push queue and the wiring
//! of the domain services to their adapters. `main` only parses and dispatches.

pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod housekeeping;
pub mod metrics;
pub mod process_metrics;
pub mod queue;
pub mod rate_limit;
pub mod request_telemetry;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod watchdog;

pub use config::Config;
pub use error::ApiError;
pub use startup::{Application, Dependencies};
