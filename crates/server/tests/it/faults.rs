//! Faults under load: the real `webex-push` binary, a fresh Postgres database and the
//! APNs stand-in, with a steady stream of signed webhooks (one distinct call each, for
//! registered persons) while the database goes away, Apple throttles or fails, Apple's
//! connection drops or says GOAWAY, or the server is told to stop.
//!
//! What every test proves at the end: each webhook answered `204` rang its person's
//! phone exactly once, and each webhook refused (`503`) rang nothing.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webex_push_adapters::webex::sign;

use crate::common::*;

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
    ring_of(person, call_id, &webex_id(person))
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

/// Waits until the workers have finished every accepted event (relayed or not).
async fn settled(h: &Harness, accepted: usize) {
    h.server
        .wait_for_count("finishing every accepted event", accepted, |l| {
            message_is(l, "event relayed")
                || message_is(l, "event not relayed")
                || message_is(l, "event dropped late")
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
    let devices = h.admin_devices(ADMIN, person).await;
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
        // The outage lasts 2 s, the fault's own length: a registration every 100 ms.
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
            .count_logs(|l| message_is(l, "store unavailable; the event will be claimed again"))
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
async fn a_blackholed_apns_connection_is_abandoned_and_rings_arrive_again_within_5_s() {
    // The production request timeout (10 s): the connection's PINGs must notice.
    let (h, proxy) = Harness::start_with_apns_proxy(4, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
    let ada = Person::new(1);
    let bob = Person::new(2);
    h.register_ok(&ada.uuid, &ada.voip, &ada.alert).await;
    h.register_ok(&bob.uuid, &bob.voip, &bob.alert).await;
    assert_eq!(post_ring(&h, "before", &ada.uuid).await, 204);
    // Relayed, not only received: an answer still on its way back when the path dies
    // leaves the outcome unknown, and the push is (rightly) sent again.
    eventually(&h, "the ring before relayed", async || {
        h.server
            .count_logs(|l| message_is(l, "event relayed") && l["call_id"] == "before")
            == 1
    })
    .await;
    assert_eq!(rings_of(&h, &ada.voip), 1);

    // A NAT forgets the flow: nothing is refused, nothing comes back.
    assert_eq!(proxy.blackhole_live(), 1, "one warm APNs connection");
    let since = tokio::time::Instant::now();
    assert_eq!(post_ring(&h, "during", &bob.uuid).await, 204);
    eventually(&h, "the ring after the blackhole", async || {
        rings_of(&h, &bob.voip) == 1
    })
    .await;
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "rang again after {took:?}; log:\n{}",
        h.server.log_text()
    );
    assert_eq!(proxy.connections(), 2, "the dead connection was replaced");
    assert!(
        h.server.count_logs(|l| message_is(
            l,
            "APNs connection stopped answering PINGs: closed, and what it carried is retried on a new one"
        )) == 1
    );
    // Exactly once, and what follows goes out on the new connection at once.
    assert_eq!(post_ring(&h, "after", &ada.uuid).await, 204);
    eventually(&h, "the ring after", async || rings_of(&h, &ada.voip) == 2).await;
    assert_eq!(rings_of(&h, &bob.voip), 1);
    assert_eq!(proxy.connections(), 2);
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
    let status = h.server.exited().await;
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

/// `url` with its host and port replaced by `addr`, and the address it named.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let target = &authority[host_start..];
    let target = if target.contains(':') {
        target.to_owned()
    } else {
        format!("{target}:5432")
    };
    let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .unwrap()
        .next()
        .unwrap();
    (
        format!("{scheme}://{}{addr}/{path}", &authority[..host_start]),
        target,
    )
}

/// A harness whose server reaches its fresh database through a [`FaultProxy`].
async fn start_behind_proxy(extra: &[(&str, String)]) -> (Harness, apns_standin::FaultProxy) {
    let db = webex_push_test_support::TestDatabase::postgres();
    let (_, target) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = apns_standin::FaultProxy::start(target).await.unwrap();
    let (url, _) = through(db.url(), proxy.local_addr());
    let mut envs = vec![("ADMIN_TOKEN", ADMIN.to_owned())];
    envs.extend_from_slice(extra);
    (Harness::start_on(db, url, 4, &envs).await, proxy)
}

/// Posts a signed ring of `person` for `call_id`; the status.
async fn post_ring(h: &Harness, call_id: &str, person: &str) -> u16 {
    let body = ring(call_id, person);
    let signature = sign(SECRET, body.to_string().as_bytes());
    h.webhook_signed_with(&body, Some(signature)).await
}

/// The VoIP pushes the stand-in accepted for `token`.
fn rings_of(h: &Harness, token: &str) -> usize {
    h.standin
        .accepted()
        .iter()
        .filter(|push| push.token == token)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_comes_after_the_timeout_still_rings_exactly_once() {
    // The harness's database settings: an operation times out after 1 + 2 + 1 s.
    let (h, proxy) = start_behind_proxy(&[]).await;
    let ada = Person::new(1);
    h.register_ok(&ada.uuid, &ada.voip, &ada.alert).await;

    // Postgres runs and commits what it is sent, but its answers arrive 5 s late: the
    // claim made before the webhook is answered, and the worker's first tries, all
    // time out with their outcome unknown.
    proxy.delay_replies(Duration::from_secs(5));
    let status = post_ring(&h, "late-reply", &ada.uuid).await;
    assert_eq!(status, 204, "accepted although the store is slow");
    // The fault's own length: the answers stay late for 6 s, past several tries.
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.delay_replies(Duration::ZERO);

    eventually(&h, "the ring", async || rings_of(&h, &ada.voip) >= 1).await;
    let relayed = h
        .server
        .wait_for_log("`event relayed`", |l| message_is(l, "event relayed"))
        .await;
    assert_eq!(relayed["duplicate"], false, "{relayed}");
    assert!(relayed["attempts"].as_u64().unwrap() > 1, "{relayed}");
    // Another delivery of the same webhook is still a duplicate.
    assert_eq!(post_ring(&h, "late-reply", &ada.uuid).await, 204);
    eventually(&h, "the re-delivery handled", async || {
        h.server.count_logs(|l| message_is(l, "event relayed")) >= 2
    })
    .await;
    assert_eq!(rings_of(&h, &ada.voip), 1, "rang exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_postgres_connections_are_abandoned_and_service_returns_within_15_s() {
    // The production defaults: an operation times out after 3 + 5 + 1 s.
    let (h, proxy) = start_behind_proxy(&[
        ("DATABASE_CHECKOUT_TIMEOUT_SECS", "3".into()),
        ("DATABASE_STATEMENT_TIMEOUT_SECS", "5".into()),
    ])
    .await;
    let persons: Vec<Person> = (0..4).map(Person::new).collect();
    for person in &persons {
        h.register_ok(&person.uuid, &person.voip, &person.alert)
            .await;
    }
    let blackholed = proxy.blackhole_live();
    assert!(blackholed > 0, "the pool had connections open");
    let since = tokio::time::Instant::now();

    // Registrations keep coming; the first one that works ends the outage.
    let newcomer = Person::new(9);
    let within = Duration::from_secs(15);
    eventually_within(
        &h.server,
        within,
        "a registration working again",
        async || {
            let response = h
                .http
                .post(h.url("/register"))
                .timeout(within)
                .json(&registration(
                    &newcomer.uuid,
                    &newcomer.voip,
                    &newcomer.alert,
                ))
                .send()
                .await;
            response.is_ok_and(|r| r.status().as_u16() == 204)
        },
    )
    .await;
    let back = since.elapsed();
    assert_eq!(post_ring(&h, "after-blackhole", &newcomer.uuid).await, 204);
    eventually(&h, "the ring after the blackhole", async || {
        rings_of(&h, &newcomer.voip) == 1
    })
    .await;
    assert!(
        since.elapsed() < Duration::from_secs(15),
        "registration back after {back:?}, ring after {:?}",
        since.elapsed()
    );
    assert_eq!(h.get_status("/readyz").await, 200);
    assert!(
        h.server.count_logs(|l| message_is(
            l,
            "a database operation outlived its timeout: its connections are abandoned and new ones opened"
        )) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_under_load_loses_none_of_the_rings_it_acknowledged() {
    let (h, persons) = start(16, 10, &[]).await;
    let survivor = h.replica().await;
    // Apple is slow, so the killed replica has pushes in flight and queued.
    h.standin.script().latency(Duration::from_millis(300));
    let load = Load::start(&h, &persons, "killed");
    // Well over 50 rings acknowledged (each push rang an acknowledged webhook), and with
    // Apple this slow, more in flight and queued.
    eventually_within(
        &h.server,
        Duration::from_secs(40),
        "rings before the kill",
        async || h.standin.accepted().len() >= 120,
    )
    .await;
    h.server.signal("KILL");
    let sent = load.finish().await;
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| s.status == Some(204)).collect();
    assert!(
        acknowledged.len() > 50,
        "only {} acknowledged",
        acknowledged.len()
    );

    // The survivor takes the unfinished ones over once the killed replica has been
    // silent for 10 s; every ring is still within its 30 s.
    let rang = |push: &apns_standin::AcceptedPush, sent: &Sent| {
        push.token == sent.voip && push.payload["webex"]["callId"] == sent.call_id.as_str()
    };
    let unrung = || {
        let pushes = h.standin.accepted();
        acknowledged
            .iter()
            .filter(|sent| !pushes.iter().any(|push| rang(push, sent)))
            .map(|sent| sent.call_id.clone())
            .collect::<Vec<_>>()
    };
    eventually_within(
        &survivor,
        Duration::from_secs(40),
        "every acknowledged ring ringing",
        async || unrung().is_empty(),
    )
    .await;
    assert!(
        survivor.count_logs(|l| message_is(l, "job taken over")) > 0,
        "the survivor took over nothing: the kill did not catch any ring in flight"
    );
    // A ring the killed replica sent but had not marked finished rings again: at
    // least once under a crash, and rarely more.
    let pushes = h.standin.accepted();
    let twice = acknowledged
        .iter()
        .filter(|sent| pushes.iter().filter(|push| rang(push, sent)).count() > 1)
        .count();
    assert!(
        twice * 10 <= acknowledged.len(),
        "{twice} of {} rang twice",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_for_25_of_a_ring_s_30_s_rings_nothing_after_the_deadline() {
    let (h, persons) = start(4, 1, &[]).await;
    let ada = &persons[0];
    // Apple keeps failing this phone: only the deadline stops the retries.
    h.standin.script().fail_token(
        &ada.voip,
        apns_standin::Failure::Status {
            status: 503,
            reason: "ServiceUnavailable".into(),
        },
    );
    h.db.take_offline();
    let received = tokio::time::Instant::now();
    assert_eq!(post_ring(&h, "outage", &ada.uuid).await, 204);
    // The fault's own length: the store stays away for 25 of the ring's 30 s.
    tokio::time::sleep(Duration::from_secs(25)).await;
    h.db.bring_online();

    let relayed = h
        .server
        .wait_for_log("`event relayed`", |l| message_is(l, "event relayed"))
        .await;
    assert_eq!(relayed["gave_up"], 1, "{relayed}");
    let done = received.elapsed();
    assert!(
        done <= Duration::from_secs(31),
        "the last try ended {done:?} after the webhook"
    );
    let requests = h.standin.stats().requests;
    // No condition to wait for: that nothing more is sent takes a window to see.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.standin.stats().requests,
        requests,
        "nothing sent after the deadline"
    );
    assert!(
        h.standin.stats().requests > h.warm_up_requests,
        "the ring was tried once the store was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_restart_relays_what_was_accepted_and_not_yet_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("push.db");
    let h = Harness::start_on(
        webex_push_test_support::TestDatabase::postgres(),
        format!("sqlite://{}", file.display()),
        4,
        &[("ADMIN_TOKEN", ADMIN.to_owned())],
    )
    .await;
    let ada = Person::new(1);
    h.register_ok(&ada.uuid, &ada.voip, &ada.alert).await;
    // Apple fails this phone until the process is gone, so the ring is still being
    // retried when it is killed.
    let unavailable = apns_standin::Failure::Status {
        status: 503,
        reason: "ServiceUnavailable".into(),
    };
    h.standin.script().fail_token(&ada.voip, unavailable);
    assert_eq!(post_ring(&h, "before-crash", &ada.uuid).await, 204);
    eventually(&h, "a first try at Apple", async || {
        h.standin.stats().requests > h.warm_up_requests
    })
    .await;
    h.server.signal("KILL");
    h.standin.script().clear_token(&ada.voip);

    let restarted = h.replica().await;
    eventually_within(
        &restarted,
        Duration::from_secs(25),
        "the accepted ring relayed after the restart",
        async || rings_of(&h, &ada.voip) > 0,
    )
    .await;
    assert_eq!(rings_of(&h, &ada.voip), 1);
    assert_eq!(
        restarted.count_logs(|l| message_is(l, "job taken over")),
        1,
        "{}",
        restarted.log_text()
    );
}
