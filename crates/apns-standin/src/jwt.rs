//! Provider-token (ES256 JWT) verification, with a registry that verifies each distinct
//! token once so that load runs pay the signature check only when the token changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

/// What a token is worth once its signature and identity have been checked; the age is
/// checked per request because it changes with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Signed by the configured key, right `kid` and `iss`; issued at `iat` (unix seconds).
    Valid { iat: i64 },
    /// Unparsable, wrong algorithm, wrong `kid`/`iss`, or a bad signature.
    Invalid,
    /// Valid, but declared expired by the script (`Script::expire_seen_tokens`).
    Revoked { iat: i64 },
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
}

/// Checks tokens against one key, key id and team id.
pub(crate) struct JwtVerifier {
    key: VerifyingKey,
    key_id: String,
    team_id: String,
}

impl JwtVerifier {
    pub(crate) fn new(public_key_pem: &str, key_id: &str, team_id: &str) -> anyhow::Result<Self> {
        let key = VerifyingKey::from_public_key_pem(public_key_pem).map_err(|e| {
            anyhow::anyhow!("public key is not a P-256 SubjectPublicKeyInfo PEM: {e}")
        })?;
        Ok(Self {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
        })
    }

    /// Verifies signature, `alg`, `kid` and `iss`; returns the verdict (never the age).
    pub(crate) fn verify(&self, jwt: &str) -> Verdict {
        self.try_verify(jwt)
            .map_or(Verdict::Invalid, |iat| Verdict::Valid { iat })
    }

    fn try_verify(&self, jwt: &str) -> Option<i64> {
        let mut parts = jwt.split('.');
        let (header_b64, claims_b64, sig_b64) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Header =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).ok()?).ok()?;
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).ok()?).ok()?;
        if header.alg != "ES256" || header.kid != self.key_id || claims.iss != self.team_id {
            return None;
        }
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig_b64).ok()?).ok()?;
        let signed = &jwt[..header_b64.len() + 1 + claims_b64.len()];
        self.key.verify(signed.as_bytes(), &signature).ok()?;
        Some(claims.iat)
    }
}

/// Every distinct token seen, in order of first use, with its verdict.
pub(crate) struct JwtRegistry {
    verifier: JwtVerifier,
    seen: Mutex<Seen>,
    /// Bumped whenever verdicts change, so per-connection caches know to look again.
    generation: AtomicU64,
}

#[derive(Default)]
struct Seen {
    verdicts: HashMap<String, Verdict>,
    order: Vec<String>,
}

impl JwtRegistry {
    pub(crate) fn new(verifier: JwtVerifier) -> Self {
        Self {
            verifier,
            seen: Mutex::new(Seen::default()),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The verdict for `jwt`, verifying it only the first time it is seen.
    pub(crate) fn verdict(&self, jwt: &str) -> Verdict {
        let mut seen = lock(&self.seen);
        if let Some(verdict) = seen.verdicts.get(jwt) {
            return *verdict;
        }
        let verdict = self.verifier.verify(jwt);
        seen.verdicts.insert(jwt.to_owned(), verdict);
        seen.order.push(jwt.to_owned());
        verdict
    }

    pub(crate) fn distinct(&self) -> Vec<String> {
        lock(&self.seen).order.clone()
    }

    /// Makes every valid token seen so far answer `ExpiredProviderToken` from now on.
    pub(crate) fn revoke_seen(&self) {
        let mut seen = lock(&self.seen);
        for verdict in seen.verdicts.values_mut() {
            if let Verdict::Valid { iat } = *verdict {
                *verdict = Verdict::Revoked { iat };
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes `revoke_seen` (used by `Script::reset`).
    pub(crate) fn unrevoke_all(&self) {
        let mut seen = lock(&self.seen);
        for verdict in seen.verdicts.values_mut() {
            if let Verdict::Revoked { iat } = *verdict {
                *verdict = Verdict::Valid { iat };
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere must not take the stand-in down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
