//! The ports: what the domain needs from the outside (storage, APNs) and what it
//! offers to it (the use cases the webhook drives).
//!
//! Each method documents which error variant it MUST return when, so every adapter,
//! and every mock, behaves alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::types::Deadlines;
use crate::types::{
    AccessToken, ApnsEnvironment, Channel, Device, DeviceToken, EventKey, Job, JobId, PersonId,
    Push, PushOutcome, Registration, RemoteWebhook, ReplicaId, TestAnswer, WebhookSpec,
};

/// A boxed error source, for the causes adapters carry up without the domain naming them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong with the registration store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached right now (database down, pool exhausted, timeout).
    /// Callers answer "try again later"; it recovers by itself.
    #[error("registration store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a state nobody planned for.
    #[error("registration store failed")]
    Unknown(#[source] BoxError),
}

/// The devices an event should reach, once its key has been claimed
/// ([`RegistrationPort::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The event is new (or has no key), or its key was recorded by this same job:
    /// notify these devices. Empty when the person has none on the channel, and then
    /// the key was not recorded.
    Devices(Vec<Device>),
    /// The key was recorded before by another job (re-delivery, another replica): send
    /// nothing. Carries the devices the event would have reached, for the report.
    Duplicate(Vec<Device>),
}

impl Claim {
    /// The claim for `devices` read in the same step as the key: `fresh` when the key
    /// was recorded by this job (just now or by an earlier try). The one place that
    /// says what a duplicate is: a person without devices never has one.
    pub fn new(devices: Vec<Device>, fresh: bool) -> Self {
        if fresh || devices.is_empty() {
            Claim::Devices(devices)
        } else {
            Claim::Duplicate(devices)
        }
    }
}

/// One event to claim: look up the person's devices (on both channels: which of them
/// an event goes to depends on the app that registered each, see
/// [`channel_for`](crate::channel_for)) and, when there are any, record the key as this
/// job's, with what another replica needs to deliver the event should this one stop
/// before it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct EventClaim {
    /// `None`: the event cannot be de-duplicated; nothing is recorded.
    pub key: Option<EventKey>,
    pub job: JobId,
    pub person: PersonId,
    pub at: DateTime<Utc>,
    /// The event as the domain stores it (JSON, see [`StoredEvent`]).
    pub event: String,
    pub deliver_by: DateTime<Utc>,
    /// The replica that holds the job until it is finished.
    pub holder: ReplicaId,
}

/// A claimed event no replica holds any more (its holder stopped before finishing it),
/// now held by the caller of [`RegistrationPort::take_over_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub job: JobId,
    /// As [`EventClaim::event`] carried it.
    pub event: String,
    pub deliver_by: DateTime<Utc>,
}

/// What [`RegistrationPort::take_over_events`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakeOver {
    /// Unfinished events still within their deadline, now the caller's.
    pub events: Vec<StoredEvent>,
    /// Unfinished events whose deadline passed while nobody held them: forgotten, and
    /// counted, for they were accepted and never relayed.
    pub expired: u64,
}

/// The Registration port: where device tokens live, shared by every replica.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
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
    ) -> Result<(), StoreError>;

    /// Keeps only the `keep` most recently registered devices of `person` on `channel`
    /// (ties broken by token) and removes the others; returns the tokens removed.
    ///
    /// MUST return `Unavailable` when the store cannot be reached; nothing is then
    /// removed.
    async fn trim_devices(
        &self,
        person: &PersonId,
        channel: Channel,
        keep: usize,
    ) -> Result<Vec<DeviceToken>, StoreError>;

    /// Removes `token`, whatever its channel. Returns whether it was there: removing an
    /// unknown token is not an error.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn unregister(&self, token: &DeviceToken) -> Result<bool, StoreError>;

    /// The devices of `person` on `channel`, in no particular order; empty when none.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn devices_of(
        &self,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Vec<Device>, StoreError>;

    /// Every device of `person` on both channels (for operators).
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn all_devices_of(&self, person: &PersonId) -> Result<Vec<Device>, StoreError>;

    /// The device stored under `token`, if any.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, StoreError>;

    /// Removes `token` unless it was registered at or after `since` (APNs' 410
    /// timestamp), in one atomic step so a registration racing the removal wins.
    /// Returns whether the token was removed.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn remove_unless_registered_since(
        &self,
        token: &DeviceToken,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

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
    ) -> Result<(), StoreError>;

    /// Every device of `claim.person`, and, when the claim has a key
    /// and there are devices, the key recorded in the same step as `claim.job`'s, with
    /// the event, its deadline and its holder. [`Claim::new`] makes the answer: fresh
    /// when this call recorded the key or the same job had recorded it before (a retry
    /// after an unknown outcome), `Duplicate` when another job did, across every
    /// replica sharing the store. A person without devices gets `Devices(vec![])` and
    /// nothing is recorded (an org-wide webhook reports many people with no device
    /// here; a write for each would buy nothing).
    ///
    /// MUST return `Unavailable` when the store cannot be reached or the outcome is
    /// unknown (a timeout): a retry with the same job then finds its own record.
    async fn claim(&self, claim: &EventClaim) -> Result<Claim, StoreError>;

    /// Marks the event `key` as relayed: no replica will take it over. A key that is
    /// unknown or already finished is ignored.
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn finish_event(&self, key: &EventKey) -> Result<(), StoreError>;

    /// Says that `holder` is alive at `at`, and makes it the holder of at most `limit`
    /// unfinished events, still within their deadline, whose holder has not said it is
    /// alive since `alive_since`. Unfinished events past their deadline with no live
    /// holder are forgotten and counted. Two replicas taking over at once never take
    /// the same event.
    ///
    /// MUST return `Unavailable` when the store cannot be reached; nothing is then
    /// taken over.
    async fn take_over_events(
        &self,
        holder: ReplicaId,
        at: DateTime<Utc>,
        alive_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<TakeOver, StoreError>;

    /// Forgets at most `limit` events seen before `before`; returns how many were
    /// forgotten (fewer than `limit`: caught up).
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn prune_seen_events(&self, before: DateTime<Utc>, limit: u32)
    -> Result<u64, StoreError>;

    /// Checks that the store answers (for readiness probes).
    ///
    /// MUST return `Unavailable` when it does not.
    async fn ping(&self) -> Result<(), StoreError>;
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

/// The TestPushGateway port: one test push to one token, answered in full, for
/// operators. Not the relay's way out: test pushes do not count as pushes relayed.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TestPushGateway: Send + Sync + 'static {
    /// Sends `push` once, as [`PushGateway::send`] would (no retries), and returns
    /// everything the provider said. Never fails: a lost connection or timeout is an
    /// answer with `status: None` and the reason in `reason`, a configuration problem
    /// a `PushOutcome::Rejected` one. MUST NOT remove or record anything: the caller
    /// decides what becomes of the token.
    async fn send_detailed(&self, push: &Push) -> TestAnswer;
}

/// What happened when an event was relayed to a person's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The event was seen before (re-delivery, another replica): nothing was sent.
    pub duplicate: bool,
    /// Devices the person has registered, on either channel, from any app: zero when
    /// the event names nobody registered here.
    pub registered: usize,
    /// Those of them the event goes to ([`channel_for`](crate::channel_for)).
    pub devices: usize,
    pub delivered: usize,
    /// Dead tokens removed from the store.
    pub removed: usize,
    /// Pushes APNs refused for a reason retrying cannot fix.
    pub rejected: usize,
    /// Pushes still failing when the deadline passed.
    pub gave_up: usize,
    /// Tries it took to claim the event (0 when it was claimed before the webhook was
    /// answered).
    pub attempts: u32,
}

/// What can go wrong relaying an event.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The registration store cannot be reached; the event may be retried later.
    #[error("registration store unavailable")]
    Unavailable(#[source] BoxError),
    /// The event's deadline passed before anything could be sent (the store was
    /// unreachable, or the job waited too long): it is dropped, late.
    #[error("the deadline passed before the event could be relayed ({attempts} tries)")]
    Late {
        /// Tries made to claim the event.
        attempts: u32,
    },
    #[error("relaying the event failed")]
    Unknown(#[source] BoxError),
}

impl From<StoreError> for NotifyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => NotifyError::Unavailable(source),
            StoreError::Unknown(source) => NotifyError::Unknown(source),
        }
    }
}

/// The IncomingCall port: the use case the Webex webhook drives, relaying rings,
/// call-ended notices and messages to a person's devices.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IncomingCallPort: Send + Sync + 'static {
    /// One try to claim `job` (see [`RegistrationPort::claim`]), made before the webhook
    /// is answered, so that an accepted event is on record, and survives this replica,
    /// before Webex hears "accepted". No retry: the webhook must be answered fast.
    ///
    /// MUST return `Unavailable` when the store cannot be reached: nothing is known to
    /// be recorded, and [`relay`](Self::relay) with `claimed: None` tries again as the
    /// same job.
    async fn accept(&self, job: &Job) -> Result<Claim, NotifyError>;

    /// Relays `job` to the devices `claimed` (what [`accept`](Self::accept) answered)
    /// or, when `None`, claims it first, retrying while the store is unavailable; each
    /// push is retried within `job.deliver_by`, then the job is finished. Nothing is
    /// sent after `job.deliver_by`.
    ///
    /// MUST return `Late` when the deadline passed before anything could be sent
    /// (nothing was), and `Unknown` when the store fails for another reason.
    async fn relay(
        &self,
        job: Job,
        claimed: Option<Vec<Device>>,
    ) -> Result<DeliveryReport, NotifyError>;

    /// Says this replica is alive, and takes over at most `limit` unfinished jobs of
    /// replicas that stopped (see [`RegistrationPort::take_over_events`]), each to be
    /// relayed with `claimed: None`. Also returns how many unfinished jobs were found
    /// past their deadline (accepted, never relayed).
    ///
    /// MUST return `Unavailable` when the store cannot be reached.
    async fn take_over(&self, limit: usize) -> Result<(Vec<Job>, u64), NotifyError>;
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
    /// The person `access_token` was issued to, as Webex says (the token's own person).
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

/// What can go wrong asking Webex about webhooks.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Webex refused the access token (invalid, expired, revoked).
    #[error("the access token was rejected by Webex")]
    Rejected,
    /// Webex understood and said no: the token may not do this (no Webex Calling for
    /// a `telephony_calls` webhook, not an org admin for an org-wide one). The message
    /// is Webex's, safe to log.
    #[error("Webex refused: {0}")]
    Refused(String),
    /// Webex cannot answer right now (unreachable, timed out, throttling, failing).
    #[error("the Webex API is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else, e.g. an answer that does not parse.
    #[error("the Webex webhook request failed")]
    Unknown(#[source] BoxError),
}

/// The WebhookDirectory port: the Webex webhooks API, as the holder of an access token
/// sees it. MUST NOT log tokens or secrets.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait WebhookDirectory: Send + Sync + 'static {
    /// The token holder's own webhooks, or (`org_wide`) the org's.
    async fn list(
        &self,
        token: &AccessToken,
        org_wide: bool,
    ) -> Result<Vec<RemoteWebhook>, DirectoryError>;

    /// Makes a webhook as `spec` says; Webex's answer describes it.
    async fn create(
        &self,
        token: &AccessToken,
        spec: &WebhookSpec,
    ) -> Result<RemoteWebhook, DirectoryError>;

    /// Sets the name, target and (when given) secret of webhook `id`, and re-activates
    /// it when `activate`.
    async fn update(
        &self,
        token: &AccessToken,
        id: &str,
        spec: &WebhookSpec,
        activate: bool,
    ) -> Result<RemoteWebhook, DirectoryError>;

    /// Deletes webhook `id`; an unknown id is not an error.
    async fn delete(&self, token: &AccessToken, id: &str) -> Result<(), DirectoryError>;
}
