//! One push to one token, and what became of it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    ApnsEnvironment, AppFlavour, BundleId, CallEnded, Channel, DeviceToken, EventKind, EventSource,
    IncomingCall, NewMessage, PushProvider, channel_for,
};

/// What a push says. Shared (`Arc`) because one event fans out to many devices.
#[derive(Debug, Clone, PartialEq)]
pub enum PushContent {
    IncomingCall(Arc<IncomingCall>),
    CallEnded(Arc<CallEnded>),
    Message(Arc<NewMessage>),
}

impl PushContent {
    /// The channel this content travels on to an app of `flavour` on `provider`, `None`
    /// when such an app gets none: the rule of [`channel_for`].
    pub fn channel_for(&self, flavour: AppFlavour, provider: PushProvider) -> Option<Channel> {
        let source = match self {
            PushContent::IncomingCall(call)
                if call.audience.is_some_and(|only| only != flavour) =>
            {
                return None;
            }
            PushContent::IncomingCall(call) => call.source,
            PushContent::CallEnded(ended) => ended.source,
            PushContent::Message(_) => EventSource::Messages,
        };
        channel_for(self.event_kind(), source, flavour, provider)
    }

    /// The kind of the event it tells of: what logs and metrics call it.
    pub fn event_kind(&self) -> EventKind {
        match self {
            PushContent::IncomingCall(_) => EventKind::Ring,
            PushContent::CallEnded(_) => EventKind::CallEnded,
            PushContent::Message(_) => EventKind::Message,
        }
    }
}

/// One notification for one token.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub token: DeviceToken,
    pub channel: Channel,
    /// `None`: unknown; the gateway tries its default environment, then the other.
    pub environment: Option<ApnsEnvironment>,
    /// `None`: the gateway's configured topic.
    pub bundle_id: Option<BundleId>,
    /// Which payloads the app reads.
    pub flavour: AppFlavour,
    pub content: PushContent,
    /// When the push stops being worth anything (the job's deadline): what an FCM
    /// message's TTL follows. `None`: the provider's own lifetime for the kind.
    pub deliver_by: Option<DateTime<Utc>>,
}

/// What APNs made of one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted by the provider. `id` is its id for the push (APNs' `apns-id`, FCM's
    /// message name); `environment` is the APNs gateway that took it, so a token
    /// registered without one can be pinned to it (`None` for FCM, which has one).
    Delivered {
        id: String,
        environment: Option<ApnsEnvironment>,
    },
    /// The token is dead for this app (`Unregistered`, `BadDeviceToken`, ...):
    /// remove it unless it was registered again after `since`.
    TokenInvalid {
        reason: String,
        since: DateTime<Utc>,
    },
    /// A passing fault (throttled, APNs unavailable, connection lost): try again,
    /// no sooner than `after` when APNs said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Our request or configuration is wrong: never retried, never removes a token.
    Rejected { reason: String },
}

impl PushOutcome {
    /// A short label for metrics and the stored last outcome: `delivered` or the reason.
    pub fn label(&self) -> &str {
        match self {
            PushOutcome::Delivered { .. } => "delivered",
            PushOutcome::TokenInvalid { reason, .. }
            | PushOutcome::Retry { reason, .. }
            | PushOutcome::Rejected { reason } => reason,
        }
    }
}

/// Everything a provider said about one push, for operators (the admin test push):
/// more than [`PushOutcome`], which is only what the relay acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestAnswer {
    pub provider: PushProvider,
    /// `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
    /// The provider's reason (Apple's, FCM's error code), or what went wrong here.
    pub reason: Option<String>,
    /// APNs' `apns-id`, or FCM's message name (empty when FCM did not take it).
    pub id: String,
    /// The APNs gateway the push went to; `None` for FCM.
    pub environment: Option<ApnsEnvironment>,
    pub outcome: PushOutcome,
    pub latency: Duration,
}
