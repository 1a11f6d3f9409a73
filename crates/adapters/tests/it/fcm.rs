//! The FCM client against the local FCM stand-in, over TLS and HTTP/2: the service
//! account, one shared access token and its refresh, every outcome class, and the
//! stand-in's own checks of what FCM refuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use fcm_standin::{Failure, FcmStandIn, FcmStandInConfig};
use futures::future::join_all;
use webex_push_adapters::fcm::{FcmClient, FcmConfig, FcmConfigError, ServiceAccount};
use webex_push_domain::{
    AppFlavour, CallId, Caller, Channel, DeviceToken, EventSource, IncomingCall, NewMessage,
    PersonId, Push, PushContent, PushGateway, PushOutcome, PushProvider, RawJson, TestPushGateway,
};

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    standin: FcmStandIn,
    client: FcmClient,
}

async fn fixture() -> Fixture {
    fixture_with(FcmStandInConfig::test()).await
}

async fn fixture_with(config: FcmStandInConfig) -> Fixture {
    let standin = FcmStandIn::start(config).await.unwrap();
    let account =
        ServiceAccount::from_json(&standin.test_service_account_json(), "FCM_SERVICE_ACCOUNT")
            .unwrap();
    let mut config = FcmConfig::new(account)
        .with_endpoint(&standin.url())
        .unwrap();
    config.extra_ca_pem = Some(standin.ca_pem());
    let client = FcmClient::new(config).unwrap();
    Fixture { standin, client }
}

fn person() -> PersonId {
    PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap()
}

fn token(name: &str) -> DeviceToken {
    DeviceToken::parse_fcm(&format!("{name}:APA91bH-fake_{}", "x".repeat(140))).unwrap()
}

fn telephony_push(fcm_payload: &str) -> PushContent {
    PushContent::IncomingCall(Arc::new(IncomingCall {
        call_id: CallId::parse("call-1").unwrap(),
        callee: person(),
        caller: Caller::default(),
        occurred_at: Utc::now(),
        source: EventSource::TelephonyPush,
        sdk_payload: None,
        fcm_payload: Some(RawJson::parse(fcm_payload).unwrap()),
        webhook: None,
        callee_field: None,
        audience: None,
    }))
}

fn message() -> PushContent {
    PushContent::Message(Arc::new(NewMessage {
        message_id: "m-1".into(),
        room_id: "r-1".into(),
        room_type: None,
        recipient: person(),
        sender: None,
        sender_email: None,
        occurred_at: Utc::now(),
        webhook: Some(RawJson::parse(r#"{"resource":"messages","data":{"id":"m-1"}}"#).unwrap()),
    }))
}

fn push(token: DeviceToken, content: PushContent) -> Push {
    Push {
        token,
        channel: Channel::Alert,
        environment: None,
        bundle_id: None,
        flavour: AppFlavour::KitchenSink,
        content,
        deliver_by: Some(Utc::now() + TimeDelta::seconds(30)),
    }
}

#[tokio::test]
async fn a_telephony_push_is_delivered_as_a_high_priority_data_message_with_fcm_payload_intact() {
    let f = fixture().await;
    let fcm = r#"{"pushId": "p-1", "version": 2}"#;
    let outcome = f
        .client
        .send(&push(token("ada"), telephony_push(fcm)))
        .await;
    let PushOutcome::Delivered { id, environment } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(id.starts_with("projects/webex-push-test/messages/"), "{id}");
    assert_eq!(environment, None);
    let accepted = f.standin.wait_for_accepted(1, WAIT).await;
    let sent = &accepted[0];
    assert_eq!(sent.token, token("ada").as_str());
    assert_eq!(sent.priority.as_deref(), Some("HIGH"));
    let ttl = sent.ttl_seconds().unwrap();
    assert!((25..=30).contains(&ttl), "TTL follows the deadline: {ttl}");
    assert_eq!(sent.data["webhookTelephonyPush"], fcm);
    assert_eq!(sent.data["version"], "2");
    assert_eq!(sent.name, id);
}

#[tokio::test]
async fn one_access_token_serves_every_push_on_one_connection() {
    let f = fixture().await;
    let pushes: Vec<Push> = (0..40)
        .map(|i| push(token(&format!("t{i}")), message()))
        .collect();
    let outcomes = join_all(pushes.iter().map(|p| f.client.send(p))).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Delivered { .. })),
        "{outcomes:?}"
    );
    let stats = f.standin.stats();
    assert_eq!(stats.tokens_issued, 1, "{stats:?}");
    assert_eq!(stats.accepted, 40);
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(f.client.access_tokens_minted(), 1);
    let accepted = f.standin.accepted();
    assert!(
        accepted
            .iter()
            .all(|m| m.access_token == accepted[0].access_token)
    );
}

#[tokio::test]
async fn the_access_token_is_replaced_before_it_expires() {
    let mut config = FcmStandInConfig::test();
    // Replaced at half its life when that is shorter than the usual margin: after 1 s.
    config.token_lifetime = Duration::from_secs(2);
    let f = fixture_with(config).await;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    while f.standin.stats().tokens_issued < 2 && started.elapsed() < WAIT {
        outcomes.push(f.client.send(&push(token("ada"), message())).await);
        tokio::task::yield_now().await;
    }
    assert_eq!(f.standin.stats().tokens_issued, 2);
    // Not one push met an expired token.
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Delivered { .. })),
        "{outcomes:?}"
    );
    assert_eq!(f.standin.stats().responses.get(&401), None);
}

#[tokio::test]
async fn an_expired_access_token_is_replaced_once_and_the_push_delivered() {
    let f = fixture().await;
    assert!(matches!(
        f.client.send(&push(token("ada"), message())).await,
        PushOutcome::Delivered { .. }
    ));
    f.standin.expire_access_tokens();
    let outcome = f.client.send(&push(token("ada"), message())).await;
    assert!(
        matches!(outcome, PushOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    let stats = f.standin.stats();
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.responses.get(&401), Some(&1));
}

#[tokio::test]
async fn every_fcm_answer_lands_in_its_outcome_class() {
    let f = fixture().await;
    let script = f.standin.script();
    script.fail_prefix("gone", Failure::Unregistered);
    script.fail_prefix("garbled", Failure::InvalidToken);
    script.fail_prefix("other-project", Failure::SenderIdMismatch);
    script.fail_prefix("busy", Failure::QuotaExceeded);
    script.fail_prefix("down", Failure::Unavailable);
    script.fail_prefix("broken", Failure::Internal);
    script.fail_prefix("ios-creds", Failure::ThirdPartyAuthError);
    script.set_retry_after(Some(3));
    let send = |name: &str| {
        let push = push(token(name), message());
        let client = f.client.clone();
        async move { client.send_detailed(&push).await }
    };

    let gone = send("gone").await;
    assert!(
        matches!(&gone.outcome, PushOutcome::TokenInvalid { reason, .. } if reason == "UNREGISTERED"),
        "{gone:?}"
    );
    assert_eq!(gone.status, Some(404));
    let garbled = send("garbled").await;
    assert!(
        matches!(&garbled.outcome, PushOutcome::TokenInvalid { reason, .. } if reason == "INVALID_ARGUMENT"),
        "{garbled:?}"
    );
    for (name, reason) in [
        ("other-project", "SENDER_ID_MISMATCH"),
        ("ios-creds", "THIRD_PARTY_AUTH_ERROR"),
    ] {
        let answer = send(name).await;
        assert_eq!(
            answer.outcome,
            PushOutcome::Rejected {
                reason: reason.into()
            },
            "{answer:?}"
        );
    }
    for (name, reason, after) in [
        ("busy", "QUOTA_EXCEEDED", Some(Duration::from_secs(3))),
        ("down", "UNAVAILABLE", Some(Duration::from_secs(3))),
        ("broken", "INTERNAL", None),
    ] {
        let answer = send(name).await;
        assert_eq!(
            answer.outcome,
            PushOutcome::Retry {
                reason: reason.into(),
                after
            },
            "{answer:?}"
        );
    }
    assert_eq!(f.standin.stats().accepted, 0);
}

#[tokio::test]
async fn a_test_push_answers_with_fcms_message_name_or_its_error_code() {
    let f = fixture().await;
    f.standin
        .script()
        .fail_prefix("gone", Failure::Unregistered);

    let delivered = TestPushGateway::send_detailed(&f.client, &push(token("ada"), message())).await;
    assert_eq!(delivered.provider, PushProvider::Fcm);
    assert_eq!(delivered.status, Some(200));
    assert!(
        delivered
            .id
            .starts_with("projects/webex-push-test/messages/"),
        "{delivered:?}"
    );
    assert_eq!(delivered.environment, None);
    assert_eq!(delivered.outcome.label(), "delivered");
    let accepted = f.standin.wait_for_accepted(1, WAIT).await;
    assert_eq!(accepted[0].name, delivered.id);

    let gone = TestPushGateway::send_detailed(&f.client, &push(token("gone"), message())).await;
    assert_eq!(gone.status, Some(404));
    assert_eq!(gone.reason.as_deref(), Some("UNREGISTERED"));
    assert_eq!(gone.id, "", "FCM did not take it");
    assert_eq!(gone.outcome.label(), "UNREGISTERED");
}

#[tokio::test]
async fn a_refused_service_account_is_a_configuration_error_and_nothing_is_sent() {
    let f = fixture().await;
    f.standin.script().refuse_assertions(true);
    let answer = f.client.send_detailed(&push(token("ada"), message())).await;
    assert_eq!(
        answer.outcome,
        PushOutcome::Rejected {
            reason: "ServiceAccountRefused".into()
        }
    );
    assert!(answer.message.unwrap().contains("invalid_grant"));
    assert!(f.client.warm_up().await.is_err());
    assert_eq!(f.standin.stats().requests, 0);
}

#[tokio::test]
async fn an_apns_token_is_never_sent_to_fcm() {
    let f = fixture().await;
    let apns = DeviceToken::parse(&"ab".repeat(32)).unwrap();
    assert_eq!(
        f.client.send(&push(apns, message())).await,
        PushOutcome::Rejected {
            reason: "NotAnFcmToken".into()
        }
    );
    assert_eq!(f.standin.stats().requests, 0);
}

#[tokio::test]
async fn an_fcm_payload_over_the_data_limit_is_not_sent() {
    let f = fixture().await;
    let huge = format!(r#"{{"blob": "{}"}}"#, "x".repeat(5000));
    assert_eq!(
        f.client
            .send(&push(token("ada"), telephony_push(&huge)))
            .await,
        PushOutcome::Rejected {
            reason: "PayloadTooLarge".into()
        }
    );
    assert_eq!(f.standin.stats().requests, 0);
}

/// A raw `messages:send` with a valid access token, for the stand-in's own checks.
async fn raw_send(f: &Fixture, body: serde_json::Value) -> (u16, serde_json::Value) {
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(f.standin.ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    // An access token fetched the way the client fetches one.
    let account: serde_json::Value =
        serde_json::from_str(&f.standin.test_service_account_json()).unwrap();
    let now = Utc::now().timestamp() as u64;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({
            "iss": account["client_email"], "aud": f.standin.token_uri(),
            "scope": fcm_standin::FCM_SCOPE, "iat": now, "exp": now + 600,
        }),
        &jsonwebtoken::EncodingKey::from_rsa_pem(fcm_standin::TEST_PRIVATE_KEY_PEM.as_bytes())
            .unwrap(),
    )
    .unwrap();
    let grant: serde_json::Value = http
        .post(f.standin.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .post(format!(
            "{}/v1/projects/{}/messages:send",
            f.standin.url(),
            fcm_standin::TEST_PROJECT_ID
        ))
        .bearer_auth(grant["access_token"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_stand_in_refuses_what_fcm_refuses() {
    let f = fixture().await;
    let (status, error) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "data": {"n": 1}}}),
    )
    .await;
    assert_eq!(status, 400, "non-string data: {error}");
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    let big = "x".repeat(4097);
    let (status, _) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "data": {"k": big}}}),
    )
    .await;
    assert_eq!(status, 400, "over 4096 bytes");
    let (status, _) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "data": {"google.x": "v"}}}),
    )
    .await;
    assert_eq!(status, 400, "reserved key");
    let (status, _) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "android": {"ttl": "60"}}}),
    )
    .await;
    assert_eq!(status, 400, "a TTL is a duration in seconds");
    let (status, _) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "bogus": 1}}),
    )
    .await;
    assert_eq!(status, 400, "unknown field");
    let (status, _) = raw_send(
        &f,
        serde_json::json!({"message": {"token": "t", "data": {"k": "v"}, "android": {"priority": "HIGH", "ttl": "3.5s"}}}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_wrong_key_or_no_token_gets_nothing_from_the_stand_in() {
    let f = fixture().await;
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(f.standin.ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let response = http
        .post(format!(
            "{}/v1/projects/{}/messages:send",
            f.standin.url(),
            fcm_standin::TEST_PROJECT_ID
        ))
        .json(&serde_json::json!({"message": {"token": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // An assertion signed with another key.
    let now = Utc::now().timestamp() as u64;
    let other_key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIG38nnUcz5x4Y8HkIXLRrZtOJ32THPMhzzQWt2+SC/7D\n-----END PRIVATE KEY-----\n";
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({"iss": fcm_standin::TEST_CLIENT_EMAIL, "aud": f.standin.token_uri(),
            "scope": fcm_standin::FCM_SCOPE, "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_ed_pem(other_key.as_bytes()).unwrap(),
    )
    .unwrap();
    let response = http
        .post(f.standin.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", forged.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(f.standin.stats().tokens_issued, 0);
}

#[test]
fn the_service_account_is_read_as_json_base64_or_a_file_and_errors_name_the_variable() {
    let json = fcm_standin::offline_service_account_json(
        "p",
        "a@p.iam.gserviceaccount.com",
        "https://oauth2.googleapis.com/token",
    );
    let account = ServiceAccount::from_env_text(&json).unwrap();
    assert_eq!(account.project_id(), "p");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&json);
    assert_eq!(
        ServiceAccount::from_env_text(&encoded)
            .unwrap()
            .client_email(),
        "a@p.iam.gserviceaccount.com"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &json).unwrap();
    assert_eq!(
        ServiceAccount::from_file(file.path()).unwrap().project_id(),
        "p"
    );
    // Debug never shows the key.
    assert!(!format!("{account:?}").contains("PRIVATE"));

    let error = ServiceAccount::from_env_text("not json at all").unwrap_err();
    assert!(
        error.to_string().starts_with("FCM_SERVICE_ACCOUNT:"),
        "{error}"
    );
    let no_key = json.replace("private_key", "private_key_missing");
    assert!(matches!(
        ServiceAccount::from_env_text(&no_key).unwrap_err(),
        FcmConfigError::MissingField {
            field: "private_key",
            ..
        }
    ));
    let wrong_type = json.replace("service_account", "authorized_user");
    assert!(matches!(
        ServiceAccount::from_env_text(&wrong_type).unwrap_err(),
        FcmConfigError::NotServiceAccount { .. }
    ));
    let bad_key = serde_json::json!({
        "type": "service_account", "project_id": "p", "client_email": "a@p",
        "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    assert!(matches!(
        ServiceAccount::from_env_text(&bad_key).unwrap_err(),
        FcmConfigError::Key { .. }
    ));
    let missing = ServiceAccount::from_file("/nonexistent/sa.json").unwrap_err();
    assert!(
        missing.to_string().starts_with("FCM_SERVICE_ACCOUNT_FILE:"),
        "{missing}"
    );
    assert!(FcmConfig::new(account).with_endpoint("ftp://x").is_err());
}

#[tokio::test]
async fn a_connection_silently_dropped_on_the_way_is_abandoned_at_the_first_unanswered_push() {
    let standin = FcmStandIn::start(FcmStandInConfig::test()).await.unwrap();
    // Only the messages go through the proxy; the token endpoint is reached directly.
    let proxy = apns_standin::FaultProxy::start(standin.local_addr())
        .await
        .unwrap();
    let account =
        ServiceAccount::from_json(&standin.test_service_account_json(), "FCM_SERVICE_ACCOUNT")
            .unwrap();
    let mut config = FcmConfig::new(account).with_endpoint(&proxy.url()).unwrap();
    config.extra_ca_pem = Some(standin.ca_pem());
    config.request_timeout = Duration::from_secs(2);
    let client = FcmClient::new(config).unwrap();
    let first = client.send(&push(token("ada"), message())).await;
    assert!(matches!(first, PushOutcome::Delivered { .. }), "{first:?}");
    assert_eq!(proxy.connections(), 1);

    // A NAT forgets the flow: nothing is refused, nothing comes back.
    assert_eq!(proxy.blackhole_live(), 1);
    let since = Instant::now();
    let lost = client.send(&push(token("bob"), message())).await;
    assert!(
        matches!(&lost, PushOutcome::Retry { reason, .. } if reason == "Timeout"),
        "{lost:?}"
    );
    // The next push goes to a new connection instead of the dead one.
    let again = client.send(&push(token("bob"), message())).await;
    assert!(matches!(again, PushOutcome::Delivered { .. }), "{again:?}");
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "delivered again after {took:?}"
    );
    assert_eq!(proxy.connections(), 2);
    assert!(matches!(
        client.send(&push(token("cy"), message())).await,
        PushOutcome::Delivered { .. }
    ));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(standin.wait_for_accepted(3, WAIT).await.len(), 3);
}
