//! One PushGateway over the providers' own: each push goes to the gateway of its
//! token's provider, so the notification service has one pipeline for iOS and Android.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::PushGateway;
use crate::types::{Push, PushOutcome, PushProvider};

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
