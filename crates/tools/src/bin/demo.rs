//! `webex-push-demo`: the whole flow on one machine with nothing to set up. Starts the
//! local APNs and FCM stand-ins and the real `webex-push` binary on embedded SQLite in
//! a temporary directory, registers three phones of one person (one as the original
//! sample app does, one as Cisco's current KitchenSink app does on iOS, one as it does
//! on Android), sends signed Webex webhooks, and prints every push as it reaches a
//! stand-in, in the shape each app reads. Cleans up after
//! itself; exits non-zero when an expected push does not arrive.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apns_standin::{AcceptedPush, StandIn, StandInConfig};
use clap::Parser;
use fcm_standin::{AcceptedMessage, FcmStandIn, FcmStandInConfig};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use webex_push_tools::keys::{GeneratedKey, KEY_ID, TEAM_ID, TOPIC};
use webex_push_tools::server::{ServerProcess, locate_binary};
use webex_push_tools::webex::{self, SIGNATURE_HEADER, sign};
use webex_standin::{Person, WebexStandIn};

/// The person whose phones ring, who calls them, and the admin who made the org's
/// `telephony_push` webhook.
const PERSON: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const CALLER: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
const ADMIN: &str = "11111111-2222-4333-8444-555555555555";
/// The server's `WEBHOOK_SECRET`: what webhooks made by hand (an admin's) are signed
/// with, and the key the secrets of the webhooks the server makes are derived from.
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
/// Ada's Webex access token, as the apps send it to prove who they are.
const ADA_TOKEN: &str = "ada-demo-access-token";

#[derive(Parser)]
#[command(
    name = "webex-push-demo",
    version,
    about = "Runs webex-push against local APNs and FCM stand-ins and shows the pushes it sends."
)]
struct Args {
    /// The webex-push binary; default: WEBEX_PUSH_BIN, else `webex-push` next to this tool.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seconds to wait for the server to start and for each push to arrive.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Also print the server's own log lines.
    #[arg(long)]
    server_log: bool,
    /// Skip the `messages` webhook (an alert push to the message token).
    #[arg(long)]
    no_message: bool,
}

/// ANSI styling only when stdout is a terminal.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }
}

/// What the demo owns, so that it is cleaned up however the run ends.
struct Demo {
    args: Args,
    style: Style,
    dir: Option<tempfile::TempDir>,
    standin: Option<StandIn>,
    fcm: Option<FcmStandIn>,
    /// FCM messages printed so far.
    fcm_seen: usize,
    webex: Option<WebexStandIn>,
    server: Option<ServerProcess>,
    http: reqwest::Client,
    /// Pushes that arrived, and how many each step expected.
    received: usize,
    expected: usize,
    /// The registered tokens and which phone's token each is: pushes to any other
    /// (the server's start-up warm-up push to an all-zero token) are not a phone's.
    tokens: Vec<(String, &'static str)>,
    /// Pushes to other tokens, seen and skipped.
    skipped: usize,
}

/// One webhook to send and the pushes it must produce.
struct Step {
    title: &'static str,
    body: Value,
    expect: usize,
    /// FCM data messages it must produce (to the Android phone).
    expect_fcm: usize,
    /// Delivered by the Webex stand-in from this webhook of Ada's (signed with that
    /// webhook's own secret) instead of posted here with `WEBHOOK_SECRET`.
    via: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let style = Style {
            on: std::io::stdout().is_terminal(),
        };
        let mut demo = Demo {
            args,
            style,
            dir: None,
            standin: None,
            fcm: None,
            fcm_seen: 0,
            webex: None,
            server: None,
            http: reqwest::Client::new(),
            received: 0,
            expected: 0,
            tokens: Vec::new(),
            skipped: 0,
        };
        let outcome = tokio::select! {
            outcome = demo.run() => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        let cleaned = demo.clean_up().await;
        match (outcome, cleaned) {
            (Ok(()), Ok(())) => ExitCode::SUCCESS,
            (Err(error), cleaned) => {
                eprintln!("{} {error:#}", demo.style.red("error:"));
                if let Err(error) = cleaned {
                    eprintln!("{} {error:#}", demo.style.red("error:"));
                }
                ExitCode::FAILURE
            }
            (Ok(()), Err(error)) => {
                eprintln!("{} {error:#}", demo.style.red("error:"));
                ExitCode::FAILURE
            }
        }
    })
}

impl Demo {
    async fn run(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(self.args.timeout);
        let binary = locate_binary(self.args.server_bin.as_deref())?;
        let s = &self.style;
        println!(
            "{}",
            s.bold(
                "webex-push demo: Webex webhooks in, APNs and FCM pushes out, all on this machine"
            )
        );
        println!();

        let dir = tempfile::Builder::new()
            .prefix("webex-push-demo-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let dir_path = dir.path().to_path_buf();
        self.dir = Some(dir);

        let key = GeneratedKey::generate()?;
        let key_file = key.write_p8(&dir_path)?;
        let mut standin_config = StandInConfig::new(KEY_ID, TEAM_ID, key.public_pem.clone());
        standin_config.topics = vec![TOPIC.to_owned()];
        let standin = StandIn::start(standin_config)
            .await
            .context("cannot start the APNs stand-in")?;
        let ca_file = dir_path.join("standin-ca.pem");
        std::fs::write(&ca_file, standin.ca_pem()).context("cannot write the stand-in's CA")?;
        let pushes = standin.subscribe();
        let standin_url = standin.url();
        self.standin = Some(standin);
        let fcm = FcmStandIn::start(FcmStandInConfig::test())
            .await
            .context("cannot start the FCM stand-in")?;
        let fcm_account = dir_path.join("fcm-service-account.json");
        std::fs::write(&fcm_account, fcm.test_service_account_json())
            .context("cannot write the FCM service account")?;
        let fcm_ca = dir_path.join("fcm-standin-ca.pem");
        std::fs::write(&fcm_ca, fcm.ca_pem()).context("cannot write the FCM stand-in's CA")?;
        let fcm_url = fcm.url();
        self.fcm = Some(fcm);

        let (echo, mut echoed) = tokio::sync::mpsc::unbounded_channel::<String>();
        let echo = if self.args.server_log {
            let dim = self.style.on;
            tokio::spawn(async move {
                while let Some(line) = echoed.recv().await {
                    if dim {
                        println!("\x1b[2m  server │ {line}\x1b[0m");
                    } else {
                        println!("  server │ {line}");
                    }
                }
            });
            Some(echo)
        } else {
            None
        };
        let webex = WebexStandIn::start()
            .await
            .context("cannot start the Webex stand-in")?;
        webex.add_person(ADA_TOKEN, Person::user(PERSON));
        let webex_url = webex.url();
        self.webex = Some(webex);
        // PUBLIC_URL names the server's own address, so its port is chosen here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free port")?
            .port();
        let envs = [
            ("PORT", port.to_string()),
            ("PUBLIC_URL", format!("http://127.0.0.1:{port}")),
            ("REGISTER_AUTH", "webex".to_owned()),
            ("WEBEX_API_URL", webex_url.clone()),
            ("HOST", "127.0.0.1".to_owned()),
            ("HTTP_WORKERS", "1".to_owned()),
            ("APNS_KEY_FILE", key_file.display().to_string()),
            ("APNS_KEY_ID", KEY_ID.to_owned()),
            ("APNS_TEAM_ID", TEAM_ID.to_owned()),
            ("APNS_TOPIC", TOPIC.to_owned()),
            ("APNS_ENDPOINT", standin_url.clone()),
            ("APNS_CA_FILE", ca_file.display().to_string()),
            (
                "FCM_SERVICE_ACCOUNT_FILE",
                fcm_account.display().to_string(),
            ),
            ("FCM_ENDPOINT", fcm_url.clone()),
            ("FCM_CA_FILE", fcm_ca.display().to_string()),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("SHUTDOWN_TIMEOUT_SECS", "10".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        // DATABASE_URL stays unset: the server's default, `webex-push.db` in its
        // working directory, which is the temporary directory.
        let server = ServerProcess::start(&binary, &dir_path, &envs, echo, timeout).await?;
        self.server = Some(server);
        let server = self.server.as_mut().context("the server just started")?;
        server.wait_ready(&self.http, timeout).await?;
        let base = server.base_url();
        let pid = server.pid();
        let s = &self.style;
        println!("  {} {}", s.dim("temporary directory"), dir_path.display());
        println!(
            "  {} {standin_url}  (trusts a P-256 key generated just now, id {KEY_ID}, team {TEAM_ID})",
            s.dim("APNs stand-in      ")
        );
        println!(
            "  {} {fcm_url}  (FCM v1 and its token endpoint; trusts the committed test service account)",
            s.dim("FCM stand-in       ")
        );
        println!(
            "  {} {webex_url}  (people/me and webhooks, as Webex; knows Ada's access token)",
            s.dim("Webex stand-in     ")
        );
        println!(
            "  {} {} (pid {pid}) on {base}, SQLite webex-push.db, ready",
            s.dim("webex-push         "),
            binary.display()
        );
        println!();

        let (seed_voip, seed_alert) = (random_token(), random_token());
        let (ks_voip, ks_alert) = (random_token(), random_token());
        self.tokens = vec![
            (seed_voip.clone(), "phone A (2017 sample app), VoIP token"),
            (
                seed_alert.clone(),
                "phone A (2017 sample app), message token",
            ),
            (ks_voip.clone(), "phone B (KitchenSink app), VoIP token"),
            (ks_alert.clone(), "phone B (KitchenSink app), device token"),
        ];
        let android = random_fcm_token();
        println!(
            "{}",
            s.bold("1. Ada's three phones register their tokens, each app with its own body and her Webex access token (REGISTER_AUTH=webex)")
        );
        let registrations = [
            (
                "phone A, an app built on the original 2017 sample:",
                json!({
                    "email": "ada@example.com",
                    "voipToken": seed_voip,
                    "msgToken": seed_alert,
                    "personId": webex::person_id(PERSON),
                }),
                json!({
                    "email": "ada@example.com",
                    "voipToken": short(&seed_voip),
                    "msgToken": short(&seed_alert),
                    "personId": webex::person_id(PERSON),
                }),
            ),
            (
                "phone B, Cisco's current KitchenSink sample app (SDK 3.x):",
                json!({
                    "voipToken": ks_voip,
                    "deviceToken": ks_alert,
                    "pushProvider": "APNS",
                    "userId": webex::person_id(PERSON),
                    "prod": false,
                }),
                json!({
                    "voipToken": short(&ks_voip),
                    "deviceToken": short(&ks_alert),
                    "pushProvider": "APNS",
                    "userId": webex::person_id(PERSON),
                    "prod": false,
                }),
            ),
            (
                "phone C, KitchenSink for Android (FCM):",
                json!({
                    "pushProvider": "FCM",
                    "deviceToken": android,
                    "userId": webex::person_id(PERSON),
                }),
                json!({
                    "pushProvider": "FCM",
                    "deviceToken": short(&android),
                    "userId": webex::person_id(PERSON),
                }),
            ),
        ];
        for (who, register, shown) in registrations {
            let s = &self.style;
            println!("   {}", s.dim(who));
            println!("   {} {base}/register", s.cyan("POST"));
            println!(
                "   {}",
                s.dim("Authorization: Bearer <Ada's Webex access token>")
            );
            print_indented(&pretty(&shown), "   ");
            let response = self
                .http
                .post(format!("{base}/register"))
                .bearer_auth(ADA_TOKEN)
                .json(&register)
                .send()
                .await
                .context("POST /register failed")?;
            let status = response.status().as_u16();
            if status != 204 {
                let body = response.text().await.unwrap_or_default();
                bail!("POST /register answered {status}: {body}");
            }
            println!("   → {}", self.style.green("204 No Content"));
        }
        println!();

        let rings = self.show_webhooks(timeout).await?;
        let mut steps = vec![
            Step {
                title: "Webex rings Ada: callMemberships/created, state notified, delivered by the Webex stand-in from the webhook the server made (phone A: VoIP; phone B: an alert with the webhook; phone C: a high-priority data message with it)",
                body: webex::call_membership("demo-call-1", PERSON, CALLER)["data"].clone(),
                expect: 2,
                expect_fcm: 1,
                via: Some(rings),
            },
            Step {
                title: "A Webex Calling call alerts Ada: telephony_calls/created, state alerting (phone A only: phones B and C ring from the call's telephony_push)",
                body: webex::telephony_ring("demo-call-2", PERSON, "Grace Hopper", "+15551234567"),
                expect: 1,
                expect_fcm: 0,
                via: None,
            },
            Step {
                title: "The Calling SDK's push for the same call: telephony_push/updated (phone A rang for it already; phone B: the SDK's apnsPayload, verbatim; phone C: its fcmPayload, as Webex sent it)",
                body: webex::telephony_push("demo-call-2", PERSON, ADMIN, "Grace Hopper"),
                expect: 1,
                expect_fcm: 1,
                via: None,
            },
        ];
        if !self.args.no_message {
            steps.push(Step {
                title: "Grace writes to Ada: messages/created in a direct room",
                body: webex::direct_message("demo-message-1", PERSON, CALLER),
                expect: 2,
                expect_fcm: 1,
                via: None,
            });
        }
        let mut pushes = pushes;
        for (n, step) in steps.into_iter().enumerate() {
            self.send_step(n + 2, step, &base, &mut pushes, timeout)
                .await?;
        }

        let s = &self.style;
        println!("{}", s.bold("Summary"));
        let standin = self.standin.as_ref().context("the stand-in runs")?;
        let stats = standin.stats();
        println!(
            "   {} of {} expected pushes arrived at the phones' tokens ({} other: the server's start-up check); the stand-in answered {:?} over {} HTTP/2 connection(s) with {} provider token(s)",
            self.received,
            self.expected,
            self.skipped,
            stats.responses,
            stats.connections_opened,
            stats.distinct_jwts.len()
        );
        if let Some(fcm) = &self.fcm {
            let stats = fcm.stats();
            println!(
                "   the FCM stand-in accepted {} data message(s) over {} HTTP/2 connection(s) with {} access token(s)",
                stats.accepted, stats.connections_opened, stats.tokens_issued
            );
        }
        if self.received < self.expected {
            bail!(
                "{} expected push(es) did not arrive",
                self.expected - self.received
            );
        }
        println!("   {}", s.green("every expected push arrived"));
        Ok(())
    }

    async fn send_step(
        &mut self,
        number: usize,
        step: Step,
        base: &str,
        pushes: &mut broadcast::Receiver<AcceptedPush>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let s = &self.style;
        println!("{}", s.bold(&format!("{number}. {}", step.title)));
        let sent = Instant::now();
        if let Some(id) = &step.via {
            let webex = self.webex.as_ref().context("the Webex stand-in runs")?;
            println!(
                "   {} {base}/webhook  {}",
                s.cyan("POST"),
                s.dim("(by the Webex stand-in, signed with the webhook's own secret)")
            );
            let status = webex
                .deliver(id, "created", &webex::person_id(CALLER), step.body.clone())
                .await
                .context("the Webex stand-in has no active webhook to deliver from")?;
            if status != 204 {
                bail!("POST /webhook answered {status} to the Webex stand-in's delivery");
            }
        } else {
            let text = step.body.to_string();
            let signature = sign(WEBHOOK_SECRET, text.as_bytes());
            println!(
                "   {} {base}/webhook  {}: {}…",
                s.cyan("POST"),
                SIGNATURE_HEADER,
                &signature[..16]
            );
            let response = self
                .http
                .post(format!("{base}/webhook"))
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .body(text)
                .send()
                .await
                .context("POST /webhook failed")?;
            let status = response.status().as_u16();
            if status != 204 {
                let body = response.text().await.unwrap_or_default();
                bail!("POST /webhook answered {status}: {body}");
            }
        }
        println!(
            "   → {}",
            s.green("204 No Content (queued; the push is sent in the background)")
        );
        self.expected += step.expect;
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..step.expect {
            let push = match tokio::time::timeout_at(deadline, self.next_push(pushes)).await {
                Ok(Some(push)) => push,
                Ok(None) | Err(_) => {
                    println!("   {}", self.style.red("✗ no push arrived in time"));
                    println!();
                    return Ok(());
                }
            };
            self.received += 1;
            self.print_push(&push, sent.elapsed());
        }
        if step.expect_fcm > 0 {
            self.expected += step.expect_fcm;
            let fcm = self.fcm.as_ref().context("the FCM stand-in runs")?;
            let wanted = self.fcm_seen + step.expect_fcm;
            let messages = fcm.wait_for_accepted(wanted, timeout).await;
            let new: Vec<AcceptedMessage> = messages.iter().skip(self.fcm_seen).cloned().collect();
            if new.len() < step.expect_fcm {
                println!("   {}", self.style.red("✗ no FCM message arrived in time"));
            }
            for message in new.iter().take(step.expect_fcm) {
                self.received += 1;
                self.print_fcm(message, sent.elapsed());
            }
            self.fcm_seen = messages.len().min(wanted);
        }
        println!();
        Ok(())
    }

    fn print_fcm(&self, message: &AcceptedMessage, after: Duration) {
        let s = &self.style;
        println!(
            "   {} {} data message at the FCM stand-in after {:.1} ms, for phone C (KitchenSink for Android)",
            s.green("◀"),
            s.bold(message.priority.as_deref().unwrap_or("NORMAL")),
            after.as_secs_f64() * 1000.0
        );
        println!(
            "     {} /v1/projects/{}/messages:send  ttl {}",
            s.cyan("POST"),
            fcm_standin::TEST_PROJECT_ID,
            message.ttl.as_deref().unwrap_or("-")
        );
        let mut data = serde_json::Map::new();
        for (key, value) in &message.data {
            let shown = if key == "webhookData" {
                let cut: String = value.chars().take(60).collect();
                format!(
                    "{cut}… ({} bytes: the whole webhook as posted)",
                    value.len()
                )
            } else {
                value.clone()
            };
            data.insert(key.clone(), Value::String(shown));
        }
        print_indented(&pretty(&json!({ "data": data })), "     ");
    }

    /// Waits until the server has made Ada's webhooks at the Webex stand-in (in the
    /// background of her registration), prints them, and returns her rings webhook.
    async fn show_webhooks(&self, timeout: Duration) -> anyhow::Result<String> {
        let webex = self.webex.as_ref().context("the Webex stand-in runs")?;
        let deadline = Instant::now() + timeout;
        let webhooks = loop {
            let webhooks = webex.webhooks();
            if webhooks.len() >= webex_push_domain::PERSONAL_WEBHOOKS.len() {
                break webhooks;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not make Ada's webhooks: {} of them",
                    webhooks.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let s = &self.style;
        println!(
            "{}",
            s.bold("   The server made Ada's webhooks at Webex with her token (no app holds a webhook secret):")
        );
        for webhook in &webhooks {
            let secret = webhook.secret.as_deref().unwrap_or_default();
            println!(
                "     {}/{} {} → {}  secret {}… (derived; only the server knows it)",
                webhook.resource,
                webhook.event,
                webhook.filter.as_deref().unwrap_or(""),
                webhook.target_url,
                secret.chars().take(8).collect::<String>()
            );
        }
        println!();
        webhooks
            .iter()
            .find(|w| w.resource == "callMemberships" && w.event == "created")
            .map(|w| w.id.clone())
            .context("no callMemberships webhook")
    }

    /// The next push to the registered phone. Others are skipped with a note: the
    /// server checks its APNs credentials at start-up with one push to an all-zero
    /// token, which the stand-in accepts. A lag report is skipped too (the demo never
    /// sends enough to lag).
    async fn next_push(
        &mut self,
        pushes: &mut broadcast::Receiver<AcceptedPush>,
    ) -> Option<AcceptedPush> {
        loop {
            match pushes.recv().await {
                Ok(push) if self.tokens.iter().any(|(token, _)| *token == push.token) => {
                    return Some(push);
                }
                Ok(push) => {
                    self.skipped += 1;
                    println!(
                        "   {}",
                        self.style.dim(&format!(
                            "(skipped a {} push to {}: the server's start-up check of its APNs connection)",
                            push.push_type,
                            short(&push.token)
                        ))
                    );
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn print_push(&self, push: &AcceptedPush, after: Duration) {
        let s = &self.style;
        let phone = self
            .tokens
            .iter()
            .find(|(token, _)| *token == push.token)
            .map_or("?", |(_, phone)| phone);
        println!(
            "   {} {} push at the stand-in after {:.1} ms, for {phone}",
            s.green("◀"),
            s.bold(&push.push_type),
            after.as_secs_f64() * 1000.0
        );
        println!("     {} /3/device/{}", s.cyan("POST"), short(&push.token));
        for (name, value) in &push.headers {
            let value = if name == "authorization" {
                // `bearer <JWT>`: enough to recognise, not enough to reuse.
                let jwt = value.strip_prefix("bearer ").unwrap_or(value);
                format!("bearer {}…", jwt.chars().take(16).collect::<String>())
            } else {
                value.clone()
            };
            println!("     {}: {value}", s.dim(name));
        }
        if push.push_type == "voip" && push.payload.get("webex").is_none() {
            // The SDK's own payload: shown as sent, byte for byte.
            println!("     {}", s.dim("(the body as sent, byte for byte)"));
            print_indented(&String::from_utf8_lossy(&push.body), "     ");
            return;
        }
        let mut payload = push.payload.clone();
        if let Some(Value::String(webhook)) = payload.get("webhookData") {
            // The whole webhook as posted, as one string: shown cut short.
            let shown: String = webhook.chars().take(60).collect();
            payload["webhookData"] = Value::String(format!(
                "{shown}… ({} bytes: the whole webhook as posted)",
                webhook.len()
            ));
        }
        print_indented(&pretty(&payload), "     ");
    }

    /// Stops the server with SIGTERM (it drains its queue and exits), stops the
    /// stand-in and removes the temporary directory.
    async fn clean_up(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Some(server) = self.server.take() {
            match server.stop(Duration::from_secs(30)).await {
                Ok(status) if status.success() => {
                    println!(
                        "{}",
                        self.style.dim("server stopped cleanly (SIGTERM, exit 0)")
                    );
                }
                Ok(status) => problems.push(format!("the server exited with {status}")),
                Err(error) => problems.push(error.to_string()),
            }
        }
        if let Some(standin) = self.standin.take() {
            standin.shutdown().await;
        }
        if let Some(fcm) = self.fcm.take() {
            fcm.shutdown().await;
        }
        if let Some(webex) = self.webex.take() {
            webex.shutdown().await;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            match dir.close() {
                Ok(()) => println!("{}", self.style.dim(&format!("removed {path}"))),
                Err(error) => problems.push(format!("cannot remove {path}: {error}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

/// A device token as APNs issues them: 32 random bytes in hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An FCM registration token as they look: an instance id, a colon, ~150 characters.
fn random_fcm_token() -> String {
    let bytes: [[u8; 16]; 3] = rand::random();
    let tail: String = bytes.iter().flatten().map(|b| format!("{b:02x}")).collect();
    format!("dEmO{}:APA91b{tail}", &tail[..7])
}

/// The first 8 hex digits, as the server's own logs show tokens.
fn short(token: &str) -> String {
    format!("{}…", &token[..token.len().min(8)])
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn print_indented(text: &str, indent: &str) {
    for line in text.lines() {
        println!("{indent}{line}");
    }
}
