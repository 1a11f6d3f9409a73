//! One PushGateway over the providers' own: each push goes to the gateway of its
//! token's provider, so the notification service has one pipeline for iOS and Android.
//! The same for test pushes, one TestPushGateway over the providers' own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{PushGateway, TestPushGateway};
use crate::types::{Push, PushOutcome, PushProvider, TestAnswer};

/// The gateway of each provider; a provider without one rejects its pushes (its tokens
/// are only in the store from before it was unconfigured).
#[derive(Clone, Default)]
pub struct ProviderGateways {
    apns: Option<Arc<dyn PushGateway>>,
    fcm: Option<Arc<dyn PushGateway>>,
}

impl ProviderGateways {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the pushes of `provider` through `gateway`.
    pub fn with(mut self, provider: PushProvider, gateway: Arc<dyn PushGateway>) -> Self {
        match provider {
            PushProvider::Apns => self.apns = Some(gateway),
            PushProvider::Fcm => self.fcm = Some(gateway),
        }
        self
    }

    pub fn serves(&self, provider: PushProvider) -> bool {
        self.gateway(provider).is_some()
    }

    fn gateway(&self, provider: PushProvider) -> Option<&Arc<dyn PushGateway>> {
        match provider {
            PushProvider::Apns => self.apns.as_ref(),
            PushProvider::Fcm => self.fcm.as_ref(),
        }
    }
}

#[async_trait]
impl PushGateway for ProviderGateways {
    async fn send(&self, push: &Push) -> PushOutcome {
        let provider = push.token.provider();
        match self.gateway(provider) {
            Some(gateway) => gateway.send(push).await,
            None => PushOutcome::Rejected {
                reason: match provider {
                    PushProvider::Apns => "ApnsNotConfigured",
                    PushProvider::Fcm => "FcmNotConfigured",
                }
                .into(),
            },
        }
    }
}

/// The test-push gateway of each provider; a test push to a provider without one is
/// answered "not configured", unsent.
#[derive(Clone, Default)]
pub struct ProviderTestGateways {
    apns: Option<Arc<dyn TestPushGateway>>,
    fcm: Option<Arc<dyn TestPushGateway>>,
}

impl ProviderTestGateways {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the test pushes of `provider` through `gateway`.
    pub fn with(mut self, provider: PushProvider, gateway: Arc<dyn TestPushGateway>) -> Self {
        match provider {
            PushProvider::Apns => self.apns = Some(gateway),
            PushProvider::Fcm => self.fcm = Some(gateway),
        }
        self
    }

    /// Whether any provider has a gateway: without one, there is nothing to test.
    pub fn serves_any(&self) -> bool {
        self.apns.is_some() || self.fcm.is_some()
    }

    fn gateway(&self, provider: PushProvider) -> Option<&Arc<dyn TestPushGateway>> {
        match provider {
            PushProvider::Apns => self.apns.as_ref(),
            PushProvider::Fcm => self.fcm.as_ref(),
        }
    }
}

#[async_trait]
impl TestPushGateway for ProviderTestGateways {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        let provider = push.token.provider();
        if let Some(gateway) = self.gateway(provider) {
            return gateway.send_detailed(push).await;
        }
        // Spelled as the admin API has always answered (not as `ProviderGateways`
        // does): operators read it in test-push answers and stored last outcomes.
        let reason = match provider {
            PushProvider::Apns => "APNSNotConfigured",
            PushProvider::Fcm => "FCMNotConfigured",
        };
        TestAnswer {
            provider,
            status: None,
            reason: Some(reason.to_owned()),
            id: String::new(),
            environment: None,
            outcome: PushOutcome::Rejected {
                reason: reason.to_owned(),
            },
            latency: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockTestPushGateway;
    use crate::types::{AppFlavour, Channel, DeviceToken, NewMessage, PersonId, PushContent};

    fn push(token: DeviceToken) -> Push {
        Push {
            token,
            channel: Channel::Alert,
            environment: None,
            bundle_id: None,
            flavour: AppFlavour::Seed,
            content: PushContent::Message(Arc::new(NewMessage {
                message_id: "m".into(),
                room_id: "r".into(),
                room_type: None,
                recipient: PersonId::from_uuid(uuid::Uuid::nil()),
                sender: None,
                sender_email: None,
                occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                webhook: None,
            })),
            deliver_by: None,
        }
    }

    fn answer(provider: PushProvider) -> TestAnswer {
        TestAnswer {
            provider,
            status: Some(200),
            reason: None,
            id: "id-1".into(),
            environment: None,
            outcome: PushOutcome::Delivered {
                id: "id-1".into(),
                environment: None,
            },
            latency: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn a_test_push_goes_to_its_providers_gateway_and_one_without_is_answered_unsent() {
        let mut fcm = MockTestPushGateway::new();
        fcm.expect_send_detailed()
            .times(1)
            .returning(|_| answer(PushProvider::Fcm));
        let gateways = ProviderTestGateways::new().with(PushProvider::Fcm, Arc::new(fcm));
        assert!(gateways.serves_any());

        let sent = gateways
            .send_detailed(&push(DeviceToken::parse_fcm(&"f".repeat(140)).unwrap()))
            .await;
        assert_eq!(sent, answer(PushProvider::Fcm));

        let unsent = gateways
            .send_detailed(&push(DeviceToken::parse(&"a1".repeat(32)).unwrap()))
            .await;
        assert_eq!(unsent.provider, PushProvider::Apns);
        assert_eq!(unsent.status, None);
        assert_eq!(unsent.reason.as_deref(), Some("APNSNotConfigured"));
        assert_eq!(unsent.outcome.label(), "APNSNotConfigured");
        assert!(!ProviderTestGateways::new().serves_any());
    }
}
