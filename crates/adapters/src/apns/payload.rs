//! The APNs payloads (incoming call, message, call ended) in the shape each app reads,
//! and the headers that go with each, built once per event and kept within Apple's
//! size limits.
//!
//! Two flavours of app are in the field ([`AppFlavour`]): the 2017 sample's reads our
//! `webex` dictionary from every push; Cisco's KitchenSink (SDK 3.x) reads the SDK's
//! `telephony_push` payload from VoIP pushes and `webhookData` (the whole webhook, as
//! a string) from alerts. Whatever Webex wrote for the SDK or the app reaches the phone
//! as written: its keys are never overwritten, and a key of ours never repeats one of
//! them (no JSON object we send carries a key twice).
//!
//! The app-side view of these payloads is documented in `docs/push-payloads.md`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::SecondsFormat;
use serde::Serialize;
use serde::de::IgnoredAny;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha1::{Digest as _, Sha1};
use webex_push_domain::{
    AppFlavour, CallEnded, Channel, EventSource, IncomingCall, NewMessage, PushContent, RawJson,
};

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

/// The names our dictionary takes next to the SDK's keys in a seed app's
/// `telephony_push` ring: the first one the SDK's payload does not use.
pub const OUR_KEYS: [&str; 3] = ["webex", "webexPush", "webex-push"];

/// What the request for one push carries besides the token and the topic.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) body: Bytes,
    /// The channel the payload is for: a push whose token serves another is not sent.
    pub(crate) channel: Channel,
    pub(crate) push_type: &'static str,
    pub(crate) priority: &'static str,
    /// Unix seconds.
    pub(crate) expiration: u64,
    pub(crate) collapse_id: Option<String>,
}

/// A push that cannot be sent in a shape its app reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unsendable {
    /// KitchenSink's VoIP push is the SDK's payload and nothing else: one over Apple's
    /// limit even without whitespace cannot be cut to something the SDK reads.
    #[error("the SDK's payload is over Apple's VoIP limit")]
    PayloadTooLarge,
    /// A ring to KitchenSink from a source it does not ring from (it rings Webex
    /// Calling calls from their `telephony_push`).
    #[error("no payload of this event is one the app reads")]
    NotForThisApp,
}

impl Unsendable {
    /// The reason recorded as the push's outcome (Apple's name where there is one).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Unsendable::PayloadTooLarge => "PayloadTooLarge",
            Unsendable::NotForThisApp => "NotForThisApp",
        }
    }
}

/// How much a payload is cut down to fit.
#[derive(Debug, Clone, Copy)]
struct Trim {
    /// Display texts (names, numbers, e-mails) longer than this many characters are
    /// shortened with an ellipsis.
    text: Option<usize>,
    /// How much of the Webex event (for the SDK, or the app's `webhookData`) is kept.
    event: Keep,
}

/// How much of the Webex event a payload carries, from all of it to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// As Webex wrote it.
    Verbatim,
    /// Byte for byte but for the whitespace between tokens.
    Compact,
    /// Only what KitchenSink reads from `webhookData`: `resource`, `event`, and
    /// `data`'s ids and state. (A seed payload then carries no event.)
    Essentials,
    Dropped,
}

const fn trim(text: Option<usize>, event: Keep) -> Trim {
    Trim { text, event }
}

/// Tried in order until the payload fits: shorten display text first, then squeeze the
/// Webex event, and drop it only as a last resort.
const TRIMS: [Trim; 11] = [
    trim(None, Keep::Verbatim),
    trim(Some(256), Keep::Verbatim),
    trim(Some(64), Keep::Verbatim),
    trim(Some(16), Keep::Verbatim),
    trim(Some(16), Keep::Compact),
    trim(Some(16), Keep::Essentials),
    trim(None, Keep::Dropped),
    trim(Some(256), Keep::Dropped),
    trim(Some(64), Keep::Dropped),
    trim(Some(16), Keep::Dropped),
    trim(Some(0), Keep::Dropped),
];

/// Builds the request body and headers for `content` as an app of `flavour` reads it,
/// sent at `now`.
pub(crate) fn prepare(
    content: &PushContent,
    flavour: AppFlavour,
    now: SystemTime,
) -> Result<Prepared, Unsendable> {
    let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let expires = |ttl: Duration| (unix + ttl).as_secs();
    let alert = |body: Bytes, ttl: Duration| Prepared {
        body,
        channel: Channel::Alert,
        push_type: "alert",
        priority: "10",
        expiration: expires(ttl),
        collapse_id: None,
    };
    let voip = |body: Bytes| Prepared {
        body,
        channel: Channel::Voip,
        push_type: "voip",
        priority: "10",
        expiration: expires(INCOMING_CALL_TTL),
        collapse_id: None,
    };
    match (content, flavour) {
        (PushContent::IncomingCall(call), AppFlavour::Seed) => Ok(voip(fit(
            VOIP_PAYLOAD_LIMIT,
            |trim, out| seed_incoming_call(call, trim, out),
            || minimal("incoming_call", call.call_id.as_str()),
        ))),
        (PushContent::IncomingCall(call), AppFlavour::KitchenSink) => match call.source {
            EventSource::TelephonyPush => verbatim_voip(call).map(voip),
            EventSource::CallMemberships => Ok(alert(
                fit(
                    ALERT_PAYLOAD_LIMIT,
                    |trim, out| kitchensink_call(call, trim, out),
                    || bare_alert("Incoming call"),
                ),
                INCOMING_CALL_TTL,
            )),
            EventSource::TelephonyCalls | EventSource::Messages => Err(Unsendable::NotForThisApp),
        },
        (PushContent::Message(message), flavour) => Ok(alert(
            fit(
                ALERT_PAYLOAD_LIMIT,
                |trim, out| new_message(message, flavour, trim, out),
                || bare_alert("New message"),
            ),
            MESSAGE_TTL,
        )),
        (PushContent::CallEnded(ended), _) => Ok(Prepared {
            // A second "ended" for the same call replaces the first on the phone.
            collapse_id: Some(collapse_id(ended.call_id.as_str())),
            ..alert(
                fit(
                    ALERT_PAYLOAD_LIMIT,
                    |trim, out| serde_json::to_writer(out, &call_ended(ended, trim)),
                    || minimal("call_ended", ended.call_id.as_str()),
                ),
                CALL_ENDED_TTL,
            )
        }),
    }
}

/// Room for a typical payload, so serialising rarely grows the buffer.
const BODY_CAPACITY: usize = 512;

/// Writes the first trim of `build` that fits in `limit` bytes, else `fallback`
/// (which always fits: a title, or a type and a call id of at most 256 bytes).
///
/// The payloads are `#[derive(Serialize)]` structs borrowing from the push, and the
/// Webex JSON they carry is copied as text: no `serde_json::Value` tree is built and
/// freed per push.
fn fit(
    limit: usize,
    build: impl Fn(Trim, &mut Vec<u8>) -> serde_json::Result<()>,
    fallback: impl Fn() -> serde_json::Result<Vec<u8>>,
) -> Bytes {
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    for trim in TRIMS {
        body.clear();
        let written = build(trim, &mut body).is_ok();
        if written && !body.is_empty() && body.len() <= limit {
            if trim.text.is_some() || trim.event != Keep::Verbatim {
                tracing::debug!(
                    text_cut_to = trim.text,
                    webex_event = ?trim.event,
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

fn bare_alert(title: &'static str) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WebhookAlert {
        aps: Aps {
            alert: Some(Alert { title, body: None }),
            sound: Some("default"),
            ..Aps::default()
        },
        webhook_data: None,
    })
}

/// `text` cut to at most `max` characters, the last one an ellipsis when cut.
fn shorten(text: &str, max: Option<usize>) -> Cow<'_, str> {
    match max {
        Some(max) if text.chars().count() > max => {
            let kept: String = text.chars().take(max.saturating_sub(1)).collect();
            Cow::Owned(if max == 0 { kept } else { format!("{kept}…") })
        }
        _ => Cow::Borrowed(text),
    }
}

/// `json` without the whitespace between its tokens; strings are kept byte for byte.
pub(crate) fn compact(json: &str) -> Cow<'_, str> {
    let is_space = |c: char| matches!(c, ' ' | '\n' | '\r' | '\t');
    if !json.contains(is_space) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !is_space(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The Webex JSON `raw` as far as `keep` keeps it: `None` when dropped.
fn kept(raw: &RawJson, keep: Keep) -> Option<Cow<'_, str>> {
    match keep {
        Keep::Verbatim => Some(Cow::Borrowed(raw.as_str().trim())),
        Keep::Compact => Some(compact(raw.as_str().trim())),
        Keep::Essentials | Keep::Dropped => None,
    }
}

/// Writes the object `ours` and the keys of the JSON object `theirs` (written as is)
/// as one object. The caller makes sure the two share no key.
fn write_spliced(out: &mut Vec<u8>, ours: &impl Serialize, theirs: &str) -> serde_json::Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, ours)?;
    let inner = theirs
        .trim()
        .strip_prefix('{')
        .ok_or_else(|| serde::ser::Error::custom("the SDK's payload is not an object"))?;
    if inner.trim_start().starts_with('}') {
        return Ok(());
    }
    if out.len() - start == 2 {
        // `{}`: theirs alone.
        out.truncate(start);
        out.extend_from_slice(theirs.trim().as_bytes());
        return Ok(());
    }
    out.pop(); // our closing brace
    out.push(b',');
    out.extend_from_slice(inner.as_bytes());
    Ok(())
}

/// The top-level keys of a JSON object's text (none for anything else).
fn top_level_keys(object: &str) -> HashMap<String, IgnoredAny> {
    serde_json::from_str(object).unwrap_or_default()
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
    /// The event's `data` as Webex wrote it (not for `telephony_push`, whose payload
    /// sits at the top level).
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a RawValue>,
}

/// Our keys next to the SDK's in a seed app's `telephony_push` ring: `aps` unless the
/// SDK's payload has its own, and our dictionary under `key` (none when the SDK's
/// payload uses every name of [`OUR_KEYS`]).
struct SeedTop<'a> {
    aps: bool,
    key: Option<&'static str>,
    webex: &'a CallWebex<'a>,
}

impl Serialize for SeedTop<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.aps {
            map.serialize_entry("aps", &Aps::default())?;
        }
        if let Some(key) = self.key {
            map.serialize_entry(key, self.webex)?;
        }
        map.end()
    }
}

/// The seed app's VoIP payload: everything CallKit needs at once, plus the event for
/// the SDK. For `telephony_push` the SDK's `apnsPayload` keys sit at the top level as
/// Webex wrote them, exactly as the Webex Calling SDK expects the PushKit payload, and
/// our `webex` dictionary is added next to them. For other sources the event's data
/// travels as `webex.event`.
fn seed_incoming_call<'a>(
    call: &'a IncomingCall,
    trim: Trim,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let caller = &call.caller;
    let text = trim.text;
    let short = |value: &'a Option<String>| value.as_deref().map(|t| shorten(t, text));
    let sdk = call
        .sdk_payload
        .as_ref()
        .and_then(|raw| kept(raw, trim.event));
    let at_top = call.source == EventSource::TelephonyPush;
    let event = match (&sdk, at_top) {
        (Some(text), false) => Some(serde_json::from_str::<&RawValue>(text)?),
        _ => None,
    };
    let webex = CallWebex {
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
    };
    match sdk.as_deref().filter(|_| at_top) {
        Some(top) => {
            let taken = top_level_keys(top);
            let ours = SeedTop {
                aps: !taken.contains_key("aps"),
                key: OUR_KEYS.into_iter().find(|key| !taken.contains_key(*key)),
                webex: &webex,
            };
            write_spliced(out, &ours, top)
        }
        None => serde_json::to_writer(
            out,
            &Body {
                aps: Aps::default(),
                webex: &webex,
            },
        ),
    }
}

/// KitchenSink's VoIP payload: the SDK's `apnsPayload` and nothing else (but an empty
/// `aps` when it has none), as Webex wrote it, else without its whitespace. Nothing
/// else fits KitchenSink's PushKit handler, so one too big even then is not sent.
fn verbatim_voip(call: &IncomingCall) -> Result<Bytes, Unsendable> {
    let Some(payload) = call.sdk_payload.as_ref().filter(|raw| raw.is_object()) else {
        return Err(Unsendable::NotForThisApp);
    };
    let has_aps = top_level_keys(payload.as_str()).contains_key("aps");
    for keep in [Keep::Verbatim, Keep::Compact] {
        let Some(text) = kept(payload, keep) else {
            continue;
        };
        let mut body = Vec::with_capacity(text.len() + 10);
        let written = if has_aps {
            body.extend_from_slice(text.as_bytes());
            Ok(())
        } else {
            write_spliced(&mut body, &SdkAps, &text)
        };
        if written.is_ok() && body.len() <= VOIP_PAYLOAD_LIMIT {
            return Ok(Bytes::from(body));
        }
    }
    tracing::error!(
        bytes = payload.as_str().len(),
        limit = VOIP_PAYLOAD_LIMIT,
        "the SDK's VoIP payload is over Apple's limit; not sent"
    );
    Err(Unsendable::PayloadTooLarge)
}

/// `{"aps":{}}`: what a VoIP payload without an `aps` of its own gets.
struct SdkAps;

impl Serialize for SdkAps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("aps", &Aps::default())?;
        map.end()
    }
}

/// An alert KitchenSink reads: `aps`, and the whole webhook as a string.
#[derive(Serialize)]
struct WebhookAlert<'a> {
    aps: Aps<'a>,
    #[serde(rename = "webhookData", skip_serializing_if = "Option::is_none")]
    webhook_data: Option<Cow<'a, str>>,
}

/// The webhook for `webhookData` as far as `keep` keeps it.
pub(crate) fn webhook_data(webhook: Option<&RawJson>, keep: Keep) -> Option<Cow<'_, str>> {
    let webhook = webhook?;
    if keep != Keep::Essentials {
        return kept(webhook, keep);
    }
    let Value::Object(envelope) = webhook.value() else {
        return None;
    };
    let mut essentials = serde_json::Map::new();
    for key in ["id", "resource", "event"] {
        if let Some(value) = envelope.get(key) {
            essentials.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(Value::Object(data)) = envelope.get("data") {
        let data: serde_json::Map<String, Value> = ["id", "callId", "roomId", "personId", "state"]
            .into_iter()
            .filter_map(|key| Some((key.to_owned(), data.get(key)?.clone())))
            .collect();
        essentials.insert("data".into(), Value::Object(data));
    }
    Some(Cow::Owned(Value::Object(essentials).to_string()))
}

/// KitchenSink's alert for a `callMemberships` ring: it reads the call from
/// `webhookData` (`resource`, then `data.callId`).
fn kitchensink_call(call: &IncomingCall, trim: Trim, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(
        out,
        &WebhookAlert {
            aps: Aps {
                alert: Some(Alert {
                    title: "Incoming call",
                    body: call
                        .caller
                        .display_name()
                        .map(|name| shorten(name, trim.text)),
                }),
                sound: Some("default"),
                ..Aps::default()
            },
            webhook_data: webhook_data(call.webhook.as_ref(), trim.event),
        },
    )
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
/// sender; `thread-id` groups a room's notices. A seed app reads our `webex`
/// dictionary, KitchenSink the webhook from `webhookData` (`data.id`, `data.roomId`).
fn new_message(
    message: &NewMessage,
    flavour: AppFlavour,
    trim: Trim,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let shortened = trim.event == Keep::Dropped;
    let aps = Aps {
        alert: Some(Alert {
            title: "New message",
            body: Some(shorten(
                message.sender_email.as_deref().unwrap_or("Someone"),
                trim.text,
            )),
        }),
        sound: Some("default"),
        // A room id too long to fit goes with the rest of the event.
        thread_id: Some(&message.room_id)
            .filter(|_| !shortened || message.room_id.len() <= 256)
            .map(String::as_str),
        mutable_content: Some(1),
        content_available: None,
    };
    match flavour {
        AppFlavour::Seed => serde_json::to_writer(
            out,
            &Body {
                aps,
                webex: MessageWebex {
                    kind: "message",
                    message_id: Some(&message.message_id),
                    room_id: Some(&message.room_id),
                    room_type: message.room_type.as_deref(),
                    sender_person_id: message.sender.as_ref().map(|p| p.original()),
                    sender_email: message.sender_email.as_deref().filter(|_| !shortened),
                },
            },
        ),
        AppFlavour::KitchenSink => serde_json::to_writer(
            out,
            &WebhookAlert {
                aps,
                webhook_data: webhook_data(message.webhook.as_ref(), trim.event),
            },
        ),
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

/// The notice that a call ended, the same for both flavours: a visible alert (priority
/// 10, so it is not delayed like a background push) that also wakes a running app
/// (`content-available`) to end its CallKit call. Never VoIP: iOS would demand a new
/// CallKit call for it. No `webhookData`: KitchenSink would read it as a call to show.
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
    use std::collections::HashSet;
    use std::sync::Arc;

    use chrono::{TimeZone as _, Utc};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::json;
    use webex_push_domain::{CallId, Caller, PersonId};

    use super::*;

    fn person() -> PersonId {
        PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap()
    }

    fn raw(text: &str) -> RawJson {
        RawJson::parse(text).unwrap()
    }

    fn call_from(
        name: &str,
        source: EventSource,
        sdk: Option<RawJson>,
        webhook: Option<RawJson>,
    ) -> PushContent {
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
            fcm_payload: None,
            webhook,
            callee_field: None,
            audience: None,
        }))
    }

    fn call(name: &str, source: EventSource, sdk: Option<Value>) -> PushContent {
        call_from(name, source, sdk.as_ref().map(RawJson::from_value), None)
    }

    fn message(webhook: Option<RawJson>, sender_email: &str) -> PushContent {
        PushContent::Message(Arc::new(NewMessage {
            message_id: "m1".into(),
            room_id: "r1".into(),
            room_type: Some("direct".into()),
            recipient: person(),
            sender: Some(person()),
            sender_email: Some(sender_email.to_owned()),
            occurred_at: Utc::now(),
            webhook,
        }))
    }

    fn seed(content: &PushContent) -> Prepared {
        prepare(content, AppFlavour::Seed, SystemTime::now()).unwrap()
    }

    fn kitchensink(content: &PushContent) -> Result<Prepared, Unsendable> {
        prepare(content, AppFlavour::KitchenSink, SystemTime::now())
    }

    fn parse(prepared: &Prepared) -> Value {
        assert_unique_keys(&prepared.body);
        serde_json::from_slice(&prepared.body).unwrap()
    }

    /// Fails when any JSON object in `json`, at any depth, carries a key twice (which
    /// `serde_json::Value` would hide by keeping the last).
    fn assert_unique_keys(json: &[u8]) {
        struct Unique;
        impl<'de> Deserialize<'de> for Unique {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(Unique)
            }
        }
        impl<'de> Visitor<'de> for Unique {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("key {key:?} twice")));
                    }
                    map.next_value::<Unique>()?;
                }
                Ok(Unique)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
                while seq.next_element::<Unique>()?.is_some() {}
                Ok(Unique)
            }
            fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_unit<E>(self) -> Result<Unique, E> {
                Ok(Unique)
            }
        }
        if let Err(error) = serde_json::from_slice::<Unique>(json) {
            panic!("{error}: {}", String::from_utf8_lossy(json));
        }
    }

    /// An SDK payload (and a webhook) that uses every top-level key any builder adds,
    /// spelled the way Webex might spell them, with values we never write.
    const GREEDY: &str = r#"{"aps": {"alert": "sdk's"}, "webex": "sdk's", "webexPush": 1.50, "webex-push": "\u00e9", "webhookData": [null], "data": {"resource": "telephony_push"}}"#;

    #[test]
    fn no_payload_ever_carries_a_key_twice_whatever_the_sdk_sent() {
        let sources = [
            EventSource::CallMemberships,
            EventSource::TelephonyCalls,
            EventSource::TelephonyPush,
        ];
        let sdk_payloads = [
            GREEDY,
            r#"{"webex": {}}"#,
            r#"{"aps": {}}"#,
            r#"{}"#,
            r#"{"k": "v"}"#,
        ];
        for sdk in sdk_payloads {
            for source in sources {
                let content = call_from("Ada", source, Some(raw(sdk)), Some(raw(sdk)));
                for flavour in AppFlavour::ALL {
                    if let Ok(prepared) = prepare(&content, flavour, SystemTime::now()) {
                        assert_unique_keys(&prepared.body);
                    }
                }
            }
            for flavour in AppFlavour::ALL {
                let prepared =
                    prepare(&message(Some(raw(sdk)), "b@x"), flavour, SystemTime::now()).unwrap();
                assert_unique_keys(&prepared.body);
            }
        }
    }

    #[test]
    fn a_seed_ring_keeps_every_sdk_key_and_moves_ours_aside() {
        let body = parse(&seed(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(GREEDY)),
            None,
        )));
        let sdk: Value = serde_json::from_str(GREEDY).unwrap();
        for (key, value) in sdk.as_object().unwrap() {
            assert_eq!(&body[key], value, "{key}");
        }
        // Every name of ours is taken: our dictionary is left out rather than collide.
        assert_eq!(
            body.as_object().unwrap().len(),
            sdk.as_object().unwrap().len()
        );

        let body = parse(&seed(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(r#"{"webex": "sdk's", "k": 1}"#)),
            None,
        )));
        assert_eq!(body["webex"], "sdk's");
        assert_eq!(body["webexPush"]["callId"], "call-1");
        assert_eq!(body["aps"], json!({}));
    }

    #[test]
    fn incoming_call_carries_what_callkit_needs_and_the_event() {
        let sdk = json!({"callId": "call-1", "extra": [1, 2]});
        let prepared = seed(&call(
            "Ada",
            EventSource::CallMemberships,
            Some(sdk.clone()),
        ));
        assert_eq!(prepared.push_type, "voip");
        assert_eq!(prepared.channel, Channel::Voip);
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
    fn the_event_for_the_sdk_travels_as_webex_wrote_it() {
        let data = r#"{"b": 1.50, "a": "\u00e9"}"#;
        let prepared = seed(&call_from(
            "Ada",
            EventSource::CallMemberships,
            Some(raw(data)),
            None,
        ));
        let text = std::str::from_utf8(&prepared.body).unwrap();
        assert!(text.contains(&format!("\"event\":{data}")), "{text}");
    }

    #[test]
    fn telephony_push_puts_the_apns_payload_at_the_top_level() {
        let sdk = json!({"webexCallId": "x", "data": {"k": "v"}});
        let body = parse(&seed(&call("Ada", EventSource::TelephonyPush, Some(sdk))));
        assert_eq!(body["webexCallId"], "x");
        assert_eq!(body["data"]["k"], "v");
        assert_eq!(body["aps"], json!({}));
        assert!(body["webex"].get("event").is_none());
        assert_eq!(body["webex"]["callId"], "call-1");
    }

    #[test]
    fn kitchensink_gets_the_apns_payload_byte_for_byte_and_nothing_else() {
        let sdk = r#"{"aps":{"content-available":1},"pushId":"p-1","version":1.50,"name":"\u00c9mile","data":{"nested":[1,{"x":null}]}}"#;
        let prepared = kitchensink(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(sdk)),
            None,
        ))
        .unwrap();
        assert_eq!(
            (prepared.push_type, prepared.channel),
            ("voip", Channel::Voip)
        );
        assert_eq!(&prepared.body[..], sdk.as_bytes());

        // Without an `aps` of its own it gets an empty one, and its keys stay as written.
        let sdk = r#"{"pushId":"p-1","version":1.50}"#;
        let prepared = kitchensink(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(sdk)),
            None,
        ))
        .unwrap();
        assert_eq!(
            &prepared.body[..],
            br#"{"aps":{},"pushId":"p-1","version":1.50}"#
        );
    }

    #[test]
    fn a_kitchensink_voip_payload_over_the_limit_loses_whitespace_then_is_not_sent() {
        let spaced = format!(
            "{{\"pushId\": \"a b\",   \"pad\": \"{}\"}}",
            "x".repeat(5080)
        );
        let prepared = kitchensink(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(&spaced)),
            None,
        ))
        .unwrap();
        assert!(prepared.body.len() <= VOIP_PAYLOAD_LIMIT);
        assert_eq!(parse(&prepared)["pushId"], "a b");

        let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(VOIP_PAYLOAD_LIMIT));
        let unsendable = kitchensink(&call_from(
            "Ada",
            EventSource::TelephonyPush,
            Some(raw(&huge)),
            None,
        ))
        .unwrap_err();
        assert_eq!(unsendable.reason(), "PayloadTooLarge");
    }

    #[test]
    fn kitchensink_gets_a_call_memberships_ring_as_an_alert_with_the_webhook() {
        let webhook = r#"{"resource":"callMemberships","event":"created","data":{"callId":"c-1","state":"notified"}}"#;
        let prepared = kitchensink(&call_from(
            "Ada",
            EventSource::CallMemberships,
            Some(raw(r#"{"callId":"c-1"}"#)),
            Some(raw(webhook)),
        ))
        .unwrap();
        assert_eq!(
            (prepared.push_type, prepared.channel),
            ("alert", Channel::Alert)
        );
        let body = parse(&prepared);
        assert_eq!(body["webhookData"], webhook);
        assert_eq!(body["aps"]["alert"]["title"], "Incoming call");
        assert_eq!(body["aps"]["alert"]["body"], "Ada");
        assert!(body.get("webex").is_none());

        let not_for_it = call("Ada", EventSource::TelephonyCalls, Some(json!({})));
        assert_eq!(
            kitchensink(&not_for_it).unwrap_err().reason(),
            "NotForThisApp"
        );
    }

    #[test]
    fn a_webhook_too_big_for_an_alert_is_squeezed_before_it_is_dropped() {
        let spaced = format!(
            "{{ \"resource\": \"messages\", \"event\": \"created\", \"name\": \"{}\",{}\"data\": {{ \"id\": \"m1\", \"roomId\": \"r1\" }} }}",
            "n".repeat(3000),
            " ".repeat(1500),
        );
        let body = parse(&kitchensink(&message(Some(raw(&spaced)), "b@x")).unwrap());
        let data = body["webhookData"].as_str().unwrap();
        assert!(!data.contains(": "), "whitespace squeezed out: {data}");
        assert_eq!(
            serde_json::from_str::<Value>(data).unwrap()["name"]
                .as_str()
                .unwrap()
                .len(),
            3000
        );

        let big = format!(
            r#"{{"resource":"messages","event":"created","name":"{}","data":{{"id":"m1","roomId":"r1","personEmail":"b@x"}}}}"#,
            "n".repeat(5000)
        );
        let body = parse(&kitchensink(&message(Some(raw(&big)), "b@x")).unwrap());
        let data: Value = serde_json::from_str(body["webhookData"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"resource": "messages", "event": "created", "data": {"id": "m1", "roomId": "r1"}})
        );
    }

    #[test]
    fn a_huge_caller_name_is_shortened_and_the_event_kept() {
        let name = "N".repeat(20_000);
        let sdk = json!({"blob": "x".repeat(3000)});
        let prepared = seed(&call(
            &name,
            EventSource::CallMemberships,
            Some(sdk.clone()),
        ));
        assert!(prepared.body.len() <= VOIP_PAYLOAD_LIMIT);
        let body = parse(&prepared);
        let shown = body["webex"]["callerName"].as_str().unwrap();
        assert!(shown.ends_with('…') && shown.starts_with("NNN"));
        assert_eq!(body["webex"]["event"], sdk);
    }

    #[test]
    fn an_event_too_big_for_any_trim_is_dropped_last() {
        let sdk = json!({"blob": "x".repeat(10_000)});
        let prepared = seed(&call("Ada", EventSource::TelephonyPush, Some(sdk)));
        assert!(prepared.body.len() <= VOIP_PAYLOAD_LIMIT);
        let body = parse(&prepared);
        assert!(body.get("blob").is_none());
        assert_eq!(body["webex"]["callerName"], "Ada");
    }

    #[test]
    fn message_alert_names_the_sender_and_groups_by_room() {
        for flavour in AppFlavour::ALL {
            let content = message(
                Some(raw(r#"{"resource":"messages"}"#)),
                &format!("{}@example.com", "a".repeat(5000)),
            );
            let prepared = prepare(&content, flavour, SystemTime::now()).unwrap();
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
            match flavour {
                AppFlavour::Seed => {
                    assert_eq!(body["webex"]["roomId"], "r1");
                    assert_eq!(body["webex"]["roomType"], "direct");
                }
                AppFlavour::KitchenSink => {
                    assert_eq!(body["webhookData"], r#"{"resource":"messages"}"#);
                }
            }
        }
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
        for flavour in AppFlavour::ALL {
            let prepared = prepare(&content, flavour, SystemTime::now()).unwrap();
            assert_eq!(prepared.push_type, "alert");
            assert_eq!(prepared.priority, "10");
            assert_eq!(prepared.collapse_id.as_deref().unwrap().len(), 40);
            let body = parse(&prepared);
            assert_eq!(body["webex"]["answeredElsewhere"], true);
            assert_eq!(body["aps"]["content-available"], 1);
            assert!(body.get("webhookData").is_none());
        }
        assert_eq!(collapse_id("short"), "short");
    }

    #[test]
    fn compacting_keeps_strings_byte_for_byte() {
        assert_eq!(
            compact("{ \"a b\" : [ 1 , \"c\\\" d\" ]\n}"),
            "{\"a b\":[1,\"c\\\" d\"]}"
        );
        assert!(matches!(compact("{\"a\":1}"), Cow::Borrowed(_)));
    }
}
