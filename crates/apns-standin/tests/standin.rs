//! The stand-in seen from a plain HTTP/2 client: Apple's checks, its answers, and the
//! scripted failures the APNs client is tested against.

// Helpers outside `#[test]` functions panic too: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apns_standin::{Failure, StandIn, StandInConfig};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "com.example.app";
const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const WAIT: Duration = Duration::from_secs(10);

struct TestApp {
    standin: StandIn,
    key: SigningKey,
    jwt: String,
}

struct Client {
    send: SendRequest<Bytes>,
    connection: JoinHandle<Result<(), h2::Error>>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn sign_jwt(key: &SigningKey, kid: &str, iss: &str, iat: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#));
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{iss}","iat":{iat}}}"#));
    let signed = format!("{header}.{claims}");
    let signature: Signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// An HTTP/2 connection that trusts only the stand-in's CA, as the APNs client will.
async fn connect_to(port: u16, ca_pem: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    Client {
        send,
        connection: tokio::spawn(connection),
    }
}

impl TestApp {
    async fn start() -> Self {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let standin = StandIn::start(StandInConfig::new(KEY_ID, TEAM_ID, public_pem))
            .await
            .unwrap();
        let jwt = sign_jwt(&key, KEY_ID, TEAM_ID, now_secs());
        Self { standin, key, jwt }
    }

    async fn connect(&self) -> Client {
        connect_to(self.standin.local_addr().port(), &self.standin.ca_pem()).await
    }

    /// The headers of a valid alert push.
    fn alert_headers(&self) -> Vec<(String, String)> {
        vec![
            ("authorization".into(), format!("bearer {}", self.jwt)),
            ("apns-topic".into(), TOPIC.into()),
            ("apns-push-type".into(), "alert".into()),
            ("apns-priority".into(), "10".into()),
        ]
    }

    fn voip_headers(&self) -> Vec<(String, String)> {
        vec![
            ("authorization".into(), format!("bearer {}", self.jwt)),
            ("apns-topic".into(), format!("{TOPIC}.voip")),
            ("apns-push-type".into(), "voip".into()),
            ("apns-priority".into(), "10".into()),
            ("apns-expiration".into(), "0".into()),
        ]
    }
}

fn with(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.retain(|(n, _)| n != name);
    headers.push((name.into(), value.into()));
    headers
}

fn without(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    headers.retain(|(n, _)| n != name);
    headers
}

const ALERT: &[u8] = br#"{"aps":{"alert":{"title":"Alice","body":"Hello"}}}"#;

impl Client {
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Answer, h2::Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut send = self.send.clone().ready().await?;
        let (response, mut body_tx) =
            send.send_request(request.body(()).unwrap(), body.is_empty())?;
        if !body.is_empty() {
            body_tx.send_data(Bytes::copy_from_slice(body), true)?;
        }
        let response = response.await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            body.flow_control().release_capacity(chunk.len())?;
            bytes.extend_from_slice(&chunk);
        }
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn push(&self, token: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
        self.send("POST", &format!("/3/device/{token}"), headers, body)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn valid_push_is_answered_200_with_its_apns_id_and_recorded() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let headers = with(app.alert_headers(), "apns-id", id);
    let headers = with(headers, "apns-collapse-id", "room-1");

    let answer = client.push(TOKEN, &headers, ALERT).await;

    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["apns-id"], id);
    assert_eq!(answer.body, serde_json::Value::Null);
    let accepted = app.standin.wait_for_accepted(1, WAIT).await;
    assert_eq!(accepted.len(), 1);
    let push = &accepted[0];
    assert_eq!(push.token, TOKEN);
    assert_eq!(push.topic, TOPIC);
    assert_eq!(push.push_type, "alert");
    assert_eq!(push.priority, Some(10));
    assert_eq!(push.apns_id, id);
    assert_eq!(push.collapse_id.as_deref(), Some("room-1"));
    assert_eq!(push.payload["aps"]["alert"]["title"], "Alice");
    assert_eq!(push.jwt, app.jwt);
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    assert_eq!(push.connection, 1);
    let stats = app.standin.stats();
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.distinct_jwts, vec![app.jwt.clone()]);
    assert_eq!(stats.responses.get(&200), Some(&1));
}

#[tokio::test]
async fn push_without_apns_id_gets_a_generated_lowercase_uuid() {
    let app = TestApp::start().await;
    let client = app.connect().await;

    let answer = client.push(TOKEN, &app.alert_headers(), ALERT).await;

    let id = answer.headers["apns-id"].to_str().unwrap();
    assert!(uuid::Uuid::try_parse(id).is_ok(), "{id}");
    assert_eq!(id, id.to_ascii_lowercase());
    assert_eq!(app.standin.wait_for_accepted(1, WAIT).await[0].apns_id, id);
}

#[tokio::test]
async fn provider_token_signed_by_another_key_is_invalid() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let other = SigningKey::random(&mut rand::rngs::OsRng);
    let forged = sign_jwt(&other, KEY_ID, TEAM_ID, now_secs());

    let answer = client
        .push(
            TOKEN,
            &with(
                app.alert_headers(),
                "authorization",
                &format!("bearer {forged}"),
            ),
            ALERT,
        )
        .await;

    assert_eq!(
        (answer.status, answer.reason()),
        (403, "InvalidProviderToken")
    );
    assert!(app.standin.accepted().is_empty());
}

#[tokio::test]
async fn provider_token_with_wrong_kid_or_iss_or_garbage_is_invalid() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let tokens = [
        sign_jwt(&app.key, "WRONGKEYID", TEAM_ID, now_secs()),
        sign_jwt(&app.key, KEY_ID, "WRONGTEAM0", now_secs()),
        // Issued in the future, beyond clock skew.
        sign_jwt(&app.key, KEY_ID, TEAM_ID, now_secs() + 3600),
        "not-a-jwt".to_owned(),
    ];
    for jwt in tokens {
        let headers = with(
            app.alert_headers(),
            "authorization",
            &format!("bearer {jwt}"),
        );
        let answer = client.push(TOKEN, &headers, ALERT).await;
        assert_eq!(
            (answer.status, answer.reason()),
            (403, "InvalidProviderToken"),
            "{jwt}"
        );
    }
    let missing = client
        .push(TOKEN, &without(app.alert_headers(), "authorization"), ALERT)
        .await;
    assert_eq!(
        (missing.status, missing.reason()),
        (403, "MissingProviderToken")
    );
}

#[tokio::test]
async fn provider_token_older_than_an_hour_is_expired() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let old = sign_jwt(&app.key, KEY_ID, TEAM_ID, now_secs() - 3601 - 60);

    let answer = client
        .push(
            TOKEN,
            &with(
                app.alert_headers(),
                "authorization",
                &format!("bearer {old}"),
            ),
            ALERT,
        )
        .await;

    assert_eq!(
        (answer.status, answer.reason()),
        (403, "ExpiredProviderToken")
    );
}

#[tokio::test]
async fn expiring_seen_tokens_forces_a_new_token() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    assert_eq!(
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        200
    );

    app.standin.script().expire_seen_tokens();
    let answer = client.push(TOKEN, &app.alert_headers(), ALERT).await;
    assert_eq!(
        (answer.status, answer.reason()),
        (403, "ExpiredProviderToken")
    );

    let fresh = sign_jwt(&app.key, KEY_ID, TEAM_ID, now_secs() - 1);
    let headers = with(
        app.alert_headers(),
        "authorization",
        &format!("bearer {fresh}"),
    );
    assert_eq!(client.push(TOKEN, &headers, ALERT).await.status, 200);
    assert_eq!(app.standin.stats().distinct_jwts.len(), 2);
}

#[tokio::test]
async fn malformed_requests_get_apples_status_and_reason() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let alert = app.alert_headers();
    // (what, headers, device token, expected status, expected reason)
    type Case<'a> = (&'a str, Vec<(String, String)>, &'a str, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "topic of another app",
            with(alert.clone(), "apns-topic", "com.other.app"),
            TOKEN,
            400,
            "TopicDisallowed",
        ),
        (
            "no topic",
            without(alert.clone(), "apns-topic"),
            TOKEN,
            400,
            "MissingTopic",
        ),
        (
            "voip push to the bare topic",
            with(alert.clone(), "apns-push-type", "voip"),
            TOKEN,
            400,
            "InvalidPushType",
        ),
        (
            "alert push to the voip topic",
            with(alert.clone(), "apns-topic", "com.example.app.voip"),
            TOKEN,
            400,
            "InvalidPushType",
        ),
        (
            "unknown push type",
            with(alert.clone(), "apns-push-type", "shout"),
            TOKEN,
            400,
            "InvalidPushType",
        ),
        (
            "priority 7",
            with(alert.clone(), "apns-priority", "7"),
            TOKEN,
            400,
            "BadPriority",
        ),
        (
            "background at priority 10",
            with(alert.clone(), "apns-push-type", "background"),
            TOKEN,
            400,
            "BadPriority",
        ),
        (
            "expiration not a number",
            with(alert.clone(), "apns-expiration", "soon"),
            TOKEN,
            400,
            "BadExpirationDate",
        ),
        (
            "apns-id not a UUID",
            with(alert.clone(), "apns-id", "1234"),
            TOKEN,
            400,
            "BadMessageId",
        ),
        (
            "collapse id of 65 bytes",
            with(alert.clone(), "apns-collapse-id", &"c".repeat(65)),
            TOKEN,
            400,
            "BadCollapseId",
        ),
        (
            "token not hex",
            alert.clone(),
            "zz-not-a-token-zz",
            400,
            "BadDeviceToken",
        ),
        (
            "token too short",
            alert.clone(),
            "abcd",
            400,
            "BadDeviceToken",
        ),
    ];
    for (what, headers, token, status, reason) in cases {
        let answer = client.push(token, &headers, ALERT).await;
        assert_eq!((answer.status, answer.reason()), (status, reason), "{what}");
        assert!(answer.headers.contains_key("apns-id"), "{what}");
    }

    let mut duplicated = alert.clone();
    duplicated.push(("apns-topic".into(), TOPIC.into()));
    let answer = client.push(TOKEN, &duplicated, ALERT).await;
    assert_eq!((answer.status, answer.reason()), (400, "DuplicateHeaders"));

    let empty = client.push(TOKEN, &alert, b"").await;
    assert_eq!((empty.status, empty.reason()), (400, "PayloadEmpty"));
    let not_object = client.push(TOKEN, &alert, b"[1,2]").await;
    assert_eq!(
        (not_object.status, not_object.reason()),
        (400, "BadPayload")
    );

    let get = client
        .send("GET", &format!("/3/device/{TOKEN}"), &alert, b"")
        .await
        .unwrap();
    assert_eq!((get.status, get.reason()), (405, "MethodNotAllowed"));
    let path = client
        .send("POST", "/2/device/abc", &alert, ALERT)
        .await
        .unwrap();
    assert_eq!((path.status, path.reason()), (404, "BadPath"));
    let no_token = client
        .send("POST", "/3/device/", &alert, ALERT)
        .await
        .unwrap();
    assert_eq!(
        (no_token.status, no_token.reason()),
        (400, "MissingDeviceToken")
    );

    let background = with(
        with(alert, "apns-push-type", "background"),
        "apns-priority",
        "5",
    );
    assert_eq!(
        client
            .push(TOKEN, &background, br#"{"aps":{"content-available":1}}"#)
            .await
            .status,
        200
    );
    assert_eq!(app.standin.stats().accepted, 1);
}

fn payload_of(len: usize) -> Vec<u8> {
    let head = br#"{"aps":{},"pad":""#;
    let mut body = head.to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn voip_payload_may_be_5120_bytes_and_alert_payload_4096() {
    let app = TestApp::start().await;
    let client = app.connect().await;

    assert_eq!(
        client
            .push(TOKEN, &app.alert_headers(), &payload_of(4096))
            .await
            .status,
        200
    );
    let too_big = client
        .push(TOKEN, &app.alert_headers(), &payload_of(4097))
        .await;
    assert_eq!((too_big.status, too_big.reason()), (413, "PayloadTooLarge"));

    assert_eq!(
        client
            .push(TOKEN, &app.voip_headers(), &payload_of(5120))
            .await
            .status,
        200
    );
    let too_big = client
        .push(TOKEN, &app.voip_headers(), &payload_of(5121))
        .await;
    assert_eq!((too_big.status, too_big.reason()), (413, "PayloadTooLarge"));

    let accepted = app.standin.wait_for_accepted(2, WAIT).await;
    assert_eq!(accepted[1].push_type, "voip");
    assert_eq!(accepted[1].topic, "com.example.app.voip");
    assert_eq!(accepted[1].expiration, Some(0));
}

#[tokio::test]
async fn scripted_unregistered_token_gets_410_with_timestamp() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    let dead = "ff".repeat(32);
    app.standin.script().fail_token(
        &dead,
        Failure::Unregistered {
            timestamp_ms: 1_700_000_000_123,
        },
    );

    let answer = client.push(&dead, &app.alert_headers(), ALERT).await;
    assert_eq!((answer.status, answer.reason()), (410, "Unregistered"));
    assert_eq!(answer.body["timestamp"], 1_700_000_000_123_i64);
    assert_eq!(answer.headers["content-type"], "application/json");

    assert_eq!(
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        200
    );
    app.standin.script().reset();
    assert_eq!(
        client.push(&dead, &app.alert_headers(), ALERT).await.status,
        200
    );
}

#[tokio::test]
async fn scripted_rate_fails_that_exact_share_with_429_and_retry_after() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    app.standin.script().fail_rate(429, "TooManyRequests", 0.25);
    app.standin
        .script()
        .retry_after(Some(Duration::from_secs(2)));

    let mut refused = 0;
    for _ in 0..40 {
        let answer = client.push(TOKEN, &app.alert_headers(), ALERT).await;
        if answer.status == 429 {
            refused += 1;
            assert_eq!(answer.reason(), "TooManyRequests");
            assert_eq!(answer.headers["retry-after"], "2");
        } else {
            assert_eq!(answer.status, 200);
        }
    }

    assert_eq!(refused, 10);
    let stats = app.standin.stats();
    assert_eq!(stats.responses.get(&429), Some(&10));
    assert_eq!(stats.reasons.get("TooManyRequests"), Some(&10));
    assert_eq!(stats.accepted, 30);
}

#[tokio::test]
async fn scripted_next_failures_then_success() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    app.standin.script().fail_next(2, 503, "ServiceUnavailable");

    let statuses = [
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
    ];
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn scripted_latency_delays_answers() {
    let app = TestApp::start().await;
    let client = app.connect().await;
    app.standin.script().latency(Duration::from_millis(150));

    let started = Instant::now();
    assert_eq!(
        client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn goaway_after_n_streams_answers_them_and_closes_the_connection() {
    let app = TestApp::start().await;
    app.standin.script().goaway_after(3);
    let client = app.connect().await;

    for _ in 0..3 {
        assert_eq!(
            client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
            200
        );
    }
    // The server closes the connection gracefully; the client's side ends without error.
    let ended = tokio::time::timeout(WAIT, client.connection).await.unwrap();
    assert!(ended.unwrap().is_ok());
    assert_eq!(app.standin.stats().goaways_sent, 1);

    let second = app.connect().await;
    assert_eq!(
        second.push(TOKEN, &app.alert_headers(), ALERT).await.status,
        200
    );
    let accepted = app.standin.wait_for_accepted(4, WAIT).await;
    assert_eq!(
        accepted.iter().map(|p| p.connection).collect::<Vec<_>>(),
        [1, 1, 1, 2]
    );
}

#[tokio::test]
async fn dropped_connection_loses_the_requests_in_flight() {
    let app = TestApp::start().await;
    app.standin.script().drop_connection_after(2);
    let client = app.connect().await;
    for _ in 0..2 {
        assert_eq!(
            client.push(TOKEN, &app.alert_headers(), ALERT).await.status,
            200
        );
    }

    // The third stream closes the connection; with latency the second connection has
    // one stream still waiting for its answer when that happens.
    let lost = client
        .send(
            "POST",
            &format!("/3/device/{TOKEN}"),
            &app.alert_headers(),
            ALERT,
        )
        .await;
    assert!(lost.is_err());

    app.standin.script().latency(Duration::from_millis(300));
    app.standin.script().drop_connection_after(1);
    let second = app.connect().await;
    let path = format!("/3/device/{TOKEN}");
    let headers = app.alert_headers();
    let (in_flight, trigger) = tokio::join!(second.send("POST", &path, &headers, ALERT), async {
        // Start the second stream once the first is with the server.
        let seen = app.standin.stats().requests;
        while app.standin.stats().requests == seen {
            tokio::task::yield_now().await;
        }
        second.send("POST", &path, &headers, ALERT).await
    });
    assert!(in_flight.is_err());
    assert!(trigger.is_err());

    let stats = app.standin.stats();
    assert_eq!(stats.connections_dropped, 2);
    assert_eq!(stats.accepted, 2);
}

#[tokio::test]
async fn thousands_of_concurrent_pushes_share_one_connection_and_one_token() {
    let app = TestApp::start().await;
    let client = Arc::new(app.connect().await);
    let headers = Arc::new(app.alert_headers());
    // One push first, as Apple wants: until the server's SETTINGS arrive the client does
    // not know the stream limit, and streams beyond it are refused (REFUSED_STREAM).
    assert_eq!(client.push(TOKEN, &headers, ALERT).await.status, 200);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3000 {
        let client = Arc::clone(&client);
        let headers = Arc::clone(&headers);
        tasks.spawn(async move { client.push(TOKEN, &headers, ALERT).await.status });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }

    let stats = app.standin.stats();
    assert_eq!(stats.accepted, 3001);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.distinct_jwts.len(), 1);
}

#[tokio::test]
async fn client_without_h2_alpn_is_refused() {
    let app = TestApp::start().await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut app.standin.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(app.standin.local_addr()).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(tls.is_err());
    assert_eq!(app.standin.stats().connections_opened, 0);
}

#[tokio::test]
async fn wait_for_accepted_returns_once_enough_pushes_arrived_or_at_timeout() {
    let app = TestApp::start().await;
    let nothing = app
        .standin
        .wait_for_accepted(1, Duration::from_millis(50))
        .await;
    assert!(nothing.is_empty());

    let client = Arc::new(app.connect().await);
    let headers = Arc::new(app.alert_headers());
    let pushes = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            for _ in 0..5 {
                assert_eq!(client.push(TOKEN, &headers, ALERT).await.status, 200);
            }
        })
    };
    let accepted = app.standin.wait_for_accepted(5, WAIT).await;
    assert_eq!(accepted.len(), 5);
    pushes.await.unwrap();
}

#[tokio::test]
async fn binary_prints_its_url_then_each_push_as_a_json_line() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    use tokio::process::Command;

    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let dir = std::env::temp_dir().join(format!("apns-standin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("AuthKey.p8");
    let ca_file = dir.join("ca.pem");
    std::fs::write(
        &key_file,
        p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apns-standin"))
        .args(["--key-id", KEY_ID, "--team-id", TEAM_ID, "--print-pushes"])
        .arg("--public-key")
        .arg(&key_file)
        .arg("--ca-out")
        .arg(&ca_file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port: u16 = url
        .strip_prefix("https://localhost:")
        .unwrap()
        .parse()
        .unwrap();
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();

    let client = connect_to(port, &ca_pem).await;
    let jwt = sign_jwt(&key, KEY_ID, TEAM_ID, now_secs());
    let headers = vec![
        ("authorization".to_owned(), format!("bearer {jwt}")),
        ("apns-topic".to_owned(), TOPIC.to_owned()),
        ("apns-push-type".to_owned(), "alert".to_owned()),
    ];
    assert_eq!(client.push(TOKEN, &headers, ALERT).await.status, 200);

    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["payload"]["aps"]["alert"]["title"], "Alice");
    assert_eq!(printed["headers"]["apns-topic"], TOPIC);
    assert!(printed["headers"].get("authorization").is_none());
    assert!(!line.contains(TOKEN), "device token printed in full");
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
