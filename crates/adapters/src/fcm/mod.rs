//! The PushGateway adapter for Android: an FCM HTTP v1 client (one shared OAuth 2.0
//! access token from the service account, one warm HTTP/2 connection, one
//! classification table).

mod classify;
mod client;
mod config;
mod payload;
mod token;

pub use classify::{ErrorBody, classify};
pub use client::{FcmAnswer, FcmClient, FcmWarmUpError};
pub use config::{FCM_ENDPOINT, FCM_SCOPE, FcmConfig, FcmConfigError, ServiceAccount};
pub use payload::{DATA_LIMIT, TELEPHONY_PUSH_KEY};
pub use token::TokenError;
