//! Device tokens and the push service that issued them: APNs tokens are lowercase
//! hex, length checked but not fixed; FCM registration tokens are opaque printable
//! ASCII.

use std::fmt;
use std::str::FromStr;

use super::ParseEnumError;

/// Which push service a token belongs to, and so which gateway sends to it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PushProvider {
    /// Apple Push Notification service (iOS).
    Apns,
    /// Firebase Cloud Messaging, HTTP v1 API (Android).
    Fcm,
}

impl PushProvider {
    pub const ALL: [PushProvider; 2] = [PushProvider::Apns, PushProvider::Fcm];

    pub fn as_str(self) -> &'static str {
        match self {
            PushProvider::Apns => "apns",
            PushProvider::Fcm => "fcm",
        }
    }
}

impl FromStr for PushProvider {
    type Err = ParseEnumError;

    /// Case-insensitive: apps send `APNS` and `FCM`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "apns" => Ok(PushProvider::Apns),
            "fcm" => Ok(PushProvider::Fcm),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "apns, fcm",
            }),
        }
    }
}

impl fmt::Display for PushProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device token and its provider: an APNs token (PushKit or normal), stored as
/// lowercase hex, or an FCM registration token, stored as given (it is case-sensitive).
///
/// Apple warns that token length may change, so any even number of hex digits from
/// [`DeviceToken::MIN_HEX`] to [`DeviceToken::MAX_HEX`] is accepted. Google documents
/// no format for FCM tokens, so those are only bounded: 1 to [`DeviceToken::MAX_FCM`]
/// printable ASCII characters. `Debug` and `Display` show only the first eight
/// characters, so a token never reaches a log in full; [`DeviceToken::as_str`] gives
/// the whole token to those that must send it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceToken {
    token: String,
    provider: PushProvider,
}

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
    #[error("FCM registration token must be printable ASCII; found {0:?} at position {1}")]
    NotPrintable(char, usize),
    #[error("FCM registration token is too long: {0} bytes, at most 4096")]
    FcmTooLong(usize),
}

impl DeviceToken {
    pub const MIN_HEX: usize = 32;
    pub const MAX_HEX: usize = 400;
    /// Real FCM tokens are about 160 characters; this only bounds what is stored.
    pub const MAX_FCM: usize = 4096;
    const SHOWN: usize = 8;

    /// A token of `provider` ([`parse`](Self::parse) or [`parse_fcm`](Self::parse_fcm)).
    pub fn parse_for(provider: PushProvider, input: &str) -> Result<Self, DeviceTokenError> {
        match provider {
            PushProvider::Apns => Self::parse(input),
            PushProvider::Fcm => Self::parse_fcm(input),
        }
    }

    /// An FCM registration token: 1 to [`MAX_FCM`](Self::MAX_FCM) printable ASCII
    /// characters (no spaces or controls), kept as given.
    pub fn parse_fcm(input: &str) -> Result<Self, DeviceTokenError> {
        if input.is_empty() {
            return Err(DeviceTokenError::Empty);
        }
        if let Some((position, bad)) = input.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
            return Err(DeviceTokenError::NotPrintable(bad, position));
        }
        if input.len() > Self::MAX_FCM {
            return Err(DeviceTokenError::FcmTooLong(input.len()));
        }
        Ok(Self {
            token: input.to_owned(),
            provider: PushProvider::Fcm,
        })
    }

    /// An APNs token: an even number of hex digits, any case, stored lowercase.
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
        Ok(Self {
            token: input.to_ascii_lowercase(),
            provider: PushProvider::Apns,
        })
    }

    /// The whole token, for the request that sends to it and for storage only.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    pub fn provider(&self) -> PushProvider {
        self.provider
    }

    /// The first eight characters followed by `…` (at most half of a token shorter
    /// than sixteen, so not even a short one prints whole): safe for logs and admin
    /// views.
    pub fn redacted(&self) -> String {
        let shown = Self::SHOWN.min(self.token.len() / 2);
        // Tokens are ASCII, so any byte offset is a character boundary.
        format!("{}…", self.token.get(..shown).unwrap_or_default())
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
    fn fcm_tokens_are_printable_ascii_kept_as_given_and_bounded() {
        let token = "dGVzdA:APA91b-Hx_yZ0123456789";
        let parsed = DeviceToken::parse_fcm(token).unwrap();
        assert_eq!(parsed.as_str(), token);
        assert_eq!(parsed.provider(), PushProvider::Fcm);
        assert_eq!(parsed.to_string(), "dGVzdA:A…");
        assert_eq!(
            DeviceToken::parse_fcm("").unwrap_err(),
            DeviceTokenError::Empty
        );
        assert_eq!(
            DeviceToken::parse_fcm("ab cd").unwrap_err(),
            DeviceTokenError::NotPrintable(' ', 2)
        );
        assert_eq!(
            DeviceToken::parse_fcm("ab\ncd").unwrap_err(),
            DeviceTokenError::NotPrintable('\n', 2)
        );
        assert_eq!(
            DeviceToken::parse_fcm("abé").unwrap_err(),
            DeviceTokenError::NotPrintable('é', 2)
        );
        assert_eq!(
            DeviceToken::parse_fcm(&"a".repeat(4097)).unwrap_err(),
            DeviceTokenError::FcmTooLong(4097)
        );
        assert!(DeviceToken::parse_fcm(&"a".repeat(4096)).is_ok());
        // The same text is a different token under another provider.
        let hex = "ab".repeat(16);
        assert_ne!(
            DeviceToken::parse_fcm(&hex).unwrap(),
            DeviceToken::parse(&hex).unwrap()
        );
        assert_eq!(DeviceToken::parse_fcm("short").unwrap().to_string(), "sh…");
        assert_eq!(DeviceToken::parse_fcm("x").unwrap().to_string(), "…");
    }

    #[test]
    fn providers_parse_as_apps_send_them() {
        assert_eq!("FCM".parse::<PushProvider>().unwrap(), PushProvider::Fcm);
        assert_eq!("APNS".parse::<PushProvider>().unwrap(), PushProvider::Apns);
        assert!("GCM".parse::<PushProvider>().is_err());
    }

    #[test]
    fn a_token_never_prints_in_full() {
        let token = DeviceToken::parse(&"0123456789abcdef".repeat(4)).unwrap();
        assert_eq!(token.to_string(), "01234567…");
        assert_eq!(format!("{token:?}"), "DeviceToken(01234567…)");
    }
}
