//! The HTTP routes, one module per resource, each registered through its own
//! `configure` function. Handlers parse, call one service, map the result.

pub mod admin;
pub mod docs;
pub mod health;
pub mod metrics;
pub mod register;
pub mod webhook;

/// Every (method, path) the app serves, for the OpenAPI coverage test: a route added
/// here must be documented in `docs/openapi.json`, and the test probes each.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/register"),
    ("DELETE", "/register/{token}"),
    ("POST", "/webhook"),
    ("GET", "/admin/persons/{personId}/devices"),
    ("POST", "/admin/test-push"),
];

use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures::{Stream, StreamExt as _};

use webex_push_domain::DeviceTokenError;

use crate::error::{ApiError, FieldError};

/// Request limits the body-reading handlers share.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub register_body: usize,
    pub webhook_body: usize,
    pub request_timeout: Duration,
    /// Whether FCM is configured, so Android registrations (`pushProvider: "FCM"`) are
    /// accepted.
    pub fcm: bool,
}

/// Reads the whole body, refusing it past `limit` bytes or when the client takes
/// longer than `timeout` to send it.
pub(crate) async fn read_body(
    mut payload: impl Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
    limit: usize,
    timeout: Duration,
) -> Result<web::Bytes, ApiError> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::UnreadableBody(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// A body must be JSON when it says what it is. A missing `Content-Type` is accepted:
/// some HTTP clients in the field omit it, and the body is parsed as JSON anyway.
pub(crate) fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Unknown paths answer a 404 problem, like every other error.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The answer of a resource asked with a method it does not serve.
pub(crate) fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn() -> futures::future::Ready<Result<actix_web::HttpResponse, ApiError>> + Clone {
    move || futures::future::ready(Err(ApiError::MethodNotAllowed(allowed)))
}

/// The validation error of a device token field, with the rule it broke.
pub(crate) fn token_error(field: &str, error: &DeviceTokenError) -> FieldError {
    let rule = match error {
        DeviceTokenError::Empty => "required",
        DeviceTokenError::NotHex(..) => "hex",
        DeviceTokenError::OddLength(_) => "even-length",
        DeviceTokenError::TooShort(_) => "min-length",
        DeviceTokenError::TooLong(_) | DeviceTokenError::FcmTooLong(_) => "max-length",
        DeviceTokenError::NotPrintable(..) => "printable-ascii",
    };
    FieldError::new(field, rule, error.to_string())
}
