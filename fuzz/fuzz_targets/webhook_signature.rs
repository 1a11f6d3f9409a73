//! Fuzzes `verify_signature` with arbitrary secrets, bodies and headers: it must never
//! panic, a header computed independently with HMAC-SHA1 must always verify, and a header
//! for another body must not.
#![no_main]

use arbitrary::Arbitrary;
use hmac::{Hmac, Mac as _};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use sha1::Sha1;
use webex_push_adapters::webex::{SignatureError, sign, verify_signature};

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: Vec<String>,
    body: Vec<u8>,
    header: Option<String>,
    /// Which secret signs the body for the property check.
    signer: u8,
    /// Spell the correct signature in upper case (Webex sends lower case; both pass).
    upper: bool,
    /// Surround it with whitespace, as a proxy may.
    padded: bool,
}

/// HMAC-SHA1 computed here, not with the crate's `sign`, so the check is independent.
fn hmac_sha1_hex(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length");
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fuzz_target!(|input: Input| {
    let secrets: Vec<SecretString> = input
        .secrets
        .iter()
        .map(|s| SecretString::from(s.as_str()))
        .collect();

    // Arbitrary header: any answer but a panic is fine; a malformed one is never Ok.
    let outcome = verify_signature(&secrets, &input.body, input.header.as_deref());
    if secrets.is_empty() {
        assert_eq!(outcome, Err(SignatureError::NoSecretConfigured));
    }
    if outcome.is_ok() {
        let header = input.header.as_deref().unwrap_or_default().trim();
        assert_eq!(
            header.len(),
            40,
            "accepted a header that is not 40 hex digits"
        );
    }

    if input.secrets.is_empty() {
        return;
    }
    let signer = &input.secrets[usize::from(input.signer) % input.secrets.len()];
    let expected = hmac_sha1_hex(signer, &input.body);
    assert_eq!(
        sign(signer, &input.body),
        expected,
        "sign() disagrees with HMAC-SHA1"
    );

    let mut header = if input.upper {
        expected.to_uppercase()
    } else {
        expected.clone()
    };
    if input.padded {
        header = format!(" \t{header} \r\n");
    }
    assert_eq!(
        verify_signature(&secrets, &input.body, Some(&header)),
        Ok(()),
        "a correct HMAC-SHA1 signature was refused"
    );

    // The same signature over a different body is refused (unless another configured
    // secret happens to sign that body identically, which HMAC-SHA1 makes unreachable).
    let mut other_body = input.body.clone();
    other_body.push(b'\n');
    let forged = verify_signature(&secrets, &other_body, Some(&expected));
    assert_eq!(
        forged,
        Err(SignatureError::Mismatch),
        "a signature for another body verified"
    );
});
