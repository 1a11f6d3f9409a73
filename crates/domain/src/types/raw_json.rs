//! JSON kept as Webex sent it: the SDK's payload and the webhook itself travel to the
//! phone byte for byte, never re-serialised (which could reorder keys, respell numbers
//! or escapes, and fold duplicate keys).

use std::fmt;
use std::sync::Arc;

use serde::de::IgnoredAny;

/// A JSON text, checked once and shared (one event fans out to many devices).
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Arc<str>);

impl RawJson {
    /// `text` if it is one JSON value (surrounding whitespace allowed and kept).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<IgnoredAny>(text)?;
        Ok(Self(Arc::from(text)))
    }

    /// The text of `value`, for JSON that has no original spelling of its own.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(Arc::from(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the text is a JSON object (`{...}`).
    pub fn is_object(&self) -> bool {
        self.0.trim_start().starts_with('{')
    }

    /// The value, parsed (for reading a field; never to send it on).
    pub fn value(&self) -> serde_json::Value {
        // Checked when made: parsing again cannot fail.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// Identity of the shared text: every clone of one `RawJson` has the same address.
    pub fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
}

impl fmt::Debug for RawJson {
    // Webhooks carry names, numbers and e-mails: logs see only the size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({} bytes)", self.0.len())
    }
}

/// Stored (in the durable event record) as a JSON string holding the text, so it reads
/// back unchanged.
impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Reads the stored string; a record written before payloads were kept verbatim holds
/// the JSON value itself, which is taken as its compact text.
impl<'de> serde::Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => match Self::parse(&text) {
                Ok(raw) => Ok(raw),
                Err(_) => Ok(Self::from_value(&serde_json::Value::String(text))),
            },
            other => Ok(Self::from_value(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_survives_its_stored_form_byte_for_byte() {
        let text = "{ \"b\": 1.50, \"a\": \"\\u00e9\", \"b\": 2 }";
        let raw = RawJson::parse(text).unwrap();
        let stored = serde_json::to_string(&raw).unwrap();
        let read: RawJson = serde_json::from_str(&stored).unwrap();
        assert_eq!(read.as_str(), text);
        assert!(read.is_object());
    }

    #[test]
    fn a_record_from_before_holds_the_value_itself() {
        let read: RawJson = serde_json::from_str("{\"aps\":{},\"n\":1}").unwrap();
        assert_eq!(read.as_str(), "{\"aps\":{},\"n\":1}");
        assert!(RawJson::parse("{\"unclosed\": ").is_err());
        assert!(!format!("{read:?}").contains("aps"));
    }
}
