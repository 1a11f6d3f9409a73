//! The Registration port on Diesel: Postgres in production, a SQLite file as the
//! embedded default, one repository type and one contract for both.
//!
//! Diesel is synchronous, so every query runs on Tokio's blocking pool inside the
//! caller's tracing span; the r2d2 pool lives here, with explicit timeouts, so an
//! unreachable database turns into
//! [`StoreError::Unavailable`](webex_push_domain::StoreError::Unavailable)
//! in seconds.
//!
//! The rooms: `store` (the port), `backend` (which database, opened from `config`),
//! `database` (the pools and the one runner), `migrations`, `schema` and `sql` (the
//! tables and the statement text for both backends), `pg_statements` and `pg_batches`
//! (the Postgres hot path, batched by `batch`), `error`, and `check` (`webex-push
//! check`). Siblings import siblings; this file only declares and re-exports.

mod backend;
mod batch;
mod check;
mod config;
mod database;
mod error;
mod migrations;
mod pg_batches;
mod pg_statements;
mod schema;
mod sql;
mod store;

pub use check::{DatabaseCheck, check_database};
pub use config::{
    DEFAULT_POSTGRES_POOL_SIZE, DEFAULT_SQLITE_PATH, DEFAULT_SQLITE_POOL_SIZE, DatabaseConfig,
    DatabaseUrlError, default_database_url,
};
pub use error::StoreSetupError;
pub use store::DieselRegistrationStore;
