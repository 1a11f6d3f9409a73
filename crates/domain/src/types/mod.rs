//! Domain values, each parsed at the edge and valid by construction.

mod access_token;
mod device_token;
mod events;
mod person_id;
mod push;
mod raw_json;
mod registration;
mod webhook;

pub use access_token::{AccessToken, AccessTokenError};
pub use device_token::{DeviceToken, DeviceTokenError, PushProvider};
pub use events::{
    CallEnded, CallId, CalleeField, Caller, Deadlines, Event, EventKey, EventKind, EventSource,
    IncomingCall, Job, JobId, NewMessage, ReplicaId, channel_for,
};
pub use person_id::{PersonId, PersonIdError};
pub use push::{Push, PushContent, PushOutcome, TestAnswer};
pub use raw_json::RawJson;
pub use registration::{
    ApnsEnvironment, AppFlavour, BundleId, BundleIdError, Channel, Device, EmailAddress,
    EmailError, ParseEnumError, Registration,
};
pub use webhook::{RemoteWebhook, WebhookSecret, WebhookSpec};
