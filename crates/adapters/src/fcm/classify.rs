//! The one table from FCM's answer to the PushGateway outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use webex_push_domain::PushOutcome;

/// FCM's error body: `{"error": {"code", "message", "status", "details": [...]}}`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ErrorDetail {
    /// Google's status name (`NOT_FOUND`, `INVALID_ARGUMENT`, ...).
    pub status: Option<String>,
    pub message: Option<String>,
    #[serde(default)]
    pub details: Vec<Detail>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Detail {
    /// `FcmError`'s code (`UNREGISTERED`, `SENDER_ID_MISMATCH`, ...).
    #[serde(rename = "errorCode")]
    pub error_code: Option<String>,
    /// `google.rpc.BadRequest`'s violations: which field was wrong.
    #[serde(default, rename = "fieldViolations")]
    pub field_violations: Vec<FieldViolation>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct FieldViolation {
    pub field: Option<String>,
}

impl ErrorBody {
    /// The FCM error code, else Google's status name.
    pub fn reason(&self) -> Option<&str> {
        self.error
            .details
            .iter()
            .find_map(|d| d.error_code.as_deref())
            .or(self.error.status.as_deref())
    }

    /// Whether the error names the registration token as what is wrong.
    fn blames_token(&self) -> bool {
        self.error
            .details
            .iter()
            .flat_map(|d| &d.field_violations)
            .any(|v| v.field.as_deref() == Some("message.token"))
            || self
                .error
                .message
                .as_deref()
                .is_some_and(|m| m.contains("registration token"))
    }
}

/// Classifies one FCM answer. Exhaustive: every status and code lands somewhere, and an
/// unknown one is `Rejected` with its code kept as it came.
///
/// - `200` is `Delivered` with the message name;
/// - dead token (`TokenInvalid`, since `sent_at`: Google gives no time): `404`
///   `UNREGISTERED`, and `400 INVALID_ARGUMENT` when the error names `message.token`;
/// - passing faults (`Retry`, after `retry_after` when FCM sent one): `429`
///   `QUOTA_EXCEEDED` (any 429), `503 UNAVAILABLE`, `500 INTERNAL`, and `401` without
///   `THIRD_PARTY_AUTH_ERROR`, `UNAUTHENTICATED` (an expired access token: the client
///   fetches a new one and retries once before answering);
/// - everything else is `Rejected`, reported to the operator: our message is wrong
///   (`400` not about the token), or the configuration is (`403 SENDER_ID_MISMATCH`:
///   the token is another Firebase project's, which for every token at once means the
///   service account is the wrong project's, so no token is removed for it;
///   `403 PERMISSION_DENIED`; `401 THIRD_PARTY_AUTH_ERROR`; `404` without
///   `UNREGISTERED`: a wrong endpoint or project).
pub fn classify(
    status: u16,
    body: &ErrorBody,
    retry_after: Option<Duration>,
    sent_at: DateTime<Utc>,
    name: &str,
) -> PushOutcome {
    let reason = body.reason();
    let named = |fallback: &str| reason.unwrap_or(fallback).to_owned();
    let dead = |reason: &str| PushOutcome::TokenInvalid {
        reason: reason.to_owned(),
        since: sent_at,
    };
    let retry = |fallback: &str| PushOutcome::Retry {
        reason: named(fallback),
        after: retry_after,
    };
    match (status, reason) {
        (200, _) => PushOutcome::Delivered {
            id: name.to_owned(),
            environment: None,
        },
        (404, Some("UNREGISTERED")) => dead("UNREGISTERED"),
        (400, Some("INVALID_ARGUMENT")) if body.blames_token() => dead("INVALID_ARGUMENT"),
        (401, Some("THIRD_PARTY_AUTH_ERROR")) => PushOutcome::Rejected {
            reason: "THIRD_PARTY_AUTH_ERROR".into(),
        },
        (401, _) => PushOutcome::Retry {
            reason: "UNAUTHENTICATED".into(),
            after: None,
        },
        (429, _) => retry("QUOTA_EXCEEDED"),
        (500, _) => retry("INTERNAL"),
        (503, _) => retry("UNAVAILABLE"),
        (status, _) => PushOutcome::Rejected {
            reason: reason.map_or_else(|| format!("HTTP {status}"), str::to_owned),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn sent() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn body(json: serde_json::Value) -> ErrorBody {
        serde_json::from_value(json).unwrap()
    }

    fn fcm(status: &str, code: &str) -> ErrorBody {
        body(
            serde_json::json!({"error": {"status": status, "message": "m", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ]}}),
        )
    }

    fn of(status: u16, error: &ErrorBody) -> PushOutcome {
        classify(status, error, Some(Duration::from_secs(7)), sent(), "")
    }

    #[test]
    fn ok_is_delivered_with_the_message_name_and_no_environment() {
        assert_eq!(
            classify(
                200,
                &ErrorBody::default(),
                None,
                sent(),
                "projects/p/messages/1"
            ),
            PushOutcome::Delivered {
                id: "projects/p/messages/1".into(),
                environment: None
            }
        );
    }

    #[test]
    fn unregistered_and_a_bad_token_are_dead_tokens() {
        let dead = |reason: &str| PushOutcome::TokenInvalid {
            reason: reason.into(),
            since: sent(),
        };
        assert_eq!(
            of(404, &fcm("NOT_FOUND", "UNREGISTERED")),
            dead("UNREGISTERED")
        );
        let bad_token = body(serde_json::json!({"error": {"status": "INVALID_ARGUMENT",
        "message": "The registration token is not a valid FCM registration token",
        "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
        ]}}));
        assert_eq!(of(400, &bad_token), dead("INVALID_ARGUMENT"));
    }

    #[test]
    fn a_bad_message_is_rejected_and_keeps_the_token() {
        let bad_data = body(serde_json::json!({"error": {"status": "INVALID_ARGUMENT",
        "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 1",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "message.data[0].value"}]}
        ]}}));
        assert_eq!(
            of(400, &bad_data),
            PushOutcome::Rejected {
                reason: "INVALID_ARGUMENT".into()
            }
        );
    }

    #[test]
    fn passing_faults_are_retried_honouring_retry_after() {
        for (status, error, reason) in [
            (
                429,
                fcm("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
                "QUOTA_EXCEEDED",
            ),
            (503, fcm("UNAVAILABLE", "UNAVAILABLE"), "UNAVAILABLE"),
            (500, fcm("INTERNAL", "INTERNAL"), "INTERNAL"),
            (503, ErrorBody::default(), "UNAVAILABLE"),
            (429, ErrorBody::default(), "QUOTA_EXCEEDED"),
        ] {
            assert_eq!(
                of(status, &error),
                PushOutcome::Retry {
                    reason: reason.into(),
                    after: Some(Duration::from_secs(7))
                },
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn an_expired_access_token_is_a_retry_and_third_party_auth_is_configuration() {
        let expired =
            body(serde_json::json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}));
        assert!(matches!(
            of(401, &expired),
            PushOutcome::Retry { reason, after: None } if reason == "UNAUTHENTICATED"
        ));
        assert_eq!(
            of(401, &fcm("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")),
            PushOutcome::Rejected {
                reason: "THIRD_PARTY_AUTH_ERROR".into()
            }
        );
    }

    #[test]
    fn configuration_errors_and_unknown_answers_are_rejected_verbatim() {
        let rejected = |reason: &str| PushOutcome::Rejected {
            reason: reason.into(),
        };
        assert_eq!(
            of(403, &fcm("PERMISSION_DENIED", "SENDER_ID_MISMATCH")),
            rejected("SENDER_ID_MISMATCH")
        );
        let denied = body(serde_json::json!({"error": {"status": "PERMISSION_DENIED"}}));
        assert_eq!(of(403, &denied), rejected("PERMISSION_DENIED"));
        let not_found = body(serde_json::json!({"error": {"status": "NOT_FOUND"}}));
        assert_eq!(of(404, &not_found), rejected("NOT_FOUND"));
        assert_eq!(of(418, &fcm("TEAPOT", "SHINY_NEW")), rejected("SHINY_NEW"));
        assert_eq!(of(502, &ErrorBody::default()), rejected("HTTP 502"));
    }
}
