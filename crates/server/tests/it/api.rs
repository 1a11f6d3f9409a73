//! The HTTP API through the real actix app on a bound port, with the domain's mock
//! store and a recording stand-in for the IncomingCall port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use webex_push::rate_limit::{RateLimit, parse_trusted_proxies};
use webex_push::{Application, Config, Dependencies};
use webex_push_adapters::apns::ApnsAnswer;
use webex_push_adapters::fcm::{FcmConfig, ServiceAccount};
use webex_push_adapters::identity::{WebexIdentity, WebexIdentityConfig};
use webex_push_adapters::persistence::DatabaseConfig;
use webex_push_adapters::webex::sign;
use webex_push_domain::ports::{MockRegistrationPort, MockTestPushGateway};
use webex_push_domain::{
    ApnsEnvironment, AppFlavour, CallEnded, Claim, DeliveryReport, Event, IdentityPort,
    IncomingCall, IncomingCallPort, Job, NewMessage, NotifyError, PersonId, StoreError,
};
use webex_push_domain::{
    Channel, Device, DeviceToken, Push, PushContent, PushOutcome, PushProvider, TestAnswer,
    TestPushGateway,
};

use crate::common::*;

fn voip_token() -> String {
    token("a1")
}

fn msg_token() -> String {
    token("b2")
}

/// What the recording notifier saw.
#[derive(Debug)]
enum Relayed {
    Ring(IncomingCall),
    Ended(CallEnded),
    Message(NewMessage),
}

/// The IncomingCall port, recording each event; with a gate, each call waits for a
/// permit, so a test can hold the workers busy.
struct RecordingNotifier {
    seen: mpsc::UnboundedSender<Relayed>,
    started: mpsc::UnboundedSender<()>,
    gate: Option<Arc<Semaphore>>,
}

impl RecordingNotifier {
    async fn pass(&self, event: Relayed) -> Result<DeliveryReport, NotifyError> {
        let _ = self.started.send(());
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let _ = self.seen.send(event);
        Ok(DeliveryReport::default())
    }
}

#[async_trait]
impl IncomingCallPort for RecordingNotifier {
    async fn accept(&self, _: &Job) -> Result<Claim, NotifyError> {
        Ok(Claim::Devices(Vec::new()))
    }
    async fn relay(&self, job: Job, _: Option<Vec<Device>>) -> Result<DeliveryReport, NotifyError> {
        self.pass(match job.event {
            Event::Ring(call) => Relayed::Ring(call),
            Event::CallEnded(ended) => Relayed::Ended(ended),
            Event::Message(message) => Relayed::Message(message),
        })
        .await
    }
    async fn take_over(&self, _: usize) -> Result<(Vec<Job>, u64), NotifyError> {
        Ok((Vec::new(), 0))
    }
}

struct TestApp {
    base: String,
    http: reqwest::Client,
    relayed: mpsc::UnboundedReceiver<Relayed>,
    started: mpsc::UnboundedReceiver<()>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

struct Options {
    store: MockRegistrationPort,
    apns: bool,
    secrets: Vec<&'static str>,
    gate: Option<Arc<Semaphore>>,
    queue_capacity: usize,
    queue_wait: Duration,
    workers: usize,
    admin_token: Option<&'static str>,
    identity: Option<Arc<dyn IdentityPort>>,
    test_pushes: Option<Arc<dyn TestPushGateway>>,
    register_rate: Option<RateLimit>,
    trusted_proxies: Vec<ipnet::IpNet>,
    /// A service account loaded (pointing at no stand-in: nothing is sent here).
    fcm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            store: MockRegistrationPort::new(),
            apns: true,
            secrets: Vec::new(),
            gate: None,
            queue_capacity: 64,
            queue_wait: Duration::from_millis(100),
            workers: 2,
            admin_token: None,
            identity: None,
            test_pushes: None,
            register_rate: None,
            trusted_proxies: Vec::new(),
            fcm: false,
        }
    }
}

impl TestApp {
    async fn spawn(mut options: Options) -> Self {
        // After any expectation the test set (mockall matches in FIFO order): a
        // registration within the device limit removes nothing.
        options
            .store
            .expect_trim_devices()
            .returning(|_, _, _| Ok(Vec::new()));
        let mut config = Config::new(DatabaseConfig::default());
        config.register_limits.rate = options.register_rate;
        config.register_limits.trusted_proxies = options.trusted_proxies.clone();
        config.webhook_secrets = options
            .secrets
            .iter()
            .map(|s| secrecy::SecretString::from(*s))
            .collect();
        config.queue.capacity = options.queue_capacity;
        config.queue.workers = options.workers;
        config.queue.wait = options.queue_wait;
        config.http.shutdown_timeout = Duration::from_secs(5);
        if options.fcm {
            let account = fcm_standin::offline_service_account_json(
                "p",
                "push@p.iam.gserviceaccount.com",
                "https://localhost:9/token",
            );
            let account = ServiceAccount::from_json(&account, "test").unwrap();
            config.fcm = Some(
                FcmConfig::new(account)
                    .with_endpoint("https://localhost:9")
                    .unwrap(),
            );
        }
        config.admin_token = options
            .admin_token
            .map(|t| secrecy::SecretString::from(t.to_owned()));
        let (seen, relayed) = mpsc::unbounded_channel();
        let (started_tx, started) = mpsc::unbounded_channel();
        let notifier: Option<Arc<dyn IncomingCallPort>> = options.apns.then(|| {
            Arc::new(RecordingNotifier {
                seen,
                started: started_tx,
                gate: options.gate.clone(),
            }) as Arc<dyn IncomingCallPort>
        });
        let app = Application::build_with(
            &config,
            Dependencies {
                identity: options.identity,
                test_pushes: options.test_pushes,
                ..Dependencies::new(Arc::new(options.store), notifier)
            },
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            relayed,
            started,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn webhook(&self, body: &Value, signature: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(signature) = signature {
            request = request.header("X-Spark-Signature", signature);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn next_relayed(&mut self) -> Relayed {
        tokio::time::timeout(WAIT, self.relayed.recv())
            .await
            .expect("an event should have been relayed")
            .unwrap()
    }

    /// Stops the server as SIGTERM would and waits until it has drained.
    async fn stop(&mut self) {
        // Idle keep-alive connections would hold the graceful stop until its timeout.
        self.http = reqwest::Client::new();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.server.take().unwrap())
            .await
            .expect("the server should stop in time")
            .unwrap()
            .unwrap();
    }

    /// Nothing was relayed, checked after the server has stopped and drained.
    async fn assert_nothing_relayed(mut self) {
        self.stop().await;
        if let Ok(event) = self.relayed.try_recv() {
            panic!("nothing should have been relayed, got {event:?}");
        }
    }
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_problem(response, status, None).await
}

fn original_registration() -> Value {
    registration(&webex_id(PERSON), &voip_token(), &msg_token())
}

#[tokio::test]
async fn the_original_registration_body_is_stored_and_answered_204() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_register()
        .withf(|registration, _| {
            registration.person == PersonId::parse(PERSON).unwrap()
                && registration.voip_token.as_ref().map(|t| t.as_str())
                    == Some(voip_token().as_str())
                && registration.alert_token.as_str() == msg_token()
                && registration.email.as_ref().unwrap().as_str() == "ada@example.com"
                && registration.environment.is_none()
                && registration.bundle_id.is_none()
                && registration.flavour == AppFlavour::Seed
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    let response = app.post_json("/register", &original_registration()).await;
    assert_eq!(response.status().as_u16(), 204);
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn registrations_past_the_rate_of_a_client_address_are_429_with_retry_after() {
    let mut store = MockRegistrationPort::new();
    store.expect_register().times(3).returning(|_, _| Ok(()));
    store.expect_unregister().times(0);
    let app = TestApp::spawn(Options {
        store,
        register_rate: Some(RateLimit { per_minute: 3 }),
        // Loopback is a trusted proxy here: X-Forwarded-For names the client.
        trusted_proxies: parse_trusted_proxies("127.0.0.1").unwrap(),
        ..Options::default()
    })
    .await;
    let register_from = |client: &'static str| {
        app.http
            .post(format!("{}/register", app.base))
            .header("x-forwarded-for", client)
            .json(&original_registration())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(register_from("198.51.100.7").await.unwrap().status(), 204);
    }
    let refused = register_from("198.51.100.7").await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    let body = problem(refused, 429).await;
    assert!(
        body["type"].as_str().unwrap().ends_with("#rate-limited"),
        "{body}"
    );
    // Unregistering counts against the same budget, before the store is asked.
    let response = app
        .http
        .delete(format!("{}/register/{}", app.base, voip_token()))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("webex_push_registrations_rate_limited_total 2"),
        "{metrics}"
    );
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_budget() {
    let mut store = MockRegistrationPort::new();
    store.expect_register().times(2).returning(|_, _| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        register_rate: Some(RateLimit { per_minute: 2 }),
        ..Options::default()
    })
    .await;
    for (n, expected) in [(1, 204), (2, 204), (3, 429), (4, 429)] {
        let response = app
            .http
            .post(format!("{}/register", app.base))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .json(&original_registration())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "request {n}");
    }
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn devices_evicted_by_the_limit_per_person_are_counted() {
    let mut store = MockRegistrationPort::new();
    store.expect_register().times(1).returning(|_, _| Ok(()));
    store
        .expect_trim_devices()
        .withf(|_, channel, keep| *channel == Channel::Voip && *keep == 10)
        .times(1)
        .returning(|_, _, _| Ok(vec![DeviceToken::parse(&"e".repeat(64)).unwrap()]));
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    let response = app.post_json("/register", &original_registration()).await;
    assert_eq!(response.status(), 204);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("webex_push_devices_evicted_total 1"),
        "{metrics}"
    );
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn optional_environment_and_bundle_id_are_stored() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_register()
        .withf(|registration, _| {
            registration.environment == Some(ApnsEnvironment::Sandbox)
                && registration.bundle_id.as_ref().map(|b| b.as_str()) == Some("com.example.app")
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    let mut body = original_registration();
    body["environment"] = json!("sandbox");
    body["bundleId"] = json!("com.example.app");
    body["someFieldAppsAdd"] = json!(true);
    assert_eq!(
        app.post_json("/register", &body).await.status().as_u16(),
        204
    );
}

#[tokio::test]
async fn registration_with_missing_or_bad_fields_is_400_naming_each_field_and_rule() {
    let app = TestApp::spawn(Options::default()).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            {
                let mut b = original_registration();
                b.as_object_mut().unwrap().remove("voipToken");
                b
            },
            "voipToken",
            "required",
        ),
        (
            {
                let mut b = original_registration();
                b["msgToken"] = json!("not-a-token");
                b
            },
            "msgToken",
            "hex",
        ),
        (
            {
                let mut b = original_registration();
                b["voipToken"] = json!("ab12");
                b
            },
            "voipToken",
            "min-length",
        ),
        (
            {
                let mut b = original_registration();
                b["personId"] = json!(b64(&format!("ciscospark://us/ROOM/{PERSON}")));
                b
            },
            "personId",
            "webex-person-id",
        ),
        (
            {
                let mut b = original_registration();
                b["email"] = json!("not an email");
                b
            },
            "email",
            "email",
        ),
        (
            {
                let mut b = original_registration();
                b["voipToken"] = json!(42);
                b
            },
            "voipToken",
            "string",
        ),
        (
            {
                let mut b = original_registration();
                b["environment"] = json!("staging");
                b
            },
            "environment",
            "one-of",
        ),
        (
            {
                let mut b = original_registration();
                b["msgToken"] = json!(voip_token().to_uppercase());
                b
            },
            "msgToken",
            "distinct",
        ),
    ];
    for (body, field, rule) in cases {
        let body = problem(app.post_json("/register", &body).await, 400).await;
        assert_eq!(body["field"], field, "{body}");
        assert_eq!(body["rule"], rule, "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
        assert!(body["type"].as_str().unwrap().ends_with("#validation"));
    }
}

#[tokio::test]
async fn every_bad_field_is_reported_at_once() {
    let app = TestApp::spawn(Options::default()).await;
    let body = problem(app.post_json("/register", &json!({})).await, 400).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "voipToken", "msgToken", "personId"]);
}

/// KitchenSink Android's body: one FCM registration token.
const FCM_TOKEN: &str = "dGVzdC1hbmRyb2lk:APA91bH-Xy_Z0123456789abcdefABCDEF";

#[tokio::test]
async fn with_fcm_configured_androids_body_is_stored_as_one_fcm_token() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_register()
        .withf(|registration, _| {
            registration.person == PersonId::parse(PERSON).unwrap()
                && registration.voip_token.is_none()
                && registration.alert_token.as_str() == FCM_TOKEN
                && registration.alert_token.provider() == PushProvider::Fcm
                && registration.environment.is_none()
                && registration.flavour == AppFlavour::KitchenSink
        })
        .times(1)
        .returning(|_, _| Ok(()));
    store
        .expect_unregister()
        .withf(|token| token.as_str() == FCM_TOKEN && token.provider() == PushProvider::Fcm)
        .times(1)
        .returning(|_| Ok(true));
    let app = TestApp::spawn(Options {
        store,
        fcm: true,
        ..Options::default()
    })
    .await;
    let android = android_registration(PERSON, FCM_TOKEN);
    assert_eq!(app.post_json("/register", &android).await.status(), 204);

    // Validated at the edge: printable ASCII, bounded, but not hex.
    for (token, rule) in [
        ("with space", "printable-ascii"),
        ("", "required"),
        (&"a".repeat(4097) as &str, "max-length"),
    ] {
        let body = android_registration(PERSON, token);
        let body = problem(app.post_json("/register", &body).await, 400).await;
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{body}");
        assert_eq!(errors[0]["field"], "deviceToken");
        assert_eq!(errors[0]["rule"], rule, "{body}");
    }
    let response = app
        .http
        .delete(format!("{}/register/{FCM_TOKEN}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

/// KitchenSink's registration of the usual tokens.
fn kitchensink() -> Value {
    kitchensink_registration(PERSON, &voip_token(), &msg_token())
}

#[tokio::test]
async fn kitchensinks_registration_body_is_stored_as_a_kitchensink_device() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_register()
        .withf(|registration, _| {
            registration.person == PersonId::parse(PERSON).unwrap()
                && registration.voip_token.as_ref().map(|t| t.as_str())
                    == Some(voip_token().as_str())
                && registration.alert_token.as_str() == msg_token()
                && registration.email.is_none()
                && registration.environment == Some(ApnsEnvironment::Sandbox)
                && registration.flavour == AppFlavour::KitchenSink
        })
        .times(1)
        .returning(|_, _| Ok(()));
    store
        .expect_register()
        .withf(|registration, _| {
            registration.environment == Some(ApnsEnvironment::Production)
                && registration.flavour == AppFlavour::KitchenSink
        })
        .times(1)
        .returning(|_, _| Ok(()));
    store
        .expect_register()
        .withf(|registration, _| {
            registration.environment.is_none() && registration.flavour == AppFlavour::KitchenSink
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    let response = app.post_json("/register", &kitchensink()).await;
    assert_eq!(response.status().as_u16(), 204);
    let mut production = kitchensink();
    production["prod"] = json!(true);
    assert_eq!(app.post_json("/register", &production).await.status(), 204);
    // `prod` and even `pushProvider` may be left out: the tokens' environment is then
    // found by trying (as for the seed's body).
    let mut unknown = kitchensink();
    unknown.as_object_mut().unwrap().remove("prod");
    unknown.as_object_mut().unwrap().remove("pushProvider");
    assert_eq!(app.post_json("/register", &unknown).await.status(), 204);
}

#[tokio::test]
async fn a_bad_kitchensink_body_is_400_naming_every_field_and_android_is_refused_clearly() {
    let app = TestApp::spawn(Options::default()).await;
    let body = problem(
        app.post_json(
            "/register",
            &json!({"pushProvider": "APNS", "voipToken": "xyz", "prod": "yes"}),
        )
        .await,
        400,
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["voipToken", "deviceToken", "userId", "prod"],
        "{body}"
    );

    // Android's body: one clear error, not a list of APNs fields it never has.
    let android = json!({
        "pushProvider": "FCM",
        "deviceToken": "fcm-registration-token:APA91b",
        "userId": PERSON,
    });
    let body = problem(app.post_json("/register", &android).await, 400).await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["field"], "pushProvider");
    assert_eq!(errors[0]["rule"], "supported");
    assert!(
        errors[0]["detail"].as_str().unwrap().contains("FCM"),
        "{body}"
    );

    let other = json!({"pushProvider": "HMS", "userId": "not-a-person"});
    let body = problem(app.post_json("/register", &other).await, 400).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["pushProvider", "userId"], "{body}");
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn malformed_json_wrong_type_and_oversized_bodies_are_refused() {
    let app = TestApp::spawn(Options::default()).await;
    let response = app
        .http
        .post(format!("{}/register", app.base))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert!(body["type"].as_str().unwrap().ends_with("#malformed-json"));

    let response = app
        .http
        .post(format!("{}/register", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a@b")
        .send()
        .await
        .unwrap();
    problem(response, 415).await;

    let mut huge = original_registration();
    huge["padding"] = json!("x".repeat(20 * 1024));
    problem(app.post_json("/register", &huge).await, 413).await;
}

#[tokio::test]
async fn a_store_outage_is_503_with_retry_after_and_no_internals() {
    let mut store = MockRegistrationPort::new();
    store.expect_register().returning(|_, _| {
        Err(StoreError::Unavailable(
            "connection refused to db-internal.example:5432".into(),
        ))
    });
    store.expect_unregister().returning(|_| {
        Err(StoreError::Unknown(
            "relation devices_secret_internal does not exist".into(),
        ))
    });
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    let response = app.post_json("/register", &original_registration()).await;
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, 503).await;
    assert!(!body.to_string().contains("db-internal"), "{body}");

    let response = app
        .http
        .delete(format!("{}/register/{}", app.base, voip_token()))
        .send()
        .await
        .unwrap();
    let body = problem(response, 500).await;
    assert!(
        !body.to_string().contains("devices_secret_internal"),
        "{body}"
    );
}

#[tokio::test]
async fn unregistering_is_idempotent_and_a_malformed_token_is_400() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_unregister()
        .withf(|token| token.as_str() == voip_token())
        .times(2)
        .returning({
            let mut first = true;
            move |_| Ok(std::mem::replace(&mut first, false))
        });
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let response = app
            .http
            .delete(format!(
                "{}/register/{}",
                app.base,
                voip_token().to_uppercase()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
    }
    let response = app
        .http
        .delete(format!("{}/register/not-hex", app.base))
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert_eq!(body["field"], "token");
    assert_eq!(body["rule"], "hex");
}

/// `callee`'s own webhook ringing them for `call-1`.
fn notified(callee: &str) -> Value {
    ring_of(callee, "call-1", callee)
}

#[tokio::test]
async fn a_signed_webhook_is_queued_and_relayed() {
    let mut app = TestApp::spawn(Options {
        secrets: vec!["old", "s3cret"],
        ..Options::default()
    })
    .await;
    let body = notified(PERSON);
    let signature = sign("s3cret", body.to_string().as_bytes());
    let response = app.webhook(&body, Some(signature)).await;
    assert_eq!(response.status().as_u16(), 204);
    let Relayed::Ring(call) = app.next_relayed().await else {
        panic!("expected a ring");
    };
    assert_eq!(call.callee, PersonId::parse(PERSON).unwrap());
    assert_eq!(call.call_id.as_str(), "call-1");
}

#[tokio::test]
async fn webhook_with_bad_or_missing_signature_is_rejected_and_nothing_is_pushed() {
    let app = TestApp::spawn(Options {
        secrets: vec!["s3cret"],
        ..Options::default()
    })
    .await;
    let body = notified(PERSON);
    let forged = sign("guess", body.to_string().as_bytes());
    for signature in [None, Some(forged), Some("zz".into())] {
        let problem = problem(app.webhook(&body, signature).await, 401).await;
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with("#invalid-signature")
        );
    }
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn each_resource_reaches_the_right_use_case() {
    let mut app = TestApp::spawn(Options::default()).await;
    let mut ended = notified(PERSON);
    ended["data"]["state"] = json!("declined");
    assert_eq!(app.webhook(&ended, None).await.status().as_u16(), 204);
    assert!(matches!(app.next_relayed().await, Relayed::Ended(e) if !e.answered_elsewhere));

    let message = message(PERSON, CALLER, "caller@example.com");
    assert_eq!(app.webhook(&message, None).await.status().as_u16(), 204);
    let Relayed::Message(message) = app.next_relayed().await else {
        panic!("expected a message");
    };
    assert_eq!(message.recipient, PersonId::parse(PERSON).unwrap());
}

#[tokio::test]
async fn uninteresting_events_are_acknowledged_and_malformed_ones_refused() {
    let app = TestApp::spawn(Options::default()).await;
    let rooms = json!({"resource": "rooms", "event": "created", "data": {"id": "x"}});
    assert_eq!(app.webhook(&rooms, None).await.status().as_u16(), 204);

    let response = app
        .http
        .post(format!("{}/webhook", app.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("#malformed-webhook")
    );

    let mut no_person = notified(PERSON);
    no_person["data"]
        .as_object_mut()
        .unwrap()
        .remove("personId");
    let body = problem(app.webhook(&no_person, None).await, 400).await;
    assert_eq!(body["field"], "data.personId");

    let huge = json!({"resource": "rooms", "event": "created", "pad": "x".repeat(300 * 1024)});
    problem(app.webhook(&huge, None).await, 413).await;
    app.assert_nothing_relayed().await;
}

#[tokio::test]
async fn a_full_push_queue_answers_503_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let mut app = TestApp::spawn(Options {
        gate: Some(Arc::clone(&gate)),
        queue_capacity: 1,
        workers: 1,
        ..Options::default()
    })
    .await;
    // The only worker takes the first event and waits at the gate ...
    assert_eq!(
        app.webhook(&notified(PERSON), None).await.status().as_u16(),
        204
    );
    tokio::time::timeout(WAIT, app.started.recv())
        .await
        .unwrap();
    // ... the second fills the queue ...
    assert_eq!(
        app.webhook(&notified(CALLER), None).await.status().as_u16(),
        204
    );
    // ... and the third finds no room.
    let response = app.webhook(&notified(PERSON), None).await;
    assert_eq!(response.headers()["retry-after"], "2");
    let body = problem(response, 503).await;
    assert!(body["type"].as_str().unwrap().ends_with("#queue-full"));
    gate.add_permits(10);
    app.next_relayed().await;
    app.next_relayed().await;
}

#[tokio::test]
async fn shutdown_drains_the_queued_events_before_returning() {
    let gate = Arc::new(Semaphore::new(0));
    let mut app = TestApp::spawn(Options {
        gate: Some(Arc::clone(&gate)),
        queue_capacity: 8,
        workers: 1,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.webhook(&notified(PERSON), None).await.status().as_u16(),
            204
        );
    }
    tokio::time::timeout(WAIT, app.started.recv())
        .await
        .unwrap();
    gate.add_permits(3);
    app.stop().await;
    let mut relayed = 0;
    while app.relayed.try_recv().is_ok() {
        relayed += 1;
    }
    assert_eq!(
        relayed, 3,
        "every queued event is relayed before the server stops"
    );
}

#[tokio::test]
async fn without_an_apns_key_registrations_work_but_pushes_and_readiness_are_refused() {
    let mut store = MockRegistrationPort::new();
    store.expect_register().returning(|_, _| Ok(()));
    store.expect_ping().returning(|| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        apns: false,
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.post_json("/register", &original_registration())
            .await
            .status()
            .as_u16(),
        204
    );
    let response = app.webhook(&notified(PERSON), None).await;
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, 503).await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("#apns-not-configured")
    );
    let body = problem(app.get("/readyz").await, 503).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("APNs key not loaded")
    );
    // Ignored events need no push, so they are still acknowledged.
    let rooms = json!({"resource": "rooms", "event": "created"});
    assert_eq!(app.webhook(&rooms, None).await.status().as_u16(), 204);
}

#[tokio::test]
async fn readiness_follows_the_store_and_health_and_index_always_answer() {
    let mut store = MockRegistrationPort::new();
    let mut up = true;
    store.expect_ping().times(2).returning(move || {
        let now = up;
        up = false;
        if now {
            Ok(())
        } else {
            Err(StoreError::Unavailable("no route to host".into()))
        }
    });
    let app = TestApp::spawn(Options {
        store,
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/readyz").await.status().as_u16(), 200);
    let body = problem(app.get("/readyz").await, 503).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("database not reachable")
    );
    assert!(!body.to_string().contains("no route to host"));

    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    let index: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(index["name"], "webex-push");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    problem(app.get("/no/such/path").await, 404).await;
    // The original's unauthenticated `GET /register?email=` leaked tokens: not here.
    let response = app.get("/register?email=ada@example.com").await;
    assert_eq!(response.headers()["allow"], "POST");
    problem(response, 405).await;
}

// ---------------------------------------------------------------------------------
// Admin API, OpenAPI, request ids, proof of identity.

const ADMIN: &str = "admin-token-0123456789abcdef";

impl TestApp {
    async fn admin_get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn admin_post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

fn device(token: &str, channel: Channel, outcome: Option<&str>) -> Device {
    Device {
        token: DeviceToken::parse(token).unwrap(),
        channel,
        person: PersonId::parse(PERSON).unwrap(),
        environment: Some(ApnsEnvironment::Sandbox),
        bundle_id: None,
        flavour: AppFlavour::Seed,
        registered_at: chrono::Utc::now(),
        last_outcome: outcome.map(str::to_owned),
        last_outcome_at: outcome.map(|_| chrono::Utc::now()),
    }
}

#[tokio::test]
async fn admin_routes_are_404_without_the_token_configured_and_401_with_a_wrong_one() {
    let off = TestApp::spawn(Options::default()).await;
    let devices = format!("/admin/persons/{PERSON}/devices");
    problem(off.admin_get(&devices, Some(ADMIN)).await, 404).await;
    let body = json!({"personId": PERSON, "channel": "voip"});
    problem(
        off.admin_post("/admin/test-push", Some(ADMIN), &body).await,
        404,
    )
    .await;

    let on = TestApp::spawn(Options {
        admin_token: Some(ADMIN),
        ..Options::default()
    })
    .await;
    for token in [None, Some("wrong"), Some("admin-token-0123456789abcdeF")] {
        let response = on.admin_get(&devices, token).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        problem(response, 401).await;
        problem(on.admin_post("/admin/test-push", token, &body).await, 401).await;
    }
}

#[tokio::test]
async fn admin_lists_a_persons_devices_with_redacted_tokens_and_last_outcomes() {
    let mut store = MockRegistrationPort::new();
    store
        .expect_all_devices_of()
        .withf(|p| p.uuid().to_string() == PERSON)
        .returning(|_| {
            Ok(vec![
                device(&msg_token(), Channel::Alert, None),
                device(&voip_token(), Channel::Voip, Some("Unregistered")),
            ])
        });
    let app = TestApp::spawn(Options {
        store,
        admin_token: Some(ADMIN),
        ..Options::default()
    })
    .await;
    let response = app
        .admin_get(
            &format!("/admin/persons/{}/devices", webex_id(PERSON)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&voip_token()) && !text.contains(&msg_token()),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["personId"], PERSON);
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["channel"], "voip", "VoIP first");
    assert_eq!(devices[0]["token"], "a1a1a1a1…");
    assert_eq!(devices[0]["environment"], "sandbox");
    assert_eq!(devices[0]["lastOutcome"], "Unregistered");
    assert!(devices[0]["lastOutcomeAt"].is_string());
    assert!(devices[0]["registeredAt"].is_string());
    assert_eq!(devices[1]["token"], "b2b2b2b2…");
    assert!(devices[1]["lastOutcome"].is_null());

    let bad = app
        .admin_get("/admin/persons/not-a-person/devices", Some(ADMIN))
        .await;
    problem(bad, 400).await;
}

/// Apple's answer: 200 for the first token, 410 for others.
fn apples_answer(push: &Push) -> TestAnswer {
    let delivered = push.token.as_str() == voip_token();
    ApnsAnswer {
        status: Some(if delivered { 200 } else { 410 }),
        reason: (!delivered).then(|| "Unregistered".to_owned()),
        apns_id: "8a5e3c2b-0000-4000-8000-000000000001".into(),
        environment: ApnsEnvironment::Sandbox,
        outcome: if delivered {
            PushOutcome::Delivered {
                id: "8a5e3c2b-0000-4000-8000-000000000001".into(),
                environment: Some(ApnsEnvironment::Sandbox),
            }
        } else {
            PushOutcome::TokenInvalid {
                reason: "Unregistered".into(),
                since: chrono::Utc::now(),
            }
        },
        latency: Duration::from_millis(12),
    }
    .into()
}

/// A test-push gateway answering as Apple would, keeping what it was asked to send.
fn fake_apple(sent: &Arc<std::sync::Mutex<Vec<Push>>>) -> MockTestPushGateway {
    let mut apple = MockTestPushGateway::new();
    let sent = Arc::clone(sent);
    apple.expect_send_detailed().returning(move |push| {
        sent.lock().unwrap().push(push.clone());
        apples_answer(push)
    });
    apple
}

#[tokio::test]
async fn admin_test_push_rings_each_voip_device_and_returns_apples_answer() {
    let other_voip = "c3".repeat(32);
    let mut store = MockRegistrationPort::new();
    let other = other_voip.clone();
    store
        .expect_devices_of()
        .withf(|p, c| p.uuid().to_string() == PERSON && *c == Channel::Voip)
        .returning(move |_, _| {
            Ok(vec![
                device(&voip_token(), Channel::Voip, None),
                device(&other, Channel::Voip, None),
            ])
        });
    store
        .expect_record_outcome()
        .times(3)
        .returning(|_, _, _, _| Ok(()));
    store.expect_device().returning(|_| Ok(None));
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = TestApp::spawn(Options {
        store,
        admin_token: Some(ADMIN),
        test_pushes: Some(Arc::new(fake_apple(&sent))),
        ..Options::default()
    })
    .await;
    let response = app
        .admin_post(
            "/admin/test-push",
            Some(ADMIN),
            &json!({"personId": webex_id(PERSON), "channel": "voip"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let ok = results.iter().find(|r| r["token"] == "a1a1a1a1…").unwrap();
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["environment"], "sandbox");
    assert_eq!(ok["apnsId"], "8a5e3c2b-0000-4000-8000-000000000001");
    let dead = results.iter().find(|r| r["token"] == "c3c3c3c3…").unwrap();
    assert_eq!(dead["status"], 410);
    assert_eq!(dead["reason"], "Unregistered");
    // A VoIP test push is a whole incoming call, so the app can report it to CallKit.
    for push in sent.lock().unwrap().iter() {
        assert_eq!(push.channel, Channel::Voip);
        assert_eq!(push.environment, Some(ApnsEnvironment::Sandbox));
        assert!(matches!(push.content, PushContent::IncomingCall(_)));
    }

    // One token, on the alert channel; then requests that name no target or two.
    let response = app
        .admin_post(
            "/admin/test-push",
            Some(ADMIN),
            &json!({"token": msg_token(), "channel": "alert", "message": "hi"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let pushes = sent.lock().unwrap().clone();
    assert!(matches!(pushes[2].content, PushContent::Message(_)));
    for bad in [
        json!({"channel": "voip"}),
        json!({"personId": PERSON, "token": msg_token(), "channel": "voip"}),
        json!({"personId": PERSON, "channel": "pager"}),
    ] {
        problem(
            app.admin_post("/admin/test-push", Some(ADMIN), &bad).await,
            400,
        )
        .await;
    }
}

#[tokio::test]
async fn admin_test_push_without_an_apns_key_is_503() {
    let app = TestApp::spawn(Options {
        admin_token: Some(ADMIN),
        ..Options::default()
    })
    .await;
    let body = json!({"token": msg_token(), "channel": "alert"});
    problem(
        app.admin_post("/admin/test-push", Some(ADMIN), &body).await,
        503,
    )
    .await;
}

const COMMITTED_OPENAPI: &str = include_str!("../../../../docs/openapi.json");

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn(Options::default()).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status().as_u16(), 200);
    let served = response.text().await.unwrap();
    // Read at test time too: a stale build of the binary would drift from the file.
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    assert_eq!(
        served, on_disk,
        "docs/openapi.json and /openapi.json drifted"
    );
    assert_eq!(served, COMMITTED_OPENAPI);
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_route_the_app_serves_is_documented_and_every_documented_one_is_served() {
    let mut store = MockRegistrationPort::new();
    store.expect_ping().returning(|| Ok(()));
    let app = TestApp::spawn(Options {
        store,
        admin_token: Some(ADMIN),
        ..Options::default()
    })
    .await;
    let doc: Value = serde_json::from_str(COMMITTED_OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = webex_push::routes::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Each one is really served: not the catch-all 404, nor a 405.
    for (method, path) in &served {
        let concrete = path
            // Malformed on purpose: a 400 proves the route exists without a store.
            .replace("{token}", "zz")
            .replace("{personId}", "not-a-person");
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{concrete}", app.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{method} {path} answered {status}"
        );
    }
    // And an unknown path is the catch-all's 404.
    problem(app.get("/nothing-here").await, 404).await;
}

#[tokio::test]
async fn the_docs_page_loads_nothing_from_elsewhere() {
    let app = TestApp::spawn(Options::default()).await;
    let response = app.get("/docs").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("fetch(\"/openapi.json\")"));
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!html.contains(external), "{external} in the page");
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_sane_incoming_one_is_kept() {
    let app = TestApp::spawn(Options::default()).await;
    let response = app.get("/healthz").await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let response = app.get("/no/such/path").await;
    assert!(response.headers().contains_key("x-request-id"));
    let kept = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "lb-1234_abc")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "lb-1234_abc");
    let replaced = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "evil\"id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "evil\"id with spaces");
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_webhooks_by_outcome() {
    let app = TestApp::spawn(Options {
        secrets: vec!["s3cret"],
        ..Options::default()
    })
    .await;
    let body = notified(PERSON);
    assert_eq!(app.webhook(&body, Some("bad".into())).await.status(), 401);
    let signature = sign("s3cret", body.to_string().as_bytes());
    assert_eq!(app.webhook(&body, Some(signature)).await.status(), 204);
    // Read but not relayed, or not readable: by the resource named, else `unknown`.
    let rooms = json!({"resource": "rooms", "event": "created", "data": {}});
    let signature = sign("s3cret", rooms.to_string().as_bytes());
    assert_eq!(app.webhook(&rooms, Some(signature)).await.status(), 204);
    let list = json!([1]);
    let signature = sign("s3cret", list.to_string().as_bytes());
    assert_eq!(app.webhook(&list, Some(signature)).await.status(), 400);
    let mut store_free = app.http.delete(format!("{}/register/zz", app.base));
    store_free = store_free.header("x", "y");
    assert_eq!(store_free.send().await.unwrap().status(), 400);
    // A method nobody serves: counted, but as `other`, so clients cannot mint series.
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    let brewed = app.http.request(odd, format!("{}/register", app.base));
    assert_eq!(brewed.send().await.unwrap().status(), 405);
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    // The format served is the one the header names: Prometheus text 0.0.4.
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("# EOF"),
        "OpenMetrics' end marker in 0.0.4 text"
    );
    for line in [
        r#"webex_push_webhooks_total{resource="unknown",outcome="unauthorized"} 1"#,
        r#"webex_push_webhooks_total{resource="callMemberships",outcome="accepted"} 1"#,
        r#"webex_push_webhooks_total{resource="rooms",outcome="ignored"} 1"#,
        r#"webex_push_webhooks_total{resource="unknown",outcome="malformed"} 1"#,
        r#"webex_push_http_requests_total{route="/webhook",method="POST",status="204"} 2"#,
        r#"webex_push_http_requests_total{route="/webhook",method="POST",status="400"} 1"#,
        r#"webex_push_http_requests_total{route="/register/{token}",method="DELETE",status="400"} 1"#,
        r#"webex_push_http_requests_total{route="/register",method="other",status="405"} 1"#,
        r#"webex_push_http_request_duration_seconds_count{route="/webhook",method="POST"} 4"#,
        "# TYPE webex_push_http_requests_total counter",
        "# HELP webex_push_http_requests_total ",
        "webex_push_push_queue_depth ",
        "# TYPE webex_push_ring_latency_seconds histogram",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    assert!(!text.contains("BREW"), "{text}");
}

// --- Proof of identity, with the real Webex adapter against a local stand-in.

async fn identity_app(store: MockRegistrationPort) -> TestApp {
    let identity = WebexIdentity::new(WebexIdentityConfig {
        base_url: webex_identity_standin().await,
        ..WebexIdentityConfig::default()
    })
    .unwrap();
    TestApp::spawn(Options {
        store,
        identity: Some(Arc::new(identity)),
        ..Options::default()
    })
    .await
}

impl TestApp {
    async fn register_as(&self, access: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/register", self.base)).json(body);
        if let Some(access) = access {
            request = request.bearer_auth(access);
        }
        request.send().await.unwrap()
    }

    async fn unregister_as(&self, access: Option<&str>, token: &str) -> reqwest::Response {
        let mut request = self.http.delete(format!("{}/register/{token}", self.base));
        if let Some(access) = access {
            request = request.bearer_auth(access);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn identity_proof_lets_the_holder_register_and_refuses_a_mismatched_person() {
    let mut store = MockRegistrationPort::new();
    store.expect_device().returning(|_| Ok(None));
    store.expect_register().times(1).returning(|_, _| Ok(()));
    let app = identity_app(store).await;

    let ada = original_registration();
    let response = app.register_as(Some(ADA_ACCESS), &ada).await;
    assert_eq!(response.status().as_u16(), 204);

    let mut bob = original_registration();
    bob["personId"] = json!(webex_id(CALLER));
    let body = problem(app.register_as(Some(ADA_ACCESS), &bob).await, 403).await;
    assert!(body["type"].as_str().unwrap().ends_with("#person-mismatch"));

    let response = app.register_as(None, &ada).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    problem(response, 401).await;
    problem(
        app.register_as(Some("stolen-or-expired-token"), &ada).await,
        401,
    )
    .await;
    let response = app.register_as(Some(DOWN_ACCESS), &ada).await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 503).await;
}

#[tokio::test]
async fn identity_proof_refuses_to_move_another_persons_token_with_a_conflict() {
    let mut store = MockRegistrationPort::new();
    // The VoIP token is Bob's; the message token is nobody's yet.
    store.expect_device().returning(|token| {
        Ok((token.as_str() == voip_token()).then(|| {
            let mut bobs = device(&voip_token(), Channel::Voip, None);
            bobs.person = PersonId::parse(CALLER).unwrap();
            bobs
        }))
    });
    store.expect_register().never();
    let app = identity_app(store).await;

    let body = problem(
        app.register_as(Some(ADA_ACCESS), &original_registration())
            .await,
        409,
    )
    .await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("#token-registered-elsewhere"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("unregister"),
        "{body}"
    );
}

#[tokio::test]
async fn identity_proof_lets_only_the_owner_unregister_a_device() {
    let mut store = MockRegistrationPort::new();
    store.expect_device().returning(|token| {
        Ok(if token.as_str() == voip_token() {
            Some(device(&voip_token(), Channel::Voip, None))
        } else {
            let mut bobs = device(&msg_token(), Channel::Alert, None);
            bobs.person = PersonId::parse(CALLER).unwrap();
            Some(bobs)
        })
    });
    store.expect_unregister().times(1).returning(|_| Ok(true));
    let app = identity_app(store).await;

    problem(app.unregister_as(None, &voip_token()).await, 401).await;
    problem(app.unregister_as(Some(ADA_ACCESS), &msg_token()).await, 403).await;
    let response = app.unregister_as(Some(ADA_ACCESS), &voip_token()).await;
    assert_eq!(response.status().as_u16(), 204);
}
