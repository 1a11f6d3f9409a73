//! `/admin/...`: operators' views, served only when `ADMIN_TOKEN` is set and only to
//! `Authorization: Bearer <ADMIN_TOKEN>`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use webex_push_domain::{
    Channel, Device, DeviceToken, DiagnosticsService, PersonId, PushProvider, TestPushError,
    TestPushResult, TestPushTarget,
};

use super::{Limits, method_not_allowed, read_body, require_json, token_error};
use crate::error::{ApiError, FieldError};

/// The admin API's state; the routes exist only when it does.
pub struct AdminState {
    pub token: SecretString,
    pub service: DiagnosticsService,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/persons/{personId}/devices")
            .route(web::get().to(devices))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/admin/test-push")
            .route(web::post().to(test_push))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

/// Compares in constant time, so the token cannot be guessed byte by byte from
/// response times (only its length can leak).
fn authorize(request: &HttpRequest, state: &AdminState) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let expected = state.token.expose_secret().as_bytes();
    if bool::from(presented.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        tracing::warn!("admin request refused: missing or wrong ADMIN_TOKEN");
        Err(ApiError::AdminUnauthorized)
    }
}

async fn devices(
    request: HttpRequest,
    person: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let person = PersonId::parse(&person).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "personId",
            "webex-person-id",
            e.to_string(),
        )])
    })?;
    let devices = state.service.devices(&person).await?;
    Ok(HttpResponse::Ok().json(json!({
        "personId": person.to_string(),
        "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
    })))
}

fn device_json(device: &Device) -> Value {
    json!({
        "token": device.token.redacted(),
        "channel": device.channel,
        "environment": device.environment,
        "bundleId": device.bundle_id.as_ref().map(|b| b.as_str()),
        "flavour": device.flavour.as_str(),
        "provider": device.token.provider(),
        "registeredAt": device.registered_at,
        "lastOutcome": device.last_outcome,
        "lastOutcomeAt": device.last_outcome_at,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestPushRequest {
    person_id: Option<String>,
    token: Option<String>,
    channel: String,
    message: Option<String>,
}

async fn test_push(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    // Read as `/register` reads: a wrong type or an oversized body is a problem, not
    // the framework's plain-text error. The body is as small as a registration.
    require_json(&request)?;
    let body = read_body(payload, limits.register_body, limits.request_timeout).await?;
    let (target, channel, message) = parse_test_push(&body)?;
    let results = state
        .service
        .test_push(&target, channel, &message)
        .await
        .map_err(|error| match error {
            TestPushError::NotConfigured => ApiError::ApnsNotConfigured,
            TestPushError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "channel": channel,
        "results": results.iter().map(result_json).collect::<Vec<_>>(),
    })))
}

fn parse_test_push(body: &[u8]) -> Result<(TestPushTarget, Channel, String), ApiError> {
    let request: TestPushRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let mut errors = Vec::new();
    let channel = request
        .channel
        .parse::<Channel>()
        .map_err(|e| errors.push(FieldError::new("channel", "one-of", e.to_string())))
        .ok();
    let target = match (request.person_id.as_deref(), request.token.as_deref()) {
        (Some(person), None) => PersonId::parse(person)
            .map(TestPushTarget::Person)
            .map_err(|e| {
                errors.push(FieldError::new(
                    "personId",
                    "webex-person-id",
                    e.to_string(),
                ))
            })
            .ok(),
        (None, Some(token)) => DeviceToken::parse(token.trim())
            // Not hex: an FCM registration token, if it is one.
            .or_else(|apns| DeviceToken::parse_fcm(token.trim()).map_err(|_| apns))
            .map(TestPushTarget::Token)
            .map_err(|e| errors.push(token_error("token", &e)))
            .ok(),
        _ => {
            errors.push(FieldError::new(
                "personId",
                "one-of",
                "give exactly one of personId and token",
            ));
            None
        }
    };
    match (target, channel) {
        (Some(target), Some(channel)) if errors.is_empty() => {
            let message = request
                .message
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| "Test push from webex-push".to_owned());
            Ok((target, channel, message))
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

fn result_json(result: &TestPushResult) -> Value {
    let answer = &result.answer;
    json!({
        "token": result.token.redacted(),
        "provider": answer.provider,
        "status": answer.status,
        "reason": answer.reason,
        "apnsId": (answer.provider == PushProvider::Apns).then_some(&answer.id),
        "fcmMessage": (answer.provider == PushProvider::Fcm && !answer.id.is_empty())
            .then_some(&answer.id),
        "environment": answer.environment,
        "outcome": answer.outcome.label(),
        "latencyMs": u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX),
    })
}
