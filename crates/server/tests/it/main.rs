//! The server's integration tests, one binary (one build and link, not one each): the
//! HTTP API on mocks (`api`), the real binary end to end (`e2e`), under faults
//! (`faults`), against hostile input (`hostile`), for security (`security`) and with
//! the Webex API stand-in keeping webhooks up (`webhook_upkeep`); what they share is in
//! `common`. One module alone: `cargo test -p webex-push --test it api::`.
//!
//! `cargo test` runs them all in one process, on threads: nothing here may set process-wide
//! state (environment variables, a global tracing subscriber). Each test gets its own
//! database, ports and stand-ins, and starts the binary with an environment of its own.
//! The one process-wide setting, actix-http's renderer of error bodies, is the same
//! function for every app `api` builds: the first one set stays, and is the right one.
// Test helpers outside #[test] functions: a failed set-up should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod api;
mod e2e;
mod faults;
mod hostile;
mod security;
mod webhook_upkeep;
