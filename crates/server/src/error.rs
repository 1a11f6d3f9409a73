//! The one HTTP error type: every failure becomes an `application/problem+json` body
//! (RFC 9457) with a stable `type`, and a 5xx body never says anything internal.

use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use webex_push_adapters::webex::{SignatureError, WebhookError};
use webex_push_domain::{BoxError, GuardError, RegisterError, StoreError};

/// Where problem types are documented; `type` is this plus `#<slug>`.
pub const PROBLEM_BASE: &str = "https://github.com/webex-push/webex-push/blob/main/docs/api.md";

pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a client should wait after a 503 for a passing fault.
const RETRY_SOON: Duration = Duration::from_secs(5);
/// After a 503 because the push queue is full: workers drain it in seconds.
const RETRY_QUEUE: Duration = Duration::from_secs(2);
/// After a 503 for a configuration problem: an operator has to act first.
const RETRY_LATER: Duration = Duration::from_secs(60);

/// One field that failed validation, and which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as the client sent it (`voipToken`, `personId`, ...).
    pub field: String,
    /// A stable, machine-readable rule name: `required`, `string`, `hex`, ...
    pub rule: &'static str,
    /// What is wrong, for people.
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule,
            detail: detail.into(),
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the webhook body cannot be read: {0}")]
    MalformedWebhook(#[source] WebhookError),
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request was not received in time")]
    RequestTimeout,
    /// Refused by the HTTP layer before any route ran: not a parseable HTTP/1 request.
    #[error("the request is not a valid HTTP/1.1 request (request line, header or framing)")]
    MalformedRequest,
    /// Refused by the HTTP layer before any route ran.
    #[error("the request line and headers are too large")]
    HeadersTooLarge,
    #[error("the webhook signature is not valid: {0}")]
    BadSignature(#[source] SignatureError),
    #[error("too many events are waiting to be pushed")]
    QueueFull,
    #[error("too many registration requests from this address; retry after {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no APNs key is loaded, so nothing can be pushed")]
    ApnsNotConfigured,
    #[error("the registration store is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the service is not ready: {0}")]
    NotReady(String),
    #[error("no such resource")]
    NotFound,
    #[error("the admin token is missing or wrong")]
    AdminUnauthorized,
    #[error("an `Authorization: Bearer <Webex access token>` header is required")]
    AccessTokenRequired,
    #[error("Webex rejected the access token")]
    AccessTokenRejected,
    #[error("the access token belongs to another person")]
    PersonMismatch,
    #[error(
        "a device token is registered to another person; that person must unregister it \
         (DELETE /register/{{token}}) before it can be registered again"
    )]
    TokenTaken,
    #[error("Webex cannot be asked who holds the access token right now; retry later")]
    IdentityUnavailable(#[source] BoxError),
    #[error("this resource does not answer that method (allowed: {0})")]
    MethodNotAllowed(&'static str),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// The body of every error response.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    /// The first field at fault, for clients that show one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    /// A stable slug naming the problem type (the anchor in `docs/api.md`).
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation",
            ApiError::MalformedJson(_) => "malformed-json",
            ApiError::UnreadableBody(_) => "unreadable-body",
            ApiError::MalformedWebhook(_) => "malformed-webhook",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::RequestTimeout => "request-timeout",
            ApiError::MalformedRequest => "malformed-request",
            ApiError::HeadersTooLarge => "headers-too-large",
            ApiError::BadSignature(_) => "invalid-signature",
            ApiError::QueueFull => "queue-full",
            ApiError::ShuttingDown => "shutting-down",
            ApiError::ApnsNotConfigured => "apns-not-configured",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotReady(_) => "not-ready",
            ApiError::NotFound => "not-found",
            ApiError::AdminUnauthorized => "admin-unauthorized",
            ApiError::AccessTokenRequired => "access-token-required",
            ApiError::AccessTokenRejected => "access-token-rejected",
            ApiError::PersonMismatch => "person-mismatch",
            ApiError::TokenTaken => "token-registered-elsewhere",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::IdentityUnavailable(_) => "identity-unavailable",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "Invalid request",
            ApiError::MalformedJson(_) => "Malformed JSON",
            ApiError::UnreadableBody(_) => "Unreadable body",
            ApiError::MalformedWebhook(_) => "Malformed webhook",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::RequestTimeout => "Request timeout",
            ApiError::MalformedRequest => "Malformed request",
            ApiError::HeadersTooLarge => "Request headers too large",
            ApiError::BadSignature(_) => "Invalid webhook signature",
            ApiError::QueueFull => "Push queue full",
            ApiError::ShuttingDown => "Shutting down",
            ApiError::ApnsNotConfigured => "APNs not configured",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::NotReady(_) => "Not ready",
            ApiError::NotFound => "Not found",
            ApiError::AdminUnauthorized => "Unauthorized",
            ApiError::AccessTokenRequired => "Access token required",
            ApiError::AccessTokenRejected => "Access token rejected",
            ApiError::PersonMismatch => "Person mismatch",
            ApiError::TokenTaken => "Token registered to another person",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::IdentityUnavailable(_) => "Identity provider unavailable",
            ApiError::MethodNotAllowed(_) => "Method not allowed",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    /// What the client reads. Built from our own words only: causes (database and APNs
    /// errors) go to the log, never into a body.
    fn detail(&self) -> String {
        match self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.detail))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::MalformedWebhook(error) => error.to_string(),
            ApiError::BadSignature(error) => error.to_string(),
            ApiError::Unavailable(_) => {
                "the registration store cannot be reached right now; retry later".into()
            }
            ApiError::Internal(_) => "something went wrong on our side".into(),
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::QueueFull => Some(RETRY_QUEUE),
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::Unavailable(_)
            | ApiError::NotReady(_)
            | ApiError::ShuttingDown
            | ApiError::IdentityUnavailable(_) => Some(RETRY_SOON),
            ApiError::ApnsNotConfigured => Some(RETRY_LATER),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::MalformedJson(_)
            | ApiError::UnreadableBody(_)
            | ApiError::MalformedWebhook(_)
            | ApiError::MalformedRequest => StatusCode::BAD_REQUEST,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadSignature(_)
            | ApiError::AdminUnauthorized
            | ApiError::AccessTokenRequired
            | ApiError::AccessTokenRejected => StatusCode::UNAUTHORIZED,
            ApiError::PersonMismatch => StatusCode::FORBIDDEN,
            ApiError::TokenTaken => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueFull
            | ApiError::ShuttingDown
            | ApiError::ApnsNotConfigured
            | ApiError::Unavailable(_)
            | ApiError::IdentityUnavailable(_)
            | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Internal(source) => {
                tracing::error!(error = %Chain(source.as_ref()), "request failed");
            }
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %Chain(source.as_ref()), "store unavailable");
            }
            ApiError::IdentityUnavailable(source) => {
                tracing::warn!(error = %Chain(source.as_ref()), "Webex identity unavailable");
            }
            _ if status.is_client_error() => {
                tracing::debug!(
                    status = status.as_u16(),
                    problem = self.slug(),
                    "request refused"
                );
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let ApiError::MethodNotAllowed(allowed) = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        if matches!(
            self,
            ApiError::AdminUnauthorized
                | ApiError::AccessTokenRequired
                | ApiError::AccessTokenRejected
        ) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, after.as_secs().to_string()));
        }
        if matches!(self, ApiError::ShuttingDown) {
            // A keep-alive client would otherwise go on using this connection and
            // hold the graceful stop open until its timeout.
            response.force_close();
        }
        response.body(self.problem_json())
    }
}

impl ApiError {
    /// The problem document of this error, as sent.
    fn problem_json(&self) -> String {
        let errors: &[FieldError] = match self {
            ApiError::Validation(errors) => errors,
            _ => &[],
        };
        let field = match self {
            ApiError::MalformedWebhook(error) => error.field(),
            _ => errors.first().map(|e| e.field.as_str()),
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}#{}", self.slug()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.detail(),
            field,
            rule: errors.first().map(|e| e.rule),
            errors,
        };
        // Serialising these plain fields cannot fail; an empty body would still carry
        // the status.
        ascii_json(&serde_json::to_string(&problem).unwrap_or_default())
    }

    /// The body of an answer actix's HTTP/1 dispatcher writes on its own, before any
    /// route or middleware runs (a malformed request, a head too large or too slow, a
    /// failed dispatch): registered with the patched `actix-http`
    /// (`vendor/actix-http`), so those answers are problem documents too.
    pub fn framework_body(status: StatusCode) -> Option<(HeaderValue, bytes::Bytes)> {
        let error = match status {
            StatusCode::BAD_REQUEST => ApiError::MalformedRequest,
            StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeadersTooLarge,
            StatusCode::INTERNAL_SERVER_ERROR => ApiError::Internal("dispatch failed".into()),
            _ => return None,
        };
        tracing::debug!(
            status = status.as_u16(),
            problem = error.slug(),
            "request refused by the HTTP layer"
        );
        Some((
            HeaderValue::from_static(PROBLEM_JSON),
            bytes::Bytes::from(error.problem_json()),
        ))
    }
}

/// Escapes every non-ASCII character of a JSON text as `\uXXXX` (outside strings JSON
/// has only ASCII, so this only touches string contents). Details may echo what the
/// client sent (a field name, a string of the wrong type); a client or proxy that
/// guesses the charset of `application/problem+json` then still reads the same JSON.
fn ascii_json(json: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

impl From<RegisterError> for ApiError {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::SameTokenForBothChannels => ApiError::Validation(vec![FieldError::new(
                "msgToken",
                "distinct",
                "the VoIP token and the message token must be different tokens",
            )]),
            RegisterError::Guard(error) => error.into(),
            RegisterError::TokenTaken => ApiError::TokenTaken,
            RegisterError::Unavailable(source) => ApiError::Unavailable(source),
            RegisterError::Unknown(source) => ApiError::Internal(source),
        }
    }
}

impl From<GuardError> for ApiError {
    fn from(error: GuardError) -> Self {
        match error {
            GuardError::Missing => ApiError::AccessTokenRequired,
            GuardError::Rejected => ApiError::AccessTokenRejected,
            GuardError::Mismatch => ApiError::PersonMismatch,
            GuardError::Unavailable(source) => ApiError::IdentityUnavailable(source),
            GuardError::Unknown(source) => ApiError::Internal(source),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => ApiError::Unavailable(source),
            StoreError::Unknown(source) => ApiError::Internal(source),
        }
    }
}

/// An error with its whole cause chain, for one log field.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_bodies_are_ascii_and_read_back_as_the_same_json() {
        let detail = "unknown field `é\"\u{a25b9}\u{8b}\u{1f}`";
        let json = serde_json::to_string(&serde_json::json!({ "detail": detail })).unwrap();
        let escaped = ascii_json(&json);
        assert!(escaped.is_ascii(), "{escaped}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["detail"], detail);
    }

    #[test]
    fn an_echoed_non_ascii_input_leaves_the_body_ascii() {
        let response =
            ApiError::MalformedJson("unknown field `ü#\"\u{488c1}`".into()).error_response();
        let body = actix_web::rt::System::new()
            .block_on(actix_web::body::to_bytes(response.into_body()))
            .unwrap();
        assert!(body.is_ascii());
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 400);
        assert!(problem["detail"].as_str().unwrap().contains('\u{488c1}'));
    }
}
