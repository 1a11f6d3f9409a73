//! The OAuth 2.0 access token every FCM request carries: one at a time, shared by all
//! requests, fetched from the service account's `token_uri` with an RS256 assertion
//! and replaced before it expires (never one per request).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;

use super::config::ServiceAccount;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A token is replaced this long before it expires (or at half its life, if shorter),
/// so no request ever carries one that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Why no access token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Google refused the assertion (`invalid_grant`: a deleted or disabled key, a
    /// wrong e-mail or clock): configuration, retrying does not help.
    #[error("the token endpoint refused the service account: {0}")]
    Refused(String),
    /// The endpoint could not be reached, timed out, or failed (5xx, 429).
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
}

/// An access token and when to replace it.
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) secret: Arc<SecretString>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The shared access token.
pub(crate) struct AccessTokens {
    account: ServiceAccount,
    http: reqwest::Client,
    current: RwLock<Option<AccessToken>>,
    /// Held while one is fetched: concurrent requests wait for that one.
    fetching: tokio::sync::Mutex<()>,
    minted: AtomicU64,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

impl AccessTokens {
    pub(crate) fn new(account: ServiceAccount, http: reqwest::Client) -> Self {
        Self {
            account,
            http,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            minted: AtomicU64::new(0),
        }
    }

    /// Access tokens fetched since start.
    pub(crate) fn minted(&self) -> u64 {
        self.minted.load(Ordering::Acquire)
    }

    fn cached(&self) -> Option<AccessToken> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current token; a new one when there is none, it expired, or it is due for
    /// replacement. While one request fetches a due token, the others keep using the
    /// old one (still valid), so only that request waits.
    pub(crate) async fn get(&self) -> Result<AccessToken, TokenError> {
        let now = Instant::now();
        match self.cached() {
            Some(token) if now < token.refresh_at => return Ok(token),
            Some(token) if now < token.expires_at => {
                let Ok(_fetching) = self.fetching.try_lock() else {
                    return Ok(token);
                };
                return match self.fetch().await {
                    Ok(fresh) => Ok(fresh),
                    // The old one still works: keep using it, try again next time.
                    Err(error) => {
                        tracing::warn!(%error, "FCM access token not renewed yet");
                        Ok(token)
                    }
                };
            }
            _ => {}
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched one while this one waited.
        match self.cached() {
            Some(token) if Instant::now() < token.refresh_at => Ok(token),
            _ => self.fetch().await,
        }
    }

    /// Forgets `used` (FCM said it expired), unless it was already replaced.
    pub(crate) fn invalidate(&self, used: &AccessToken) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|token| Arc::ptr_eq(&token.secret, &used.secret))
        {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // An RSA signature takes about a millisecond: not on the relay thread, which
        // every other push shares.
        let account = self.account.clone();
        let assertion = tokio::task::spawn_blocking(move || account.assertion(iat))
            .await
            .map_err(|e| TokenError::Refused(format!("cannot sign the assertion: {e}")))?
            .map_err(|e| TokenError::Refused(format!("cannot sign the assertion: {e}")))?;
        let started = Instant::now();
        let response = self
            .http
            .post(self.account.token_uri())
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(error_chain(&e)))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(TokenError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            // `{"error": ..., "error_description": ...}`: Google's words, no secret.
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .map(|v| {
                    format!(
                        "{} {}",
                        v["error"].as_str().unwrap_or_default(),
                        v["error_description"].as_str().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Err(TokenError::Refused(format!(
                "HTTP {status} {}",
                detail.trim()
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| TokenError::Unavailable(format!("unreadable answer: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let token = AccessToken {
            secret: Arc::new(SecretString::from(answer.access_token)),
            refresh_at: started + lifetime - margin,
            expires_at: started + lifetime,
        };
        self.minted.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            lifetime_secs = lifetime.as_secs(),
            "FCM access token fetched"
        );
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }
}

impl AccessToken {
    /// `Bearer <token>`, for the request header only.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.secret.expose_secret())
    }
}

/// An error and its causes on one line (reqwest's top-level message says little).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
