//! Run-time behaviour of the stand-in: scripted failures, latency, GOAWAY and dropped
//! connections, changed by tests while the server runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::jwt::JwtRegistry;

/// A failure the script makes the stand-in answer instead of `200`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `410 Unregistered` with the time (ms since the epoch) the token stopped being valid.
    Unregistered { timestamp_ms: i64 },
    /// `410 ExpiredToken` with its timestamp (ms since the epoch).
    ExpiredToken { timestamp_ms: i64 },
    /// `400 BadDeviceToken` (also what a sandbox token gets from production).
    BadDeviceToken,
    /// `400 DeviceTokenNotForTopic`.
    DeviceTokenNotForTopic,
    /// Any status and reason, as Apple might send it (reasons need not be known ones).
    Status { status: u16, reason: String },
}

impl Failure {
    pub(crate) fn to_rejection(&self) -> Rejection {
        match self {
            Self::Unregistered { timestamp_ms } => Rejection {
                status: 410,
                reason: Cow::Borrowed("Unregistered"),
                timestamp_ms: Some(*timestamp_ms),
            },
            Self::ExpiredToken { timestamp_ms } => Rejection {
                status: 410,
                reason: Cow::Borrowed("ExpiredToken"),
                timestamp_ms: Some(*timestamp_ms),
            },
            Self::BadDeviceToken => Rejection::new(400, "BadDeviceToken"),
            Self::DeviceTokenNotForTopic => Rejection::new(400, "DeviceTokenNotForTopic"),
            Self::Status { status, reason } => Rejection {
                status: *status,
                reason: Cow::Owned(reason.clone()),
                timestamp_ms: None,
            },
        }
    }
}

/// An error answer: status, `{"reason": ...}` and, for 410, `"timestamp"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: u16,
    pub(crate) reason: Cow<'static, str>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl Rejection {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason: Cow::Borrowed(reason),
            timestamp_ms: None,
        }
    }
}

#[derive(Default)]
struct Failures {
    by_token: HashMap<String, Failure>,
    next: Option<Failure>,
    rate: Option<(Failure, f64)>,
}

/// Behaviour that tests change while the server runs. Every method takes `&self`.
///
/// Scripted failures apply only to requests that are otherwise valid (a malformed request
/// gets its own error first), in this order: `fail_next`, then `fail_rate`, then
/// `fail_token`.
pub struct Script {
    failures: RwLock<Failures>,
    /// Requests left to fail with `Failures::next`.
    next_remaining: AtomicU64,
    /// Valid requests seen by `fail_rate`, which fails an exact share of them.
    rate_counter: AtomicU64,
    latency_us: AtomicU64,
    retry_after_secs: AtomicU64,
    goaway_after: AtomicU64,
    drop_after: AtomicU64,
    /// Streams left to refuse with `REFUSED_STREAM`.
    refuse_remaining: AtomicU64,
    jwts: Arc<JwtRegistry>,
}

/// `retry_after_secs` value meaning "send no `retry-after` header".
const NO_RETRY_AFTER: u64 = u64::MAX;

impl Script {
    pub(crate) fn new(jwts: Arc<JwtRegistry>) -> Self {
        Self {
            failures: RwLock::new(Failures::default()),
            next_remaining: AtomicU64::new(0),
            rate_counter: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(NO_RETRY_AFTER),
            goaway_after: AtomicU64::new(0),
            drop_after: AtomicU64::new(0),
            refuse_remaining: AtomicU64::new(0),
            jwts,
        }
    }

    /// Every push to `token` (hex, as in the path; compared case-insensitively) fails so.
    pub fn fail_token(&self, token: &str, failure: Failure) {
        self.write()
            .by_token
            .insert(token.to_ascii_lowercase(), failure);
    }

    /// Stops failing pushes to `token`.
    pub fn clear_token(&self, token: &str) {
        self.write().by_token.remove(&token.to_ascii_lowercase());
    }

    /// The next `n` valid requests fail with `status` and `reason`.
    pub fn fail_next(&self, n: u64, status: u16, reason: &str) {
        self.fail_next_with(
            n,
            Failure::Status {
                status,
                reason: reason.to_owned(),
            },
        );
    }

    /// The next `n` valid requests fail with `failure`.
    pub fn fail_next_with(&self, n: u64, failure: Failure) {
        self.write().next = Some(failure);
        self.next_remaining.store(n, Ordering::Release);
    }

    /// A share `fraction` (0.0..=1.0) of valid requests fail with `status` and `reason`.
    /// The share is exact and deterministic (every 1/fraction-th request), not random, so
    /// tests can count on it.
    pub fn fail_rate(&self, status: u16, reason: &str, fraction: f64) {
        let failure = Failure::Status {
            status,
            reason: reason.to_owned(),
        };
        self.write().rate = Some((failure, fraction.clamp(0.0, 1.0)));
        self.rate_counter.store(0, Ordering::Release);
    }

    /// Stops `fail_rate`.
    pub fn clear_fail_rate(&self) {
        self.write().rate = None;
    }

    /// Delays every answer by `latency` (each stream on its own, as a slow network would).
    pub fn latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.store(micros, Ordering::Release);
    }

    /// Adds `retry-after: <secs>` to scripted 429 and 503 answers (`None`: no header).
    pub fn retry_after(&self, after: Option<Duration>) {
        let secs = after.map_or(NO_RETRY_AFTER, |d| d.as_secs());
        self.retry_after_secs.store(secs, Ordering::Release);
    }

    /// Each connection starts a graceful shutdown (GOAWAY) once it has received `n`
    /// streams: streams already received are answered, new ones must use a new
    /// connection. `0` turns it off.
    pub fn goaway_after(&self, n: u64) {
        self.goaway_after.store(n, Ordering::Release);
    }

    /// Each connection answers its first `n` streams as usual; when stream `n + 1`
    /// arrives, the TCP connection is closed at once, without GOAWAY: that stream and any
    /// still in flight get no answer. `0` turns it off.
    pub fn drop_connection_after(&self, n: u64) {
        self.drop_after.store(n, Ordering::Release);
    }

    /// The next `n` streams are reset with `REFUSED_STREAM` before anything of them is
    /// read, as a server at its stream limit or going away does: nothing was processed,
    /// so a client may send them again.
    pub fn refuse_next(&self, n: u64) {
        self.refuse_remaining.store(n, Ordering::Release);
    }

    /// Every valid provider token seen so far answers `403 ExpiredProviderToken` from now
    /// on, whatever its `iat`: a client must mint a new one.
    pub fn expire_seen_tokens(&self) {
        self.jwts.revoke_seen();
    }

    /// Back to a well-behaved server: no failures, no latency, no GOAWAY or drops, and
    /// tokens expired by `expire_seen_tokens` are valid again. Records are kept.
    pub fn reset(&self) {
        *self.write() = Failures::default();
        self.next_remaining.store(0, Ordering::Release);
        self.rate_counter.store(0, Ordering::Release);
        self.latency_us.store(0, Ordering::Release);
        self.retry_after_secs
            .store(NO_RETRY_AFTER, Ordering::Release);
        self.goaway_after.store(0, Ordering::Release);
        self.drop_after.store(0, Ordering::Release);
        self.refuse_remaining.store(0, Ordering::Release);
        self.jwts.unrevoke_all();
    }

    pub(crate) fn latency_now(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub(crate) fn retry_after_now(&self) -> Option<u64> {
        match self.retry_after_secs.load(Ordering::Acquire) {
            NO_RETRY_AFTER => None,
            secs => Some(secs),
        }
    }

    pub(crate) fn goaway_after_now(&self) -> u64 {
        self.goaway_after.load(Ordering::Acquire)
    }

    /// Whether this stream is to be refused (and counts it against `refuse_next`).
    pub(crate) fn take_refusal(&self) -> bool {
        self.refuse_remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    pub(crate) fn drop_after_now(&self) -> u64 {
        self.drop_after.load(Ordering::Acquire)
    }

    /// The scripted failure for a valid push to `token` (lowercase hex), if any.
    pub(crate) fn failure_for(&self, token: &str) -> Option<Rejection> {
        let failures = self
            .failures
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(next) = &failures.next {
            let taken =
                self.next_remaining
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if taken.is_ok() {
                return Some(next.to_rejection());
            }
        }
        if let Some((failure, fraction)) = &failures.rate {
            let n = self.rate_counter.fetch_add(1, Ordering::AcqRel);
            // Fails request n when the running quota floor(n * fraction) steps up.
            let due =
                ((n + 1) as f64 * fraction).floor() as u64 > (n as f64 * fraction).floor() as u64;
            if due {
                return Some(failure.to_rejection());
            }
        }
        failures.by_token.get(token).map(Failure::to_rejection)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Failures> {
        self.failures
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("latency", &self.latency_now())
            .field("goaway_after", &self.goaway_after_now())
            .field("drop_after", &self.drop_after_now())
            .finish_non_exhaustive()
    }
}
