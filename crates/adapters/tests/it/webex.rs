//! The Webex webhook reader against realistic webhook bodies of each resource.

use chrono::{TimeZone as _, Utc};
use serde_json::{Value, json};
use webex_push_adapters::webex::{WebhookError, WebhookEvent, parse_event_at};
use webex_push_domain::{CalleeField, Event, EventSource, PersonId};
use webex_push_test_support::webex_fixtures::{
    self, GUIDE_MESSAGE, GUIDE_SECRET, GUIDE_SIGNATURE, QUEUE_CALL_CREATED, person_id as person,
    queue_call_answered, queue_call_taken_elsewhere, webex_id,
};

const CALLEE_UUID: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const CALLER_UUID: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

fn parse(body: &Value) -> WebhookEvent {
    parse_event_at(body.to_string().as_bytes(), received_at())
        .unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn parse_err(body: &Value) -> WebhookError {
    match parse_event_at(body.to_string().as_bytes(), received_at()) {
        Ok(event) => panic!("expected an error, got {event:?}"),
        Err(error) => error,
    }
}

fn received_at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The shared envelope of the callee's webhook for an event the caller caused, with a
/// field Webex may add one day, which the reader must ignore.
fn envelope(resource: &str, event: &str, data: Value) -> Value {
    let mut body = webex_fixtures::envelope(resource, event, CALLEE_UUID, CALLER_UUID, data);
    body["someFieldWebexAddsLater"] = json!({"nested": [1, 2, 3]});
    body
}

fn call_membership(state: &str) -> Value {
    envelope(
        "callMemberships",
        "created",
        json!({
            "id": webex_id("CALL_MEMBERSHIP", "5c2f-1"),
            "callId": "Y2lzY29zcGFyazovL3VzL0NBTEwvMTIzNDU",
            // Padded, urn:TEAM cluster: a spelling other than at registration.
            "personId": base64_padded(&format!("ciscospark://urn:TEAM:us-west-2_r/PEOPLE/{CALLEE_UUID}")),
            "personEmail": "callee@example.com",
            "personDisplayName": "Callee",
            "personOrgId": "x",
            "state": state,
            "isInitiator": false,
            "created": "2025-06-01T12:34:56.789Z",
        }),
    )
}

fn base64_padded(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn telephony_call(event: &str, data: Value) -> Value {
    envelope("telephony_calls", event, data)
}

fn alerting_call() -> Value {
    json!({
        "eventType": "received",
        "eventTimestamp": "2025-06-01T12:00:01.123Z",
        "callId": "Y2lzY29zcGFyazovL3VzL0NBTExTLzEyMzQ1",
        "callSessionId": "ZGIwYjUyZjUtMDAxNy00NmQ4",
        "personality": "terminator",
        "state": "alerting",
        "remoteParty": {
            "name": "Ada Lovelace",
            "number": "+15551234567",
            "personId": person(CALLER_UUID),
            "privacyEnabled": false,
            "callType": "location"
        },
        "created": "2025-06-01T12:00:00.000Z",
        "redirections": []
    })
}

#[test]
fn a_notified_call_membership_rings_the_callee_in_any_spelling() {
    let WebhookEvent::Relay(Event::Ring(call)) = parse(&call_membership("notified")) else {
        panic!("expected a ring");
    };
    assert_eq!(call.callee, PersonId::parse(CALLEE_UUID).unwrap());
    assert_eq!(call.call_id.as_str(), "Y2lzY29zcGFyazovL3VzL0NBTEwvMTIzNDU");
    assert_eq!(call.source, EventSource::CallMemberships);
    assert_eq!(
        call.caller.person,
        Some(PersonId::parse(CALLER_UUID).unwrap())
    );
    assert_eq!(
        call.occurred_at,
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 34, 56).unwrap()
            + chrono::TimeDelta::milliseconds(789)
    );
    let payload = call.sdk_payload.expect("the data goes to the SDK").value();
    assert_eq!(payload["callId"], "Y2lzY29zcGFyazovL3VzL0NBTEwvMTIzNDU");
    // KitchenSink reads the whole webhook, as posted.
    let webhook = call.webhook.expect("the webhook goes to KitchenSink");
    assert_eq!(webhook.as_str(), call_membership("notified").to_string());
}

#[test]
fn call_membership_answered_declined_or_left_ends_the_ringing() {
    for (state, answered) in [("joined", true), ("declined", false), ("left", false)] {
        let WebhookEvent::Relay(Event::CallEnded(ended)) = parse(&call_membership(state)) else {
            panic!("{state}: expected the call to end");
        };
        assert_eq!(ended.person, PersonId::parse(CALLEE_UUID).unwrap());
        assert_eq!(ended.answered_elsewhere, answered, "{state}");
        assert_eq!(ended.source, EventSource::CallMemberships);
    }
}

#[test]
fn call_membership_waiting_or_of_the_caller_is_ignored() {
    assert!(matches!(
        parse(&call_membership("waiting")),
        WebhookEvent::Ignored { .. }
    ));
    let mut initiator = call_membership("notified");
    initiator["data"]["isInitiator"] = json!(true);
    assert!(matches!(parse(&initiator), WebhookEvent::Ignored { .. }));
}

#[test]
fn a_notified_membership_without_person_or_call_is_refused_naming_the_field() {
    let mut body = call_membership("notified");
    body["data"].as_object_mut().unwrap().remove("personId");
    let error = parse_err(&body);
    assert_eq!(error.field(), Some("data.personId"));
    assert!(error.to_string().contains("data.personId"), "{error}");

    let mut body = call_membership("notified");
    body["data"]["personId"] = json!(webex_id("ROOM", CALLEE_UUID));
    let error = parse_err(&body);
    assert_eq!(error.field(), Some("data.personId"));
    assert!(error.to_string().contains("ROOM"), "{error}");

    let mut body = call_membership("notified");
    body["data"]["callId"] = json!("  ");
    assert_eq!(parse_err(&body).field(), Some("data.callId"));
}

#[test]
fn an_incoming_webex_calling_call_rings_the_webhook_owner_with_the_caller() {
    let WebhookEvent::Relay(Event::Ring(call)) = parse(&telephony_call("created", alerting_call()))
    else {
        panic!("expected a ring");
    };
    assert_eq!(call.callee, PersonId::parse(CALLEE_UUID).unwrap());
    assert_eq!(
        call.call_id.as_str(),
        "Y2lzY29zcGFyazovL3VzL0NBTExTLzEyMzQ1"
    );
    assert_eq!(call.caller.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(call.caller.number.as_deref(), Some("+15551234567"));
    assert_eq!(call.caller.display_name(), Some("Ada Lovelace"));
    assert_eq!(call.source, EventSource::TelephonyCalls);
    assert_eq!(
        call.occurred_at,
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 1).unwrap() + chrono::TimeDelta::milliseconds(123)
    );
}

#[test]
fn a_telephony_call_naming_a_person_rings_that_person_not_the_owner() {
    let mut data = alerting_call();
    data["personId"] = json!(CALLER_UUID.to_uppercase());
    let WebhookEvent::Relay(Event::Ring(call)) = parse(&telephony_call("updated", data)) else {
        panic!("expected a ring");
    };
    assert_eq!(call.callee, PersonId::parse(CALLER_UUID).unwrap());
}

#[test]
fn an_org_wide_telephony_call_without_a_person_rings_nobody() {
    let mut body = telephony_call("created", alerting_call());
    body["ownedBy"] = json!("org");
    let WebhookEvent::Ignored { why, .. } = parse(&body) else {
        panic!("the admin who created the webhook must not ring");
    };
    assert!(why.contains("data.personId"), "{why}");
}

#[test]
fn a_private_caller_stays_private() {
    let mut data = alerting_call();
    data["remoteParty"]["privacyEnabled"] = json!(true);
    let WebhookEvent::Relay(Event::Ring(call)) = parse(&telephony_call("created", data)) else {
        panic!("expected a ring");
    };
    assert_eq!(call.caller.display_name(), None);
}

#[test]
fn telephony_call_disconnected_deleted_or_answered_elsewhere_ends_the_ringing() {
    let mut disconnected = alerting_call();
    disconnected["state"] = json!("disconnected");
    disconnected["eventType"] = json!("disconnected");
    disconnected["disconnected"] = json!("2025-06-01T12:00:09.000Z");
    let WebhookEvent::Relay(Event::CallEnded(ended)) =
        parse(&telephony_call("updated", disconnected))
    else {
        panic!("expected the call to end");
    };
    assert!(!ended.answered_elsewhere);
    assert_eq!(ended.person, PersonId::parse(CALLEE_UUID).unwrap());

    let mut elsewhere = alerting_call();
    elsewhere["state"] = json!("disconnected");
    elsewhere["completedElsewhere"] = json!(true);
    let WebhookEvent::Relay(Event::CallEnded(ended)) = parse(&telephony_call("updated", elsewhere))
    else {
        panic!("expected the call to end");
    };
    assert!(ended.answered_elsewhere);

    let WebhookEvent::Relay(Event::CallEnded(ended)) =
        parse(&telephony_call("deleted", alerting_call()))
    else {
        panic!("a deleted call ends");
    };
    assert_eq!(
        ended.call_id.as_str(),
        "Y2lzY29zcGFyazovL3VzL0NBTExTLzEyMzQ1"
    );

    let mut connected = alerting_call();
    connected["state"] = json!("connected");
    connected["eventType"] = json!("connected");
    let WebhookEvent::Relay(Event::CallEnded(ended)) = parse(&telephony_call("updated", connected))
    else {
        panic!("an answered call stops ringing elsewhere");
    };
    assert!(ended.answered_elsewhere);
}

#[test]
fn outgoing_calls_and_other_states_are_ignored() {
    let mut outgoing = alerting_call();
    outgoing["personality"] = json!("originator");
    assert!(matches!(
        parse(&telephony_call("created", outgoing)),
        WebhookEvent::Ignored { .. }
    ));
    let mut held = alerting_call();
    held["state"] = json!("held");
    held["eventType"] = json!("held");
    let WebhookEvent::Ignored {
        resource, event, ..
    } = parse(&telephony_call("updated", held))
    else {
        panic!("a held call is ignored");
    };
    assert_eq!(
        (resource.as_str(), event.as_str()),
        ("telephony_calls", "updated")
    );
}

#[test]
fn a_telephony_push_rings_data_person_else_the_creator_of_its_own_webhook_else_the_actor() {
    let apns_payload = json!({
        "aps": {"content-available": 1},
        "data": {"callId": "abc-123", "type": "incoming_call", "blob": "eyJ2IjoxfQ"}
    });
    let body = envelope(
        "telephony_push",
        "updated",
        json!({
            "personId": person(CALLEE_UUID),
            "apnsPayload": apns_payload,
            "eventTimestamp": "2025-06-01T12:00:00Z",
        }),
    );
    let call = parse_ring(&body);
    assert_eq!(call.callee, PersonId::parse(CALLEE_UUID).unwrap());
    assert_eq!(call.callee_field, Some(CalleeField::DataPersonId));
    assert_eq!(call.sdk_payload.unwrap().value(), apns_payload);
    assert_eq!(call.source, EventSource::TelephonyPush);
    assert!(
        call.webhook.is_none(),
        "no app reads a telephony_push's webhook"
    );

    // Owned by its creator (the envelope's default here): the creator.
    const THIRD_UUID: &str = "11111111-2222-4333-8444-555555555555";
    let mut from_creator = body.clone();
    from_creator["data"]
        .as_object_mut()
        .unwrap()
        .remove("personId");
    from_creator["createdBy"] = json!(person(THIRD_UUID));
    let by_creator = parse_ring(&from_creator);
    assert_eq!(by_creator.callee, PersonId::parse(THIRD_UUID).unwrap());
    assert_eq!(by_creator.callee_field, Some(CalleeField::CreatedBy));

    // Org-wide: its creator is the admin, never the callee; the actor then.
    let mut org_wide = from_creator.clone();
    org_wide["ownedBy"] = json!("org");
    let by_actor = parse_ring(&org_wide);
    assert_eq!(by_actor.callee, PersonId::parse(CALLER_UUID).unwrap());
    assert_eq!(by_actor.callee_field, Some(CalleeField::ActorId));
    // Re-deliveries of the same payload are the same call, so they ring once.
    assert_eq!(by_actor.call_id, parse_ring(&org_wide).call_id);

    let mut nobody = org_wide;
    nobody.as_object_mut().unwrap().remove("actorId");
    assert!(matches!(
        parse_err(&nobody),
        WebhookError::MissingField(field) if field.contains("actorId")
    ));
}

#[test]
fn a_telephony_push_payload_reaches_the_sdk_byte_for_byte() {
    // Spellings a re-serialisation would change: key order, 1.50, an escape, spaces.
    let apns_payload = r#"{ "zeta": 1.50, "aps": {"sound": "r\u00e9"}, "alpha": [true, null] }"#;
    let body = format!(
        r#"{{"resource":"telephony_push","event":"updated","ownedBy":"org","actorId":"{}","data":{{"personId":"{}","apnsPayload":{apns_payload}}}}}"#,
        person(CALLER_UUID),
        person(CALLEE_UUID),
    );
    let WebhookEvent::Relay(Event::Ring(call)) =
        parse_event_at(body.as_bytes(), received_at()).unwrap()
    else {
        panic!("expected a ring");
    };
    assert_eq!(call.sdk_payload.unwrap().as_str(), apns_payload.trim());
}

#[test]
fn a_telephony_push_carries_fcm_payload_byte_for_byte_beside_the_apns_one_or_alone() {
    let apns_payload = r#"{"aps":{},"pushId":"p-1"}"#;
    let fcm_payload = r#"{ "pushId": "p-1", "version": 1.50, "name": "Émile" }"#;
    let body = format!(
        r#"{{"resource":"telephony_push","event":"updated","ownedBy":"org","actorId":"{}","data":{{"personId":"{}","callId":"c-1","apnsPayload":{apns_payload},"fcmPayload":{fcm_payload}}}}}"#,
        person(CALLER_UUID),
        person(CALLEE_UUID),
    );
    let WebhookEvent::Relay(Event::Ring(call)) =
        parse_event_at(body.as_bytes(), received_at()).unwrap()
    else {
        panic!("expected a ring");
    };
    assert_eq!(call.sdk_payload.unwrap().as_str(), apns_payload);
    assert_eq!(call.fcm_payload.unwrap().as_str(), fcm_payload.trim());

    // Android only: Webex sent no apnsPayload; the ring still goes, for Android.
    let body = envelope(
        "telephony_push",
        "updated",
        json!({"personId": person(CALLEE_UUID), "fcmPayload": {"pushId": "p-2"}}),
    );
    let call = parse_ring(&body);
    assert!(call.sdk_payload.is_none());
    assert_eq!(call.fcm_payload.unwrap().value(), json!({"pushId": "p-2"}));
    // Its call id comes from the payload, so re-deliveries ring once.
    assert_eq!(call.call_id, parse_ring(&body).call_id);
}

#[test]
fn a_telephony_push_whose_payload_is_no_object_is_ignored() {
    for payload in [json!([1, 2]), json!(7), json!("not json")] {
        let body = envelope(
            "telephony_push",
            "updated",
            json!({"personId": person(CALLEE_UUID), "apnsPayload": payload}),
        );
        assert!(
            matches!(parse(&body), WebhookEvent::Ignored { .. }),
            "{payload}"
        );
    }
}

fn parse_ring(body: &Value) -> webex_push_domain::IncomingCall {
    match parse(body) {
        WebhookEvent::Relay(Event::Ring(call)) => call,
        other => panic!("expected a ring, got {other:?}"),
    }
}

#[test]
fn a_telephony_push_payload_sent_as_a_json_string_reaches_the_sdk_as_an_object() {
    let body = envelope(
        "telephony_push",
        "updated",
        json!({"callId": "c-1", "apnsPayload": "{\"data\":{\"k\":\"v\"}}"}),
    );
    let call = parse_ring(&body);
    assert_eq!(
        call.sdk_payload.unwrap().as_str(),
        "{\"data\":{\"k\":\"v\"}}"
    );
    assert_eq!(call.call_id.as_str(), "c-1");
}

#[test]
fn a_telephony_push_without_payload_is_ignored() {
    let body = envelope(
        "telephony_push",
        "updated",
        json!({"personId": person(CALLEE_UUID)}),
    );
    assert!(matches!(parse(&body), WebhookEvent::Ignored { .. }));
}

fn message_body(actor: &str) -> Value {
    let mut body = envelope(
        "messages",
        "created",
        json!({
            "id": webex_id("MESSAGE", "9e2f7a10-1111-4000-8000-000000000002"),
            "roomId": webex_id("ROOM", "bb0a5d10-2222-4000-8000-000000000003"),
            "roomType": "direct",
            "personId": person(actor),
            "personEmail": "sender@example.com",
            "created": "2025-06-01T12:00:00.000Z",
        }),
    );
    body["actorId"] = json!(person(actor));
    body
}

#[test]
fn a_message_from_someone_else_is_announced_to_the_webhook_owner() {
    let WebhookEvent::Relay(Event::Message(message)) = parse(&message_body(CALLER_UUID)) else {
        panic!("expected a message");
    };
    assert_eq!(message.recipient, PersonId::parse(CALLEE_UUID).unwrap());
    assert_eq!(message.sender, Some(PersonId::parse(CALLER_UUID).unwrap()));
    assert_eq!(message.room_type.as_deref(), Some("direct"));
    assert_eq!(message.sender_email.as_deref(), Some("sender@example.com"));
}

#[test]
fn the_owners_own_message_and_org_wide_webhooks_are_ignored() {
    let WebhookEvent::Ignored { why, .. } = parse(&message_body(CALLEE_UUID)) else {
        panic!("your own message is not announced");
    };
    assert!(why.contains("own"), "{why}");
    let mut org = message_body(CALLER_UUID);
    org["ownedBy"] = json!("org");
    assert!(matches!(parse(&org), WebhookEvent::Ignored { .. }));
    let mut deleted = message_body(CALLER_UUID);
    deleted["event"] = json!("deleted");
    assert!(matches!(parse(&deleted), WebhookEvent::Ignored { .. }));
}

#[test]
fn other_resources_are_ignored_not_refused() {
    for resource in ["rooms", "memberships", "attachmentActions", "meetings"] {
        let WebhookEvent::Ignored { resource: seen, .. } =
            parse(&envelope(resource, "created", json!({"id": "x"})))
        else {
            panic!("{resource} is ignored");
        };
        assert_eq!(seen, resource);
    }
}

#[test]
fn malformed_bodies_are_refused_saying_what_is_wrong() {
    let not_json = parse_event_at(b"{\"resource\": ", received_at()).unwrap_err();
    assert!(matches!(not_json, WebhookError::Json(_)));
    assert!(
        not_json.to_string().contains("not valid JSON"),
        "{not_json}"
    );

    let array = parse_event_at(b"[]", received_at()).unwrap_err();
    assert!(matches!(array, WebhookError::NotAnObject));

    let no_resource = parse_err(&json!({"event": "created", "data": {}}));
    assert_eq!(no_resource.field(), Some("resource"));

    let bad_type = parse_err(&json!({"resource": 42, "event": "created"}));
    assert_eq!(bad_type.field(), Some("resource"));
    assert!(bad_type.to_string().contains("must be a string"));

    let bad_data = parse_err(&json!({"resource": "messages", "event": "created", "data": []}));
    assert_eq!(bad_data.field(), Some("data"));
}

// The payloads of real deliveries: `webex_push_test_support::webex_fixtures`.

fn parse_text(body: &str) -> WebhookEvent {
    parse_event_at(body.as_bytes(), received_at()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

#[test]
fn a_real_queue_call_rings_its_owner_with_the_caller_and_its_end_stops_the_ringing() {
    let WebhookEvent::Relay(Event::Ring(call)) = parse_text(QUEUE_CALL_CREATED) else {
        panic!("expected a ring");
    };
    let owner = PersonId::parse("00000000-0000-0000-0000-000000000002").unwrap();
    assert_eq!(call.callee, owner);
    assert_eq!(call.caller.name.as_deref(), Some("ALEX EXAMPLE"));
    assert_eq!(call.caller.number.as_deref(), Some("+15550100000"));
    assert_eq!(
        call.call_id.as_str(),
        "Y2lzY29zcGFyazovL3VzL0NBTEwvY2FsbGhhbGYtMTIzNDU2Nzg5OjA"
    );
    // `created` at the top is the webhook's; the event's own time is in `data`.
    assert_eq!(
        call.occurred_at,
        Utc.with_ymd_and_hms(2025, 8, 5, 16, 48, 19).unwrap()
            + chrono::TimeDelta::milliseconds(360)
    );

    let answered = queue_call_answered();
    let WebhookEvent::Relay(Event::CallEnded(ended)) = parse_text(&answered) else {
        panic!("expected the ringing to end");
    };
    assert!(ended.answered_elsewhere);

    let taken_elsewhere = queue_call_taken_elsewhere();
    let WebhookEvent::Relay(Event::CallEnded(ended)) = parse_text(&taken_elsewhere) else {
        panic!("expected the ringing to end");
    };
    assert_eq!(ended.person, owner);
    assert!(ended.answered_elsewhere);
}

#[test]
fn the_guides_message_with_a_bare_base64_org_id_is_announced_with_its_webhook() {
    // Sent by its owner: not announced to the owner.
    assert!(matches!(
        parse_text(GUIDE_MESSAGE),
        WebhookEvent::Ignored { .. }
    ));

    let from_someone_else = GUIDE_MESSAGE.replace(
        r#""actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY""#,
        &format!(r#""actorId":"{}""#, person(CALLER_UUID)),
    );
    let WebhookEvent::Relay(Event::Message(message)) = parse_text(&from_someone_else) else {
        panic!("expected a message");
    };
    assert_eq!(
        message.recipient,
        PersonId::parse("f5b36187-c8dd-4727-8b2f-f9c447f29046").unwrap()
    );
    assert_eq!(
        message.room_id,
        "Y2lzY29zcGFyazovL3VzL1JPT00vYmJjZWIxYWQtNDNmMS0zYjU4LTkxNDctZjE0YmIwYzRkMTU0"
    );
    assert_eq!(message.webhook.unwrap().as_str(), from_someone_else);
}

#[test]
fn the_guides_signature_test_vector_verifies() {
    use webex_push_adapters::webex::{sign, verify_signature};
    let secrets = [secrecy::SecretString::from(GUIDE_SECRET)];
    let signature = GUIDE_SIGNATURE;
    // The vector pins the constants, so the fixtures cannot drift from the reference.
    assert_eq!(signature, "4a7d8a9f8adc87192c16b10d8e4345022c74f2ab");
    assert_eq!(sign(GUIDE_SECRET, GUIDE_MESSAGE.as_bytes()), signature);
    assert!(verify_signature(&secrets, GUIDE_MESSAGE.as_bytes(), Some(signature)).is_ok());
    let tampered = GUIDE_MESSAGE.replace("matt@", "mallory@");
    assert!(verify_signature(&secrets, tampered.as_bytes(), Some(signature)).is_err());
}
