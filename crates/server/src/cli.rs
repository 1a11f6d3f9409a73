//! The command line: `serve` (the default), `migrate`, `push` and `check`, every option
//! an environment variable of the same name (`--port` / `PORT`). Each subcommand takes
//! the options it uses, and no others.
//!
//! These are raw values; [`crate::config`] turns them into a validated `Config`.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "webex-push",
    version,
    propagate_version = true,
    about = "Relays Webex call and message webhooks to iPhones through APNs.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s options, so that `webex-push` alone serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate(MigrateArgs),
    /// Send one push with the configured key and print Apple's answer.
    // `--environment` was this command's own name for the gateway: kept as an alias.
    #[command(mut_arg("apns_environment", |arg| arg
        .alias("environment")
        .help("The gateway to push through: production or sandbox")))]
    Push(PushArgs),
    /// Check the set-up step by step without changing anything (configuration, APNs
    /// key, provider token, APNs connection, database), print each step's outcome and a
    /// warning for each insecure setting; non-zero exit on any failure.
    Check(ServeArgs),
    /// The org-wide webhooks pointing at PUBLIC_URL that WEBEX_SERVICE_TOKEN sees:
    /// `list` prints them, `sync` also re-activates those Webex disabled (what the
    /// watchdog does), once; non-zero exit when one stays inactive.
    Webhooks(WebhooksArgs),
}

#[derive(Args, Clone)]
pub struct WebhooksArgs {
    #[arg(value_enum)]
    pub action: WebhooksAction,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WebhooksAction {
    List,
    Sync,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub database_pool: DatabasePoolArgs,
    #[command(flatten)]
    pub apns: ApnsArgs,
    #[command(flatten)]
    pub fcm: FcmArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Clone)]
pub struct AuthArgs {
    /// Enables `/admin/...` with `Authorization: Bearer <ADMIN_TOKEN>`; unset, those
    /// routes answer 404.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// `off` (anyone may register any personId, as the original) or `webex` (the app
    /// proves who it is with its Webex access token).
    #[arg(long, env = "REGISTER_AUTH", value_enum, default_value_t = RegisterAuth::Off)]
    pub register_auth: RegisterAuth,
    /// Webex's REST API, asked who holds an access token when REGISTER_AUTH=webex.
    #[arg(long, env = "WEBEX_API_URL", default_value = "https://webexapis.com")]
    pub webex_api_url: String,
    /// Devices one person keeps per channel (VoIP, alert); registering one more
    /// removes the least recently registered.
    #[arg(long, env = "MAX_DEVICES_PER_PERSON", default_value_t = 10)]
    pub max_devices_per_person: usize,
    /// Registrations (`POST` and `DELETE /register`) one client address may make per
    /// minute, also the burst an idle one may send; 0: unlimited. IPv6 counts per /64.
    #[arg(long, env = "REGISTER_RATE_PER_MINUTE", default_value_t = 300)]
    pub register_rate_per_minute: u32,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For`
    /// names the client; unset: the socket's peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// The server's own `https://` address as Webex reaches it. With REGISTER_AUTH=webex,
    /// each registration makes sure the person's webhooks point at `PUBLIC_URL/webhook`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a person's webhooks count as checked: later registrations within it ask
    /// Webex nothing.
    #[arg(long, env = "WEBHOOK_CHECK_INTERVAL_SECS", default_value_t = 900)]
    pub webhook_check_interval_secs: u64,
    /// A Webex token (a service app's, or an org admin's) whose org-wide webhooks
    /// pointing at PUBLIC_URL (the `telephony_push` firehose) are watched and
    /// re-activated when Webex disables them.
    #[arg(long, env = "WEBEX_SERVICE_TOKEN", hide_env_values = true)]
    pub webex_service_token: Option<String>,
    /// Seconds between the watchdog's looks at those webhooks.
    #[arg(long, env = "WEBHOOK_WATCHDOG_INTERVAL_SECS", default_value_t = 120)]
    pub webhook_watchdog_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegisterAuth {
    Off,
    Webex,
}

#[derive(Args, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Clone)]
pub struct PushArgs {
    /// The device token to push to (hex for APNs; the registration token for FCM).
    #[arg(long)]
    pub token: String,
    /// Which push service the token is of: `apns` (iOS) or `fcm` (Android).
    #[arg(long, value_parser = ["apns", "fcm"], default_value = "apns")]
    pub provider: String,
    /// `voip` rings (PushKit token), `alert` shows a notification.
    #[arg(long, value_parser = ["voip", "alert"])]
    pub channel: String,
    /// Text of the alert (for `alert`) or caller name shown by CallKit (for `voip`).
    /// With `--provider fcm`, `voip` sends a high-priority incoming-call data message
    /// and `alert` a message notice.
    #[arg(long, default_value = "Test push from webex-push")]
    pub message: String,
    #[command(flatten)]
    pub apns: ApnsArgs,
    #[command(flatten)]
    pub fcm: FcmArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// FCM (Android): a Google service account allowed to send with the Firebase project.
#[derive(Args, Clone, Default)]
pub struct FcmArgs {
    /// Path to the service-account JSON (Firebase console, Service accounts).
    #[arg(
        long,
        env = "FCM_SERVICE_ACCOUNT_FILE",
        conflicts_with = "fcm_service_account"
    )]
    pub fcm_service_account_file: Option<PathBuf>,
    /// The service-account JSON itself, or it base64-encoded.
    #[arg(long, env = "FCM_SERVICE_ACCOUNT", hide_env_values = true)]
    pub fcm_service_account: Option<String>,
    /// Replaces Google's FCM endpoint (the local stand-in).
    #[arg(long, env = "FCM_ENDPOINT")]
    pub fcm_endpoint: Option<String>,
    /// An extra trusted root certificate (PEM) for FCM_ENDPOINT and the account's token_uri.
    #[arg(long, env = "FCM_CA_FILE")]
    pub fcm_ca_file: Option<PathBuf>,
    /// Seconds one request to FCM (or its token endpoint) may take.
    #[arg(long, env = "FCM_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub fcm_request_timeout_secs: u64,
}

#[derive(Args, Clone)]
pub struct HttpArgs {
    /// TCP port to listen on; 0 picks a free one (logged at start-up).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// HTTP worker threads; defaults to the number of CPUs.
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Seconds a client may take to send a whole request (headers and body).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Seconds to finish in-flight requests and drain the push queue on SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
}

#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// `postgres://...` or `sqlite://PATH`; unset: the SQLite file `webex-push.db` in
    /// the working directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds to open one database connection.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub database_connect_timeout_secs: u64,
    /// Seconds a request waits for a pooled connection before answering 503.
    #[arg(long, env = "DATABASE_CHECKOUT_TIMEOUT_SECS", default_value_t = 3)]
    pub database_checkout_timeout_secs: u64,
    /// Seconds one statement may run.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECS", default_value_t = 5)]
    pub database_statement_timeout_secs: u64,
}

/// The database options of a server, beyond reaching the database.
#[derive(Args, Clone)]
pub struct DatabasePoolArgs {
    /// Connections in the pool (default 10 for Postgres, 4 for SQLite).
    #[arg(long, env = "DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,
    /// Apply pending migrations at start-up.
    #[arg(
        long,
        env = "MIGRATE_ON_START",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub migrate_on_start: bool,
}

#[derive(Args, Clone)]
pub struct ApnsArgs {
    /// Path of the APNs auth key (`AuthKey_XXXXXXXXXX.p8`).
    #[arg(long, env = "APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,
    /// The auth key's PEM text (or that text base64-encoded), instead of APNS_KEY_FILE.
    #[arg(long, env = "APNS_KEY", hide_env_values = true)]
    pub apns_key: Option<String>,
    /// The key's 10-character id (Apple developer portal, Keys).
    #[arg(long, env = "APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// The 10-character team id.
    #[arg(long, env = "APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// The app's bundle id; VoIP pushes go to `<topic>.voip`.
    #[arg(long, env = "APNS_TOPIC")]
    pub apns_topic: Option<String>,
    /// Gateway for tokens registered without an environment: production or sandbox.
    #[arg(long, env = "APNS_ENVIRONMENT", default_value = "production")]
    pub apns_environment: String,
    /// Replaces Apple's gateways (a staging proxy or the local stand-in).
    #[arg(long, env = "APNS_ENDPOINT")]
    pub apns_endpoint: Option<String>,
    /// An extra trusted root certificate (PEM) for APNS_ENDPOINT.
    #[arg(long, env = "APNS_CA_FILE")]
    pub apns_ca_file: Option<PathBuf>,
    /// Seconds one push request to Apple may take.
    #[arg(long, env = "APNS_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub apns_request_timeout_secs: u64,
}

#[derive(Args, Clone)]
pub struct WebhookArgs {
    /// The Webex webhook secret(s), comma-separated to rotate. Required when pushes go
    /// to Apple, unless ALLOW_UNSIGNED_WEBHOOKS=true; set but blank is an error.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Accept unsigned webhooks even though pushes go to Apple's gateways: anyone who
    /// finds the URL can then ring every registered phone.
    #[arg(
        long,
        env = "ALLOW_UNSIGNED_WEBHOOKS",
        default_value = "false",
        value_parser = BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub allow_unsigned_webhooks: bool,
    /// Events waiting for a push worker; beyond it webhooks wait for room, then get
    /// 503 + Retry-After.
    #[arg(long, env = "PUSH_QUEUE_CAPACITY", default_value_t = 1024)]
    pub push_queue_capacity: usize,
    /// How long a webhook may wait for room in a full push queue before it gets 503
    /// (milliseconds; 0: refuse at once).
    #[arg(long, env = "PUSH_QUEUE_WAIT_MS", default_value_t = 2000)]
    pub push_queue_wait_ms: u64,
    /// Tasks relaying queued events to APNs concurrently.
    #[arg(long, env = "PUSH_WORKERS", default_value_t = 256)]
    pub push_workers: usize,
    /// Threads the push workers, the APNs and FCM connections and the background upkeep
    /// run on (HTTP has its own, `HTTP_WORKERS`); 1 keeps a ring's hops on one thread.
    #[arg(long, env = "RELAY_THREADS", default_value_t = 1)]
    pub relay_threads: usize,
    /// Pushes in flight to Apple at once.
    #[arg(long, env = "APNS_MAX_IN_FLIGHT", default_value_t = 1000)]
    pub apns_max_in_flight: usize,
    /// Hours a webhook event stays remembered for de-duplication; older keys are pruned.
    #[arg(long, env = "SEEN_EVENTS_RETENTION_HOURS", default_value_t = 24)]
    pub seen_events_retention_hours: u64,
}

#[derive(Args, Clone)]
pub struct LogArgs {
    /// `text` (readable) or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `webex_push=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Parses the process's arguments and environment. An environment variable set to
    /// an empty (or blank) value counts as unset, as Heroku and Kubernetes configs
    /// write `HTTP_WORKERS=` for "no value".
    pub fn parse_env() -> Self {
        match Self::try_parse_env_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        }
    }

    /// [`Cli::parse_env`] with the arguments given.
    pub fn try_parse_env_from(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Self, clap::Error> {
        let matches = without_blank_env(Self::command()).try_get_matches_from(args)?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// The command to run, `serve` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

impl Command {
    pub fn log(&self) -> &LogArgs {
        match self {
            Command::Serve(args) => &args.log,
            Command::Migrate(args) => &args.log,
            Command::Push(args) => &args.log,
            Command::Check(args) => &args.log,
            Command::Webhooks(args) => &args.serve.log,
        }
    }
}

/// Variables whose blank value is an error rather than "unset": a blank secret is one
/// empty Kubernetes secret key away from turning authentication off.
const BLANK_IS_AN_ERROR: &[&str] = &["WEBHOOK_SECRET"];

/// Unbinds every argument whose environment variable is set but blank, so clap falls
/// back to the default instead of trying to parse `""` (except [`BLANK_IS_AN_ERROR`]).
fn without_blank_env(command: clap::Command) -> clap::Command {
    let command = command.mut_args(|arg| {
        let blank = arg
            .get_env()
            .filter(|name| !BLANK_IS_AN_ERROR.iter().any(|kept| name == kept))
            .and_then(std::env::var_os)
            .is_some_and(|value| value.to_string_lossy().trim().is_empty());
        if blank { arg.env(None::<&str>) } else { arg }
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    names.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, without_blank_env)
    })
}
