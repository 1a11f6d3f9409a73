//! Fuzzes `DeviceToken::parse` with arbitrary text: it must never panic, and every token
//! it accepts must be what APNs expects and redact to a fixed, log-safe prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webex_push_domain::DeviceToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
