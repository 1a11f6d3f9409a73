//! `webex-push check`: each step of serving, tried in order without serving and
//! without changing anything, every step printed with its outcome (`ok`, `FAILED:
//! reason` or `skipped (why)`), then a warning for each insecure setting.

use std::process::ExitCode;

use webex_push_adapters::apns::ApnsClient;
use webex_push_adapters::fcm::{FCM_ENDPOINT, FcmClient};
use webex_push_adapters::persistence::{DatabaseCheck, check_database};

use crate::cli::{RegisterAuth, ServeArgs};
use crate::config::{self, Config, WebhookAuth};

/// The printed steps, and whether one failed.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    /// Prints one step's result as `ok` or `FAILED: reason`; the value when it passed.
    fn step<T, E: std::fmt::Display>(&mut self, name: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                println!("{name:<22} ok");
                Some(value)
            }
            Err(error) => {
                self.failed = true;
                println!("{name:<22} FAILED: {}", one_line(&error.to_string()));
                None
            }
        }
    }

    /// A step that cannot run because an earlier one failed: the check fails too.
    fn skip(&mut self, name: &str, why: &str) {
        self.failed = true;
        println!("{name:<22} skipped ({why})");
    }

    /// More about the step just printed.
    fn detail(&self, text: &str) {
        println!("{:<22} ({text})", "");
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

pub async fn run(args: &ServeArgs) -> ExitCode {
    let mut report = Report::default();
    // Everything but the key first, so a bad key is reported as such.
    let mut keyless = args.clone();
    keyless.apns.apns_key_file = None;
    keyless.apns.apns_key = None;
    keyless.apns.apns_key_id = None;
    keyless.apns.apns_team_id = None;
    keyless.apns.apns_topic = None;
    // And without FCM's account, reported in its own step.
    keyless.fcm = crate::cli::FcmArgs::default();
    let configured = report.step("configuration", Config::from_args(&keyless));

    // A server with FCM and no APNs key serves Android only: iOS is then off, not a failure.
    let apns_config = config::apns_config(&args.apns);
    let ios_off =
        matches!(apns_config, Ok(None)) && matches!(config::fcm_config(&args.fcm), Ok(Some(_)));
    let apns = if ios_off {
        println!("{:<22} off", "APNs key");
        report.detail(
            "iOS off: only Android (FCM) devices get pushes; set APNS_KEY_FILE or APNS_KEY",
        );
        None
    } else {
        report.step(
            "APNs key",
            apns_config.map_err(|e| e.to_string()).and_then(|apns| {
                apns.ok_or_else(|| {
                    "no key configured: set APNS_KEY_FILE or APNS_KEY (with \
                     APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC), or an FCM service account"
                        .to_owned()
                })
            }),
        )
    };
    let fcm = match config::fcm_config(&args.fcm) {
        Ok(Some(fcm)) => {
            println!("{:<22} ok", "FCM service account");
            report.detail(&format!(
                "project {}, {}",
                fcm.account.project_id(),
                fcm.account.client_email()
            ));
            Some(fcm)
        }
        Ok(None) => {
            println!("{:<22} off", "FCM service account");
            report.detail("Android off: set FCM_SERVICE_ACCOUNT_FILE or FCM_SERVICE_ACCOUNT");
            None
        }
        Err(error) => {
            report.step::<(), _>("FCM service account", Err(error));
            None
        }
    };
    // With the real key: pushes to Apple without a secret fail here, as at start-up.
    let webhook_auth = report.step(
        "webhook auth",
        config::webhook_secrets(args.webhook.webhook_secret.as_deref()).and_then(|secrets| {
            config::webhook_auth(
                &secrets,
                args.webhook.allow_unsigned_webhooks,
                apns.as_ref(),
                fcm.as_ref(),
            )
        }),
    );
    match webhook_auth {
        Some(WebhookAuth::Signed { secrets }) => {
            report.detail(&format!("signed: {secrets} secret(s)"));
        }
        Some(WebhookAuth::UnsignedAllowed) => {
            report.detail("unsigned: ALLOW_UNSIGNED_WEBHOOKS=true, see insecure settings");
        }
        Some(WebhookAuth::UnsignedNoRealPushes) => {
            report.detail("unsigned: allowed while no push can reach Apple");
        }
        None => {}
    }
    println!("{:<22} ok", "register auth");
    report.detail(match args.auth.register_auth {
        RegisterAuth::Webex => "webex: registrations prove who they are",
        RegisterAuth::Off => "off: see insecure settings",
    });
    let endpoint = apns.as_ref().and_then(|apns| apns.endpoint.clone());
    let client = match apns {
        Some(apns) => report.step(
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
        ),
        None if ios_off => {
            println!("{:<22} off", "APNs provider token");
            None
        }
        None => {
            report.skip("APNs provider token", "no usable key");
            None
        }
    };
    match &client {
        Some(client) => {
            let warmed = client.warm_up().await;
            if report.step("APNs connection", warmed).is_some() {
                if let Some(endpoint) = &endpoint {
                    report.detail(&format!("endpoint {endpoint}"));
                }
            }
        }
        None if ios_off => println!("{:<22} off", "APNs connection"),
        None => report.skip("APNs connection", "no provider token"),
    }
    if let Some(fcm) = fcm {
        let endpoint = fcm.endpoint.clone();
        let token_uri = fcm.account.token_uri().to_owned();
        let warmed = match FcmClient::new(fcm) {
            Ok(client) => client.warm_up().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if report.step("FCM access token", warmed).is_some() {
            report.detail(&format!(
                "from {token_uri}; endpoint {}",
                endpoint.as_deref().unwrap_or(FCM_ENDPOINT)
            ));
        }
    }

    // The database is checked on its own options, whatever else is wrong.
    let mut warnings = Vec::new();
    match config::server_database_config(&args.database, &args.database_pool) {
        Ok(database) => {
            let checked = check_database(&database)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                .and_then(|found| schema_ready(found, database.run_migrations));
            if let Some((found, details)) = report.step("database", checked) {
                report.detail(found.backend);
                for detail in details {
                    report.detail(&detail);
                }
                warnings.extend(found.warnings);
            }
        }
        Err(error) => {
            report.step::<(), _>("database", Err(error));
        }
    }

    warnings.extend(insecure_settings(args, configured.as_ref(), webhook_auth));
    if warnings.is_empty() {
        println!("{:<22} none", "insecure settings");
    } else {
        println!("{:<22} {}", "insecure settings", warnings.len());
        for warning in &warnings {
            println!("  WARNING: {warning}");
        }
    }

    if report.failed {
        println!("check FAILED");
        ExitCode::FAILURE
    } else if warnings.is_empty() {
        println!("check passed");
        ExitCode::SUCCESS
    } else {
        println!("check passed with {} warnings", warnings.len());
        ExitCode::SUCCESS
    }
}

/// Whether the database will have its schema when the server starts, and what to say
/// about it. Pending migrations fail the step unless start-up applies them.
fn schema_ready(
    found: DatabaseCheck,
    migrate_on_start: bool,
) -> Result<(DatabaseCheck, Vec<String>), String> {
    let mut details = Vec::new();
    if let (true, Some(path)) = (found.not_created_yet, &found.sqlite_path) {
        details.push(format!(
            "{} does not exist yet: `serve` creates it",
            path.display()
        ));
    } else if let Some(path) = &found.sqlite_path {
        details.push(path.display().to_string());
    }
    let pending = found.pending_migrations.len();
    if pending > 0 {
        if !migrate_on_start {
            return Err(format!(
                "{pending} migration(s) not applied ({}) and MIGRATE_ON_START=false: run \
                 `webex-push migrate` first",
                found.pending_migrations.join(", ")
            ));
        }
        details.push(format!(
            "{pending} migration(s) to apply at start-up (MIGRATE_ON_START=true)"
        ));
    } else {
        details.push("schema up to date".to_owned());
    }
    Ok((found, details))
}

/// Settings that work but leave something open, each with what it exposes. The
/// configuration and the webhook authentication are `None` when invalid (already
/// reported as failed).
pub fn insecure_settings(
    args: &ServeArgs,
    config: Option<&Config>,
    webhook_auth: Option<WebhookAuth>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    match webhook_auth {
        Some(WebhookAuth::UnsignedAllowed) => warnings.push(
            "WEBHOOK_SECRET is not set and ALLOW_UNSIGNED_WEBHOOKS=true: webhooks are accepted \
             unsigned, so anyone who finds the URL can ring every registered phone"
                .to_owned(),
        ),
        Some(WebhookAuth::UnsignedNoRealPushes) => warnings.push(
            "WEBHOOK_SECRET is not set: webhooks are accepted unsigned (allowed while no push \
             can reach Apple; set it before pushing to Apple)"
                .to_owned(),
        ),
        Some(WebhookAuth::Signed { .. }) | None => {}
    }
    match args.auth.register_auth {
        RegisterAuth::Off => warnings.push(
            "REGISTER_AUTH=off: anyone who knows a person id can register a device for them \
             and receive their calls (REGISTER_AUTH=webex requires proof, see docs/identity.md)"
                .to_owned(),
        ),
        RegisterAuth::Webex => {
            let url = args.auth.webex_api_url.trim();
            if url.to_ascii_lowercase().starts_with("http://") && !is_loopback_url(url) {
                warnings.push(format!(
                    "WEBEX_API_URL is {url}: users' Webex access tokens travel unencrypted"
                ));
            }
        }
    }
    if let Some(endpoint) = args.apns.apns_endpoint.as_deref().map(str::trim) {
        if !endpoint.is_empty() {
            warnings.push(format!(
                "APNS_ENDPOINT is {endpoint}: pushes and provider tokens go there instead of \
                 Apple (a test or staging setting)"
            ));
        }
    }
    if config.is_some_and(|config| config.database.url.is_some())
        && postgres_without_tls_to_remote_host(args.database.database_url.as_deref())
    {
        warnings.push(
            "DATABASE_URL sets sslmode=disable for a remote host: device tokens and the \
             password cross the network unencrypted"
                .to_owned(),
        );
    }
    warnings
}

/// `http://localhost...`, `http://127.x...` or `http://[::1]...`.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A Postgres URL with `sslmode=disable` whose host is neither a Unix socket nor the
/// loopback interface.
fn postgres_without_tls_to_remote_host(url: Option<&str>) -> bool {
    let Some(url) = url.map(str::trim) else {
        return false;
    };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return false;
    }
    let query = lower.split_once('?').map_or("", |(_, query)| query);
    let disabled = query
        .split('&')
        .any(|pair| pair.trim() == "sslmode=disable");
    if !disabled {
        return false;
    }
    // `host=` in the query (a socket directory, or a host) wins over the authority.
    if let Some(host) = query
        .split('&')
        .find_map(|pair| pair.trim().strip_prefix("host="))
    {
        return !(host.starts_with('/') || host.starts_with("%2f") || is_loopback_host(host));
    }
    let authority = lower
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    // No host: libpq uses the local Unix socket.
    !(host.is_empty() || host.starts_with("%2f") || is_loopback_host(host))
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn check_args(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["webex-push", "check"];
        argv.extend_from_slice(args);
        match Cli::try_parse_env_from(argv).unwrap().into_command() {
            Command::Check(args) => args,
            _ => panic!("check expected"),
        }
    }

    fn warnings(args: &[&str]) -> Vec<String> {
        let args = check_args(args);
        let config = Config::from_args(&args).ok();
        let webhook_auth = config.as_ref().map(Config::webhook_auth);
        insecure_settings(&args, config.as_ref(), webhook_auth)
    }

    #[test]
    fn the_defaults_warn_about_unsigned_webhooks_and_unproven_registrations() {
        let found = warnings(&[]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("WEBHOOK_SECRET is not set"),
            "{found:?}"
        );
        assert!(found[1].starts_with("REGISTER_AUTH=off"), "{found:?}");
    }

    #[test]
    fn a_signed_proven_set_up_has_no_warning() {
        let found = warnings(&[
            "--webhook-secret",
            "s3cret",
            "--register-auth",
            "webex",
            "--database-url",
            "postgres://push:pw@db.internal:5432/push?sslmode=verify-full",
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn clear_text_to_remote_hosts_and_a_replaced_apns_gateway_are_warned_about() {
        let found = warnings(&[
            "--webhook-secret",
            "s3cret",
            "--register-auth",
            "webex",
            "--webex-api-url",
            "http://webex-proxy.example.com",
            "--apns-endpoint",
            "https://apns-staging.example.com",
            "--database-url",
            "postgres://push:pw@db.example.com/push?sslmode=disable",
        ]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("WEBEX_API_URL"), "{found:?}");
        assert!(found[1].starts_with("APNS_ENDPOINT"), "{found:?}");
        assert!(found[2].starts_with("DATABASE_URL"), "{found:?}");
        assert!(!found[2].contains("pw"), "no password in the warning");
    }

    #[test]
    fn local_clear_text_is_not_warned_about() {
        for url in [
            "postgres://push:pw@127.0.0.1:5432/push?sslmode=disable",
            "postgres://push@localhost/push?sslmode=disable",
            "postgres://push@[::1]:5432/push?sslmode=disable",
            "postgres:///push?host=/var/run/postgresql&sslmode=disable",
            "postgres://push@db.example.com/push?sslmode=require",
        ] {
            assert!(!postgres_without_tls_to_remote_host(Some(url)), "{url}");
        }
        assert!(postgres_without_tls_to_remote_host(Some(
            "postgresql://push@10.0.0.5/push?sslmode=disable"
        )));
        assert!(is_loopback_url("http://127.0.0.1:9/"));
        assert!(is_loopback_url("http://localhost:8081"));
        assert!(!is_loopback_url("http://webex-standin:8081"));
    }
}
