//! Proof of identity for registrations: when it is on, only the holder of a Webex access
//! token for a person may bind (or unbind) that person's phones.

use std::sync::Arc;

use tracing::instrument;

use crate::ports::{BoxError, IdentityError, IdentityPort};
use crate::types::{AccessToken, PersonId};

/// Why a registration change was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The mode is on and no access token came with the request: unauthenticated.
    #[error("an access token is required")]
    Missing,
    /// Webex refused the access token: unauthenticated.
    #[error("the access token was rejected")]
    Rejected,
    /// The token is valid but belongs to someone else than the person named in the
    /// request, or than the device token's owner: authenticated, but not allowed.
    #[error("the access token belongs to another person")]
    Mismatch,
    /// Webex could not be asked; nothing was decided; the caller may try again later.
    #[error("the identity provider is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a state nobody planned for.
    #[error("the identity check failed")]
    Unknown(#[source] BoxError),
}

impl From<IdentityError> for GuardError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Rejected => GuardError::Rejected,
            IdentityError::Unavailable(source) => GuardError::Unavailable(source),
            IdentityError::Unknown(source) => GuardError::Unknown(source),
        }
    }
}

/// Decides whether a request may change a person's registrations.
///
/// Off (no identity port) it allows everything, as the original relay did, so existing
/// apps keep working; on (`REGISTER_AUTH=webex`) it asks the identity port who holds
/// the request's access token and compares people by UUID, so any spelling of a Webex
/// person id matches.
#[derive(Clone)]
pub struct RegistrationGuard {
    identity: Option<Arc<dyn IdentityPort>>,
}

impl RegistrationGuard {
    /// `None` turns the check off.
    pub fn new(identity: Option<Arc<dyn IdentityPort>>) -> Self {
        Self { identity }
    }

    /// A guard that allows everything.
    pub fn off() -> Self {
        Self { identity: None }
    }

    /// Whether requests must prove who they are.
    pub fn is_enabled(&self) -> bool {
        self.identity.is_some()
    }

    /// Checks that the holder of `token` is `person` before a registration binds
    /// devices to that person.
    #[instrument(name = "ensure_may_register", skip_all, fields(person = %person))]
    pub async fn ensure_may_register(
        &self,
        token: Option<&AccessToken>,
        person: &PersonId,
    ) -> Result<(), GuardError> {
        let Some(holder) = self.holder(token).await? else {
            return Ok(());
        };
        if &holder != person {
            tracing::info!(holder = %holder, "refused: the access token belongs to another person");
            return Err(GuardError::Mismatch);
        }
        Ok(())
    }

    /// Checks that the holder of `token` owns the device token an unregistration
    /// removes. `owner` is `None` when nobody has that device token: removing it is a
    /// no-op, allowed to anyone authenticated so the call stays idempotent.
    #[instrument(
        name = "ensure_may_unregister",
        skip_all,
        fields(owner = owner.map(tracing::field::display))
    )]
    pub async fn ensure_may_unregister(
        &self,
        token: Option<&AccessToken>,
        owner: Option<&PersonId>,
    ) -> Result<(), GuardError> {
        let Some(holder) = self.holder(token).await? else {
            return Ok(());
        };
        match owner {
            Some(owner) if owner != &holder => {
                tracing::info!(holder = %holder, "refused: the device belongs to another person");
                Err(GuardError::Mismatch)
            }
            _ => Ok(()),
        }
    }

    /// The person holding `token`, or `None` when the check is off.
    async fn holder(&self, token: Option<&AccessToken>) -> Result<Option<PersonId>, GuardError> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let Some(token) = token else {
            tracing::info!("refused: no access token");
            return Err(GuardError::Missing);
        };
        match identity.person_for_token(token).await {
            Ok(person) => Ok(Some(person)),
            Err(IdentityError::Rejected) => {
                tracing::info!("refused: Webex rejected the access token");
                Err(GuardError::Rejected)
            }
            Err(error) => {
                tracing::warn!(error = %error, "identity check failed");
                Err(error.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockIdentityPort;
    use base64::Engine as _;

    const ADA: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const BOB: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

    fn token() -> AccessToken {
        AccessToken::parse("ada-access-token_PF84_org").unwrap()
    }

    fn person(uuid: &str) -> PersonId {
        PersonId::parse(uuid).unwrap()
    }

    /// Ada as Webex spells her in `/v1/people/me`: base64 with a regional cluster.
    fn ada_as_webex_says() -> PersonId {
        let id = base64::engine::general_purpose::STANDARD
            .encode(format!("ciscospark://urn:TEAM:eu-central-1_k/PEOPLE/{ADA}"));
        PersonId::parse(&id).unwrap()
    }

    fn guard_answering(
        answer: impl Fn() -> Result<PersonId, IdentityError> + Send + Sync + 'static,
        times: usize,
    ) -> RegistrationGuard {
        let mut identity = MockIdentityPort::new();
        identity
            .expect_person_for_token()
            .withf(|t| t.expose() == "ada-access-token_PF84_org")
            .times(times)
            .returning(move |_| answer());
        RegistrationGuard::new(Some(Arc::new(identity)))
    }

    #[tokio::test]
    async fn the_holder_may_register_whatever_spelling_of_their_id_the_app_sends() {
        let guard = guard_answering(|| Ok(ada_as_webex_says()), 2);
        assert!(guard.is_enabled());
        guard
            .ensure_may_register(Some(&token()), &person(ADA))
            .await
            .unwrap();
        let upper = person(&ADA.to_uppercase());
        guard
            .ensure_may_register(Some(&token()), &upper)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn registering_someone_else_is_forbidden() {
        let guard = guard_answering(|| Ok(person(ADA)), 1);
        let refused = guard
            .ensure_may_register(Some(&token()), &person(BOB))
            .await;
        assert!(matches!(refused, Err(GuardError::Mismatch)), "{refused:?}");
    }

    #[tokio::test]
    async fn registering_without_a_token_is_refused_without_asking_webex() {
        let guard = guard_answering(|| Ok(person(ADA)), 0);
        let refused = guard.ensure_may_register(None, &person(ADA)).await;
        assert!(matches!(refused, Err(GuardError::Missing)), "{refused:?}");
    }

    #[tokio::test]
    async fn a_token_webex_rejects_is_refused() {
        let guard = guard_answering(|| Err(IdentityError::Rejected), 1);
        let refused = guard
            .ensure_may_register(Some(&token()), &person(ADA))
            .await;
        assert!(matches!(refused, Err(GuardError::Rejected)), "{refused:?}");
    }

    #[tokio::test]
    async fn webex_being_down_is_unavailable_not_a_refusal() {
        let guard = guard_answering(|| Err(IdentityError::Unavailable("timed out".into())), 1);
        let refused = guard
            .ensure_may_register(Some(&token()), &person(ADA))
            .await;
        assert!(
            matches!(refused, Err(GuardError::Unavailable(_))),
            "{refused:?}"
        );
        let guard = guard_answering(|| Err(IdentityError::Unknown("no id".into())), 1);
        let refused = guard.ensure_may_unregister(Some(&token()), None).await;
        assert!(
            matches!(refused, Err(GuardError::Unknown(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn with_the_mode_off_everything_is_allowed() {
        for guard in [RegistrationGuard::off(), RegistrationGuard::new(None)] {
            assert!(!guard.is_enabled());
            guard.ensure_may_register(None, &person(BOB)).await.unwrap();
            guard
                .ensure_may_register(Some(&token()), &person(BOB))
                .await
                .unwrap();
            guard
                .ensure_may_unregister(None, Some(&person(BOB)))
                .await
                .unwrap();
            guard.ensure_may_unregister(None, None).await.unwrap();
        }
    }

    #[tokio::test]
    async fn only_the_owner_may_unregister_a_device() {
        let guard = guard_answering(|| Ok(ada_as_webex_says()), 2);
        guard
            .ensure_may_unregister(Some(&token()), Some(&person(ADA)))
            .await
            .unwrap();
        let refused = guard
            .ensure_may_unregister(Some(&token()), Some(&person(BOB)))
            .await;
        assert!(matches!(refused, Err(GuardError::Mismatch)), "{refused:?}");
    }

    #[tokio::test]
    async fn unregistering_an_unknown_device_needs_only_a_valid_token() {
        let guard = guard_answering(|| Ok(person(ADA)), 1);
        guard
            .ensure_may_unregister(Some(&token()), None)
            .await
            .unwrap();

        let guard = guard_answering(|| Err(IdentityError::Rejected), 1);
        let refused = guard.ensure_may_unregister(Some(&token()), None).await;
        assert!(matches!(refused, Err(GuardError::Rejected)), "{refused:?}");

        let guard = guard_answering(|| Ok(person(ADA)), 0);
        let refused = guard.ensure_may_unregister(None, None).await;
        assert!(matches!(refused, Err(GuardError::Missing)), "{refused:?}");
    }
}
