//! The ports, counted and timed: the store and the push gateway wrapped so the
//! domain never sees a metric.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use webex_push_domain::{
    ApnsEnvironment, Channel, Claim, Device, DeviceToken, EventClaim, EventKey, PersonId, Push,
    PushContent, PushGateway, PushOutcome, PushProvider, Registration, RegistrationPort, ReplicaId,
    StoreError, TakeOver,
};

use super::registry::{Metrics, StoreLabels};

/// The Registration port, timed: every call to the store passes here.
pub struct MeteredStore {
    inner: Arc<dyn RegistrationPort>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn RegistrationPort>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let labels = StoreLabels {
            operation,
            result: match &result {
                Ok(_) => "ok",
                Err(StoreError::Unavailable(_)) => "unavailable",
                Err(StoreError::Unknown(_)) => "unknown",
            },
        };
        self.metrics
            .store_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl RegistrationPort for MeteredStore {
    async fn register(
        &self,
        registration: &Registration,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed("register", self.inner.register(registration, at))
            .await
    }

    async fn trim_devices(
        &self,
        person: &PersonId,
        channel: Channel,
        keep: usize,
    ) -> Result<Vec<DeviceToken>, StoreError> {
        self.timed(
            "trim_devices",
            self.inner.trim_devices(person, channel, keep),
        )
        .await
    }

    async fn unregister(&self, token: &DeviceToken) -> Result<bool, StoreError> {
        self.timed("unregister", self.inner.unregister(token)).await
    }

    async fn devices_of(
        &self,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Vec<Device>, StoreError> {
        self.timed("devices_of", self.inner.devices_of(person, channel))
            .await
    }

    async fn all_devices_of(&self, person: &PersonId) -> Result<Vec<Device>, StoreError> {
        self.timed("all_devices_of", self.inner.all_devices_of(person))
            .await
    }

    async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, StoreError> {
        self.timed("device", self.inner.device(token)).await
    }

    async fn remove_unless_registered_since(
        &self,
        token: &DeviceToken,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.timed(
            "remove_unless_registered_since",
            self.inner.remove_unless_registered_since(token, since),
        )
        .await
    }

    async fn record_outcome(
        &self,
        token: &DeviceToken,
        outcome: &str,
        environment: Option<ApnsEnvironment>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed(
            "record_outcome",
            self.inner.record_outcome(token, outcome, environment, at),
        )
        .await
    }

    async fn claim(&self, claim: &EventClaim) -> Result<Claim, StoreError> {
        self.timed("claim", self.inner.claim(claim)).await
    }

    async fn finish_event(&self, key: &EventKey) -> Result<(), StoreError> {
        self.timed("finish_event", self.inner.finish_event(key))
            .await
    }

    async fn take_over_events(
        &self,
        holder: ReplicaId,
        at: DateTime<Utc>,
        alive_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<TakeOver, StoreError> {
        self.timed(
            "take_over_events",
            self.inner.take_over_events(holder, at, alive_since, limit),
        )
        .await
    }

    async fn prune_seen_events(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.timed(
            "prune_seen_events",
            self.inner.prune_seen_events(before, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
}

tokio::task_local! {
    /// When the webhook being relayed on this task arrived (set by the push worker).
    pub static WEBHOOK_RECEIVED: Instant;
}

/// The PushGateway, counted and timed: every push of a relayed event passes here.
pub struct MeteredGateway {
    inner: Arc<dyn PushGateway>,
    metrics: Arc<Metrics>,
}

impl MeteredGateway {
    pub fn new(inner: Arc<dyn PushGateway>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl PushGateway for MeteredGateway {
    async fn send(&self, push: &Push) -> PushOutcome {
        let started = Instant::now();
        let outcome = self.inner.send(push).await;
        self.metrics.observe_push(push, &outcome, started.elapsed());
        if let (PushContent::IncomingCall(_), PushOutcome::Delivered { .. }) =
            (&push.content, &outcome)
        {
            if let Ok(received) = WEBHOOK_RECEIVED.try_with(|received| *received) {
                let latency = match push.token.provider() {
                    PushProvider::Apns => &self.metrics.ring_latency,
                    PushProvider::Fcm => &self.metrics.fcm_ring_latency,
                };
                latency.observe(received.elapsed().as_secs_f64());
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use webex_push_domain::{
        ApnsEnvironment, CallId, Caller, Channel, DeviceToken, EventSource, IncomingCall, PersonId,
        ports::MockPushGateway,
    };

    use super::*;

    fn ring_push() -> Push {
        Push {
            token: DeviceToken::parse(&"ab".repeat(32)).unwrap(),
            channel: Channel::Voip,
            environment: None,
            bundle_id: None,
            flavour: webex_push_domain::AppFlavour::Seed,
            content: PushContent::IncomingCall(Arc::new(IncomingCall {
                call_id: CallId::parse("call-1").unwrap(),
                callee: PersonId::from_uuid(uuid::Uuid::new_v4()),
                caller: Caller::default(),
                occurred_at: Utc::now(),
                source: EventSource::CallMemberships,
                sdk_payload: None,
                fcm_payload: None,
                webhook: None,
                callee_field: None,
                audience: None,
            })),
            deliver_by: None,
        }
    }

    #[tokio::test]
    async fn the_decorator_counts_outcomes_by_reason_and_times_the_ring() {
        let mut gateway = MockPushGateway::new();
        let mut answers = vec![
            PushOutcome::Delivered {
                id: "id".into(),
                environment: Some(ApnsEnvironment::Production),
            },
            PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since: Utc::now(),
            },
        ];
        gateway
            .expect_send()
            .times(2)
            .returning(move |_| answers.remove(0));
        let metrics = Arc::new(Metrics::new());
        let metered = MeteredGateway::new(Arc::new(gateway), Arc::clone(&metrics));
        let push = ring_push();
        WEBHOOK_RECEIVED
            .scope(Instant::now(), async {
                metered.send(&push).await;
                metered.send(&push).await;
            })
            .await;
        metrics.probe_tokens(|| 3);
        let text = metrics.render().unwrap();
        for series in [
            r#"webex_push_pushes_total{provider="apns",channel="voip",outcome="delivered",reason=""} 1"#,
            r#"webex_push_pushes_total{provider="apns",channel="voip",outcome="token_invalid",reason="Unregistered"} 1"#,
            "webex_push_ring_latency_seconds_count 1",
            "webex_push_apns_request_duration_seconds_count 2",
            "webex_push_apns_provider_tokens_minted_total 3",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[tokio::test]
    async fn the_store_decorator_times_each_call_by_operation_and_result() {
        use webex_push_domain::ports::MockRegistrationPort;

        let person = PersonId::from_uuid(uuid::Uuid::new_v4());
        let mut inner = MockRegistrationPort::new();
        inner
            .expect_claim()
            .times(1)
            .returning(|_| Ok(Claim::Devices(Vec::new())));
        inner
            .expect_ping()
            .returning(|| Err(StoreError::Unavailable("down".into())));
        let metrics = Arc::new(Metrics::new());
        let metered = MeteredStore::new(Arc::new(inner), Arc::clone(&metrics));

        let claim = metered
            .claim(&webex_push_domain::EventClaim {
                key: None,
                job: webex_push_domain::JobId::new(),
                person,
                at: Utc::now(),
                event: "{}".into(),
                deliver_by: Utc::now(),
                holder: webex_push_domain::ReplicaId::new(),
            })
            .await
            .unwrap();
        assert_eq!(claim, Claim::Devices(Vec::new()));
        assert!(metered.ping().await.is_err());

        let text = metrics.render().unwrap();
        for series in [
            r#"webex_push_store_operation_duration_seconds_count{operation="claim",result="ok"} 1"#,
            r#"webex_push_store_operation_duration_seconds_count{operation="ping",result="unavailable"} 1"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }
}
