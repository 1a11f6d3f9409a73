//! Pushes per second and latency through the FCM client to the local FCM stand-in, at 1
//! and 100 pushes in flight (and whatever `FCM_BENCH_LEVELS` lists), with the
//! connections and access tokens it used.
//!
//! `cargo bench -p webex-push-adapters --bench fcm` starts the stand-in in this process,
//! on its own runtime, as the APNs bench does. `FCM_BENCH_SECONDS` sets each level's
//! duration (default 5), `FCM_BENCH_LEVELS` the levels (`1,100`), `FCM_BENCH_WARMUP_SECONDS`
//! the warm-up before each level (default 0.5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use fcm_standin::{FcmStandIn, FcmStandInConfig};
use webex_push_adapters::fcm::{FcmClient, FcmConfig, ServiceAccount};
use webex_push_domain::{
    AppFlavour, CallId, Caller, Channel, DeviceToken, EventSource, IncomingCall, PersonId, Push,
    PushContent, PushGateway, PushOutcome, RawJson,
};

const LEVELS: [usize; 2] = [1, 100];

struct Run {
    in_flight: usize,
    pushes: usize,
    failed: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    connections: u64,
    tokens: u64,
}

fn env_f64(name: &str, default: f64) -> anyhow::Result<f64> {
    Ok(std::env::var(name)
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context(name.to_owned())?
        .unwrap_or(default))
}

fn main() -> anyhow::Result<()> {
    let seconds = env_f64("FCM_BENCH_SECONDS", 5.0)?;
    let duration = Duration::from_secs_f64(seconds);
    let warm_up = Duration::from_secs_f64(env_f64("FCM_BENCH_WARMUP_SECONDS", 0.5)?);
    let levels: Vec<usize> = match std::env::var("FCM_BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .map(|l| l.trim().parse())
            .collect::<Result<_, _>>()
            .context("FCM_BENCH_LEVELS")?,
        Err(_) => LEVELS.to_vec(),
    };
    // The stand-in on its own runtime, so its work is not queued behind the client's.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fcm-standin")
        .enable_all()
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut standin_config = FcmStandInConfig::test();
    standin_config.record_accepted = false;
    let standin = server_runtime.block_on(FcmStandIn::start(standin_config))?;
    let account = ServiceAccount::from_json(&standin.test_service_account_json(), "bench")?;
    let mut config = FcmConfig::new(account).with_endpoint(&standin.url())?;
    config.extra_ca_pem = Some(standin.ca_pem());

    println!(
        "FCM client -> stand-in at {}, {seconds} s per level, release build",
        standin.url()
    );
    let mut runs = Vec::new();
    for in_flight in levels {
        // A fresh client per level, so its connection and access token are its own.
        let client = FcmClient::new(config.clone())?;
        let before = standin.stats();
        let run = runtime.block_on(measure(&client, in_flight, warm_up, duration))?;
        let after = standin.stats();
        runs.push(Run {
            connections: after.connections_opened - before.connections_opened,
            tokens: after.tokens_issued - before.tokens_issued,
            ..run
        });
        anyhow::ensure!(
            client.access_tokens_minted() == 1,
            "one access token per run"
        );
    }
    print_table(&runs);
    server_runtime.block_on(standin.shutdown());
    Ok(())
}

/// A `telephony_push` ring, the FCM message that matters most: its `fcmPayload`
/// whole and entry by entry, high priority.
fn push(i: usize) -> anyhow::Result<Push> {
    let person = PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c")?;
    let fcm_payload = RawJson::parse(&format!(
        r#"{{"pushId":"push-{i}","externalTrackingId":"tracking-{i}","name":"Grace Hopper","number":"+15557654321","version":"1.0"}}"#
    ))?;
    let content = PushContent::IncomingCall(Arc::new(IncomingCall {
        call_id: CallId::parse(&format!("call-{i}")).context("a short call id")?,
        callee: person,
        caller: Caller::default(),
        occurred_at: Utc::now(),
        source: EventSource::TelephonyPush,
        sdk_payload: None,
        fcm_payload: Some(fcm_payload),
        webhook: None,
        callee_field: None,
        audience: None,
    }));
    Ok(Push {
        token: DeviceToken::parse_fcm(&format!("bench{i:04}:APA91b{}", "x".repeat(140)))?,
        channel: Channel::Alert,
        environment: None,
        bundle_id: None,
        flavour: AppFlavour::KitchenSink,
        content,
        deliver_by: Some(Utc::now() + chrono::TimeDelta::seconds(30)),
    })
}

async fn measure(
    client: &FcmClient,
    in_flight: usize,
    warm_up: Duration,
    duration: Duration,
) -> anyhow::Result<Run> {
    client.warm_up().await?;
    if !warm_up.is_zero() {
        drive(client, in_flight, warm_up).await?;
    }
    let started = Instant::now();
    let (mut latencies, failed) = drive(client, in_flight, duration).await?;
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    anyhow::ensure!(!latencies.is_empty(), "no push was sent");
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Run {
        in_flight,
        pushes: latencies.len(),
        failed,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        connections: 0,
        tokens: 0,
    })
}

async fn drive(
    client: &FcmClient,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::with_capacity(in_flight);
    for w in 0..in_flight {
        let client = client.clone();
        let push = push(w)?;
        workers.push(tokio::spawn(async move {
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
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (latencies, f) = worker.await?;
        all.extend(latencies);
        failed += f;
    }
    Ok((all, failed))
}

fn print_table(runs: &[Run]) {
    println!();
    println!(
        "| client | in flight | pushes | failed | pushes/s | p50 ms | p99 ms | connections | access tokens |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        println!(
            "| webex-push FCM (reqwest, HTTP/2) | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
            run.in_flight,
            run.pushes,
            run.failed,
            run.pushes as f64 / run.elapsed.as_secs_f64(),
            run.p50.as_secs_f64() * 1e3,
            run.p99.as_secs_f64() * 1e3,
            run.connections,
            run.tokens,
        );
    }
}
