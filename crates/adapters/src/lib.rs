//! Adapters: the outside world behind the domain's ports.
//!
//! - [`persistence`]: the Registration port on Diesel (Postgres in production, SQLite
//!   as the embedded default);
//! - [`apns`]: the PushGateway port, a hand-written HTTP/2 token-auth APNs client;
//! - [`webex`]: the Webex webhook reader (signature check, event parsing);
//! - [`identity`]: the Identity port, who holds a Webex access token (`/v1/people/me`).

pub mod apns;
pub mod identity;
pub mod persistence;
pub mod webex;
