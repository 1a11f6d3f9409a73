//! The three APNs payloads (incoming call, message, call ended) and the headers that go
//! with each, built once per push and kept within Apple's size limits.
//!
//! The app-side view of these payloads is documented in `docs/push-payloads.md`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::SecondsFormat;
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::{Map, Value};
use sha1::{Digest as _, Sha1};
use webex_push_domain::{CallEnded, EventSource, IncomingCall, NewMessage, PushContent};

/// Apple's limit for every push but VoIP.
pub const ALERT_PAYLOAD_LIMIT: usize = 4096;
/// Apple's limit for VoIP pushes.
pub const VOIP_PAYLOAD_LIMIT: usize = 5120;
/// Apple's limit on `apns-collapse-id`.
const COLLAPSE_ID_LIMIT: usize = 64;

/// An incoming call is worthless once the caller gave up; an old call must not ring.
pub const INCOMING_CALL_TTL: Duration = Duration::from_secs(20);
/// A "call ended" notice matters only while a phone may still be ringing or show it.
pub const CALL_ENDED_TTL: Duration = Duration::from_secs(60);
/// A message notice stays useful for a while when the phone is offline.
pub const MESSAGE_TTL: Duration = Duration::from_secs(3600);

/// What the request for one push carries besides the token and the topic.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) body: Bytes,
    pub(crate) push_type: &'static str,
    pub(crate) priority: &'static str,
    /// Unix seconds.
    pub(crate) expiration: u64,
    pub(crate) collapse_id: Option<String>,
}

/// How much a payload is cut down to fit.
#[derive(Debug, Clone, Copy)]
struct Trim {
    /// Display texts (names, numbers, e-mails) longer than this many characters are
    /// shortened with an ellipsis.
    text: Option<usize>,
    /// Whether the Webex event for the SDK is kept.
    event: bool,
}

/// Tried in order until the payload fits: shorten display text first, drop the bulky
/// SDK event only as a last resort.
const TRIMS: [Trim; 8] = [
    Trim {
        text: None,
        event: true,
    },
    Trim {
        text: Some(256),
        event: true,
    },
    Trim {
        text: Some(64),
        event: true,
    },
    Trim {
        text: Some(16),
        event: true,
    },
    Trim {
        text: None,
        event: false,
    },
    Trim {
        text: Some(256),
        event: false,
    },
    Trim {
        text: Some(64),
        event: false,
    },
    Trim {
        text: Some(16),
        event: false,
    },
];

/// Builds the request body and headers for `content`, sent at `now`.
pub(crate) fn prepare(content: &PushContent, now: SystemTime) -> Prepared {
    let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    match content {
        PushContent::IncomingCall(call) => Prepared {
            body: fit(
                VOIP_PAYLOAD_LIMIT,
                |trim| incoming_call(call, trim),
                || minimal("incoming_call", call.call_id.as_str()),
            ),
            push_type: "voip",
            priority: "10",
            expiration: (unix + INCOMING_CALL_TTL).as_secs(),
            collapse_id: None,
        },
        PushContent::Message(message) => Prepared {
            body: fit(
                ALERT_PAYLOAD_LIMIT,
                |trim| new_message(message, trim),
                || {
                    serde_json::to_vec(&Body {
                        aps: Aps {
                            alert: Some(Alert {
                                title: "New message",
                                body: Some(Cow::Borrowed("Someone")),
                            }),
                            sound: Some("default"),
                            ..Aps::default()
                        },
                        webex: MessageWebex {
                            kind: "message",
                            ..MessageWebex::default()
                        },
                    })
                },
            ),
            push_type: "alert",
            priority: "10",
            expiration: (unix + MESSAGE_TTL).as_secs(),
            collapse_id: None,
        },
        PushContent::CallEnded(ended) => Prepared {
            body: fit(
                ALERT_PAYLOAD_LIMIT,
                |trim| call_ended(ended, trim),
                || minimal("call_ended", ended.call_id.as_str()),
            ),
            push_type: "alert",
            priority: "10",
            expiration: (unix + CALL_ENDED_TTL).as_secs(),
            // A second "ended" for the same call replaces the first on the phone.
            collapse_id: Some(collapse_id(ended.call_id.as_str())),
        },
    }
}

/// Room for a typical payload, so serialising rarely grows the buffer.
const BODY_CAPACITY: usize = 512;

/// Serialises the first trim of `build` that fits in `limit` bytes, else `fallback`
/// (which always fits: a type and a call id of at most 256 bytes).
///
/// The payloads are `#[derive(Serialize)]` structs borrowing from the push, written
/// straight to bytes: no `serde_json::Value` tree is built and freed per push.
fn fit<F>(
    limit: usize,
    build: impl Fn(Trim) -> F,
    fallback: impl Fn() -> serde_json::Result<Vec<u8>>,
) -> Bytes
where
    F: Serialize,
{
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    for trim in TRIMS {
        body.clear();
        // Serialising these structs cannot fail (string keys only).
        let written = serde_json::to_writer(&mut body, &build(trim)).is_ok();
        if written && !body.is_empty() && body.len() <= limit {
            if trim.text.is_some() || !trim.event {
                tracing::debug!(
                    text_cut_to = trim.text,
                    sdk_event_kept = trim.event,
                    bytes = body.len(),
                    limit,
                    "payload shortened to fit"
                );
            }
            return Bytes::from(body);
        }
    }
    tracing::warn!(limit, "payload cut to its minimum to fit");
    Bytes::from(fallback().unwrap_or_else(|_| b"{\"aps\":{}}".to_vec()))
}

fn minimal(kind: &'static str, call_id: &str) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Body {
        aps: Aps::default(),
        webex: MinimalWebex { kind, call_id },
    })
}

/// `text` cut to at most `max` characters, the last one an ellipsis when cut.
fn shorten(text: &str, max: Option<usize>) -> Cow<'_, str> {
    match max {
        Some(max) if text.chars().count() > max => {
            let kept: String = text.chars().take(max.saturating_sub(1)).collect();
            Cow::Owned(format!("{kept}…"))
        }
        _ => Cow::Borrowed(text),
    }
}

/// A payload: Apple's `aps` dictionary and our `webex` one.
#[derive(Serialize)]
struct Body<'a, W> {
    aps: Aps<'a>,
    webex: W,
}

/// The `aps` keys we use; absent ones are left out (`{}` when none).
#[derive(Serialize, Default)]
struct Aps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<Alert<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'static str>,
    #[serde(rename = "thread-id", skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    mutable_content: Option<u8>,
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MinimalWebex<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    call_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallWebex<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_number: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_email: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_person_id: Option<&'a str>,
    callee_person_id: &'a str,
    source: &'static str,
    occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Value>,
}

/// The incoming-call payload. With `top`, the SDK's `apnsPayload` keys come first at
/// the top level (its own `aps` kept, else `{}`; its `webex`, if any, replaced by ours).
struct CallBody<'a> {
    top: Option<&'a Map<String, Value>>,
    webex: CallWebex<'a>,
}

impl Serialize for CallBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut has_aps = false;
        for (key, value) in self.top.into_iter().flatten() {
            match key.as_str() {
                "webex" => continue,
                "aps" => has_aps = true,
                _ => {}
            }
            map.serialize_entry(key, value)?;
        }
        if !has_aps {
            map.serialize_entry("aps", &Aps::default())?;
        }
        map.serialize_entry("webex", &self.webex)?;
        map.end()
    }
}

/// The VoIP payload: everything CallKit needs at once, plus the event for the SDK.
///
/// For `telephony_push` the event's `apnsPayload` keys sit at the top level, exactly as
/// the Webex Calling SDK expects the PushKit payload; our `webex` object is added next
/// to them. For other sources the event's data travels as `webex.event`.
fn incoming_call<'a>(call: &'a IncomingCall, trim: Trim) -> CallBody<'a> {
    let caller = &call.caller;
    let text = trim.text;
    let short = |value: &'a Option<String>| value.as_deref().map(|t| shorten(t, text));
    let sdk_at_top = match (&call.sdk_payload, call.source) {
        (Some(Value::Object(apns_payload)), EventSource::TelephonyPush) => Some(apns_payload),
        _ => None,
    };
    let event = match (&call.sdk_payload, sdk_at_top) {
        (Some(event), None) if trim.event => Some(event),
        _ => None,
    };
    CallBody {
        top: sdk_at_top.filter(|_| trim.event),
        webex: CallWebex {
            kind: "incoming_call",
            call_id: call.call_id.as_str(),
            caller_name: short(&caller.name),
            caller_number: short(&caller.number),
            caller_email: short(&caller.email),
            caller_person_id: caller.person.as_ref().map(|p| p.original()),
            callee_person_id: call.callee.original(),
            source: call.source.as_str(),
            occurred_at: call
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
        },
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct MessageWebex<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_person_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_email: Option<&'a str>,
}

/// The alert for a new message: Webex never sends the text, so the body names the
/// sender; `thread-id` groups a room's notices.
fn new_message(message: &NewMessage, trim: Trim) -> Body<'_, MessageWebex<'_>> {
    let body = shorten(
        message.sender_email.as_deref().unwrap_or("Someone"),
        trim.text,
    );
    Body {
        aps: Aps {
            alert: Some(Alert {
                title: "New message",
                body: Some(body),
            }),
            sound: Some("default"),
            thread_id: Some(&message.room_id),
            mutable_content: Some(1),
            content_available: None,
        },
        webex: MessageWebex {
            kind: "message",
            message_id: Some(&message.message_id),
            room_id: Some(&message.room_id),
            room_type: message.room_type.as_deref(),
            sender_person_id: message.sender.as_ref().map(|p| p.original()),
            sender_email: message.sender_email.as_deref().filter(|_| trim.event),
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndedWebex<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    call_id: &'a str,
    answered_elsewhere: bool,
    source: &'static str,
    occurred_at: String,
}

/// The notice that a call ended: a visible alert (priority 10, so it is not delayed
/// like a background push) that also wakes a running app (`content-available`) to end
/// its CallKit call. Never VoIP: iOS would demand a new CallKit call for it.
fn call_ended(ended: &CallEnded, _trim: Trim) -> Body<'_, EndedWebex<'_>> {
    let title = if ended.answered_elsewhere {
        "Answered on another device"
    } else {
        "Call ended"
    };
    Body {
        aps: Aps {
            alert: Some(Alert { title, body: None }),
            content_available: Some(1),
            ..Aps::default()
        },
        webex: EndedWebex {
            kind: "call_ended",
            call_id: ended.call_id.as_str(),
            answered_elsewhere: ended.answered_elsewhere,
            source: ended.source.as_str(),
            occurred_at: ended
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        },
    }
}

/// `id` if it fits Apple's 64 bytes, else its SHA-1 in hex (40 bytes, stable per id).
pub(crate) fn collapse_id(id: &str) -> String {
    if id.len() <= COLLAPSE_ID_LIMIT {
        id.to_owned()
    } else {
        hex::encode(Sha1::digest(id.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone as _, Utc};
    use serde_json::json;
    use webex_push_domain::{CallId, Caller, PersonId};

    use super::*;

    fn person() -> PersonId {
        PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap()
    }

    fn call(name: &str, source: EventSource, sdk: Option<Value>) -> PushContent {
        PushContent::IncomingCall(Arc::new(IncomingCall {
            call_id: CallId::parse("call-1").unwrap(),
            callee: person(),
            caller: Caller {
                name: Some(name.to_owned()),
                number: Some("+15551234".into()),
                email: None,
                person: None,
            },
            occurred_at: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            source,
            sdk_payload: sdk,
        }))
    }

    fn parse(prepared: &Prepared) -> Value {
        serde_json::from_slice(&prepared.body).unwrap()
    }

    #[test]
    fn incoming_call_carries_what_callkit_needs_and_the_event() {
        let sdk = json!({"callId": "call-1", "extra": [1, 2]});
        let prepared = prepare(
            &call("Ada", EventSource::CallMemberships, Some(sdk.clone())),
            SystemTime::now(),
        );
        assert_eq!(prepared.push_type, "voip");
        assert_eq!(prepared.priority, "10");
        let body = parse(&prepared);
        assert_eq!(body["aps"], json!({}));
        assert_eq!(body["webex"]["type"], "incoming_call");
        assert_eq!(body["webex"]["callerName"], "Ada");
        assert_eq!(body["webex"]["callerNumber"], "+15551234");
        assert_eq!(body["webex"]["event"], sdk);
        assert_eq!(body["webex"]["occurredAt"], "2025-01-01T00:00:00.000Z");
    }

    #[test]
    fn telephony_push_puts_the_apns_payload_at_the_top_level() {
        let sdk = json!({"webexCallId": "x", "data": {"k": "v"}});
        let body = parse(&prepare(
            &call("Ada", EventSource::TelephonyPush, Some(sdk)),
            SystemTime::now(),
        ));
        assert_eq!(body["webexCallId"], "x");
        assert_eq!(body["data"]["k"], "v");
        assert_eq!(body["aps"], json!({}));
        assert!(body["webex"].get("event").is_none());
        assert_eq!(body["webex"]["callId"], "call-1");
    }

    #[test]
    fn a_huge_caller_name_is_shortened_and_the_event_kept() {
        let name = "N".repeat(20_000);
        let sdk = json!({"blob": "x".repeat(3000)});
        let prepared = prepare(
            &call(&name, EventSource::CallMemberships, Some(sdk.clone())),
            SystemTime::now(),
        );
        assert!(prepared.body.len() <= VOIP_PAYLOAD_LIMIT);
        let body = parse(&prepared);
        let shown = body["webex"]["callerName"].as_str().unwrap();
        assert!(shown.ends_with('…') && shown.starts_with("NNN"));
        assert_eq!(body["webex"]["event"], sdk);
    }

    #[test]
    fn an_event_too_big_for_any_trim_is_dropped_last() {
        let sdk = json!({"blob": "x".repeat(10_000)});
        let prepared = prepare(
            &call("Ada", EventSource::TelephonyPush, Some(sdk)),
            SystemTime::now(),
        );
        assert!(prepared.body.len() <= VOIP_PAYLOAD_LIMIT);
        let body = parse(&prepared);
        assert!(body.get("blob").is_none());
        assert_eq!(body["webex"]["callerName"], "Ada");
    }

    #[test]
    fn message_alert_names_the_sender_and_groups_by_room() {
        let content = PushContent::Message(Arc::new(NewMessage {
            message_id: "m1".into(),
            room_id: "r1".into(),
            room_type: Some("direct".into()),
            recipient: person(),
            sender: Some(person()),
            sender_email: Some(format!("{}@example.com", "a".repeat(5000))),
            occurred_at: Utc::now(),
        }));
        let prepared = prepare(&content, SystemTime::now());
        assert_eq!(prepared.push_type, "alert");
        assert!(prepared.body.len() <= ALERT_PAYLOAD_LIMIT);
        let body = parse(&prepared);
        assert_eq!(body["aps"]["alert"]["title"], "New message");
        assert!(
            body["aps"]["alert"]["body"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );
        assert_eq!(body["aps"]["thread-id"], "r1");
        assert_eq!(body["aps"]["mutable-content"], 1);
        assert_eq!(body["webex"]["roomId"], "r1");
        assert_eq!(body["webex"]["roomType"], "direct");
    }

    #[test]
    fn call_ended_is_an_alert_collapsed_per_call() {
        let long_id = "c".repeat(200);
        let content = PushContent::CallEnded(Arc::new(CallEnded {
            call_id: CallId::parse(&long_id).unwrap(),
            person: person(),
            occurred_at: Utc::now(),
            source: EventSource::CallMemberships,
            answered_elsewhere: true,
        }));
        let prepared = prepare(&content, SystemTime::now());
        assert_eq!(prepared.push_type, "alert");
        assert_eq!(prepared.priority, "10");
        assert_eq!(prepared.collapse_id.as_deref().unwrap().len(), 40);
        let body = parse(&prepared);
        assert_eq!(body["webex"]["answeredElsewhere"], true);
        assert_eq!(body["aps"]["content-available"], 1);
        assert_eq!(collapse_id("short"), "short");
    }
}
