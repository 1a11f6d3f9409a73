//! Which database to use and how to reach it: `DATABASE_URL` parsing and pool settings.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

/// The SQLite file used when no `DATABASE_URL` is given, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "webex-push.db";

/// Pool size for Postgres when none is configured: enough for a replica's concurrent
/// requests without eating a shared server's `max_connections`.
pub const DEFAULT_POSTGRES_POOL_SIZE: u32 = 10;

/// Pool size for SQLite when none is configured: SQLite has one writer at a time, so
/// more connections only add lock waits.
pub const DEFAULT_SQLITE_POOL_SIZE: u32 = 4;

/// How the persistence adapter connects; the server fills it from its own configuration
/// (`DATABASE_URL`, `DATABASE_POOL_SIZE`, ...).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `postgres://` / `postgresql://` for Postgres, `sqlite://PATH` or `sqlite:PATH` for
    /// SQLite. `None` means the SQLite file [`DEFAULT_SQLITE_PATH`]. A secret because a
    /// Postgres URL may hold a password.
    pub url: Option<SecretString>,
    /// Connections in the pool; `None` for the backend's default
    /// ([`DEFAULT_POSTGRES_POOL_SIZE`], [`DEFAULT_SQLITE_POOL_SIZE`]).
    pub pool_size: Option<u32>,
    /// How long opening one Postgres connection may take (libpq's `connect_timeout`,
    /// added to the URL unless it already sets one).
    pub connect_timeout: Duration,
    /// How long a query waits for a pooled connection before it fails as unavailable.
    pub checkout_timeout: Duration,
    /// How long one statement may run (Postgres `statement_timeout`, SQLite
    /// `busy_timeout`); past it the operation fails as unavailable.
    pub statement_timeout: Duration,
    /// Apply pending migrations when the store is built.
    pub run_migrations: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: None,
            connect_timeout: Duration::from_secs(5),
            checkout_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            run_migrations: true,
        }
    }
}

impl DatabaseConfig {
    /// The defaults with `url` as the database.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: Some(SecretString::from(url.into())),
            ..Self::default()
        }
    }
}

/// The URL used when `DATABASE_URL` is unset: `sqlite://webex-push.db`.
pub fn default_database_url() -> String {
    format!("sqlite://{DEFAULT_SQLITE_PATH}")
}

/// A database URL that failed to parse. Never shows the URL itself: it may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "DATABASE_URL must start with postgres://, postgresql://, sqlite:// or sqlite: (found scheme {0:?})"
    )]
    UnknownScheme(String),
    #[error("DATABASE_URL names no SQLite file after sqlite://")]
    EmptySqlitePath,
    #[error(
        "in-memory SQLite is not supported: every pooled connection would see its own empty database; give a file path"
    )]
    InMemorySqlite,
}

/// Where the data lives, parsed from the URL.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The URL with `connect_timeout` added.
    Postgres(SecretString),
    Sqlite(PathBuf),
}

impl Target {
    pub(crate) fn parse(
        url: Option<&SecretString>,
        connect_timeout: Duration,
    ) -> Result<Self, DatabaseUrlError> {
        let Some(url) = url else {
            return Ok(Target::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        };
        let url = url.expose_secret().trim();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Target::Postgres(SecretString::from(
                with_connection_guards(url, connect_timeout),
            )));
        }
        if lower.starts_with("sqlite:") {
            let path = url["sqlite:".len()..]
                .strip_prefix("//")
                .unwrap_or(&url["sqlite:".len()..]);
            let path = path.split('?').next().unwrap_or(path);
            return match path {
                "" => Err(DatabaseUrlError::EmptySqlitePath),
                ":memory:" => Err(DatabaseUrlError::InMemorySqlite),
                path => Ok(Target::Sqlite(PathBuf::from(path))),
            };
        }
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        Err(DatabaseUrlError::UnknownScheme(scheme.to_owned()))
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Target::Postgres(_) => "postgres",
            Target::Sqlite(_) => "sqlite",
        }
    }
}

/// Adds libpq's guards against a network that silently stops answering, each unless
/// the URL sets it: `connect_timeout` (whole seconds, at least 1), so a black-holed
/// server fails a connection attempt instead of hanging it; TCP keepalives after 5 s
/// idle, every 2 s, 3 lost; and `tcp_user_timeout` of 10 s, so a connection whose
/// packets go unanswered fails in seconds rather than the kernel's 15 minutes.
fn with_connection_guards(url: &str, connect_timeout: Duration) -> String {
    let connect_timeout = connect_timeout.as_secs().max(1).to_string();
    let guards = [
        ("connect_timeout", connect_timeout.as_str()),
        ("keepalives", "1"),
        ("keepalives_idle", "5"),
        ("keepalives_interval", "2"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "10000"),
    ];
    let mut url = url.to_owned();
    for (name, value) in guards {
        if url.contains(&format!("{name}=")) {
            continue;
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{separator}{name}={value}");
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: Option<&str>) -> Result<Target, DatabaseUrlError> {
        let secret = url.map(|u| SecretString::from(u.to_owned()));
        Target::parse(secret.as_ref(), Duration::from_secs(4))
    }

    fn sqlite_path(url: &str) -> PathBuf {
        match parse(Some(url)).unwrap() {
            Target::Sqlite(path) => path,
            Target::Postgres(_) => panic!("{url} parsed as Postgres"),
        }
    }

    fn postgres_url(url: &str) -> String {
        match parse(Some(url)).unwrap() {
            Target::Postgres(url) => url.expose_secret().to_owned(),
            Target::Sqlite(_) => panic!("{url} parsed as SQLite"),
        }
    }

    #[test]
    fn no_url_means_the_sqlite_file_in_the_working_directory() {
        match parse(None).unwrap() {
            Target::Sqlite(path) => assert_eq!(path, PathBuf::from("webex-push.db")),
            Target::Postgres(_) => panic!("default is SQLite"),
        }
        assert_eq!(default_database_url(), "sqlite://webex-push.db");
    }

    #[test]
    fn sqlite_urls_in_every_accepted_spelling() {
        assert_eq!(
            sqlite_path("sqlite://data/x.db"),
            PathBuf::from("data/x.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db"),
            PathBuf::from("/var/lib/x.db")
        );
        assert_eq!(sqlite_path("sqlite:x.db"), PathBuf::from("x.db"));
        assert_eq!(sqlite_path("SQLITE://x.db?mode=rwc"), PathBuf::from("x.db"));
        assert_eq!(
            parse(Some("sqlite://")).unwrap_err(),
            DatabaseUrlError::EmptySqlitePath
        );
        assert_eq!(
            parse(Some("sqlite::memory:")).unwrap_err(),
            DatabaseUrlError::InMemorySqlite
        );
    }

    const GUARDS: &str = "keepalives=1&keepalives_idle=5&keepalives_interval=2\
                          &keepalives_count=3&tcp_user_timeout=10000";

    #[test]
    fn postgres_urls_get_a_connect_timeout_and_keepalives_unless_they_have_them() {
        assert_eq!(
            postgres_url("postgres://u:p@db:5432/push"),
            format!("postgres://u:p@db:5432/push?connect_timeout=4&{GUARDS}")
        );
        assert_eq!(
            postgres_url("postgresql://db/push?sslmode=require"),
            format!("postgresql://db/push?sslmode=require&connect_timeout=4&{GUARDS}")
        );
        assert_eq!(
            postgres_url("postgres://db/push?connect_timeout=9&tcp_user_timeout=0"),
            "postgres://db/push?connect_timeout=9&tcp_user_timeout=0&keepalives=1\
             &keepalives_idle=5&keepalives_interval=2&keepalives_count=3"
        );
    }

    #[test]
    fn other_schemes_are_refused_without_echoing_the_url() {
        let error = parse(Some("mysql://root:hunter2@db/push")).unwrap_err();
        assert_eq!(error, DatabaseUrlError::UnknownScheme("mysql".into()));
        assert!(!error.to_string().contains("hunter2"));
    }
}
