//! What the Webex webhook tells us, in domain terms: a call to ring, a call that
//! ended, a message to announce.

use std::fmt;

use chrono::{DateTime, Utc};

use super::PersonId;

/// A Webex call id (or call session id), opaque to us; at most 256 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallId(String);

impl CallId {
    pub const MAX_LEN: usize = 256;

    /// `None` for an empty or overlong id: such an event cannot be de-duplicated.
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.trim();
        (!input.is_empty() && input.len() <= Self::MAX_LEN).then(|| Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which Webex resource an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EventSource {
    #[serde(rename = "callMemberships")]
    CallMemberships,
    #[serde(rename = "telephony_calls")]
    TelephonyCalls,
    #[serde(rename = "telephony_push")]
    TelephonyPush,
    #[serde(rename = "messages")]
    Messages,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::CallMemberships => "callMemberships",
            EventSource::TelephonyCalls => "telephony_calls",
            EventSource::TelephonyPush => "telephony_push",
            EventSource::Messages => "messages",
        }
    }
}

/// Who is calling, as far as the event tells. Every field may be missing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub name: Option<String>,
    pub number: Option<String>,
    pub email: Option<String>,
    pub person: Option<PersonId>,
}

impl Caller {
    /// What CallKit shows: the name, else the number, else the e-mail.
    pub fn display_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or(self.number.as_deref())
            .or(self.email.as_deref())
    }
}

impl fmt::Debug for Caller {
    // Caller details are personal data: logs see only which of them are known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name.is_some())
            .field("number", &self.number.is_some())
            .field("email", &self.email.is_some())
            .field("person", &self.person)
            .finish()
    }
}

/// A call that should ring the callee's phones.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCall {
    pub call_id: CallId,
    pub callee: PersonId,
    pub caller: Caller,
    pub occurred_at: DateTime<Utc>,
    pub source: EventSource,
    /// What the app may hand to the Webex SDK: for `telephony_push`, the event's
    /// `data.apnsPayload`; otherwise the event's `data`.
    pub sdk_payload: Option<serde_json::Value>,
}

/// A call that ended, or was answered elsewhere: the callee's phones stop ringing.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnded {
    pub call_id: CallId,
    pub person: PersonId,
    pub occurred_at: DateTime<Utc>,
    pub source: EventSource,
    pub answered_elsewhere: bool,
}

/// A new message for `recipient`. Webex never sends the text in the event.
#[derive(Clone, PartialEq)]
pub struct NewMessage {
    pub message_id: String,
    pub room_id: String,
    /// `direct` or `group`, as Webex says.
    pub room_type: Option<String>,
    pub recipient: PersonId,
    pub sender: Option<PersonId>,
    pub sender_email: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

impl fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMessage")
            .field("message_id", &self.message_id)
            .field("room_id", &self.room_id)
            .field("room_type", &self.room_type)
            .field("recipient", &self.recipient)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}
