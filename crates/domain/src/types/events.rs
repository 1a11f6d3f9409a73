//! What the Webex webhook tells us, in domain terms: a call to ring, a call that
//! ended, a message to announce; and the job of relaying one of them before it is
//! worthless.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::{AppFlavour, Channel, PersonId, PushContent, PushProvider, RawJson};

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

impl serde::Serialize for CallId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CallId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        Self::parse(&id).ok_or_else(|| serde::de::Error::custom("empty or overlong call id"))
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
    /// Every source, for whoever must recognise their names.
    pub const ALL: [EventSource; 4] = [
        EventSource::CallMemberships,
        EventSource::TelephonyCalls,
        EventSource::TelephonyPush,
        EventSource::Messages,
    ];

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
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Which field of a `telephony_push` named the callee. Webex does not say which one
/// does (see `docs/webex-webhooks.md`), so the choice is logged and kept with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CalleeField {
    #[serde(rename = "data.personId")]
    DataPersonId,
    #[serde(rename = "createdBy")]
    CreatedBy,
    #[serde(rename = "actorId")]
    ActorId,
}

impl CalleeField {
    pub fn as_str(self) -> &'static str {
        match self {
            CalleeField::DataPersonId => "data.personId",
            CalleeField::CreatedBy => "createdBy",
            CalleeField::ActorId => "actorId",
        }
    }
}

/// A call that should ring the callee's phones.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IncomingCall {
    pub call_id: CallId,
    pub callee: PersonId,
    pub caller: Caller,
    pub occurred_at: DateTime<Utc>,
    pub source: EventSource,
    /// What the app may hand to the Webex SDK, as Webex sent it: for `telephony_push`,
    /// the event's `data.apnsPayload` (always a JSON object); otherwise the event's
    /// `data`.
    pub sdk_payload: Option<RawJson>,
    /// For `telephony_push`: the event's `data.fcmPayload` as Webex sent it (any JSON
    /// value), for the Android SDK; `None` for other sources or when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm_payload: Option<RawJson>,
    /// The whole webhook as posted, for apps that read it (KitchenSink's
    /// `webhookData`); `None` where no app reads it (`telephony_push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RawJson>,
    /// For `telephony_push`: the field the callee was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_field: Option<CalleeField>,
    /// The only flavour of app this ring is for, once [`Event::split`] made one job per
    /// flavour; `None`: every app that takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<AppFlavour>,
}

/// A call that ended, or was answered elsewhere: the callee's phones stop ringing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallEnded {
    pub call_id: CallId,
    pub person: PersonId,
    pub occurred_at: DateTime<Utc>,
    pub source: EventSource,
    pub answered_elsewhere: bool,
}

/// A new message for `recipient`. Webex never sends the text in the event.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewMessage {
    pub message_id: String,
    pub room_id: String,
    /// `direct` or `group`, as Webex says.
    pub room_type: Option<String>,
    pub recipient: PersonId,
    pub sender: Option<PersonId>,
    pub sender_email: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The whole webhook as posted, for apps that read it (KitchenSink's `webhookData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RawJson>,
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

/// What one webhook asks us to relay: the one event type from the webhook reader to
/// the push workers and the durable record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "event", rename_all = "snake_case")]
pub enum Event {
    Ring(IncomingCall),
    CallEnded(CallEnded),
    Message(NewMessage),
}

/// The kinds of [`Event`], one vocabulary for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Ring,
    CallEnded,
    Message,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ring => "ring",
            EventKind::CallEnded => "call_ended",
            EventKind::Message => "message",
        }
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Ring(_) => EventKind::Ring,
            Event::CallEnded(_) => EventKind::CallEnded,
            Event::Message(_) => EventKind::Message,
        }
    }

    /// The person whose devices the event is for.
    pub fn person(&self) -> &PersonId {
        match self {
            Event::Ring(call) => &call.callee,
            Event::CallEnded(ended) => &ended.person,
            Event::Message(message) => &message.recipient,
        }
    }

    /// The channel its push travels on to an app of `flavour` on `provider`, `None`
    /// when such an app gets none (see [`channel_for`]).
    pub fn channel_for(&self, flavour: AppFlavour, provider: PushProvider) -> Option<Channel> {
        match self {
            Event::Ring(call) if call.audience.is_some_and(|only| only != flavour) => None,
            _ => channel_for(self.kind(), self.source(), flavour, provider),
        }
    }

    /// The jobs this event makes, each claimed (so de-duplicated) on its own. A
    /// `telephony_push` ring makes two: the seed apps' part, under the key every ring
    /// of the call shares, so a seed app rung for the call through `telephony_calls`
    /// is not rung again; and KitchenSink's, under a key of its own, since KitchenSink
    /// rings only from `telephony_push` and must not lose its ring to a `telephony_calls`
    /// event of the same call. Every other event makes one.
    pub fn split(self) -> Vec<Event> {
        match self {
            Event::Ring(call)
                if call.source == EventSource::TelephonyPush && call.audience.is_none() =>
            {
                let seed = IncomingCall {
                    audience: Some(AppFlavour::Seed),
                    ..call.clone()
                };
                let kitchensink = IncomingCall {
                    audience: Some(AppFlavour::KitchenSink),
                    ..call
                };
                vec![Event::Ring(seed), Event::Ring(kitchensink)]
            }
            event => vec![event],
        }
    }

    /// The call it is about (rings and call-ended notices), for logs.
    pub fn call_id(&self) -> Option<&CallId> {
        match self {
            Event::Ring(call) => Some(&call.call_id),
            Event::CallEnded(ended) => Some(&ended.call_id),
            Event::Message(_) => None,
        }
    }

    /// The Webex resource it came from (messages have one).
    pub fn source(&self) -> EventSource {
        match self {
            Event::Ring(call) => call.source,
            Event::CallEnded(ended) => ended.source,
            Event::Message(_) => EventSource::Messages,
        }
    }

    /// The key that tells a re-delivery of this event (by Webex, or to another replica)
    /// from a new one: kind, person and Webex id. A message without an id has none: it
    /// cannot be told apart from others, and is better announced twice than never.
    pub fn key(&self) -> Option<EventKey> {
        match self {
            Event::Ring(call) => {
                let kind = match call.audience {
                    Some(AppFlavour::KitchenSink) => "ring-kitchensink",
                    Some(AppFlavour::Seed) | None => "ring",
                };
                Some(EventKey::new(kind, &call.callee, call.call_id.as_str()))
            }
            Event::CallEnded(ended) => Some(EventKey::new(
                "ended",
                &ended.person,
                ended.call_id.as_str(),
            )),
            Event::Message(message) => (!message.message_id.trim().is_empty())
                .then(|| EventKey::new("message", &message.recipient, &message.message_id)),
        }
    }

    /// How long after the webhook arrived the event is still worth relaying.
    pub fn deadline(&self, deadlines: &Deadlines) -> Duration {
        match self {
            Event::Ring(_) => deadlines.ring,
            Event::CallEnded(_) => deadlines.call_ended,
            Event::Message(_) => deadlines.message,
        }
    }

    /// What its pushes say.
    pub fn content(self) -> PushContent {
        match self {
            Event::Ring(call) => PushContent::IncomingCall(call.into()),
            Event::CallEnded(ended) => PushContent::CallEnded(ended.into()),
            Event::Message(message) => PushContent::Message(message.into()),
        }
    }
}

/// The one rule for which token of which app an event goes to. A VoIP push must
/// report a call to CallKit at once, so only a ring ever goes to a VoIP token, and to
/// KitchenSink only a `telephony_push` one: its PushKit handler understands nothing
/// else. KitchenSink gets a `callMemberships` ring as an alert (it reads the call from
/// `webhookData`), and no `telephony_calls` ring at all: it rings Webex Calling calls
/// from their `telephony_push`, and an alert on top would be a second notice of one
/// call.
///
/// An Android app (KitchenSink on FCM) takes what KitchenSink on iOS takes, on the one
/// token it registers, its [`Channel::Alert`] one: FCM has no VoIP pushes, every push
/// is a data message and a ring travels at high priority instead.
pub fn channel_for(
    kind: EventKind,
    source: EventSource,
    flavour: AppFlavour,
    provider: PushProvider,
) -> Option<Channel> {
    let channel = match (kind, flavour) {
        (EventKind::Ring, AppFlavour::Seed) => Some(Channel::Voip),
        (EventKind::Ring, AppFlavour::KitchenSink) => match source {
            EventSource::TelephonyPush => Some(Channel::Voip),
            EventSource::CallMemberships => Some(Channel::Alert),
            EventSource::TelephonyCalls | EventSource::Messages => None,
        },
        (EventKind::CallEnded | EventKind::Message, _) => Some(Channel::Alert),
    };
    match provider {
        PushProvider::Apns => channel,
        PushProvider::Fcm => channel.map(|_| Channel::Alert),
    }
}

/// How long each kind of push may keep retrying before it is worthless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A ring is worthless after the caller gives up (~30 s).
    pub ring: Duration,
    pub call_ended: Duration,
    pub message: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            ring: Duration::from_secs(30),
            call_ended: Duration::from_secs(60),
            message: Duration::from_secs(300),
        }
    }
}

/// The key an event is de-duplicated under, at most [`EventKey::MAX_LEN`] bytes: a
/// Webex id that would make it longer is replaced by its SHA-256, so any id fits a
/// database index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey(String);

impl EventKey {
    pub const MAX_LEN: usize = 256;

    /// The key of the event of `kind` with Webex id `id` for `person`.
    pub fn new(kind: &str, person: &PersonId, id: &str) -> Self {
        let key = format!("{kind}:{}:{id}", person.uuid());
        if key.len() <= Self::MAX_LEN {
            return Self(key);
        }
        let digest: String = Sha256::digest(id.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self(format!("{kind}:{}:sha256:{digest}", person.uuid()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One accepted webhook's job, shared by all its retries (and by the replica that
/// takes it over): a retry whose earlier try may have been recorded recognises that
/// record as its own, while another delivery of the same event is a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A replica of the server: the holder of the events it accepted until they are
/// delivered. A new one for every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaId(Uuid);

impl ReplicaId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl Default for ReplicaId {
    fn default() -> Self {
        Self::new()
    }
}

/// An event to relay, with its identity and the moment it becomes worthless.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub event: Event,
    /// When pushing it stops being worth anything: the webhook's arrival plus the
    /// event's deadline, computed once ([`Job::received`]) and stored with the claim,
    /// so every retry and every replica honours the same moment.
    pub deliver_by: DateTime<Utc>,
}

impl Job {
    /// The job of an event whose webhook arrived at `received`.
    pub fn received(event: Event, received: DateTime<Utc>, deadlines: &Deadlines) -> Self {
        let deadline = TimeDelta::from_std(event.deadline(deadlines)).unwrap_or(TimeDelta::MAX);
        Self {
            id: JobId::new(),
            deliver_by: received.checked_add_signed(deadline).unwrap_or(received),
            event,
        }
    }

    /// How long is left at `now` (zero once the deadline has passed).
    pub fn time_left(&self, now: DateTime<Utc>) -> Duration {
        (self.deliver_by - now).to_std().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> PersonId {
        PersonId::from_uuid(Uuid::new_v4())
    }

    fn message(id: &str) -> Event {
        Event::Message(NewMessage {
            message_id: id.into(),
            room_id: "room".into(),
            room_type: None,
            recipient: person(),
            sender: None,
            sender_email: None,
            occurred_at: Utc::now(),
            webhook: None,
        })
    }

    #[test]
    fn a_key_over_the_bound_is_a_digest_and_still_tells_ids_apart() {
        let long = message(&"m".repeat(5_000));
        let key = long.key().unwrap();
        assert!(key.as_str().len() <= EventKey::MAX_LEN, "{key}");
        assert!(key.as_str().starts_with("message:"));
        assert!(key.as_str().contains(":sha256:"));
        let Event::Message(mut other) = long.clone() else {
            unreachable!()
        };
        other.message_id.push('n');
        assert_ne!(Event::Message(other).key(), Some(key.clone()));
        assert_eq!(long.key(), Some(key));
        assert!(!message("short").key().unwrap().as_str().contains("sha256"));
    }

    #[test]
    fn an_event_survives_its_stored_form() {
        let call = Event::Ring(IncomingCall {
            call_id: CallId::parse("call-1").unwrap(),
            callee: PersonId::parse(
                "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9mNWIzNjE4Ny1jOGRkLTQ3MjctOGIyZi1mOWM0NDdmMjkwNDY",
            )
            .unwrap(),
            caller: Caller {
                name: Some("Ada".into()),
                ..Caller::default()
            },
            occurred_at: Utc::now(),
            source: EventSource::TelephonyPush,
            sdk_payload: Some(RawJson::parse("{\"aps\": {}, \"data\": [1, \"two\"]}").unwrap()),
            fcm_payload: None,
            webhook: Some(RawJson::parse("{\"resource\":\"telephony_push\"}").unwrap()),
            callee_field: Some(CalleeField::ActorId),
            audience: Some(AppFlavour::KitchenSink),
        });
        let stored = serde_json::to_string(&call).unwrap();
        let read: Event = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, call);
        let Event::Ring(read) = read else {
            unreachable!()
        };
        assert!(read.callee.original().starts_with("Y2lz"));
    }

    #[test]
    fn the_stored_names_of_kinds_and_sources_are_the_ones_logs_and_metrics_show() {
        let stored = serde_json::to_value(message("m")).unwrap();
        assert_eq!(stored["kind"], EventKind::Message.as_str());
        for source in EventSource::ALL {
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
        }
    }

    #[test]
    fn only_rings_reach_voip_tokens_and_kitchensink_only_from_telephony_push() {
        use EventSource::*;
        let sources = [CallMemberships, TelephonyCalls, TelephonyPush, Messages];
        for flavour in AppFlavour::ALL {
            for source in sources {
                for kind in [EventKind::CallEnded, EventKind::Message] {
                    assert_eq!(
                        channel_for(kind, source, flavour, PushProvider::Apns),
                        Some(Channel::Alert)
                    );
                }
            }
        }
        for source in sources {
            assert_eq!(
                channel_for(
                    EventKind::Ring,
                    source,
                    AppFlavour::Seed,
                    PushProvider::Apns
                ),
                Some(Channel::Voip)
            );
        }
        let kitchensink = |source| {
            channel_for(
                EventKind::Ring,
                source,
                AppFlavour::KitchenSink,
                PushProvider::Apns,
            )
        };
        assert_eq!(kitchensink(TelephonyPush), Some(Channel::Voip));
        assert_eq!(kitchensink(CallMemberships), Some(Channel::Alert));
        assert_eq!(kitchensink(TelephonyCalls), None);
    }

    #[test]
    fn android_takes_what_kitchensink_takes_all_on_its_one_token() {
        use EventSource::*;
        let android =
            |kind, source| channel_for(kind, source, AppFlavour::KitchenSink, PushProvider::Fcm);
        assert_eq!(
            android(EventKind::Ring, TelephonyPush),
            Some(Channel::Alert)
        );
        assert_eq!(
            android(EventKind::Ring, CallMemberships),
            Some(Channel::Alert)
        );
        assert_eq!(android(EventKind::Ring, TelephonyCalls), None);
        for source in [CallMemberships, TelephonyCalls, TelephonyPush, Messages] {
            assert_eq!(android(EventKind::Message, source), Some(Channel::Alert));
            assert_eq!(android(EventKind::CallEnded, source), Some(Channel::Alert));
        }
    }

    #[test]
    fn a_telephony_push_is_one_job_per_flavour_and_only_kitchensinks_has_a_key_of_its_own() {
        let callee = person();
        let ring = |source| {
            Event::Ring(IncomingCall {
                call_id: CallId::parse("call-1").unwrap(),
                callee: callee.clone(),
                caller: Caller::default(),
                occurred_at: Utc::now(),
                source,
                sdk_payload: None,
                fcm_payload: None,
                webhook: None,
                callee_field: None,
                audience: None,
            })
        };
        let [seed, kitchensink] = <[Event; 2]>::try_from(ring(EventSource::TelephonyPush).split())
            .unwrap_or_else(|_| panic!("two jobs"));
        // The seed part shares the key of the call's telephony_calls ring...
        assert_eq!(seed.key(), ring(EventSource::TelephonyCalls).key());
        // ...KitchenSink's does not: it rings from telephony_push only.
        assert_ne!(kitchensink.key(), seed.key());
        assert_eq!(
            seed.channel_for(AppFlavour::Seed, PushProvider::Apns),
            Some(Channel::Voip)
        );
        assert_eq!(
            seed.channel_for(AppFlavour::KitchenSink, PushProvider::Apns),
            None
        );
        assert_eq!(
            kitchensink.channel_for(AppFlavour::Seed, PushProvider::Apns),
            None
        );
        assert_eq!(
            kitchensink.channel_for(AppFlavour::KitchenSink, PushProvider::Apns),
            Some(Channel::Voip)
        );
        assert_eq!(ring(EventSource::CallMemberships).split().len(), 1);
        assert_eq!(message("m").split().len(), 1);
    }

    #[test]
    fn the_deadline_counts_from_arrival() {
        let at = Utc::now();
        let job = Job::received(message("m"), at, &Deadlines::default());
        assert_eq!(job.deliver_by, at + TimeDelta::seconds(300));
        assert_eq!(
            job.time_left(at + TimeDelta::seconds(299)),
            Duration::from_secs(1)
        );
        assert_eq!(job.time_left(at + TimeDelta::seconds(301)), Duration::ZERO);
    }
}
