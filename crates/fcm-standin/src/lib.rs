//! A local stand-in for Firebase Cloud Messaging's HTTP v1 API and Google's OAuth 2.0
//! token endpoint, over HTTPS (HTTP/2), checking requests the way Google does: the
//! service account's RS256 assertion, the bearer access token, the message's shape,
//! string-only data and its 4,096-byte limit. Answers are scripted by token prefix.

mod script;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use script::{Failure, Script};

/// FCM's limit on a message's data (keys and values, in bytes).
pub const MAX_DATA_BYTES: usize = 4096;

/// The committed RSA **test** key (PKCS#8 PEM) of [`FcmStandInConfig::test`]'s service
/// account. Not a secret: Google has never seen it (see `test-key/README.md`).
pub const TEST_PRIVATE_KEY_PEM: &str =
    include_str!("../test-key/TEST-ONLY-service-account-key.pem");
/// Its public half, which the stand-in verifies assertions against.
pub const TEST_PUBLIC_KEY_PEM: &str =
    include_str!("../test-key/TEST-ONLY-service-account-key.pub.pem");
pub const TEST_PROJECT_ID: &str = "webex-push-test";
pub const TEST_CLIENT_EMAIL: &str = "webex-push@webex-push-test.iam.gserviceaccount.com";

/// The OAuth scope FCM's v1 API needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How the stand-in checks requests.
#[derive(Debug, Clone)]
pub struct FcmStandInConfig {
    /// The only project `messages:send` accepts.
    pub project_id: String,
    /// The service account's `client_email`: an assertion's `iss`.
    pub client_email: String,
    /// PEM SubjectPublicKeyInfo of the RSA key assertions must verify against.
    pub public_key_pem: String,
    /// `expires_in` of the access tokens issued (Google's: 3599 s).
    pub token_lifetime: Duration,
    /// Keep every accepted message for `accepted()`; off for long load runs.
    pub record_accepted: bool,
}

impl FcmStandInConfig {
    /// The committed test service account ([`TEST_PRIVATE_KEY_PEM`]), tokens for an hour.
    pub fn test() -> Self {
        Self {
            project_id: TEST_PROJECT_ID.to_owned(),
            client_email: TEST_CLIENT_EMAIL.to_owned(),
            public_key_pem: TEST_PUBLIC_KEY_PEM.to_owned(),
            token_lifetime: Duration::from_secs(3599),
            record_accepted: true,
        }
    }
}

/// A message the stand-in answered with `200`.
#[derive(Debug, Clone)]
pub struct AcceptedMessage {
    /// `message.token`.
    pub token: String,
    /// `message.data`, every value a string (anything else was refused).
    pub data: BTreeMap<String, String>,
    /// `message.android.priority` as sent (`HIGH`, `NORMAL`).
    pub priority: Option<String>,
    /// `message.android.ttl` as sent (`"60s"`).
    pub ttl: Option<String>,
    /// The request body, parsed.
    pub body: serde_json::Value,
    /// The request body as sent, byte for byte.
    pub raw: Vec<u8>,
    /// The name answered, `projects/<p>/messages/<id>`.
    pub name: String,
    /// The bearer access token it came with.
    pub access_token: String,
    pub received_at: SystemTime,
    /// Which connection carried it (1 for the first).
    pub connection: u64,
}

impl AcceptedMessage {
    /// [`ttl`](Self::ttl) in whole seconds, when it was sent as FCM spells a duration
    /// of whole seconds (`"60s"`).
    pub fn ttl_seconds(&self) -> Option<u64> {
        self.ttl.as_deref()?.strip_suffix('s')?.parse().ok()
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TLS connections that negotiated `h2`.
    pub connections_opened: u64,
    /// Requests to the token endpoint, valid or not.
    pub token_requests: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Requests to `messages:send`.
    pub requests: u64,
    /// Messages answered `200`.
    pub accepted: u64,
    /// Error answers of `messages:send`, by status.
    pub responses: BTreeMap<u16, u64>,
    /// Error answers of `messages:send`, by FCM error code (else Google's status).
    pub errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    connections_opened: AtomicU64,
    token_requests: AtomicU64,
    requests: AtomicU64,
}

/// An access token issued, with its serial and expiry.
struct Issued {
    serial: u64,
    expires: SystemTime,
}

/// State shared by every connection and stream.
struct Shared {
    config: FcmStandInConfig,
    token_uri: String,
    decoding_key: jsonwebtoken::DecodingKey,
    script: Script,
    issued: Mutex<HashMap<String, Issued>>,
    tokens_issued: AtomicU64,
    records: Mutex<Vec<AcceptedMessage>>,
    accepted: AtomicU64,
    accepted_notify: Notify,
    errors: Mutex<(BTreeMap<u16, u64>, BTreeMap<String, u64>)>,
    counters: Counters,
    next_connection: AtomicU64,
}

/// A poisoned lock only means a panicking test thread; the data is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running stand-in. Dropping it stops the server too; `shutdown` also waits for it.
pub struct FcmStandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FcmStandIn {
    /// Generates a certificate, binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: FcmStandInConfig) -> anyhow::Result<Self> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like `start`, on a chosen address.
    pub async fn start_on(config: FcmStandInConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let decoding_key =
            jsonwebtoken::DecodingKey::from_rsa_pem(config.public_key_pem.as_bytes())?;
        let tls = apns_standin::tls::generate("fcm-standin test CA")?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token_uri: format!("https://localhost:{}/token", addr.port()),
            config,
            decoding_key,
            script: Script::new(),
            issued: Mutex::new(HashMap::new()),
            tokens_issued: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            accepted_notify: Notify::new(),
            errors: Mutex::new((BTreeMap::new(), BTreeMap::new())),
            counters: Counters::default(),
            next_connection: AtomicU64::new(1),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(
            listener,
            tls.acceptor,
            Arc::clone(&shared),
            stopped,
        ));
        tracing::debug!(%addr, "FCM stand-in listening");
        Ok(Self {
            shared,
            addr,
            ca_pem: tls.ca_pem,
            stop,
            task: Some(task),
        })
    }

    /// `https://localhost:<port>`: what `FCM_ENDPOINT` points at.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The token endpoint, for the service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        self.shared.token_uri.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server's certificate: `FCM_CA_FILE`.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// A service-account JSON, as the Firebase console downloads it, for this stand-in:
    /// its project, client e-mail and token endpoint, with `private_key_pem`.
    pub fn service_account_json(&self, private_key_pem: &str) -> String {
        let config = &self.shared.config;
        service_account_json(
            &config.project_id,
            &config.client_email,
            &self.shared.token_uri,
            private_key_pem,
        )
    }

    /// [`service_account_json`](Self::service_account_json) with the committed test key.
    pub fn test_service_account_json(&self) -> String {
        self.service_account_json(TEST_PRIVATE_KEY_PEM)
    }

    /// Behaviour to change while the server runs.
    pub fn script(&self) -> &Script {
        &self.shared.script
    }

    /// Every access token issued so far is refused from now on (`401`), as an expired
    /// one would be.
    pub fn expire_access_tokens(&self) {
        let issued = self.shared.tokens_issued.load(Ordering::Acquire);
        self.shared.script.revoke_access_tokens(issued);
    }

    /// Every message answered `200`, in the order answered (empty when not recording).
    pub fn accepted(&self) -> Vec<AcceptedMessage> {
        lock(&self.shared.records).clone()
    }

    /// Waits until at least `n` messages were accepted, or `timeout`; returns `accepted()`.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<AcceptedMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.accepted_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let accepted = self.shared.accepted.load(Ordering::SeqCst);
            if usize::try_from(accepted).unwrap_or(usize::MAX) >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.accepted()
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let errors = lock(&shared.errors);
        Stats {
            connections_opened: shared.counters.connections_opened.load(Ordering::Acquire),
            token_requests: shared.counters.token_requests.load(Ordering::Acquire),
            tokens_issued: shared.tokens_issued.load(Ordering::Acquire),
            requests: shared.counters.requests.load(Ordering::Acquire),
            accepted: shared.accepted.load(Ordering::Acquire),
            responses: errors.0.clone(),
            errors: errors.1.clone(),
        }
    }

    /// Stops accepting, closes every connection and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FcmStandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A service-account JSON, as the Firebase console downloads it, with the committed test
/// key ([`TEST_PRIVATE_KEY_PEM`]): for a client that needs an account and no stand-in
/// (one that reads it, or never asks `token_uri` for a token).
pub fn offline_service_account_json(
    project_id: &str,
    client_email: &str,
    token_uri: &str,
) -> String {
    service_account_json(project_id, client_email, token_uri, TEST_PRIVATE_KEY_PEM)
}

fn service_account_json(
    project_id: &str,
    client_email: &str,
    token_uri: &str,
    private_key_pem: &str,
) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    })
    .to_string()
}
