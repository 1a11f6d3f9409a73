//! Webex access tokens as the app presents them, kept out of every log.

use std::fmt;

/// A Webex OAuth access token (a bearer credential), checked for shape only: whether
/// Webex accepts it is the identity port's business.
///
/// Whoever holds it acts as the person it belongs to, so `Debug` and `Display` never
/// show any of it; [`AccessToken::expose`] hands the whole token to the one adapter
/// that must send it to Webex.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    #[error("access token is empty")]
    Empty,
    #[error("access token is too long ({0} characters, at most 4096)")]
    TooLong(usize),
    /// Whitespace, control or non-ASCII characters: no Webex token has them, and they
    /// could not be sent in an `Authorization` header anyway. The character itself is
    /// not named, since it is part of a secret.
    #[error("access token contains a character that is not visible ASCII")]
    BadCharacter,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
}

impl AccessToken {
    /// Webex tokens are a few hundred characters; anything far longer is not one, and
    /// refusing it early keeps junk out of the cache and off the wire.
    pub const MAX_LEN: usize = 4096;

    /// Parses a bare token; surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, AccessTokenError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AccessTokenError::Empty);
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err(AccessTokenError::TooLong(trimmed.len()));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AccessTokenError::BadCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Parses the value of an `Authorization` header: `Bearer <token>`, the scheme
    /// matched case-insensitively (RFC 7235).
    pub fn from_authorization(header: &str) -> Result<Self, AccessTokenError> {
        let header = header.trim_start();
        let (scheme, rest) = header.split_once(' ').ok_or(AccessTokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AccessTokenError::NotBearer);
        }
        Self::parse(rest)
    }

    /// The whole token, for the `Authorization` header sent to Webex and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted access token>")
    }
}

impl std::str::FromStr for AccessToken {
    type Err = AccessTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ZDI3MGEyYzQtNmFlNS00NDNhLWFlNzAtZGVjMjE2YzEyOGM0YWQ5_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f";

    #[test]
    fn debug_and_display_never_show_the_token() {
        let token = AccessToken::parse(TOKEN).unwrap();
        for shown in [
            format!("{token:?}"),
            format!("{token}"),
            format!("{token:#?}"),
        ] {
            assert!(!shown.contains("ZDI3"), "{shown}");
            assert!(!shown.contains("PF84"), "{shown}");
        }
        assert_eq!(token.expose(), TOKEN);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(
            AccessToken::parse(&format!("  {TOKEN}\t"))
                .unwrap()
                .expose(),
            TOKEN
        );
    }

    #[test]
    fn empty_blank_long_and_odd_tokens_are_refused() {
        let cases = [
            ("", AccessTokenError::Empty),
            ("   \t ", AccessTokenError::Empty),
            (&"a".repeat(4097), AccessTokenError::TooLong(4097)),
            ("abc def", AccessTokenError::BadCharacter),
            ("abc\r\nX-Injected: 1", AccessTokenError::BadCharacter),
            ("jeton-é", AccessTokenError::BadCharacter),
        ];
        for (input, expected) in cases {
            assert_eq!(
                AccessToken::parse(input).unwrap_err(),
                expected,
                "{input:?}"
            );
        }
        assert!(AccessToken::parse(&"a".repeat(4096)).is_ok());
    }

    #[test]
    fn bearer_headers_are_parsed_and_other_schemes_refused() {
        for header in [
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER   {TOKEN} "),
        ] {
            assert_eq!(
                AccessToken::from_authorization(&header).unwrap().expose(),
                TOKEN
            );
        }
        let refused = [
            ("Basic dXNlcjpwYXNz", AccessTokenError::NotBearer),
            (TOKEN, AccessTokenError::NotBearer),
            ("Bearer", AccessTokenError::NotBearer),
            ("Bearer ", AccessTokenError::Empty),
            ("Bearer a b", AccessTokenError::BadCharacter),
        ];
        for (header, expected) in refused {
            assert_eq!(
                AccessToken::from_authorization(header).unwrap_err(),
                expected,
                "{header:?}"
            );
        }
    }
}
