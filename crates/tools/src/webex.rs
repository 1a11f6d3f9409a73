//! Webex webhook bodies shaped as Webex sends them (see the reference, section 2), and
//! their `X-Spark-Signature`.

use base64::Engine as _;
use serde_json::{Value, json};

pub use webex_push_adapters::webex::{SIGNATURE_HEADER, sign};

/// A Webex id as Webex usually spells it: unpadded base64 of
/// `ciscospark://us/<kind>/<uuid>`.
pub fn webex_id(kind: &str, uuid: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("ciscospark://us/{kind}/{uuid}"))
}

/// The person id of `uuid`.
pub fn person_id(uuid: &str) -> String {
    webex_id("PEOPLE", uuid)
}

/// The envelope every event shares. `owner` created the webhook, `actor` caused the event.
pub fn envelope(resource: &str, event: &str, owner: &str, actor: &str, data: Value) -> Value {
    json!({
        "id": webex_id("WEBHOOK", "7f3c1b2a-0000-4000-8000-000000000001"),
        "name": "webex-push",
        "targetUrl": "https://push.example.com/webhook",
        "resource": resource,
        "event": event,
        "orgId": webex_id("ORGANIZATION", "1eb65fdf-9643-417f-9974-ad72cae0e10f"),
        "createdBy": person_id(owner),
        "appId": webex_id("APPLICATION", "c1a2b3c4-0000-4000-8000-000000000001"),
        "ownedBy": "creator",
        "status": "active",
        "created": "2025-06-01T10:00:00.000Z",
        "actorId": person_id(actor),
        "data": data,
    })
}

/// `callMemberships` / `created` with `state = notified`: `callee` is being rung by `caller`.
pub fn call_membership(call_id: &str, callee: &str, caller: &str) -> Value {
    envelope(
        "callMemberships",
        "created",
        callee,
        caller,
        json!({
            "id": webex_id("CALL_MEMBERSHIP", callee),
            "callId": call_id,
            "personId": person_id(callee),
            "personEmail": "callee@example.com",
            "state": "notified",
            "isInitiator": false,
            "created": "2025-06-01T12:34:56.000Z",
        }),
    )
}

/// `telephony_calls` / `created`: an incoming Webex Calling call alerting `callee`.
pub fn telephony_ring(
    call_id: &str,
    callee: &str,
    caller_name: &str,
    caller_number: &str,
) -> Value {
    envelope(
        "telephony_calls",
        "created",
        callee,
        callee,
        json!({
            "eventType": "received",
            "eventTimestamp": "2025-06-01T12:00:01.123Z",
            "callId": call_id,
            "callSessionId": format!("session-{call_id}"),
            "personality": "terminator",
            "state": "alerting",
            "remoteParty": {
                "name": caller_name,
                "number": caller_number,
                "privacyEnabled": false,
                "callType": "location"
            },
            "created": "2025-06-01T12:00:00.000Z",
        }),
    )
}

/// `messages` / `created`: `sender` wrote to `owner` in a direct room.
pub fn direct_message(message_id: &str, owner: &str, sender: &str) -> Value {
    envelope(
        "messages",
        "created",
        owner,
        sender,
        json!({
            "id": webex_id("MESSAGE", message_id),
            "roomId": webex_id("ROOM", "9a8b7c6d-0000-4000-8000-000000000001"),
            "roomType": "direct",
            "personId": person_id(sender),
            "personEmail": "caller@example.com",
            "created": "2025-06-01T12:00:00.000Z",
        }),
    )
}

/// `telephony_push` / `updated` from an org-wide webhook `admin` made: Webex Calling
/// rings `callee`, with the SDK's payload for the phone in `data.apnsPayload`.
pub fn telephony_push(call_id: &str, callee: &str, admin: &str, caller_name: &str) -> Value {
    let mut body = envelope(
        "telephony_push",
        "updated",
        admin,
        admin,
        json!({
            "personId": person_id(callee),
            "callId": call_id,
            "apnsPayload": {
                "aps": {},
                "pushId": format!("push-{call_id}"),
                "externalTrackingId": format!("tracking-{call_id}"),
                "name": caller_name,
                "number": "+15557654321",
                "version": "1.0",
            },
            "fcmPayload": {
                "pushId": format!("push-{call_id}"),
                "externalTrackingId": format!("tracking-{call_id}"),
                "name": caller_name,
                "number": "+15557654321",
                "version": "1.0",
            },
            "eventTimestamp": "2025-06-01T12:00:02.000Z",
        }),
    );
    body["ownedBy"] = json!("org");
    body
}
