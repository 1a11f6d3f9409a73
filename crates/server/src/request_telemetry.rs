//! Request ids and the per-request span: every log line of a request carries its
//! `request_id`, the id is returned in `X-Request-Id`, and requests are counted.

use std::sync::Arc;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::metrics::{Metrics, method_label};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// An incoming id is kept when it is sane: 1 to 64 characters of letters, digits,
    /// `-`, `_`, `.` or `:` (so a proxy's id links our logs to its own, and nothing a
    /// client sends can forge log structure). Anything else gets a fresh UUID.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let sane = value
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            });
        match sane {
            Some(id) => Self(Arc::from(id)),
            None => Self(Arc::from(uuid::Uuid::new_v4().to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The middleware: opens the request's span, runs the app inside it, stamps the
/// answer with `X-Request-Id`, counts it by route pattern and logs it.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = RequestId::from_header(request.headers().get(&REQUEST_ID_HEADER));
    let metrics = request
        .app_data::<actix_web::web::Data<Metrics>>()
        .map(|m| Arc::clone(m));
    let span = tracing::info_span!(
        "request",
        request_id = %id.as_str(),
        method = %request.method(),
        route = tracing::field::Empty,
        // A webhook's handler fills these in once it knows the event.
        kind = tracing::field::Empty,
        call_id = tracing::field::Empty,
    );
    request.extensions_mut().insert(id.clone());
    let started = Instant::now();
    let method = method_label(request.method().as_str());
    let answer = async move {
        let mut response = next.call(request).await?;
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = response.status().as_u16();
        tracing::Span::current().record("route", route.as_str());
        if let Ok(value) = HeaderValue::from_str(id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        // Probes and scrapes come every few seconds: keep them out of the info log.
        let quiet = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
        if let Some(metrics) = metrics {
            metrics.observe_request(route, method, status, started.elapsed());
        }
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if quiet {
            tracing::debug!(status, elapsed_ms, "request answered");
        } else {
            tracing::info!(status, elapsed_ms, "request answered");
        }
        Ok(response)
    };
    answer.instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_incoming_ids_are_kept_and_others_replaced() {
        let kept = RequestId::from_header(Some(&HeaderValue::from_static("abc-123_x.y:z")));
        assert_eq!(kept.as_str(), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"d", &"x".repeat(65)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let replaced = RequestId::from_header(Some(&value));
            assert!(uuid::Uuid::parse_str(replaced.as_str()).is_ok(), "{bad:?}");
        }
        let fresh = RequestId::from_header(None);
        assert!(uuid::Uuid::parse_str(fresh.as_str()).is_ok());
    }
}
