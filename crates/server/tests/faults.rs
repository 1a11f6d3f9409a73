//! Faults under load: the real `webex-push` binary, a fresh Postgres database and the
//! APNs stand-in, with a steady stream of signed webhooks (one distinct call each, for
//! registered persons) while the database goes away, Apple throttles or fails, Apple's
//! connection drops or says GOAWAY, or the server is told to stop.
//!
//! What every test proves at the end: each webhook answered `204` rang its person's
//! phone exactly once, and each webhook refused (`503`) rang nothing.
// Test helpers outside #[test] functions: a failed set-up should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webex_push_adapters::webex::sign;

mod common;

use common::*;

const ADMIN: &str = "faults-admin-token-0123456789";
/// Webhooks per second while a fault happens.
const RATE: u64 = 50;

/// A registered person: bare UUID and the two tokens of their phone.
#[derive(Clone)]
struct Person {
    uuid: String,
    voip: String,
    alert: String,
}

impl Person {
    fn new(n: usize) -> Self {
        let tag = rand::random::<u32>();
        Self {
            uuid: format!("{tag:08x}-{n:04x}-4000-8000-{:012x}", n + 1),
            voip: format!("{:016x}", rand::random::<u64>()).repeat(4),
            alert: format!("{:016x}", rand::random::<u64>()).repeat(4),
        }
    }
}

/// A `callMemberships/created` webhook ringing `person` for `call_id`, from the
/// person's own webhook.
fn ring(call_id: &str, person: &str) -> Value {
    envelope(
        "callMemberships",
        "created",
        person,
        CALLER,
        json!({
            "id": format!("membership-{call_id}"),
            "callId": call_id,
            "personId": webex_id(person),
            "personEmail": "callee@example.com",
            "state": "notified",
            "isInitiator": false,
            "created": "2025-06-01T12:34:56.000Z",
        }),
    )
}

/// One webhook of the load and what the server answered (`None`: no answer at all,
/// e.g. the server had stopped listening).
#[derive(Debug, Clone)]
struct Sent {
    call_id: String,
    voip: String,
    status: Option<u16>,
}

/// A stream of signed ring webhooks at [`RATE`] per second, each its own request,
/// until stopped.
struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sent>>,
}

impl Load {
    fn start(h: &Harness, persons: &[Person], prefix: &str) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let http = h.http.clone();
        let url = h.url("/webhook");
        let persons = persons.to_vec();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut pacing = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            pacing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut requests = Vec::new();
            for n in 0usize.. {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = pacing.tick() => {}
                }
                let person = &persons[n % persons.len()];
                let call_id = format!("{prefix}-{n}");
                let body = ring(&call_id, &person.uuid).to_string();
                let signature = sign(SECRET, body.as_bytes());
                let request = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Spark-Signature", signature)
                    .body(body)
                    .send();
                let voip = person.voip.clone();
                requests.push(tokio::spawn(async move {
                    let status = request.await.ok().map(|r| r.status().as_u16());
                    Sent {
                        call_id,
                        voip,
                        status,
                    }
                }));
            }
            let mut sent = Vec::new();
            for request in requests {
                sent.push(request.await.unwrap());
            }
            sent
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Sent> {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

/// A harness with `n` persons registered and the admin API on.
async fn start(workers: usize, n: usize, extra: &[(&str, String)]) -> (Harness, Vec<Person>) {
    let mut envs = vec![("ADMIN_TOKEN", ADMIN.to_owned())];
    envs.extend_from_slice(extra);
    let h = Harness::start_with(workers, &envs).await;
    let persons: Vec<Person> = (0..n).map(Person::new).collect();
    for person in &persons {
        h.register_ok(&person.uuid, &person.voip, &person.alert)
            .await;
    }
    (h, persons)
}

/// Waits until `condition` holds, polling every 20 ms, or fails after [`WAIT`].
async fn eventually(h: &Harness, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}; log:\n{}",
            h.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the workers have finished every accepted event (relayed or not).
async fn settled(h: &Harness, accepted: usize) {
    eventually(h, "relaying every accepted event", async || {
        h.server
            .count_logs(|l| message_is(l, "event relayed") || message_is(l, "event not relayed"))
            >= accepted
    })
    .await;
}

/// Checks the promise: each `204` rang its phone exactly once (no loss, no duplicate),
/// each `503` rang nothing, and nothing rang that was not sent. Returns the number of
/// webhooks answered `204`.
fn assert_each_acknowledged_call_rang_once(h: &Harness, sent: &[Sent]) -> usize {
    let mut rings: HashMap<(String, String), usize> = HashMap::new();
    for push in h.standin.accepted() {
        let call_id = push.payload["webex"]["callId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *rings.entry((call_id, push.token.clone())).or_default() += 1;
    }
    let mut acknowledged = 0;
    for webhook in sent {
        let times = rings
            .remove(&(webhook.call_id.clone(), webhook.voip.clone()))
            .unwrap_or(0);
        match webhook.status {
            Some(204) => {
                acknowledged += 1;
                assert_eq!(
                    times,
                    1,
                    "call {} was acknowledged and rang {times} times; log:\n{}",
                    webhook.call_id,
                    h.server.log_text()
                );
            }
            Some(503) => assert_eq!(times, 0, "refused call {} rang", webhook.call_id),
            Some(other) => panic!("call {} was answered {other}", webhook.call_id),
            // No answer: the server may or may not have taken it, but never twice.
            None => assert!(times <= 1, "unanswered call {} rang twice", webhook.call_id),
        }
    }
    assert!(rings.is_empty(), "pushes nobody asked for: {rings:?}");
    acknowledged
}

fn acknowledged(sent: &[Sent]) -> usize {
    sent.iter().filter(|s| s.status == Some(204)).count()
}

/// The device tokens the admin listing shows for `person` (redacted: 8 digits + `…`).
async fn listed_tokens(h: &Harness, person: &str) -> Vec<String> {
    let devices: Value = h
        .http
        .get(h.url(&format!("/admin/persons/{person}/devices")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tokens: Vec<String> = devices["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no device list: {devices}"))
        .iter()
        .map(|d| d["token"].as_str().unwrap().to_owned())
        .collect();
    tokens.sort();
    tokens
}

fn redacted(token: &str) -> String {
    format!("{}…", &token[..8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_gives_503_to_registration_and_loses_no_acknowledged_ring() {
    let (h, persons) = start(4, 10, &[]).await;
    let load = Load::start(&h, &persons, "db-outage");
    // Some calls ring normally before the outage.
    eventually(&h, "rings before the outage", async || {
        h.standin.accepted().len() >= 10
    })
    .await;

    h.db.take_offline();
    let outage = tokio::time::Instant::now();
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(2) {
        let newcomer = Person::new(99);
        let response = h
            .register(&registration(
                &newcomer.uuid,
                &newcomer.voip,
                &newcomer.alert,
            ))
            .await;
        assert_eq!(
            response.status().as_u16(),
            503,
            "registration while the database is down"
        );
        assert!(response.headers().contains_key("retry-after"));
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0);
    h.db.bring_online();

    // Registration recovers by itself; everything acknowledged from now on must stay.
    let mut late = Vec::new();
    let late_person = Person::new(100);
    eventually(&h, "registration recovering", async || {
        let response = h
            .register(&registration(
                &late_person.uuid,
                &late_person.voip,
                &late_person.alert,
            ))
            .await;
        match response.status().as_u16() {
            204 => true,
            503 => false,
            other => panic!("registration answered {other} while recovering"),
        }
    })
    .await;
    late.push(late_person);
    for n in 0..5 {
        let person = Person::new(200 + n);
        h.register_ok(&person.uuid, &person.voip, &person.alert)
            .await;
        late.push(person);
    }
    // A second of load after recovery, then stop.
    let resumed = h.standin.accepted().len();
    eventually(&h, "rings after the outage", async || {
        h.standin.accepted().len() >= resumed + RATE as usize
    })
    .await;
    let sent = load.finish().await;
    let accepted = acknowledged(&sent);
    assert!(accepted > 100, "only {accepted} webhooks acknowledged");
    settled(&h, accepted).await;
    assert_eq!(assert_each_acknowledged_call_rang_once(&h, &sent), accepted);
    // The events queued during the outage were retried to success.
    assert!(
        h.server
            .count_logs(|l| message_is(l, "store unavailable; event will be retried"))
            > 0,
        "no event met the outage; log:\n{}",
        h.server.log_text()
    );

    // No acknowledged registration was lost, from before or after the outage.
    for person in persons.iter().chain(&late) {
        let mut expected = vec![redacted(&person.voip), redacted(&person.alert)];
        expected.sort();
        assert_eq!(listed_tokens(&h, &person.uuid).await, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_503_and_429_for_a_while_are_retried_to_one_ring_per_call() {
    let (h, persons) = start(4, 10, &[]).await;
    let load = Load::start(&h, &persons, "throttled");
    eventually(&h, "rings before the failures", async || {
        h.standin.accepted().len() >= 10
    })
    .await;

    // Half of Apple's answers fail: first as unavailable, then as too many requests
    // (with a `retry-after` the client must honour), each for about a second of load.
    let script = h.standin.script();
    script.fail_rate(503, "ServiceUnavailable", 0.5);
    let failed = |status: u16| {
        h.standin
            .stats()
            .responses
            .get(&status)
            .copied()
            .unwrap_or(0)
    };
    eventually(&h, "APNs answering 503", async || failed(503) >= 30).await;
    script.retry_after(Some(Duration::from_secs(1)));
    script.fail_rate(429, "TooManyRequests", 0.5);
    eventually(&h, "APNs answering 429", async || failed(429) >= 30).await;
    script.clear_fail_rate();
    script.retry_after(None);

    let recovered = h.standin.accepted().len();
    eventually(&h, "rings after the failures", async || {
        h.standin.accepted().len() >= recovered + 20
    })
    .await;
    let sent = load.finish().await;
    let accepted = acknowledged(&sent);
    settled(&h, accepted).await;
    assert_eq!(accepted, sent.len(), "APNs trouble never refuses a webhook");
    assert_eq!(assert_each_acknowledged_call_rang_once(&h, &sent), accepted);
    let stats = h.standin.stats();
    assert_eq!(
        stats.requests - h.warm_up_requests,
        u64::try_from(accepted).unwrap() + failed(503) + failed(429),
        "every failed push was retried, every success sent once"
    );
    assert_eq!(
        h.server
            .count_logs(|l| message_is(l, "event relayed") && l["gave_up"] != 0),
        0,
        "no push was given up: the faults were shorter than the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_goaway_and_dropped_connections_mid_load_still_ring_each_call_exactly_once() {
    let (h, persons) = start(4, 10, &[]).await;
    let load = Load::start(&h, &persons, "connection");
    eventually(&h, "rings before the faults", async || {
        h.standin.accepted().len() >= 10
    })
    .await;

    let script = h.standin.script();
    script.goaway_after(15);
    eventually(&h, "GOAWAYs", async || h.standin.stats().goaways_sent >= 3).await;
    script.goaway_after(0);
    script.drop_connection_after(15);
    eventually(&h, "dropped connections", async || {
        h.standin.stats().connections_dropped >= 3
    })
    .await;
    script.drop_connection_after(0);

    let recovered = h.standin.accepted().len();
    eventually(&h, "rings after the faults", async || {
        h.standin.accepted().len() >= recovered + 20
    })
    .await;
    let sent = load.finish().await;
    let accepted = acknowledged(&sent);
    settled(&h, accepted).await;
    assert_eq!(accepted, sent.len(), "APNs trouble never refuses a webhook");
    assert_eq!(assert_each_acknowledged_call_rang_once(&h, &sent), accepted);
    assert!(h.standin.stats().connections_opened >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stops_accepting_drains_the_queue_and_exits_zero() {
    let (mut h, persons) = start(2, 10, &[]).await;
    // A slow Apple, so events are still queued when the signal comes.
    h.standin.script().latency(Duration::from_millis(50));
    let load = Load::start(&h, &persons, "sigterm");
    eventually(&h, "rings before the signal", async || {
        h.standin.accepted().len() >= 10
    })
    .await;

    h.server.signal("TERM");
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = h.server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not exit; log:\n{}",
            h.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // It stopped accepting: nobody listens any more.
    let body = ring("sigterm-late", &persons[0].uuid).to_string();
    let late = h
        .http
        .post(h.url("/webhook"))
        .header("X-Spark-Signature", sign(SECRET, body.as_bytes()))
        .body(body)
        .send()
        .await;
    assert!(late.is_err(), "the server still answers after exiting");
    let sent = load.finish().await;
    assert!(status.success(), "{status}; log:\n{}", h.server.log_text());
    let accepted = acknowledged(&sent);
    assert!(accepted >= 10);
    // The process is gone: what the stand-in has is all there will ever be.
    assert_eq!(assert_each_acknowledged_call_rang_once(&h, &sent), accepted);
    assert_eq!(
        h.server.count_logs(|l| message_is(l, "push queue drained")),
        1,
        "log:\n{}",
        h.server.log_text()
    );
}
