//! Reading a Webex webhook body into a domain event: which resource said what, and
//! whether it rings a phone, ends a call, announces a message, or is of no interest.
//!
//! Mapping (see `docs/webex-webhooks.md`):
//! - `callMemberships`: `state=notified` rings `data.personId`; `joined` ends the ringing
//!   as answered; `declined`/`left` end it (the callee's own membership only).
//! - `telephony_calls`: a `terminator` call `alerting` (or `eventType=received`) rings;
//!   `deleted`, `disconnected` end it; `connected` ends the ringing as answered.
//!   The person is `data.personId` when present, else the webhook owner (`createdBy`).
//! - `telephony_push`: rings the person with `data.apnsPayload` for the iOS SDK and
//!   `data.fcmPayload` for the Android one, each kept byte for byte (either may be
//!   missing, not both); the person is `data.personId` when present, else `createdBy` for a
//!   webhook its creator owns (`ownedBy=creator`), else `actorId` (which field Webex
//!   uses is unconfirmed; the one read is logged and kept with the event).
//! - `messages/created`: announces the message to the webhook owner (`createdBy`)
//!   unless the owner sent it.
//!
//! Everything else is [`WebhookEvent::Ignored`], never an error: Webex disables a
//! webhook that keeps failing, and retrying would not change the answer.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha1::{Digest as _, Sha1};
use webex_push_domain::{
    CallEnded, CallId, CalleeField, Caller, Event, EventSource, IncomingCall, NewMessage, PersonId,
    RawJson,
};

/// What a webhook asks of us.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// An event to relay: a ring, a call that ended, a message.
    Relay(Event),
    /// A resource, event or state that needs no push. Acknowledged, never an error.
    Ignored {
        resource: String,
        event: String,
        why: String,
    },
}

impl WebhookEvent {
    /// A short label for logs: the event's kind, or `ignored`.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookEvent::Relay(event) => event.kind().as_str(),
            WebhookEvent::Ignored { .. } => "ignored",
        }
    }
}

/// A body that is not a Webex webhook we can read. The message names the field and
/// what is wrong with it; it never quotes values (they may be personal data).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is missing")]
    MissingField(&'static str),
    #[error("`{field}` {why}")]
    InvalidField { field: &'static str, why: String },
}

impl WebhookError {
    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            WebhookError::MissingField(field) | WebhookError::InvalidField { field, .. } => {
                Some(field)
            }
            WebhookError::Json(_) | WebhookError::NotAnObject => None,
        }
    }
}

/// Reads a webhook body, dating events without a timestamp of their own to now.
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    parse_event_at(body, Utc::now())
}

/// Reads a webhook body; `received_at` dates events that carry no usable timestamp.
pub fn parse_event_at(
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<WebhookEvent, WebhookError> {
    let value: Value = serde_json::from_slice(body).map_err(WebhookError::Json)?;
    let Value::Object(envelope) = value else {
        return Err(WebhookError::NotAnObject);
    };
    let mut envelope = Envelope::read(&envelope, received_at)?;
    envelope.raw = Raw::read(body);
    match envelope.resource {
        "callMemberships" => call_membership(&envelope),
        "telephony_calls" => telephony_call(&envelope),
        "telephony_push" => telephony_push(&envelope),
        "messages" => message(&envelope),
        _ => Ok(envelope.ignored("not a resource webex-push relays")),
    }
}

/// The envelope's fields that matter, borrowed from the parsed body.
struct Envelope<'a> {
    resource: &'a str,
    event: &'a str,
    created_by: Option<&'a str>,
    actor_id: Option<&'a str>,
    owned_by: Option<&'a str>,
    data: Fields<'a>,
    received_at: DateTime<Utc>,
    raw: Raw<'a>,
}

/// The body's text and the parts of it that travel to phones as Webex wrote them.
#[derive(Default)]
struct Raw<'a> {
    /// The whole body (valid JSON, so valid UTF-8).
    body: Option<&'a str>,
    data: Option<&'a RawValue>,
    apns_payload: Option<&'a RawValue>,
    fcm_payload: Option<&'a RawValue>,
}

impl<'a> Raw<'a> {
    fn read(body: &'a [u8]) -> Self {
        #[derive(Deserialize)]
        struct Top<'a> {
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow, default, rename = "apnsPayload")]
            apns_payload: Option<&'a RawValue>,
            #[serde(borrow, default, rename = "fcmPayload")]
            fcm_payload: Option<&'a RawValue>,
        }
        // Only fails for a body the `Value` parse accepted if a key appears twice;
        // then the raw parts are taken from the parsed value instead.
        let data = serde_json::from_slice::<Top<'a>>(body)
            .ok()
            .and_then(|top| top.data);
        let payloads = data.and_then(|data| serde_json::from_str::<Data<'a>>(data.get()).ok());
        Self {
            body: std::str::from_utf8(body).ok(),
            data,
            apns_payload: payloads.as_ref().and_then(|data| data.apns_payload),
            fcm_payload: payloads.as_ref().and_then(|data| data.fcm_payload),
        }
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Envelope<'a> {
    fn read(map: &'a Map<String, Value>, received_at: DateTime<Utc>) -> Result<Self, WebhookError> {
        let top = Fields {
            map,
            names: &ENVELOPE_NAMES,
        };
        let data = match map.get("data") {
            None | Some(Value::Null) => &*EMPTY,
            Some(Value::Object(data)) => data,
            Some(_) => {
                return Err(WebhookError::InvalidField {
                    field: "data",
                    why: "must be a JSON object".into(),
                });
            }
        };
        Ok(Self {
            resource: top.required("resource")?,
            event: top.required("event")?,
            created_by: top.optional("createdBy")?,
            actor_id: top.optional("actorId")?,
            owned_by: top.optional("ownedBy")?,
            data: Fields {
                map: data,
                names: &DATA_NAMES,
            },
            received_at,
            raw: Raw::default(),
        })
    }

    fn ignored(&self, why: impl Into<String>) -> WebhookEvent {
        WebhookEvent::Ignored {
            resource: self.resource.to_owned(),
            event: self.event.to_owned(),
            why: why.into(),
        }
    }

    /// An org admin's webhook: `createdBy` is the admin, not the person concerned.
    fn is_org_owned(&self) -> bool {
        self.owned_by
            .is_some_and(|owner| owner.eq_ignore_ascii_case("org"))
    }

    /// A webhook its creator owns: `createdBy` is the person whose events it reports.
    fn is_creator_owned(&self) -> bool {
        self.owned_by
            .is_some_and(|owner| owner.eq_ignore_ascii_case("creator"))
    }

    /// The whole webhook as posted, for apps that read it (KitchenSink's `webhookData`).
    fn webhook(&self) -> Option<RawJson> {
        self.raw.body.and_then(|body| RawJson::parse(body).ok())
    }

    /// `data` as Webex wrote it, for the SDK; `None` when empty.
    fn sdk_data(&self) -> Option<RawJson> {
        if self.data.map.is_empty() {
            return None;
        }
        match self.raw.data {
            Some(raw) => RawJson::parse(raw.get()).ok(),
            None => Some(RawJson::from_value(&Value::Object(self.data.map.clone()))),
        }
    }

    fn is_event(&self, name: &str) -> bool {
        self.event.eq_ignore_ascii_case(name)
    }

    /// When the event happened: the first parseable timestamp among `keys` in `data`,
    /// else when it was received. A bad timestamp is not worth refusing the event.
    fn occurred_at(&self, keys: &[&str]) -> DateTime<Utc> {
        keys.iter()
            .filter_map(|key| self.data.map.get(*key).and_then(Value::as_str))
            .find_map(|text| DateTime::parse_from_rfc3339(text).ok())
            .map_or(self.received_at, |at| at.with_timezone(&Utc))
    }
}

// Error messages name fields with 'static strings; these tables map a key to its
// qualified name ("data.personId") without allocating.
const ENVELOPE_NAMES: [(&str, &str); 5] = [
    ("resource", "resource"),
    ("event", "event"),
    ("createdBy", "createdBy"),
    ("actorId", "actorId"),
    ("ownedBy", "ownedBy"),
];

const DATA_NAMES: [(&str, &str); 18] = [
    ("id", "data.id"),
    ("callId", "data.callId"),
    ("callSessionId", "data.callSessionId"),
    ("personId", "data.personId"),
    ("personEmail", "data.personEmail"),
    ("state", "data.state"),
    ("isInitiator", "data.isInitiator"),
    ("eventType", "data.eventType"),
    ("personality", "data.personality"),
    ("completedElsewhere", "data.completedElsewhere"),
    ("remoteParty", "data.remoteParty"),
    ("roomId", "data.roomId"),
    ("roomType", "data.roomType"),
    ("apnsPayload", "data.apnsPayload"),
    ("name", "data.remoteParty.name"),
    ("number", "data.remoteParty.number"),
    ("privacyEnabled", "data.remoteParty.privacyEnabled"),
    ("created", "data.created"),
];

/// Typed access to an object's fields, with errors naming the field.
#[derive(Clone, Copy)]
struct Fields<'a> {
    map: &'a Map<String, Value>,
    names: &'static [(&'static str, &'static str)],
}

impl<'a> Fields<'a> {
    fn name(&self, key: &str) -> &'static str {
        self.names
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("data", |(_, name)| name)
    }

    /// A string field; absent, `null` or blank is `None`, another type an error.
    fn optional(&self, key: &str) -> Result<Option<&'a str>, WebhookError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.trim()).filter(|t| !t.is_empty())),
            Some(_) => Err(WebhookError::InvalidField {
                field: self.name(key),
                why: "must be a string".into(),
            }),
        }
    }

    fn required(&self, key: &str) -> Result<&'a str, WebhookError> {
        self.optional(key)?
            .ok_or_else(|| WebhookError::MissingField(self.name(key)))
    }

    /// A boolean field; Webex has sent some flags as strings, so `"true"` counts too.
    fn flag(&self, key: &str) -> bool {
        match self.map.get(key) {
            Some(Value::Bool(flag)) => *flag,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// A string field compared case-insensitively with `expected`.
    fn is(&self, key: &str, expected: &str) -> Result<bool, WebhookError> {
        Ok(self
            .optional(key)?
            .is_some_and(|value| value.eq_ignore_ascii_case(expected)))
    }

    fn person(&self, key: &str) -> Result<Option<PersonId>, WebhookError> {
        self.optional(key)?
            .map(|text| {
                PersonId::parse(text).map_err(|error| WebhookError::InvalidField {
                    field: self.name(key),
                    why: format!("is not a Webex person id: {error}"),
                })
            })
            .transpose()
    }

    fn object(&self, key: &str) -> Option<Fields<'a>> {
        match self.map.get(key) {
            Some(Value::Object(map)) => Some(Fields {
                map,
                names: self.names,
            }),
            _ => None,
        }
    }
}

fn person_of(field: &'static str, text: &str) -> Result<PersonId, WebhookError> {
    PersonId::parse(text).map_err(|error| WebhookError::InvalidField {
        field,
        why: format!("is not a Webex person id: {error}"),
    })
}

fn call_id(field: &'static str, text: &str) -> Result<CallId, WebhookError> {
    CallId::parse(text).ok_or_else(|| WebhookError::InvalidField {
        field,
        why: format!("must be 1 to {} bytes", CallId::MAX_LEN),
    })
}

fn call_membership(envelope: &Envelope<'_>) -> Result<WebhookEvent, WebhookError> {
    let data = &envelope.data;
    if envelope.is_event("deleted") {
        return Ok(envelope.ignored("a deleted membership neither rings nor ends a call"));
    }
    let Some(state) = data.optional("state")? else {
        return Ok(envelope.ignored("no data.state"));
    };
    let state = state.to_ascii_lowercase();
    if !matches!(state.as_str(), "notified" | "joined" | "declined" | "left") {
        return Ok(envelope.ignored(format!("state {state} neither rings nor ends a call")));
    }
    if data.flag("isInitiator") {
        return Ok(envelope.ignored("the caller's own membership"));
    }
    let person = person_of("data.personId", data.required("personId")?)?;
    let call_id = call_id("data.callId", data.required("callId")?)?;
    let occurred_at = envelope.occurred_at(&["created"]);
    let source = EventSource::CallMemberships;
    Ok(match state.as_str() {
        "notified" => {
            // The membership tells nothing about the caller; `actorId` is whoever caused
            // the event, which for a notification is the caller (unconfirmed, so only
            // used when it is someone other than the callee).
            let caller_person = envelope
                .actor_id
                .and_then(|actor| PersonId::parse(actor).ok())
                .filter(|actor| *actor != person);
            WebhookEvent::Relay(Event::Ring(IncomingCall {
                call_id,
                callee: person,
                caller: Caller {
                    person: caller_person,
                    ..Caller::default()
                },
                occurred_at,
                source,
                sdk_payload: envelope.sdk_data(),
                fcm_payload: None,
                webhook: envelope.webhook(),
                callee_field: None,
                audience: None,
            }))
        }
        // Answered on one of the callee's devices: the others stop ringing.
        "joined" => WebhookEvent::Relay(Event::CallEnded(CallEnded {
            call_id,
            person,
            occurred_at,
            source,
            answered_elsewhere: true,
        })),
        _ => WebhookEvent::Relay(Event::CallEnded(CallEnded {
            call_id,
            person,
            occurred_at,
            source,
            answered_elsewhere: false,
        })),
    })
}

fn telephony_call(envelope: &Envelope<'_>) -> Result<WebhookEvent, WebhookError> {
    let data = &envelope.data;
    if data.is("personality", "originator")? {
        return Ok(envelope.ignored("an outgoing call rings nobody here"));
    }
    let deleted = envelope.is_event("deleted");
    let disconnected = data.is("state", "disconnected")? || data.is("eventType", "disconnected")?;
    let terminator = data.is("personality", "terminator")?;
    let alerting = data.is("state", "alerting")? || data.is("eventType", "received")?;
    let connected = data.is("state", "connected")?
        || data.is("eventType", "connected")?
        || data.is("eventType", "answered")?;

    enum Action {
        Ring,
        End { answered_elsewhere: bool },
    }
    let action = if deleted || disconnected {
        Action::End {
            answered_elsewhere: data.flag("completedElsewhere"),
        }
    } else if terminator && alerting {
        Action::Ring
    } else if terminator && connected {
        Action::End {
            answered_elsewhere: true,
        }
    } else {
        return Ok(envelope.ignored(
            "neither an incoming call alerting nor the end of one (needs personality=terminator)",
        ));
    };

    // Personal webhooks see only their owner's calls; org-owned ones may name the person.
    let person = match data.person("personId")? {
        Some(person) => person,
        None if envelope.is_org_owned() => {
            return Ok(envelope.ignored(
                "an org-wide webhook's event without data.personId does not say whose call it is",
            ));
        }
        None => person_of(
            "createdBy",
            envelope
                .created_by
                .ok_or(WebhookError::MissingField("data.personId or createdBy"))?,
        )?,
    };
    let call_id = match (data.optional("callId")?, data.optional("callSessionId")?) {
        (Some(id), _) => call_id("data.callId", id)?,
        (None, Some(id)) => call_id("data.callSessionId", id)?,
        (None, None) => return Err(WebhookError::MissingField("data.callId")),
    };
    let occurred_at = envelope.occurred_at(&["eventTimestamp", "created"]);
    let source = EventSource::TelephonyCalls;
    Ok(match action {
        Action::Ring => WebhookEvent::Relay(Event::Ring(IncomingCall {
            call_id,
            callee: person,
            caller: remote_party(data)?,
            occurred_at,
            source,
            sdk_payload: envelope.sdk_data(),
            fcm_payload: None,
            // No app reads it: KitchenSink rings Webex Calling calls from their
            // `telephony_push`.
            webhook: None,
            callee_field: None,
            audience: None,
        })),
        Action::End { answered_elsewhere } => WebhookEvent::Relay(Event::CallEnded(CallEnded {
            call_id,
            person,
            occurred_at,
            source,
            answered_elsewhere,
        })),
    })
}

/// The caller from `data.remoteParty`; nothing when the caller asked for privacy.
fn remote_party(data: &Fields<'_>) -> Result<Caller, WebhookError> {
    let Some(party) = data.object("remoteParty") else {
        return Ok(Caller::default());
    };
    if party.flag("privacyEnabled") {
        return Ok(Caller::default());
    }
    Ok(Caller {
        name: party.optional("name")?.map(str::to_owned),
        number: party.optional("number")?.map(str::to_owned),
        ..Caller::default()
    })
}

fn telephony_push(envelope: &Envelope<'_>) -> Result<WebhookEvent, WebhookError> {
    let data = &envelope.data;
    if envelope.is_event("deleted") {
        return Ok(envelope.ignored("a deleted telephony push carries nothing to relay"));
    }
    // Android's payload travels as Webex wrote it, whatever JSON it is (it reaches the
    // phone as the text of one FCM data value).
    let fcm = match (data.map.get("fcmPayload"), envelope.raw.fcm_payload) {
        (None | Some(Value::Null), _) => None,
        (Some(value), raw) => Some((
            value.clone(),
            raw.and_then(|raw| RawJson::parse(raw.get()).ok())
                .unwrap_or_else(|| RawJson::from_value(value)),
        )),
    };
    // The SDK's payload travels verbatim: the object as Webex wrote it, or the text of
    // one when a sender JSON-encoded it as a string.
    let (payload, verbatim) = match (data.map.get("apnsPayload"), envelope.raw.apns_payload) {
        (None | Some(Value::Null), _) => match &fcm {
            Some((value, _)) => (value.clone(), None),
            None => return Ok(envelope.ignored("no data.apnsPayload to relay")),
        },
        (Some(Value::String(text)), _) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => (object, RawJson::parse(text).ok()),
            _ => {
                return Ok(envelope.ignored(
                    "data.apnsPayload is a string that holds no JSON object: nothing the SDK can read",
                ));
            }
        },
        (Some(object @ Value::Object(_)), raw) => (
            object.clone(),
            raw.and_then(|raw| RawJson::parse(raw.get()).ok()),
        ),
        (Some(_), _) => {
            return Ok(
                envelope.ignored("data.apnsPayload is not a JSON object: nothing the SDK can read")
            );
        }
    };
    let apns_payload = match data.map.get("apnsPayload") {
        None | Some(Value::Null) => None,
        Some(_) => Some(verbatim.unwrap_or_else(|| RawJson::from_value(&payload))),
    };
    let (person, field) = telephony_push_callee(envelope)?;
    tracing::debug!(callee_field = field.as_str(), "telephony_push callee read");
    let call_id = match data.optional("callId")? {
        Some(id) => call_id("data.callId", id)?,
        None => payload_call_id(&payload),
    };
    Ok(WebhookEvent::Relay(Event::Ring(IncomingCall {
        call_id,
        callee: person,
        caller: remote_party(data)?,
        occurred_at: envelope.occurred_at(&["eventTimestamp", "created"]),
        source: EventSource::TelephonyPush,
        sdk_payload: apns_payload,
        fcm_payload: fcm.map(|(_, raw)| raw),
        webhook: None,
        callee_field: Some(field),
        audience: None,
    })))
}

/// Whom a `telephony_push` rings. Which field names the callee is unconfirmed, so the
/// likeliest carrier comes first: `data.personId`; else `createdBy`, but only for a
/// webhook its creator owns (an org-wide webhook's creator is the admin who made it,
/// who must not get everyone's calls); else `actorId`.
fn telephony_push_callee(envelope: &Envelope<'_>) -> Result<(PersonId, CalleeField), WebhookError> {
    if let Some(person) = envelope.data.person("personId")? {
        return Ok((person, CalleeField::DataPersonId));
    }
    if envelope.is_creator_owned()
        && let Some(created_by) = envelope.created_by
    {
        return Ok((person_of("createdBy", created_by)?, CalleeField::CreatedBy));
    }
    let actor = envelope.actor_id.ok_or(WebhookError::MissingField(
        "data.personId, createdBy (ownedBy=creator) or actorId",
    ))?;
    Ok((person_of("actorId", actor)?, CalleeField::ActorId))
}

/// A call id for a push that names none: the payload's own `callId` when it has one,
/// else a digest of the payload, so a re-delivery still rings only once.
fn payload_call_id(payload: &Value) -> CallId {
    if let Some(id) = payload
        .get("callId")
        .and_then(Value::as_str)
        .and_then(CallId::parse)
    {
        return id;
    }
    let digest = Sha1::digest(payload.to_string().as_bytes());
    let id = format!("apnsPayload-sha1-{}", hex::encode(digest));
    // `CallId::parse` refuses only empty or overlong ids; this one has 57 ASCII bytes.
    CallId::parse(&id).unwrap_or_else(|| unreachable!("a digest call id is always valid"))
}

fn message(envelope: &Envelope<'_>) -> Result<WebhookEvent, WebhookError> {
    let data = &envelope.data;
    if !envelope.is_event("created") {
        return Ok(envelope.ignored("only new messages are announced"));
    }
    if envelope.is_org_owned() {
        return Ok(envelope.ignored("an org-wide messages webhook does not say whom to notify"));
    }
    let recipient = person_of(
        "createdBy",
        envelope
            .created_by
            .ok_or(WebhookError::MissingField("createdBy"))?,
    )?;
    let sender = data.person("personId").ok().flatten();
    let actor = envelope
        .actor_id
        .and_then(|actor| PersonId::parse(actor).ok())
        .or_else(|| sender.clone());
    if actor.as_ref() == Some(&recipient) {
        return Ok(envelope.ignored("the webhook owner's own message"));
    }
    Ok(WebhookEvent::Relay(Event::Message(NewMessage {
        message_id: data.required("id")?.to_owned(),
        room_id: data.required("roomId")?.to_owned(),
        room_type: data.optional("roomType")?.map(str::to_owned),
        recipient,
        sender,
        sender_email: data.optional("personEmail")?.map(str::to_owned),
        occurred_at: envelope.occurred_at(&["created"]),
        webhook: envelope.webhook(),
    })))
}
