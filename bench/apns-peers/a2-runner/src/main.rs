//! Sends pushes through the `a2` crate to an APNs-compatible endpoint at 1, 100 and
//! 1,000 in flight and prints one markdown row per level (pushes/s, p50, p99).
//!
//! Usage: a2-runner <url> <ca.pem> <key.p8> [seconds]   (key id KEY1234567, team
//! TEAM123456, topic com.example.app: the stand-in's benchmark settings).
//! `A2_BENCH_LEVELS=100,1000` runs only those levels; `A2_BENCH_PAYLOAD_BYTES=300` pads
//! the alert (104 bytes of JSON) with a custom `"webex"` string to that many bytes, the
//! size of webex-push's bench alert.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use a2::request::payload::{Payload, PayloadLike};

use a2::{
    Client, ClientConfig, DefaultNotificationBuilder, Endpoint, NotificationBuilder,
    NotificationOptions, Priority, PushType,
};

const LEVELS: [usize; 3] = [1, 100, 1_000];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: a2-runner <url> <ca.pem> <key.p8> [seconds]");
        std::process::exit(2);
    }
    let host = args[1].trim_start_matches("https://").trim_end_matches('/');
    std::env::set_var("A2_ENDPOINT_HOST", host);
    std::env::set_var("A2_EXTRA_CA_FILE", &args[2]);
    let key = std::fs::read(&args[3])?;
    let seconds: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let duration = Duration::from_secs_f64(seconds);

    // `A2_BENCH_LEVELS=100,1000` runs only those levels (default 1, 100 and 1,000).
    let levels: Vec<usize> = match std::env::var("A2_BENCH_LEVELS") {
        Ok(list) => list.split(',').map(|l| l.trim().parse()).collect::<Result<_, _>>()?,
        Err(_) => LEVELS.to_vec(),
    };
    for in_flight in levels {
        let client = Client::token(
            &mut key.as_slice(),
            "KEY1234567",
            "TEAM123456",
            ClientConfig::new(Endpoint::Production),
        )?;
        // Warm-up: the connection, then a short burst.
        send(&client, 0).await?;
        drive(&client, in_flight, Duration::from_millis(500)).await;
        let started = Instant::now();
        let (mut latencies, failed) = drive(&client, in_flight, duration).await;
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            label(),
            in_flight,
            latencies.len(),
            failed,
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

/// The row's name: as shipped, or with `TCP_NODELAY` (`A2_TCP_NODELAY` set).
fn label() -> &'static str {
    match std::env::var("A2_TCP_NODELAY") {
        Ok(_) => "a2 0.10 (hyper), TCP_NODELAY",
        Err(_) => "a2 0.10 (hyper)",
    }
}

async fn send(client: &Client, worker: usize) -> Result<(), a2::Error> {
    let token = format!("{:064x}", 0x1000 + worker);
    let expiration = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let options = NotificationOptions {
        apns_topic: Some("com.example.app"),
        apns_push_type: Some(PushType::Alert),
        apns_priority: Some(Priority::High),
        apns_expiration: Some(expiration),
        ..Default::default()
    };
    let mut payload = DefaultNotificationBuilder::new()
        .set_title("New message")
        .set_body("ada@example.com")
        .set_sound("default")
        .build(&token, options);
    if let Some(pad) = padding(&payload) {
        payload.add_custom_data("webex", pad)?;
    }
    client.send(payload).await.map(|_| ())
}

/// The padding that brings `payload` to `A2_BENCH_PAYLOAD_BYTES` bytes of JSON, sized
/// once from the first payload.
fn padding(payload: &Payload<'_>) -> Option<&'static String> {
    static PAD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PAD.get_or_init(|| {
        let target: usize = std::env::var("A2_BENCH_PAYLOAD_BYTES").ok()?.parse().ok()?;
        let base = payload.to_json_string().ok()?.len() + r#","webex":"""#.len();
        let pad = "x".repeat(target.saturating_sub(base));
        eprintln!("a2 payload padded to {} bytes", base + pad.len());
        Some(pad)
    })
    .as_ref()
}

async fn drive(client: &Client, in_flight: usize, duration: Duration) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut failed = 0;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if send(&client, w).await.is_err() {
                        failed += 1;
                    }
                    latencies.push(started.elapsed());
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (latencies, f) = worker.await.unwrap();
        all.extend(latencies);
        failed += f;
    }
    (all, failed)
}
