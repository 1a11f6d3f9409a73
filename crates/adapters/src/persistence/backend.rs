//! Which database the store runs on, opened from the configuration: Postgres, whose
//! hot-path statements go through its batches, or a SQLite file.

use std::path::Path;
use std::sync::Arc;

use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use secrecy::ExposeSecret as _;

use super::config::{
    DEFAULT_POSTGRES_POOL_SIZE, DEFAULT_SQLITE_PATH, DEFAULT_SQLITE_POOL_SIZE, DatabaseConfig,
    Target,
};
use super::database::{
    Database, FreshPool, PgManager, PgPool, SqlitePool, Tuning, build_pool, pool_builder,
};
use super::error::StoreSetupError;
use super::migrations::{SQLITE_MIGRATIONS, apply_migrations, apply_postgres_migrations};
use super::pg_batches::PgBatches;

/// The database and what runs on it; cheap to clone.
#[derive(Clone)]
pub(crate) enum Backend {
    /// The statements of the hot path (claiming an event, recording a push's outcome,
    /// finishing an event) go through `batches`; the others run on `db` directly.
    Postgres {
        db: Database<PgPool>,
        batches: Arc<PgBatches>,
    },
    Sqlite(Database<SqlitePool>),
}

impl Backend {
    /// Connects to the database `config` names, applies pending migrations when
    /// `config.run_migrations` is set, and builds the pool. Blocks.
    pub(crate) fn open(config: &DatabaseConfig) -> Result<Self, StoreSetupError> {
        let target = Target::parse(config.url.as_ref(), config.connect_timeout)?;
        if config.url.is_none() {
            tracing::info!(
                path = DEFAULT_SQLITE_PATH,
                "DATABASE_URL is not set: using the SQLite file in the working directory"
            );
        }
        let backend = target.backend_name();
        let tuning = Tuning {
            statement_timeout: config.statement_timeout,
        };
        match &target {
            Target::Postgres(url) => {
                let url = url.expose_secret();
                // One direct connection first: it fails at once with libpq's message,
                // where the pool would retry until its timeout.
                let mut conn = PgConnection::establish(url)
                    .map_err(|source| StoreSetupError::Connect { backend, source })?;
                if config.run_migrations {
                    apply_postgres_migrations(&mut conn)?;
                }
                drop(conn);
                let size = config
                    .pool_size
                    .unwrap_or(DEFAULT_POSTGRES_POOL_SIZE)
                    .max(1);
                tracing::info!(backend, pool_size = size, "using the Postgres database");
                let (pool_config, url) = (config.clone(), url.to_owned());
                let build = move || {
                    pool_builder(size, &pool_config, tuning)
                        .test_on_check_out(false)
                        .build(PgManager(ConnectionManager::new(url.clone())))
                };
                let pool = build().map_err(|source| StoreSetupError::Pool { backend, source })?;
                let fresh_pool: FreshPool<PgPool> = Arc::new(build);
                let db = Database::new(pool, Some(fresh_pool), config);
                let batches = Arc::new(PgBatches::new(&db));
                Ok(Backend::Postgres { db, batches })
            }
            Target::Sqlite(path) => {
                create_private(path)?;
                let path_text = sqlite_path_text(path);
                let mut conn = SqliteConnection::establish(&path_text).map_err(|source| {
                    StoreSetupError::OpenSqlite {
                        path: path.clone(),
                        source,
                    }
                })?;
                // WAL must be on before the first pooled connection runs, and a file
                // that is not a database must fail here, not on the first request.
                tuning
                    .tune_sqlite(&mut conn)
                    .map_err(|source| StoreSetupError::Prepare { backend, source })?;
                if config.run_migrations {
                    apply_migrations(&mut conn, SQLITE_MIGRATIONS, backend)?;
                }
                drop(conn);
                let size = config.pool_size.unwrap_or(DEFAULT_SQLITE_POOL_SIZE).max(1);
                tracing::info!(
                    backend,
                    path = %path.display(),
                    pool_size = size,
                    "using the SQLite database file"
                );
                let pool = build_pool(
                    ConnectionManager::new(path_text),
                    size,
                    config,
                    tuning,
                    backend,
                )?;
                Ok(Backend::Sqlite(Database::new(pool, None, config)))
            }
        }
    }

    /// `"postgres"` or `"sqlite"`, for logs and metrics.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Connections `(in_use, idle)` right now, for metrics.
    pub(crate) fn pool_state(&self) -> (u32, u32) {
        let state = match self {
            Backend::Postgres { db, .. } => db.pool().state(),
            Backend::Sqlite(db) => db.pool().state(),
        };
        (
            state.connections.saturating_sub(state.idle_connections),
            state.idle_connections,
        )
    }
}

/// Creates the SQLite file readable and writable by its owner only (`0600`) when it does
/// not exist yet: it holds every device token. SQLite gives its `-wal` and `-shm` files
/// the database file's permissions. An existing file keeps the permissions its
/// operator chose, with a warning when others may read it.
fn create_private(path: &Path) -> Result<(), StoreSetupError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(metadata) = std::fs::metadata(path) {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{mode:o}"),
                        "the SQLite database holds device tokens and is readable by other \
                         users: chmod 600 it"
                    );
                }
            }
            Ok(())
        }
        Err(source) => Err(StoreSetupError::CreateSqlite {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sqlite_path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
