//! Each event's payload, built once: every device of the person and every retry of a
//! push reuse the bytes the first push built, so the cost of an event (serialising,
//! fitting it into Apple's limits) does not grow with its fan-out.
//!
//! Entries are keyed by the address of the event's shared content (`Arc`) and hold a
//! `Weak` to it: while the entry lives, the allocation cannot be reused, so an address
//! always names the same event; once the event is done its entry is pruned.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::SystemTime;

use webex_push_domain::{AppFlavour, PushContent};

use super::payload::{Prepared, Unsendable, prepare};

/// Events in flight at once, with room to spare (a replica runs a few hundred workers).
/// Past it, after pruning finished events, a payload is built without being kept.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct PreparedCache {
    /// By the content's address and the flavour of app it is shaped for.
    entries: Mutex<HashMap<(usize, AppFlavour), Entry>>,
}

struct Entry {
    /// Keeps the content's allocation, hence its address, from being reused.
    content: Held,
    prepared: Result<Prepared, Unsendable>,
}

enum Held {
    Call(Weak<webex_push_domain::IncomingCall>),
    Ended(Weak<webex_push_domain::CallEnded>),
    Message(Weak<webex_push_domain::NewMessage>),
}

impl Held {
    fn of(content: &PushContent) -> (usize, Self) {
        match content {
            PushContent::IncomingCall(call) => (
                std::sync::Arc::as_ptr(call) as usize,
                Held::Call(std::sync::Arc::downgrade(call)),
            ),
            PushContent::CallEnded(ended) => (
                std::sync::Arc::as_ptr(ended) as usize,
                Held::Ended(std::sync::Arc::downgrade(ended)),
            ),
            PushContent::Message(message) => (
                std::sync::Arc::as_ptr(message) as usize,
                Held::Message(std::sync::Arc::downgrade(message)),
            ),
        }
    }

    /// Whether the event is still being pushed.
    fn alive(&self) -> bool {
        match self {
            Held::Call(weak) => weak.strong_count() > 0,
            Held::Ended(weak) => weak.strong_count() > 0,
            Held::Message(weak) => weak.strong_count() > 0,
        }
    }

    /// Whether this is `content` itself (not merely something at the same address).
    fn is(&self, content: &PushContent) -> bool {
        match (self, content) {
            (Held::Call(weak), PushContent::IncomingCall(arc)) => {
                std::ptr::eq(weak.as_ptr(), std::sync::Arc::as_ptr(arc))
            }
            (Held::Ended(weak), PushContent::CallEnded(arc)) => {
                std::ptr::eq(weak.as_ptr(), std::sync::Arc::as_ptr(arc))
            }
            (Held::Message(weak), PushContent::Message(arc)) => {
                std::ptr::eq(weak.as_ptr(), std::sync::Arc::as_ptr(arc))
            }
            _ => false,
        }
    }
}

impl PreparedCache {
    /// The payload of `content` for an app of `flavour`: the one built for its event
    /// already, else built now (expiration counted from `now`, the event's first push).
    pub(crate) fn get(
        &self,
        content: &PushContent,
        flavour: AppFlavour,
        now: SystemTime,
    ) -> Result<Prepared, Unsendable> {
        let (address, held) = Held::of(content);
        let key = (address, flavour);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get(&key).filter(|e| e.content.is(content)) {
            return entry.prepared.clone();
        }
        // Built under the lock: concurrent pushes of one event wait for it rather than
        // build it again; building takes microseconds.
        let prepared = prepare(content, flavour, now);
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| entry.content.alive());
        }
        if entries.len() < CAPACITY {
            entries.insert(
                key,
                Entry {
                    content: held,
                    prepared: prepared.clone(),
                },
            );
        }
        prepared
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use webex_push_domain::{CallId, Caller, EventSource, IncomingCall, NewMessage, PersonId};

    use super::*;

    fn person() -> PersonId {
        PersonId::parse("6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d").unwrap()
    }

    fn call(id: &str) -> PushContent {
        PushContent::IncomingCall(Arc::new(IncomingCall {
            call_id: CallId::parse(id).unwrap(),
            callee: person(),
            caller: Caller {
                name: Some("Ada".into()),
                number: None,
                email: None,
                person: None,
            },
            occurred_at: Utc::now(),
            source: EventSource::CallMemberships,
            sdk_payload: None,
            fcm_payload: None,
            webhook: None,
            callee_field: None,
            audience: None,
        }))
    }

    #[test]
    fn every_push_of_one_event_shares_one_body_and_another_event_gets_its_own() {
        let cache = PreparedCache::default();
        let now = SystemTime::now();
        let ring = call("call-1");
        let first = cache.get(&ring, AppFlavour::Seed, now).unwrap();
        // Later pushes (other devices, retries) reuse the very bytes.
        let again = cache
            .get(
                &ring.clone(),
                AppFlavour::Seed,
                now + Duration::from_secs(3),
            )
            .unwrap();
        assert_eq!(first.body.as_ptr(), again.body.as_ptr());
        assert_eq!(first.expiration, again.expiration);
        let other = cache.get(&call("call-2"), AppFlavour::Seed, now).unwrap();
        assert_ne!(first.body.as_ptr(), other.body.as_ptr());
        assert_ne!(first.body, other.body);
    }

    #[test]
    fn finished_events_are_pruned_and_memory_stays_bounded() {
        let cache = PreparedCache::default();
        let now = SystemTime::now();
        for n in 0..(CAPACITY * 3) {
            cache
                .get(&call(&format!("call-{n}")), AppFlavour::Seed, now)
                .unwrap();
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
        // With every slot held by a live event, a newcomer is still built correctly.
        let live: Vec<PushContent> = (0..CAPACITY).map(|n| call(&format!("live-{n}"))).collect();
        for ring in &live {
            cache.get(ring, AppFlavour::Seed, now).unwrap();
        }
        let prepared = cache.get(&call("newcomer"), AppFlavour::Seed, now).unwrap();
        assert!(String::from_utf8_lossy(&prepared.body).contains("newcomer"));
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }

    #[test]
    fn each_flavour_of_app_gets_its_own_shape_of_one_event() {
        let cache = PreparedCache::default();
        let now = SystemTime::now();
        let ring = call("call-1");
        let seed = cache.get(&ring, AppFlavour::Seed, now).unwrap();
        let kitchensink = cache.get(&ring, AppFlavour::KitchenSink, now).unwrap();
        assert_eq!((seed.push_type, kitchensink.push_type), ("voip", "alert"));
        let again = cache.get(&ring, AppFlavour::KitchenSink, now).unwrap();
        assert_eq!(kitchensink.body.as_ptr(), again.body.as_ptr());
    }

    #[test]
    fn contents_of_other_kinds_are_told_apart() {
        let cache = PreparedCache::default();
        let now = SystemTime::now();
        let message = PushContent::Message(Arc::new(NewMessage {
            message_id: "m1".into(),
            room_id: "r1".into(),
            room_type: Some("direct".into()),
            recipient: person(),
            sender: None,
            sender_email: None,
            occurred_at: Utc::now(),
            webhook: None,
        }));
        let ring = call("call-1");
        let message_body = cache.get(&message, AppFlavour::Seed, now).unwrap();
        assert_eq!(message_body.push_type, "alert");
        assert_eq!(
            cache.get(&ring, AppFlavour::Seed, now).unwrap().push_type,
            "voip"
        );
    }
}
