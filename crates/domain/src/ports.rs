//! The ports: what the domain needs from the outside (storage, APNs) and what it
//! offers to it (the use cases the webhook drives).
//!
//! Each method documents which error variant it MUST return when, so every adapter,
//! and every mock, behaves alike.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::types::{
    AccessToken, ApnsEnvironment, CallEnded, Channel, Device, DeviceToken, IncomingCall,
    NewMessage, PersonId, Push, PushOutcome, Registration,
};

/// A boxed error source, for the causes adapters carry up without the domain naming them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong with the registration store.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The store cannot be reached right now (database down, pool exhausted, timeout).
    /// Callers answer "try again later"; it recovers by itself.
    #[error("registration store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a state nobody planned for.
    #[error("registration store failed")]
    Unknown(#[source] BoxError),
}

/// The devices an event should reach, once its key has been claimed
/// ([`RegistrationPort::claim_event_devices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The event is new (or has no key): notify these devices. Empty when the person
    /// has none on the channel, and then the key was not recorded.
    Devices(Vec<Device>),
    /// The key was recorded before (re-delivery, another replica): send nothing. Carries
    /// the devices the event would have reached, for the report.
    Duplicate(Vec<Device>),
}

/// The Registration port: where device tokens live, shared by every replica.
// Not `automock`: it would mock the provided methods too, so every existing mock would
// have to expect them. The `mock!` below lists the required methods only, and the mock
// keeps the provided ones' default implementations.
#[async_trait]
pub trait RegistrationPort: Send + Sync + 'static {
    /// Stores both tokens of `registration` at `at`, replacing whatever either token was
    /// registered as before (person, e-mail, environment, bundle id, registration time):
    /// one row per token, always, atomically for the pair. A token that belonged to
    /// another person moves to this one.
    ///
    /// MUST return `Unavailable` when the store cannot be reached; nothing is then stored.
    async fn register(
        &self,
        registration: &Registration,
        at: DateTime<Utc>,
    ) -> Result<(), RegistrationError>;

    /// Removes `token`, whatever its channel. Returns whether it was there: removing an
    /// unknown token is not an error.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn unregister(&self, token: &DeviceToken) -> Result<bool, RegistrationError>;

    /// The devices of `person` on `channel`, in no particular order; empty when none.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn devices_of(
        &self,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Vec<Device>, RegistrationError>;

    /// Every device of `person` on both channels (for operators).
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn all_devices_of(&self, person: &PersonId) -> Result<Vec<Device>, RegistrationError>;

    /// The device stored under `token`, if any.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, RegistrationError>;

    /// Removes `token` unless it was registered at or after `since` (APNs' 410
    /// timestamp), in one atomic step so a registration racing the removal wins.
    /// Returns whether the token was removed.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn remove_unless_registered_since(
        &self,
        token: &DeviceToken,
        since: DateTime<Utc>,
    ) -> Result<bool, RegistrationError>;

    /// Records the outcome of the last push to `token` (`delivered` or an APNs reason)
    /// and, when `environment` is `Some`, pins the token to that APNs environment.
    /// A token that no longer exists is ignored.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn record_outcome(
        &self,
        token: &DeviceToken,
        outcome: &str,
        environment: Option<ApnsEnvironment>,
        at: DateTime<Utc>,
    ) -> Result<(), RegistrationError>;

    /// Records that the event `key` was seen at `at`. Returns `true` the first time a
    /// key is recorded and `false` ever after (until pruned), across every replica
    /// sharing the store.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn mark_event_seen(
        &self,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, RegistrationError>;

    /// The devices of `person` on `channel`, and, when `key` is `Some` and there are
    /// any, the event `key` recorded as seen at `at` in the same step: `Duplicate` when
    /// it had been recorded before. A person without devices gets `Devices(vec![])` and
    /// nothing is recorded (an org-wide webhook reports many people with no device here;
    /// a write for each would buy nothing).
    ///
    /// The default makes the two calls [`devices_of`](Self::devices_of) then
    /// [`mark_event_seen`](Self::mark_event_seen); stores override it to spare a round
    /// trip on the hot path of every webhook.
    ///
    /// MUST return `Unavailable` when the store cannot be reached; nothing is then
    /// recorded.
    async fn claim_event_devices(
        &self,
        key: Option<&str>,
        at: DateTime<Utc>,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Claim, RegistrationError> {
        let devices = self.devices_of(person, channel).await?;
        match key {
            Some(key) if !devices.is_empty() && !self.mark_event_seen(key, at).await? => {
                Ok(Claim::Duplicate(devices))
            }
            _ => Ok(Claim::Devices(devices)),
        }
    }

    /// Forgets events seen before `before`; returns how many were forgotten.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn prune_seen_events(&self, before: DateTime<Utc>) -> Result<u64, RegistrationError>;

    /// Checks that the store answers (for readiness probes).
    ///
    /// MUST return `Unavailable` when it does not.
    async fn ping(&self) -> Result<(), RegistrationError>;
}

#[cfg(any(test, feature = "mock"))]
mockall::mock! {
    /// A mock of the required methods of [`RegistrationPort`]; the provided ones keep
    /// their default implementations on top of them.
    pub RegistrationPort {}

    #[async_trait]
    impl RegistrationPort for RegistrationPort {
        async fn register(
            &self,
            registration: &Registration,
            at: DateTime<Utc>,
        ) -> Result<(), RegistrationError>;
        async fn unregister(&self, token: &DeviceToken) -> Result<bool, RegistrationError>;
        async fn devices_of(
            &self,
            person: &PersonId,
            channel: Channel,
        ) -> Result<Vec<Device>, RegistrationError>;
        async fn all_devices_of(
            &self,
            person: &PersonId,
        ) -> Result<Vec<Device>, RegistrationError>;
        async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, RegistrationError>;
        async fn remove_unless_registered_since(
            &self,
            token: &DeviceToken,
            since: DateTime<Utc>,
        ) -> Result<bool, RegistrationError>;
        async fn record_outcome(
            &self,
            token: &DeviceToken,
            outcome: &str,
            environment: Option<ApnsEnvironment>,
            at: DateTime<Utc>,
        ) -> Result<(), RegistrationError>;
        async fn mark_event_seen(
            &self,
            key: &str,
            at: DateTime<Utc>,
        ) -> Result<bool, RegistrationError>;
        async fn prune_seen_events(
            &self,
            before: DateTime<Utc>,
        ) -> Result<u64, RegistrationError>;
        async fn ping(&self) -> Result<(), RegistrationError>;
    }
}

/// The PushGateway port: one notification to one token through APNs.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PushGateway: Send + Sync + 'static {
    /// Sends `push` once (no retries: the caller owns the retry policy and deadline)
    /// and classifies APNs' answer. Never fails: a lost connection or timeout is
    /// `PushOutcome::Retry`, a configuration problem is `PushOutcome::Rejected`.
    ///
    /// A push whose `environment` is `None` is sent to the gateway's default
    /// environment and, on `BadDeviceToken`, once to the other; `Delivered` says which
    /// one took it.
    async fn send(&self, push: &Push) -> PushOutcome;
}

/// What happened when an event was relayed to a person's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The event was seen before (re-delivery, another replica): nothing was sent.
    pub duplicate: bool,
    /// Devices the person had on the event's channel.
    pub devices: usize,
    pub delivered: usize,
    /// Dead tokens removed from the store.
    pub removed: usize,
    /// Pushes APNs refused for a reason retrying cannot fix.
    pub rejected: usize,
    /// Pushes still failing when the deadline passed.
    pub gave_up: usize,
}

/// What can go wrong relaying an event.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The registration store cannot be reached; the event may be retried later.
    #[error("registration store unavailable")]
    Unavailable(#[source] BoxError),
    #[error("relaying the event failed")]
    Unknown(#[source] BoxError),
}

impl From<RegistrationError> for NotifyError {
    fn from(error: RegistrationError) -> Self {
        match error {
            RegistrationError::Unavailable(source) => NotifyError::Unavailable(source),
            RegistrationError::Unknown(source) => NotifyError::Unknown(source),
        }
    }
}

/// The IncomingCall port: the use cases the Webex webhook drives.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IncomingCallPort: Send + Sync + 'static {
    /// Rings every VoIP device of the callee, concurrently, once per call however many
    /// times Webex delivers it.
    ///
    /// MUST return `Unavailable` when the store cannot be reached (nothing was sent).
    async fn ring(&self, call: IncomingCall) -> Result<DeliveryReport, NotifyError>;

    /// Tells the person's Alert devices that a call ended (never as a VoIP push).
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn end_call(&self, ended: CallEnded) -> Result<DeliveryReport, NotifyError>;

    /// Announces a new message on the recipient's Alert devices.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn notify_message(&self, message: NewMessage) -> Result<DeliveryReport, NotifyError>;
}

/// How long each kind of push may keep retrying before it is worthless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A ring is worthless after the caller gives up (~30 s).
    pub ring: Duration,
    pub call_ended: Duration,
    pub message: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            ring: Duration::from_secs(30),
            call_ended: Duration::from_secs(60),
            message: Duration::from_secs(300),
        }
    }
}

/// What can go wrong proving who holds a Webex access token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Webex says the token is not valid (unknown, expired, revoked, or not allowed to
    /// read the person): the caller has not proven anything. Retrying with the same
    /// token will not help.
    #[error("the access token was rejected by Webex")]
    Rejected,
    /// Webex cannot answer right now (unreachable, timed out, throttling, failing):
    /// nothing is known about the token; it recovers by itself.
    #[error("the identity provider is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else, e.g. an answer that does not name a person.
    #[error("the identity lookup failed")]
    Unknown(#[source] BoxError),
}

/// The Identity port: who a Webex access token belongs to, so a phone can only be
/// bound to the calls of the person who holds the token.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IdentityPort: Send + Sync + 'static {
    /// The person `access_token` was issued to, as Webex says (`GET /v1/people/me`).
    /// Adapters may cache answers for a few minutes, keyed by something other than the
    /// token itself.
    ///
    /// MUST return `Rejected` when Webex refuses the token (invalid, expired or
    /// revoked), `Unavailable` when Webex cannot be reached, times out, throttles or
    /// fails, and `Unknown` for an answer it cannot make sense of. MUST NOT log the
    /// token.
    async fn person_for_token(&self, access_token: &AccessToken)
    -> Result<PersonId, IdentityError>;
}
