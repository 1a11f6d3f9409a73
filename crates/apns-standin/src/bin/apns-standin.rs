//! Runs the APNs stand-in as a process, for the demo and the load tool: prints the URL it
//! listens on as its first line, then (with `--print-pushes`) one JSON line per push.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use apns_standin::{AcceptedPush, StandIn, StandInConfig};
use clap::Parser;
use tokio::sync::broadcast::error::RecvError;

/// A local stand-in for Apple's APNs provider API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Expected JWT `kid`.
    #[arg(long, env = "APNS_KEY_ID")]
    key_id: String,
    /// Expected JWT `iss`.
    #[arg(long, env = "APNS_TEAM_ID")]
    team_id: String,
    /// PEM file with the public key (SubjectPublicKeyInfo) or the `.p8` private key
    /// whose public half provider tokens must verify against.
    #[arg(long = "public-key")]
    public_key: PathBuf,
    /// Allowed bundle id (repeatable); `<bundle>.voip` follows.
    #[arg(long = "topic", default_value = "com.example.app")]
    topics: Vec<String>,
    /// Write the CA certificate (PEM) clients must trust to this file.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS per connection.
    #[arg(long, default_value_t = 1000)]
    max_concurrent_streams: u32,
    /// Print each accepted push (headers and payload) as a JSON line on stdout.
    #[arg(long)]
    print_pushes: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let pem = std::fs::read_to_string(&args.public_key)
        .with_context(|| format!("cannot read --public-key {}", args.public_key.display()))?;
    let mut config = StandInConfig::new(args.key_id, args.team_id, public_key_pem(&pem)?);
    config.topics = args.topics;
    config.max_concurrent_streams = args.max_concurrent_streams;
    // A process has no `accepted()` reader; records would only grow.
    config.record_accepted = false;
    let standin = StandIn::start_on(config, SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    if let Some(path) = &args.ca_out {
        std::fs::write(path, standin.ca_pem())
            .with_context(|| format!("cannot write --ca-out {}", path.display()))?;
    }
    // Subscribing makes every push get recorded: only when they are printed.
    let mut pushes = args.print_pushes.then(|| standin.subscribe());
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", standin.url())?;
        stdout.flush()?;
    }
    let printer = async {
        let Some(pushes) = pushes.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match pushes.recv().await {
                Ok(push) => print_push(&push),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "stdout too slow; pushes not printed");
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    tokio::select! {
        () = printer => {}
        signal = tokio::signal::ctrl_c() => signal?,
    }
    let stats = standin.stats();
    eprintln!(
        "connections {} requests {} accepted {} distinct JWTs {} responses {:?}",
        stats.connections_opened,
        stats.requests,
        stats.accepted,
        stats.distinct_jwts.len(),
        stats.responses
    );
    standin.shutdown().await;
    Ok(())
}

/// Accepts a public key, or a private key (PKCS#8, the `.p8` format) whose public half
/// is taken, so the demo can point both the server and the stand-in at the same file.
fn public_key_pem(pem: &str) -> anyhow::Result<String> {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
    if pem.contains("PRIVATE KEY") {
        let key = p256::SecretKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("--public-key: not a PKCS#8 P-256 key: {e}"))?;
        return key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("--public-key: cannot encode the public key: {e}"));
    }
    Ok(pem.to_owned())
}

fn print_push(push: &AcceptedPush) {
    let line = serde_json::json!({
        "connection": push.connection,
        "apns-id": push.apns_id,
        "headers": push.headers.iter().filter(|(name, _)| name != "authorization")
            .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str())))
            .collect::<serde_json::Map<_, _>>(),
        // Tokens are never printed in full, as in logs.
        "token": format!("{}...", push.token.get(..8).unwrap_or_default()),
        "payload": push.payload,
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}
