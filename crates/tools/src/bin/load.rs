//! `webex-push-load`: the end-to-end load run of issue 8. Seeds N people with a VoIP
//! and an Alert device each in Postgres, starts the local APNs stand-in in-process and
//! the real `webex-push` binary against that database, then drives signed
//! `callMemberships` rings over HTTP/1.1 keep-alive connections at a fixed rate and at
//! the maximum rate, and reports throughput, latency from webhook sent to push received
//! at the stand-in, the server's CPU per 1,000 pushes and its memory, and whether any
//! accepted webhook lost its push.
//!
//! With `--android` each person also has an Android phone (an FCM token): the local FCM
//! stand-in runs too, every ring is also an FCM data message, and the report says how
//! many reached it (one per accepted webhook, or some were lost).
//!
//! The send time travels inside the call id (`<phase><seq>-<µs since the epoch>`), so
//! a push is matched to its webhook without any shared table on the hot path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use apns_standin::{AcceptedPush, StandIn, StandInConfig, Stats};
use bytes::Bytes;
use clap::Parser;
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use fcm_standin::{FcmStandIn, FcmStandInConfig};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use webex_push_adapters::persistence::{DatabaseConfig, DieselRegistrationStore};
use webex_push_tools::keys::{GeneratedKey, KEY_ID, TEAM_ID, TOPIC};
use webex_push_tools::server::{
    ServerProcess, locate_binary, machine_cpu_time, proc_cpu_time, processes_cpu_time,
};
use webex_push_tools::webex::{self, SIGNATURE_HEADER, sign};

const WEBHOOK_SECRET: &str = "load-webhook-secret";
/// Who rings everybody.
const CALLER: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
const CALL_SLOT: &str = "@@CALL@@";
const PERSON_SLOT: &str = "@@PERSON@@";

#[derive(Parser)]
#[command(
    name = "webex-push-load",
    version,
    about = "Load-tests the real webex-push binary: signed Webex rings in, pushes out at a local APNs stand-in."
)]
struct Args {
    /// The webex-push binary; default: WEBEX_PUSH_BIN, else `webex-push` next to this tool.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// An existing (empty or already seeded by this tool) database to use as is.
    /// Unset: a fresh database is created on --admin-url and dropped at the end.
    #[arg(long, env = "LOAD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The Postgres server (its admin database) to create the fresh database on. The
    /// query string is passed on to the server: same-host Postgres without TLS, as
    /// docs/configuration.md recommends for that case.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    admin_url: String,
    /// People to seed, each with one VoIP and one Alert device.
    #[arg(long, default_value_t = 100_000)]
    persons: u64,
    /// Webhooks per second in the fixed-rate phase; a comma-separated list runs one
    /// phase per rate, in order (a sweep for the highest sustained rate).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rate: Vec<u64>,
    /// Seconds of each fixed-rate phase (0 skips them).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of the maximum-rate phase (0 skips it).
    #[arg(long, default_value_t = 20)]
    max_duration: u64,
    /// HTTP/1.1 keep-alive connections to the server (each carries one request at a time).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to let the server warm up (untimed rings) before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Passed to the server as HTTP_WORKERS (unset: its default, one per CPU).
    #[arg(long)]
    http_workers: Option<usize>,
    /// Passed to the server as PUSH_WORKERS.
    #[arg(long)]
    push_workers: Option<usize>,
    /// Passed to the server as PUSH_QUEUE_CAPACITY.
    #[arg(long)]
    queue_capacity: Option<usize>,
    /// Passed to the server as DATABASE_POOL_SIZE.
    #[arg(long)]
    pool_size: Option<u32>,
    /// The server's RUST_LOG. The default keeps the one `listening` line and warnings:
    /// at `info` the server logs every webhook, which a load run measures too.
    #[arg(long, default_value = "warn,webex_push::startup=info")]
    server_log: String,
    /// Write the figures as JSON here as well.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Fail (exit 1) when any webhook is not answered 2xx, not only when a push is lost.
    #[arg(long)]
    require_all_accepted: bool,
    /// Seed an Android phone (an FCM token) beside each person's iPhone, and run the
    /// FCM stand-in: every ring is then also an FCM data message.
    #[arg(long)]
    android: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C drops the run: the server is killed and a fresh database dropped.
    let outcome = runtime.block_on(async move {
        tokio::select! {
            outcome = run(args) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A database this run created, dropped when the run ends however it ends.
struct FreshDatabase {
    admin_url: String,
    name: String,
}

impl FreshDatabase {
    fn create(admin_url: &str) -> anyhow::Result<(Self, String)> {
        let name = format!("webex_push_load_{:08x}", rand::random::<u32>());
        let mut admin = PgConnection::establish(admin_url)
            .with_context(|| "cannot connect to --admin-url (is Postgres running?)")?;
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .context("cannot create the load database")?;
        let url = with_database(admin_url, &name);
        Ok((
            Self {
                admin_url: admin_url.to_owned(),
                name,
            },
            url,
        ))
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        match PgConnection::establish(&self.admin_url) {
            Ok(mut admin) => {
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                if let Err(error) = diesel::sql_query(sql).execute(&mut admin) {
                    eprintln!(
                        "warning: cannot drop the load database {}: {error}",
                        self.name
                    );
                }
            }
            Err(error) => eprintln!(
                "warning: cannot connect to drop the load database {}: {error}",
                self.name
            ),
        }
    }
}

/// Replaces the database of a `postgres://` URL, keeping user, host and parameters.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// The UUID of seeded person `i`; the SQL in [`seed`] spells the same.
fn person_uuid(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// Creates the schema through the persistence adapter (its embedded migrations), then
/// inserts `persons` people with one VoIP and one Alert token each in one statement per
/// 50,000 people. Skips people already there, so a seeded database can be reused.
async fn seed(url: &str, persons: u64, android: bool) -> anyhow::Result<u64> {
    let mut config = DatabaseConfig::with_url(url);
    config.pool_size = Some(1);
    let store = DieselRegistrationStore::connect(&config)
        .await
        .context("cannot open the load database through the persistence adapter")?;
    drop(store);
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut conn = PgConnection::establish(&url).context("cannot connect to the load database")?;
        let mut inserted = 0;
        let chunk = 50_000;
        let mut start = 0;
        while start < persons {
            let end = (start + chunk).min(persons) - 1;
            // Tokens: 64 hex digits, `a0…` for VoIP and `b0…` for Alert, then the index.
            let sql = format!(
                "INSERT INTO devices (token, channel, person_uuid, person_id, email, registered_at, updated_at) \
                 SELECT prefix || lpad(to_hex(i), 62, '0'), channel, \
                        ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
                        '00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'), \
                        'person' || i || '@example.com', now(), now() \
                 FROM generate_series({start}::bigint, {end}::bigint) AS i, \
                      (VALUES ('a0', 'voip'), ('b0', 'alert')) AS c(prefix, channel) \
                 ON CONFLICT (token) DO NOTHING"
            );
            inserted += diesel::sql_query(sql)
                .execute(&mut conn)
                .context("seeding devices failed")? as u64;
            if android {
                // KitchenSink Android's one FCM token (not hex), on the alert channel.
                let sql = format!(
                    "INSERT INTO devices (token, channel, person_uuid, person_id, registered_at, updated_at, flavour, provider) \
                     SELECT 'load' || lpad(to_hex(i), 12, '0') || ':APA91b-' || repeat('x', 140), 'alert', \
                            ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
                            '00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'), now(), now(), 'kitchensink', 'fcm' \
                     FROM generate_series({start}::bigint, {end}::bigint) AS i \
                     ON CONFLICT (token) DO NOTHING"
                );
                inserted += diesel::sql_query(sql)
                    .execute(&mut conn)
                    .context("seeding Android devices failed")? as u64;
            }
            start = end + 1;
        }
        diesel::sql_query("ANALYZE devices")
            .execute(&mut conn)
            .context("ANALYZE failed")?;
        Ok(inserted)
    })
    .await
    .context("the seeding task failed")?
}

/// A `callMemberships` ring body with slots for the call id and the callee, serialised
/// once; each request only fills the slots.
struct Template {
    parts: Vec<String>,
    /// Which value goes between `parts[i]` and `parts[i + 1]`.
    slots: Vec<Slot>,
}

#[derive(Clone, Copy)]
enum Slot {
    Call,
    Person,
}

impl Template {
    fn ring() -> Self {
        let mut value = webex::call_membership(CALL_SLOT, CALLER, CALLER);
        value["createdBy"] = PERSON_SLOT.into();
        value["data"]["personId"] = PERSON_SLOT.into();
        let text = value.to_string();
        let mut parts = Vec::new();
        let mut slots = Vec::new();
        let mut rest = text.as_str();
        loop {
            let call = rest.find(CALL_SLOT);
            let person = rest.find(PERSON_SLOT);
            let (at, slot, len) = match (call, person) {
                (Some(c), Some(p)) if c < p => (c, Slot::Call, CALL_SLOT.len()),
                (Some(c), None) => (c, Slot::Call, CALL_SLOT.len()),
                (_, Some(p)) => (p, Slot::Person, PERSON_SLOT.len()),
                (None, None) => break,
            };
            parts.push(rest[..at].to_owned());
            slots.push(slot);
            rest = &rest[at + len..];
        }
        parts.push(rest.to_owned());
        Self { parts, slots }
    }

    fn fill(&self, call_id: &str, person_id: &str) -> String {
        let mut out = String::with_capacity(1200);
        for (part, slot) in self.parts.iter().zip(&self.slots) {
            out.push_str(part);
            out.push_str(match slot {
                Slot::Call => call_id,
                Slot::Person => person_id,
            });
        }
        if let Some(last) = self.parts.last() {
            out.push_str(last);
        }
        out
    }
}

/// Answers counted by the load generator.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    transport_errors: AtomicU64,
    /// Non-2xx answers by status.
    refused: std::sync::Mutex<BTreeMap<u16, u64>>,
}

impl Counters {
    fn refused(&self) -> BTreeMap<u16, u64> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Everything a sending connection needs.
struct Driver {
    address: String,
    host: String,
    template: Template,
    persons: u64,
    counters: Counters,
    sequence: AtomicU64,
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

impl Driver {
    /// Sends one ring to a random person on `sender`; `phase` prefixes the call id.
    async fn send_one(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        phase: char,
    ) -> Result<Option<Duration>, hyper::Error> {
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let person = rand::thread_rng().gen_range(0..self.persons);
        let person_id = webex::person_id(&person_uuid(person));
        let call_id = format!("{phase}{seq}-{}", unix_micros(SystemTime::now()));
        let body = self.template.fill(&call_id, &person_id);
        let signature = sign(WEBHOOK_SECRET, body.as_bytes());
        let request = http::Request::post("/webhook")
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            // Only an invalid header value could fail here, and none is built from input.
            self.counters
                .transport_errors
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        sender.ready().await?;
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        // Read the (empty or problem) body so the connection can carry the next request.
        response.into_body().collect().await?;
        let answered_in = started.elapsed();
        if (200..300).contains(&status) {
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut refused = self
                .counters
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *refused.entry(status).or_default() += 1;
        }
        Ok(Some(answered_in))
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// What one connection sends: a ticket per request (fixed rate) or as fast as it can
/// until the deadline (maximum rate).
enum Pace {
    Tickets(Arc<Mutex<mpsc::Receiver<()>>>),
    Until(tokio::time::Instant),
}

/// Sends until told to stop; returns how long each answer took (µs), kept per
/// connection so that timing costs no shared lock.
async fn connection_loop(driver: Arc<Driver>, pace: Pace, phase: char) -> Vec<u32> {
    let mut sender = None;
    let mut answer_times = Vec::new();
    loop {
        match &pace {
            Pace::Tickets(tickets) => {
                if tickets.lock().await.recv().await.is_none() {
                    return answer_times;
                }
            }
            Pace::Until(deadline) => {
                if tokio::time::Instant::now() >= *deadline {
                    return answer_times;
                }
            }
        }
        if sender.is_none() {
            match driver.connect().await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    driver
                        .counters
                        .transport_errors
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        if let Some(s) = sender.as_mut() {
            match driver.send_one(s, phase).await {
                Ok(Some(took)) => {
                    answer_times.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                }
                Ok(None) => {}
                Err(_) => {
                    driver
                        .counters
                        .transport_errors
                        .fetch_add(1, Ordering::Relaxed);
                    sender = None;
                }
            }
        }
    }
}

/// Latencies (µs) of the pushes of each phase, read off the stand-in's broadcast.
#[derive(Default)]
struct Arrivals {
    by_phase: BTreeMap<char, Vec<u64>>,
    /// Pushes the subscriber missed (it fell behind the broadcast buffer): counted by
    /// the stand-in all the same, only their latency is unknown.
    missed: u64,
}

async fn collect_arrivals(
    mut pushes: broadcast::Receiver<AcceptedPush>,
    mut stop: watch::Receiver<bool>,
) -> Arrivals {
    let mut arrivals = Arrivals::default();
    let mut stopping = false;
    loop {
        let push = if stopping {
            // The stand-in counts a push a moment before it broadcasts it: take what
            // is still on its way, until the channel stays quiet.
            match tokio::time::timeout(Duration::from_millis(200), pushes.recv()).await {
                Ok(push) => push,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                push = pushes.recv() => push,
                _ = stop.changed() => {
                    stopping = true;
                    continue;
                }
            }
        };
        match push {
            Ok(push) => {
                let Some(call_id) = push.payload["webex"]["callId"].as_str() else {
                    continue;
                };
                let Some(phase) = call_id.chars().next() else {
                    continue;
                };
                let Some(sent) = call_id
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let latency = unix_micros(push.received_at).saturating_sub(sent);
                arrivals.by_phase.entry(phase).or_default().push(latency);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => arrivals.missed += n,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    arrivals
}

/// Pushes answered by the stand-in: `(accepted, rejected)`.
fn standin_counts(stats: &Stats) -> (u64, u64) {
    let rejected = stats
        .responses
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(_, n)| *n)
        .sum();
    (stats.accepted, rejected)
}

#[derive(Serialize, Default, Clone)]
struct PhaseReport {
    name: String,
    /// The first character of this phase's call ids.
    #[serde(skip)]
    tag: char,
    /// The fixed rate asked for; `None` for the maximum-rate phase.
    rate: Option<u64>,
    seconds: f64,
    sent: u64,
    accepted: u64,
    refused: BTreeMap<u16, u64>,
    transport_errors: u64,
    webhooks_per_s: f64,
    pushes_received: u64,
    pushes_rejected: u64,
    pushes_per_s: f64,
    lost: i64,
    latency_samples: usize,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_p999_ms: f64,
    latency_max_ms: f64,
    /// How long the server took to answer a webhook (any status), seen by the client.
    answer_p50_ms: f64,
    answer_p99_ms: f64,
    cpu_seconds: f64,
    cpu_seconds_per_1000_pushes: f64,
    /// Where the machine's CPU went during the phase, in CPU seconds: this tool (load
    /// generator and APNs stand-in), Postgres (all its processes), the whole machine
    /// busy, and the whole machine's capacity (seconds × CPUs).
    load_tool_cpu_seconds: f64,
    postgres_cpu_seconds: f64,
    machine_busy_cpu_seconds: f64,
    machine_cpu_seconds: f64,
    rss_after_mib: f64,
    peak_rss_mib: f64,
    /// Mean time of each stage inside the server during the phase (ms), from its
    /// `/metrics` histograms (difference of `_sum` over difference of `_count`).
    stages_mean_ms: Vec<(&'static str, f64)>,
}

#[derive(Serialize, Default)]
struct Report {
    persons: u64,
    seeded_devices: u64,
    seed_seconds: f64,
    idle_rss_mib: f64,
    phases: Vec<PhaseReport>,
    arrivals_missed_by_subscriber: u64,
    /// HTTP/2 connections the server opened to the stand-in over the whole run, and the
    /// distinct provider tokens (JWTs) it presented.
    apns_connections: u64,
    apns_provider_tokens: usize,
    /// With `--android`: what reached the FCM stand-in over the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    fcm: Option<FcmReport>,
}

/// The FCM side of an `--android` run.
#[derive(Debug, Default, Serialize)]
struct FcmReport {
    messages_accepted: u64,
    /// Error answers by FCM error code (none expected).
    errors: BTreeMap<String, u64>,
    connections: u64,
    access_tokens: u64,
    /// Accepted webhooks (warm-up included) without their FCM message.
    lost: i64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Phase<'a> {
    name: String,
    tag: char,
    seconds: u64,
    /// `Some(rate)`: open loop at that rate; `None`: closed loop, as fast as answered.
    rate: Option<u64>,
    connections: usize,
    driver: &'a Arc<Driver>,
    standin: &'a StandIn,
    server: &'a ServerProcess,
}

impl Phase<'_> {
    /// Sends for `seconds`, then waits (up to 60 s) for every accepted webhook's push
    /// to be answered by the stand-in, and measures.
    async fn run(self) -> anyhow::Result<PhaseReport> {
        let driver = self.driver;
        let before_answers = standin_counts(&self.standin.stats());
        let sent_before = driver.counters.sent.load(Ordering::Relaxed);
        let accepted_before = driver.counters.accepted.load(Ordering::Relaxed);
        let errors_before = driver.counters.transport_errors.load(Ordering::Relaxed);
        let refused_before = driver.counters.refused();
        let cpu_before = self
            .server
            .cpu_time()
            .context("cannot read the server's CPU time")?;
        let split_before = CpuSplit::now();
        let stages_before = stage_totals(&self.server.base_url()).await;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.seconds);
        let mut tasks = Vec::new();
        match self.rate {
            Some(rate) => {
                let (tickets, receiver) = mpsc::channel::<()>(self.connections * 4);
                let receiver = Arc::new(Mutex::new(receiver));
                for _ in 0..self.connections {
                    tasks.push(tokio::spawn(connection_loop(
                        Arc::clone(driver),
                        Pace::Tickets(Arc::clone(&receiver)),
                        self.tag,
                    )));
                }
                // Tickets as due: every millisecond, as many as the schedule has owed
                // since the start (timers are 1 ms coarse).
                let total = rate * self.seconds;
                let mut issued = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while issued < total {
                    tick.tick().await;
                    let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                    while issued < due {
                        if tickets.send(()).await.is_err() {
                            break;
                        }
                        issued += 1;
                    }
                }
                drop(tickets);
            }
            None => {
                for _ in 0..self.connections {
                    tasks.push(tokio::spawn(connection_loop(
                        Arc::clone(driver),
                        Pace::Until(deadline),
                        self.tag,
                    )));
                }
            }
        }
        let mut answer_times: Vec<u64> = Vec::new();
        for task in tasks {
            if let Ok(times) = task.await {
                answer_times.extend(times.into_iter().map(u64::from));
            }
        }
        answer_times.sort_unstable();
        let seconds = started.elapsed().as_secs_f64();
        let window_answers = standin_counts(&self.standin.stats());
        let accepted = driver.counters.accepted.load(Ordering::Relaxed) - accepted_before;
        // Drain: every accepted webhook ends as a push answered by the stand-in.
        let drain_deadline = Instant::now() + Duration::from_secs(60);
        let mut answered;
        loop {
            let (ok, rejected) = standin_counts(&self.standin.stats());
            answered = (ok - before_answers.0) + (rejected - before_answers.1);
            if answered >= accepted || Instant::now() >= drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = standin_counts(&self.standin.stats());
        let cpu_after = self
            .server
            .cpu_time()
            .context("cannot read the server's CPU time")?;
        let split = CpuSplit::now().since(&split_before);
        let stages_after = stage_totals(&self.server.base_url()).await;
        let stages_mean_ms = STAGES
            .iter()
            .filter_map(|&(stage, _)| {
                let (sum_after, count_after) = stages_after.get(stage)?;
                let (sum_before, count_before) =
                    stages_before.get(stage).copied().unwrap_or_default();
                let count = count_after - count_before;
                (count > 0.0).then(|| (stage, (sum_after - sum_before) * 1000.0 / count))
            })
            .collect();
        let (rss, hwm) = self.server.memory().unwrap_or_default();
        let mut refused = driver.counters.refused();
        for (status, n) in refused_before {
            if let Some(count) = refused.get_mut(&status) {
                *count -= n;
            }
        }
        refused.retain(|_, n| *n > 0);
        let pushes_received = after.0 - before_answers.0;
        let pushes_rejected = after.1 - before_answers.1;
        let cpu = cpu_after.saturating_sub(cpu_before).as_secs_f64();
        Ok(PhaseReport {
            name: self.name,
            tag: self.tag,
            rate: self.rate,
            seconds,
            sent: driver.counters.sent.load(Ordering::Relaxed) - sent_before,
            accepted,
            refused,
            transport_errors: driver.counters.transport_errors.load(Ordering::Relaxed)
                - errors_before,
            webhooks_per_s: accepted as f64 / seconds,
            pushes_received,
            pushes_rejected,
            pushes_per_s: (window_answers.0 - before_answers.0) as f64 / seconds,
            lost: accepted as i64 - (pushes_received + pushes_rejected) as i64,
            cpu_seconds: cpu,
            cpu_seconds_per_1000_pushes: if pushes_received > 0 {
                cpu * 1000.0 / pushes_received as f64
            } else {
                0.0
            },
            load_tool_cpu_seconds: split.load_tool.as_secs_f64(),
            postgres_cpu_seconds: split.postgres.as_secs_f64(),
            machine_busy_cpu_seconds: split.machine_busy.as_secs_f64(),
            machine_cpu_seconds: split.machine.as_secs_f64(),
            stages_mean_ms,
            answer_p50_ms: percentile(&answer_times, 50.0),
            answer_p99_ms: percentile(&answer_times, 99.0),
            rss_after_mib: mib(rss),
            peak_rss_mib: mib(hwm),
            ..PhaseReport::default()
        })
    }
}

/// The stages of a ring inside the server, each a histogram series of its `/metrics`.
const STAGES: [(&str, &str); 6] = [
    (
        "claim (before the answer)",
        r#"webex_push_store_operation_duration_seconds{operation="claim",result="ok"}"#,
    ),
    ("queue wait", "webex_push_push_queue_wait_seconds"),
    ("APNs request", "webex_push_apns_request_duration_seconds"),
    (
        "outcome record",
        r#"webex_push_store_operation_duration_seconds{operation="record_outcome",result="ok"}"#,
    ),
    (
        "finish",
        r#"webex_push_store_operation_duration_seconds{operation="finish_event",result="ok"}"#,
    ),
    ("arrival to APNs answer", "webex_push_ring_latency_seconds"),
];

/// `(sum, count)` of each stage's histogram now; empty when `/metrics` cannot be read
/// (the phase is then reported without stages).
async fn stage_totals(base_url: &str) -> BTreeMap<&'static str, (f64, f64)> {
    let Ok(response) = reqwest::get(format!("{base_url}/metrics")).await else {
        return BTreeMap::new();
    };
    let Ok(text) = response.text().await else {
        return BTreeMap::new();
    };
    let value = |series: String| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    };
    STAGES
        .iter()
        .filter_map(|&(stage, series)| {
            // `name{labels}` becomes `name_sum{labels}` and `name_count{labels}`.
            let (name, labels) = series.split_at(series.find('{').unwrap_or(series.len()));
            let sum = value(format!("{name}_sum{labels}"))?;
            let count = value(format!("{name}_count{labels}"))?;
            Some((stage, (sum, count)))
        })
        .collect()
}

/// CPU time so far of the processes sharing the machine with the server.
#[derive(Default)]
struct CpuSplit {
    load_tool: Duration,
    postgres: Duration,
    machine_busy: Duration,
    machine: Duration,
}

impl CpuSplit {
    fn now() -> Self {
        let (machine_busy, machine) = machine_cpu_time().unwrap_or_default();
        Self {
            load_tool: proc_cpu_time(std::process::id()).unwrap_or_default(),
            postgres: processes_cpu_time("postgres"),
            machine_busy,
            machine,
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            load_tool: self.load_tool.saturating_sub(before.load_tool),
            postgres: self.postgres.saturating_sub(before.postgres),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine: self.machine.saturating_sub(before.machine),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if args.persons == 0 {
        bail!("--persons must be at least 1");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let binary = locate_binary(args.server_bin.as_deref())?;
    let mut report = Report {
        persons: args.persons,
        ..Report::default()
    };

    // The database: given, or fresh (dropped when `_fresh` goes out of scope).
    let (_fresh, url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let admin_url = args.admin_url.clone();
            let (fresh, url) =
                tokio::task::spawn_blocking(move || FreshDatabase::create(&admin_url))
                    .await
                    .context("creating the database failed")??;
            println!("database: created {} (dropped at the end)", fresh.name);
            (Some(fresh), url)
        }
    };
    let seed_started = Instant::now();
    report.seeded_devices = seed(&url, args.persons, args.android).await?;
    report.seed_seconds = seed_started.elapsed().as_secs_f64();
    println!(
        "seeded {} people, {} new devices, in {:.1} s",
        args.persons, report.seeded_devices, report.seed_seconds
    );

    let dir = tempfile::Builder::new()
        .prefix("webex-push-load-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let key = GeneratedKey::generate()?;
    let key_file = key.write_p8(dir.path())?;
    let mut standin_config = StandInConfig::new(KEY_ID, TEAM_ID, key.public_pem.clone());
    standin_config.topics = vec![TOPIC.to_owned()];
    standin_config.record_accepted = false;
    let standin = StandIn::start(standin_config)
        .await
        .context("cannot start the APNs stand-in")?;
    let ca_file = dir.path().join("standin-ca.pem");
    std::fs::write(&ca_file, standin.ca_pem()).context("cannot write the stand-in's CA")?;
    let fcm = if args.android {
        let mut config = FcmStandInConfig::test();
        config.record_accepted = false;
        Some(
            FcmStandIn::start(config)
                .await
                .context("cannot start the FCM stand-in")?,
        )
    } else {
        None
    };

    let mut envs = vec![
        ("PORT", "0".to_owned()),
        ("HOST", "127.0.0.1".to_owned()),
        ("DATABASE_URL", url.clone()),
        ("MIGRATE_ON_START", "false".to_owned()),
        ("APNS_KEY_FILE", key_file.display().to_string()),
        ("APNS_KEY_ID", KEY_ID.to_owned()),
        ("APNS_TEAM_ID", TEAM_ID.to_owned()),
        ("APNS_TOPIC", TOPIC.to_owned()),
        ("APNS_ENDPOINT", standin.url()),
        ("APNS_CA_FILE", ca_file.display().to_string()),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("RUST_LOG", args.server_log.clone()),
    ];
    if let Some(fcm) = &fcm {
        let account = dir.path().join("fcm-service-account.json");
        std::fs::write(&account, fcm.test_service_account_json())
            .context("cannot write the FCM service account")?;
        let ca = dir.path().join("fcm-standin-ca.pem");
        std::fs::write(&ca, fcm.ca_pem()).context("cannot write the FCM stand-in's CA")?;
        envs.push(("FCM_SERVICE_ACCOUNT_FILE", account.display().to_string()));
        envs.push(("FCM_ENDPOINT", fcm.url()));
        envs.push(("FCM_CA_FILE", ca.display().to_string()));
    }
    if let Some(n) = args.http_workers {
        envs.push(("HTTP_WORKERS", n.to_string()));
    }
    if let Some(n) = args.push_workers {
        envs.push(("PUSH_WORKERS", n.to_string()));
    }
    if let Some(n) = args.queue_capacity {
        envs.push(("PUSH_QUEUE_CAPACITY", n.to_string()));
    }
    if let Some(n) = args.pool_size {
        envs.push(("DATABASE_POOL_SIZE", n.to_string()));
    }
    let http = reqwest::Client::new();
    let mut server =
        ServerProcess::start(&binary, dir.path(), &envs, None, Duration::from_secs(30)).await?;
    server.wait_ready(&http, Duration::from_secs(30)).await?;
    // The server checks its APNs credentials at start-up with one push of its own;
    // let it land before the counting starts (a server without that check goes on
    // after the wait).
    let warm_deadline = Instant::now() + Duration::from_secs(5);
    while standin.stats().requests == 0 && Instant::now() < warm_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (idle_rss, _) = server.memory().unwrap_or_default();
    report.idle_rss_mib = mib(idle_rss);
    println!(
        "server: {} (pid {}) on {}, idle RSS {:.1} MiB",
        binary.display(),
        server.pid(),
        server.base_url(),
        report.idle_rss_mib
    );

    let (stop_arrivals, stopped) = watch::channel(false);
    let arrivals = tokio::spawn(collect_arrivals(standin.subscribe(), stopped));
    let driver = Arc::new(Driver {
        address: server.address().to_owned(),
        host: server.address().to_owned(),
        template: Template::ring(),
        persons: args.persons,
        counters: Counters::default(),
        sequence: AtomicU64::new(0),
    });

    let mut phases = Vec::new();
    if args.warmup > 0 {
        let warm = Phase {
            name: "warm-up".to_owned(),
            tag: 'w',
            seconds: args.warmup,
            rate: Some(args.rate.first().copied().unwrap_or(1000).min(1000)),
            connections: args.connections.min(8),
            driver: &driver,
            standin: &standin,
            server: &server,
        };
        warm.run().await?;
    }
    // Call ids start with a letter per phase: `a`, `b`, ... for the fixed rates.
    for (tag, &rate) in ('a'..='v').zip(args.rate.iter().filter(|_| args.duration > 0)) {
        if rate == 0 {
            bail!("--rate must be at least 1");
        }
        println!("fixed rate: {rate}/s for {} s ...", args.duration);
        phases.push(
            Phase {
                name: format!("fixed {rate}/s"),
                tag,
                seconds: args.duration,
                rate: Some(rate),
                connections: args.connections,
                driver: &driver,
                standin: &standin,
                server: &server,
            }
            .run()
            .await?,
        );
    }
    if args.max_duration > 0 {
        println!(
            "maximum rate: {} connections for {} s ...",
            args.connections, args.max_duration
        );
        phases.push(
            Phase {
                name: format!("maximum, {} connections", args.connections),
                tag: 'x',
                seconds: args.max_duration,
                rate: None,
                connections: args.connections,
                driver: &driver,
                standin: &standin,
                server: &server,
            }
            .run()
            .await?,
        );
    }

    let _ = stop_arrivals.send(true);
    let arrivals = arrivals.await.context("the arrivals task failed")?;
    report.arrivals_missed_by_subscriber = arrivals.missed;
    for phase in &mut phases {
        let mut latencies = arrivals
            .by_phase
            .get(&phase.tag)
            .cloned()
            .unwrap_or_default();
        latencies.sort_unstable();
        phase.latency_samples = latencies.len();
        phase.latency_p50_ms = percentile(&latencies, 50.0);
        phase.latency_p99_ms = percentile(&latencies, 99.0);
        phase.latency_p999_ms = percentile(&latencies, 99.9);
        phase.latency_max_ms = latencies.last().map_or(0.0, |&m| m as f64 / 1000.0);
    }
    report.phases = phases;
    let stats = standin.stats();
    report.apns_connections = stats.connections_opened;
    report.apns_provider_tokens = stats.distinct_jwts.len();

    let status = server.stop(Duration::from_secs(30)).await;
    standin.shutdown().await;
    // Counted after the server drained its queue: every accepted ring is in.
    let mut fcm_lost = 0;
    if let Some(fcm) = fcm {
        let stats = fcm.stats();
        let accepted = driver.counters.accepted.load(Ordering::Acquire);
        fcm_lost = i64::try_from(accepted).unwrap_or(i64::MAX)
            - i64::try_from(stats.accepted).unwrap_or(i64::MAX);
        report.fcm = Some(FcmReport {
            messages_accepted: stats.accepted,
            errors: stats.errors.clone(),
            connections: stats.connections_opened,
            access_tokens: stats.tokens_issued,
            lost: fcm_lost,
        });
        fcm.shutdown().await;
    }
    let clean_exit = matches!(&status, Ok(s) if s.success());
    if !clean_exit {
        eprintln!("warning: the server did not exit cleanly: {status:?}");
    }

    print_report(&report);
    if let Some(path) = &args.report_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lost: i64 = report.phases.iter().map(|p| p.lost).sum();
    let refused: u64 = report
        .phases
        .iter()
        .map(|p| p.refused.values().sum::<u64>() + p.transport_errors)
        .sum();
    let mut ok = clean_exit;
    if lost != 0 {
        eprintln!(
            "FAIL: {lost} accepted webhook(s) did not end as a push answered by the stand-in"
        );
        ok = false;
    }
    if fcm_lost != 0 {
        eprintln!(
            "FAIL: {fcm_lost} accepted webhook(s) did not end as an FCM message answered by the FCM stand-in"
        );
        ok = false;
    }
    if args.require_all_accepted && refused > 0 {
        eprintln!("FAIL: {refused} webhook(s) were refused or failed in transport");
        ok = false;
    }
    Ok(ok)
}

fn print_report(report: &Report) {
    println!();
    println!(
        "people {}  (devices seeded {} in {:.1} s)   server idle RSS {:.1} MiB",
        report.persons, report.seeded_devices, report.seed_seconds, report.idle_rss_mib
    );
    for p in &report.phases {
        println!();
        println!("== {} ({:.1} s)", p.name, p.seconds);
        println!(
            "  webhooks: sent {}  accepted {} ({:.0}/s)  refused {:?}  transport errors {}",
            p.sent, p.accepted, p.webhooks_per_s, p.refused, p.transport_errors
        );
        println!(
            "  pushes:   received {} ({:.0}/s in the window)  rejected {}  lost {}",
            p.pushes_received, p.pushes_per_s, p.pushes_rejected, p.lost
        );
        println!(
            "  latency webhook sent -> push at the stand-in ({} samples): p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            p.latency_samples,
            p.latency_p50_ms,
            p.latency_p99_ms,
            p.latency_p999_ms,
            p.latency_max_ms
        );
        println!(
            "  answer to the webhook (seen by the client): p50 {:.2} ms  p99 {:.2} ms",
            p.answer_p50_ms, p.answer_p99_ms
        );
        println!(
            "  server:   CPU {:.2} s = {:.3} s per 1,000 pushes   RSS after {:.1} MiB   peak RSS {:.1} MiB",
            p.cpu_seconds, p.cpu_seconds_per_1000_pushes, p.rss_after_mib, p.peak_rss_mib
        );
        let per_webhook = |cpu: f64| cpu / p.accepted.max(1) as f64 * 1e6;
        println!(
            "  CPU per accepted webhook: server {:.0} µs   Postgres {:.0} µs   together {:.0} µs",
            per_webhook(p.cpu_seconds),
            per_webhook(p.postgres_cpu_seconds),
            per_webhook(p.cpu_seconds + p.postgres_cpu_seconds)
        );
        if !p.stages_mean_ms.is_empty() {
            let stages: Vec<String> = p
                .stages_mean_ms
                .iter()
                .map(|(stage, ms)| format!("{stage} {ms:.2} ms"))
                .collect();
            println!("  stages (server's metrics, mean): {}", stages.join("   "));
        }
        println!(
            "  machine:  busy {:.2} of {:.2} CPU s   load tool + stand-in {:.2} s   Postgres {:.2} s   server {:.2} s   other {:.2} s",
            p.machine_busy_cpu_seconds,
            p.machine_cpu_seconds,
            p.load_tool_cpu_seconds,
            p.postgres_cpu_seconds,
            p.cpu_seconds,
            (p.machine_busy_cpu_seconds
                - p.load_tool_cpu_seconds
                - p.postgres_cpu_seconds
                - p.cpu_seconds)
                .max(0.0)
        );
    }
    println!(
        "\nAPNs stand-in, whole run: {} connection(s) opened, {} provider token(s) presented",
        report.apns_connections, report.apns_provider_tokens
    );
    if let Some(fcm) = &report.fcm {
        println!(
            "FCM stand-in, whole run: {} data message(s) accepted, errors {:?}, {} connection(s), {} access token(s), lost {}",
            fcm.messages_accepted, fcm.errors, fcm.connections, fcm.access_tokens, fcm.lost
        );
    }
    if report.arrivals_missed_by_subscriber > 0 {
        println!(
            "\n(note: the latency collector fell behind and missed {} pushes; they are counted, only their latency is unknown)",
            report.arrivals_missed_by_subscriber
        );
    }
}
