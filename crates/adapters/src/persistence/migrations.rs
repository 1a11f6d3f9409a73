//! The schema's migrations, embedded in the binary, and how they are applied.

use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::error::StoreSetupError;

pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/postgres");
pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/sqlite");

pub(crate) fn apply_migrations<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    backend: &'static str,
) -> Result<Vec<String>, StoreSetupError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|source| StoreSetupError::Migrations { backend, source })?;
    let applied: Vec<String> = applied.iter().map(ToString::to_string).collect();
    if !applied.is_empty() {
        tracing::info!(
            backend,
            migrations = %applied.join(","),
            "applied database migrations"
        );
    }
    Ok(applied)
}

/// Replicas starting together would race to create the same tables; a session-level
/// advisory lock lets one migrate while the others wait, then find nothing pending.
pub(crate) fn apply_postgres_migrations(
    conn: &mut PgConnection,
) -> Result<Vec<String>, StoreSetupError> {
    const MIGRATION_LOCK: i64 = 0x7765_6265_7870; // "webexp"
    let backend = "postgres";
    let lock_error = |source| StoreSetupError::Prepare { backend, source };
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(conn)
        .map_err(lock_error)?;
    let applied = apply_migrations(conn, POSTGRES_MIGRATIONS, backend);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(conn)
        .map_err(lock_error)?;
    applied
}

/// Reverts every applied migration, newest first; returns the versions reverted.
pub(crate) fn revert_all<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    backend: &'static str,
) -> Result<Vec<String>, StoreSetupError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    Ok(conn
        .revert_all_migrations(migrations)
        .map_err(|source| StoreSetupError::Migrations { backend, source })?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// Reverts the newest applied migration; returns its version.
pub(crate) fn revert_last<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    backend: &'static str,
) -> Result<String, StoreSetupError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    Ok(conn
        .revert_last_migration(migrations)
        .map_err(|source| StoreSetupError::Migrations { backend, source })?
        .to_string())
}
