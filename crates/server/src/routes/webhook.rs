//! `POST /webhook`: authenticate the Webex event, read it, queue the push, answer at
//! once. Apple's answer is awaited by the push workers, never by Webex.
//!
//! [`SignedBody`] extracts the body whose signature was checked; [`WebhookIntake`]
//! reads it into events, queues them and counts every webhook, refused ones included.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures::future::LocalBoxFuture;
use secrecy::SecretString;
use webex_push_adapters::webex::{
    SIGNATURE_HEADER, SignatureError, Signer, WebhookEvent, parse_event, verify_delivery,
};
use webex_push_domain::Event;

use super::{Limits, method_not_allowed, read_body};
use crate::error::ApiError;
use crate::metrics::{Metrics, resource_label};
use crate::queue::{Accepted, EnqueueError, PushQueue};
use crate::request_telemetry::RequestId;

/// Where webhooks go in: the secrets that sign them, the queue that takes their
/// events, the metrics that count them.
pub struct WebhookIntake {
    /// Empty: signatures are not checked (warned at start-up).
    pub secrets: Arc<[SecretString]>,
    /// `None` when no APNs key is loaded: events that would push are refused with 503
    /// rather than accepted and silently dropped.
    pub queue: Option<PushQueue>,
    pub metrics: Arc<Metrics>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook")
            .route(web::post().to(webhook))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

async fn webhook(
    body: Result<SignedBody, ApiError>,
    request_id: Option<web::ReqData<RequestId>>,
    intake: web::Data<WebhookIntake>,
) -> Result<HttpResponse, ApiError> {
    let request_id = request_id.map(|id| Arc::clone(&id.0));
    intake.take(body, request_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A webhook body whose signature was checked (when secrets are set), and who signed
/// it: the shared secret, or the secret of a webhook the server made for one person.
pub struct SignedBody {
    body: web::Bytes,
    signer: Signer,
}

impl FromRequest for SignedBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        let payload = payload.take();
        Box::pin(async move {
            let (Some(intake), Some(limits)) = (
                request.app_data::<web::Data<WebhookIntake>>(),
                request.app_data::<web::Data<Limits>>(),
            ) else {
                return Err(ApiError::Internal("the webhook route is not wired".into()));
            };
            let body = read_body(payload, limits.webhook_body, limits.request_timeout).await?;
            let signer = if intake.secrets.is_empty() {
                Signer::Shared
            } else {
                let header = request
                    .headers()
                    .get(SIGNATURE_HEADER)
                    .and_then(|value| value.to_str().ok());
                verify_delivery(&intake.secrets, &body, header).map_err(unauthorized)?
            };
            Ok(Self { body, signer })
        })
    }
}

/// A signature refused, logged: every webhook failing here usually means
/// WEBHOOK_SECRET differs from the secret the webhook was created with, and operators
/// must see it.
fn unauthorized(error: SignatureError) -> ApiError {
    tracing::warn!(error = %error, outcome = "unauthorized", "webhook refused");
    ApiError::BadSignature(error)
}

impl WebhookIntake {
    /// Reads the signed body into events and queues them, and counts the webhook: by
    /// the resource it was about (`unknown` until it was read) and what became of it.
    pub async fn take(
        &self,
        body: Result<SignedBody, ApiError>,
        request_id: Option<Arc<str>>,
    ) -> Result<(), ApiError> {
        let (resource, result) = match body {
            Ok(body) => self.read_and_queue(body, request_id).await,
            Err(error) => ("unknown", Err(error)),
        };
        self.metrics.count_webhook(resource, outcome_label(&result));
        result.map(drop)
    }

    /// The resource the body is about, and `accepted` or `ignored`, or why it was
    /// refused.
    async fn read_and_queue(
        &self,
        body: SignedBody,
        request_id: Option<Arc<str>>,
    ) -> (&'static str, Result<&'static str, ApiError>) {
        let event = match parse_event(&body.body) {
            Ok(WebhookEvent::Relay(event)) => event,
            Ok(WebhookEvent::Ignored {
                resource,
                event,
                why,
            }) => {
                tracing::info!(resource, event, why, outcome = "ignored", "webhook ignored");
                return (resource_label(&resource), Ok("ignored"));
            }
            Err(error) => {
                tracing::warn!(error = %error, outcome = "malformed", "webhook refused");
                return ("unknown", Err(ApiError::MalformedWebhook(error)));
            }
        };
        let resource = event.source().as_str();
        // A webhook the server made for one person reports only their events.
        if let Signer::Owner(owner) = &body.signer
            && event.person() != owner
        {
            return (resource, Err(unauthorized(SignatureError::NotTheOwner)));
        }
        let queued = self.queue(event, request_id).await;
        (resource, queued.map(|()| "accepted"))
    }

    /// Queues one job per part of the event that is de-duplicated on its own (a
    /// `telephony_push` ring: the seed apps' and KitchenSink's). Should a later part
    /// not be queued, the webhook is refused and its re-delivery queues it; the parts
    /// already queued are then duplicates and ring nothing twice.
    async fn queue(&self, event: Event, request_id: Option<Arc<str>>) -> Result<(), ApiError> {
        let kind = event.kind().as_str();
        // On the request's span, so every later line of the request carries them.
        let span = tracing::Span::current();
        span.record("kind", kind);
        if let Some(call_id) = event.call_id() {
            span.record("call_id", call_id.as_str());
        }
        let queue = self.queue.as_ref().ok_or(ApiError::ApnsNotConfigured)?;
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
        Ok(())
    }
}

/// The `outcome` label of a webhook.
fn outcome_label(result: &Result<&'static str, ApiError>) -> &'static str {
    match result {
        Ok(outcome) => outcome,
        Err(ApiError::BadSignature(_)) => "unauthorized",
        Err(ApiError::MalformedWebhook(_) | ApiError::UnreadableBody(_)) => "malformed",
        Err(ApiError::PayloadTooLarge { .. }) => "too_large",
        Err(ApiError::RequestTimeout) => "timeout",
        Err(ApiError::QueueFull) => "queue_full",
        Err(ApiError::ShuttingDown) => "shutting_down",
        Err(ApiError::ApnsNotConfigured) => "apns_not_configured",
        Err(_) => "error",
    }
}
