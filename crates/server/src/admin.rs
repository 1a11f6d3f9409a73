//! The operators' use cases behind `/admin`: list a person's devices, and send a test
//! push synchronously, returning Apple's whole answer per device.
//!
//! Test pushes go straight to the APNs or FCM client (not through the metered gateway):
//! they are diagnostics, so they do not count in `webex_push_pushes_total`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use futures::future::join_all;
use std::time::{Duration, Instant};

use webex_push_adapters::apns::{ApnsAnswer, ApnsClient};
use webex_push_adapters::fcm::FcmClient;
use webex_push_domain::{
    ApnsEnvironment, CallId, Caller, Channel, Clock, Device, DeviceToken, EventSource,
    IncomingCall, NewMessage, PersonId, Push, PushContent, PushOutcome, PushProvider,
    RegistrationError, RegistrationPort,
};

/// Everything the provider said about one test push.
#[derive(Debug, Clone)]
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

impl From<ApnsAnswer> for TestAnswer {
    fn from(answer: ApnsAnswer) -> Self {
        Self {
            provider: PushProvider::Apns,
            status: answer.status,
            reason: answer.reason,
            id: answer.apns_id,
            environment: Some(answer.environment),
            outcome: answer.outcome,
            latency: answer.latency,
        }
    }
}

/// Sends one push and returns everything the provider said.
#[async_trait]
pub trait DetailedPushGateway: Send + Sync + 'static {
    async fn send_detailed(&self, push: &Push) -> TestAnswer;
}

#[async_trait]
impl DetailedPushGateway for ApnsClient {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        ApnsClient::send_detailed(self, push).await.into()
    }
}

#[async_trait]
impl DetailedPushGateway for FcmClient {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        let started = Instant::now();
        let answer = FcmClient::send_detailed(self, push).await;
        TestAnswer {
            provider: PushProvider::Fcm,
            status: answer.status,
            reason: answer.reason,
            id: answer.name.unwrap_or_default(),
            environment: None,
            outcome: answer.outcome,
            latency: started.elapsed(),
        }
    }
}

/// The test-push client of each provider; each push goes to its token's.
#[derive(Clone, Default)]
pub struct TestPushClients {
    pub apns: Option<Arc<dyn DetailedPushGateway>>,
    pub fcm: Option<Arc<dyn DetailedPushGateway>>,
}

#[async_trait]
impl DetailedPushGateway for TestPushClients {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        let provider = push.token.provider();
        let client = match provider {
            PushProvider::Apns => self.apns.as_ref(),
            PushProvider::Fcm => self.fcm.as_ref(),
        };
        match client {
            Some(client) => client.send_detailed(push).await,
            None => {
                let reason = format!("{}NotConfigured", provider.as_str().to_uppercase());
                TestAnswer {
                    provider,
                    status: None,
                    reason: Some(reason.clone()),
                    id: String::new(),
                    environment: None,
                    outcome: PushOutcome::Rejected { reason },
                    latency: Duration::ZERO,
                }
            }
        }
    }
}

/// Who a test push goes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every device of the person on the channel.
    Person(PersonId),
    /// One token, registered or not.
    Token(DeviceToken),
}

/// Apple's answer for one device.
#[derive(Debug, Clone)]
pub struct TestPushResult {
    pub token: DeviceToken,
    pub answer: TestAnswer,
}

#[derive(Debug, thiserror::Error)]
pub enum TestPushError {
    #[error("no APNs key or FCM service account is loaded")]
    ApnsNotConfigured,
    #[error(transparent)]
    Store(#[from] RegistrationError),
}

pub struct AdminService {
    store: Arc<dyn RegistrationPort>,
    gateway: Option<Arc<dyn DetailedPushGateway>>,
    clock: Arc<dyn Clock>,
}

impl AdminService {
    pub fn new(
        store: Arc<dyn RegistrationPort>,
        gateway: Option<Arc<dyn DetailedPushGateway>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            gateway,
            clock,
        }
    }

    /// Every device of `person`, VoIP first, newest registration first.
    pub async fn devices(&self, person: &PersonId) -> Result<Vec<Device>, RegistrationError> {
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
        target: &Target,
        channel: Channel,
        message: &str,
    ) -> Result<Vec<TestPushResult>, TestPushError> {
        let gateway = self
            .gateway
            .as_ref()
            .ok_or(TestPushError::ApnsNotConfigured)?;
        let pushes: Vec<Push> = match target {
            Target::Person(person) => self
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
                    content: test_content(channel, message),
                    deliver_by: None,
                })
                .collect(),
            Target::Token(token) => {
                let device = self.store.device(token).await?;
                vec![Push {
                    token: token.clone(),
                    channel,
                    environment: device.as_ref().and_then(|d| d.environment),
                    flavour: device.as_ref().map(|d| d.flavour).unwrap_or_default(),
                    bundle_id: device.and_then(|d| d.bundle_id),
                    content: test_content(channel, message),
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
                .record_outcome(
                    &push.token,
                    answer.outcome.label(),
                    pinned,
                    self.clock.now(),
                )
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
/// showing `message` on Alert. A KitchenSink app reads only the SDK's own VoIP payload,
/// which no test can forge: its VoIP tokens answer `NotForThisApp`, unsent.
pub fn test_content(channel: Channel, message: &str) -> PushContent {
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
            occurred_at: Utc::now(),
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
            occurred_at: Utc::now(),
            webhook: None,
        })),
    }
}
