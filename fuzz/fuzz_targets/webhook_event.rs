//! Fuzzes the Webex webhook reader with arbitrary bytes, as any client on the internet
//! may POST them: it must never panic, must answer the same for the same body, and may
//! only accept a JSON object. Seeded with realistic events from `fuzz/corpus/webhook_event`.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use webex_push_adapters::webex::{WebhookEvent, parse_event, parse_event_at};

fuzz_target!(|body: &[u8]| {
    // The production entry point (dated now): only checked for panics.
    let _ = parse_event(body);

    // With a fixed clock the reader is a pure function of the body.
    let received_at = DateTime::<Utc>::UNIX_EPOCH;
    let first = parse_event_at(body, received_at);
    let second = parse_event_at(body, received_at);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same body read twice differs"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the same body was accepted once and refused once"),
    }

    let Ok(event) = first else {
        // Errors render (they go to logs and problem bodies) without panicking.
        if let Err(error) = first {
            let _ = (error.to_string(), error.field());
        }
        return;
    };
    let Ok(serde_json::Value::Object(envelope)) = serde_json::from_slice(body) else {
        panic!("accepted a body that is not a JSON object");
    };
    let _ = (event.kind(), format!("{event:?}"));
    if let WebhookEvent::Ignored {
        resource, event, ..
    } = &event
    {
        // The echoed names are the body's own (trimmed), never invented.
        assert_eq!(
            Some(resource.as_str()),
            envelope
                .get("resource")
                .and_then(|v| v.as_str())
                .map(str::trim)
        );
        assert_eq!(
            Some(event.as_str()),
            envelope
                .get("event")
                .and_then(|v| v.as_str())
                .map(str::trim)
        );
    }
});
