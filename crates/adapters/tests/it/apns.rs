//! The APNs client against the local stand-in, over TLS and HTTP/2: every outcome
//! class, token reuse and refresh, recovery from GOAWAY and dropped connections,
//! concurrency on one connection, payload limits, environment fallback, key loading.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use apns_standin::{AuthKey, Failure, FaultProxy, StandIn, StandInConfig};
use base64::Engine as _;
use chrono::{TimeZone as _, Utc};
use futures::future::join_all;
use p256::pkcs8::der::pem::LineEnding;
use webex_push_adapters::apns::{
    ALERT_PAYLOAD_LIMIT, ApnsClient, ApnsConfig, ApnsKey, ApnsWarmUpError, KeyId, TeamId,
    VOIP_PAYLOAD_LIMIT,
};
use webex_push_domain::{
    ApnsEnvironment, AppFlavour, BundleId, CallEnded, CallId, Caller, Channel, DeviceToken,
    EventSource, IncomingCall, NewMessage, PersonId, Push, PushContent, PushGateway, PushOutcome,
    PushProvider, RawJson, TestPushGateway,
};

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const BUNDLE: &str = "com.example.app";
const WAIT: Duration = Duration::from_secs(10);

/// A P-384 key: a valid PKCS#8 EC key on the wrong curve.
const P384_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCOjKdKZZ3lzRuH/TKU
5zvPBtBwxH2PVHTvC87erV3rmFyf+AxVslaGmB8Vmtko/xmhZANiAAQRqMDmYcd1
xEFD7lCmrDnVgc5WX8k9zvpcDhpwN8uVW9h/1HGPlU6K/KOz2NHjUFp+VWhgil2S
AfpF0ik+BjBlfieH4jAzclzjWlfTJbgoBEF7Z1P/DslrW7749uEo8zA=
-----END PRIVATE KEY-----
";

/// An Ed25519 key: PKCS#8, but not elliptic-curve DSA.
const ED25519_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIG38nnUcz5x4Y8HkIXLRrZtOJ32THPMhzzQWt2+SC/7D
-----END PRIVATE KEY-----
";

fn key_pem() -> String {
    AuthKey::generate().unwrap().private_pem
}

/// A stand-in and a client configured for it.
struct Fixture {
    standin: StandIn,
    client: ApnsClient,
    config: ApnsConfig,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}, None).await
}

async fn fixture_with(
    adjust: impl FnOnce(&mut ApnsConfig),
    clock: Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>,
) -> Fixture {
    let key = ApnsKey::from_pem(&key_pem()).unwrap();
    let standin = StandIn::start(StandInConfig::new(KEY_ID, TEAM_ID, key.public_key_pem()))
        .await
        .unwrap();
    let mut config = ApnsConfig::new(
        key,
        KeyId::parse(KEY_ID).unwrap(),
        TeamId::parse(TEAM_ID).unwrap(),
        BundleId::parse(BUNDLE).unwrap(),
    );
    config.endpoint = Some(standin.url());
    config.extra_ca_pem = Some(standin.ca_pem());
    adjust(&mut config);
    let client = match clock {
        Some(clock) => ApnsClient::with_clock(config.clone(), clock).unwrap(),
        None => ApnsClient::new(config.clone()).unwrap(),
    };
    Fixture {
        standin,
        client,
        config,
    }
}

fn token(i: u64) -> DeviceToken {
    DeviceToken::parse(&format!("{:064x}", 0xabc0_0000_u64 + i)).unwrap()
}

fn person() -> PersonId {
    PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap()
}

fn call_content(caller_name: &str) -> PushContent {
    PushContent::IncomingCall(Arc::new(IncomingCall {
        call_id: CallId::parse("call-42").unwrap(),
        callee: person(),
        caller: Caller {
            name: Some(caller_name.to_owned()),
            number: Some("+15551234567".into()),
            email: Some("ada@example.com".into()),
            person: Some(person()),
        },
        occurred_at: Utc::now(),
        source: EventSource::CallMemberships,
        sdk_payload: Some(RawJson::parse(r#"{"callId": "call-42", "state": "alerting"}"#).unwrap()),
        fcm_payload: None,
        webhook: None,
        callee_field: None,
        audience: None,
    }))
}

fn message_content(sender_email: &str) -> PushContent {
    PushContent::Message(Arc::new(NewMessage {
        message_id: "msg-1".into(),
        room_id: "room-1".into(),
        room_type: Some("direct".into()),
        recipient: person(),
        sender: Some(person()),
        sender_email: Some(sender_email.to_owned()),
        occurred_at: Utc::now(),
        webhook: None,
    }))
}

fn ended_content() -> PushContent {
    PushContent::CallEnded(Arc::new(CallEnded {
        call_id: CallId::parse("call-42").unwrap(),
        person: person(),
        occurred_at: Utc::now(),
        source: EventSource::CallMemberships,
        answered_elsewhere: false,
    }))
}

fn push(token: DeviceToken, content: PushContent) -> Push {
    let flavour = AppFlavour::Seed;
    Push {
        token,
        channel: content
            .channel_for(flavour, PushProvider::Apns)
            .expect("a seed app takes every event"),
        environment: Some(ApnsEnvironment::Production),
        bundle_id: None,
        flavour,
        content,
        deliver_by: None,
    }
}

fn alert(i: u64) -> Push {
    push(token(i), message_content("ada@example.com"))
}

/// What the domain's notifier does: send again while the answer is `Retry`.
async fn send_until_settled(client: &ApnsClient, push: &Push) -> (PushOutcome, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = client.send(push).await;
        match outcome {
            PushOutcome::Retry { .. } if attempts < 20 => tokio::task::yield_now().await,
            outcome => return (outcome, attempts),
        }
    }
}

fn is_delivered(outcome: &PushOutcome) -> bool {
    matches!(outcome, PushOutcome::Delivered { .. })
}

#[tokio::test]
async fn each_kind_of_push_arrives_with_apples_headers_and_a_verified_jwt() {
    let f = fixture().await;
    let voip = push(token(1), call_content("Ada Lovelace"));
    let message = alert(2);
    let ended = push(token(3), ended_content());
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for p in [&voip, &message, &ended] {
        let answer = f.client.send_detailed(p).await;
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert!(matches!(
            &answer.outcome,
            PushOutcome::Delivered { id, environment: Some(ApnsEnvironment::Production) }
                if *id == answer.apns_id
        ));
    }
    let accepted = f.standin.wait_for_accepted(3, WAIT).await;
    assert_eq!(accepted.len(), 3);
    let by_token = |t: &DeviceToken| {
        accepted
            .iter()
            .find(|a| a.token == t.as_str())
            .unwrap()
            .clone()
    };

    let call = by_token(&voip.token);
    assert_eq!(call.push_type, "voip");
    assert_eq!(call.topic, "com.example.app.voip");
    assert_eq!(call.priority, Some(10));
    let expiration = call.expiration.unwrap();
    assert!(
        expiration > before && expiration <= before + 31,
        "{expiration}"
    );
    assert_eq!(call.payload["webex"]["type"], "incoming_call");
    assert_eq!(call.payload["webex"]["callerName"], "Ada Lovelace");
    assert_eq!(call.payload["webex"]["event"]["state"], "alerting");
    assert!(uuid::Uuid::parse_str(&call.apns_id).is_ok());
    assert_eq!(call.apns_id, call.apns_id.to_lowercase());

    let msg = by_token(&message.token);
    assert_eq!(msg.push_type, "alert");
    assert_eq!(msg.topic, "com.example.app");
    assert_eq!(msg.priority, Some(10));
    assert!(msg.expiration.unwrap() >= before + 3600);
    assert_eq!(msg.payload["aps"]["alert"]["body"], "ada@example.com");
    assert_eq!(msg.payload["aps"]["thread-id"], "room-1");

    let end = by_token(&ended.token);
    assert_eq!(end.push_type, "alert");
    assert_eq!(end.collapse_id.as_deref(), Some("call-42"));
    assert_eq!(end.payload["webex"]["type"], "call_ended");
    assert_eq!(end.payload["webex"]["callId"], "call-42");

    // One provider token for all three, as Apple wants.
    assert_eq!(f.standin.stats().distinct_jwts.len(), 1);
    assert!(accepted.iter().all(|a| a.jwt == accepted[0].jwt));
}

#[tokio::test]
async fn dead_tokens_are_invalid_since_apples_timestamp_or_the_sending() {
    let f = fixture().await;
    let at = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap();
    let cases = [
        (
            Failure::Unregistered {
                timestamp_ms: at.timestamp_millis(),
            },
            "Unregistered",
            Some(at),
        ),
        (
            Failure::ExpiredToken {
                timestamp_ms: at.timestamp_millis(),
            },
            "ExpiredToken",
            Some(at),
        ),
        (Failure::BadDeviceToken, "BadDeviceToken", None),
        (
            Failure::DeviceTokenNotForTopic,
            "DeviceTokenNotForTopic",
            None,
        ),
    ];
    for (i, (failure, reason, since)) in cases.into_iter().enumerate() {
        let p = alert(i as u64);
        f.standin.script().fail_token(p.token.as_str(), failure);
        let sent = Utc::now();
        match f.client.send(&p).await {
            PushOutcome::TokenInvalid {
                reason: got,
                since: got_since,
            } => {
                assert_eq!(got, reason);
                match since {
                    Some(since) => assert_eq!(got_since, since),
                    None => assert!((got_since - sent).num_seconds().abs() <= 2),
                }
            }
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn throttling_and_outages_are_retried_honouring_retry_after() {
    let f = fixture().await;
    f.standin.script().retry_after(Some(Duration::from_secs(7)));
    for (status, reason) in [
        (429, "TooManyRequests"),
        (429, "TooManyProviderTokenUpdates"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (400, "IdleTimeout"),
    ] {
        f.standin.script().fail_next(1, status, reason);
        match f.client.send(&alert(1)).await {
            PushOutcome::Retry { reason: got, after } => {
                assert_eq!(got, reason);
                if status == 429 || status == 503 {
                    assert_eq!(after, Some(Duration::from_secs(7)), "{reason}");
                }
            }
            other => panic!("{status} {reason}: {other:?}"),
        }
        // And the retry goes through.
        assert!(is_delivered(&f.client.send(&alert(1)).await));
    }
}

#[tokio::test]
async fn configuration_errors_are_rejected_and_unknown_reasons_kept_verbatim() {
    let f = fixture().await;
    f.standin
        .script()
        .fail_next(1, 400, "SomethingAppleAddedLater");
    assert_eq!(
        f.client.send(&alert(1)).await,
        PushOutcome::Rejected {
            reason: "SomethingAppleAddedLater".into()
        }
    );
    f.standin.script().fail_next(1, 418, "Teapot");
    assert_eq!(
        f.client.send(&alert(1)).await,
        PushOutcome::Rejected {
            reason: "Teapot".into()
        }
    );

    // A topic the key may not push to.
    let mut other_app = alert(2);
    other_app.bundle_id = Some(BundleId::parse("com.other.app").unwrap());
    assert_eq!(
        f.client.send(&other_app).await,
        PushOutcome::Rejected {
            reason: "TopicDisallowed".into()
        }
    );

    // A key that is not the one the server knows.
    let mut config = f.config.clone();
    config.key = ApnsKey::from_pem(&key_pem()).unwrap();
    let stranger = ApnsClient::new(config).unwrap();
    assert_eq!(
        stranger.send(&alert(3)).await,
        PushOutcome::Rejected {
            reason: "InvalidProviderToken".into()
        }
    );
    assert!(f.standin.accepted().is_empty());
}

#[tokio::test]
async fn no_answer_is_a_retry_connection_refused_and_timeout_alike() {
    // A port nothing listens on: bound, then released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    drop(listener);
    let f = fixture_with(|c| c.request_timeout = Duration::from_millis(300), None).await;
    let mut config = f.config.clone();
    config.endpoint = Some(closed);
    let nowhere = ApnsClient::new(config).unwrap();
    assert!(matches!(
        nowhere.send(&alert(1)).await,
        PushOutcome::Retry { after: None, .. }
    ));
    assert!(matches!(
        nowhere.warm_up().await,
        Err(ApnsWarmUpError::Unreachable { .. })
    ));

    f.standin.script().latency(Duration::from_secs(3));
    assert_eq!(
        f.client.send(&alert(2)).await,
        PushOutcome::Retry {
            reason: "Timeout".into(),
            after: None
        }
    );
}

#[tokio::test]
async fn only_the_configured_roots_are_trusted() {
    let f = fixture().await;
    let mut config = f.config.clone();
    // The stand-in's certificate is signed by its own CA: without it, no connection.
    config.extra_ca_pem = None;
    let untrusting = ApnsClient::new(config).unwrap();
    assert_eq!(
        untrusting.send(&alert(1)).await,
        PushOutcome::Retry {
            reason: "ConnectFailed".into(),
            after: None
        }
    );
    assert_eq!(f.standin.stats().requests, 0);
    let mut config = f.config.clone();
    config.extra_ca_pem = Some("not a certificate".into());
    assert!(ApnsClient::new(config).is_err());
}

#[tokio::test]
async fn a_connection_at_apples_stream_limit_gets_company_and_no_more_than_needed() {
    let key = ApnsKey::from_pem(&key_pem()).unwrap();
    let mut standin_config = StandInConfig::new(KEY_ID, TEAM_ID, key.public_key_pem());
    standin_config.max_concurrent_streams = 10;
    let standin = StandIn::start(standin_config).await.unwrap();
    let mut config = ApnsConfig::new(
        key,
        KeyId::parse(KEY_ID).unwrap(),
        TeamId::parse(TEAM_ID).unwrap(),
        BundleId::parse(BUNDLE).unwrap(),
    );
    config.endpoint = Some(standin.url());
    config.extra_ca_pem = Some(standin.ca_pem());
    let client = ApnsClient::new(config).unwrap();
    client.warm_up().await.unwrap();
    standin.script().latency(Duration::from_millis(200));
    let client = &client;
    let outcomes = join_all((0..100).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(outcomes.iter().all(is_delivered));
    let stats = standin.stats();
    // 100 pushes, 10 streams each: more connections than one, never more than four,
    // each new one starting with a single stream.
    assert!((2..=4).contains(&stats.connections_opened), "{stats:?}");
    assert_eq!(stats.streams_before_first_answer, 0, "{stats:?}");
    assert_eq!(stats.refused_streams, 0, "{stats:?}");
    eprintln!("stream limit: {} connections", stats.connections_opened);
}

#[tokio::test]
async fn ten_thousand_pushes_share_one_jwt_and_one_connection() {
    let f = fixture().await;
    f.client.warm_up().await.unwrap();
    let client = &f.client;
    let outcomes = join_all((0..10_000).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(outcomes.iter().all(is_delivered));
    let stats = f.standin.stats();
    assert_eq!(stats.accepted, 10_001); // and the warm-up push
    assert_eq!(stats.distinct_jwts.len(), 1);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(f.client.provider_tokens_minted(), 1);
}

#[tokio::test]
async fn the_provider_token_is_replaced_after_fifty_minutes() {
    // The client's clock starts 55 minutes in the past, so its first token is 55
    // minutes old by the stand-in's clock: still valid (under 60), due for refresh.
    let offset = Arc::new(AtomicI64::new(-55 * 60));
    let clock_offset = Arc::clone(&offset);
    let clock: Arc<dyn Fn() -> SystemTime + Send + Sync> = Arc::new(move || {
        let offset = clock_offset.load(Ordering::SeqCst);
        let now = SystemTime::now();
        if offset < 0 {
            now - Duration::from_secs(offset.unsigned_abs())
        } else {
            now + Duration::from_secs(offset as u64)
        }
    });
    let f = fixture_with(|_| {}, Some(clock)).await;
    assert!(is_delivered(&f.client.send(&alert(1)).await));
    offset.store(-54 * 60, Ordering::SeqCst);
    assert!(is_delivered(&f.client.send(&alert(2)).await));
    assert_eq!(f.client.provider_tokens_minted(), 1);

    offset.store(-5 * 60, Ordering::SeqCst); // 50 minutes later
    let client = &f.client;
    let outcomes = join_all((3..103).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(outcomes.iter().all(is_delivered));
    assert_eq!(f.client.provider_tokens_minted(), 2);
    let stats = f.standin.stats();
    assert_eq!(stats.distinct_jwts.len(), 2);
    let accepted = f.standin.accepted();
    assert_eq!(accepted[0].jwt, accepted[1].jwt);
    assert!(accepted[2..].iter().all(|a| a.jwt != accepted[0].jwt));
}

#[tokio::test]
async fn an_expired_provider_token_is_reminted_once_and_the_push_retried() {
    let f = fixture().await;
    assert!(is_delivered(&f.client.send(&alert(1)).await));
    f.standin.script().expire_seen_tokens();
    let client = &f.client;
    // Many pushes see the expiry at once: one new token between them.
    let outcomes = join_all((2..52).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(outcomes.iter().all(is_delivered), "{outcomes:?}");
    assert_eq!(f.client.provider_tokens_minted(), 2);

    // Expired again right away: minting again would be refused by Apple
    // (TooManyProviderTokenUpdates), so the push is rejected, not looped.
    f.standin.script().expire_seen_tokens();
    assert_eq!(
        f.client.send(&alert(60)).await,
        PushOutcome::Rejected {
            reason: "ExpiredProviderToken".into()
        }
    );
    assert_eq!(f.client.provider_tokens_minted(), 2);
}

/// Sends `n` alerts at once, each retried on `Retry`, and checks every one arrived.
async fn all_arrive_despite(f: &Fixture, n: u64) -> u32 {
    let client = &f.client;
    let settled = join_all((0..n).map(|i| async move {
        let p = alert(i);
        send_until_settled(client, &p).await
    }))
    .await;
    for (i, (outcome, attempts)) in settled.iter().enumerate() {
        assert!(
            is_delivered(outcome),
            "push {i}: {outcome:?} after {attempts}"
        );
    }
    let accepted = f.standin.wait_for_accepted(n as usize, WAIT).await;
    let mut tokens: Vec<_> = accepted.iter().map(|a| a.token.clone()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len() as u64, n, "every token accepted");
    settled.iter().map(|(_, attempts)| attempts - 1).sum()
}

#[tokio::test]
async fn goaway_with_pushes_in_flight_loses_none() {
    let f = fixture().await;
    f.standin.script().goaway_after(300);
    let retries = all_arrive_despite(&f, 2_000).await;
    let stats = f.standin.stats();
    // Every GOAWAY forced a new connection, and the client followed.
    assert!(stats.goaways_sent >= 2, "{stats:?}");
    assert!(stats.connections_opened >= stats.goaways_sent, "{stats:?}");
    assert_eq!(stats.distinct_jwts.len(), 1);
    // Each new connection carried one push until its first answer, as Apple asks.
    assert_eq!(stats.streams_before_first_answer, 0, "{stats:?}");
    eprintln!(
        "GOAWAY: {retries} retries, {} connections",
        stats.connections_opened
    );
}

#[tokio::test]
async fn a_dropped_connection_with_pushes_in_flight_loses_none() {
    let f = fixture().await;
    f.standin.script().drop_connection_after(250);
    let retries = all_arrive_despite(&f, 1_000).await;
    let stats = f.standin.stats();
    assert!(stats.connections_dropped >= 1, "{stats:?}");
    assert!(
        retries >= 1,
        "a dropped connection loses the pushes in flight"
    );
    // Reconnects too wait for their first answer before the burst follows.
    assert!(stats.connections_opened >= 2, "{stats:?}");
    assert_eq!(stats.streams_before_first_answer, 0, "{stats:?}");
    eprintln!(
        "drop: {retries} retries, {} connections",
        stats.connections_opened
    );
}

#[tokio::test]
async fn a_connection_silently_dropped_on_the_way_is_abandoned_at_the_first_unanswered_push() {
    let (_standin, proxy, client) =
        behind_proxy(|config| config.request_timeout = Duration::from_secs(2)).await;
    assert!(is_delivered(&client.send(&alert(1)).await));
    assert_eq!(proxy.connections(), 1);

    // A NAT forgets the flow: nothing is refused, nothing comes back.
    assert_eq!(proxy.blackhole_live(), 1);
    let since = Instant::now();
    let (outcome, attempts) = send_until_settled(&client, &alert(2)).await;
    let took = since.elapsed();
    assert!(is_delivered(&outcome), "{outcome:?}");
    // One push timed out on the dead connection; the next went to a new one, instead
    // of waiting for HTTP/2 keep-alive (60 + 20 s) to notice.
    assert_eq!(attempts, 2);
    assert!(
        took < Duration::from_secs(5),
        "delivered again after {took:?}"
    );
    assert_eq!(proxy.connections(), 2);
    // And the new connection carries what follows.
    assert!(is_delivered(&client.send(&alert(3)).await));
    assert_eq!(proxy.connections(), 2);
}

/// A stand-in and a client that reaches it through a [`FaultProxy`].
async fn behind_proxy(adjust: impl FnOnce(&mut ApnsConfig)) -> (StandIn, FaultProxy, ApnsClient) {
    let key = ApnsKey::from_pem(&key_pem()).unwrap();
    let standin = StandIn::start(StandInConfig::new(KEY_ID, TEAM_ID, key.public_key_pem()))
        .await
        .unwrap();
    let proxy = FaultProxy::start(standin.local_addr()).await.unwrap();
    let mut config = ApnsConfig::new(
        key,
        KeyId::parse(KEY_ID).unwrap(),
        TeamId::parse(TEAM_ID).unwrap(),
        BundleId::parse(BUNDLE).unwrap(),
    );
    config.endpoint = Some(proxy.url());
    config.extra_ca_pem = Some(standin.ca_pem());
    adjust(&mut config);
    let client = ApnsClient::new(config).unwrap();
    (standin, proxy, client)
}

#[tokio::test]
async fn pushes_in_flight_on_a_blackholed_connection_fail_within_seconds_not_at_the_timeout() {
    // The default request timeout (10 s): only the PINGs can notice the dead path fast.
    let (standin, proxy, client) = behind_proxy(|_| {}).await;
    assert!(is_delivered(&client.send(&alert(1)).await));
    assert_eq!(proxy.blackhole_live(), 1);
    let since = Instant::now();
    let client = &client;
    let settled = join_all((2..12).map(|i| async move {
        let p = alert(i);
        send_until_settled(client, &p).await
    }))
    .await;
    let took = since.elapsed();
    for (outcome, attempts) in &settled {
        assert!(is_delivered(outcome), "{outcome:?}");
        assert_eq!(*attempts, 2, "one try on the dead connection, one on a new");
    }
    assert!(
        took < Duration::from_secs(5),
        "delivered again after {took:?}"
    );
    assert_eq!(proxy.connections(), 2);
    assert_eq!(standin.stats().accepted, 11);
}

#[tokio::test]
async fn refused_streams_are_sent_again_on_a_new_connection_before_the_answer() {
    let f = fixture().await;
    assert!(is_delivered(&f.client.send(&alert(1)).await));
    // Nothing of a refused stream was processed: the client sends it again itself,
    // on a fresh connection, and the push is delivered at the first `send`.
    f.standin.script().refuse_next(2);
    assert!(is_delivered(&f.client.send(&alert(2)).await));
    let stats = f.standin.stats();
    assert_eq!(stats.refused_streams, 2, "{stats:?}");
    assert_eq!(stats.accepted, 2, "{stats:?}");
    assert_eq!(stats.connections_opened, 3, "{stats:?}");
    // More refusals in a row than it resends: a retry for the domain, not a failure.
    f.standin.script().refuse_next(10);
    let outcome = f.client.send(&alert(3)).await;
    assert!(matches!(outcome, PushOutcome::Retry { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_new_connection_carries_one_push_until_its_first_answer_even_after_a_reconnect() {
    let f = fixture().await;
    // Slow answers: a burst would open many streams at once if the client let it.
    f.standin.script().latency(Duration::from_millis(100));
    let client = &f.client;
    let first = join_all((0..50).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(first.iter().all(is_delivered));
    // The stand-in goes away gracefully; the next burst lands on a new connection.
    f.standin.script().goaway_after(1);
    assert!(is_delivered(&client.send(&alert(50)).await));
    f.standin.script().goaway_after(0);
    let second = join_all((51..100).map(|i| async move { client.send(&alert(i)).await })).await;
    assert!(second.iter().all(is_delivered));
    let stats = f.standin.stats();
    assert!(stats.connections_opened >= 2, "{stats:?}");
    assert_eq!(stats.streams_before_first_answer, 0, "{stats:?}");
    assert_eq!(stats.accepted, 100, "{stats:?}");
}

#[tokio::test]
async fn a_thousand_pushes_in_flight_share_one_connection() {
    let f = fixture().await;
    // Slow answers keep every push in flight at once.
    let latency = Duration::from_millis(500);
    f.standin.script().latency(latency);
    let client = &f.client;
    let started = Instant::now();
    let outcomes = join_all((0..1_000).map(|i| async move { client.send(&alert(i)).await })).await;
    let elapsed = started.elapsed();
    assert!(outcomes.iter().all(is_delivered));
    let stats = f.standin.stats();
    assert_eq!(stats.connections_opened, 1);
    // The first push goes alone (Apple's one stream until a push succeeds); the other
    // 999 go together: about 1 s. One at a time would take 500 s, and even 35 at a
    // time 15 s; the margin is for a loaded machine.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test]
async fn oversized_display_text_is_shortened_and_the_push_still_delivered() {
    let f = fixture().await;
    let huge = "Ada ".repeat(10_000);
    let voip = push(token(1), call_content(&huge));
    let message = push(token(2), message_content(&format!("{huge}@example.com")));
    assert!(is_delivered(&f.client.send(&voip).await));
    assert!(is_delivered(&f.client.send(&message).await));
    let accepted = f.standin.wait_for_accepted(2, WAIT).await;
    for a in &accepted {
        let size = serde_json::to_vec(&a.payload).unwrap().len();
        if a.push_type == "voip" {
            assert!(size <= VOIP_PAYLOAD_LIMIT, "{size}");
            let name = a.payload["webex"]["callerName"].as_str().unwrap();
            assert!(name.starts_with("Ada Ada") && name.ends_with('…'));
            // The SDK event survives: only display text was cut.
            assert_eq!(a.payload["webex"]["event"]["state"], "alerting");
        } else {
            assert!(size <= ALERT_PAYLOAD_LIMIT, "{size}");
            assert!(
                a.payload["aps"]["alert"]["body"]
                    .as_str()
                    .unwrap()
                    .ends_with('…')
            );
        }
    }
}

#[tokio::test]
async fn a_token_without_environment_is_tried_once_in_the_other() {
    let f = fixture().await;
    let mut unknown = alert(1);
    unknown.environment = None;

    // Production (the default) says BadDeviceToken; the sandbox takes it.
    f.standin
        .script()
        .fail_next_with(1, Failure::BadDeviceToken);
    let answer = f.client.send_detailed(&unknown).await;
    assert!(
        matches!(
            answer.outcome,
            PushOutcome::Delivered {
                environment: Some(ApnsEnvironment::Sandbox),
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(answer.environment, ApnsEnvironment::Sandbox);

    // Dead in both: one try each, then TokenInvalid.
    f.standin
        .script()
        .fail_token(unknown.token.as_str(), Failure::BadDeviceToken);
    let before = f.standin.stats().requests;
    assert!(matches!(
        f.client.send(&unknown).await,
        PushOutcome::TokenInvalid { .. }
    ));
    assert_eq!(f.standin.stats().requests - before, 2);

    // A token with a known environment is never tried elsewhere.
    let mut pinned = unknown.clone();
    pinned.environment = Some(ApnsEnvironment::Sandbox);
    let before = f.standin.stats().requests;
    assert!(matches!(
        f.client.send(&pinned).await,
        PushOutcome::TokenInvalid { .. }
    ));
    assert_eq!(f.standin.stats().requests - before, 1);
}

#[tokio::test]
async fn a_test_push_answers_with_apples_status_reason_apns_id_and_environment() {
    let f = fixture().await;
    let delivered = TestPushGateway::send_detailed(&f.client, &alert(1)).await;
    assert_eq!(delivered.provider, PushProvider::Apns);
    assert_eq!(delivered.status, Some(200));
    assert_eq!(delivered.environment, Some(ApnsEnvironment::Production));
    assert_eq!(delivered.outcome.label(), "delivered");
    let accepted = f
        .standin
        .wait_for_accepted(1, Duration::from_secs(10))
        .await;
    assert!(
        delivered.id.eq_ignore_ascii_case(&accepted[0].apns_id),
        "{delivered:?}"
    );

    f.standin
        .script()
        .fail_token(token(2).as_str(), Failure::BadDeviceToken);
    let refused = TestPushGateway::send_detailed(&f.client, &alert(2)).await;
    assert_eq!(refused.status, Some(400));
    assert_eq!(refused.reason.as_deref(), Some("BadDeviceToken"));
    assert!(!refused.id.is_empty(), "the apns-id sent");
}

#[tokio::test]
async fn warm_up_opens_the_connection_and_checks_the_credentials() {
    let f = fixture().await;
    f.client.warm_up().await.unwrap();
    assert_eq!(f.standin.stats().connections_opened, 1);
    assert!(is_delivered(&f.client.send(&alert(1)).await));
    assert_eq!(f.standin.stats().connections_opened, 1);

    let mut config = f.config.clone();
    config.key = ApnsKey::from_pem(&key_pem()).unwrap();
    match ApnsClient::new(config).unwrap().warm_up().await {
        Err(ApnsWarmUpError::Refused { status, reason, .. }) => {
            assert_eq!((status, reason.as_str()), (403, "InvalidProviderToken"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn voip_pushes_go_to_the_voip_topic_of_the_tokens_own_bundle() {
    let f = fixture().await;
    let mut p = push(token(1), call_content("Ada"));
    p.bundle_id = Some(BundleId::parse(BUNDLE).unwrap());
    assert_eq!(p.channel, Channel::Voip);
    assert!(is_delivered(&f.client.send(&p).await));
    let accepted = f.standin.wait_for_accepted(1, WAIT).await;
    assert_eq!(accepted[0].topic, "com.example.app.voip");
}

#[test]
fn keys_load_from_pem_base64_and_files_and_wrong_ones_say_why() {
    let pem = key_pem();
    let from_pem = ApnsKey::from_pem(&pem).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pem);
    let from_b64 = ApnsKey::from_env_text(&encoded).unwrap();
    assert_eq!(from_pem.public_key_pem(), from_b64.public_key_pem());
    let escaped = pem.replace('\n', "\\n");
    assert_eq!(
        ApnsKey::from_env_text(&escaped).unwrap().public_key_pem(),
        from_pem.public_key_pem()
    );
    assert!(
        from_pem
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    let dir = std::env::temp_dir().join(format!("apns-key-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("AuthKey.p8");
    std::fs::write(&good, &pem).unwrap();
    assert_eq!(
        ApnsKey::from_file(&good).unwrap().public_key_pem(),
        from_pem.public_key_pem()
    );
    let cert = dir.join("cert.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = ApnsKey::from_file(&cert).unwrap_err().to_string();
    assert!(
        err.contains("APNS_KEY_FILE") && err.contains("CERTIFICATE"),
        "{err}"
    );
    let missing = dir.join("missing.p8");
    let err = ApnsKey::from_file(&missing).unwrap_err().to_string();
    assert!(
        err.contains("APNS_KEY_FILE") && err.contains("missing.p8"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let err = ApnsKey::from_pem(P384_KEY).unwrap_err().to_string();
    assert!(err.contains("P-384") && err.contains("not P-256"), "{err}");
    let err = ApnsKey::from_pem(ED25519_KEY).unwrap_err().to_string();
    assert!(err.contains("Ed25519"), "{err}");
    let sec1 = p256::SecretKey::random(&mut rand::thread_rng())
        .to_sec1_pem(LineEnding::LF)
        .unwrap();
    let err = ApnsKey::from_pem(&sec1).unwrap_err().to_string();
    assert!(
        err.contains("EC PRIVATE KEY") && err.contains("PKCS#8"),
        "{err}"
    );
    let err = ApnsKey::from_env_text("bm90IGEga2V5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("APNS_KEY"), "{err}");
}
