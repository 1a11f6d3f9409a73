//! The adapters' integration tests, one binary (one build and link, not one each): the
//! APNs client against the APNs stand-in (`apns`), the FCM client against the FCM
//! stand-in (`fcm`), the Webex identity adapter (`identity`, and `identity_logs` for what
//! it logs), the Registration port contract on SQLite and Postgres (`persistence`) and
//! the Webex webhook reader (`webex`). One module alone:
//! `cargo test -p webex-push-adapters --test it persistence::`.
//!
//! `cargo test` runs them all in one process, on threads: nothing here may set process-wide
//! state (environment variables, a global tracing subscriber). `identity_logs` needs a
//! subscriber of its own and so runs its scenario in a child process.
// clippy.toml allows these in `#[test]` functions only; the stand-ins, fixtures and the
// contract cases the persistence macro wraps are plain functions, so the allowance is
// spelled out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod identity_support;

mod apns;
mod fcm;
mod identity;
mod identity_logs;
mod persistence;
mod webex;
