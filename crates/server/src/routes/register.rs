//! `POST /register` and `DELETE /register/{token}`: the original sample server's
//! contract, unchanged for apps in the field, and the body of Cisco's current sample
//! apps (KitchenSink), with validation that names the field.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};
use webex_push_domain::{
    AccessToken, ApnsEnvironment, AppFlavour, BundleId, DeviceToken, EmailAddress, EmailError,
    PersonId, Registration, RegistrationService,
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
    let registration = parse_registration(&body, limits.fcm)?;
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
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    limit_rate(&request, &rate_limiter, &metrics)?;
    // An APNs token is hex; with FCM configured, anything else printable may be an
    // FCM one (the hex error is the one reported: it is what most clients send).
    let token = DeviceToken::parse(&token)
        .or_else(|apns| match limits.fcm {
            true => DeviceToken::parse_fcm(&token).map_err(|_| apns),
            false => Err(apns),
        })
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

/// Reads a registration in either shape apps in the field send, reporting every bad
/// field at once. Unknown fields are ignored, as apps may send more than we read.
///
/// - The 2017 sample's: `{"email","voipToken","msgToken","personId"}`, plus optional
///   `environment` and `bundleId`.
/// - KitchenSink's (Cisco's current sample apps), told by its `userId` or
///   `pushProvider`: `{"voipToken","deviceToken","pushProvider":"APNS","userId"}`, plus
///   optional `prod` (the tokens' APNs environment: `false` is sandbox) and `bundleId`.
/// - KitchenSink Android's: `{"pushProvider":"FCM","deviceToken","userId"}`, one FCM
///   registration token (printable ASCII, at most 4096 bytes, not hex); accepted when
///   `fcm` (FCM is configured), else refused naming `pushProvider`.
pub fn parse_registration(body: &[u8], fcm: bool) -> Result<Registration, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::MalformedJson(
            "the body must be a JSON object".into(),
        ));
    };
    if fields.contains_key("userId") || fields.contains_key("pushProvider") {
        kitchensink_registration(&fields, fcm)
    } else {
        seed_registration(&fields)
    }
}

fn seed_registration(fields: &Map<String, Value>) -> Result<Registration, ApiError> {
    let mut errors = Vec::new();
    let email = required(fields, "email", &mut errors).and_then(|text| {
        EmailAddress::parse(text)
            .map_err(|e| errors.push(email_error(&e)))
            .ok()
    });
    let voip_token = device_token(fields, "voipToken", &mut errors);
    let alert_token = device_token(fields, "msgToken", &mut errors);
    let person = person_id(fields, "personId", &mut errors);
    let environment = optional(fields, "environment", &mut errors).and_then(|text| {
        text.parse::<ApnsEnvironment>()
            .map_err(|e| errors.push(FieldError::new("environment", "one-of", e.to_string())))
            .ok()
    });
    let bundle_id = bundle_id(fields, &mut errors);
    match (email, voip_token, alert_token, person) {
        (Some(email), Some(voip_token), Some(alert_token), Some(person)) if errors.is_empty() => {
            Ok(Registration {
                person,
                email: Some(email),
                voip_token: Some(voip_token),
                alert_token,
                environment,
                bundle_id,
                flavour: AppFlavour::Seed,
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

fn kitchensink_registration(
    fields: &Map<String, Value>,
    fcm: bool,
) -> Result<Registration, ApiError> {
    let mut errors = Vec::new();
    let provider = optional(fields, "pushProvider", &mut errors);
    if provider.is_some_and(|p| p.eq_ignore_ascii_case("FCM")) && fcm {
        return android_registration(fields);
    }
    if let Some(provider) = provider.filter(|p| !p.eq_ignore_ascii_case("APNS")) {
        let detail = match (provider.eq_ignore_ascii_case("FCM"), fcm) {
            (true, _) => "FCM (Android) is not configured on this server; only APNS".to_owned(),
            (false, true) => format!("must be APNS or FCM; got {provider:?}"),
            (false, false) => format!(
                "must be APNS (FCM, for Android, is not configured on this server); got {provider:?}"
            ),
        };
        errors.push(FieldError::new("pushProvider", "supported", detail));
        // An Android body has no VoIP token and its token is not APNs hex: checking
        // them would only bury the one error that matters.
        person_id(fields, "userId", &mut errors);
        return Err(ApiError::Validation(errors));
    }
    let voip_token = device_token(fields, "voipToken", &mut errors);
    let alert_token = device_token(fields, "deviceToken", &mut errors);
    let person = person_id(fields, "userId", &mut errors);
    let environment = match fields.get("prod") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some(ApnsEnvironment::Production),
        Some(Value::Bool(false)) => Some(ApnsEnvironment::Sandbox),
        Some(_) => {
            errors.push(FieldError::new(
                "prod",
                "boolean",
                "must be true (production APNs tokens) or false (sandbox)",
            ));
            None
        }
    };
    let bundle_id = bundle_id(fields, &mut errors);
    match (voip_token, alert_token, person) {
        (Some(voip_token), Some(alert_token), Some(person)) if errors.is_empty() => {
            Ok(Registration {
                person,
                email: None,
                voip_token: Some(voip_token),
                alert_token,
                environment,
                bundle_id,
                flavour: AppFlavour::KitchenSink,
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

/// KitchenSink Android's body: one FCM token, no environment, no VoIP token.
fn android_registration(fields: &Map<String, Value>) -> Result<Registration, ApiError> {
    let mut errors = Vec::new();
    let token = required(fields, "deviceToken", &mut errors).and_then(|text| {
        DeviceToken::parse_fcm(text.trim())
            .map_err(|e| errors.push(token_error("deviceToken", &e)))
            .ok()
    });
    let person = person_id(fields, "userId", &mut errors);
    match (token, person) {
        (Some(alert_token), Some(person)) if errors.is_empty() => Ok(Registration {
            person,
            email: None,
            voip_token: None,
            alert_token,
            environment: None,
            bundle_id: None,
            flavour: AppFlavour::KitchenSink,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn device_token(
    fields: &Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<DeviceToken> {
    required(fields, name, errors).and_then(|text| {
        DeviceToken::parse(text.trim())
            .map_err(|e| errors.push(token_error(name, &e)))
            .ok()
    })
}

fn person_id(
    fields: &Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<PersonId> {
    required(fields, name, errors).and_then(|text| {
        PersonId::parse(text)
            .map_err(|e| errors.push(FieldError::new(name, "webex-person-id", e.to_string())))
            .ok()
    })
}

fn bundle_id(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<BundleId> {
    optional(fields, "bundleId", errors).and_then(|text| {
        BundleId::parse(text)
            .map_err(|e| errors.push(FieldError::new("bundleId", "bundle-id", e.to_string())))
            .ok()
    })
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
