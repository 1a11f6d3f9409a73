//! A local stand-in for Apple's APNs provider API (HTTP/2 over TLS, token auth) that
//! checks requests the way Apple does, can be scripted to fail, and records what it took.

mod check;
mod jwt;
mod key;
mod proxy;
mod script;
mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

pub use check::{MAX_PAYLOAD, MAX_VOIP_PAYLOAD};
pub use key::AuthKey;
pub use proxy::FaultProxy;
pub use script::{Failure, Script};

use jwt::{JwtRegistry, JwtVerifier, lock};

/// How the stand-in checks requests.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// Expected JWT `kid` (Apple's 10-character key id).
    pub key_id: String,
    /// Expected JWT `iss` (Apple's 10-character team id).
    pub team_id: String,
    /// PEM SubjectPublicKeyInfo of the P-256 key provider tokens must verify against.
    pub public_key_pem: String,
    /// Allowed bundle ids; `<bundle>.voip` (and the other push types' suffixes) follow.
    pub topics: Vec<String>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` announced on every connection.
    pub max_concurrent_streams: u32,
    /// Tokens whose `iat` is older get `403 ExpiredProviderToken`.
    pub max_jwt_age: Duration,
    /// Keep every accepted push for `accepted()`; turn off for long load runs, where
    /// the records would grow without bound (counts and `subscribe` still work).
    pub record_accepted: bool,
}

impl StandInConfig {
    /// Apple's defaults: 1000 streams, tokens valid for an hour, topic `com.example.app`.
    pub fn new(
        key_id: impl Into<String>,
        team_id: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        Self {
            key_id: key_id.into(),
            team_id: team_id.into(),
            public_key_pem: public_key_pem.into(),
            topics: vec!["com.example.app".to_owned()],
            max_concurrent_streams: 1000,
            max_jwt_age: Duration::from_secs(3600),
            record_accepted: true,
        }
    }
}

/// A push the stand-in answered with `200`.
#[derive(Debug, Clone)]
pub struct AcceptedPush {
    /// The device token as it appeared in the path.
    pub token: String,
    /// Every request header (names lowercase, pseudo-headers excluded), in order.
    pub headers: Vec<(String, String)>,
    pub topic: String,
    /// The push type in effect (`alert` when the header was absent).
    pub push_type: String,
    pub priority: Option<u8>,
    pub expiration: Option<i64>,
    /// The `apns-id` answered: the request's (lowercased) or a generated one.
    pub apns_id: String,
    pub collapse_id: Option<String>,
    pub payload: serde_json::Value,
    /// The request body as sent, byte for byte.
    pub body: Vec<u8>,
    /// The provider token the push came with.
    pub jwt: String,
    pub received_at: SystemTime,
    /// Which connection carried it (1 for the first connection, and so on).
    pub connection: u64,
}

impl AcceptedPush {
    /// The first value of request header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TLS connections that negotiated `h2`.
    pub connections_opened: u64,
    /// Connections closed by `drop_connection_after`.
    pub connections_dropped: u64,
    /// Connections sent a GOAWAY by `goaway_after`.
    pub goaways_sent: u64,
    /// Streams received.
    pub requests: u64,
    /// Streams reset with `REFUSED_STREAM` by `refuse_next`.
    pub refused_streams: u64,
    /// Streams that arrived on a connection while another was open on it, before that
    /// connection answered its first push: Apple allows one stream at a time until then.
    pub streams_before_first_answer: u64,
    /// Pushes answered `200`.
    pub accepted: u64,
    /// Every distinct provider token seen (valid or not), in order of first use.
    pub distinct_jwts: Vec<String>,
    /// Answers sent, by status.
    pub responses: BTreeMap<u16, u64>,
    /// Error answers, by reason.
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    connections_opened: AtomicU64,
    connections_dropped: AtomicU64,
    goaways_sent: AtomicU64,
    requests: AtomicU64,
    refused_streams: AtomicU64,
    streams_before_first_answer: AtomicU64,
    ok: AtomicU64,
}

#[derive(Default)]
struct ErrorCounts {
    by_status: BTreeMap<u16, u64>,
    by_reason: BTreeMap<String, u64>,
}

/// State shared by the accept loop, every connection and every stream.
struct Shared {
    config: StandInConfig,
    script: Script,
    jwts: Arc<JwtRegistry>,
    records: Mutex<Vec<AcceptedPush>>,
    /// Pushes accepted, and who waits for that number to grow: a `watch` channel would
    /// notify on every push, which shows at load; this notifies only when someone waits.
    accepted_total: AtomicUsize,
    accepted_waiters: AtomicUsize,
    accepted_notify: Notify,
    pushes: broadcast::Sender<AcceptedPush>,
    /// Set by the first `subscribe`, so that until then no push is cloned for nobody
    /// (asking the channel for its receiver count takes a lock).
    subscribed: AtomicBool,
    counters: Counters,
    errors: Mutex<ErrorCounts>,
    next_connection: AtomicU64,
}

impl Shared {
    /// Counts an accepted push and wakes `wait_for_accepted` callers, if any.
    fn push_accepted(&self) {
        self.counters.ok.fetch_add(1, Ordering::AcqRel);
        self.accepted_total.fetch_add(1, Ordering::SeqCst);
        if self.accepted_waiters.load(Ordering::SeqCst) > 0 {
            self.accepted_notify.notify_waiters();
        }
    }
}

/// A running stand-in. Dropping it stops the server too; `shutdown` also waits for it.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Generates a certificate, binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: StandInConfig) -> anyhow::Result<Self> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like `start`, on a chosen address (the binary's `--port`).
    pub async fn start_on(config: StandInConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let verifier = JwtVerifier::new(&config.public_key_pem, &config.key_id, &config.team_id)?;
        let jwts = Arc::new(JwtRegistry::new(verifier));
        let tls = tls::generate("apns-standin test CA")?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (pushes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            script: Script::new(Arc::clone(&jwts)),
            jwts,
            config,
            records: Mutex::new(Vec::new()),
            accepted_total: AtomicUsize::new(0),
            accepted_waiters: AtomicUsize::new(0),
            accepted_notify: Notify::new(),
            pushes,
            subscribed: AtomicBool::new(false),
            counters: Counters::default(),
            errors: Mutex::new(ErrorCounts::default()),
            next_connection: AtomicU64::new(1),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(
            listener,
            tls.acceptor,
            Arc::clone(&shared),
            stopped,
        ));
        tracing::debug!(%addr, "APNs stand-in listening");
        Ok(Self {
            shared,
            addr,
            ca_pem: tls.ca_pem,
            stop,
            task: Some(task),
        })
    }

    /// `https://localhost:<port>`; the certificate is valid for `localhost` and `127.0.0.1`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server's certificate: the one root to trust.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Behaviour to change while the server runs.
    pub fn script(&self) -> &Script {
        &self.shared.script
    }

    /// Every push answered `200`, in the order answered (empty when not recording).
    pub fn accepted(&self) -> Vec<AcceptedPush> {
        lock(&self.shared.records).clone()
    }

    /// Waits until at least `n` pushes were accepted, or `timeout`; returns `accepted()`.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<AcceptedPush> {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        shared.accepted_waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            // Registered before the count is read, so a push counted after the read
            // wakes it (see `Shared::push_accepted`).
            let notified = shared.accepted_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.accepted_total.load(Ordering::SeqCst) >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        shared.accepted_waiters.fetch_sub(1, Ordering::SeqCst);
        self.accepted()
    }

    /// Each accepted push as it is answered (for `--print-pushes`); slow readers miss
    /// pushes rather than slow the server down.
    pub fn subscribe(&self) -> broadcast::Receiver<AcceptedPush> {
        let receiver = self.shared.pushes.subscribe();
        self.shared.subscribed.store(true, Ordering::Release);
        receiver
    }

    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        let errors = lock(&self.shared.errors);
        let mut responses = errors.by_status.clone();
        let ok = counters.ok.load(Ordering::Acquire);
        if ok > 0 {
            responses.insert(200, ok);
        }
        Stats {
            connections_opened: counters.connections_opened.load(Ordering::Acquire),
            connections_dropped: counters.connections_dropped.load(Ordering::Acquire),
            goaways_sent: counters.goaways_sent.load(Ordering::Acquire),
            requests: counters.requests.load(Ordering::Acquire),
            refused_streams: counters.refused_streams.load(Ordering::Acquire),
            streams_before_first_answer: counters
                .streams_before_first_answer
                .load(Ordering::Acquire),
            accepted: ok,
            distinct_jwts: self.shared.jwts.distinct(),
            responses,
            reasons: errors.by_reason.clone(),
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

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
