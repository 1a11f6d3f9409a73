//! The provider token: one ES256 JWT shared by every request and connection, minted
//! again every 50 minutes, and once more when APNs says it expired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, Header};

use super::config::{ApnsConfigError, ApnsKey, KeyId, TeamId};

/// The clock the token's `iat` comes from; injectable so tests can age a token.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Apple wants a token no older than 60 minutes; clients refresh at 50.
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);
/// Apple answers `TooManyProviderTokenUpdates` to tokens minted more often than this.
pub(crate) const MIN_REMINT_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// One minted token, ready to go into the `authorization` header.
pub(crate) struct ProviderToken {
    /// `bearer <jwt>`.
    pub(crate) header: HeaderValue,
    issued_at: SystemTime,
    /// Tells tokens apart, so many requests rejected with the same token re-mint once.
    generation: u64,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// Mints and caches the provider token.
pub(crate) struct ProviderTokens {
    key: ApnsKey,
    key_id: KeyId,
    team_id: TeamId,
    clock: Clock,
    current: RwLock<Arc<ProviderToken>>,
    minted: AtomicU64,
    /// When the last re-mint forced by `ExpiredProviderToken` happened.
    last_forced: RwLock<Option<SystemTime>>,
}

impl ProviderTokens {
    /// Mints the first token at once, so a key that cannot sign fails at start-up.
    pub(crate) fn new(
        key: ApnsKey,
        key_id: KeyId,
        team_id: TeamId,
        clock: Clock,
    ) -> Result<Self, ApnsConfigError> {
        let first = mint(&key, &key_id, &team_id, clock(), 1)?;
        Ok(Self {
            key,
            key_id,
            team_id,
            clock,
            current: RwLock::new(Arc::new(first)),
            minted: AtomicU64::new(1),
            last_forced: RwLock::new(None),
        })
    }

    pub(crate) fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// The token to send now, minting a new one when the current one is 50 minutes old.
    pub(crate) fn current(&self) -> Arc<ProviderToken> {
        let now = (self.clock)();
        let token = self.read();
        if age(&token, now) < REFRESH_AFTER {
            return token;
        }
        self.replace_if(&token, now)
    }

    /// APNs said `rejected` expired. Mints a new token unless another request already
    /// did, or a forced re-mint happened within the last 20 minutes (Apple would answer
    /// `TooManyProviderTokenUpdates`). Returns the token to retry with, or `None` when
    /// retrying cannot help.
    pub(crate) fn expired(&self, rejected: &ProviderToken) -> Option<Arc<ProviderToken>> {
        let now = (self.clock)();
        let token = self.read();
        if token.generation != rejected.generation {
            return Some(token);
        }
        {
            let mut last = match self.last_forced.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(at) = *last {
                if now.duration_since(at).unwrap_or_default() < MIN_REMINT_INTERVAL {
                    return None;
                }
            }
            *last = Some(now);
        }
        let fresh = self.replace_if(&token, now);
        (fresh.generation != rejected.generation).then_some(fresh)
    }

    fn read(&self) -> Arc<ProviderToken> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces `seen` by a new token unless another caller replaced it first.
    fn replace_if(&self, seen: &ProviderToken, now: SystemTime) -> Arc<ProviderToken> {
        let mut current = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.generation != seen.generation {
            return Arc::clone(&current);
        }
        match mint(
            &self.key,
            &self.key_id,
            &self.team_id,
            now,
            seen.generation + 1,
        ) {
            Ok(token) => {
                self.minted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    generation = token.generation,
                    "minted a new APNs provider token"
                );
                *current = Arc::new(token);
            }
            // The key signed at start-up, so this cannot happen short of a bug; the old
            // token is kept and APNs' answer will say what is wrong.
            Err(error) => tracing::error!(%error, "cannot mint an APNs provider token"),
        }
        Arc::clone(&current)
    }
}

fn age(token: &ProviderToken, now: SystemTime) -> Duration {
    // A clock that went backwards makes the token look new: Apple judges `iat` by its
    // own clock, and a refresh would not help.
    now.duration_since(token.issued_at).unwrap_or_default()
}

fn mint(
    key: &ApnsKey,
    key_id: &KeyId,
    team_id: &TeamId,
    now: SystemTime,
    generation: u64,
) -> Result<ProviderToken, ApnsConfigError> {
    let mut header = Header::new(Algorithm::ES256);
    // Apple's header is exactly {"alg","kid"}.
    header.typ = None;
    header.kid = Some(key_id.as_str().to_owned());
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims {
        iss: team_id.as_str(),
        iat,
    };
    let jwt = jsonwebtoken::encode(&header, &claims, key.encoding_key())
        .map_err(ApnsConfigError::Signing)?;
    // Built once per token and shared (a `HeaderValue` clone is a reference count), so
    // no request formats or copies it. Not marked sensitive, though that changes
    // nothing on the wire: `h2` never puts `authorization` in the HPACK dynamic table,
    // so the ~200-byte token travels Huffman-coded with every request (as with every
    // hyper-based client). It never reaches our logs: nothing formats this header.
    let header = HeaderValue::try_from(format!("bearer {jwt}")).map_err(|_| {
        ApnsConfigError::Signing(jsonwebtoken::errors::ErrorKind::InvalidToken.into())
    })?;
    Ok(ProviderToken {
        header,
        issued_at: now,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use p256::pkcs8::EncodePrivateKey as _;
    use p256::pkcs8::der::pem::LineEnding;

    use super::*;

    fn tokens(offset: Arc<AtomicI64>) -> ProviderTokens {
        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let clock: Clock = Arc::new(move || {
            UNIX_EPOCH
                + Duration::from_secs(1_700_000_000)
                + Duration::from_secs(offset.load(Ordering::SeqCst) as u64)
        });
        ProviderTokens::new(
            ApnsKey::from_pem(&pem).unwrap(),
            KeyId::parse("KEYID12345").unwrap(),
            TeamId::parse("TEAMID1234").unwrap(),
            clock,
        )
        .unwrap()
    }

    #[test]
    fn one_token_until_fifty_minutes_then_one_new_one() {
        let offset = Arc::new(AtomicI64::new(0));
        let tokens = tokens(offset.clone());
        let first = tokens.current();
        offset.store(49 * 60, Ordering::SeqCst);
        assert_eq!(tokens.current().header, first.header);
        offset.store(50 * 60, Ordering::SeqCst);
        let second = tokens.current();
        assert_ne!(second.header, first.header);
        assert_eq!(tokens.current().header, second.header);
        assert_eq!(tokens.minted(), 2);
    }

    #[test]
    fn expired_remints_once_per_rejected_token_and_not_again_within_twenty_minutes() {
        let offset = Arc::new(AtomicI64::new(0));
        let tokens = tokens(offset.clone());
        let first = tokens.current();
        offset.store(1, Ordering::SeqCst);
        let second = tokens.expired(&first).unwrap();
        assert_eq!(tokens.minted(), 2);
        // Another request rejected with the first token gets the second, no new mint.
        assert_eq!(tokens.expired(&first).unwrap().header, second.header);
        // The second rejected too, soon after: a re-mint would be refused by Apple.
        offset.store(60, Ordering::SeqCst);
        assert!(tokens.expired(&second).is_none());
        offset.store(21 * 60, Ordering::SeqCst);
        assert!(tokens.expired(&second).is_some());
        assert_eq!(tokens.minted(), 3);
    }
}
