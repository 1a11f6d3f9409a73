//! Structure-aware fuzzing of the Webex webhook reader: builds JSON envelopes close to
//! what Webex sends (the four relayed resources, their states, person ids in every
//! spelling, unknown fields, wrong types) so the fuzzer reaches the mapping logic that
//! raw bytes seldom get past the JSON parser to. Properties: never panics, same answer
//! twice, and whatever it accepts is consistent with the body: the person rung or told
//! is one named in the body, the source is the resource, an ignored event echoes it.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use webex_push_adapters::webex::{WebhookEvent, parse_event_at};
use webex_push_domain::{Event, EventSource, PersonId};

#[derive(Debug, Arbitrary)]
enum Resource {
    CallMemberships,
    TelephonyCalls,
    TelephonyPush,
    Messages,
    Memberships,
    Other(String),
}

/// The envelope's `event` (named so it does not shadow the domain's `Event`).
#[derive(Debug, Arbitrary)]
enum EventName {
    Created,
    Updated,
    Deleted,
    Other(String),
}

/// A person id as Webex (or an attacker) may spell it.
#[derive(Debug, Arbitrary)]
enum Person {
    Unpadded([u8; 16]),
    Padded([u8; 16]),
    UrlSafe([u8; 16]),
    UrnTeam([u8; 16], String),
    Bare([u8; 16]),
    BareUpper([u8; 16]),
    WrongType([u8; 16], String),
    Raw(String),
}

/// A value for a field: usually a plausible one, sometimes the wrong type.
#[derive(Debug, Arbitrary)]
enum Field {
    Word(Word),
    Person(Person),
    Text(String),
    Bool(bool),
    Number(i64),
    Null,
    Object(Vec<(String, String)>),
    Array(Vec<String>),
}

#[derive(Debug, Arbitrary)]
enum Word {
    Notified,
    Joined,
    Declined,
    Left,
    Waiting,
    Alerting,
    Connected,
    Disconnected,
    Received,
    Answered,
    Terminator,
    Originator,
    True,
    Org,
    Creator,
    Direct,
    Group,
    Timestamp,
    BadTimestamp,
}

#[derive(Debug, Arbitrary)]
struct Input {
    resource: Resource,
    event: EventName,
    created_by: Option<Field>,
    actor_id: Option<Field>,
    owned_by: Option<Field>,
    /// `None` leaves `data` out; `Some(None)` sends a non-object `data`.
    data: Option<Option<Vec<(DataKey, Field)>>>,
    extra: Vec<(String, Field)>,
    upper_case_names: bool,
}

#[derive(Debug, Arbitrary)]
enum DataKey {
    Id,
    CallId,
    CallSessionId,
    PersonId,
    PersonEmail,
    State,
    IsInitiator,
    EventType,
    EventTimestamp,
    Personality,
    CompletedElsewhere,
    RemoteParty,
    RoomId,
    RoomType,
    ApnsPayload,
    Created,
    Other(String),
}

fn uuid(bytes: [u8; 16]) -> String {
    Uuid::from_bytes(bytes).hyphenated().to_string()
}

fn person(p: &Person) -> String {
    match p {
        Person::Unpadded(u) => {
            STANDARD_NO_PAD.encode(format!("ciscospark://us/PEOPLE/{}", uuid(*u)))
        }
        Person::Padded(u) => STANDARD.encode(format!("ciscospark://us/PEOPLE/{}", uuid(*u))),
        Person::UrlSafe(u) => {
            URL_SAFE_NO_PAD.encode(format!("ciscospark://us/PEOPLE/{}", uuid(*u)))
        }
        Person::UrnTeam(u, region) => STANDARD_NO_PAD.encode(format!(
            "ciscospark://urn:TEAM:{region}/PEOPLE/{}",
            uuid(*u)
        )),
        Person::Bare(u) => uuid(*u),
        Person::BareUpper(u) => uuid(*u).to_uppercase(),
        Person::WrongType(u, kind) => {
            STANDARD_NO_PAD.encode(format!("ciscospark://us/{kind}/{}", uuid(*u)))
        }
        Person::Raw(text) => text.clone(),
    }
}

fn word(w: &Word) -> &'static str {
    match w {
        Word::Notified => "notified",
        Word::Joined => "joined",
        Word::Declined => "declined",
        Word::Left => "left",
        Word::Waiting => "waiting",
        Word::Alerting => "alerting",
        Word::Connected => "connected",
        Word::Disconnected => "disconnected",
        Word::Received => "received",
        Word::Answered => "answered",
        Word::Terminator => "terminator",
        Word::Originator => "originator",
        Word::True => "true",
        Word::Org => "org",
        Word::Creator => "creator",
        Word::Direct => "direct",
        Word::Group => "group",
        Word::Timestamp => "2026-03-01T12:34:56.789Z",
        Word::BadTimestamp => "2026-13-45T99:99:99Z",
    }
}

fn value(f: &Field, upper: bool) -> Value {
    match f {
        Field::Word(w) if upper => Value::String(word(w).to_uppercase()),
        Field::Word(w) => Value::String(word(w).to_owned()),
        Field::Person(p) => Value::String(person(p)),
        Field::Text(t) => Value::String(t.clone()),
        Field::Bool(b) => Value::Bool(*b),
        Field::Number(n) => json!(n),
        Field::Null => Value::Null,
        Field::Object(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
        Field::Array(items) => items.iter().cloned().map(Value::String).collect(),
    }
}

fn data_key(k: &DataKey) -> String {
    match k {
        DataKey::Id => "id",
        DataKey::CallId => "callId",
        DataKey::CallSessionId => "callSessionId",
        DataKey::PersonId => "personId",
        DataKey::PersonEmail => "personEmail",
        DataKey::State => "state",
        DataKey::IsInitiator => "isInitiator",
        DataKey::EventType => "eventType",
        DataKey::EventTimestamp => "eventTimestamp",
        DataKey::Personality => "personality",
        DataKey::CompletedElsewhere => "completedElsewhere",
        DataKey::RemoteParty => "remoteParty",
        DataKey::RoomId => "roomId",
        DataKey::RoomType => "roomType",
        DataKey::ApnsPayload => "apnsPayload",
        DataKey::Created => "created",
        DataKey::Other(other) => return other.clone(),
    }
    .to_owned()
}

fn build(input: &Input) -> Value {
    let mut envelope = Map::new();
    // Unknown fields first, so the known ones below win on a clash (as in real bodies).
    for (key, field) in &input.extra {
        envelope.insert(key.clone(), value(field, input.upper_case_names));
    }
    let resource = match &input.resource {
        Resource::CallMemberships => "callMemberships".to_owned(),
        Resource::TelephonyCalls => "telephony_calls".to_owned(),
        Resource::TelephonyPush => "telephony_push".to_owned(),
        Resource::Messages => "messages".to_owned(),
        Resource::Memberships => "memberships".to_owned(),
        Resource::Other(other) => other.clone(),
    };
    let event = match &input.event {
        EventName::Created => "created".to_owned(),
        EventName::Updated => "updated".to_owned(),
        EventName::Deleted => "deleted".to_owned(),
        EventName::Other(other) => other.clone(),
    };
    let event = if input.upper_case_names {
        event.to_uppercase()
    } else {
        event
    };
    envelope.insert("resource".into(), Value::String(resource));
    envelope.insert("event".into(), Value::String(event));
    for (key, field) in [
        ("createdBy", &input.created_by),
        ("actorId", &input.actor_id),
        ("ownedBy", &input.owned_by),
    ] {
        if let Some(field) = field {
            envelope.insert(key.into(), value(field, input.upper_case_names));
        }
    }
    match &input.data {
        None => {}
        Some(None) => {
            envelope.insert("data".into(), json!(["not", "an", "object"]));
        }
        Some(Some(fields)) => {
            let data: Map<String, Value> = fields
                .iter()
                .map(|(k, f)| (data_key(k), value(f, input.upper_case_names)))
                .collect();
            envelope.insert("data".into(), Value::Object(data));
        }
    }
    Value::Object(envelope)
}

/// Every person the body names in a field the reader may take a person from.
fn named_people(body: &Value) -> HashSet<Uuid> {
    let data = body.get("data");
    [
        body.get("createdBy"),
        body.get("actorId"),
        data.and_then(|d| d.get("personId")),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .filter_map(|text| PersonId::parse(text).ok())
    .map(|p| p.uuid())
    .collect()
}

fuzz_target!(|input: Input| {
    let body = build(&input);
    let bytes = body.to_string();
    let received_at = DateTime::<Utc>::UNIX_EPOCH;
    let outcome = parse_event_at(bytes.as_bytes(), received_at);
    let again = parse_event_at(bytes.as_bytes(), received_at);
    match (&outcome, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same body read twice differs"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the same body was accepted once and refused once"),
    }
    let Ok(event) = outcome else {
        return;
    };

    let resource = body["resource"].as_str().unwrap_or_default().trim();
    let people = named_people(&body);
    let expected_source = match resource {
        "callMemberships" => Some(EventSource::CallMemberships),
        "telephony_calls" => Some(EventSource::TelephonyCalls),
        "telephony_push" => Some(EventSource::TelephonyPush),
        "messages" => Some(EventSource::Messages),
        _ => None,
    };
    match &event {
        WebhookEvent::Ignored {
            resource: echoed,
            event: echoed_event,
            ..
        } => {
            assert_eq!(echoed, resource);
            assert_eq!(
                echoed_event,
                body["event"].as_str().unwrap_or_default().trim()
            );
        }
        WebhookEvent::Relay(Event::Ring(call)) => {
            assert_eq!(Some(call.source), expected_source, "ring from {resource:?}");
            assert!(
                people.contains(&call.callee.uuid()),
                "rang someone the body does not name"
            );
            if call.source == EventSource::TelephonyPush {
                assert!(
                    call.sdk_payload.as_ref().is_some_and(|p| p.is_object())
                        || (call.sdk_payload.is_none() && call.fcm_payload.is_some()),
                    "a telephony push without its payload object (nor an Android one)"
                );
            }
            assert!(!call.call_id.as_str().is_empty());
        }
        WebhookEvent::Relay(Event::CallEnded(ended)) => {
            assert_eq!(
                Some(ended.source),
                expected_source,
                "call end from {resource:?}"
            );
            assert!(
                people.contains(&ended.person.uuid()),
                "ended a call for someone unnamed"
            );
        }
        WebhookEvent::Relay(Event::Message(message)) => {
            assert_eq!(
                expected_source,
                Some(EventSource::Messages),
                "message from {resource:?}"
            );
            let owner = body["createdBy"]
                .as_str()
                .and_then(|t| PersonId::parse(t).ok());
            assert_eq!(
                Some(&message.recipient),
                owner.as_ref(),
                "told someone but the owner"
            );
        }
    }
});
