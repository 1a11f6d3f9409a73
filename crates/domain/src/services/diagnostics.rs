//! The operators' use cases behind `/admin`: list a person's devices, and send a test
//! push synchronously, returning the provider's whole answer per device.
//!
//! Test pushes go through the [`TestPushGateway`] port, not the relay's
//! [`PushGateway`](crate::ports::PushGateway): they are diagnostics, so they do not
//! count in the pushes relayed.

use std::sync::Arc;

use futures::future::join_all;

use super::Clock;
use crate::ports::{RegistrationPort, StoreError, TestPushGateway};
use crate::types::{
    CallId, Caller, Channel, Device, DeviceToken, EventSource, IncomingCall, NewMessage, PersonId,
    Push, PushContent, PushOutcome, TestAnswer,
};

/// Who a test push goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestPushTarget {
    /// Every device of the person on the channel.
    Person(PersonId),
    /// One token, registered or not.
    Token(DeviceToken),
}

/// The provider's answer for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPushResult {
    pub token: DeviceToken,
    pub answer: TestAnswer,
}

/// Why no test push was sent.
#[derive(Debug, thiserror::Error)]
pub enum TestPushError {
    /// Neither an APNs key nor an FCM service account is loaded: nothing could send it.
    #[error("no APNs key or FCM service account is loaded")]
    NotConfigured,
    /// The store could not say which devices to send to.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operators' use cases: what the store holds for a person, and whether a push
/// reaches their devices.
#[derive(Clone)]
pub struct DiagnosticsService {
    store: Arc<dyn RegistrationPort>,
    /// `None`: no provider is configured; test pushes are refused.
    gateway: Option<Arc<dyn TestPushGateway>>,
    clock: Arc<dyn Clock>,
}

impl DiagnosticsService {
    pub fn new(
        store: Arc<dyn RegistrationPort>,
        gateway: Option<Arc<dyn TestPushGateway>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            gateway,
            clock,
        }
    }

    /// Every device of `person`, VoIP first, newest registration first.
    pub async fn devices(&self, person: &PersonId) -> Result<Vec<Device>, StoreError> {
        let mut devices = self.store.all_devices_of(person).await?;
        devices.sort_by(|a, b| {
            (a.channel != Channel::Voip, b.registered_at)
                .cmp(&(b.channel != Channel::Voip, a.registered_at))
        });
        Ok(devices)
    }

    /// Sends a test push on `channel` to `target`, all devices at once, and records
    /// each outcome as the device's last (so the device list shows it). A dead token
    /// is reported, not removed: the operator decides.
    pub async fn test_push(
        &self,
        target: &TestPushTarget,
        channel: Channel,
        message: &str,
    ) -> Result<Vec<TestPushResult>, TestPushError> {
        let gateway = self.gateway.as_ref().ok_or(TestPushError::NotConfigured)?;
        let clock = self.clock.as_ref();
        let pushes: Vec<Push> = match target {
            TestPushTarget::Person(person) => self
                .store
                .devices_of(person, channel)
                .await?
                .into_iter()
                .map(|device| Push {
                    token: device.token,
                    channel,
                    environment: device.environment,
                    bundle_id: device.bundle_id,
                    flavour: device.flavour,
                    content: test_content(channel, message, clock),
                    deliver_by: None,
                })
                .collect(),
            TestPushTarget::Token(token) => {
                let device = self.store.device(token).await?;
                vec![Push {
                    token: token.clone(),
                    channel,
                    environment: device.as_ref().and_then(|d| d.environment),
                    flavour: device.as_ref().map(|d| d.flavour).unwrap_or_default(),
                    bundle_id: device.and_then(|d| d.bundle_id),
                    content: test_content(channel, message, clock),
                    deliver_by: None,
                }]
            }
        };
        let answers = join_all(pushes.iter().map(|push| gateway.send_detailed(push))).await;
        let mut results = Vec::with_capacity(answers.len());
        for (push, answer) in pushes.into_iter().zip(answers) {
            let pinned = match &answer.outcome {
                PushOutcome::Delivered { environment, .. } => *environment,
                _ => None,
            };
            if let Err(error) = self
                .store
                .record_outcome(&push.token, answer.outcome.label(), pinned, clock.now())
                .await
            {
                tracing::warn!(token = %push.token, error = %error, "test push outcome not recorded");
            }
            tracing::info!(
                token = %push.token,
                channel = %channel,
                status = answer.status,
                reason = answer.reason.as_deref().unwrap_or("-"),
                provider = %answer.provider,
                id = %answer.id,
                "test push answered"
            );
            results.push(TestPushResult {
                token: push.token,
                answer,
            });
        }
        Ok(results)
    }
}

/// What a test push says: an incoming call from `message` on VoIP (a full call
/// payload, so CallKit can report it as iOS requires of every VoIP push), a notice
/// showing `message` on Alert, dated by `clock`. A KitchenSink app reads only the
/// SDK's own VoIP payload, which no test can forge: its VoIP tokens answer
/// `NotForThisApp`, unsent.
pub fn test_content(channel: Channel, message: &str, clock: &dyn Clock) -> PushContent {
    let id = format!("webex-push-test-{}", uuid::Uuid::new_v4());
    // A fixed nobody: the push does not come from Webex.
    let nobody = PersonId::from_uuid(uuid::Uuid::nil());
    match channel {
        Channel::Voip => PushContent::IncomingCall(Arc::new(IncomingCall {
            call_id: CallId::parse(&id).unwrap_or_else(|| unreachable!("a uuid-based id is valid")),
            callee: nobody,
            caller: Caller {
                name: Some(message.to_owned()),
                ..Caller::default()
            },
            occurred_at: clock.now(),
            source: EventSource::TelephonyCalls,
            sdk_payload: None,
            fcm_payload: None,
            webhook: None,
            callee_field: None,
            audience: None,
        })),
        Channel::Alert => PushContent::Message(Arc::new(NewMessage {
            message_id: id.clone(),
            room_id: id,
            room_type: None,
            recipient: nobody,
            sender: None,
            // The alert's body shows the sender's address; here, the test text.
            sender_email: Some(message.to_owned()),
            occurred_at: clock.now(),
            webhook: None,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockRegistrationPort, MockTestPushGateway};
    use crate::services::ManualClock;
    use crate::types::{ApnsEnvironment, AppFlavour, BundleId, PushProvider};
    use chrono::{DateTime, TimeDelta, Utc};
    use mockall::predicate::eq;
    use std::sync::Mutex;
    use std::time::Duration;
    use uuid::Uuid;

    fn token(fill: &str) -> DeviceToken {
        DeviceToken::parse(&fill.repeat(64 / fill.len())).unwrap()
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn device(person: &PersonId, token: DeviceToken, channel: Channel) -> Device {
        Device {
            token,
            channel,
            person: person.clone(),
            environment: Some(ApnsEnvironment::Sandbox),
            bundle_id: None,
            flavour: AppFlavour::Seed,
            registered_at: start(),
            last_outcome: None,
            last_outcome_at: None,
        }
    }

    /// Apple's answer: delivered to `a1...` (on the sandbox), `Unregistered` for others.
    fn apple(push: &Push) -> TestAnswer {
        let outcome = if push.token == token("a1") {
            PushOutcome::Delivered {
                id: "apns-1".into(),
                environment: Some(ApnsEnvironment::Sandbox),
            }
        } else {
            PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since: start(),
            }
        };
        TestAnswer {
            provider: PushProvider::Apns,
            status: Some(if push.token == token("a1") { 200 } else { 410 }),
            reason: (push.token != token("a1")).then(|| "Unregistered".to_owned()),
            id: "apns-1".into(),
            environment: Some(ApnsEnvironment::Sandbox),
            outcome,
            latency: Duration::from_millis(12),
        }
    }

    /// A gateway that answers as [`apple`] and keeps what it was asked to send.
    fn recording_gateway(sent: &Arc<Mutex<Vec<Push>>>) -> MockTestPushGateway {
        let mut gateway = MockTestPushGateway::new();
        let sent = Arc::clone(sent);
        gateway.expect_send_detailed().returning(move |push| {
            sent.lock().unwrap().push(push.clone());
            apple(push)
        });
        gateway
    }

    fn service(
        store: MockRegistrationPort,
        gateway: Option<MockTestPushGateway>,
    ) -> DiagnosticsService {
        DiagnosticsService::new(
            Arc::new(store),
            gateway.map(|g| Arc::new(g) as Arc<dyn TestPushGateway>),
            Arc::new(ManualClock::new(start())),
        )
    }

    #[tokio::test]
    async fn a_person_target_is_sent_to_every_device_on_the_channel_and_each_outcome_recorded() {
        let person = PersonId::from_uuid(Uuid::new_v4());
        let mut store = MockRegistrationPort::new();
        let devices = vec![
            device(&person, token("a1"), Channel::Voip),
            device(&person, token("c3"), Channel::Voip),
        ];
        store
            .expect_devices_of()
            .with(eq(person.clone()), eq(Channel::Voip))
            .times(1)
            .returning(move |_, _| Ok(devices.clone()));
        // The delivered token is pinned to the environment that took it; the dead one
        // is recorded, not removed.
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
            .with(eq(token("c3")), eq("Unregistered"), eq(None), eq(start()))
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        store.expect_unregister().never();
        store.expect_remove_unless_registered_since().never();
        let sent = Arc::default();
        let service = service(store, Some(recording_gateway(&sent)));

        let results = service
            .test_push(&TestPushTarget::Person(person), Channel::Voip, "Ops")
            .await
            .unwrap();

        let tokens: Vec<_> = results.iter().map(|r| r.token.clone()).collect();
        assert_eq!(tokens, vec![token("a1"), token("c3")]);
        assert_eq!(results[0].answer.status, Some(200));
        assert_eq!(results[1].answer.reason.as_deref(), Some("Unregistered"));
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        for push in sent.iter() {
            assert_eq!(push.channel, Channel::Voip);
            assert_eq!(push.environment, Some(ApnsEnvironment::Sandbox));
            assert_eq!(push.deliver_by, None);
        }
    }

    #[tokio::test]
    async fn a_token_target_that_is_not_registered_is_sent_with_the_defaults() {
        let mut store = MockRegistrationPort::new();
        store
            .expect_device()
            .with(eq(token("c3")))
            .times(1)
            .returning(|_| Ok(None));
        store
            .expect_record_outcome()
            .with(eq(token("c3")), eq("Unregistered"), eq(None), eq(start()))
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let sent = Arc::default();
        let service = service(store, Some(recording_gateway(&sent)));

        let results = service
            .test_push(&TestPushTarget::Token(token("c3")), Channel::Alert, "hi")
            .await
            .unwrap();

        assert_eq!(results.len(), 1);
        assert_eq!(results[0].token, token("c3"));
        assert_eq!(results[0].answer.status, Some(410));
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].token, token("c3"));
        assert_eq!(
            sent[0].environment, None,
            "the gateway's default, then the other"
        );
        assert_eq!(sent[0].bundle_id, None);
        assert_eq!(sent[0].flavour, AppFlavour::default());
        assert!(matches!(sent[0].content, PushContent::Message(_)));
    }

    #[tokio::test]
    async fn a_registered_token_target_uses_its_stored_environment_bundle_and_app() {
        let person = PersonId::from_uuid(Uuid::new_v4());
        let mut store = MockRegistrationPort::new();
        let stored = Device {
            environment: Some(ApnsEnvironment::Production),
            bundle_id: Some(BundleId::parse("com.example.app").unwrap()),
            flavour: AppFlavour::KitchenSink,
            ..device(&person, token("a1"), Channel::Alert)
        };
        store
            .expect_device()
            .returning(move |_| Ok(Some(stored.clone())));
        store
            .expect_record_outcome()
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let sent = Arc::default();
        let service = service(store, Some(recording_gateway(&sent)));

        service
            .test_push(&TestPushTarget::Token(token("a1")), Channel::Alert, "hi")
            .await
            .unwrap();

        let sent = sent.lock().unwrap();
        assert_eq!(sent[0].environment, Some(ApnsEnvironment::Production));
        assert_eq!(
            sent[0].bundle_id.as_ref().map(|b| b.as_str()),
            Some("com.example.app")
        );
        assert_eq!(sent[0].flavour, AppFlavour::KitchenSink);
    }

    #[tokio::test]
    async fn without_a_gateway_a_test_push_is_refused_as_not_configured() {
        let mut store = MockRegistrationPort::new();
        store.expect_devices_of().never();
        store.expect_device().never();
        store.expect_record_outcome().never();
        let service = service(store, None);

        let error = service
            .test_push(&TestPushTarget::Token(token("a1")), Channel::Voip, "Ops")
            .await
            .unwrap_err();

        assert!(matches!(error, TestPushError::NotConfigured), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_the_test_push_and_nothing_is_sent() {
        let mut store = MockRegistrationPort::new();
        store
            .expect_devices_of()
            .returning(|_, _| Err(StoreError::Unavailable("pool exhausted".into())));
        let mut gateway = MockTestPushGateway::new();
        gateway.expect_send_detailed().never();
        let service = service(store, Some(gateway));

        let person = PersonId::from_uuid(Uuid::new_v4());
        let error = service
            .test_push(&TestPushTarget::Person(person), Channel::Voip, "Ops")
            .await
            .unwrap_err();

        assert!(
            matches!(error, TestPushError::Store(StoreError::Unavailable(_))),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_outcome_that_cannot_be_recorded_does_not_fail_the_test_push() {
        let mut store = MockRegistrationPort::new();
        store.expect_device().returning(|_| Ok(None));
        store
            .expect_record_outcome()
            .times(1)
            .returning(|_, _, _, _| Err(StoreError::Unavailable("down".into())));
        let sent = Arc::default();
        let service = service(store, Some(recording_gateway(&sent)));

        let results = service
            .test_push(&TestPushTarget::Token(token("a1")), Channel::Voip, "Ops")
            .await
            .unwrap();

        assert_eq!(results.len(), 1);
        assert_eq!(results[0].answer.outcome.label(), "delivered");
    }

    #[tokio::test]
    async fn a_voip_test_push_is_a_whole_incoming_call_dated_by_the_clock() {
        let person = PersonId::from_uuid(Uuid::new_v4());
        let mut store = MockRegistrationPort::new();
        let devices = vec![
            device(&person, token("a1"), Channel::Voip),
            device(&person, token("c3"), Channel::Voip),
        ];
        store
            .expect_devices_of()
            .returning(move |_, _| Ok(devices.clone()));
        store.expect_record_outcome().returning(|_, _, _, _| Ok(()));
        let sent = Arc::default();
        let service = service(store, Some(recording_gateway(&sent)));

        service
            .test_push(&TestPushTarget::Person(person), Channel::Voip, "Ops desk")
            .await
            .unwrap();

        let sent = sent.lock().unwrap();
        let calls: Vec<&IncomingCall> = sent
            .iter()
            .map(|push| match &push.content {
                PushContent::IncomingCall(call) => call.as_ref(),
                other => panic!("not a call: {other:?}"),
            })
            .collect();
        for (push, call) in sent.iter().zip(&calls) {
            // What makes the app report it to CallKit: a ring, on the VoIP token.
            assert_eq!(
                push.content
                    .channel_for(AppFlavour::Seed, PushProvider::Apns),
                Some(Channel::Voip)
            );
            assert!(call.call_id.as_str().starts_with("webex-push-test-"));
            assert_eq!(call.caller.name.as_deref(), Some("Ops desk"));
            assert_eq!(call.occurred_at, start());
            assert_eq!(call.callee, PersonId::from_uuid(Uuid::nil()));
            assert_eq!(call.audience, None);
        }
        assert_ne!(calls[0].call_id, calls[1].call_id, "one call per device");
    }

    #[test]
    fn an_alert_test_content_shows_the_message_and_is_dated_by_the_clock() {
        let clock = ManualClock::new(start());
        clock.advance(TimeDelta::minutes(3));
        let PushContent::Message(message) = test_content(Channel::Alert, "Hello", &clock) else {
            panic!("not a message");
        };
        assert_eq!(message.sender_email.as_deref(), Some("Hello"));
        assert_eq!(message.occurred_at, start() + TimeDelta::minutes(3));
        assert!(message.message_id.starts_with("webex-push-test-"));
    }

    #[tokio::test]
    async fn devices_are_listed_voip_first_then_newest_first() {
        let person = PersonId::from_uuid(Uuid::new_v4());
        let at = |minutes| start() + TimeDelta::minutes(minutes);
        let listed = vec![
            Device {
                registered_at: at(5),
                ..device(&person, token("b2"), Channel::Alert)
            },
            Device {
                registered_at: at(1),
                ..device(&person, token("a1"), Channel::Voip)
            },
            Device {
                registered_at: at(9),
                ..device(&person, token("c3"), Channel::Alert)
            },
            Device {
                registered_at: at(2),
                ..device(&person, token("d4"), Channel::Voip)
            },
        ];
        let mut store = MockRegistrationPort::new();
        store
            .expect_all_devices_of()
            .with(eq(person.clone()))
            .returning(move |_| Ok(listed.clone()));
        let service = service(store, None);

        let devices = service.devices(&person).await.unwrap();

        let tokens: Vec<_> = devices.into_iter().map(|d| d.token).collect();
        assert_eq!(
            tokens,
            vec![token("d4"), token("a1"), token("c3"), token("b2")]
        );
    }
}
