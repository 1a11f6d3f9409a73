//! The Webex webhook reader: checks a webhook's signature and turns its body into a
//! domain event (ring, call ended, new message) or an acknowledged "ignored".

mod directory;
mod event;
mod signature;

pub use directory::{WebexWebhooks, WebexWebhooksConfig, WebexWebhooksConfigError, webhook_secret};
pub use event::{WebhookError, WebhookEvent, parse_event, parse_event_at};
pub use signature::{
    SIGNATURE_HEADER, SignatureError, Signer, sign, verify_delivery, verify_signature,
};
