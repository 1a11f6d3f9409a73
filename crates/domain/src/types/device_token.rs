//! APNs device tokens: lowercase hex, length checked but not fixed.

use std::fmt;

/// An APNs device token (PushKit or normal), stored as lowercase hex.
///
/// Apple warns that token length may change, so any even number of hex digits from
/// [`DeviceToken::MIN_HEX`] to [`DeviceToken::MAX_HEX`] is accepted. `Debug` and
/// `Display` show only the first eight digits, so a token never reaches a log in full;
/// [`DeviceToken::as_str`] gives the whole token to those that must send it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceToken(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceTokenError {
    #[error("device token is empty")]
    Empty,
    #[error("device token must be hexadecimal; found {0:?} at position {1}")]
    NotHex(char, usize),
    #[error("device token must have an even number of hex digits, found {0}")]
    OddLength(usize),
    #[error("device token is too short: {0} hex digits, at least 32")]
    TooShort(usize),
    #[error("device token is too long: {0} hex digits, at most 400 (200 bytes)")]
    TooLong(usize),
}

impl DeviceToken {
    pub const MIN_HEX: usize = 32;
    pub const MAX_HEX: usize = 400;
    const SHOWN: usize = 8;

    pub fn parse(input: &str) -> Result<Self, DeviceTokenError> {
        if input.is_empty() {
            return Err(DeviceTokenError::Empty);
        }
        if let Some((position, bad)) = input.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(DeviceTokenError::NotHex(bad, position));
        }
        let len = input.len();
        if len > Self::MAX_HEX {
            return Err(DeviceTokenError::TooLong(len));
        }
        if len % 2 != 0 {
            return Err(DeviceTokenError::OddLength(len));
        }
        if len < Self::MIN_HEX {
            return Err(DeviceTokenError::TooShort(len));
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The whole token, for the APNs request path and for storage only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight hex digits followed by `…`: safe for logs and admin views.
    pub fn redacted(&self) -> String {
        format!("{}…", &self.0[..Self::SHOWN])
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.redacted())
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DeviceToken {
    type Err = DeviceTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_any_case_and_any_even_length_in_range_are_stored_lowercase() {
        let upper = "ABCDEF0123456789".repeat(4);
        assert_eq!(
            DeviceToken::parse(&upper).unwrap().as_str(),
            upper.to_lowercase()
        );
        for len in [32, 64, 160, 400] {
            let token = "a1".repeat(len / 2);
            assert_eq!(DeviceToken::parse(&token).unwrap().as_str().len(), len);
        }
    }

    #[test]
    fn bad_tokens_are_refused_with_what_is_wrong() {
        let cases: Vec<(String, DeviceTokenError)> = vec![
            (String::new(), DeviceTokenError::Empty),
            ("ab".repeat(15), DeviceTokenError::TooShort(30)),
            ("a".repeat(33), DeviceTokenError::OddLength(33)),
            ("ab".repeat(201), DeviceTokenError::TooLong(402)),
            (
                format!("{}g", "a".repeat(63)),
                DeviceTokenError::NotHex('g', 63),
            ),
            (
                format!(" {}", "a".repeat(64)),
                DeviceTokenError::NotHex(' ', 0),
            ),
            (
                format!("<{}>", "a".repeat(64)),
                DeviceTokenError::NotHex('<', 0),
            ),
            ("ab cd ".repeat(16), DeviceTokenError::NotHex(' ', 2)),
            (
                format!("0x{}", "a".repeat(64)),
                DeviceTokenError::NotHex('x', 1),
            ),
            (
                format!("{}é", "a".repeat(63)),
                DeviceTokenError::NotHex('é', 63),
            ),
            (
                "'; DROP TABLE devices; --".into(),
                DeviceTokenError::NotHex('\'', 0),
            ),
        ];
        assert!(cases.len() >= 10);
        for (input, expected) in cases {
            assert_eq!(
                DeviceToken::parse(&input).unwrap_err(),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_token_never_prints_in_full() {
        let token = DeviceToken::parse(&"0123456789abcdef".repeat(4)).unwrap();
        assert_eq!(token.to_string(), "01234567…");
        assert_eq!(format!("{token:?}"), "DeviceToken(01234567…)");
    }
}
