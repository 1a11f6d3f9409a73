//! The database step of `webex-push check`: reach the database named by the
//! configuration and say what state it is in, changing nothing. No SQLite file is
//! created, no migration applied, no migration table set up.

use std::path::Path;

use diesel::connection::SimpleConnection as _;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types;
use secrecy::ExposeSecret as _;

use super::config::DatabaseConfig;
use super::config::Target;
use super::error::StoreSetupError;
use super::migrations::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

/// What [`check_database`] found in a database it could reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseCheck {
    /// `"postgres"` or `"sqlite"`.
    pub backend: &'static str,
    /// The SQLite file (relative paths are to the working directory).
    pub sqlite_path: Option<std::path::PathBuf>,
    /// Migrations of this binary the database has not applied (by version). The server
    /// applies them at start-up with `MIGRATE_ON_START=true`; `webex-push migrate` does
    /// otherwise.
    pub pending_migrations: Vec<String>,
    /// The SQLite file does not exist yet: `serve` (or `migrate`) creates it.
    pub not_created_yet: bool,
    /// Set-ups that work but expose data: a SQLite file other users may read.
    pub warnings: Vec<String>,
}

/// Connects as the server would and reports the database's state without changing it:
/// Postgres gets one connection and read-only queries; an existing SQLite file is
/// opened read-only, and a missing one is not created (only its directory must exist).
pub async fn check_database(config: &DatabaseConfig) -> Result<DatabaseCheck, StoreSetupError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || check_blocking(&config))
        .await
        .map_err(StoreSetupError::Task)?
}

fn check_blocking(config: &DatabaseConfig) -> Result<DatabaseCheck, StoreSetupError> {
    let target = Target::parse(config.url.as_ref(), config.connect_timeout)?;
    let backend = target.backend_name();
    let prepare = |source| StoreSetupError::Prepare { backend, source };
    match &target {
        Target::Postgres(url) => {
            let mut conn = PgConnection::establish(url.expose_secret())
                .map_err(|source| StoreSetupError::Connect { backend, source })?;
            let applied = pg_applied_versions(&mut conn).map_err(prepare)?;
            Ok(DatabaseCheck {
                backend,
                sqlite_path: None,
                pending_migrations: pending::<diesel::pg::Pg>(
                    &POSTGRES_MIGRATIONS,
                    &applied,
                    backend,
                )?,
                not_created_yet: false,
                warnings: Vec::new(),
            })
        }
        Target::Sqlite(path) => {
            let metadata = match std::fs::metadata(path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return missing_sqlite_file(path, backend);
                }
                Err(source) => {
                    return Err(StoreSetupError::CreateSqlite {
                        path: path.clone(),
                        source,
                    });
                }
            };
            let mut warnings = Vec::new();
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    warnings.push(format!(
                        "the SQLite database {} holds device tokens and other users may \
                         read it (mode {mode:o}): chmod 600 it",
                        path.display()
                    ));
                }
            }
            let mut conn = SqliteConnection::establish(&read_only_uri(path)).map_err(|source| {
                StoreSetupError::OpenSqlite {
                    path: path.clone(),
                    source,
                }
            })?;
            // Reading the schema fails on a file that is not a database.
            conn.batch_execute("SELECT count(*) FROM sqlite_master")
                .map_err(prepare)?;
            let applied = sqlite_applied_versions(&mut conn).map_err(prepare)?;
            Ok(DatabaseCheck {
                backend,
                sqlite_path: Some(path.clone()),
                pending_migrations: pending::<diesel::sqlite::Sqlite>(
                    &SQLITE_MIGRATIONS,
                    &applied,
                    backend,
                )?,
                not_created_yet: false,
                warnings,
            })
        }
    }
}

/// A SQLite file that does not exist yet is fine when `serve` can create it there.
fn missing_sqlite_file(
    path: &Path,
    backend: &'static str,
) -> Result<DatabaseCheck, StoreSetupError> {
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !directory.is_dir() {
        return Err(StoreSetupError::CreateSqlite {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist", directory.display()),
            ),
        });
    }
    let all = pending::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS, &[], backend)?;
    Ok(DatabaseCheck {
        backend,
        sqlite_path: Some(path.to_path_buf()),
        pending_migrations: all,
        not_created_yet: true,
        warnings: Vec::new(),
    })
}

/// `file:` URI opening `path` read-only (SQLite's URI syntax: `?`, `#` and `%` escaped).
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for ch in path.to_string_lossy().chars() {
        match ch {
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            '%' => uri.push_str("%25"),
            ch => uri.push(ch),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = sql_types::Text)]
    version: String,
}

/// Whether the migration table exists, asked first: diesel's own harness would
/// create it.
const PG_HAS_MIGRATION_TABLE: &str = "SELECT count(*) AS n FROM information_schema.tables \
     WHERE table_name = '__diesel_schema_migrations' AND table_schema = current_schema()";
const SQLITE_HAS_MIGRATION_TABLE: &str = "SELECT count(*) AS n FROM sqlite_master \
     WHERE type = 'table' AND name = '__diesel_schema_migrations'";
const APPLIED_VERSIONS: &str = "SELECT version FROM __diesel_schema_migrations";

/// The migration versions a Postgres database records (none without the table).
fn pg_applied_versions(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let tables: Vec<Count> = diesel::sql_query(PG_HAS_MIGRATION_TABLE).load(conn)?;
    if tables.first().is_none_or(|count| count.n == 0) {
        return Ok(Vec::new());
    }
    let rows: Vec<AppliedVersion> = diesel::sql_query(APPLIED_VERSIONS).load(conn)?;
    Ok(rows.into_iter().map(|row| row.version).collect())
}

/// The migration versions a SQLite database records (none without the table).
fn sqlite_applied_versions(conn: &mut SqliteConnection) -> QueryResult<Vec<String>> {
    let tables: Vec<Count> = diesel::sql_query(SQLITE_HAS_MIGRATION_TABLE).load(conn)?;
    if tables.first().is_none_or(|count| count.n == 0) {
        return Ok(Vec::new());
    }
    let rows: Vec<AppliedVersion> = diesel::sql_query(APPLIED_VERSIONS).load(conn)?;
    Ok(rows.into_iter().map(|row| row.version).collect())
}

/// The embedded migrations whose version is not among `applied`, oldest first.
fn pending<DB: diesel::backend::Backend>(
    migrations: &impl MigrationSource<DB>,
    applied: &[String],
    backend: &'static str,
) -> Result<Vec<String>, StoreSetupError> {
    let all = migrations
        .migrations()
        .map_err(|source| StoreSetupError::Migrations { backend, source })?;
    let mut pending: Vec<String> = all
        .iter()
        .map(|migration| migration.name().version().to_string())
        .filter(|version| !applied.contains(version))
        .collect();
    pending.sort();
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_uris_escape_what_sqlite_would_read_as_query_or_fragment() {
        assert_eq!(
            read_only_uri(Path::new("/var/lib/x?y#z%.db")),
            "file:/var/lib/x%3fy%23z%25.db?mode=ro"
        );
        assert_eq!(
            read_only_uri(Path::new("webex-push.db")),
            "file:webex-push.db?mode=ro"
        );
    }
}
