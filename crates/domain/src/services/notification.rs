//! Relaying Webex events to a person's devices: fan-out, de-duplication, retries within
//! a deadline, and clean-up of dead tokens.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rand::Rng as _;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::instrument;

use super::Clock;
use crate::ports::{
    Claim, Deadlines, DeliveryReport, IncomingCallPort, NotifyError, PushGateway, RegistrationPort,
};
use crate::types::{
    ApnsEnvironment, CallEnded, Device, DeviceToken, IncomingCall, NewMessage, PersonId, Push,
    PushContent, PushOutcome,
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
    deadlines: Deadlines,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    jitter: Jitter,
    /// Rejection reasons already logged at warn level: a misconfiguration rejects every
    /// push, and one warning per reason is enough to alert the operator.
    warned_reasons: Arc<Mutex<HashSet<String>>>,
}

impl NotificationService {
    pub fn new(
        store: Arc<dyn RegistrationPort>,
        gateway: Arc<dyn PushGateway>,
        deadlines: Deadlines,
        retry: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            gateway,
            deadlines,
            retry,
            clock,
            jitter: Arc::new(full_jitter),
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

    /// Sends `content` to every device of `person` on the content's channel, at most
    /// once per `event_key`, retrying each device until `within` has passed.
    async fn relay(
        &self,
        person: &PersonId,
        event_key: Option<String>,
        content: PushContent,
        within: Duration,
    ) -> Result<DeliveryReport, NotifyError> {
        let deadline = Instant::now() + within;
        let channel = content.channel();
        // One step for the lookup and the de-duplication: a store that can answers both
        // in one round trip, on the path of every webhook.
        let claim = self
            .store
            .claim_event_devices(event_key.as_deref(), self.clock.now(), person, channel)
            .await
            .inspect_err(|error| {
                tracing::warn!(error = %error, "devices not looked up or event not de-duplicated");
            })?;
        let (devices, duplicate) = match claim {
            Claim::Devices(devices) => (devices, false),
            Claim::Duplicate(devices) => (devices, true),
        };
        let devices: Vec<Device> = devices
            .into_iter()
            .filter(|device| {
                // The store answers by channel; this is the last guard before a message
                // or a call-ended notice could reach a VoIP token and get the app killed.
                let fits = device.channel == channel;
                if !fits {
                    tracing::error!(
                        token = %device.token,
                        channel = %device.channel,
                        expected = %channel,
                        "store returned a device of the wrong channel; skipped",
                    );
                }
                fits
            })
            .collect();
        let mut report = DeliveryReport {
            devices: devices.len(),
            ..DeliveryReport::default()
        };
        if duplicate {
            // The worker logs the outcome at info level; one line per event is enough.
            tracing::debug!("event seen before; nothing sent");
            report.duplicate = true;
            return Ok(report);
        }
        if devices.is_empty() {
            // Not marked as seen (the port's rule): an org-wide webhook reports many
            // people who have no device here, and a write per such event would buy nothing.
            tracing::debug!("no device to notify");
            return Ok(report);
        }

        let results = join_all(
            devices
                .iter()
                .map(|device| self.deliver(device, &content, deadline)),
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

    /// Pushes `content` to one device, retrying until `deadline`, and updates the store
    /// with what APNs said. Store failures here are logged, never returned: one device's
    /// bookkeeping must not cost the other devices their push.
    #[instrument(
        name = "deliver",
        skip_all,
        fields(token = %device.token, environment = ?device.environment)
    )]
    async fn deliver(
        &self,
        device: &Device,
        content: &PushContent,
        deadline: Instant,
    ) -> DeviceResult {
        let push = Push {
            token: device.token.clone(),
            channel: device.channel,
            environment: device.environment,
            bundle_id: device.bundle_id.clone(),
            content: content.clone(),
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
                PushOutcome::Delivered {
                    apns_id,
                    environment,
                } => {
                    tracing::debug!(apns_id, %environment, attempts = retries + 1, "delivered");
                    // Pin a token to the gateway that took it, so later pushes skip the
                    // other one; a token with a known environment keeps it.
                    let pin = device.environment.is_none().then_some(environment);
                    self.record(&device.token, "delivered", pin).await;
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
                    tracing::debug!(reason, attempts = retries, ?delay, "retrying");
                    sleep(delay).await;
                }
                PushOutcome::Rejected { reason } => {
                    if self.first_rejection_for(&reason) {
                        tracing::warn!(
                            reason,
                            "APNs rejected a push: check the APNs configuration (reported once per reason)",
                        );
                    } else {
                        tracing::debug!(reason, "APNs rejected the push");
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
}

#[async_trait]
impl IncomingCallPort for NotificationService {
    #[instrument(
        name = "ring",
        skip_all,
        fields(call_id = %call.call_id, person = %call.callee, source = call.source.as_str())
    )]
    async fn ring(&self, call: IncomingCall) -> Result<DeliveryReport, NotifyError> {
        let key = format!("ring:{}:{}", call.callee.uuid(), call.call_id);
        let callee = call.callee.clone();
        let content = PushContent::IncomingCall(Arc::new(call));
        self.relay(&callee, Some(key), content, self.deadlines.ring)
            .await
    }

    #[instrument(
        name = "end_call",
        skip_all,
        fields(
            call_id = %ended.call_id,
            person = %ended.person,
            source = ended.source.as_str(),
            answered_elsewhere = ended.answered_elsewhere,
        )
    )]
    async fn end_call(&self, ended: CallEnded) -> Result<DeliveryReport, NotifyError> {
        let key = format!("ended:{}:{}", ended.person.uuid(), ended.call_id);
        let person = ended.person.clone();
        let content = PushContent::CallEnded(Arc::new(ended));
        self.relay(&person, Some(key), content, self.deadlines.call_ended)
            .await
    }

    #[instrument(
        name = "notify_message",
        skip_all,
        fields(message_id = %message.message_id, person = %message.recipient)
    )]
    async fn notify_message(&self, message: NewMessage) -> Result<DeliveryReport, NotifyError> {
        // Without an id the message cannot be told apart from others: better announced
        // twice than never.
        let key = (!message.message_id.trim().is_empty()).then(|| {
            format!(
                "message:{}:{}",
                message.recipient.uuid(),
                message.message_id
            )
        });
        let recipient = message.recipient.clone();
        let content = PushContent::Message(Arc::new(message));
        self.relay(&recipient, key, content, self.deadlines.message)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockPushGateway, MockRegistrationPort, RegistrationError};
    use crate::services::ManualClock;
    use crate::types::{CallId, Caller, Channel, EventSource};
    use chrono::{DateTime, TimeDelta, Utc};
    use mockall::predicate::{always, eq};
    use uuid::Uuid;

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
        }
    }

    fn delivered(environment: ApnsEnvironment) -> PushOutcome {
        PushOutcome::Delivered {
            apns_id: "0a1b2c3d-0000-4000-8000-000000000000".into(),
            environment,
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

    /// A store whose callee has `devices` on `channel`, whose event log is a real set,
    /// and which accepts any recorded outcome.
    fn store_with(
        person: &PersonId,
        channel: Channel,
        devices: Vec<Device>,
    ) -> MockRegistrationPort {
        let mut store = MockRegistrationPort::new();
        store
            .expect_devices_of()
            .with(eq(person.clone()), eq(channel))
            .returning(move |_, _| Ok(devices.clone()));
        let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
        store
            .expect_mark_event_seen()
            .returning(move |key, _| Ok(seen.lock().unwrap().insert(key.to_owned())));
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
            Deadlines::default(),
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
        let mut store = store_with(&callee, Channel::Voip, devices);
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
                devices: 3,
                delivered: 3,
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
        let mut store = store_with(&callee, Channel::Voip, devices);
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
            Deadlines::default(),
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
        let mut store = store_with(&callee, Channel::Voip, devices);
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
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
                devices: 1,
                removed: 1,
                ..DeliveryReport::default()
            }
        );
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_token_registered_again_after_the_410_timestamp_is_kept() {
        let callee = person();
        let since = start() - TimeDelta::hours(1);
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
                devices: 1,
                ..DeliveryReport::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_apns_asks_to_retry_is_sent_again_and_delivered() {
        let callee = person();
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
                devices: 1,
                gave_up: 1,
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
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![device(&callee, "a1", Channel::Voip, None)],
        );
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
            Channel::Voip,
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
                devices: 2,
                rejected: 2,
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
        let mut store = store_with(&callee, Channel::Voip, devices);
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
        store.expect_devices_of().returning(move |person, channel| {
            Ok(vec![device(
                person,
                if channel == Channel::Voip { "a1" } else { "b2" },
                channel,
                None,
            )])
        });
        let keys = Arc::new(Mutex::new(Vec::new()));
        let on_mark = keys.clone();
        store.expect_mark_event_seen().returning(move |key, at| {
            assert_eq!(at, start());
            on_mark.lock().unwrap().push(key.to_owned());
            Ok(true)
        });
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
        // `store_with` only answers for the Alert channel: asking for VoIP devices
        // would fail the test.
        let mut store = store_with(
            &recipient,
            Channel::Alert,
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
        let mut store = store_with(
            &callee,
            Channel::Alert,
            vec![device(&callee, "b2", Channel::Alert, None)],
        );
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

    #[tokio::test]
    async fn a_voip_device_the_store_returns_by_mistake_gets_no_message() {
        let recipient = person();
        let mut store = store_with(
            &recipient,
            Channel::Alert,
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

    #[tokio::test]
    async fn an_unreachable_store_means_unavailable_and_nothing_is_pushed() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        store
            .expect_devices_of()
            .returning(|_, _| Err(RegistrationError::Unavailable("connection refused".into())));
        store.expect_mark_event_seen().never();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);

        let error = service.ring(call(&callee, "call-1")).await.unwrap_err();

        assert!(matches!(error, NotifyError::Unavailable(_)));
    }

    #[tokio::test]
    async fn a_store_failing_to_deduplicate_means_unavailable_and_nothing_is_pushed() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        let devices = vec![device(&callee, "a1", Channel::Alert, None)];
        store
            .expect_devices_of()
            .returning(move |_, _| Ok(devices.clone()));
        store
            .expect_mark_event_seen()
            .returning(|_, _| Err(RegistrationError::Unavailable("pool timed out".into())));
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);

        let error = service
            .notify_message(message(&callee, "msg-1"))
            .await
            .unwrap_err();

        assert!(matches!(error, NotifyError::Unavailable(_)));
    }

    #[tokio::test]
    async fn failing_bookkeeping_for_one_device_does_not_stop_the_others() {
        let callee = person();
        let mut store = store_with(
            &callee,
            Channel::Voip,
            vec![
                device(&callee, "a1", Channel::Voip, None),
                device(&callee, "b2", Channel::Voip, None),
                device(&callee, "c3", Channel::Voip, None),
            ],
        );
        store
            .expect_record_outcome()
            .times(2)
            .returning(|_, _, _, _| Err(RegistrationError::Unavailable("down".into())));
        store
            .expect_remove_unless_registered_since()
            .times(1)
            .returning(|_, _| Err(RegistrationError::Unknown("constraint".into())));
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
        store.expect_devices_of().returning(|_, _| Ok(Vec::new()));
        store.expect_mark_event_seen().never();
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = service(store, gateway);

        let report = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(report, DeliveryReport::default());
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

    /// The answer a [`ClaimingStore`] gives to a claim.
    type ClaimAnswer = Box<
        dyn Fn(Option<&str>, DateTime<Utc>, &PersonId, Channel) -> Result<Claim, RegistrationError>
            + Send
            + Sync,
    >;

    /// A store that overrides the one-step claim, as the Diesel store does; every other
    /// method goes to a mock. (mockall cannot mock the claim itself: it takes an
    /// `Option<&str>`.)
    struct ClaimingStore {
        mock: MockRegistrationPort,
        claim: ClaimAnswer,
    }

    #[async_trait]
    impl RegistrationPort for ClaimingStore {
        async fn register(
            &self,
            registration: &crate::types::Registration,
            at: DateTime<Utc>,
        ) -> Result<(), RegistrationError> {
            self.mock.register(registration, at).await
        }
        async fn unregister(&self, token: &DeviceToken) -> Result<bool, RegistrationError> {
            self.mock.unregister(token).await
        }
        async fn devices_of(
            &self,
            person: &PersonId,
            channel: Channel,
        ) -> Result<Vec<Device>, RegistrationError> {
            self.mock.devices_of(person, channel).await
        }
        async fn all_devices_of(
            &self,
            person: &PersonId,
        ) -> Result<Vec<Device>, RegistrationError> {
            self.mock.all_devices_of(person).await
        }
        async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, RegistrationError> {
            self.mock.device(token).await
        }
        async fn remove_unless_registered_since(
            &self,
            token: &DeviceToken,
            since: DateTime<Utc>,
        ) -> Result<bool, RegistrationError> {
            self.mock.remove_unless_registered_since(token, since).await
        }
        async fn record_outcome(
            &self,
            token: &DeviceToken,
            outcome: &str,
            environment: Option<ApnsEnvironment>,
            at: DateTime<Utc>,
        ) -> Result<(), RegistrationError> {
            self.mock
                .record_outcome(token, outcome, environment, at)
                .await
        }
        async fn mark_event_seen(
            &self,
            key: &str,
            at: DateTime<Utc>,
        ) -> Result<bool, RegistrationError> {
            self.mock.mark_event_seen(key, at).await
        }
        async fn claim_event_devices(
            &self,
            key: Option<&str>,
            at: DateTime<Utc>,
            person: &PersonId,
            channel: Channel,
        ) -> Result<Claim, RegistrationError> {
            (self.claim)(key, at, person, channel)
        }
        async fn prune_seen_events(&self, before: DateTime<Utc>) -> Result<u64, RegistrationError> {
            self.mock.prune_seen_events(before).await
        }
        async fn ping(&self) -> Result<(), RegistrationError> {
            self.mock.ping().await
        }
    }

    fn claiming_service(store: ClaimingStore, gateway: MockPushGateway) -> NotificationService {
        NotificationService::new(
            Arc::new(store),
            Arc::new(gateway),
            Deadlines::default(),
            RetryPolicy::default(),
            Arc::new(ManualClock::new(start())),
        )
    }

    #[tokio::test]
    async fn a_store_that_claims_in_one_step_is_asked_once_per_event() {
        let callee = person();
        let uuid = callee.uuid();
        let devices = vec![
            device(&callee, "a1", Channel::Voip, None),
            device(&callee, "b2", Channel::Voip, None),
        ];
        let mut mock = MockRegistrationPort::new();
        mock.expect_devices_of().never();
        mock.expect_mark_event_seen().never();
        mock.expect_record_outcome().returning(|_, _, _, _| Ok(()));
        let expected_key = format!("ring:{uuid}:call-1");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let claims = seen.clone();
        let store = ClaimingStore {
            mock,
            claim: Box::new(move |key, at, person, channel| {
                assert_eq!(key, Some(expected_key.as_str()));
                assert_eq!(at, start());
                assert_eq!(person.uuid(), uuid);
                assert_eq!(channel, Channel::Voip);
                let mut claims = claims.lock().unwrap();
                claims.push(key.unwrap_or_default().to_owned());
                Ok(if claims.len() == 1 {
                    Claim::Devices(devices.clone())
                } else {
                    Claim::Duplicate(devices.clone())
                })
            }),
        };
        let sent = Sent::default();
        let service = claiming_service(
            store,
            gateway(&sent, |_, _| delivered(ApnsEnvironment::Production)),
        );

        let first = service.ring(call(&callee, "call-1")).await.unwrap();
        let again = service.ring(call(&callee, "call-1")).await.unwrap();

        assert_eq!(
            first,
            DeliveryReport {
                devices: 2,
                delivered: 2,
                ..DeliveryReport::default()
            }
        );
        assert_eq!(
            again,
            DeliveryReport {
                duplicate: true,
                devices: 2,
                ..DeliveryReport::default()
            }
        );
        assert_eq!(sent.lock().unwrap().len(), 2);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_claim_means_unavailable_and_nothing_is_pushed() {
        let callee = person();
        let store = ClaimingStore {
            mock: MockRegistrationPort::new(),
            claim: Box::new(|_, _, _, _| {
                Err(RegistrationError::Unavailable("pool timed out".into()))
            }),
        };
        let mut gateway = MockPushGateway::new();
        gateway.expect_send().never();
        let service = claiming_service(store, gateway);

        let error = service.ring(call(&callee, "call-1")).await.unwrap_err();

        assert!(matches!(error, NotifyError::Unavailable(_)));
    }

    #[tokio::test]
    async fn by_default_a_claim_looks_up_then_marks_and_spares_people_without_devices() {
        let callee = person();
        let mut store = MockRegistrationPort::new();
        let devices = vec![device(&callee, "a1", Channel::Alert, None)];
        let answer = devices.clone();
        store
            .expect_devices_of()
            .with(eq(callee.clone()), eq(Channel::Alert))
            .times(3)
            .returning(move |_, _| Ok(answer.clone()));
        let nobody = person();
        store
            .expect_devices_of()
            .with(eq(nobody.clone()), eq(Channel::Alert))
            .times(1)
            .returning(|_, _| Ok(Vec::new()));
        let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
        store
            .expect_mark_event_seen()
            .with(eq("k1".to_owned()), eq(start()))
            .times(2)
            .returning(move |key, _| Ok(seen.lock().unwrap().insert(key.to_owned())));

        let fresh = store
            .claim_event_devices(Some("k1"), start(), &callee, Channel::Alert)
            .await
            .unwrap();
        let again = store
            .claim_event_devices(Some("k1"), start(), &callee, Channel::Alert)
            .await
            .unwrap();
        let unkeyed = store
            .claim_event_devices(None, start(), &callee, Channel::Alert)
            .await
            .unwrap();
        let none = store
            .claim_event_devices(Some("k2"), start(), &nobody, Channel::Alert)
            .await
            .unwrap();

        assert_eq!(fresh, Claim::Devices(devices.clone()));
        assert_eq!(again, Claim::Duplicate(devices.clone()));
        assert_eq!(unkeyed, Claim::Devices(devices));
        assert_eq!(none, Claim::Devices(Vec::new()));
    }
}
