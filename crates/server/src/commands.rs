//! What each subcommand does: `serve`, `migrate`, `push` (`check` has its own module).

use std::process::ExitCode;

use anyhow::Context as _;
use std::sync::Arc;
use webex_push_adapters::apns::ApnsClient;
use webex_push_adapters::fcm::FcmClient;
use webex_push_adapters::persistence::DieselRegistrationStore;

use secrecy::ExposeSecret as _;
use webex_push_adapters::webex::{WebexWebhooks, WebexWebhooksConfig};
use webex_push_domain::{
    AccessToken, AppFlavour, Channel, DeviceToken, Push, SystemClock, WebhookDirectory as _,
    WebhookUpkeep, test_content,
};

use crate::cli::{Command, MigrateArgs, PushArgs, ServeArgs, WebhooksAction, WebhooksArgs};
use crate::config::{self, Config};
use crate::startup::{Application, ShutdownSignal};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(&args).await,
        Command::Migrate(args) => migrate(&args).await,
        Command::Push(args) => push(&args).await,
        Command::Check(args) => Ok(crate::check::run(&args).await),
        Command::Webhooks(args) => webhooks(&args).await,
    }
}

/// `webhooks list` and `webhooks sync`: the watchdog's look, once, printed.
async fn webhooks(args: &WebhooksArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(&args.serve)?;
    let settings = config
        .webhook_upkeep
        .context("PUBLIC_URL is required: it names the webhooks that are this server's")?;
    let token = settings
        .service_token
        .as_ref()
        .context("WEBEX_SERVICE_TOKEN is required: the token whose org-wide webhooks to look at")?;
    let token = AccessToken::parse(token.expose_secret())
        .map_err(|e| anyhow::anyhow!("WEBEX_SERVICE_TOKEN: {e}"))?;
    let directory = Arc::new(
        WebexWebhooks::new(&WebexWebhooksConfig {
            base_url: settings.webex_api_url.clone(),
            timeout: settings.timeout,
        })
        .context("cannot set up the Webex webhooks client")?,
    );
    let webhooks = match args.action {
        WebhooksAction::List => directory
            .list(&token, true)
            .await
            .context("cannot list the org's webhooks")?
            .into_iter()
            .filter(|webhook| webhook.target_url == settings.target_url)
            .collect::<Vec<_>>(),
        WebhooksAction::Sync => {
            let upkeep =
                WebhookUpkeep::new(directory, settings.target_url.clone(), settings.interval);
            let (webhooks, report) = upkeep
                .sync_org(&token)
                .await
                .context("cannot check the org's webhooks")?;
            println!(
                "re-activated: {}, already active: {}, waiting (re-activated < 5 min ago): {}",
                report.repaired, report.unchanged, report.backing_off
            );
            webhooks
        }
    };
    println!(
        "org-wide webhooks pointing at {}: {}",
        settings.target_url,
        webhooks.len()
    );
    for webhook in &webhooks {
        println!(
            "  {}  {}/{}  {}",
            webhook.id,
            webhook.resource,
            webhook.event,
            if webhook.active { "active" } else { "inactive" }
        );
    }
    Ok(if webhooks.iter().all(|webhook| webhook.active) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The pool of a one-shot command. With more than one connection the pool opens
/// replacements in the background whenever one is checked out; one still connecting
/// when the process exits races libpq/OpenSSL's exit-time clean-up and crashes it
/// (SIGSEGV). A pool of one is filled before `connect` returns and never grows.
const ONE_SHOT_POOL: u32 = 1;

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
            migrations = %applied.join(","),
            "migrations applied"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one push and prints Apple's (or FCM's) answer; exits non-zero unless it was
/// delivered.
async fn push(args: &PushArgs) -> anyhow::Result<ExitCode> {
    if args.provider == "fcm" {
        return push_fcm(args).await;
    }
    let apns = config::apns_config(&args.apns)?.context(
        "APNS_KEY_FILE or APNS_KEY (with APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC) is required to push",
    )?;
    let token =
        DeviceToken::parse(args.token.trim()).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let channel: Channel = args
        .channel
        .parse()
        .map_err(|e| anyhow::anyhow!("--channel: {e}"))?;
    // APNS_ENVIRONMENT (`--apns-environment`, or `--environment`) picks the gateway.
    let environment = apns.default_environment;
    let client = ApnsClient::new(apns).context("cannot set up APNs")?;
    let content = test_content(channel, &args.message, &SystemClock);
    let push = Push {
        token,
        channel,
        environment: Some(environment),
        bundle_id: None,
        // The seed's payloads: a test cannot forge the SDK's VoIP payload KitchenSink
        // reads.
        flavour: AppFlavour::Seed,
        content,
        deliver_by: None,
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

/// `push --provider fcm`: one data message to an FCM registration token.
async fn push_fcm(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let fcm = config::fcm_config(&args.fcm)?
        .context("FCM_SERVICE_ACCOUNT_FILE or FCM_SERVICE_ACCOUNT is required to push to FCM")?;
    let token =
        DeviceToken::parse_fcm(args.token.trim()).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let channel: Channel = args
        .channel
        .parse()
        .map_err(|e| anyhow::anyhow!("--channel: {e}"))?;
    let client = FcmClient::new(fcm).context("cannot set up FCM")?;
    let push = Push {
        token,
        // An Android app has one token: its alert one.
        channel: Channel::Alert,
        environment: None,
        bundle_id: None,
        flavour: AppFlavour::KitchenSink,
        content: test_content(channel, &args.message, &SystemClock),
        deliver_by: None,
    };
    let answer = client.send_detailed(&push).await;
    println!(
        "status: {}",
        answer
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
    );
    println!("reason: {}", answer.reason.as_deref().unwrap_or("-"));
    if let Some(message) = &answer.message {
        println!("message: {message}");
    }
    println!("name: {}", answer.name.as_deref().unwrap_or("-"));
    println!("outcome: {}", answer.outcome.label());
    Ok(if answer.status == Some(200) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
