//! Registering and unregistering an app install's device tokens, behind the
//! proof-of-identity guard: the one place that decides who may bind or unbind a device.

use std::sync::Arc;

use tracing::instrument;

use super::{Clock, GuardError, RegistrationGuard, WebhookUpkeep};
use crate::ports::{BoxError, RegistrationPort, StoreError};
use crate::types::{AccessToken, Channel, DeviceToken, Registration};

/// Why a registration was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The app sent the same token as its VoIP and its alert token. One row per token
    /// means one of the two channels would silently vanish, and a VoIP token that also
    /// gets alerts makes iOS kill the app: refused as invalid input.
    #[error("the VoIP token and the alert token must be different tokens")]
    SameTokenForBothChannels,
    /// The request did not prove it may change this person's (or this device's)
    /// registrations.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// With proof of identity on, a device token registered to another person moves
    /// only once that person has unregistered it: otherwise whoever learnt a token
    /// could take another person's calls.
    #[error("the device token is registered to another person")]
    TokenTaken,
    /// The store cannot be reached; nothing was stored; the caller may try again later.
    #[error("registration store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a state nobody planned for.
    #[error("registration failed")]
    Unknown(#[source] BoxError),
}

impl From<StoreError> for RegisterError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => RegisterError::Unavailable(source),
            StoreError::Unknown(source) => RegisterError::Unknown(source),
        }
    }
}

/// The registration use cases: binding an app's devices to a person, and unbinding a
/// device.
#[derive(Clone)]
pub struct RegistrationService {
    store: Arc<dyn RegistrationPort>,
    clock: Arc<dyn Clock>,
    guard: RegistrationGuard,
    devices_per_channel: usize,
    /// With proof of identity: the person's webhooks are checked after registering.
    upkeep: Option<Arc<WebhookUpkeep>>,
}

/// What a registration did besides storing its two tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registered {
    /// The person's least recently registered devices, removed to stay within the
    /// limit of devices per person and channel.
    pub evicted: Vec<DeviceToken>,
}

impl RegistrationService {
    /// Without proof of identity (the original relay's behaviour).
    pub fn new(store: Arc<dyn RegistrationPort>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            guard: RegistrationGuard::off(),
            devices_per_channel: Self::DEFAULT_DEVICES_PER_CHANNEL,
            upkeep: None,
        }
    }

    /// How many devices a person keeps per channel unless told otherwise: phones,
    /// tablets and reinstalls, with room to spare, while one webhook never fans out to
    /// hundreds of pushes.
    pub const DEFAULT_DEVICES_PER_CHANNEL: usize = 10;

    /// A person keeps at most `limit` devices per channel (at least 1); registering one
    /// more removes the least recently registered.
    pub fn keeping(mut self, limit: usize) -> Self {
        self.devices_per_channel = limit.max(1);
        self
    }

    /// After each registration proven with a Webex access token, the person's webhooks
    /// are checked (made, repaired) with that token, in the background: the app's
    /// answer never waits for Webex.
    pub fn keeping_webhooks(mut self, upkeep: Arc<WebhookUpkeep>) -> Self {
        self.upkeep = Some(upkeep);
        self
    }

    /// Registration changes must pass `guard`.
    pub fn guarded_by(mut self, guard: RegistrationGuard) -> Self {
        self.guard = guard;
        self
    }

    /// Stores both tokens of `registration`, replacing whatever they were registered as
    /// before: a token that moved to another person moves, and re-registering refreshes
    /// the registration time (which is what keeps a token alive against a stale APNs 410).
    #[instrument(
        name = "register",
        skip_all,
        fields(
            person = %registration.person,
            voip_token = registration.voip_token.as_ref().map(tracing::field::display),
            alert_token = %registration.alert_token,
            provider = %registration.provider(),
            environment = registration.environment.map(tracing::field::display),
        )
    )]
    pub async fn register(
        &self,
        proof: Option<&AccessToken>,
        registration: Registration,
    ) -> Result<Registered, RegisterError> {
        if registration.voip_token.as_ref() == Some(&registration.alert_token) {
            tracing::debug!("refused: the same token for both channels");
            return Err(RegisterError::SameTokenForBothChannels);
        }
        self.guard
            .ensure_may_register(proof, &registration.person)
            .await?;
        if self.guard.is_enabled() {
            for (token, _) in registration.tokens() {
                let owner = self.store.device(token).await?.map(|device| device.person);
                if owner.is_some_and(|owner| owner != registration.person) {
                    tracing::info!(%token, "refused: the token is registered to another person");
                    return Err(RegisterError::TokenTaken);
                }
            }
        }
        let at = self.clock.now();
        self.store
            .register(&registration, at)
            .await
            .inspect_err(|error| tracing::warn!(error = %error, "registration not stored"))?;
        tracing::info!("registered");
        if let (Some(upkeep), Some(proof), true) = (&self.upkeep, proof, self.guard.is_enabled()) {
            // The guard proved `proof` is the person's: their webhooks may be made with it.
            let (upkeep, proof, person) = (
                Arc::clone(upkeep),
                proof.clone(),
                registration.person.clone(),
            );
            let span = tracing::Span::current();
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    if let Err(error) = upkeep.ensure_for(&proof, &person).await {
                        tracing::warn!(error = %error, "webhooks not checked; the next registration tries again");
                    }
                },
                span,
            ));
        }
        let mut registered = Registered::default();
        for channel in [Channel::Voip, Channel::Alert] {
            // Stored already: a failure here only leaves one device too many for now.
            match self
                .store
                .trim_devices(&registration.person, channel, self.devices_per_channel)
                .await
            {
                Ok(evicted) => {
                    for token in &evicted {
                        tracing::info!(
                            %token,
                            %channel,
                            limit = self.devices_per_channel,
                            "device removed: the person registered more devices than the limit"
                        );
                    }
                    registered.evicted.extend(evicted);
                }
                Err(error) => {
                    tracing::warn!(error = %error, %channel, "devices over the limit not removed");
                }
            }
        }
        Ok(registered)
    }

    /// Forgets `token`, whatever its channel, once the holder of `proof` is shown to own
    /// it (when the guard is on). Idempotent: removing an unknown token succeeds too.
    /// Returns whether the token was there.
    #[instrument(name = "unregister", skip_all, fields(token = %token))]
    pub async fn unregister(
        &self,
        proof: Option<&AccessToken>,
        token: &DeviceToken,
    ) -> Result<bool, RegisterError> {
        if self.guard.is_enabled() {
            let owner = self.store.device(token).await?.map(|device| device.person);
            self.guard
                .ensure_may_unregister(proof, owner.as_ref())
                .await?;
        }
        let removed = self
            .store
            .unregister(token)
            .await
            .inspect_err(|error| tracing::warn!(error = %error, "unregistration failed"))?;
        tracing::info!(removed, "unregistered");
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockRegistrationPort;
    use crate::services::ManualClock;
    use crate::types::{ApnsEnvironment, EmailAddress, PersonId};
    use chrono::{DateTime, TimeDelta, Utc};
    use mockall::predicate::eq;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use uuid::Uuid;

    fn token(fill: &str) -> DeviceToken {
        DeviceToken::parse(&fill.repeat(64 / fill.len())).unwrap()
    }

    fn registration(person: &PersonId, voip: &str, alert: &str) -> Registration {
        Registration {
            person: person.clone(),
            email: Some(EmailAddress::parse("ada@example.com").unwrap()),
            voip_token: Some(token(voip)),
            alert_token: token(alert),
            environment: Some(ApnsEnvironment::Sandbox),
            bundle_id: None,
            flavour: crate::types::AppFlavour::Seed,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    /// A store double with real upsert semantics, so the tests check what ends up stored.
    type Rows = Arc<Mutex<HashMap<DeviceToken, (PersonId, DateTime<Utc>)>>>;

    fn upserting_store(rows: &Rows) -> MockRegistrationPort {
        let mut store = MockRegistrationPort::new();
        let on_register = rows.clone();
        store.expect_register().returning(move |registration, at| {
            let mut rows = on_register.lock().unwrap();
            for (token, _) in registration.tokens() {
                rows.insert(token.clone(), (registration.person.clone(), at));
            }
            Ok(())
        });
        let on_unregister = rows.clone();
        store
            .expect_unregister()
            .returning(move |token| Ok(on_unregister.lock().unwrap().remove(token).is_some()));
        store
            .expect_trim_devices()
            .returning(|_, _, _| Ok(Vec::new()));
        let on_device = rows.clone();
        store.expect_device().returning(move |token| {
            Ok(on_device
                .lock()
                .unwrap()
                .get(token)
                .map(|(person, at)| crate::types::Device {
                    token: token.clone(),
                    channel: crate::types::Channel::Voip,
                    person: person.clone(),
                    environment: None,
                    bundle_id: None,
                    flavour: crate::types::AppFlavour::Seed,
                    registered_at: *at,
                    last_outcome: None,
                    last_outcome_at: None,
                }))
        });
        store
    }

    /// A guard that knows two access tokens: `ada`'s and `bob`'s.
    fn guard_of(ada: &PersonId, bob: &PersonId) -> RegistrationGuard {
        let mut identity = crate::ports::MockIdentityPort::new();
        let (ada, bob) = (ada.clone(), bob.clone());
        identity
            .expect_person_for_token()
            .returning(move |token| match token.expose() {
                "ada-token" => Ok(ada.clone()),
                "bob-token" => Ok(bob.clone()),
                _ => Err(crate::ports::IdentityError::Rejected),
            });
        RegistrationGuard::new(Some(Arc::new(identity)))
    }

    #[tokio::test]
    async fn with_proof_on_a_token_of_another_person_moves_only_once_its_owner_let_it_go() {
        let rows = Rows::default();
        let ada = PersonId::from_uuid(Uuid::new_v4());
        let bob = PersonId::from_uuid(Uuid::new_v4());
        let service = RegistrationService::new(Arc::new(upserting_store(&rows)), Arc::new(start))
            .guarded_by(guard_of(&ada, &bob));
        let ada_proof = AccessToken::parse("ada-token").unwrap();
        let bob_proof = AccessToken::parse("bob-token").unwrap();
        service
            .register(Some(&ada_proof), registration(&ada, "a1", "b2"))
            .await
            .unwrap();

        let taken = service
            .register(Some(&bob_proof), registration(&bob, "a1", "c3"))
            .await
            .unwrap_err();
        assert!(matches!(taken, RegisterError::TokenTaken), "{taken:?}");
        assert_eq!(rows.lock().unwrap().len(), 2, "nothing stored");
        let not_his = service
            .unregister(Some(&bob_proof), &token("a1"))
            .await
            .unwrap_err();
        assert!(matches!(
            not_his,
            RegisterError::Guard(GuardError::Mismatch)
        ));

        assert!(
            service
                .unregister(Some(&ada_proof), &token("a1"))
                .await
                .unwrap()
        );
        service
            .register(Some(&bob_proof), registration(&bob, "a1", "c3"))
            .await
            .unwrap();
        assert_eq!(rows.lock().unwrap()[&token("a1")].0, bob);
        // Ada registering her own tokens again is fine.
        service
            .register(Some(&ada_proof), registration(&ada, "d4", "b2"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn registering_again_moves_a_token_to_its_new_person_and_refreshes_its_time() {
        let rows = Rows::default();
        let clock = ManualClock::new(start());
        let service =
            RegistrationService::new(Arc::new(upserting_store(&rows)), Arc::new(clock.clone()));
        let ada = PersonId::from_uuid(Uuid::new_v4());
        let bob = PersonId::from_uuid(Uuid::new_v4());

        service
            .register(None, registration(&ada, "a1", "b2"))
            .await
            .unwrap();
        clock.advance(TimeDelta::minutes(10));
        service
            .register(None, registration(&bob, "a1", "c3"))
            .await
            .unwrap();

        let rows = rows.lock().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[&token("a1")],
            (bob.clone(), start() + TimeDelta::minutes(10))
        );
        assert_eq!(rows[&token("b2")], (ada, start()));
        assert_eq!(rows[&token("c3")].0, bob);
    }

    #[tokio::test]
    async fn registration_is_stamped_with_the_clock_time() {
        let mut store = MockRegistrationPort::new();
        let person = PersonId::from_uuid(Uuid::new_v4());
        let expected = registration(&person, "a1", "b2");
        store
            .expect_register()
            .with(eq(expected.clone()), eq(start()))
            .times(1)
            .returning(|_, _| Ok(()));
        store
            .expect_trim_devices()
            .returning(|_, _, _| Ok(Vec::new()));
        let service = RegistrationService::new(Arc::new(store), Arc::new(start));
        service.register(None, expected).await.unwrap();
    }

    #[tokio::test]
    async fn devices_beyond_the_limit_per_channel_are_trimmed_and_reported() {
        let mut store = MockRegistrationPort::new();
        let person = PersonId::from_uuid(Uuid::new_v4());
        store.expect_register().returning(|_, _| Ok(()));
        store
            .expect_trim_devices()
            .with(eq(person.clone()), eq(Channel::Voip), eq(3))
            .times(1)
            .returning(|_, _, _| Ok(vec![token("e5")]));
        store
            .expect_trim_devices()
            .with(eq(person.clone()), eq(Channel::Alert), eq(3))
            .times(1)
            .returning(|_, _, _| Err(StoreError::Unavailable("down".into())));
        let service = RegistrationService::new(Arc::new(store), Arc::new(start)).keeping(3);
        let registered = service
            .register(None, registration(&person, "a1", "b2"))
            .await
            .unwrap();
        assert_eq!(registered.evicted, vec![token("e5")]);
    }

    #[tokio::test]
    async fn equal_voip_and_alert_tokens_are_refused_and_nothing_is_stored() {
        let mut store = MockRegistrationPort::new();
        store.expect_register().never();
        let service =
            RegistrationService::new(Arc::new(store), Arc::new(ManualClock::new(start())));
        let person = PersonId::from_uuid(Uuid::new_v4());
        let error = service
            .register(None, registration(&person, "a1", "a1"))
            .await
            .unwrap_err();
        assert!(matches!(error, RegisterError::SameTokenForBothChannels));
    }

    #[tokio::test]
    async fn an_unreachable_store_makes_registration_unavailable() {
        let mut store = MockRegistrationPort::new();
        store
            .expect_register()
            .returning(|_, _| Err(StoreError::Unavailable("pool exhausted".into())));
        let service =
            RegistrationService::new(Arc::new(store), Arc::new(ManualClock::new(start())));
        let person = PersonId::from_uuid(Uuid::new_v4());
        let error = service
            .register(None, registration(&person, "a1", "b2"))
            .await
            .unwrap_err();
        assert!(matches!(error, RegisterError::Unavailable(_)));
    }

    #[tokio::test]
    async fn unregistering_is_idempotent() {
        let rows = Rows::default();
        let service = RegistrationService::new(
            Arc::new(upserting_store(&rows)),
            Arc::new(ManualClock::new(start())),
        );
        let person = PersonId::from_uuid(Uuid::new_v4());
        service
            .register(None, registration(&person, "a1", "b2"))
            .await
            .unwrap();

        assert!(service.unregister(None, &token("a1")).await.unwrap());
        assert!(!service.unregister(None, &token("a1")).await.unwrap());
        assert!(!service.unregister(None, &token("ff")).await.unwrap());
        let rows = rows.lock().unwrap();
        assert_eq!(rows.keys().collect::<Vec<_>>(), vec![&token("b2")]);
    }
}
