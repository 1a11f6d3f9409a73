//! The PushGateway adapter: a hand-written HTTP/2 token-auth APNs client (one warm
//! connection per environment, one shared provider token, one classification table).

mod classify;
mod client;
mod config;
mod connection;
pub(crate) mod payload;
mod prepared;
mod token;

pub use classify::classify;
pub(crate) use classify::parse_retry_after;
pub use client::{ApnsAnswer, ApnsClient, ApnsWarmUpError, PRODUCTION_ENDPOINT, SANDBOX_ENDPOINT};
pub use config::{ApnsConfig, ApnsConfigError, ApnsKey, KeyId, KeyProblem, TeamId};
pub use payload::{
    ALERT_PAYLOAD_LIMIT, CALL_ENDED_TTL, INCOMING_CALL_TTL, MESSAGE_TTL, VOIP_PAYLOAD_LIMIT,
};
pub use token::Clock;
