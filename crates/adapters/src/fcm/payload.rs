//! The FCM messages (incoming call, message, call ended) as the Android app reads them:
//! data messages only (the app builds its own notification or call screen), every
//! data value a string, within FCM's 4,096 bytes, the TTL following the event's
//! deadline.
//!
//! - `telephony_push` ring: `fcmPayload` as Webex sent it, under `webhookTelephonyPush`
//!   (what Android's sample reads: the payload's JSON text, or, when Webex sent a
//!   string, that string), and each top-level entry of an object payload as its own
//!   data entry (a string as it is, any other value as its JSON text).
//! - `callMemberships` ring and message: `webhookData`, the whole webhook as a string.
//! - call ended: `type`, `callId`, `answeredElsewhere` (`"true"`/`"false"`), `source`.
//!
//! The app-side view is documented in `docs/push-payloads.md`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use webex_push_domain::{EventSource, IncomingCall, Push, PushContent, RawJson};

use crate::apns::payload::{
    CALL_ENDED_TTL, INCOMING_CALL_TTL, Keep, MESSAGE_TTL, compact, webhook_data,
};

/// FCM's limit on a message's data: keys and values, in bytes.
pub const DATA_LIMIT: usize = 4096;
/// The key Android's sample reads a `telephony_push` from.
pub const TELEPHONY_PUSH_KEY: &str = "webhookTelephonyPush";
/// FCM's longest TTL (28 days).
const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);

/// A push that cannot be sent in a shape the app reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unsendable {
    /// `fcmPayload` alone is over FCM's data limit: cutting it would break the SDK's
    /// parsing.
    #[error("fcmPayload is over FCM's 4096-byte data limit")]
    PayloadTooLarge,
    /// A `telephony_push` ring with no `fcmPayload` (Webex sent only `apnsPayload`).
    #[error("the telephony_push carries no fcmPayload")]
    NoFcmPayload,
}

impl Unsendable {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Unsendable::PayloadTooLarge => "PayloadTooLarge",
            Unsendable::NoFcmPayload => "NoFcmPayload",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    data: &'a BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    android: Android,
}

#[derive(Serialize)]
struct Android {
    priority: &'static str,
    ttl: String,
}

type Data<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// The request body for `push`, sent at `now`.
pub(crate) fn prepare(push: &Push, now: DateTime<Utc>) -> Result<Vec<u8>, Unsendable> {
    let (data, priority, default_ttl) = match &push.content {
        PushContent::IncomingCall(call) => (ring(call)?, "HIGH", INCOMING_CALL_TTL),
        PushContent::Message(message) => (
            webhook(message.webhook.as_ref(), || {
                [
                    ("type", Cow::Borrowed("message")),
                    ("messageId", Cow::Borrowed(message.message_id.as_str())),
                    ("roomId", Cow::Borrowed(message.room_id.as_str())),
                ]
            }),
            "NORMAL",
            MESSAGE_TTL,
        ),
        PushContent::CallEnded(ended) => {
            let mut data = Data::new();
            data.insert("type".into(), "call_ended".into());
            data.insert("callId".into(), ended.call_id.as_str().into());
            let answered = if ended.answered_elsewhere {
                "true"
            } else {
                "false"
            };
            data.insert("answeredElsewhere".into(), answered.into());
            data.insert("source".into(), ended.source.as_str().into());
            data.insert(
                "occurredAt".into(),
                ended
                    .occurred_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
                    .into(),
            );
            (data, "HIGH", CALL_ENDED_TTL)
        }
    };
    let ttl = push
        .deliver_by
        .map_or(default_ttl, |by| (by - now).to_std().unwrap_or_default())
        .min(MAX_TTL);
    let body = Body {
        message: Message {
            token: push.token.as_str(),
            data: &data,
            android: Android {
                priority,
                ttl: format!("{}s", ttl.as_secs()),
            },
        },
    };
    // Serialising strings into a Vec cannot fail.
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

/// Bytes FCM counts against its limit.
fn size(data: &Data<'_>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Keys FCM keeps for itself: a data entry under one is refused.
fn reserved(key: &str) -> bool {
    matches!(key, "from" | "gcm" | "message_type" | "collapse_key") || key.starts_with("google.")
}

/// An incoming call: `fcmPayload` for `telephony_push`, `webhookData` otherwise.
fn ring(call: &IncomingCall) -> Result<Data<'_>, Unsendable> {
    if call.source != EventSource::TelephonyPush {
        return Ok(webhook(call.webhook.as_ref(), || {
            [
                ("type", Cow::Borrowed("incoming_call")),
                ("callId", Cow::Borrowed(call.call_id.as_str())),
                ("source", Cow::Borrowed(call.source.as_str())),
            ]
        }));
    }
    let payload = call.fcm_payload.as_ref().ok_or(Unsendable::NoFcmPayload)?;
    telephony_push(payload)
}

/// `fcmPayload` as data: whole under [`TELEPHONY_PUSH_KEY`], and entry by entry when an
/// object; the entries go first when they do not all fit.
fn telephony_push(payload: &RawJson) -> Result<Data<'_>, Unsendable> {
    let text = payload.as_str().trim();
    let whole: Cow<'_, str> = match serde_json::from_str::<String>(text) {
        Ok(string) => Cow::Owned(string),
        Err(_) => Cow::Borrowed(text),
    };
    let mut data = Data::new();
    if let Ok(entries) = serde_json::from_str::<BTreeMap<String, &RawValue>>(text) {
        for (key, value) in entries {
            if reserved(&key) {
                tracing::warn!(key, "fcmPayload key is reserved by FCM; left out");
                continue;
            }
            let value = match serde_json::from_str::<String>(value.get()) {
                Ok(string) => Cow::Owned(string),
                Err(_) => Cow::Owned(value.get().to_owned()),
            };
            data.insert(Cow::Owned(key), value);
        }
    }
    let own = data.contains_key(TELEPHONY_PUSH_KEY);
    if !own {
        data.insert(TELEPHONY_PUSH_KEY.into(), whole.clone());
    }
    if size(&data) <= DATA_LIMIT {
        return Ok(data);
    }
    // The entries are a convenience; the whole payload is what the app reads.
    for candidate in [whole.clone(), compact(&whole).into_owned().into()] {
        let mut alone = Data::new();
        alone.insert(TELEPHONY_PUSH_KEY.into(), candidate);
        if size(&alone) <= DATA_LIMIT {
            tracing::debug!("fcmPayload sent whole only, to fit");
            return Ok(alone);
        }
    }
    tracing::error!(
        bytes = whole.len(),
        limit = DATA_LIMIT,
        "fcmPayload is over FCM's data limit; not sent"
    );
    Err(Unsendable::PayloadTooLarge)
}

/// The whole webhook under `webhookData`, squeezed until it fits (whitespace, then
/// only what the app reads), with `fallback` entries when there is none or nothing fits.
fn webhook<'a, const N: usize>(
    webhook: Option<&'a RawJson>,
    fallback: impl Fn() -> [(&'static str, Cow<'a, str>); N],
) -> Data<'a> {
    for keep in [Keep::Verbatim, Keep::Compact, Keep::Essentials] {
        let Some(text) = webhook_data(webhook, keep) else {
            continue;
        };
        let mut data = Data::new();
        data.insert("webhookData".into(), text);
        if size(&data) <= DATA_LIMIT {
            return data;
        }
    }
    let mut data: Data<'a> = fallback()
        .into_iter()
        .map(|(k, v)| (Cow::Borrowed(k), v))
        .collect();
    // Ids are at most a few hundred bytes each; cut a pathological one rather than fail.
    while size(&data) > DATA_LIMIT {
        let Some((_, longest)) = data.iter_mut().max_by_key(|(_, v)| v.len()) else {
            break;
        };
        let keep = longest.len() / 2;
        let cut: String = longest.chars().take(keep).collect();
        *longest = Cow::Owned(cut);
    }
    data
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeDelta;
    use webex_push_domain::{
        AppFlavour, CallEnded, CallId, Caller, Channel, DeviceToken, NewMessage, PersonId,
    };

    use super::*;

    fn person() -> PersonId {
        PersonId::parse(
            "Y2lzY29zcGFyazovL3VzL1BFT1BMRS8wMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDI",
        )
        .unwrap()
    }

    fn push(content: PushContent, deliver_by: Option<DateTime<Utc>>) -> Push {
        Push {
            token: DeviceToken::parse_fcm("fcm:token-1").unwrap(),
            channel: Channel::Alert,
            environment: None,
            bundle_id: None,
            flavour: AppFlavour::KitchenSink,
            content,
            deliver_by,
        }
    }

    fn call(source: EventSource, fcm: Option<&str>, webhook: Option<&str>) -> PushContent {
        PushContent::IncomingCall(Arc::new(IncomingCall {
            call_id: CallId::parse("call-1").unwrap(),
            callee: person(),
            caller: Caller::default(),
            occurred_at: Utc::now(),
            source,
            sdk_payload: None,
            fcm_payload: fcm.map(|t| RawJson::parse(t).unwrap()),
            webhook: webhook.map(|t| RawJson::parse(t).unwrap()),
            callee_field: None,
            audience: None,
        }))
    }

    fn message_of(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["message"].clone()
    }

    #[test]
    fn a_telephony_push_carries_fcm_payload_whole_and_by_entry_at_high_priority() {
        let fcm = r#"{"pushId": "p-1", "version": 2, "nested": {"a": [1, "x"]}}"#;
        let now = Utc::now();
        let body = prepare(
            &push(
                call(EventSource::TelephonyPush, Some(fcm), None),
                Some(now + TimeDelta::seconds(25)),
            ),
            now,
        )
        .unwrap();
        let message = message_of(&body);
        assert_eq!(message["token"], "fcm:token-1");
        assert_eq!(message["android"]["priority"], "HIGH");
        assert_eq!(message["android"]["ttl"], "25s");
        let data = &message["data"];
        assert_eq!(data[TELEPHONY_PUSH_KEY], fcm, "byte for byte");
        assert_eq!(data["pushId"], "p-1");
        assert_eq!(data["version"], "2");
        assert_eq!(data["nested"], r#"{"a": [1, "x"]}"#);
        assert!(data.as_object().unwrap().values().all(|v| v.is_string()));
    }

    #[test]
    fn a_string_fcm_payload_travels_as_that_string() {
        let body = prepare(
            &push(
                call(
                    EventSource::TelephonyPush,
                    Some(r#""{\"pushId\":\"p\"}""#),
                    None,
                ),
                None,
            ),
            Utc::now(),
        )
        .unwrap();
        let message = message_of(&body);
        assert_eq!(message["data"][TELEPHONY_PUSH_KEY], r#"{"pushId":"p"}"#);
        assert_eq!(
            message["android"]["ttl"],
            format!("{}s", INCOMING_CALL_TTL.as_secs())
        );
    }

    #[test]
    fn an_oversized_fcm_payload_goes_whole_only_or_not_at_all() {
        let big = format!(
            r#"{{"a": "{}", "b": "{}"}}"#,
            "x".repeat(1500),
            "y".repeat(1500)
        );
        let body = prepare(
            &push(call(EventSource::TelephonyPush, Some(&big), None), None),
            Utc::now(),
        )
        .unwrap();
        let data = message_of(&body)["data"].clone();
        assert_eq!(data.as_object().unwrap().len(), 1);
        assert_eq!(data[TELEPHONY_PUSH_KEY], big.as_str());

        let huge = format!(r#"{{"a": "{}"}}"#, "x".repeat(5000));
        assert_eq!(
            prepare(
                &push(call(EventSource::TelephonyPush, Some(&huge), None), None),
                Utc::now()
            ),
            Err(Unsendable::PayloadTooLarge)
        );
        assert_eq!(
            prepare(
                &push(call(EventSource::TelephonyPush, None, None), None),
                Utc::now()
            ),
            Err(Unsendable::NoFcmPayload)
        );
    }

    #[test]
    fn reserved_keys_of_fcm_payload_are_left_out() {
        let fcm = r#"{"from": "x", "google.c": "y", "ok": "z"}"#;
        let body = prepare(
            &push(call(EventSource::TelephonyPush, Some(fcm), None), None),
            Utc::now(),
        )
        .unwrap();
        let data = message_of(&body)["data"].clone();
        assert!(data.get("from").is_none() && data.get("google.c").is_none());
        assert_eq!(data["ok"], "z");
        assert_eq!(data[TELEPHONY_PUSH_KEY], fcm);
    }

    #[test]
    fn a_call_membership_ring_and_a_message_carry_the_webhook_as_webhook_data() {
        let webhook = r#"{"resource": "callMemberships", "data": {"callId": "call-1"}}"#;
        let body = prepare(
            &push(
                call(EventSource::CallMemberships, None, Some(webhook)),
                None,
            ),
            Utc::now(),
        )
        .unwrap();
        let message = message_of(&body);
        assert_eq!(message["data"]["webhookData"], webhook);
        assert_eq!(message["android"]["priority"], "HIGH");

        let posted = r#"{"resource": "messages", "data": {"id": "m-1", "roomId": "r-1"}}"#;
        let content = PushContent::Message(Arc::new(NewMessage {
            message_id: "m-1".into(),
            room_id: "r-1".into(),
            room_type: None,
            recipient: person(),
            sender: None,
            sender_email: None,
            occurred_at: Utc::now(),
            webhook: Some(RawJson::parse(posted).unwrap()),
        }));
        let message = message_of(&prepare(&push(content, None), Utc::now()).unwrap());
        assert_eq!(message["data"]["webhookData"], posted);
        assert_eq!(message["android"]["priority"], "NORMAL");
    }

    #[test]
    fn call_ended_is_a_high_priority_data_message_of_strings() {
        let content = PushContent::CallEnded(Arc::new(CallEnded {
            call_id: CallId::parse("call-1").unwrap(),
            person: person(),
            occurred_at: Utc::now(),
            source: EventSource::CallMemberships,
            answered_elsewhere: true,
        }));
        let now = Utc::now();
        let message =
            message_of(&prepare(&push(content, Some(now - TimeDelta::seconds(5))), now).unwrap());
        assert_eq!(message["data"]["type"], "call_ended");
        assert_eq!(message["data"]["callId"], "call-1");
        assert_eq!(message["data"]["answeredElsewhere"], "true");
        assert_eq!(message["android"]["priority"], "HIGH");
        assert_eq!(
            message["android"]["ttl"], "0s",
            "past the deadline: deliver now or never"
        );
    }
}
