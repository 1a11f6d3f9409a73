//! The one table from APNs' answer to the PushGateway outcome.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use webex_push_domain::{ApnsEnvironment, PushOutcome};

/// What APNs answers in the body of an error (`{"reason": ..., "timestamp": ...}`).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) reason: Option<String>,
    /// Milliseconds since the epoch; only with 410.
    pub(crate) timestamp: Option<i64>,
}

/// Classifies one APNs answer. Exhaustive: every status and reason lands somewhere,
/// and an unknown one is `Rejected` with the reason kept as it came.
///
/// - `status` 200 is `Delivered` with `apns_id` and `environment`;
/// - dead token (`TokenInvalid`): 400 `BadDeviceToken` / `DeviceTokenNotForTopic`
///   (since `sent_at`: Apple gives no time) and 410 `Unregistered` / `ExpiredToken`
///   (since the 410 `timestamp`, else `sent_at`);
/// - passing faults (`Retry`, after `retry_after` when APNs sent one): 429 (any
///   reason), 500, 503, 400 `IdleTimeout`, and 403 `ExpiredProviderToken` (a new token
///   fixes it; the client mints one and retries once before answering);
/// - everything else, known or not, is `Rejected`: our request or configuration is wrong
///   and retrying cannot fix it.
pub fn classify(
    status: u16,
    reason: Option<&str>,
    timestamp_ms: Option<i64>,
    retry_after: Option<Duration>,
    sent_at: DateTime<Utc>,
    apns_id: &str,
    environment: ApnsEnvironment,
) -> PushOutcome {
    let named = |fallback: &str| reason.unwrap_or(fallback).to_owned();
    let dead = |since: DateTime<Utc>| PushOutcome::TokenInvalid {
        reason: named("Unregistered"),
        since,
    };
    let retry = |fallback: &str| PushOutcome::Retry {
        reason: named(fallback),
        after: retry_after,
    };
    match (status, reason) {
        (200, _) => PushOutcome::Delivered {
            id: apns_id.to_owned(),
            environment: Some(environment),
        },
        (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => dead(sent_at),
        (410, Some("Unregistered" | "ExpiredToken") | None) => {
            let since = timestamp_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .unwrap_or(sent_at);
            dead(since)
        }
        (400, Some("IdleTimeout")) => retry("IdleTimeout"),
        (403, Some("ExpiredProviderToken")) => retry("ExpiredProviderToken"),
        // Any 429 is a request to slow down, whatever reason comes with it.
        (429, _) => retry("TooManyRequests"),
        (500, _) => retry("InternalServerError"),
        (503, _) => retry("ServiceUnavailable"),
        // 400 request errors, 403 configuration, 404/405 bugs, 413, an unknown reason
        // on a known status, and unknown statuses: nothing a retry fixes.
        (status, _) => PushOutcome::Rejected {
            reason: reason.map_or_else(|| format!("HTTP {status}"), str::to_owned),
        },
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: ApnsEnvironment = ApnsEnvironment::Production;

    fn sent() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
    }

    fn of(status: u16, reason: &str) -> PushOutcome {
        classify(status, Some(reason), None, None, sent(), "id", ENV)
    }

    fn rejected(reason: &str) -> PushOutcome {
        PushOutcome::Rejected {
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn ok_is_delivered_with_the_id_and_the_environment() {
        assert_eq!(
            classify(
                200,
                None,
                None,
                None,
                sent(),
                "abc",
                ApnsEnvironment::Sandbox
            ),
            PushOutcome::Delivered {
                id: "abc".into(),
                environment: Some(ApnsEnvironment::Sandbox)
            }
        );
    }

    #[test]
    fn dead_tokens_are_invalid_since_the_timestamp_or_the_sending() {
        for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            assert_eq!(
                of(400, reason),
                PushOutcome::TokenInvalid {
                    reason: reason.into(),
                    since: sent()
                }
            );
        }
        let at = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        for reason in ["Unregistered", "ExpiredToken"] {
            assert_eq!(
                classify(
                    410,
                    Some(reason),
                    Some(at.timestamp_millis()),
                    None,
                    sent(),
                    "id",
                    ENV
                ),
                PushOutcome::TokenInvalid {
                    reason: reason.into(),
                    since: at
                }
            );
        }
        // A 410 without a timestamp: the token is dead as of the sending.
        assert_eq!(
            of(410, "Unregistered"),
            PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since: sent()
            }
        );
    }

    #[test]
    fn passing_faults_are_retried_honouring_retry_after() {
        let cases = [
            (400, "IdleTimeout"),
            (403, "ExpiredProviderToken"),
            (429, "TooManyRequests"),
            (429, "TooManyProviderTokenUpdates"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (503, "Shutdown"),
        ];
        for (status, reason) in cases {
            assert_eq!(
                classify(
                    status,
                    Some(reason),
                    None,
                    Some(Duration::from_secs(7)),
                    sent(),
                    "id",
                    ENV
                ),
                PushOutcome::Retry {
                    reason: reason.into(),
                    after: Some(Duration::from_secs(7))
                },
                "{status} {reason}"
            );
        }
        assert_eq!(
            classify(503, None, None, None, sent(), "id", ENV),
            PushOutcome::Retry {
                reason: "ServiceUnavailable".into(),
                after: None
            }
        );
    }

    #[test]
    fn request_and_configuration_errors_are_rejected() {
        let cases = [
            (400, "BadCollapseId"),
            (400, "BadExpirationDate"),
            (400, "BadMessageId"),
            (400, "BadPriority"),
            (400, "BadTopic"),
            (400, "DuplicateHeaders"),
            (400, "InvalidPushType"),
            (400, "MissingDeviceToken"),
            (400, "MissingTopic"),
            (400, "PayloadEmpty"),
            (400, "TopicDisallowed"),
            (403, "InvalidProviderToken"),
            (403, "MissingProviderToken"),
            (403, "BadCertificate"),
            (403, "BadCertificateEnvironment"),
            (403, "Forbidden"),
            (404, "BadPath"),
            (405, "MethodNotAllowed"),
            (413, "PayloadTooLarge"),
        ];
        for (status, reason) in cases {
            assert_eq!(of(status, reason), rejected(reason), "{status} {reason}");
        }
    }

    #[test]
    fn unknown_reasons_and_statuses_are_rejected_and_kept_verbatim() {
        assert_eq!(of(400, "SomethingNew"), rejected("SomethingNew"));
        assert_eq!(of(403, "ShinyNewReason"), rejected("ShinyNewReason"));
        assert_eq!(of(410, "GoneForGood"), rejected("GoneForGood"));
        assert_eq!(of(418, "Teapot"), rejected("Teapot"));
        assert_eq!(
            classify(502, None, None, None, sent(), "id", ENV),
            rejected("HTTP 502")
        );
        assert_eq!(
            classify(400, None, None, None, sent(), "id", ENV),
            rejected("HTTP 400")
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("30", sent()),
            Some(Duration::from_secs(30))
        );
        let date = "Thu, 02 Jan 2025 03:05:05 GMT";
        assert_eq!(
            parse_retry_after(date, sent()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", sent()), None);
    }
}
