//! What each subcommand does: `serve`, `migrate`, `push`, `check`.

use std::process::ExitCode;

use anyhow::Context as _;
use webex_push_adapters::apns::ApnsClient;
use webex_push_adapters::persistence::DieselRegistrationStore;
use webex_push_domain::{ApnsEnvironment, Channel, DeviceToken, Push};

use crate::admin::test_content;
use crate::cli::{Command, MigrateArgs, PushArgs, RegisterAuth, ServeArgs};
use crate::config::{self, Config, WebhookAuth};
use crate::startup::{Application, ShutdownSignal};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(&args).await,
        Command::Migrate(args) => migrate(&args).await,
        Command::Push(args) => push(&args).await,
        Command::Check(args) => check(&args).await,
    }
}

/// The pool of a one-shot command. With more than one connection the pool opens
/// replacements in the background whenever one is checked out; one still connecting
/// when the process exits races libpq/OpenSSL's exit-time clean-up and crashes it
/// (SIGSEGV). A pool of one is filled before `connect` returns and never grows.
const ONE_SHOT_POOL: u32 = 1;

/// Prints one step's result as `ok` or `FAILED: reason`; the value when it passed.
fn step<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => {
            println!("{name:<22} ok");
            Some(value)
        }
        Err(error) => {
            println!("{name:<22} FAILED: {}", one_line(&error.to_string()));
            None
        }
    }
}

/// A cause chain on one line: drivers (libpq) put newlines in their messages and
/// repeat them as their own causes.
fn one_line(text: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in text.split(": ") {
        let part = part.split_whitespace().collect::<Vec<_>>().join(" ");
        if !part.is_empty() && !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// Each step of serving, tried in order without serving: every failure is printed
/// with its reason; steps that need a failed one are reported as skipped.
async fn check(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    // Everything but the key first, so a bad key is reported as such.
    let mut keyless = args.clone();
    keyless.apns.apns_key_file = None;
    keyless.apns.apns_key = None;
    keyless.apns.apns_key_id = None;
    keyless.apns.apns_team_id = None;
    keyless.apns.apns_topic = None;
    let config = step(
        "configuration",
        Config::from_args(&keyless).map_err(|e| e.to_string()),
    );
    failed |= config.is_none();

    let apns = step(
        "APNs key",
        config::apns_config(&args.apns)
            .map_err(|e| e.to_string())
            .and_then(|apns| {
                apns.ok_or_else(|| {
                    "no key configured: set APNS_KEY_FILE or APNS_KEY (with \
                     APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC)"
                        .to_owned()
                })
            }),
    );
    let auth =
        config::webhook_secrets(args.webhook.webhook_secret.as_deref()).and_then(|secrets| {
            config::webhook_auth(
                &secrets,
                args.webhook.allow_unsigned_webhooks,
                apns.as_ref(),
            )
        });
    match step("webhook auth", auth.map_err(|e| e.to_string())) {
        Some(WebhookAuth::Signed { secrets }) => {
            println!("{:<22} (signed: {secrets} secret(s))", "");
        }
        Some(WebhookAuth::UnsignedAllowed) => println!(
            "{:<22} WARNING: unsigned (ALLOW_UNSIGNED_WEBHOOKS=true): anyone who finds the URL can ring every registered phone",
            ""
        ),
        Some(WebhookAuth::UnsignedNoRealPushes) => println!(
            "{:<22} WARNING: unsigned (allowed while no push can reach Apple; set WEBHOOK_SECRET)",
            ""
        ),
        None => failed = true,
    }
    match args.auth.register_auth {
        RegisterAuth::Webex => println!(
            "{:<22} ok (webex: registrations prove who they are)",
            "register auth"
        ),
        RegisterAuth::Off => println!(
            "{:<22} WARNING: off: anyone who knows a person id can register a device for them and receive their notices",
            "register auth"
        ),
    }
    let client = match apns {
        Some(apns) => {
            let endpoint = apns.endpoint.clone();
            let client = step(
                "APNs provider token",
                ApnsClient::new(apns)
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|client| {
                        if client.provider_tokens_minted() > 0 {
                            Ok(client)
                        } else {
                            Err("no provider token could be minted".to_owned())
                        }
                    }),
            );
            if let Some(client) = &client {
                let name = "APNs connection";
                let warmed = client.warm_up().await;
                if step(name, warmed.map_err(|e| e.to_string())).is_none() {
                    failed = true;
                } else if let Some(endpoint) = endpoint {
                    println!("{:<22} (endpoint {endpoint})", "");
                }
            }
            client
        }
        None => None,
    };
    if client.is_none() {
        failed = true;
        println!("{:<22} skipped (no usable key)", "APNs connection");
    }

    match config {
        Some(config) => {
            let mut database = config.database;
            // A check applies no migration: that is `migrate`'s (or start-up's) job.
            database.run_migrations = false;
            database.pool_size = Some(ONE_SHOT_POOL);
            let connected = match DieselRegistrationStore::connect(&database).await {
                Ok(store) => {
                    use webex_push_domain::RegistrationPort as _;
                    store
                        .ping()
                        .await
                        .map(|()| store.backend_name())
                        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                }
                Err(error) => Err(format!("{:#}", anyhow::Error::from(error))),
            };
            if let Some(backend) = step("database", connected) {
                println!("{:<22} ({backend})", "");
            } else {
                failed = true;
            }
        }
        None => println!("{:<22} skipped (configuration invalid)", "database"),
    }
    println!(
        "{}",
        if failed {
            "check FAILED"
        } else {
            "check passed"
        }
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(args)?;
    // Before binding: from the first "listening" line on, SIGTERM means a clean stop.
    let signal = ShutdownSignal::install()?;
    let application = Application::build(config).await?;
    application.run_until(signal.received()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let mut database = config::database_config(&args.database)?;
    // Connect without migrating, so the versions applied here can be reported.
    database.run_migrations = false;
    database.pool_size = Some(ONE_SHOT_POOL);
    let store = DieselRegistrationStore::connect(&database)
        .await
        .context("DATABASE_URL: cannot open the database")?;
    let applied = store.run_migrations().await?;
    if applied.is_empty() {
        tracing::info!(
            backend = store.backend_name(),
            "database already up to date"
        );
    } else {
        tracing::info!(
            backend = store.backend_name(),
            ?applied,
            "migrations applied"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one push and prints Apple's answer; exits non-zero unless it was delivered.
async fn push(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let apns = config::apns_config(&args.apns)?.context(
        "APNS_KEY_FILE or APNS_KEY (with APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC) is required to push",
    )?;
    let token =
        DeviceToken::parse(args.token.trim()).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let channel: Channel = args
        .channel
        .parse()
        .map_err(|e| anyhow::anyhow!("--channel: {e}"))?;
    let environment = args
        .environment
        .as_deref()
        .map(str::parse::<ApnsEnvironment>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--environment: {e}"))?
        .unwrap_or(apns.default_environment);
    let client = ApnsClient::new(apns).context("cannot set up APNs")?;
    let content = test_content(channel, &args.message);
    let push = Push {
        token,
        channel,
        environment: Some(environment),
        bundle_id: None,
        content,
    };
    let answer = client.send_detailed(&push).await;
    println!(
        "status: {}",
        answer
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
    );
    println!("reason: {}", answer.reason.as_deref().unwrap_or("-"));
    println!("apns-id: {}", answer.apns_id);
    println!("environment: {}", answer.environment);
    println!("outcome: {}", answer.outcome.label());
    println!("latency: {} ms", answer.latency.as_millis());
    Ok(if answer.status == Some(200) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
