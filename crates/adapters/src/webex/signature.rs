//! Webex webhook signatures: `X-Spark-Signature` is the lowercase hex HMAC-SHA1 of the
//! raw request body, keyed with the secret given when the webhook was created.

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha1::Sha1;
use webex_push_domain::PersonId;

use super::directory::webhook_secret;

/// The header Webex puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Spark-Signature";

type HmacSha1 = Hmac<Sha1>;

/// Why a webhook's signature was not accepted. None of the variants carries the
/// header's value or a secret, so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No secret to check against: the caller must not ask (an unsigned setup accepts
    /// without checking); refusing here keeps a wiring mistake from accepting forgeries.
    #[error("no webhook secret is configured to check the signature against")]
    NoSecretConfigured,
    #[error("the X-Spark-Signature header is missing")]
    Missing,
    #[error("the X-Spark-Signature header is not a hex-encoded HMAC-SHA1 (40 hex digits)")]
    Malformed,
    #[error("the X-Spark-Signature header does not match the body under any configured secret")]
    Mismatch,
    /// Signed with the secret of a webhook the server made for one person, but about
    /// someone else: that webhook never reports such an event.
    #[error("the event names someone other than the owner of the webhook it was signed for")]
    NotTheOwner,
}

/// Who a delivery's signature says it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A webhook made elsewhere, with a secret of `WEBHOOK_SECRET`.
    Shared,
    /// A webhook the server made for this person (its secret derived for them): the
    /// event may concern only them.
    Owner(PersonId),
}

/// Checks a delivery's signature: under one of `secrets` (webhooks made elsewhere), or
/// under the secret the server derives from one of them for the webhook the body says
/// it comes from (its `createdBy` and `resource`; see [`webhook_secret`]).
pub fn verify_delivery(
    secrets: &[SecretString],
    body: &[u8],
    header: Option<&str>,
) -> Result<Signer, SignatureError> {
    match verify_signature(secrets, body, header) {
        Ok(()) => return Ok(Signer::Shared),
        Err(SignatureError::Mismatch) => {}
        Err(error) => return Err(error),
    }
    #[derive(serde::Deserialize)]
    struct Origin<'a> {
        #[serde(rename = "createdBy", borrow)]
        created_by: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        resource: Option<std::borrow::Cow<'a, str>>,
    }
    let origin: Origin<'_> = serde_json::from_slice(body).map_err(|_| SignatureError::Mismatch)?;
    let (Some(owner), Some(resource)) = (origin.created_by, origin.resource) else {
        return Err(SignatureError::Mismatch);
    };
    let owner = PersonId::parse(&owner).map_err(|_| SignatureError::Mismatch)?;
    let derived: Vec<SecretString> = secrets
        .iter()
        .map(|key| {
            SecretString::from(
                webhook_secret(key.expose_secret(), &owner, &resource)
                    .expose()
                    .to_owned(),
            )
        })
        .collect();
    verify_signature(&derived, body, header)?;
    Ok(Signer::Owner(owner))
}

/// Checks that `header` is the HMAC-SHA1 of `body` under one of `secrets` (several while
/// a secret is being rotated). `body` must be the raw bytes as received: re-serialised
/// JSON would not match.
///
/// The comparison is constant-time (`hmac`'s `verify_slice`); the header may use either
/// letter case.
pub fn verify_signature(
    secrets: &[SecretString],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let expected = hex::decode(header).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 20 {
        return Err(SignatureError::Malformed);
    }
    let matched = secrets.iter().any(|secret| {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail here; a failure
        // would only mean "no match".
        HmacSha1::new_from_slice(secret.expose_secret().as_bytes())
            .map(|mut mac| {
                mac.update(body);
                mac.verify_slice(&expected).is_ok()
            })
            .unwrap_or(false)
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The signature Webex would send for `body` under `secret`: for tests and for tools
/// that replay webhooks.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // Same reasoning as above: any key length is valid for HMAC.
    match HmacSha1::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    const BODY: &[u8] = br#"{"resource":"messages","event":"created"}"#;

    #[test]
    fn known_vector_from_rfc_2202_matches() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn a_signature_under_the_secret_is_accepted_in_either_case() {
        let signature = sign("s3cret", BODY);
        assert_eq!(signature, signature.to_lowercase());
        verify_signature(&secrets(&["s3cret"]), BODY, Some(&signature)).unwrap();
        verify_signature(&secrets(&["s3cret"]), BODY, Some(&signature.to_uppercase())).unwrap();
    }

    #[test]
    fn any_of_the_rotated_secrets_is_accepted() {
        let signature = sign("new", BODY);
        verify_signature(&secrets(&["old", "new"]), BODY, Some(&signature)).unwrap();
    }

    #[test]
    fn forged_missing_and_malformed_signatures_are_refused() {
        let all = secrets(&["s3cret"]);
        assert_eq!(
            verify_signature(&all, BODY, Some(&sign("other", BODY))),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered.push(b' ');
        assert_eq!(
            verify_signature(&all, &tampered, Some(&sign("s3cret", BODY))),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&all, BODY, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&all, BODY, Some("  ")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&all, BODY, Some("xyz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(&all, BODY, Some("abcd")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_delivery_signed_with_its_own_webhooks_derived_secret_names_its_owner() {
        let ada = PersonId::parse("6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d").unwrap();
        let bob = PersonId::parse("0f1e2d3c-4b5a-4968-8776-655443322110").unwrap();
        let body = format!(
            r#"{{"resource":"messages","createdBy":"{}"}}"#,
            ada.original()
        );
        let keys = secrets(&["old", "current"]);
        for key in ["old", "current"] {
            let own = webhook_secret(key, &ada, "messages");
            assert_eq!(
                verify_delivery(
                    &keys,
                    body.as_bytes(),
                    Some(&sign(own.expose(), body.as_bytes()))
                ),
                Ok(Signer::Owner(ada.clone()))
            );
        }
        // Another webhook's secret (Bob's, or Ada's of another resource) does not do.
        for other in [
            webhook_secret("current", &bob, "messages"),
            webhook_secret("current", &ada, "callMemberships"),
        ] {
            assert_eq!(
                verify_delivery(
                    &keys,
                    body.as_bytes(),
                    Some(&sign(other.expose(), body.as_bytes()))
                ),
                Err(SignatureError::Mismatch)
            );
        }
        assert_eq!(
            verify_delivery(
                &keys,
                body.as_bytes(),
                Some(&sign("current", body.as_bytes()))
            ),
            Ok(Signer::Shared)
        );
    }

    #[test]
    fn without_secrets_nothing_is_accepted() {
        assert_eq!(
            verify_signature(&[], BODY, Some(&sign("", BODY))),
            Err(SignatureError::NoSecretConfigured)
        );
    }
}
