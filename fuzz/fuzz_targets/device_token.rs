//! Fuzzes `DeviceToken::parse` with arbitrary text: it must never panic, and every token
//! it accepts must be what APNs expects and redact to a fixed, log-safe prefix. And
//! `DeviceToken::parse_fcm`: never a panic, only printable ASCII kept as given, never
//! printed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webex_push_domain::DeviceToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fcm) = DeviceToken::parse_fcm(text) {
        assert_eq!(fcm.as_str(), text, "an FCM token is kept as given");
        assert!(text.bytes().all(|b| b.is_ascii_graphic()));
        assert!(text.len() <= DeviceToken::MAX_FCM);
        let redacted = fcm.redacted();
        let shown = redacted.trim_end_matches('…');
        assert!(redacted.ends_with('…') && shown.len() <= 8);
        assert!(shown.len() < text.len(), "an FCM token printed whole");
        assert!(text.starts_with(shown));
    }
    let Ok(token) = DeviceToken::parse(text) else {
        return;
    };
    let hex = token.as_str();

    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "accepted token is not lowercase hex"
    );
    assert_eq!(
        hex.len() % 2,
        0,
        "accepted token has an odd number of digits"
    );
    assert!(
        (DeviceToken::MIN_HEX..=DeviceToken::MAX_HEX).contains(&hex.len()),
        "accepted token has {} digits",
        hex.len()
    );
    assert!(
        hex.eq_ignore_ascii_case(text),
        "the token is not the input, lowercased"
    );

    // Redaction: eight digits and an ellipsis, whatever the token; Debug and Display
    // show nothing more.
    let redacted = token.redacted();
    assert_eq!(redacted.chars().count(), 9, "redacted form is {redacted:?}");
    assert!(redacted.ends_with('…'));
    assert!(hex.starts_with(redacted.trim_end_matches('…')));
    assert_eq!(token.to_string(), redacted);
    assert!(!format!("{token:?}").contains(hex));

    // Parsing is idempotent.
    assert_eq!(DeviceToken::parse(hex).as_ref(), Ok(&token));
});
