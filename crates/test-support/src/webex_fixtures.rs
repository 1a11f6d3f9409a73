//! Webex webhook bodies as real deliveries had them (identifiers and names replaced; the
//! reference's section 5), verbatim, for unit and end-to-end tests alike; and the
//! envelope every webhook shares, to build bodies of any resource around.

use base64::Engine as _;
use serde_json::{Value, json};

/// A Webex id as Webex usually spells it: unpadded base64 of
/// `ciscospark://us/<kind>/<id>`.
pub fn webex_id(kind: &str, id: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("ciscospark://us/{kind}/{id}"))
}

/// The person id of `uuid`, as Webex usually spells it.
pub fn person_id(uuid: &str) -> String {
    webex_id("PEOPLE", uuid)
}

/// The envelope every webhook shares, around `data`: `owner` (a person's UUID) created
/// the webhook, `actor` caused the event.
pub fn envelope(resource: &str, event: &str, owner: &str, actor: &str, data: Value) -> Value {
    json!({
        "id": webex_id("WEBHOOK", "7f3c1b2a-0000-4000-8000-000000000001"),
        "name": "webex-push",
        "targetUrl": "https://push.example.com/webhook",
        "resource": resource,
        "event": event,
        "orgId": webex_id("ORGANIZATION", "1eb65fdf-9643-417f-9974-ad72cae0e10f"),
        "createdBy": person_id(owner),
        "appId": webex_id("APPLICATION", "C1"),
        "ownedBy": "creator",
        "status": "active",
        "created": "2025-06-01T10:00:00.000Z",
        "actorId": person_id(actor),
        "data": data,
    })
}

/// A `telephony_calls` incoming call into a queue, with the fields Webex adds
/// (`appearance`, `muteCapable`, `muted`, ...).
pub const QUEUE_CALL_CREATED: &str = r#"{"data": {"callId": "Y2lzY29zcGFyazovL3VzL0NBTEwvY2FsbGhhbGYtMTIzNDU2Nzg5OjA", "appearance": 1,
  "personality": "terminator", "created": "2025-08-05T16:48:19.359Z",
  "remoteParty": {"name": "ALEX EXAMPLE", "privacyEnabled": false, "number": "+15550100000", "callType": "external"},
  "muteCapable": false, "eventType": "received", "state": "alerting",
  "callSessionId": "ZmEzMmU1MzQtYzNhMi00NjVkLWJjZTgtMDAwMDAwMDAwMDAw", "muted": false,
  "eventTimestamp": "2025-08-05T16:48:19.360Z", "completedElsewhere": false},
 "resource": "telephony_calls", "created": "2025-07-01T13:31:06.813Z",
 "orgId": "Y2lzY29zcGFyazovL3VzL09SR0FOSVpBVElPTi8wMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDE",
 "actorId": "Y2lzY29zcGFyazovL3VzL1BFT1BMRS8wMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDI",
 "createdBy": "Y2lzY29zcGFyazovL3VzL1BFT1BMRS8wMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDI",
 "appId": "Y2lzY29zcGFyazovL3VzL0FQUExJQ0FUSU9OL0MwMDAw", "name": "Calls",
 "id": "Y2lzY29zcGFyazovL3VzL1dFQkhPT0svMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAz",
 "event": "created", "targetUrl": "https://relay.example.com/webhook", "ownedBy": "creator", "status": "active"}"#;

/// The guide's `messages` example, minified, as signed by the test vector.
pub const GUIDE_MESSAGE: &str = r#"{"id":"Y2lzY29zcGFyazovL3VzL1dFQkhPT0svOTZhYmMyYWEtM2RjYy0xMWU1LWExNTItZmUzNDgxOWNkYzlh","name":"My Attachment Action Webhook","targetUrl":"https://example.com/mywebhook","resource":"messages","event":"created","filter":"roomId=Y2lzY29zcGFyazovL3VzL1JPT00vYmJjZWIxYWQtNDNmMS0zYjU4LTkxNDctZjE0YmIwYzRkMTU0","orgId":"OTZhYmMyYWEtM2RjYy0xMWU1LWExNTItZmUzNDgxOWNkYzlh","createdBy":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY","appId":"Y2lzY29zcGFyazovL3VzL0FQUExJQ0FUSU9OL0MyNzljYjMwYzAyOTE4MGJiNGJkYWViYjA2MWI3OTY1Y2RhMzliNjAyOTdjODUwM2YyNjZhYmY2NmM5OTllYzFm","ownedBy":"creator","status":"active","actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY","data":{"id":"Y2lzY29zcGFyazovL3VzL01FU1NBR0UvOTJkYjNiZTAtNDNiZC0xMWU2LThhZTktZGQ1YjNkZmM1NjVk","roomId":"Y2lzY29zcGFyazovL3VzL1JPT00vYmJjZWIxYWQtNDNmMS0zYjU4LTkxNDctZjE0YmIwYzRkMTU0","personId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY","personEmail":"matt@example.com","created":"2015-10-18T14:26:16.000Z"}}"#;

/// The secret the guide's test vector signs [`GUIDE_MESSAGE`] with.
pub const GUIDE_SECRET: &str = "webhook-secret-from-post-v1-webhooks";
/// `X-Spark-Signature` of [`GUIDE_MESSAGE`] under [`GUIDE_SECRET`].
pub const GUIDE_SIGNATURE: &str = "4a7d8a9f8adc87192c16b10d8e4345022c74f2ab";

/// The owner of the webhook of [`QUEUE_CALL_CREATED`], who is rung.
pub const QUEUE_CALL_OWNER: &str = "00000000-0000-0000-0000-000000000002";

/// The `updated` event of [`QUEUE_CALL_CREATED`]'s call as it is answered (on an app).
pub fn queue_call_answered() -> String {
    QUEUE_CALL_CREATED
        .replace(r#""event": "created""#, r#""event": "updated""#)
        .replace(
            r#""eventType": "received""#,
            r#""eventType": "answered", "answered": "2025-08-05T16:48:25.000Z", "endpointType": "APPLICATION", "endpointId": "e-1""#,
        )
        .replace(r#""state": "alerting""#, r#""state": "connected""#)
}

/// The `deleted` event of [`QUEUE_CALL_CREATED`]'s call, which another agent took.
pub fn queue_call_taken_elsewhere() -> String {
    QUEUE_CALL_CREATED
        .replace(r#""event": "created""#, r#""event": "deleted""#)
        .replace(
            r#""eventType": "received""#,
            r#""eventType": "disconnected", "disconnected": "2025-08-05T16:48:30.000Z", "redirections": [{"reason": "unavailable"}]"#,
        )
        .replace(r#""state": "alerting""#, r#""state": "disconnected""#)
        .replace(r#""completedElsewhere": false"#, r#""completedElsewhere": true"#)
}
