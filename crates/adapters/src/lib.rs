//! Adapters: the outside world behind the domain's ports.
//!
//! - [`persistence`]: the Registration port on Diesel (Postgres in production, SQLite
//!   as the embedded default);
//! - [`apns`]: the PushGateway port, a hand-written HTTP/2 token-auth APNs client;
//! - [`fcm`]: the PushGateway port for Android, an FCM HTTP v1 client (service-account
//!   access token, one warm HTTP/2 connection);
//! - [`webex`]: the Webex webhook reader (signature check, event parsing);
//! - [`identity`]: the Identity port, who holds a Webex access token (`/v1/people/me`).

pub mod apns;
pub mod fcm;
pub mod identity;
pub mod persistence;
pub mod webex;
