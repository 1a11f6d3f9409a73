//! Webex person ids, normalised so every spelling of one person compares equal.

use std::fmt;
use std::hash::{Hash, Hasher};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use uuid::Uuid;

/// A Webex person, identified by the UUID inside its id.
///
/// Webex sends the same person as padded or unpadded base64, in the standard or
/// URL-safe alphabet, with a `us` or `urn:TEAM:<region>` cluster, or as a bare UUID.
/// All of them parse to the same `PersonId`: equality and hashing use the UUID only;
/// the original spelling is kept for display.
#[derive(Clone)]
pub struct PersonId {
    uuid: Uuid,
    original: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonIdError {
    #[error("person id is empty")]
    Empty,
    #[error("person id is too long ({0} characters, at most 512)")]
    TooLong(usize),
    #[error("person id is neither a UUID nor base64 of a Webex id")]
    NotBase64,
    #[error("person id does not decode to `ciscospark://<cluster>/PEOPLE/<uuid>`")]
    Malformed,
    #[error("id names a {0}, not a person")]
    WrongType(String),
    #[error("person id does not end in a valid UUID")]
    BadUuid,
}

impl PersonId {
    const MAX_LEN: usize = 512;

    pub fn parse(input: &str) -> Result<Self, PersonIdError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PersonIdError::Empty);
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err(PersonIdError::TooLong(trimmed.len()));
        }
        if let Ok(uuid) = Uuid::try_parse(trimmed) {
            return Ok(Self::from_parts(uuid, trimmed));
        }
        let unpadded = trimmed.trim_end_matches('=');
        let decoded = STANDARD_NO_PAD
            .decode(unpadded)
            .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
            .map_err(|_| PersonIdError::NotBase64)?;
        let decoded = String::from_utf8(decoded).map_err(|_| PersonIdError::Malformed)?;
        let path = decoded
            .strip_prefix("ciscospark://")
            .ok_or(PersonIdError::Malformed)?;
        let mut parts = path.rsplit('/');
        let (Some(uuid), Some(kind), Some(cluster)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(PersonIdError::Malformed);
        };
        if cluster.is_empty() {
            return Err(PersonIdError::Malformed);
        }
        if !kind.eq_ignore_ascii_case("PEOPLE") {
            return Err(PersonIdError::WrongType(kind.to_owned()));
        }
        let uuid = Uuid::try_parse(uuid).map_err(|_| PersonIdError::BadUuid)?;
        Ok(Self::from_parts(uuid, trimmed))
    }

    /// Builds a person from a UUID alone, e.g. one read back from storage.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self::from_parts(uuid, &uuid.hyphenated().to_string())
    }

    fn from_parts(uuid: Uuid, original: &str) -> Self {
        Self {
            uuid,
            original: original.to_owned(),
        }
    }

    /// The UUID that identifies the person; what storage indexes and compares.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The id as it was sent, for display and for echoing back to Webex or the app.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The canonical Webex spelling: unpadded base64 of `ciscospark://us/PEOPLE/<uuid>`.
    pub fn to_webex_id(&self) -> String {
        STANDARD_NO_PAD.encode(format!("ciscospark://us/PEOPLE/{}", self.uuid.hyphenated()))
    }
}

impl PartialEq for PersonId {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}

impl Eq for PersonId {}

impl Hash for PersonId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}

impl fmt::Debug for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonId({})", self.uuid)
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}

/// Stored (a durable event record) as the original spelling, parsed again when read.
impl serde::Serialize for PersonId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.original)
    }
}

impl<'de> serde::Deserialize<'de> for PersonId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let original = String::deserialize(deserializer)?;
        Self::parse(&original).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for PersonId {
    type Err = PersonIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const OTHER: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn b64_url(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn spellings_of(uuid: &str) -> Vec<String> {
        let us = format!("ciscospark://us/PEOPLE/{uuid}");
        let team = format!("ciscospark://urn:TEAM:us-west-2_r/PEOPLE/{uuid}");
        let upper = format!("ciscospark://us/PEOPLE/{}", uuid.to_uppercase());
        vec![
            uuid.to_owned(),
            uuid.to_uppercase(),
            format!("  {uuid}  "),
            b64(&us),
            b64(&us).trim_end_matches('=').to_owned(),
            b64_url(&us),
            b64(&team),
            b64(&team).trim_end_matches('=').to_owned(),
            b64_url(&team),
            b64(&upper),
            b64(&format!(
                "ciscospark://urn:TEAM:eu-central-1_k/PEOPLE/{uuid}"
            )),
            b64(&format!("ciscospark://us/people/{uuid}")),
        ]
    }

    #[test]
    fn every_spelling_of_one_person_is_equal_and_hashes_alike() {
        use std::collections::HashSet;
        let spellings = spellings_of(UUID);
        assert!(spellings.len() >= 12);
        let parsed: Vec<PersonId> = spellings
            .iter()
            .map(|s| PersonId::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}")))
            .collect();
        for (a, b) in parsed.iter().zip(parsed.iter().skip(1)) {
            assert_eq!(a, b);
        }
        let set: HashSet<&PersonId> = parsed.iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(parsed[0].uuid().to_string(), UUID);
    }

    #[test]
    fn different_people_are_unequal_in_every_spelling() {
        for a in spellings_of(UUID) {
            for b in spellings_of(OTHER) {
                assert_ne!(PersonId::parse(&a).unwrap(), PersonId::parse(&b).unwrap());
            }
        }
    }

    #[test]
    fn original_spelling_is_kept_for_display() {
        let id = b64(&format!("ciscospark://us/PEOPLE/{UUID}"));
        assert_eq!(PersonId::parse(&id).unwrap().original(), id);
    }

    #[test]
    fn canonical_webex_id_round_trips() {
        let id = PersonId::parse(UUID).unwrap();
        assert_eq!(PersonId::parse(&id.to_webex_id()).unwrap(), id);
    }

    #[test]
    fn ids_of_other_types_and_garbage_are_refused_with_a_reason() {
        let cases = [
            ("", PersonIdError::Empty),
            ("   ", PersonIdError::Empty),
            ("not base64 at all!", PersonIdError::NotBase64),
            (
                &b64("https://example.com/PEOPLE/x"),
                PersonIdError::Malformed,
            ),
            (
                &b64(&format!("ciscospark://us/{UUID}")),
                PersonIdError::Malformed,
            ),
            (
                &b64(&format!("ciscospark://us/ROOM/{UUID}")),
                PersonIdError::WrongType("ROOM".into()),
            ),
            (
                &b64(&format!("ciscospark://us/MESSAGE/{UUID}")),
                PersonIdError::WrongType("MESSAGE".into()),
            ),
            (
                &b64("ciscospark://us/PEOPLE/not-a-uuid"),
                PersonIdError::BadUuid,
            ),
            (&"a".repeat(513), PersonIdError::TooLong(513)),
        ];
        for (input, expected) in cases {
            assert_eq!(PersonId::parse(input).unwrap_err(), expected, "{input:?}");
        }
    }
}
