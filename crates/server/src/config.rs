//! The server's typed configuration, built from the command line / environment and
//! validated at start-up with errors that name the variable to fix.
//!
//! No global state: tests build their own `Config` with [`Config::new`].

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use webex_push_adapters::apns::{ApnsConfig, ApnsConfigError, ApnsKey, KeyId, TeamId};
use webex_push_adapters::fcm::{FcmConfig, FcmConfigError, ServiceAccount};
use webex_push_adapters::identity::WebexIdentityConfig;
use webex_push_adapters::persistence::DatabaseConfig;
use webex_push_domain::{ApnsEnvironment, BundleId, Deadlines, RegistrationService, RetryPolicy};

use crate::cli::{
    ApnsArgs, AuthArgs, DatabaseArgs, DatabasePoolArgs, FcmArgs, RegisterAuth, ServeArgs,
};
use crate::rate_limit::{RateLimit, parse_trusted_proxies};

/// A configuration value that cannot work. The message starts with the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable}: {problem}")]
    Invalid {
        variable: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Apns(#[from] ApnsConfigError),
    #[error(transparent)]
    Fcm(#[from] FcmConfigError),
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        problem: problem.into(),
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpSettings,
    pub database: DatabaseConfig,
    /// `None`: no APNs key configured. The server still serves registrations, but is
    /// not ready and refuses webhooks that would push (see `docs/configuration.md`).
    pub apns: Option<ApnsConfig>,
    /// `None`: no FCM service account; Android registrations are refused.
    pub fcm: Option<FcmConfig>,
    /// Empty: webhooks are not authenticated.
    pub webhook_secrets: Vec<SecretString>,
    /// `ALLOW_UNSIGNED_WEBHOOKS`: unsigned webhooks accepted although pushes go to Apple.
    pub allow_unsigned_webhooks: bool,
    pub queue: QueueSettings,
    pub deadlines: Deadlines,
    pub retry: RetryPolicy,
    /// `None`: the admin API is off (its routes answer 404).
    pub admin_token: Option<SecretString>,
    /// `Some` with `REGISTER_AUTH=webex`: how to ask Webex who holds a token.
    pub register_auth: Option<WebexIdentityConfig>,
    /// Devices per person and channel, registrations per client address.
    pub register_limits: RegisterLimits,
    /// `Some` with `PUBLIC_URL`: the server looks after the webhooks pointing at it.
    pub webhook_upkeep: Option<UpkeepSettings>,
}

/// How the server looks after its webhooks.
#[derive(Debug, Clone)]
pub struct UpkeepSettings {
    /// `PUBLIC_URL/webhook`.
    pub target_url: String,
    /// `WEBEX_API_URL`.
    pub webex_api_url: String,
    /// One Webex request, connect to last byte.
    pub timeout: Duration,
    /// REGISTER_AUTH=webex (with a WEBHOOK_SECRET to derive their secrets from): each
    /// registration keeps the person's own webhooks.
    pub personal: bool,
    /// How long a person's webhooks count as checked.
    pub interval: Duration,
    /// `WEBEX_SERVICE_TOKEN`: the org-wide webhooks it sees are watched.
    pub service_token: Option<SecretString>,
    /// How often the watchdog looks.
    pub watchdog_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port; [`crate::Application::port`] tells which.
    pub port: u16,
    /// `None`: one per CPU.
    pub workers: Option<usize>,
    /// How long a client may take to send a whole request.
    pub request_timeout: Duration,
    /// How long in-flight requests and the push queue get on SIGTERM.
    pub shutdown_timeout: Duration,
    pub webhook_body_limit: usize,
    pub register_body_limit: usize,
}

impl HttpSettings {
    /// Webex events are a few KiB; 256 KiB leaves room for large `apnsPayload`s.
    pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;
    /// A registration is four short strings.
    pub const REGISTER_BODY_LIMIT: usize = 16 * 1024;
}

#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// Events accepted but not yet taken by a worker.
    pub capacity: usize,
    /// Worker tasks relaying events concurrently.
    pub workers: usize,
    /// How long a webhook may wait for room in a full queue before it is refused.
    pub wait: Duration,
    /// How long a seen webhook event is remembered: a re-delivery within it rings no one.
    pub seen_events_retention: Duration,
}

/// Limits on what one person or one client may register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterLimits {
    pub devices_per_channel: usize,
    /// `None`: unlimited.
    pub rate: Option<RateLimit>,
    pub trusted_proxies: Vec<IpNet>,
}

impl QueueSettings {
    pub const DEFAULT_SEEN_EVENTS_RETENTION: Duration = Duration::from_secs(24 * 3600);
}

impl Config {
    /// Defaults for everything but the database, listening on 127.0.0.1 with a free
    /// port and without APNs: what tests start from.
    pub fn new(database: DatabaseConfig) -> Self {
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: 0,
                workers: Some(2),
                request_timeout: Duration::from_secs(10),
                shutdown_timeout: Duration::from_secs(25),
                webhook_body_limit: HttpSettings::WEBHOOK_BODY_LIMIT,
                register_body_limit: HttpSettings::REGISTER_BODY_LIMIT,
            },
            database,
            apns: None,
            fcm: None,
            webhook_secrets: Vec::new(),
            allow_unsigned_webhooks: false,
            queue: QueueSettings {
                capacity: 1024,
                workers: 256,
                wait: Duration::from_secs(2),
                seen_events_retention: QueueSettings::DEFAULT_SEEN_EVENTS_RETENTION,
            },
            deadlines: Deadlines::default(),
            retry: RetryPolicy::default(),
            admin_token: None,
            register_auth: None,
            webhook_upkeep: None,
            // Tests register freely from one address; they opt in to a rate.
            register_limits: RegisterLimits {
                devices_per_channel: RegistrationService::DEFAULT_DEVICES_PER_CHANNEL,
                rate: None,
                trusted_proxies: Vec::new(),
            },
        }
    }

    /// Validates `serve`'s options.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let http = &args.http;
        if http.host.trim().is_empty() {
            return Err(invalid("HOST", "is empty"));
        }
        if http.request_timeout_secs == 0 {
            return Err(invalid("REQUEST_TIMEOUT_SECS", "must be at least 1"));
        }
        if http.http_workers == Some(0) {
            return Err(invalid("HTTP_WORKERS", "must be at least 1"));
        }
        let webhook = &args.webhook;
        if webhook.push_queue_capacity == 0 {
            return Err(invalid("PUSH_QUEUE_CAPACITY", "must be at least 1"));
        }
        if webhook.push_workers == 0 {
            return Err(invalid("PUSH_WORKERS", "must be at least 1"));
        }
        if webhook.relay_threads == 0 {
            return Err(invalid("RELAY_THREADS", "must be at least 1"));
        }
        if webhook.seen_events_retention_hours == 0 {
            // Zero would forget an event before Webex's re-delivery could be recognised.
            return Err(invalid("SEEN_EVENTS_RETENTION_HOURS", "must be at least 1"));
        }
        if webhook.apns_max_in_flight == 0 {
            return Err(invalid("APNS_MAX_IN_FLIGHT", "must be at least 1"));
        }
        let apns = apns_config(&args.apns)?.map(|mut apns| {
            apns.max_in_flight = webhook.apns_max_in_flight;
            apns
        });
        let fcm = fcm_config(&args.fcm)?;
        let webhook_secrets = webhook_secrets(webhook.webhook_secret.as_deref())?;
        let webhook_upkeep = webhook_upkeep(&args.auth, &webhook_secrets)?;
        webhook_auth(
            &webhook_secrets,
            webhook.allow_unsigned_webhooks,
            apns.as_ref(),
            fcm.as_ref(),
        )?;
        Ok(Self {
            http: HttpSettings {
                host: http.host.trim().to_owned(),
                port: http.port,
                workers: http.http_workers,
                request_timeout: Duration::from_secs(http.request_timeout_secs),
                shutdown_timeout: Duration::from_secs(http.shutdown_timeout_secs),
                webhook_body_limit: HttpSettings::WEBHOOK_BODY_LIMIT,
                register_body_limit: HttpSettings::REGISTER_BODY_LIMIT,
            },
            database: server_database_config(&args.database, &args.database_pool)?,
            apns,
            fcm,
            webhook_secrets,
            allow_unsigned_webhooks: webhook.allow_unsigned_webhooks,
            queue: QueueSettings {
                capacity: webhook.push_queue_capacity,
                workers: webhook.push_workers,
                wait: Duration::from_millis(webhook.push_queue_wait_ms),
                seen_events_retention: Duration::from_secs(
                    webhook.seen_events_retention_hours.saturating_mul(3600),
                ),
            },
            deadlines: Deadlines::default(),
            retry: RetryPolicy::default(),
            admin_token: admin_token(args.auth.admin_token.as_deref())?,
            register_auth: register_auth(&args.auth)?,
            register_limits: register_limits(&args.auth)?,
            webhook_upkeep,
        })
    }
}

fn webhook_upkeep(
    args: &AuthArgs,
    secrets: &[SecretString],
) -> Result<Option<UpkeepSettings>, ConfigError> {
    let Some(public_url) = args.public_url.as_deref().map(str::trim) else {
        if args
            .webex_service_token
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty())
        {
            return Err(invalid(
                "WEBEX_SERVICE_TOKEN",
                "needs PUBLIC_URL: the watchdog looks after the webhooks pointing at it",
            ));
        }
        return Ok(None);
    };
    let rest = public_url
        .strip_prefix("https://")
        .or_else(|| public_url.strip_prefix("http://"));
    let host = rest
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(
            "PUBLIC_URL",
            "must be the server's https:// address, e.g. https://push.example.com",
        ));
    }
    if public_url.contains(['?', '#']) {
        return Err(invalid("PUBLIC_URL", "must not have a query or fragment"));
    }
    let personal = args.register_auth == RegisterAuth::Webex;
    if personal && secrets.is_empty() {
        return Err(invalid(
            "PUBLIC_URL",
            "with REGISTER_AUTH=webex needs WEBHOOK_SECRET: the secrets of the webhooks the server makes are derived from it",
        ));
    }
    let service_token = args
        .webex_service_token
        .as_deref()
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(|token| SecretString::from(token.to_owned()));
    if args.webhook_watchdog_interval_secs == 0 {
        return Err(invalid(
            "WEBHOOK_WATCHDOG_INTERVAL_SECS",
            "must be at least 1",
        ));
    }
    let webex_api_url = args.webex_api_url.trim();
    if webex_api_url.is_empty() {
        return Err(invalid("WEBEX_API_URL", "is empty"));
    }
    Ok(Some(UpkeepSettings {
        target_url: format!("{}/webhook", public_url.trim_end_matches('/')),
        webex_api_url: webex_api_url.to_owned(),
        timeout: WebexIdentityConfig::default().timeout,
        personal,
        interval: Duration::from_secs(args.webhook_check_interval_secs),
        service_token,
        watchdog_interval: Duration::from_secs(args.webhook_watchdog_interval_secs),
    }))
}

/// An admin token guessable in a few tries would open every person's device list.
const MIN_ADMIN_TOKEN: usize = 16;

fn admin_token(value: Option<&str>) -> Result<Option<SecretString>, ConfigError> {
    let Some(value) = value.map(str::trim) else {
        return Ok(None);
    };
    if value.chars().count() < MIN_ADMIN_TOKEN {
        return Err(invalid(
            "ADMIN_TOKEN",
            format!("must be at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 32`)"),
        ));
    }
    Ok(Some(SecretString::from(value.to_owned())))
}

fn register_auth(args: &AuthArgs) -> Result<Option<WebexIdentityConfig>, ConfigError> {
    match args.register_auth {
        RegisterAuth::Off => Ok(None),
        RegisterAuth::Webex => {
            let base_url = args.webex_api_url.trim();
            if base_url.is_empty() {
                return Err(invalid("WEBEX_API_URL", "is empty"));
            }
            Ok(Some(WebexIdentityConfig {
                base_url: base_url.to_owned(),
                ..WebexIdentityConfig::default()
            }))
        }
    }
}

fn register_limits(args: &AuthArgs) -> Result<RegisterLimits, ConfigError> {
    if args.max_devices_per_person == 0 {
        return Err(invalid("MAX_DEVICES_PER_PERSON", "must be at least 1"));
    }
    let trusted_proxies = args
        .trusted_proxies
        .as_deref()
        .map(parse_trusted_proxies)
        .transpose()
        .map_err(|e| invalid("TRUSTED_PROXIES", e))?
        .unwrap_or_default();
    Ok(RegisterLimits {
        devices_per_channel: args.max_devices_per_person,
        rate: (args.register_rate_per_minute > 0).then_some(RateLimit {
            per_minute: args.register_rate_per_minute,
        }),
        trusted_proxies,
    })
}

/// Validates a server's database options: how to reach it, the pool, migrations.
pub fn server_database_config(
    args: &DatabaseArgs,
    pool: &DatabasePoolArgs,
) -> Result<DatabaseConfig, ConfigError> {
    if pool.database_pool_size == Some(0) {
        return Err(invalid("DATABASE_POOL_SIZE", "must be at least 1"));
    }
    Ok(DatabaseConfig {
        pool_size: pool.database_pool_size,
        run_migrations: pool.migrate_on_start,
        ..database_config(args)?
    })
}

/// Validates how to reach the database (what `migrate` needs too): the backend's
/// default pool size, no migration at connection.
pub fn database_config(args: &DatabaseArgs) -> Result<DatabaseConfig, ConfigError> {
    let url = match args.database_url.as_deref().map(str::trim) {
        None => None,
        Some("") => return Err(invalid("DATABASE_URL", "is set but empty")),
        Some(url) => Some(SecretString::from(url.to_owned())),
    };
    for (variable, secs) in [
        (
            "DATABASE_CONNECT_TIMEOUT_SECS",
            args.database_connect_timeout_secs,
        ),
        (
            "DATABASE_CHECKOUT_TIMEOUT_SECS",
            args.database_checkout_timeout_secs,
        ),
        (
            "DATABASE_STATEMENT_TIMEOUT_SECS",
            args.database_statement_timeout_secs,
        ),
    ] {
        if secs == 0 {
            return Err(invalid(variable, "must be at least 1"));
        }
    }
    Ok(DatabaseConfig {
        url,
        pool_size: None,
        connect_timeout: Duration::from_secs(args.database_connect_timeout_secs),
        checkout_timeout: Duration::from_secs(args.database_checkout_timeout_secs),
        statement_timeout: Duration::from_secs(args.database_statement_timeout_secs),
        run_migrations: false,
    })
}

/// Validates the APNs options (shared by `serve` and `push`). `Ok(None)` when no key is
/// given at all; a key without its ids, or ids without a key, is an error rather than
/// a silently unready server.
pub fn apns_config(args: &ApnsArgs) -> Result<Option<ApnsConfig>, ConfigError> {
    let key = match (&args.apns_key_file, args.apns_key.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "APNS_KEY",
                "set either APNS_KEY_FILE or APNS_KEY, not both",
            ));
        }
        (Some(path), None) => Some(ApnsKey::from_file(path)?),
        (None, Some(text)) => Some(ApnsKey::from_env_text(text)?),
        (None, None) => None,
    };
    let Some(key) = key else {
        for (variable, value) in [
            ("APNS_KEY_ID", args.apns_key_id.is_some()),
            ("APNS_TEAM_ID", args.apns_team_id.is_some()),
            ("APNS_TOPIC", args.apns_topic.is_some()),
        ] {
            if value {
                return Err(invalid(
                    variable,
                    "is set but no key is: set APNS_KEY_FILE or APNS_KEY too",
                ));
            }
        }
        return Ok(None);
    };
    let required = |variable: &'static str, value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| invalid(variable, "is required when an APNs key is configured"))
    };
    let key_id = KeyId::parse(&required("APNS_KEY_ID", &args.apns_key_id)?)?;
    let team_id = TeamId::parse(&required("APNS_TEAM_ID", &args.apns_team_id)?)?;
    let topic = BundleId::parse(&required("APNS_TOPIC", &args.apns_topic)?)
        .map_err(|e| invalid("APNS_TOPIC", e.to_string()))?;
    let environment = ApnsEnvironment::from_str(args.apns_environment.trim())
        .map_err(|e| invalid("APNS_ENVIRONMENT", e.to_string()))?;
    if args.apns_request_timeout_secs == 0 {
        return Err(invalid("APNS_REQUEST_TIMEOUT_SECS", "must be at least 1"));
    }
    let extra_ca_pem = args.apns_ca_file.as_deref().map(read_ca_file).transpose()?;
    let mut config = ApnsConfig::new(key, key_id, team_id, topic);
    config.default_environment = environment;
    config.endpoint = args
        .apns_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    config.extra_ca_pem = extra_ca_pem;
    config.request_timeout = Duration::from_secs(args.apns_request_timeout_secs);
    Ok(Some(config))
}

fn read_ca_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "APNS_CA_FILE",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            "APNS_CA_FILE",
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(text)
}

/// How webhooks are authenticated, as `/readyz`, `check` and the start-up log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    /// Checked against `WEBHOOK_SECRET` (this many secrets, during a rotation more
    /// than one).
    Signed { secrets: usize },
    /// Not checked, as `ALLOW_UNSIGNED_WEBHOOKS=true` asked, though pushes go to Apple.
    UnsignedAllowed,
    /// Not checked; harmless for now: no APNs key, or pushes go to a stand-in
    /// (`APNS_ENDPOINT`), so no real phone can be rung.
    UnsignedNoRealPushes,
}

impl WebhookAuth {
    /// Machine-readable: `signed`, `unsigned` or `unsigned-no-real-pushes`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAuth::Signed { .. } => "signed",
            WebhookAuth::UnsignedAllowed => "unsigned",
            WebhookAuth::UnsignedNoRealPushes => "unsigned-no-real-pushes",
        }
    }
}

impl Config {
    /// How this configuration authenticates webhooks (validated in `from_args`).
    pub fn webhook_auth(&self) -> WebhookAuth {
        match self.webhook_secrets.len() {
            0 if self.apns.as_ref().is_some_and(pushes_to_apple)
                || self.fcm.as_ref().is_some_and(pushes_to_google) =>
            {
                WebhookAuth::UnsignedAllowed
            }
            0 => WebhookAuth::UnsignedNoRealPushes,
            secrets => WebhookAuth::Signed { secrets },
        }
    }
}

/// Fail closed: a configuration that can ring real phones (an APNs key and Apple's
/// gateways) refuses to start without a webhook secret, unless told explicitly.
pub fn webhook_auth(
    secrets: &[SecretString],
    allow_unsigned: bool,
    apns: Option<&ApnsConfig>,
    fcm: Option<&FcmConfig>,
) -> Result<WebhookAuth, ConfigError> {
    let real_pushes = apns.is_some_and(pushes_to_apple) || fcm.is_some_and(pushes_to_google);
    match secrets.len() {
        0 if real_pushes && !allow_unsigned => Err(invalid(
            "WEBHOOK_SECRET",
            "is required when pushes go to Apple (an APNs key without APNS_ENDPOINT): \
             without it anyone who finds the URL can ring every registered phone. Set it \
             to the secret of your Webex webhooks, or set ALLOW_UNSIGNED_WEBHOOKS=true to \
             accept unsigned webhooks anyway",
        )),
        0 if real_pushes => Ok(WebhookAuth::UnsignedAllowed),
        0 => Ok(WebhookAuth::UnsignedNoRealPushes),
        secrets => Ok(WebhookAuth::Signed { secrets }),
    }
}

/// Whether pushes reach Apple's gateways (no `APNS_ENDPOINT`, or one on
/// `push.apple.com`) rather than a stand-in.
fn pushes_to_apple(apns: &ApnsConfig) -> bool {
    apns.endpoint.as_deref().is_none_or(|endpoint| {
        endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .is_none_or(|host| {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == "push.apple.com" || host.ends_with(".push.apple.com")
            })
    })
}

/// Whether FCM messages reach Google (no `FCM_ENDPOINT`) rather than a stand-in.
fn pushes_to_google(fcm: &FcmConfig) -> bool {
    fcm.endpoint.is_none()
}

/// The FCM configuration, `None` without a service account.
pub fn fcm_config(args: &FcmArgs) -> Result<Option<FcmConfig>, ConfigError> {
    let account = match (
        &args.fcm_service_account_file,
        args.fcm_service_account.as_deref(),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "FCM_SERVICE_ACCOUNT",
                "set either FCM_SERVICE_ACCOUNT_FILE or FCM_SERVICE_ACCOUNT, not both",
            ));
        }
        (Some(path), None) => ServiceAccount::from_file(path)?,
        (None, Some(text)) if text.trim().is_empty() => {
            return Err(invalid("FCM_SERVICE_ACCOUNT", "is set but empty"));
        }
        (None, Some(text)) => ServiceAccount::from_env_text(text)?,
        (None, None) => {
            for (variable, set) in [
                ("FCM_ENDPOINT", args.fcm_endpoint.is_some()),
                ("FCM_CA_FILE", args.fcm_ca_file.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        variable,
                        "is set but no service account is (FCM_SERVICE_ACCOUNT_FILE or FCM_SERVICE_ACCOUNT)",
                    ));
                }
            }
            return Ok(None);
        }
    };
    if args.fcm_request_timeout_secs == 0 {
        return Err(invalid("FCM_REQUEST_TIMEOUT_SECS", "must be at least 1"));
    }
    let mut config = FcmConfig::new(account);
    if let Some(endpoint) = &args.fcm_endpoint {
        config = config.with_endpoint(endpoint)?;
    }
    config.extra_ca_pem = args
        .fcm_ca_file
        .as_deref()
        .map(|path| read_pem_file("FCM_CA_FILE", path))
        .transpose()?;
    config.request_timeout = Duration::from_secs(args.fcm_request_timeout_secs);
    Ok(Some(config))
}

fn read_pem_file(variable: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(variable, format!("cannot read {}: {e}", path.display())))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            variable,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(text)
}

/// Splits `WEBHOOK_SECRET` on commas; blanks around each secret are dropped.
pub fn webhook_secrets(value: Option<&str>) -> Result<Vec<SecretString>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let secrets: Vec<SecretString> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_owned()))
        .collect();
    if secrets.is_empty() {
        return Err(invalid(
            "WEBHOOK_SECRET",
            "is set but holds no secret (blank, or only commas): set the secret of your \
             Webex webhooks, or unset the variable",
        ));
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use secrecy::ExposeSecret as _;

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["webex-push", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_env_from(argv).unwrap();
        let crate::cli::Command::Serve(args) = cli.into_command() else {
            panic!("serve expected");
        };
        Config::from_args(&args)
    }

    #[test]
    fn defaults_serve_on_8080_with_sqlite_and_no_apns() {
        let config = serve(&[]).unwrap();
        assert_eq!(config.http.port, 8080);
        assert_eq!(config.http.host, "0.0.0.0");
        assert!(config.database.url.is_none());
        assert!(config.database.run_migrations);
        assert!(config.apns.is_none());
        assert!(config.webhook_secrets.is_empty());
    }

    #[test]
    fn secrets_are_split_on_commas_for_rotation() {
        let config = serve(&["--webhook-secret", " old , new ,"]).unwrap();
        let secrets: Vec<&str> = config
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(secrets, ["old", "new"]);
        let err = serve(&["--webhook-secret", " , "]).unwrap_err().to_string();
        assert!(err.starts_with("WEBHOOK_SECRET:"), "{err}");
    }

    #[test]
    fn errors_name_the_variable() {
        for (args, variable) in [
            (vec!["--push-workers", "0"], "PUSH_WORKERS:"),
            (vec!["--relay-threads", "0"], "RELAY_THREADS:"),
            (vec!["--push-queue-capacity", "0"], "PUSH_QUEUE_CAPACITY:"),
            (vec!["--database-pool-size", "0"], "DATABASE_POOL_SIZE:"),
            (vec!["--apns-key-id", "ABCDEFGHIJ"], "APNS_KEY_ID:"),
            (vec!["--apns-key", "garbage"], "APNS_KEY"),
            (
                vec!["--apns-key-file", "/nonexistent/AuthKey.p8"],
                "APNS_KEY_FILE",
            ),
        ] {
            let err = serve(&args).unwrap_err().to_string();
            assert!(err.starts_with(variable), "{args:?}: {err}");
        }
    }

    #[test]
    fn admin_token_and_register_auth_are_validated() {
        let config = serve(&[]).unwrap();
        assert!(config.admin_token.is_none());
        assert!(config.register_auth.is_none());
        let err = serve(&["--admin-token", "short"]).unwrap_err().to_string();
        assert!(err.starts_with("ADMIN_TOKEN:"), "{err}");
        let config = serve(&[
            "--admin-token",
            "0123456789abcdef0123",
            "--register-auth",
            "webex",
            "--webex-api-url",
            "http://127.0.0.1:9/",
        ])
        .unwrap();
        assert_eq!(
            config.admin_token.unwrap().expose_secret(),
            "0123456789abcdef0123"
        );
        assert_eq!(
            config.register_auth.unwrap().base_url,
            "http://127.0.0.1:9/"
        );
        assert!(Cli::try_parse_env_from(["webex-push", "--register-auth", "maybe"]).is_err());
    }

    /// `serve`'s arguments for a real APNs key, plus `extra`.
    fn with_key(extra: &[&str]) -> Result<Config, ConfigError> {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let pem = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        // `=`: the PEM's leading dashes would read as an option.
        let key = format!("--apns-key={}", pem.as_str());
        let mut args = vec![
            key.as_str(),
            "--apns-key-id",
            "ABCDEFGHIJ",
            "--apns-team-id",
            "KLMNOPQRST",
            "--apns-topic",
            "com.example.app",
        ];
        args.extend_from_slice(extra);
        serve(&args)
    }

    #[test]
    fn pushes_to_apple_need_a_webhook_secret_unless_unsigned_is_allowed_explicitly() {
        for endpoint in [
            None,
            Some("https://api.push.apple.com"),
            Some("https://api.sandbox.push.apple.com:2197/"),
            Some("api.push.apple.com"),
        ] {
            let mut args = Vec::new();
            if let Some(endpoint) = endpoint {
                args.extend(["--apns-endpoint", endpoint]);
            }
            let err = with_key(&args).unwrap_err().to_string();
            assert!(err.starts_with("WEBHOOK_SECRET:"), "{endpoint:?}: {err}");
            assert!(err.contains("ALLOW_UNSIGNED_WEBHOOKS=true"), "{err}");
            args.extend(["--allow-unsigned-webhooks", "true"]);
            let config = with_key(&args).unwrap();
            assert_eq!(config.webhook_auth(), WebhookAuth::UnsignedAllowed);
        }
        let config = with_key(&["--webhook-secret", "s3cret,old"]).unwrap();
        assert_eq!(config.webhook_auth(), WebhookAuth::Signed { secrets: 2 });
        // A stand-in cannot ring a real phone; neither can a server without a key.
        let config = with_key(&["--apns-endpoint", "https://127.0.0.1:8443"]).unwrap();
        assert_eq!(config.webhook_auth(), WebhookAuth::UnsignedNoRealPushes);
        let config = serve(&[]).unwrap();
        assert_eq!(config.webhook_auth(), WebhookAuth::UnsignedNoRealPushes);
    }

    #[test]
    fn a_blank_webhook_secret_is_an_error_whatever_else_is_set() {
        for secret in ["", "   ", " , "] {
            for config in [
                serve(&["--webhook-secret", secret]),
                with_key(&[
                    "--webhook-secret",
                    secret,
                    "--allow-unsigned-webhooks",
                    "true",
                ]),
            ] {
                let err = config.unwrap_err().to_string();
                assert!(err.starts_with("WEBHOOK_SECRET:"), "{secret:?}: {err}");
            }
        }
    }

    #[test]
    fn register_limits_default_and_are_validated() {
        let config = serve(&[]).unwrap();
        assert_eq!(config.register_limits.devices_per_channel, 10);
        assert_eq!(
            config.register_limits.rate,
            Some(RateLimit { per_minute: 300 })
        );
        assert!(config.register_limits.trusted_proxies.is_empty());
        let config = serve(&[
            "--register-rate-per-minute",
            "0",
            "--max-devices-per-person",
            "3",
            "--trusted-proxies",
            "10.0.0.0/8, 2001:db8::/32,192.0.2.1",
        ])
        .unwrap();
        assert_eq!(config.register_limits.rate, None);
        assert_eq!(config.register_limits.devices_per_channel, 3);
        assert_eq!(config.register_limits.trusted_proxies.len(), 3);
        for (args, variable) in [
            (
                vec!["--max-devices-per-person", "0"],
                "MAX_DEVICES_PER_PERSON:",
            ),
            (vec!["--trusted-proxies", "10.0.0.0/33"], "TRUSTED_PROXIES:"),
        ] {
            let err = serve(&args).unwrap_err().to_string();
            assert!(err.starts_with(variable), "{args:?}: {err}");
        }
    }

    #[test]
    fn migrate_on_start_reads_common_spellings_of_false() {
        for value in ["false", "0", "no", "off"] {
            let config = serve(&["--migrate-on-start", value]).unwrap();
            assert!(!config.database.run_migrations, "{value}");
        }
    }
}
