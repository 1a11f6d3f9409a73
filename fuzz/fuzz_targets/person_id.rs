//! Fuzzes `PersonId::parse` with arbitrary text: it must never panic, and every id it
//! accepts must survive a round trip through its canonical spellings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webex_push_domain::PersonId;

fuzz_target!(|data: &[u8]| {
    // Ids reach the server inside JSON strings and URL paths, so they are always UTF-8;
    // other bytes would only exercise `from_utf8`.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = PersonId::parse(text) else {
        return;
    };

    // The canonical Webex spelling names the same person.
    let webex_id = id.to_webex_id();
    match PersonId::parse(&webex_id) {
        Ok(again) => {
            assert_eq!(again, id, "to_webex_id() re-parses to another person");
            assert_eq!(again.uuid(), id.uuid());
        }
        Err(error) => panic!("to_webex_id() {webex_id:?} does not re-parse: {error}"),
    }

    // So does the bare UUID, which is what storage hands back.
    let bare = id.uuid().to_string();
    match PersonId::parse(&bare) {
        Ok(again) => assert_eq!(again, id, "the bare UUID parses to another person"),
        Err(error) => panic!("uuid {bare:?} does not re-parse: {error}"),
    }
    assert_eq!(PersonId::from_uuid(id.uuid()), id);

    // The original spelling is kept, trimmed, for display; Display never panics.
    assert_eq!(id.original(), text.trim());
    let _ = format!("{id} {id:?}");
});
