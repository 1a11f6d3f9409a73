//! Run-time behaviour of the stand-in: answers scripted by token prefix, latency,
//! `Retry-After`, revoked access tokens; changed by tests while the server runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::lock;

/// An error FCM answers instead of `200`, as its v1 API spells it
/// (`{"error": {"code", "message", "status", "details": [FcmError]}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `404 NOT_FOUND`, `UNREGISTERED`: the app was uninstalled or the token expired.
    Unregistered,
    /// `400 INVALID_ARGUMENT` naming `message.token`: not a valid registration token.
    InvalidToken,
    /// `403 PERMISSION_DENIED`, `SENDER_ID_MISMATCH`: the token is another project's.
    SenderIdMismatch,
    /// `429 RESOURCE_EXHAUSTED`, `QUOTA_EXCEEDED`.
    QuotaExceeded,
    /// `503 UNAVAILABLE`.
    Unavailable,
    /// `500 INTERNAL`.
    Internal,
    /// `401 UNAUTHENTICATED`, `THIRD_PARTY_AUTH_ERROR`: the APNs credentials uploaded
    /// to Firebase (for iOS targets) were refused.
    ThirdPartyAuthError,
    /// Anything else: an HTTP status, Google's status name and an optional FCM error code.
    Status {
        status: u16,
        status_text: String,
        error_code: Option<String>,
    },
}

/// One error answer, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: u16,
    pub(crate) status_text: String,
    pub(crate) message: String,
    pub(crate) error_code: Option<String>,
    /// A `google.rpc.BadRequest` field violation: (field, description).
    pub(crate) field: Option<Box<(String, String)>>,
}

impl Rejection {
    pub(crate) fn new(status: u16, status_text: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            status_text: status_text.to_owned(),
            message: message.into(),
            error_code: None,
            field: None,
        }
    }

    pub(crate) fn code(mut self, code: &str) -> Self {
        self.error_code = Some(code.to_owned());
        self
    }

    pub(crate) fn field(mut self, field: &str, description: &str) -> Self {
        self.field = Some(Box::new((field.to_owned(), description.to_owned())));
        self
    }

    /// `400 INVALID_ARGUMENT` about the message itself (not the token).
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(400, "INVALID_ARGUMENT", message.clone())
            .code("INVALID_ARGUMENT")
            .field(field, &message)
    }
}

impl Failure {
    pub(crate) fn to_rejection(&self) -> Rejection {
        match self {
            Failure::Unregistered => {
                Rejection::new(404, "NOT_FOUND", "Requested entity was not found.")
                    .code("UNREGISTERED")
            }
            Failure::InvalidToken => Rejection::new(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            )
            .code("INVALID_ARGUMENT")
            .field("message.token", "Invalid registration token"),
            Failure::SenderIdMismatch => {
                Rejection::new(403, "PERMISSION_DENIED", "SenderId mismatch")
                    .code("SENDER_ID_MISMATCH")
            }
            Failure::QuotaExceeded => Rejection::new(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send messages'",
            )
            .code("QUOTA_EXCEEDED"),
            Failure::Unavailable => {
                Rejection::new(503, "UNAVAILABLE", "The service is currently unavailable.")
                    .code("UNAVAILABLE")
            }
            Failure::Internal => {
                Rejection::new(500, "INTERNAL", "Internal error encountered.").code("INTERNAL")
            }
            Failure::ThirdPartyAuthError => Rejection::new(
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
            )
            .code("THIRD_PARTY_AUTH_ERROR"),
            Failure::Status {
                status,
                status_text,
                error_code,
            } => Rejection {
                status: *status,
                status_text: status_text.clone(),
                message: format!("scripted {status} {status_text}"),
                error_code: error_code.clone(),
                field: None,
            },
        }
    }
}

struct Rule {
    prefix: String,
    failure: Failure,
    /// `None`: every time; `Some(n)`: the next `n` messages, then the rule is gone.
    remaining: Option<u64>,
}

/// `retry_after_secs` value meaning "send no `Retry-After` header".
const NO_RETRY_AFTER: u64 = u64::MAX;

/// Behaviour tests change while the server runs. Every method takes `&self`.
///
/// A rule applies only to messages that are otherwise valid (a malformed message or a
/// bad access token gets its own error first); the first rule whose prefix the token
/// starts with answers.
pub struct Script {
    rules: Mutex<Vec<Rule>>,
    latency_us: AtomicU64,
    retry_after_secs: AtomicU64,
    /// Access tokens whose serial (1 for the first issued) is at most this are refused.
    pub(crate) revoked_before: AtomicU64,
    refuse_assertions: AtomicBool,
}

impl Script {
    pub(crate) fn new() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            latency_us: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(NO_RETRY_AFTER),
            revoked_before: AtomicU64::new(0),
            refuse_assertions: AtomicBool::new(false),
        }
    }

    /// Every message to a token starting with `prefix` fails with `failure`.
    pub fn fail_prefix(&self, prefix: &str, failure: Failure) {
        self.add(prefix, failure, None);
    }

    /// The next `times` messages to a token starting with `prefix` fail with `failure`.
    pub fn fail_prefix_times(&self, prefix: &str, failure: Failure, times: u64) {
        self.add(prefix, failure, Some(times));
    }

    fn add(&self, prefix: &str, failure: Failure, remaining: Option<u64>) {
        lock(&self.rules).push(Rule {
            prefix: prefix.to_owned(),
            failure,
            remaining,
        });
    }

    /// Forgets every rule.
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// Every answer waits this long first (`None`: none).
    pub fn set_latency(&self, latency: Option<Duration>) {
        let us = latency.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.latency_us.store(us, Ordering::Release);
    }

    /// `429` and `503` answers carry `Retry-After: secs` (`None`: no header).
    pub fn set_retry_after(&self, secs: Option<u64>) {
        self.retry_after_secs
            .store(secs.unwrap_or(NO_RETRY_AFTER), Ordering::Release);
    }

    /// Every access token issued so far is refused (`401 UNAUTHENTICATED`) from now on,
    /// as Google does with an expired one: the client must fetch a new one.
    pub fn revoke_access_tokens(&self, issued_so_far: u64) {
        self.revoked_before.store(issued_so_far, Ordering::Release);
    }

    /// The token endpoint refuses every assertion (`400 invalid_grant`), as Google does
    /// for a deleted or disabled service-account key.
    pub fn refuse_assertions(&self, refuse: bool) {
        self.refuse_assertions.store(refuse, Ordering::Release);
    }

    pub(crate) fn refusing_assertions(&self) -> bool {
        self.refuse_assertions.load(Ordering::Acquire)
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

    /// The scripted answer for a message to `token`, using up one of a counted rule.
    pub(crate) fn failure_for(&self, token: &str) -> Option<Rejection> {
        let mut rules = lock(&self.rules);
        let index = rules
            .iter()
            .position(|rule| token.starts_with(&rule.prefix))?;
        let rule = &mut rules[index];
        let rejection = rule.failure.to_rejection();
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                rules.remove(index);
            }
        }
        Some(rejection)
    }
}
