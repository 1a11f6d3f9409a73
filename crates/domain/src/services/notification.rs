//! Relaying Webex events to a person's devices: the claim (de-duplication, and the
//! record that lets another replica finish the job), fan-out, retries within the
//! event's one deadline, clean-up of dead tokens, and taking over the jobs of replicas
//! that stopped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use rand::Rng as _;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::instrument;

use super::Clock;
use crate::ports::{
    Claim, DeliveryReport, EventClaim, IncomingCallPort, NotifyError, PushGateway,
    RegistrationPort, StoreError,
};
use crate::types::{
    ApnsEnvironment, Device, DeviceToken, Event, Job, Push, PushContent, PushOutcome, PushProvider,
    ReplicaId,
};

/// Exponential backoff for pushes APNs asks us to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The backoff ceiling before the first retry; it doubles before each next one.
    pub base: Duration,
    /// The ceiling never grows beyond this.
    pub max: Duration,
}

impl RetryPolicy {
    /// A zero base would let a push that keeps failing spin without ever sleeping.
    const MIN_BASE: Duration = Duration::from_millis(1);

    /// The backoff ceiling before retry number `retry` (0 for the first retry):
    /// `base * 2^retry`, capped at `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let base = self.base.max(Self::MIN_BASE);
        let max = self.max.max(base);
        2u32.checked_pow(retry)
            .and_then(|factor| base.checked_mul(factor))
            .map_or(max, |ceiling| ceiling.min(max))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

/// The first wait before claiming again an event the store could not serve; it doubles
/// up to [`MAX_STORE_BACKOFF`]. A database fail-over takes seconds, a ring is worth 30.
const FIRST_STORE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(2);

/// A replica that has not said it is alive for this long is taken to have stopped,
/// and its unfinished jobs are taken over. [`IncomingCallPort::take_over`] must be
/// called well within it (the server calls it every 2 s).
pub const HOLDER_TIMEOUT: Duration = Duration::from_secs(10);

/// A device already recorded `delivered` is recorded again only after this long: a
/// routine delivery changes nothing an operator reads but the timestamp, and would cost
/// a row update per push. So `last_outcome_at` of a device that keeps receiving is at
/// most this old; every other outcome, the first delivery after one, and an
/// environment pin are recorded at once.
pub const DELIVERED_REFRESH: TimeDelta = TimeDelta::minutes(15);

/// Whether a delivery to `device` tells the store something new: its last outcome was
/// another (or none), or was recorded [`DELIVERED_REFRESH`] ago or more.
fn delivery_is_news(device: &Device, now: chrono::DateTime<chrono::Utc>) -> bool {
    device.last_outcome.as_deref() != Some("delivered")
        || device
            .last_outcome_at
            .is_none_or(|at| now.signed_duration_since(at) >= DELIVERED_REFRESH)
}

/// Picks the actual delay given a backoff ceiling. The default is full jitter (uniform
/// in `[0, ceiling]`), so replicas retrying after the same APNs hiccup spread out.
pub type Jitter = Arc<dyn Fn(Duration) -> Duration + Send + Sync>;

fn full_jitter(ceiling: Duration) -> Duration {
    rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
}

/// What became of the push to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceResult {
    Delivered,
    /// The token was dead and is gone from the store.
    Removed,
    /// The push did not go through and the token stays: it was registered again after
    /// APNs declared it dead, or the store could not remove it.
    Kept,
    Rejected,
    GaveUp,
}

/// The IncomingCall port, implemented over the registration store and the push gateway.
#[derive(Clone)]
pub struct NotificationService {
    store: Arc<dyn RegistrationPort>,
    gateway: Arc<dyn PushGateway>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    jitter: Jitter,
    /// This process: the holder of the jobs it claims until they are finished.
    replica: ReplicaId,
    /// Whether the last call to `take_over` could say this replica is alive. After a
    /// store outage every replica looks stopped to every other; taking over only after
    /// one successful round gives the others the time to say they are alive too.
    alive: Arc<AtomicBool>,
    /// Rejection reasons already logged at warn level: a misconfiguration rejects every
    /// push, and one warning per reason is enough to alert the operator.
    warned_reasons: Arc<Mutex<HashSet<String>>>,
}

impl NotificationService {
    pub fn new(
        store: Arc<dyn RegistrationPort>,
        gateway: Arc<dyn PushGateway>,
        retry: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            gateway,
            retry,
            clock,
            jitter: Arc::new(full_jitter),
            replica: ReplicaId::new(),
            alive: Arc::default(),
            warned_reasons: Arc::default(),
        }
    }

    /// Replaces the full-jitter delay; the result is kept within `[0, ceiling]`.
    /// For tests that need a deterministic number of attempts.
    pub fn with_jitter(
        mut self,
        jitter: impl Fn(Duration) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    /// The replica this service claims jobs for.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// One claim of `job`, with the record another replica would need to finish it.
    async fn claim(&self, job: &Job) -> Result<Claim, NotifyError> {
        let event = serde_json::to_string(&job.event)
            .map_err(|error| NotifyError::Unknown(Box::new(error)))?;
        let claim = EventClaim {
            key: job.event.key(),
            job: job.id,
            person: job.event.person().clone(),
            at: self.clock.now(),
            event,
            deliver_by: job.deliver_by,
            holder: self.replica,
        };
        Ok(self.store.claim(&claim).await?)
    }

    /// Claims `job` until the store answers or the deadline is near; the claim and how
    /// many tries it took.
    async fn claim_within(
        &self,
        job: &Job,
        deadline: Instant,
    ) -> Result<(Claim, u32), NotifyError> {
        let mut backoff = FIRST_STORE_BACKOFF;
        let mut attempts: u32 = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(NotifyError::Late { attempts });
            }
            attempts += 1;
            match timeout_at(deadline, self.claim(job)).await {
                Ok(Ok(claim)) => return Ok((claim, attempts)),
                // Nothing is known to be recorded, or it was recorded for this job, which
                // the next try recognises: trying again cannot ring twice.
                Ok(Err(NotifyError::Unavailable(source))) => {
                    if Instant::now() + backoff >= deadline {
                        tracing::warn!(attempts, error = %source, "store unavailable until the deadline");
                        return Err(NotifyError::Late { attempts });
                    }
                    tracing::warn!(
                        attempts,
                        retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        error = %source,
                        "store unavailable; the event will be claimed again"
                    );
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(NotifyError::Late { attempts }),
            }
        }
    }

    /// Sends `content` to every device, retrying each until `deadline`.
    async fn fan_out(
        &self,
        devices: &[Device],
        content: PushContent,
        deadline: Instant,
        deliver_by: DateTime<Utc>,
        report: &mut DeliveryReport,
    ) {
        let results = join_all(
            devices
                .iter()
                .map(|device| self.deliver(device, &content, deadline, deliver_by)),
        )
        .await;
        for result in results {
            match result {
                DeviceResult::Delivered => report.delivered += 1,
                DeviceResult::Removed => report.removed += 1,
                DeviceResult::Rejected => report.rejected += 1,
                DeviceResult::GaveUp => report.gave_up += 1,
                DeviceResult::Kept => {}
            }
        }
    }
    /// Pushes `content` to one device, retrying until `deadline`, and updates the store
    /// with what APNs said. Store failures here are logged, never returned: one device's
    /// bookkeeping must not cost the other devices their push.
    #[instrument(
        name = "deliver",
        skip_all,
        fields(
            token = %device.token,
            environment = device.environment.map(tracing::field::display)
        )
    )]
    async fn deliver(
        &self,
        device: &Device,
        content: &PushContent,
        deadline: Instant,
        deliver_by: DateTime<Utc>,
    ) -> DeviceResult {
        let push = Push {
            token: device.token.clone(),
            channel: device.channel,
            environment: device.environment,
            bundle_id: device.bundle_id.clone(),
            flavour: device.flavour,
            content: content.clone(),
            deliver_by: Some(deliver_by),
        };
        let mut retries: u32 = 0;
        loop {
            let Ok(outcome) = timeout_at(deadline, self.gateway.send(&push)).await else {
                tracing::warn!(
                    attempts = retries + 1,
                    "deadline passed while sending; gave up"
                );
                return DeviceResult::GaveUp;
            };
            match outcome {
                PushOutcome::Delivered { id, environment } => {
                    tracing::debug!(
                        id,
                        environment = environment.map(tracing::field::display),
                        attempts = retries + 1,
                        "delivered"
                    );
                    // Pin an APNs token to the gateway that took it, so later pushes skip
                    // the other one; a token with a known environment keeps it.
                    let pin = environment.filter(|_| device.environment.is_none());
                    if pin.is_some() || delivery_is_news(device, self.clock.now()) {
                        self.record(&device.token, "delivered", pin).await;
                    }
                    return DeviceResult::Delivered;
                }
                PushOutcome::TokenInvalid { reason, since } => {
                    return self.drop_dead_token(&device.token, &reason, since).await;
                }
                PushOutcome::Retry { reason, after } => {
                    let ceiling = self.retry.ceiling(retries);
                    let delay = (self.jitter)(ceiling)
                        .min(ceiling)
                        .max(after.unwrap_or_default());
                    retries += 1;
                    if Instant::now()
                        .checked_add(delay)
                        .is_none_or(|retry_at| retry_at >= deadline)
                    {
                        tracing::warn!(reason, attempts = retries, "deadline reached; gave up");
                        self.record(&device.token, &reason, None).await;
                        return DeviceResult::GaveUp;
                    }
                    tracing::debug!(
                        reason,
                        attempts = retries,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "retrying"
                    );
                    sleep(delay).await;
                }
                PushOutcome::Rejected { reason } => {
                    let provider = device.token.provider();
                    if self.first_rejection_for(&reason) {
                        match provider {
                            PushProvider::Apns => tracing::warn!(
                                reason,
                                "APNs rejected a push: check the APNs configuration (reported once per reason)",
                            ),
                            PushProvider::Fcm => tracing::warn!(
                                reason,
                                "FCM rejected a push: check the FCM service account and Firebase project (reported once per reason)",
                            ),
                        }
                    } else {
                        tracing::debug!(reason, %provider, "the push was rejected");
                    }
                    self.record(&device.token, &reason, None).await;
                    return DeviceResult::Rejected;
                }
            }
        }
    }

    async fn drop_dead_token(
        &self,
        token: &DeviceToken,
        reason: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> DeviceResult {
        match self
            .store
            .remove_unless_registered_since(token, since)
            .await
        {
            Ok(true) => {
                tracing::info!(reason, %since, "dead token removed");
                DeviceResult::Removed
            }
            Ok(false) => {
                tracing::info!(reason, %since, "token registered again since APNs gave it up; kept");
                self.record(token, reason, None).await;
                DeviceResult::Kept
            }
            Err(error) => {
                tracing::warn!(reason, error = %error, "dead token not removed");
                DeviceResult::Kept
            }
        }
    }

    async fn record(&self, token: &DeviceToken, outcome: &str, pin: Option<ApnsEnvironment>) {
        if let Err(error) = self
            .store
            .record_outcome(token, outcome, pin, self.clock.now())
            .await
        {
            tracing::warn!(outcome, error = %error, "push outcome not recorded");
        }
    }

    /// Whether `reason` is rejected for the first time since start-up.
    fn first_rejection_for(&self, reason: &str) -> bool {
        let mut warned = self
            .warned_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !warned.contains(reason) && warned.insert(reason.to_owned())
    }

    /// Marks `job` relayed, so no replica takes it over. A failure is logged: the job
    /// stays held by this replica, and only a replica that outlives it would push again.
    async fn finish(&self, job: &Job) {
        let Some(key) = job.event.key() else {
            return;
        };
        if let Err(error) = self.store.finish_event(&key).await {
            tracing::warn!(error = %error, "relayed event not marked finished");
        }
    }
}

/// The devices the event goes to: those whose app takes it on the channel they serve
/// ([`Event::channel_for`]). The store returns all of a person's devices; this is the
/// one place that picks, and so the guard that keeps a message, a call-ended notice
/// or a ring of the wrong shape away from a VoIP token (which would get the app
/// killed).
fn reached_by(devices: Vec<Device>, event: &Event) -> Vec<Device> {
    devices
        .into_iter()
        .filter(|device| {
            event.channel_for(device.flavour, device.token.provider()) == Some(device.channel)
        })
        .collect()
}

#[async_trait]
impl IncomingCallPort for NotificationService {
    #[instrument(name = "accept", skip_all, fields(job = %job.id, kind = job.event.kind().as_str()))]
    async fn accept(&self, job: &Job) -> Result<Claim, NotifyError> {
        self.claim(job).await
    }

    #[instrument(
        name = "relay",
        skip_all,
        fields(job = %job.id, kind = job.event.kind().as_str(), person = %job.event.person())
    )]
    async fn relay(
        &self,
        job: Job,
        claimed: Option<Vec<Device>>,
    ) -> Result<DeliveryReport, NotifyError> {
        // The one deadline, counted from the webhook's arrival (or carried over from the
        // replica that accepted the job), for the claim and every push alike.
        let deadline = Instant::now() + job.time_left(self.clock.now());
        let (claim, attempts) = match claimed {
            Some(devices) => (Claim::Devices(devices), 0),
            None => self
                .claim_within(&job, deadline)
                .await
                .inspect_err(|error| {
                    tracing::warn!(error = %error, "event not claimed");
                })?,
        };
        let (devices, duplicate) = match claim {
            Claim::Devices(devices) => (devices, false),
            Claim::Duplicate(devices) => (devices, true),
        };
        let registered = devices.len();
        let devices = reached_by(devices, &job.event);
        let mut report = DeliveryReport {
            registered,
            devices: devices.len(),
            duplicate,
            attempts,
            ..DeliveryReport::default()
        };
        if duplicate {
            // The worker logs the outcome at info level; one line per event is enough.
            tracing::debug!("event seen before; nothing sent");
            return Ok(report);
        }
        if devices.is_empty() {
            // Not recorded when the person has no device at all (the port's rule): an
            // org-wide webhook reports many people who have no device here, and a write
            // per such event would buy nothing. Recorded when the person's devices take
            // none of this event (a KitchenSink app and a `telephony_calls` ring): done.
            if registered > 0 {
                self.finish(&job).await;
            }
            tracing::debug!(registered, "no device to notify");
            return Ok(report);
        }
        if Instant::now() >= deadline {
            // Claimed, but too late to be worth a push: a ring after the caller hung up.
            self.finish(&job).await;
            return Err(NotifyError::Late { attempts });
        }
        self.fan_out(
            &devices,
            job.event.clone().content(),
            deadline,
            job.deliver_by,
            &mut report,
        )
        .await;
        self.finish(&job).await;
        // Debug: the push worker logs the same report at info level with the event's
        // kind and timing, and a line per event is what a busy server can afford.
        tracing::debug!(
            devices = report.devices,
            delivered = report.delivered,
            removed = report.removed,
            rejected = report.rejected,
            gave_up = report.gave_up,
            "relayed",
        );
        Ok(report)
    }

    #[instrument(name = "take_over", skip_all)]
    async fn take_over(&self, limit: usize) -> Result<(Vec<Job>, u64), NotifyError> {
        let now = self.clock.now();
        let alive_since = now - TimeDelta::from_std(HOLDER_TIMEOUT).unwrap_or(TimeDelta::MAX);
        // Only after a round in which this replica could say it is alive: see `alive`.
        let limit = if self.alive.load(Ordering::Acquire) {
            limit
        } else {
            0
        };
        let found = self
            .store
            .take_over_events(self.replica, now, alive_since, limit)
            .await
            .inspect_err(|_| self.alive.store(false, Ordering::Release))
            .map_err(|error: StoreError| NotifyError::from(error))?;
        self.alive.store(true, Ordering::Release);
        let jobs = found
            .events
            .into_iter()
            .filter_map(|stored| match serde_json::from_str::<Event>(&stored.event) {
                Ok(event) => Some(Job {
                    id: stored.job,
                    event,
                    deliver_by: stored.deliver_by,
                }),
                Err(error) => {
                    tracing::error!(job = %stored.job, error = %error, "stored event unreadable; not relayed");
                    None
                }
            })
            .collect::<Vec<_>>();
        if !jobs.is_empty() || found.expired > 0 {
            tracing::warn!(
                taken_over = jobs.len(),
                expired = found.expired,
                "took over the unfinished events of a replica that stopped"
            );
        }
        Ok((jobs, found.expired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{
        Deadlines, MockPushGateway, MockRegistrationPort, StoreError, StoredEvent, TakeOver,
    };
    use crate::services::ManualClock;
    use crate::types::{
        AppFlavour, CallEnded, CallId, Caller, Channel, EventSource, IncomingCall, JobId,
        NewMessage, PersonId,
    };
    use chrono::{DateTime, TimeDelta, Utc};
    use mockall::predicate::{always, eq};
    use std::collections::HashMap;
    use uuid::Uuid;

    /// The three use cases as the push worker drives them: a job received now, claimed
    /// by the relay itself.
    impl NotificationService {
        async fn ring(&self, call: IncomingCall) -> Result<DeliveryReport, NotifyError> {
            self.relay(self.job(Event::Ring(call)), None).await
        }

        async fn end_call(&self, ended: CallEnded) -> Result<DeliveryReport, NotifyError> {
            self.relay(self.job(Event::CallEnded(ended)), None).await
        }

        async fn notify_message(&self, message: NewMessage) -> Result<DeliveryReport, NotifyError> {
            self.relay(self.job(Event::Message(message)), None).await
        }

        fn job(&self, event: Event) -> Job {
            Job::received(event, self.clock.now(), &Deadlines::default())
        }
    }

    /// A claim answered like a real store: the key recorded once, fresh again for the
    /// job that recorded it, nothing recorded for a person without devices.
    fn claims_with(
        log: Arc<Mutex<HashMap<String, JobId>>>,
        devices: impl Fn(&PersonId) -> Vec<Device> + Send + 'static,
    ) -> impl FnMut(&EventClaim) -> Result<Claim, StoreError> + Send + 'static {
        move |claim| {
            let found = devices(&claim.person);
            let fresh = match &claim.key {
                Some(key) if !found.is_empty() => {
                    let mut log = log.lock().unwrap();
                    *log.entry(key.as_str().to_owned()).or_insert(claim.job) == claim.job
                }
                _ => true,
            };
            Ok(Claim::new(found, fresh))
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn token(fill: &str) -> DeviceToken {
        DeviceToken::parse(&fill.repeat(64 / fill.len())).unwrap()
    }

    fn device(
        person: &PersonId,
        fill: &str,
        channel: Channel,
        environment: Option<ApnsEnvironment>,
    ) -> Device {
        Device {
            token: token(fill),
            channel,
            person: person.clone(),
            environment,
            bundle_id: None,
            flavour: AppFlavour::Seed,
            registered_at: start() - TimeDelta::days(1),
            last_outcome: None,
            last_outcome_at: None,
        }
    }

    fn person() -> PersonId {
        PersonId::from_uuid(Uuid::new_v4())
    }

    fn call(callee: &PersonId, id: &str) -> IncomingCall {
        IncomingCall {
            call_id: CallId::parse(id).unwrap(),
            callee: callee.clone(),
            caller: Caller {
                name: Some("Ada".into()),
                ..Caller::default()
            },
            occurred_at: start(),
            source: EventSource::TelephonyCalls,
            sdk_payload: None,
            fcm_payload: None,
            webhook: None,
            callee_field: None,
            audience: None,
        }
    }

    fn ended(person: &PersonId, id: &str) -> CallEnded {
        CallEnded {
            call_id: CallId::parse(id).unwrap(),
            person: person.clone(),
            occurred_at: start(),
            source: EventSource::TelephonyCalls,
            answered_elsewhere: true,
        }
    }

    fn message(recipient: &PersonId, id: &str) -> NewMessage {
        NewMessage {
            message_id: id.into(),
            room_id: "room-1".into(),
            room_type: Some("direct".into()),
            recipient: recipient.clone(),
            sender: None,
            sender_email: Some("bob@example.com".into()),
            occurred_at: start(),
            webhook: None,
        }
    }

    fn delivered(environment: ApnsEnvironment) -> PushOutcome {
        PushOutcome::Delivered {
            id: "0a1b2c3d-0000-4000-8000-000000000000".into(),
            environment: Some(environment),
        }
    }

    fn retry(after: Option<Duration>) -> PushOutcome {
        PushOutcome::Retry {
            reason: "ServiceUnavailable".into(),
            after,
        }
    }

    /// The pushes a gateway mock was asked to send, in order.
    type Sent = Arc<Mutex<Vec<Push>>>;

    /// A gateway that records each push and answers with `answer(push, attempt)`,
    /// `attempt` counting sends to that token from 0.
    fn gateway(
        sent: &Sent,
        answer: impl Fn(&Push, usize) -> PushOutcome + Send + Sync + 'static,
    ) -> MockPushGateway {
        let sent = sent.clone();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().returning(move |push| {
            let mut sent = sent.lock().unwrap();
            let attempt = sent.iter().filter(|p| p.token == push.token).count();
            sent.push(push.clone());
            answer(push, attempt)
        });
        gateway
    }

    /// A store whose callee has `devices`, whose event log is a real set, and which
    /// accepts any recorded outcome.
    fn store_with(person: &PersonId, devices: Vec<Device>) -> MockRegistrationPort {
        let mut store = MockRegistrationPort::new();
        let person = person.clone();
        store
            .expect_claim()
            .returning(claims_with(Arc::default(), move |asked| {
                assert_eq!(asked, &person);
                devices.clone()
            }));
        store.expect_finish_event().returning(|_| Ok(()));
        store.expect_unregister().never();
        store
    }

    fn accept_outcomes(store: &mut MockRegistrationPort) {
        store.expect_record_outcome().returning(|_, _, _, _| Ok(()));
    }

    fn service(store: MockRegistrationPort, gateway: MockPushGateway) -> NotificationService {
        NotificationService::new(
            Arc::new(store),
            Arc::new(gateway),
            RetryPolicy {
                base: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            Arc::new(ManualClock::new(start())),
        )
    }

    /// A wall clock that follows tokio's (paused) clock, so stored times show when
    /// something happened during a test.
    fn tokio_clock() -> Arc<dyn Clock> {
        let origin = Instant::now();
        Arc::new(move || start() + TimeDelta::from_std(origin.elapsed()).unwrap())
    }

    fn tokens_of(sent: &Sent) -> HashSet<DeviceToken> {
        sent.lock()
            .unwrap()
            .iter()
            .map(|p| p.token.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_routine_delivery_is_not_written_again_until_the_record_is_stale() {
        let callee = person();
        // The service's clock starts at `start()` and follows tokio's.
        let now = start();
        let with_last = |fill: &str, outcome: &str, ago: TimeDelta, env| Device {
            last_outcome: Some(outcome.to_owned()),
            last_outcome_at: Some(now - ago),
            ..device(&callee, fill, Channel::Voip, env)
        };
        let production = Some(ApnsEnvironment::Production);
        let devices = vec![
            // Delivered a minute ago: nothing new to record.
            with_last("a1", "delivered", TimeDelta::minutes(1), production),
            // Delivered, but the record is stale: refreshed.
            with_last("b2", "delivered", DELIVERED_REFRESH, production),
            // Delivered just under the refresh time ago: still nothing new.
            with_last(
                "e5",
                "delivered",
                DELIVERED_REFRESH - TimeDelta::seconds(5),
                production,
            ),
            // The first delivery after a failure: recorded.
            with_last("c3", "TooManyRequests", TimeDelta::seconds(5), production),
            // Never recorded, no environment yet: recorded with its pin.
            device(&callee, "d4", Channel::Voip, None),
        ];
        let mut store = store_with(&callee, devices);
        let written = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&written);
        store
            .expect_record_outcome()
            .with(always(), eq("delivered"), always(), always())
            .returning(move |token, _, pin, _| {
                log.lock().unwrap().push((token.clone(), pin));
                Ok(())
            });
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.delivered, 5);
        let mut written = written.lock().unwrap().clone();
        written.sort_by_key(|(token, _)| token.as_str().to_owned());
        assert_eq!(
            written,
            vec![
                (token("b2"), None),
                (token("c3"), None),
                (token("d4"), Some(ApnsEnvironment::Production)),
            ]
        );
    }

    #[tokio::test]
    async fn a_ring_sends_a_voip_push_to_each_of_three_voip_devices() {
        let callee = person();
        let devices = vec![
            device(
                &callee,
                "a1",
                Channel::Voip,
                Some(ApnsEnvironment::Production),
            ),
            device(
                &callee,
                "b2",
                Channel::Voip,
                Some(ApnsEnvironment::Production),
            ),
            device(&callee, "c3", Channel::Voip, Some(ApnsEnvironment::Sandbox)),
        ];
        let mut store = store_with(&callee, devices);
        store
            .expect_record_outcome()
            .with(always(), eq("delivered"), eq(None), always())
            .times(3)
            .returning(|_, _, _, _| Ok(()));
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |push, _| delivered(push.environment.unwrap())),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                registered: 3,
                devices: 3,
                delivered: 3,
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|push| push.channel == Channel::Voip
            && matches!(push.content, PushContent::IncomingCall(_))));
        let tokens: HashSet<_> = sent.iter().map(|p| p.token.clone()).collect();
        assert_eq!(
            tokens,
            HashSet::from([token("a1"), token("b2"), token("c3")])
        );
        assert_eq!(sent[2].environment, Some(ApnsEnvironment::Sandbox));
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_needs_retries_does_not_hold_back_the_others() {
        let callee = person();
        let devices = vec![
            device(&callee, "a1", Channel::Voip, None),
            device(&callee, "b2", Channel::Voip, None),
        ];
        let mut store = store_with(&callee, devices);
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let on_record = recorded.clone();
        store
            .expect_record_outcome()
            .returning(move |token, _, _, at| {
                on_record.lock().unwrap().push((token.clone(), at));
                Ok(())
            });
        let sent = Sent::default();
        let slow = token("a1");
        let gateway = gateway(&sent, move |push, attempt| {
            if push.token == slow && attempt == 0 {
                retry(Some(Duration::from_secs(10)))
            } else {
                delivered(ApnsEnvironment::Production)
            }
        });
        let service = NotificationService::new(
            Arc::new(store),
            Arc::new(gateway),
            RetryPolicy::default(),
            tokio_clock(),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.delivered, 2);
        let recorded = recorded.lock().unwrap();
        assert_eq!(
            *recorded,
            vec![
                (token("b2"), start()),
                (token("a1"), start() + TimeDelta::seconds(10)),
            ]
        );
    }

    #[tokio::test]
    async fn delivery_pins_the_environment_only_of_devices_that_had_none() {
        let callee = person();
        let devices = vec![
            device(&callee, "a1", Channel::Voip, None),
            device(&callee, "b2", Channel::Voip, Some(ApnsEnvironment::Sandbox)),
        ];
        let mut store = store_with(&callee, devices);
        store
            .expect_record_outcome()
            .with(
                eq(token("a1")),
                eq("delivered"),
                eq(Some(ApnsEnvironment::Sandbox)),
                eq(start()),
            )
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        store
            .expect_record_outcome()
            .with(eq(token("b2")), eq("delivered"), eq(None), eq(start()))
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Sandbox)),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.delivered, 2);
    }

    #[tokio::test]
    async fn a_dead_token_is_removed_from_the_store() {
        let callee = person();
        let since = start() - TimeDelta::hours(1);
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        store
            .expect_remove_unless_registered_since()
            .with(eq(token("a1")), eq(since))
            .times(1)
            .returning(|_, _| Ok(true));
        store.expect_record_outcome().never();
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, move |_, _| PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since,
            }),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                registered: 1,
                devices: 1,
                removed: 1,
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_token_registered_again_after_the_410_timestamp_is_kept() {
        let callee = person();
        let since = start() - TimeDelta::hours(1);
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        // The store's atomic check finds a registration newer than `since`.
        store
            .expect_remove_unless_registered_since()
            .with(eq(token("a1")), eq(since))
            .times(1)
            .returning(|_, _| Ok(false));
        store
            .expect_record_outcome()
            .with(eq(token("a1")), eq("Unregistered"), eq(None), always())
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, move |_, _| PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since,
            }),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                registered: 1,
                devices: 1,
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_apns_asks_to_retry_is_sent_again_and_delivered() {
        let callee = person();
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, attempt| match attempt {
                0 => retry(None),
                1 => retry(Some(Duration::from_secs(3))),
                _ => delivered(ApnsEnvironment::Production),
            }),
        )
        .with_jitter(|_| Duration::ZERO);
        let began = Instant::now();

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.delivered, 1);
        assert_eq!(report.gave_up, 0);
        assert_eq!(sent.lock().unwrap().len(), 3);
        // APNs' retry-after is a floor even when the jitter picks no delay at all.
        assert!(began.elapsed() >= Duration::from_secs(3));
        assert!(began.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_ring_deadline_and_the_push_is_given_up() {
        let callee = person();
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        store
            .expect_record_outcome()
            .with(
                eq(token("a1")),
                eq("ServiceUnavailable"),
                eq(None),
                always(),
            )
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let sent = Sent::default();
        // No jitter: the delays are the ceilings 0.1, 0.2, 0.4, 0.8, 1.6, then 2 s.
        let service = service(store, gateway(&sent, |_, _| retry(None))).with_jitter(|c| c);
        let began = Instant::now();

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                registered: 1,
                devices: 1,
                gave_up: 1,
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
        // 3.1 s for the first five retries, then 13 two-second waits fit before 30 s.
        assert_eq!(sent.lock().unwrap().len(), 1 + 5 + 13);
        assert!(began.elapsed() <= Deadlines::default().ring);
    }

    #[tokio::test(start_paused = true)]
    async fn with_full_jitter_retries_stay_bounded_by_the_deadline() {
        let callee = person();
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| retry(Some(Duration::from_secs(1)))),
        );
        let began = Instant::now();

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.gave_up, 1);
        let attempts = sent.lock().unwrap().len();
        assert!((2..=30).contains(&attempts), "{attempts} attempts");
        assert!(began.elapsed() <= Deadlines::default().ring);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_deadline_gives_up_at_once() {
        let callee = person();
        let mut store = store_with(&callee, vec![device(&callee, "a1", Channel::Voip, None)]);
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| retry(Some(Duration::from_secs(3600)))),
        );
        let began = Instant::now();

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.gave_up, 1);
        assert_eq!(sent.lock().unwrap().len(), 1);
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_rejected_push_keeps_the_token_and_is_reported() {
        let callee = person();
        let mut store = store_with(
            &callee,
            vec![
                device(&callee, "a1", Channel::Voip, None),
                device(&callee, "b2", Channel::Voip, None),
            ],
        );
        store.expect_remove_unless_registered_since().never();
        store
            .expect_record_outcome()
            .with(always(), eq("TopicDisallowed"), eq(None), always())
            .times(2)
            .returning(|_, _, _, _| Ok(()));
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| PushOutcome::Rejected {
                reason: "TopicDisallowed".into(),
            }),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                registered: 2,
                devices: 2,
                rejected: 2,
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
        assert_eq!(sent.lock().unwrap().len(), 2);
        // Warned about once, though two pushes were rejected for it.
        assert!(!service.first_rejection_for("TopicDisallowed"));
        assert!(service.first_rejection_for("BadTopic"));
        assert!(!service.first_rejection_for("BadTopic"));
    }

    #[tokio::test]
    async fn the_same_call_rings_each_device_once_however_often_it_arrives() {
        let callee = person();
        let devices = vec![
            device(&callee, "a1", Channel::Voip, None),
            device(&callee, "b2", Channel::Voip, None),
        ];
        let mut store = store_with(&callee, devices);
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let first = service.ring(call(&callee, "call-1")).await.unwrap();
        let again = service.ring(call(&callee, "call-1")).await.unwrap();
        let other_call = service.ring(call(&callee, "call-2")).await.unwrap();

        assert!(!first.duplicate);
        assert_eq!(first.delivered, 2);
        assert!(again.duplicate);
        assert_eq!(again.delivered, 0);
        assert!(!other_call.duplicate);
        assert_eq!(sent.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn events_are_deduplicated_under_keys_naming_the_kind_person_and_id() {
        let callee = person();
        let uuid = callee.uuid();
        let mut store = MockRegistrationPort::new();
        let keys = Arc::new(Mutex::new(Vec::new()));
        let on_claim = keys.clone();
        store.expect_claim().returning(move |claim| {
            assert_eq!(claim.at, start());
            let key = claim.key.as_ref().unwrap().as_str().to_owned();
            on_claim.lock().unwrap().push(key);
            Ok(Claim::Devices(vec![
                device(&claim.person, "a1", Channel::Voip, None),
                device(&claim.person, "b2", Channel::Alert, None),
            ]))
        });
        store.expect_finish_event().returning(|_| Ok(()));
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        service.ring(call(&callee, "call-1")).await.unwrap();
        service.end_call(ended(&callee, "call-1")).await.unwrap();
        service
            .notify_message(message(&callee, "msg-9"))
            .await
            .unwrap();

        assert_eq!(
            *keys.lock().unwrap(),
            vec![
                format!("ring:{uuid}:call-1"),
                format!("ended:{uuid}:call-1"),
                format!("message:{uuid}:msg-9"),
            ]
        );
    }

    #[tokio::test]
    async fn a_message_only_ever_goes_to_alert_tokens() {
        let recipient = person();
        let mut store = store_with(
            &recipient,
            vec![
                device(&recipient, "a1", Channel::Alert, None),
                device(&recipient, "b2", Channel::Alert, None),
            ],
        );
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let report = service
            .notify_message(message(&recipient, "msg-1"))
            .await
            .unwrap();

        assert_eq!(report.delivered, 2);
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|push| push.channel == Channel::Alert
            && matches!(push.content, PushContent::Message(_))));
    }

    #[tokio::test]
    async fn a_call_ended_notice_is_never_a_voip_push() {
        let callee = person();
        let mut store = store_with(&callee, vec![device(&callee, "b2", Channel::Alert, None)]);
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let report = service.end_call(ended(&callee, "call-1")).await.unwrap();

        assert_eq!(report.delivered, 1);
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].channel, Channel::Alert);
        assert!(matches!(sent[0].content, PushContent::CallEnded(_)));
    }

    fn kitchensink(device: Device) -> Device {
        Device {
            flavour: AppFlavour::KitchenSink,
            ..device
        }
    }

    /// A person with a seed app (VoIP a1, alert b2) and a KitchenSink app (VoIP c3,
    /// alert d4): the tokens each source's ring goes to.
    async fn ring_tokens(source: EventSource) -> (DeliveryReport, HashSet<DeviceToken>, usize) {
        let callee = person();
        // Not `store_with`: this one counts the finished events.
        let mut store = MockRegistrationPort::new();
        store.expect_unregister().never();
        let finished = Arc::new(Mutex::new(0));
        let on_finish = finished.clone();
        let person = callee.clone();
        store
            .expect_claim()
            .returning(claims_with(Arc::default(), move |_| {
                vec![
                    device(&person, "a1", Channel::Voip, None),
                    device(&person, "b2", Channel::Alert, None),
                    kitchensink(device(&person, "c3", Channel::Voip, None)),
                    kitchensink(device(&person, "d4", Channel::Alert, None)),
                ]
            }));
        store.expect_finish_event().returning(move |_| {
            *on_finish.lock().unwrap() += 1;
            Ok(())
        });
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );
        let report = service
            .ring(IncomingCall {
                source,
                ..call(&callee, "call-1")
            })
            .await
            .unwrap();
        for push in sent.lock().unwrap().iter() {
            assert_eq!(
                push.content
                    .channel_for(push.flavour, push.token.provider()),
                Some(push.channel)
            );
        }
        let finished = *finished.lock().unwrap();
        (report, tokens_of(&sent), finished)
    }

    #[tokio::test]
    async fn each_app_gets_a_ring_on_the_token_its_flavour_reads() {
        let (report, tokens, _) = ring_tokens(EventSource::CallMemberships).await;
        assert_eq!(tokens, HashSet::from([token("a1"), token("d4")]));
        assert_eq!((report.registered, report.devices), (4, 2));

        let (_, tokens, _) = ring_tokens(EventSource::TelephonyPush).await;
        assert_eq!(tokens, HashSet::from([token("a1"), token("c3")]));

        let (report, tokens, finished) = ring_tokens(EventSource::TelephonyCalls).await;
        assert_eq!(tokens, HashSet::from([token("a1")]));
        assert_eq!((report.delivered, finished), (1, 1));
    }

    #[tokio::test]
    async fn an_event_none_of_the_persons_apps_takes_is_finished_without_a_push() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        let person = callee.clone();
        store
            .expect_claim()
            .returning(claims_with(Arc::default(), move |_| {
                vec![kitchensink(device(&person, "c3", Channel::Voip, None))]
            }));
        store.expect_finish_event().times(1).returning(|_| Ok(()));
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| unreachable!("nothing to send")),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!((report.registered, report.devices), (1, 0));
        assert!(sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_voip_device_of_the_person_gets_no_message() {
        let recipient = person();
        let mut store = store_with(
            &recipient,
            vec![
                device(&recipient, "a1", Channel::Voip, None),
                device(&recipient, "b2", Channel::Alert, None),
            ],
        );
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let report = service
            .notify_message(message(&recipient, "msg-1"))
            .await
            .unwrap();

        assert_eq!(report.devices, 1);
        assert_eq!(tokens_of(&sent), HashSet::from([token("b2")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_unreachable_until_the_deadline_means_late_and_nothing_is_pushed() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        store
            .expect_claim()
            .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
        store.expect_finish_event().never();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);
        let began = Instant::now();

        let error = service.ring(call(&callee, "call-1")).await.unwrap_err();

        let NotifyError::Late { attempts } = error else {
            panic!("expected late, got {error:?}");
        };
        assert!(attempts > 5, "kept trying: {attempts}");
        assert!(began.elapsed() <= Deadlines::default().ring);
    }

    #[tokio::test]
    async fn a_store_failing_for_good_means_unknown_and_nothing_is_pushed() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        store
            .expect_claim()
            .times(1)
            .returning(|_| Err(StoreError::Unknown("bug".into())));
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);

        let error = service
            .notify_message(message(&callee, "msg-1"))
            .await
            .unwrap_err();

        assert!(matches!(error, NotifyError::Unknown(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_back_before_the_deadline_rings_once_as_the_same_job() {
        let callee = person();
        let devices = vec![device(&callee, "a1", Channel::Voip, None)];
        let mut store = MockRegistrationPort::new();
        let log = Arc::new(Mutex::new(HashMap::new()));
        let mut answer = claims_with(log.clone(), move |_| devices.clone());
        let jobs = Arc::new(Mutex::new(Vec::new()));
        let seen_jobs = jobs.clone();
        let mut tries = 0;
        store.expect_claim().returning(move |claim| {
            tries += 1;
            seen_jobs.lock().unwrap().push(claim.job);
            // The first try is recorded, but its answer is lost (a timeout): unknown.
            let answered = answer(claim);
            if tries <= 3 {
                Err(StoreError::Unavailable("timed out".into()))
            } else {
                answered
            }
        });
        store.expect_finish_event().times(1).returning(|_| Ok(()));
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert!(!report.duplicate);
        assert_eq!(report.delivered, 1);
        assert_eq!(report.attempts, 4);
        let jobs = jobs.lock().unwrap();
        assert!(jobs.iter().all(|job| *job == jobs[0]), "one job: {jobs:?}");
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_past_its_deadline_pushes_nothing() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        store.expect_claim().never();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let clock = ManualClock::new(start());
        let service = NotificationService::new(
            Arc::new(store),
            Arc::new(gateway),
            RetryPolicy::default(),
            Arc::new(clock.clone()),
        );
        let job = service.job(Event::Ring(call(&callee, "call-1")));
        clock.advance(TimeDelta::seconds(31));

        let error = service.relay(job, None).await.unwrap_err();

        assert!(matches!(error, NotifyError::Late { attempts: 0 }));
    }

    #[tokio::test]
    async fn failing_bookkeeping_for_one_device_does_not_stop_the_others() {
        let callee = person();
        let mut store = store_with(
            &callee,
            vec![
                device(&callee, "a1", Channel::Voip, None),
                device(&callee, "b2", Channel::Voip, None),
                device(&callee, "c3", Channel::Voip, None),
            ],
        );
        store
            .expect_record_outcome()
            .times(2)
            .returning(|_, _, _, _| Err(StoreError::Unavailable("down".into())));
        store
            .expect_remove_unless_registered_since()
            .times(1)
            .returning(|_, _| Err(StoreError::Unknown("constraint".into())));
        let sent = Sent::default();
        let dead = token("b2");
        let service = service(
            store,
            gateway(&sent, move |push, _| {
                if push.token == dead {
                    PushOutcome::TokenInvalid {
                        reason: "BadDeviceToken".into(),
                        since: start(),
                    }
                } else {
                    delivered(ApnsEnvironment::Production)
                }
            }),
        );

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report.devices, 3);
        assert_eq!(report.delivered, 2);
        assert_eq!(report.removed, 0);
        assert_eq!(tokens_of(&sent).len(), 3);
    }

    #[tokio::test]
    async fn a_person_without_devices_gets_nothing_and_the_event_is_not_recorded() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        let log = Arc::new(Mutex::new(HashMap::new()));
        store
            .expect_claim()
            .returning(claims_with(log.clone(), |_| Vec::new()));
        store.expect_finish_event().never();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                attempts: 1,
                ..DeliveryReport::default()
            }
        );
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn the_backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ceilings: Vec<_> = (0..6).map(|retry| policy.ceiling(retry)).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
        let zero = RetryPolicy {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert!(zero.ceiling(0) > Duration::ZERO);
    }

    #[test]
    fn a_claim_is_a_duplicate_only_when_another_job_recorded_it_and_there_are_devices() {
        let callee = person();
        let devices = vec![device(&callee, "a1", Channel::Alert, None)];
        assert_eq!(
            Claim::new(devices.clone(), true),
            Claim::Devices(devices.clone())
        );
        assert_eq!(
            Claim::new(devices.clone(), false),
            Claim::Duplicate(devices)
        );
        assert_eq!(Claim::new(Vec::new(), false), Claim::Devices(Vec::new()));
    }

    #[tokio::test]
    async fn an_accepted_job_is_claimed_with_its_record_and_relayed_without_a_second_claim() {
        let callee = person();
        let devices = vec![device(&callee, "a1", Channel::Voip, None)];
        let mut store = MockRegistrationPort::new();
        let claims = Arc::new(Mutex::new(Vec::<EventClaim>::new()));
        let on_claim = claims.clone();
        let answer = devices.clone();
        store.expect_claim().times(1).returning(move |claim| {
            on_claim.lock().unwrap().push(claim.clone());
            Ok(Claim::Devices(answer.clone()))
        });
        let finished = Arc::new(Mutex::new(Vec::new()));
        let on_finish = finished.clone();
        store.expect_finish_event().returning(move |key| {
            on_finish.lock().unwrap().push(key.clone());
            Ok(())
        });
        accept_outcomes(&mut store);
        let sent = Sent::default();
        let service = service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );
        let job = service.job(Event::Ring(call(&callee, "call-1")));

        let Claim::Devices(claimed) = service.accept(&job).await.unwrap() else {
            panic!("a fresh claim")
        };
        let report = service.relay(job.clone(), Some(claimed)).await.unwrap();

        assert_eq!(report.delivered, 1);
        assert_eq!(report.attempts, 0);
        let claims = claims.lock().unwrap();
        let claim = &claims[0];
        assert_eq!(claim.job, job.id);
        assert_eq!(claim.deliver_by, start() + TimeDelta::seconds(30));
        assert_eq!(claim.holder, service.replica());
        let stored: Event = serde_json::from_str(&claim.event).unwrap();
        assert_eq!(stored, job.event);
        assert_eq!(*finished.lock().unwrap(), vec![job.event.key().unwrap()]);
    }

    #[tokio::test]
    async fn jobs_are_taken_over_only_after_a_round_that_said_this_replica_is_alive() {
        let callee = person();
        let event = Event::Ring(call(&callee, "call-1"));
        let stored = StoredEvent {
            job: JobId::new(),
            event: serde_json::to_string(&event).unwrap(),
            deliver_by: start() + TimeDelta::seconds(20),
        };
        let unreadable = StoredEvent {
            job: JobId::new(),
            event: "{not json".into(),
            deliver_by: start() + TimeDelta::seconds(20),
        };
        let mut store = MockRegistrationPort::new();
        let limits = Arc::new(Mutex::new(Vec::new()));
        let on_take = limits.clone();
        store
            .expect_take_over_events()
            .returning(move |_, at, alive_since, limit| {
                assert_eq!(at - alive_since, TimeDelta::seconds(10));
                on_take.lock().unwrap().push(limit);
                Ok(TakeOver {
                    events: if limit > 0 {
                        vec![stored.clone(), unreadable.clone()]
                    } else {
                        Vec::new()
                    },
                    expired: 2,
                })
            });
        let service = service(store, MockPushGateway::new());

        let (first, _) = service.take_over(8).await.unwrap();
        let (second, expired) = service.take_over(8).await.unwrap();

        assert!(first.is_empty());
        assert_eq!(*limits.lock().unwrap(), vec![0, 8]);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].event, event);
        assert_eq!(second[0].deliver_by, start() + TimeDelta::seconds(20));
        assert_eq!(expired, 2);
    }
}
