//! Pushes per second and latency through the APNs client to the local stand-in, at 1,
//! 100 and 1,000 pushes in flight, with the connections and provider tokens it used.
//!
//! `cargo bench -p webex-push-adapters --bench apns` starts a stand-in in this process
//! (on its own runtime). To measure against a stand-in process instead (as
//! `bench/apns-peers/run.sh` does, so every client meets the same server), set
//! `APNS_BENCH_ENDPOINT`, `APNS_BENCH_CA` (CA PEM file) and `APNS_BENCH_KEY` (the `.p8`
//! the stand-in verifies against). `APNS_BENCH_SECONDS` sets each level's duration,
//! `APNS_BENCH_LEVELS` the levels (`1,100,1000`), `APNS_BENCH_CLIENT_THREADS` the
//! client runtime's workers (default 1: a current-thread runtime, as the server runs its
//! push path with `RELAY_THREADS=1`; 2: a 2-worker runtime), `APNS_BENCH_WARMUP_SECONDS`
//! the warm-up before each level (default 0.5; 0 makes instruction counts under
//! `valgrind --tool=callgrind` proportional to the pushes printed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apns_standin::{StandIn, StandInConfig};
use chrono::Utc;
use p256::pkcs8::EncodePrivateKey as _;
use p256::pkcs8::der::pem::LineEnding;
use webex_push_adapters::apns::{ApnsClient, ApnsConfig, ApnsKey, KeyId, TeamId};
use webex_push_domain::{
    ApnsEnvironment, AppFlavour, BundleId, Channel, DeviceToken, NewMessage, PersonId, Push,
    PushContent, PushGateway, PushOutcome,
};

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const LEVELS: [usize; 3] = [1, 100, 1_000];

/// One level's figures.
struct Run {
    in_flight: usize,
    pushes: usize,
    failed: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    connections: Option<u64>,
    jwts: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::var("APNS_BENCH_SECONDS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("APNS_BENCH_SECONDS")?
        .unwrap_or(5.0);
    let duration = Duration::from_secs_f64(seconds);
    let warm_up: f64 = std::env::var("APNS_BENCH_WARMUP_SECONDS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("APNS_BENCH_WARMUP_SECONDS")?
        .unwrap_or(0.5);
    let warm_up = Duration::from_secs_f64(warm_up);

    // The stand-in, when in-process, gets its own runtime so its work is not queued
    // behind the client's on the same workers.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("standin")
        .enable_all()
        .build()?;
    let client_threads: usize = std::env::var("APNS_BENCH_CLIENT_THREADS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("APNS_BENCH_CLIENT_THREADS")?
        .unwrap_or(1);
    let runtime = if client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(client_threads)
            .enable_all()
            .build()?
    };

    let external = std::env::var("APNS_BENCH_ENDPOINT").ok();
    let (key_pem, standin, endpoint, ca) = match external {
        Some(endpoint) => {
            let key = std::fs::read_to_string(
                std::env::var("APNS_BENCH_KEY").context("APNS_BENCH_KEY")?,
            )?;
            let ca =
                std::fs::read_to_string(std::env::var("APNS_BENCH_CA").context("APNS_BENCH_CA")?)?;
            (key, None, endpoint, ca)
        }
        None => {
            let secret = p256::SecretKey::random(&mut rand::thread_rng());
            let pem = secret.to_pkcs8_pem(LineEnding::LF)?.to_string();
            let public = ApnsKey::from_pem(&pem)?.public_key_pem();
            let mut config = StandInConfig::new(KEY_ID, TEAM_ID, public);
            config.record_accepted = false;
            let standin = server_runtime.block_on(StandIn::start(config))?;
            let (url, ca) = (standin.url(), standin.ca_pem());
            (pem, Some(standin), url, ca)
        }
    };

    let mut config = ApnsConfig::new(
        ApnsKey::from_pem(&key_pem)?,
        KeyId::parse(KEY_ID)?,
        TeamId::parse(TEAM_ID)?,
        BundleId::parse("com.example.app")?,
    );
    config.endpoint = Some(endpoint.clone());
    config.extra_ca_pem = Some(ca);

    println!("APNs client -> stand-in at {endpoint}, {seconds} s per level, release build");
    let mut runs = Vec::new();
    let levels: Vec<usize> = match std::env::var("APNS_BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .map(|l| l.trim().parse())
            .collect::<Result<_, _>>()
            .context("APNS_BENCH_LEVELS")?,
        Err(_) => LEVELS.to_vec(),
    };
    for in_flight in levels {
        // A fresh client per level, so its connections and tokens are its own.
        let client = ApnsClient::new(config.clone())?;
        let before = standin.as_ref().map(StandIn::stats);
        let run = runtime.block_on(measure(&client, in_flight, warm_up, duration))?;
        let after = standin.as_ref().map(StandIn::stats);
        let (connections, jwts) = match (before, after) {
            (Some(before), Some(after)) => (
                Some(after.connections_opened - before.connections_opened),
                Some(after.distinct_jwts.len() - before.distinct_jwts.len()),
            ),
            _ => (None, None),
        };
        runs.push(Run {
            connections,
            jwts,
            ..run
        });
        anyhow::ensure!(
            client.provider_tokens_minted() == 1,
            "one provider token per run"
        );
    }
    let label = match client_threads {
        0 | 1 => "webex-push (h2), 1 thread".to_owned(),
        n => format!("webex-push (h2), {n} threads"),
    };
    print_table(&label, &runs);
    if let Some(standin) = standin {
        server_runtime.block_on(standin.shutdown());
    }
    Ok(())
}

fn push(i: usize) -> Push {
    let person =
        PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap_or_else(|_| unreachable!());
    let content = PushContent::Message(Arc::new(NewMessage {
        message_id: format!("msg-{i}"),
        room_id: "room-1".into(),
        room_type: Some("direct".into()),
        recipient: person.clone(),
        sender: Some(person),
        sender_email: Some("ada@example.com".into()),
        occurred_at: Utc::now(),
        webhook: None,
    }));
    Push {
        token: DeviceToken::parse(&format!("{:064x}", 0x1000 + i))
            .unwrap_or_else(|_| unreachable!()),
        channel: Channel::Alert,
        environment: Some(ApnsEnvironment::Production),
        bundle_id: None,
        flavour: AppFlavour::Seed,
        content,
        deliver_by: None,
    }
}

/// `in_flight` workers send back to back for `duration` (after a short warm-up).
async fn measure(
    client: &ApnsClient,
    in_flight: usize,
    warm_up: Duration,
    duration: Duration,
) -> anyhow::Result<Run> {
    client.warm_up().await?;
    // Warm-up traffic: connection window, allocator, JIT-free but cache-cold paths.
    if !warm_up.is_zero() {
        drive(client, in_flight, warm_up).await?;
    }
    let started = Instant::now();
    let (latencies, failed) = drive(client, in_flight, duration).await?;
    let elapsed = started.elapsed();
    let mut latencies = latencies;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Run {
        in_flight,
        pushes: latencies.len(),
        failed,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        connections: None,
        jwts: None,
    })
}

async fn drive(
    client: &ApnsClient,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let push = push(w);
                let mut latencies = Vec::with_capacity(4096);
                let mut failed = 0;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let outcome = client.send(&push).await;
                    latencies.push(started.elapsed());
                    if !matches!(outcome, PushOutcome::Delivered { .. }) {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (latencies, f) = worker.await?;
        all.extend(latencies);
        failed += f;
    }
    Ok((all, failed))
}

fn print_table(client: &str, runs: &[Run]) {
    println!();
    println!(
        "| client | in flight | pushes | failed | pushes/s | p50 ms | p99 ms | connections | JWTs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let show = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        println!(
            "| {client} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
            run.in_flight,
            run.pushes,
            run.failed,
            run.pushes as f64 / run.elapsed.as_secs_f64(),
            run.p50.as_secs_f64() * 1e3,
            run.p99.as_secs_f64() * 1e3,
            show(run.connections.map(|c| c.to_string())),
            show(run.jwts.map(|j| j.to_string())),
        );
    }
}
