//! The Identity port on Webex: who holds an access token, asked of
//! `GET {WEBEX_API_URL}/v1/people/me` with `reqwest`, answers cached for a few minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use sha1::{Digest, Sha1};
use tracing::instrument;
use webex_push_domain::{
    AccessToken, Clock, IdentityError, IdentityPort, PersonId, PersonIdError, SystemClock,
};

/// Where Webex's REST API lives unless `WEBEX_API_URL` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://webexapis.com";

/// The most of `/v1/people/me` we read: a person is a few hundred bytes, so anything
/// this large is not one, and reading it all would let a broken proxy exhaust memory.
const MAX_BODY: usize = 64 * 1024;

/// How the Webex identity adapter talks to Webex and how long it trusts an answer.
#[derive(Debug, Clone)]
pub struct WebexIdentityConfig {
    /// Scheme, host and optional path prefix of the Webex API (`WEBEX_API_URL`),
    /// without `/v1`; a trailing slash is ignored.
    pub base_url: String,
    /// The whole request, connect to last byte. Registration waits on it, so a Webex
    /// outage must become a quick 503, not a hanging app.
    pub timeout: Duration,
    /// How long a token's person is remembered. A token is bound to one person for its
    /// whole life, so the only cost of a long TTL is that a revoked token keeps working
    /// for that long; the gain is one Webex call per app start instead of per request.
    pub cache_ttl: Duration,
    /// How long a token Webex rejected is remembered as rejected (zero: not at all).
    /// A rejected token never becomes valid, so this only spares Webex (and our rate
    /// limit there) from an app or a client retrying a dead token in a loop; it is
    /// kept short in case Webex rejected a good token by mistake.
    pub rejection_ttl: Duration,
    /// The most tokens remembered at once (zero: no cache). Bounds memory when many
    /// distinct tokens, valid or not, are presented.
    pub cache_capacity: usize,
}

impl Default for WebexIdentityConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(5 * 60),
            rejection_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
        }
    }
}

/// Why the adapter could not be built (a configuration mistake, found at start-up).
#[derive(Debug, thiserror::Error)]
pub enum WebexIdentityConfigError {
    #[error("WEBEX_API_URL {0:?} is not an http(s) URL with a host and without query or fragment")]
    BadBaseUrl(String),
    #[error("a Webex API duration is out of range")]
    BadDuration,
    #[error("cannot build the HTTP client for the Webex API")]
    Http(#[source] reqwest::Error),
}

/// Why an answer from Webex did not settle the question; carried as the source of
/// `Unavailable` and `Unknown`, so logs say what happened without naming the token.
#[derive(Debug, thiserror::Error)]
enum WebexAnswerError {
    #[error("Webex answered HTTP {0}")]
    Status(StatusCode),
    #[error("Webex's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("Webex's answer is not a person")]
    NotJson(#[source] serde_json::Error),
    #[error("Webex's answer does not carry a valid person id")]
    BadPersonId(#[source] PersonIdError),
}

/// The part of `/v1/people/me` we use.
#[derive(serde::Deserialize)]
struct Me {
    id: String,
}

/// The cache key: a salted SHA-1 of the token, so the cache never holds a token and a
/// dump of it cannot be checked against a list of tokens from elsewhere.
type Key = [u8; 20];

#[derive(Clone)]
enum Answer {
    Person(PersonId),
    Rejected,
}

struct Entry {
    answer: Answer,
    stored_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl Entry {
    /// A wall clock set back must not make an old answer live longer.
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        self.stored_at <= now && now < self.expires_at
    }
}

/// The Identity port backed by Webex's `/v1/people/me`.
///
/// Concurrent first requests for one token each ask Webex (no single-flight): an app
/// registers once per start, so the duplicates are rare and harmless.
pub struct WebexIdentity {
    http: reqwest::Client,
    me_url: reqwest::Url,
    cache: Mutex<HashMap<Key, Entry>>,
    salt: [u8; 16],
    cache_ttl: TimeDelta,
    rejection_ttl: TimeDelta,
    cache_capacity: usize,
    clock: Arc<dyn Clock>,
}

impl WebexIdentity {
    pub fn new(config: WebexIdentityConfig) -> Result<Self, WebexIdentityConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`WebexIdentity::new`], with the clock cache expiry is measured on (tests
    /// move it by hand).
    pub fn with_clock(
        config: WebexIdentityConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebexIdentityConfigError> {
        let me_url = me_url(&config.base_url)?;
        let delta =
            |d: Duration| TimeDelta::from_std(d).map_err(|_| WebexIdentityConfigError::BadDuration);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect would carry the token to wherever Webex (or a proxy) points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("webex-push/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebexIdentityConfigError::Http)?;
        Ok(Self {
            http,
            me_url,
            cache: Mutex::new(HashMap::new()),
            salt: rand::random(),
            cache_ttl: delta(config.cache_ttl)?,
            rejection_ttl: delta(config.rejection_ttl)?,
            cache_capacity: config.cache_capacity,
            clock,
        })
    }

    /// How many answers the cache holds now, fresh or not (for tests and metrics).
    pub fn cached_answers(&self) -> usize {
        self.lock_cache().len()
    }

    fn key(&self, token: &AccessToken) -> Key {
        let mut hasher = Sha1::new();
        hasher.update(self.salt);
        hasher.update(token.expose().as_bytes());
        hasher.finalize().into()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // The map stays consistent whatever panicked while it was held: entries are
        // inserted and removed whole.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, key: &Key) -> Option<Answer> {
        let now = self.clock.now();
        let mut cache = self.lock_cache();
        match cache.get(key) {
            Some(entry) if entry.is_fresh(now) => Some(entry.answer.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: Key, answer: Answer) {
        let ttl = match answer {
            Answer::Person(_) => self.cache_ttl,
            Answer::Rejected => self.rejection_ttl,
        };
        if self.cache_capacity == 0 || ttl <= TimeDelta::zero() {
            return;
        }
        let now = self.clock.now();
        let mut cache = self.lock_cache();
        if cache.len() >= self.cache_capacity && !cache.contains_key(&key) {
            cache.retain(|_, entry| entry.is_fresh(now));
            // Still full of fresh answers: drop the one that would expire first.
            while cache.len() >= self.cache_capacity {
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(key, _)| *key)
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Entry {
                answer,
                stored_at: now,
                expires_at: now + ttl,
            },
        );
    }

    /// One round trip to Webex, classified.
    async fn ask_webex(&self, token: &AccessToken) -> Result<PersonId, IdentityError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            // `AccessToken` is visible ASCII, so this cannot happen; were it to, the
            // token could not be sent, which is what a rejected token is.
            .map_err(|_| IdentityError::Rejected)?;
        authorization.set_sensitive(true);
        let mut response = self
            .http
            .get(self.me_url.clone())
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| IdentityError::Unavailable(error.without_url().into()))?;
        let status = response.status();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(IdentityError::Rejected);
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                return Err(unavailable(status));
            }
            s if s.is_server_error() => return Err(unavailable(status)),
            s if !s.is_success() => {
                return Err(IdentityError::Unknown(
                    WebexAnswerError::Status(status).into(),
                ));
            }
            _ => {}
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| IdentityError::Unavailable(error.without_url().into()))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(IdentityError::Unknown(WebexAnswerError::TooLarge.into()));
            }
            body.extend_from_slice(&chunk);
        }
        let me: Me = serde_json::from_slice(&body)
            .map_err(|error| IdentityError::Unknown(WebexAnswerError::NotJson(error).into()))?;
        PersonId::parse(&me.id)
            .map_err(|error| IdentityError::Unknown(WebexAnswerError::BadPersonId(error).into()))
    }
}

fn unavailable(status: StatusCode) -> IdentityError {
    IdentityError::Unavailable(WebexAnswerError::Status(status).into())
}

#[async_trait]
impl IdentityPort for WebexIdentity {
    #[instrument(name = "webex_person_for_token", skip_all, fields(cached))]
    async fn person_for_token(
        &self,
        access_token: &AccessToken,
    ) -> Result<PersonId, IdentityError> {
        let key = self.key(access_token);
        if let Some(answer) = self.cached(&key) {
            tracing::Span::current().record("cached", true);
            return match answer {
                Answer::Person(person) => {
                    tracing::debug!(person = %person, "access token holder from cache");
                    Ok(person)
                }
                Answer::Rejected => {
                    tracing::debug!("access token rejected (cached)");
                    Err(IdentityError::Rejected)
                }
            };
        }
        tracing::Span::current().record("cached", false);
        match self.ask_webex(access_token).await {
            Ok(person) => {
                tracing::debug!(person = %person, "access token holder from Webex");
                self.remember(key, Answer::Person(person.clone()));
                Ok(person)
            }
            Err(IdentityError::Rejected) => {
                tracing::debug!("Webex rejected the access token");
                self.remember(key, Answer::Rejected);
                Err(IdentityError::Rejected)
            }
            // Not cached: Webex may be back on the next request.
            Err(error) => {
                tracing::warn!(error = %error, cause = %source_of(&error), "cannot ask Webex who holds an access token");
                Err(error)
            }
        }
    }
}

fn source_of(error: &IdentityError) -> String {
    std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// `{base}/v1/people/me`, after checking `base` is a plain http(s) URL.
fn me_url(base: &str) -> Result<reqwest::Url, WebexIdentityConfigError> {
    let bad = || WebexIdentityConfigError::BadBaseUrl(base.to_owned());
    let url = reqwest::Url::parse(base.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad());
    }
    let prefix = url.as_str().trim_end_matches('/');
    reqwest::Url::parse(&format!("{prefix}/v1/people/me")).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_the_people_me_url() {
        let cases = [
            (
                "https://webexapis.com",
                "https://webexapis.com/v1/people/me",
            ),
            (
                "https://webexapis.com/",
                "https://webexapis.com/v1/people/me",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/v1/people/me",
            ),
            (
                "https://proxy.example/webex/",
                "https://proxy.example/webex/v1/people/me",
            ),
        ];
        for (base, expected) in cases {
            assert_eq!(me_url(base).unwrap().as_str(), expected, "{base}");
        }
        for bad in [
            "",
            "webexapis.com",
            "ftp://webexapis.com",
            "https://webexapis.com/?x=1",
            "https://user:pw@webexapis.com",
        ] {
            assert!(me_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cache_key_is_not_the_token() {
        let identity = WebexIdentity::new(WebexIdentityConfig::default()).unwrap();
        let token = AccessToken::parse("secret-token").unwrap();
        let key = identity.key(&token);
        assert_eq!(key, identity.key(&token));
        assert_ne!(
            key,
            identity.key(&AccessToken::parse("other-token").unwrap())
        );
        let unsalted: Key = Sha1::digest(b"secret-token").into();
        assert_ne!(key, unsalted);
    }
}
