//! `POST /webhook`: authenticate the Webex event, read it, queue the push, answer at
//! once. Apple's answer is awaited by the push workers, never by Webex.

use std::sync::Arc;

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use webex_push_adapters::webex::{
    SIGNATURE_HEADER, SignatureError, Signer, WebhookEvent, parse_event, verify_delivery,
};

use super::{Limits, method_not_allowed, read_body};
use crate::error::ApiError;
use crate::metrics::{Metrics, resource_label};
use crate::queue::{Accepted, EnqueueError, PushQueue};
use crate::request_telemetry::RequestId;

/// What the webhook route needs beyond the body.
pub struct WebhookState {
    /// Empty: signatures are not checked (warned at start-up).
    pub secrets: Arc<[SecretString]>,
    /// `None` when no APNs key is loaded: events that would push are refused with 503
    /// rather than accepted and silently dropped.
    pub queue: Option<PushQueue>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook")
            .route(web::post().to(webhook))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

async fn webhook(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<WebhookState>,
    limits: web::Data<Limits>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let (resource, result) = accept(&request, payload, &state, &limits).await;
    let outcome = match &result {
        Ok(outcome) => *outcome,
        Err(ApiError::BadSignature(_)) => "unauthorized",
        Err(ApiError::MalformedWebhook(_) | ApiError::UnreadableBody(_)) => "malformed",
        Err(ApiError::PayloadTooLarge { .. }) => "too_large",
        Err(ApiError::RequestTimeout) => "timeout",
        Err(ApiError::QueueFull) => "queue_full",
        Err(ApiError::ShuttingDown) => "shutting_down",
        Err(ApiError::ApnsNotConfigured) => "apns_not_configured",
        Err(_) => "error",
    };
    metrics.count_webhook(resource, outcome);
    result.map(|_| HttpResponse::NoContent().finish())
}

/// Authenticates, reads and queues the event: the resource it is about (`unknown`
/// until it is read) and `accepted` or `ignored`, or why it was refused.
async fn accept(
    request: &HttpRequest,
    payload: web::Payload,
    state: &WebhookState,
    limits: &Limits,
) -> (&'static str, Result<&'static str, ApiError>) {
    let mut resource = "unknown";
    let result: Result<&'static str, ApiError> = async {
        let body = read_body(payload, limits.webhook_body, limits.request_timeout).await?;
        let refused = |error: SignatureError| {
            // Every webhook failing here usually means WEBHOOK_SECRET differs from the
            // secret the webhook was created with: operators must see it.
            tracing::warn!(error = %error, outcome = "unauthorized", "webhook refused");
            ApiError::BadSignature(error)
        };
        let signer = if state.secrets.is_empty() {
            Signer::Shared
        } else {
            let header = request
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|value| value.to_str().ok());
            verify_delivery(&state.secrets, &body, header).map_err(refused)?
        };
        let event = parse_event(&body).map_err(|error| {
            tracing::warn!(error = %error, outcome = "malformed", "webhook refused");
            ApiError::MalformedWebhook(error)
        })?;
        let event = match event {
            WebhookEvent::Relay(event) => {
                resource = event.source().as_str();
                // A webhook the server made for one person reports only their events.
                if let Signer::Owner(owner) = &signer
                    && event.person() != owner
                {
                    return Err(refused(SignatureError::NotTheOwner));
                }
                event
            }
            WebhookEvent::Ignored {
                resource: name,
                event,
                why,
            } => {
                resource = resource_label(&name);
                tracing::info!(
                    resource = name,
                    event,
                    why,
                    outcome = "ignored",
                    "webhook ignored"
                );
                return Ok("ignored");
            }
        };
        let kind = event.kind().as_str();
        // On the request's span, so every later line of the request carries them.
        let span = tracing::Span::current();
        span.record("kind", kind);
        if let Some(call_id) = event.call_id() {
            span.record("call_id", call_id.as_str());
        }
        let queue = state.queue.as_ref().ok_or(ApiError::ApnsNotConfigured)?;
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| Arc::clone(&id.0));
        // One job per part of the event that is de-duplicated on its own (a
        // `telephony_push` ring: the seed apps' and KitchenSink's). Should a later part
        // not be queued, the webhook is refused and its re-delivery queues it; the parts
        // already queued are then duplicates and ring nothing twice.
        let mut recorded = true;
        for event in event.split() {
            let accepted = queue
                .accept(event, request_id.clone())
                .await
                .map_err(|error| {
                    tracing::warn!(kind, error = %error, "webhook refused: event not queued");
                    match error {
                        EnqueueError::Full => ApiError::QueueFull,
                        EnqueueError::Closed => ApiError::ShuttingDown,
                    }
                })?;
            recorded &= accepted == Accepted::Recorded;
        }
        tracing::info!(
            kind,
            depth = queue.depth(),
            recorded,
            outcome = "queued",
            "webhook accepted"
        );
        Ok("accepted")
    }
    .await;
    (resource, result)
}
