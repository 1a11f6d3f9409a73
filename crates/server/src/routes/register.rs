//! `POST /register` and `DELETE /register/{token}`: the original sample server's
//! contract, unchanged for apps in the field, with validation that names the field.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};
use webex_push_domain::{
    AccessToken, ApnsEnvironment, BundleId, DeviceToken, EmailAddress, EmailError, PersonId,
    Registration, RegistrationService,
};

use super::{Limits, method_not_allowed, read_body, require_json, token_error};
use crate::error::{ApiError, FieldError};
use crate::metrics::Metrics;
use crate::rate_limit::RegisterRateLimiter;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/register")
            .route(web::post().to(register))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/register/{token}")
            .route(web::delete().to(unregister))
            .default_service(web::to(method_not_allowed("DELETE"))),
    );
}

async fn register(
    request: HttpRequest,
    payload: web::Payload,
    registrations: web::Data<RegistrationService>,
    rate_limiter: web::Data<RegisterRateLimiter>,
    metrics: web::Data<Metrics>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    limit_rate(&request, &rate_limiter, &metrics)?;
    require_json(&request)?;
    let body = read_body(payload, limits.register_body, limits.request_timeout).await?;
    let registration = parse_registration(&body)?;
    let registered = registrations
        .register(access_token(&request).as_ref(), registration)
        .await?;
    metrics.count_evicted(registered.evicted.len());
    Ok(HttpResponse::NoContent().finish())
}

async fn unregister(
    request: HttpRequest,
    token: web::Path<String>,
    registrations: web::Data<RegistrationService>,
    rate_limiter: web::Data<RegisterRateLimiter>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    limit_rate(&request, &rate_limiter, &metrics)?;
    let token = DeviceToken::parse(&token)
        .map_err(|e| ApiError::Validation(vec![token_error("token", &e)]))?;
    registrations
        .unregister(access_token(&request).as_ref(), &token)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Counts the request against its client's registration rate; 429 past it.
fn limit_rate(
    request: &HttpRequest,
    rate_limiter: &RegisterRateLimiter,
    metrics: &Metrics,
) -> Result<(), ApiError> {
    rate_limiter.check(request).map_err(|wait| {
        metrics.count_rate_limited();
        // Whole seconds, rounded up: a client that waits that long gets through.
        let retry_after = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        ApiError::RateLimited { retry_after }
    })
}

/// The Webex access token of `Authorization: Bearer ...`; a header that is not one
/// counts as none (the guard then answers 401 when proof is required).
fn access_token(request: &HttpRequest) -> Option<AccessToken> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| AccessToken::from_authorization(value).ok())
}

/// Reads `{"email","voipToken","msgToken","personId"}` (+ optional `environment`,
/// `bundleId`), reporting every bad field at once. Unknown fields are ignored, as
/// apps may send more than the original read.
pub fn parse_registration(body: &[u8]) -> Result<Registration, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::MalformedJson(
            "the body must be a JSON object".into(),
        ));
    };
    let mut errors = Vec::new();
    let email = required(&fields, "email", &mut errors).and_then(|text| {
        EmailAddress::parse(text)
            .map_err(|e| errors.push(email_error(&e)))
            .ok()
    });
    let voip_token = required(&fields, "voipToken", &mut errors).and_then(|text| {
        DeviceToken::parse(text.trim())
            .map_err(|e| errors.push(token_error("voipToken", &e)))
            .ok()
    });
    let alert_token = required(&fields, "msgToken", &mut errors).and_then(|text| {
        DeviceToken::parse(text.trim())
            .map_err(|e| errors.push(token_error("msgToken", &e)))
            .ok()
    });
    let person = required(&fields, "personId", &mut errors).and_then(|text| {
        PersonId::parse(text)
            .map_err(|e| {
                errors.push(FieldError::new(
                    "personId",
                    "webex-person-id",
                    e.to_string(),
                ))
            })
            .ok()
    });
    let environment = optional(&fields, "environment", &mut errors).and_then(|text| {
        text.parse::<ApnsEnvironment>()
            .map_err(|e| errors.push(FieldError::new("environment", "one-of", e.to_string())))
            .ok()
    });
    let bundle_id = optional(&fields, "bundleId", &mut errors).and_then(|text| {
        BundleId::parse(text)
            .map_err(|e| errors.push(FieldError::new("bundleId", "bundle-id", e.to_string())))
            .ok()
    });
    match (email, voip_token, alert_token, person) {
        (Some(email), Some(voip_token), Some(alert_token), Some(person)) if errors.is_empty() => {
            Ok(Registration {
                person,
                email,
                voip_token,
                alert_token,
                environment,
                bundle_id,
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

/// A required string field; records `required` or `string` when it is not one.
fn required<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "required", "is required"));
            None
        }
        Some(Value::String(text)) if text.trim().is_empty() => {
            errors.push(FieldError::new(name, "required", "must not be empty"));
            None
        }
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            errors.push(FieldError::new(name, "string", "must be a string"));
            None
        }
    }
}

/// An optional string field: absent, `null` or empty means "not given".
fn optional<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match fields.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.trim()).filter(|t| !t.is_empty()),
        Some(_) => {
            errors.push(FieldError::new(name, "string", "must be a string"));
            None
        }
    }
}

fn email_error(error: &EmailError) -> FieldError {
    let rule = match error {
        EmailError::Empty => "required",
        EmailError::TooLong(_) => "max-length",
        EmailError::Malformed => "email",
    };
    FieldError::new("email", rule, error.to_string())
}
