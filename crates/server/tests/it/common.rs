//! Helpers shared by the integration tests: the real `webex-push` binary with its
//! captured log lines, a harness with a fresh Postgres database and the APNs stand-in,
//! waiting on conditions, and Webex-shaped bodies and stand-ins.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apns_standin::{AcceptedPush, AuthKey, Failure, FaultProxy, StandIn, StandInConfig};
use fcm_standin::{AcceptedMessage, FcmStandIn, FcmStandInConfig};
use serde_json::{Value, json};
use tokio::sync::Notify;
use webex_push_adapters::webex::sign;
use webex_push_test_support::{TestDatabase, eventually_explained};

pub const KEY_ID: &str = "KEY1234567";
pub const TEAM_ID: &str = "TEAM123456";
pub const TOPIC: &str = "com.example.app";
pub const SECRET: &str = "webhook-s3cret";
pub const WAIT: Duration = Duration::from_secs(20);

pub const PERSON: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
pub const CALLER: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
pub const OTHER: &str = "11111111-2222-4333-8444-555555555555";

pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(text)
}

pub fn b64_padded(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The usual Webex spelling of a person's id: unpadded base64, `us` cluster.
pub use webex_push_test_support::webex_fixtures::person_id as webex_id;

pub fn token(fill: &str) -> String {
    fill.repeat(64 / fill.len())
}

/// A port of 127.0.0.1 that was free a moment ago (nothing listens on it now), for a
/// server whose URL must be known before it starts, or for a peer that is not there.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls `condition` every 20 ms until it holds; fails after [`WAIT`] with the log of
/// `h`'s server.
pub async fn eventually(h: &Harness, what: &str, condition: impl AsyncFnMut() -> bool) {
    eventually_within(&h.server, WAIT, what, condition).await;
}

/// As [`eventually`], for `within` and with the log of `server`.
pub async fn eventually_within(
    server: &Server,
    within: Duration,
    what: &str,
    condition: impl AsyncFnMut() -> bool,
) {
    let log = || format!("log:\n{}", server.log_text());
    eventually_explained(within, what, log, condition).await;
}

/// Runs the binary with `args` and exactly `envs` to completion (within [`WAIT`]):
/// (exit success, stdout, stderr and the exit status).
pub async fn run_binary(args: &[&str], envs: &[(&str, String)]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_webex-push"))
        .args(args)
        .env_clear()
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.unwrap().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        // The status too: a crash (signal) reads differently from a failed check.
        format!(
            "{}\n[{}]",
            String::from_utf8_lossy(&output.stderr),
            output.status
        ),
    )
}

/// The APNs stand-in trusting a freshly generated key; the key's `.p8` file and the
/// stand-in's CA are written to a directory of the caller's.
pub struct Apns {
    pub standin: StandIn,
    /// The private key, PEM (what `APNS_KEY` takes).
    pub key_pem: String,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl Apns {
    pub async fn start(dir: &Path) -> Self {
        let AuthKey {
            private_pem: key_pem,
            public_pem,
        } = AuthKey::generate().unwrap();
        let standin = StandIn::start(StandInConfig::new(KEY_ID, TEAM_ID, public_pem))
            .await
            .unwrap();
        // As Apple does, so the start-up warm-up is not counted as an accepted push.
        standin
            .script()
            .fail_token(&"0".repeat(64), Failure::BadDeviceToken);
        let key_file = dir.join("AuthKey_KEY1234567.p8");
        std::fs::write(&key_file, key_pem.as_bytes()).unwrap();
        let ca_file = dir.join("standin-ca.pem");
        std::fs::write(&ca_file, standin.ca_pem()).unwrap();
        Self {
            standin,
            key_pem,
            key_file,
            ca_file,
        }
    }

    /// The environment that has the binary push to the stand-in with this key, at
    /// `endpoint` (the stand-in's URL, or that of a proxy in front of it).
    pub fn envs(&self, endpoint: String) -> Vec<(&'static str, String)> {
        vec![
            ("APNS_KEY_FILE", self.key_file.display().to_string()),
            ("APNS_KEY_ID", KEY_ID.into()),
            ("APNS_TEAM_ID", TEAM_ID.into()),
            ("APNS_TOPIC", TOPIC.into()),
            ("APNS_ENDPOINT", endpoint),
            ("APNS_CA_FILE", self.ca_file.display().to_string()),
        ]
    }
}

/// The FCM stand-in's service account (the committed test key), endpoint and CA, the
/// files written to `dir`: the environment that points the server at it.
pub fn fcm_envs(fcm: &FcmStandIn, dir: &Path) -> Vec<(&'static str, String)> {
    let account = dir.join("service-account.json");
    std::fs::write(&account, fcm.test_service_account_json()).unwrap();
    let ca = dir.join("fcm-ca.pem");
    std::fs::write(&ca, fcm.ca_pem()).unwrap();
    vec![
        ("FCM_SERVICE_ACCOUNT_FILE", account.display().to_string()),
        ("FCM_ENDPOINT", fcm.url()),
        ("FCM_CA_FILE", ca.display().to_string()),
    ]
}

/// The running binary, its log lines, and a way to wait for one.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub new_line: Arc<Notify>,
}

impl Server {
    /// Starts the binary with exactly `envs`; stdout and stderr are both captured as
    /// log lines (JSON lines parsed, anything else kept as a string), so a test can scan
    /// everything the process wrote.
    pub fn spawn(envs: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_webex-push"));
        command
            .env_clear()
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the webex-push binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(Notify::new());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        collect_lines(stdout, &lines, &new_line);
        collect_lines(stderr, &lines, &new_line);
        Self {
            child,
            base: String::new(),
            lines,
            new_line,
        }
    }

    /// Sends `signal` (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits for the first log line matching `wanted`, past or future.
    pub async fn wait_for_log(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(&format!("log line {what}"), |lines| {
            lines.iter().find(|l| wanted(l)).cloned()
        })
        .await
    }

    /// Waits until `n` log lines in all, past or future, match `wanted`.
    pub async fn wait_for_count(&self, what: &str, n: usize, wanted: impl Fn(&Value) -> bool) {
        self.wait_until(&format!("{n} log lines {what}"), |lines| {
            (lines.iter().filter(|l| wanted(l)).count() >= n).then_some(())
        })
        .await;
    }

    /// Waits (within [`WAIT`]) until `found` finds something in the lines so far,
    /// looking again at each new line.
    async fn wait_until<T>(&self, what: &str, found: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.new_line.notified();
            tokio::pin!(notified);
            // Registered before looking, so a line written meanwhile is not missed.
            notified.as_mut().enable();
            if let Some(found) = found(&self.lines.lock().unwrap()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no {what} within {WAIT:?}; the log:\n{}", self.log_text());
            }
        }
    }

    pub fn count_logs(&self, wanted: impl Fn(&Value) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| wanted(l))
            .count()
    }

    pub fn log_text(&self) -> String {
        text_of(&self.lines)
    }

    /// Waits (within [`WAIT`]) until the process has exited; its status.
    pub async fn exited(&mut self) -> ExitStatus {
        let lines = Arc::clone(&self.lines);
        let child = &mut self.child;
        let mut status = None;
        eventually_explained(
            WAIT,
            "the process exiting",
            || format!("log:\n{}", text_of(&lines)),
            async || {
                status = child.try_wait().unwrap();
                status.is_some()
            },
        )
        .await;
        status.expect("polled until it exited")
    }

    pub async fn wait_until_listening(&mut self) {
        let line = self
            .wait_for_log("`listening`", |l| l["message"] == "listening")
            .await;
        let address = line["address"].as_str().expect("the address is logged");
        self.base = format!("http://{address}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text_of(lines: &Mutex<Vec<Value>>) -> String {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads `stream` line by line on a thread of its own into `lines`.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    lines: &Arc<Mutex<Vec<Value>>>,
    new_line: &Arc<Notify>,
) {
    let lines = Arc::clone(lines);
    let new_line = Arc::clone(new_line);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            lines.lock().unwrap().push(value);
            new_line.notify_waiters();
        }
    });
}

/// Where the `type` of every problem body points: the API document's section for it.
pub const PROBLEM_BASE: &str = "https://github.com/webex-push/webex-push/blob/main/docs/api.md#";

/// Checks that `response` is a problem document (RFC 9457) of `status`, and of `slug`
/// when given, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, slug: Option<&str>) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    assert_eq!(content_type, "application/problem+json", "{text}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    let kind = problem["type"].as_str().unwrap();
    assert!(kind.starts_with(PROBLEM_BASE), "{problem}");
    if let Some(slug) = slug {
        assert_eq!(&kind[PROBLEM_BASE.len()..], slug, "{problem}");
    }
    assert!(!problem["title"].as_str().unwrap().is_empty(), "{problem}");
    assert!(problem["detail"].is_string(), "{problem}");
    assert_eq!(problem["status"], status, "{problem}");
    problem
}

pub fn message_is(line: &Value, message: &str) -> bool {
    line["message"] == message
}

pub struct Harness {
    pub server: Server,
    pub standin: StandIn,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    /// Requests the stand-in had once the start-up warm-up was done.
    pub warm_up_requests: u64,
    /// The environment the server was started with, for a second replica.
    envs: Vec<(String, String)>,
    /// The FCM stand-in, when started with [`Harness::start_with_fcm`].
    pub fcm: Option<FcmStandIn>,
    /// Its service account and CA, for replicas started later.
    _fcm_dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// A fresh database, a stand-in trusting a freshly generated key, and the binary
    /// configured for both with `push_workers` workers.
    pub async fn start(push_workers: usize) -> Self {
        Self::start_with(push_workers, &[]).await
    }

    /// As [`Harness::start`], with Android too: the FCM stand-in, and the server given
    /// its service account (the committed test key), endpoint and CA.
    pub async fn start_with_fcm(push_workers: usize) -> Self {
        Self::start_with_fcm_and(push_workers, &[]).await
    }

    /// As [`Harness::start_with_fcm`], with more environment variables.
    pub async fn start_with_fcm_and(push_workers: usize, extra: &[(&str, String)]) -> Self {
        let fcm = FcmStandIn::start(FcmStandInConfig::test()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut envs = fcm_envs(&fcm, dir.path());
        envs.extend(extra.iter().cloned());
        let mut h = Self::start_with(push_workers, &envs).await;
        h._fcm_dir = Some(dir);
        h.server
            .wait_for_log("`FCM warmed up`", |l| message_is(l, "FCM warmed up"))
            .await;
        h.fcm = Some(fcm);
        h
    }

    pub fn fcm(&self) -> &FcmStandIn {
        self.fcm.as_ref().expect("started with start_with_fcm")
    }

    /// Waits until `n` FCM messages in all were accepted and returns those after `skip`.
    pub async fn fcm_messages(&self, skip: usize, n: usize) -> Vec<AcceptedMessage> {
        let all = self.fcm().wait_for_accepted(n, WAIT).await;
        assert!(
            all.len() >= n,
            "expected {n} FCM messages, got {}; log:\n{}",
            all.len(),
            self.server.log_text()
        );
        all[skip..].to_vec()
    }

    /// As [`Harness::start`], with more environment variables.
    pub async fn start_with(push_workers: usize, extra: &[(&str, String)]) -> Self {
        let db = TestDatabase::postgres();
        let url = db.url().to_owned();
        Self::start_on(db, url, push_workers, extra).await
    }

    /// As [`Harness::start_with`], on `db` reached through `database_url` (a proxy in
    /// front of it, say).
    pub async fn start_on(
        db: TestDatabase,
        database_url: String,
        push_workers: usize,
        extra: &[(&str, String)],
    ) -> Self {
        Self::start_full(db, database_url, push_workers, extra, false)
            .await
            .0
    }

    /// As [`Harness::start_with`], with the server reaching the stand-in through a
    /// [`FaultProxy`], which can blackhole the live APNs connection.
    pub async fn start_with_apns_proxy(
        push_workers: usize,
        extra: &[(&str, String)],
    ) -> (Self, FaultProxy) {
        let db = TestDatabase::postgres();
        let url = db.url().to_owned();
        let (harness, proxy) = Self::start_full(db, url, push_workers, extra, true).await;
        (harness, proxy.expect("a proxy was asked for"))
    }

    async fn start_full(
        db: TestDatabase,
        database_url: String,
        push_workers: usize,
        extra: &[(&str, String)],
        apns_behind_proxy: bool,
    ) -> (Self, Option<FaultProxy>) {
        let dir = tempfile::tempdir().unwrap();
        let apns = Apns::start(dir.path()).await;
        let proxy = match apns_behind_proxy {
            true => Some(FaultProxy::start(apns.standin.local_addr()).await.unwrap()),
            false => None,
        };
        let apns_endpoint = proxy
            .as_ref()
            .map_or_else(|| apns.standin.url(), FaultProxy::url);

        let mut envs = vec![
            ("PORT", "0".into()),
            ("HOST", "127.0.0.1".into()),
            ("HTTP_WORKERS", "2".into()),
            ("DATABASE_URL", database_url),
            ("DATABASE_POOL_SIZE", "4".into()),
            ("DATABASE_CONNECT_TIMEOUT_SECS", "2".into()),
            ("DATABASE_CHECKOUT_TIMEOUT_SECS", "1".into()),
            ("DATABASE_STATEMENT_TIMEOUT_SECS", "2".into()),
            ("WEBHOOK_SECRET", format!("old-secret,{SECRET}")),
            ("PUSH_WORKERS", push_workers.to_string()),
            ("SHUTDOWN_TIMEOUT_SECS", "10".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ];
        envs.extend(apns.envs(apns_endpoint));
        let standin = apns.standin;
        envs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        envs.extend(extra.iter().cloned());
        let envs: Vec<(String, String)> =
            envs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let server = Self::spawn_server(&envs).await;
        let warm_up_requests = standin.stats().requests;
        let harness = Self {
            server,
            standin,
            db,
            http: reqwest::Client::new(),
            _dir: dir,
            warm_up_requests,
            envs,
            fcm: None,
            _fcm_dir: None,
        };
        (harness, proxy)
    }

    async fn spawn_server(envs: &[(String, String)]) -> Server {
        let envs: Vec<(&str, String)> = envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut server = Server::spawn(&envs);
        server.wait_until_listening().await;
        // The background warm-up sends one request; wait for it so counts are exact.
        server
            .wait_for_log("`APNs connection warmed up`", |l| {
                message_is(l, "APNs connection warmed up")
            })
            .await;
        server
    }

    /// Another replica: the same binary, database, stand-in and settings.
    pub async fn replica(&self) -> Server {
        Self::spawn_server(&self.envs).await
    }

    /// The environment the server runs with (for running other commands alike).
    pub fn envs(&self) -> &[(String, String)] {
        &self.envs
    }

    /// The directory holding the APNs key file and the stand-in's CA.
    pub fn key_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    pub async fn register(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/register"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register_ok(&self, person: &str, voip: &str, msg: &str) {
        let response = self.register(&registration(person, voip, msg)).await;
        assert_eq!(
            response.status().as_u16(),
            204,
            "{}",
            self.server.log_text()
        );
    }

    /// Posts `body` to `/webhook` with `signature` (none when `None`).
    pub async fn post_webhook(&self, body: &Value, signature: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/webhook"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string());
        if let Some(signature) = signature {
            request = request.header("X-Spark-Signature", signature);
        }
        request.send().await.unwrap()
    }

    pub async fn webhook_signed_with(&self, body: &Value, signature: Option<String>) -> u16 {
        self.post_webhook(body, signature).await.status().as_u16()
    }

    pub async fn webhook(&self, body: &Value) {
        self.webhook_text(&body.to_string()).await;
    }

    /// Posts `text` as it is, signed: for bodies whose exact bytes matter.
    pub async fn webhook_text(&self, text: &str) {
        let status = self
            .http
            .post(self.url("/webhook"))
            .header("content-type", "application/json; charset=utf-8")
            .header("X-Spark-Signature", sign(SECRET, text.as_bytes()))
            .body(text.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 204, "{}", self.server.log_text());
    }

    /// The JSON body `GET path` answers.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// `person`'s devices as the admin API (token `admin`) lists them.
    pub async fn admin_devices(&self, admin: &str, person: &str) -> Value {
        let path = format!("/admin/persons/{person}/devices");
        let response = self
            .http
            .get(self.url(&path))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    pub async fn get_status(&self, path: &str) -> u16 {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until `n` pushes in all were accepted and returns those after `skip`.
    pub async fn pushes(&self, skip: usize, n: usize) -> Vec<AcceptedPush> {
        let all = self.standin.wait_for_accepted(n, WAIT).await;
        assert!(
            all.len() >= n,
            "expected {n} pushes, got {}; log:\n{}",
            all.len(),
            self.server.log_text()
        );
        all[skip..].to_vec()
    }

    /// Waits until the workers have relayed (or dropped) `n` events.
    pub async fn relayed(&self, n: usize) {
        self.server
            .wait_for_count("`event relayed`", n, |l| message_is(l, "event relayed"))
            .await;
    }

    /// The `/metrics` text now.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }
}

pub fn registration(person: &str, voip: &str, msg: &str) -> Value {
    json!({
        "email": "ada@example.com",
        "voipToken": voip,
        "msgToken": msg,
        "personId": person,
    })
}

/// The body KitchenSink Android registers with.
pub fn android_registration(person: &str, token: &str) -> Value {
    json!({"pushProvider": "FCM", "deviceToken": token, "userId": person})
}

/// An FCM registration token as they look: not hex, case-sensitive, ~160 characters.
pub fn fcm_token(name: &str) -> String {
    format!("{name}:APA91bH-Xy_z{}", "Q9".repeat(70))
}

/// The body Cisco's current sample app (KitchenSink, iOS) registers with.
pub fn kitchensink_registration(person: &str, voip: &str, device: &str) -> Value {
    json!({
        "voipToken": voip,
        "deviceToken": device,
        "pushProvider": "APNS",
        "userId": person,
        "prod": false,
    })
}

pub use webex_push_test_support::webex_fixtures::envelope;

/// A `callMemberships/created` webhook of [`PERSON`]'s ringing `callee_spelling` (an
/// id in any spelling) for `call_id`.
pub fn call_membership(call_id: &str, callee_spelling: &str) -> Value {
    ring_of(PERSON, call_id, callee_spelling)
}

/// As [`call_membership`], from `owner`'s own webhook.
pub fn ring_of(owner: &str, call_id: &str, callee_spelling: &str) -> Value {
    envelope(
        "callMemberships",
        "created",
        owner,
        CALLER,
        json!({
            "id": format!("membership-{call_id}"),
            "callId": call_id,
            "personId": callee_spelling,
            "personEmail": "callee@example.com",
            "state": "notified",
            "isInitiator": false,
            "created": "2025-06-01T12:34:56.000Z",
        }),
    )
}

/// A `messages/created` webhook of `owner`'s: `author` (`email`) wrote in a direct room.
pub fn message(owner: &str, author: &str, email: &str) -> Value {
    envelope(
        "messages",
        "created",
        owner,
        author,
        json!({
            "id": "message-1",
            "roomId": "room-1",
            "roomType": "direct",
            "personId": webex_id(author),
            "personEmail": email,
            "created": "2025-06-01T12:00:00.000Z",
        }),
    )
}

pub fn telephony_call(call_id: &str, state: &str, event_type: &str) -> Value {
    envelope(
        "telephony_calls",
        if state == "alerting" {
            "created"
        } else {
            "updated"
        },
        PERSON,
        PERSON,
        json!({
            "eventType": event_type,
            "eventTimestamp": "2025-06-01T12:00:01.123Z",
            "callId": call_id,
            "callSessionId": "session-1",
            "personality": "terminator",
            "state": state,
            "remoteParty": {
                "name": "Ada Lovelace",
                "number": "+15551234567",
                "privacyEnabled": false,
                "callType": "location"
            },
            "created": "2025-06-01T12:00:00.000Z",
        }),
    )
}

pub fn sorted_tokens(pushes: &[AcceptedPush]) -> Vec<String> {
    let mut tokens: Vec<String> = pushes.iter().map(|p| p.token.clone()).collect();
    tokens.sort();
    tokens
}

pub fn assert_voip(push: &AcceptedPush) {
    assert_eq!(push.topic, format!("{TOPIC}.voip"));
    assert_eq!(push.push_type, "voip");
    assert_eq!(push.priority, Some(10));
    assert!(push.expiration.is_some());
}

pub fn assert_alert(push: &AcceptedPush) {
    assert_eq!(push.topic, TOPIC);
    assert_eq!(push.push_type, "alert");
    assert!(push.payload["aps"]["alert"].is_object(), "{}", push.payload);
}

/// Ada's Webex access token at [`webex_identity_standin`]: she is [`PERSON`].
pub const ADA_ACCESS: &str = "ada-access-token_PF84_org";
/// A token for which [`webex_identity_standin`] answers as Webex does when it is down.
pub const DOWN_ACCESS: &str = "webex-is-down-token_PF84_org";

/// A stand-in of Webex's `GET /v1/people/me` on port 0, its base URL: [`ADA_ACCESS`] is
/// [`PERSON`] (spelled as Webex does), [`DOWN_ACCESS`] gets a 503, any other token
/// Webex's 401.
pub async fn webex_identity_standin() -> String {
    use actix_web::{HttpRequest, HttpResponse, web};
    async fn me(request: HttpRequest) -> HttpResponse {
        let auth = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match auth.strip_prefix("Bearer ") {
            Some(ADA_ACCESS) => HttpResponse::Ok().json(json!({
                "id": webex_id(PERSON),
                "emails": ["ada@example.com"],
                "displayName": "Ada",
            })),
            Some(DOWN_ACCESS) => HttpResponse::ServiceUnavailable().finish(),
            _ => HttpResponse::Unauthorized()
                .json(json!({"message": "The request requires a valid access token."})),
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().route("/v1/people/me", web::get().to(me))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://{address}")
}
