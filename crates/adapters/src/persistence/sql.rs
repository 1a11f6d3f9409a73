//! The text of the statements that are not batched, once per backend: Postgres
//! numbers its parameters `$1`, SQLite takes `?`, and a few clauses differ.

use diesel::QueryableByName;
use diesel::sql_types;

/// The event's key recorded for its job ([`RegistrationPort::claim`](webex_push_domain::RegistrationPort::claim) on SQLite): one
/// row changed when it is new, or was recorded by the same job before.
pub(crate) const SQLITE_CLAIM_EVENT: &str = "INSERT INTO seen_events (key, seen_at, job, event, deliver_by, holder) \
     VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (key) DO UPDATE SET seen_at = seen_events.seen_at \
     WHERE seen_events.job = excluded.job";

/// The devices of person `$1` on channel `$2` beyond the `$3` most recently registered
/// ([`RegistrationPort::trim_devices`](webex_push_domain::RegistrationPort::trim_devices)), removed.
pub(crate) const PG_TRIM_DEVICES: &str = "DELETE FROM devices WHERE token IN (\
     SELECT token FROM devices WHERE person_uuid = $1 AND channel = $2 \
     ORDER BY registered_at DESC, token DESC OFFSET $3) RETURNING token, provider";
pub(crate) const SQLITE_TRIM_DEVICES: &str = "DELETE FROM devices WHERE token IN (\
     SELECT token FROM devices WHERE person_uuid = ?1 AND channel = ?2 \
     ORDER BY registered_at DESC, token DESC LIMIT -1 OFFSET ?3) RETURNING token, provider";

/// A token [`RegistrationPort::trim_devices`](webex_push_domain::RegistrationPort::trim_devices) removed.
#[derive(QueryableByName)]
pub(crate) struct TrimmedRow {
    #[diesel(sql_type = sql_types::Text)]
    pub(crate) token: String,
    #[diesel(sql_type = sql_types::Text)]
    pub(crate) provider: String,
}

/// At most `$2` events seen before `$1` ([`RegistrationPort::prune_seen_events`](webex_push_domain::RegistrationPort::prune_seen_events)).
pub(crate) const PG_PRUNE_SEEN_EVENTS: &str = "DELETE FROM seen_events WHERE key IN (\
     SELECT key FROM seen_events WHERE seen_at < $1 LIMIT $2)";
pub(crate) const SQLITE_PRUNE_SEEN_EVENTS: &str = "DELETE FROM seen_events WHERE rowid IN (\
     SELECT rowid FROM seen_events WHERE seen_at < ? LIMIT ?)";

/// The caller says it is alive ([`RegistrationPort::take_over_events`](webex_push_domain::RegistrationPort::take_over_events)); replicas
/// silent for a day are forgotten.
pub(crate) const PG_REPLICA_ALIVE: &str = "WITH forgotten AS (DELETE FROM replicas \
     WHERE alive_at < $2 - interval '1 day') \
     INSERT INTO replicas (id, alive_at) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at";
pub(crate) const SQLITE_REPLICA_ALIVE: &str = "INSERT INTO replicas (id, alive_at) VALUES (?, ?) \
     ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at";

/// Unfinished events past their deadline (`$1`) whose holder is not alive (has not
/// said so since `$2`): forgotten.
pub(crate) const PG_EXPIRE_ORPHANS: &str = "UPDATE seen_events SET event = NULL, holder = NULL \
     WHERE event IS NOT NULL AND deliver_by <= $1 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= $2))";
pub(crate) const SQLITE_EXPIRE_ORPHANS: &str = "UPDATE seen_events SET event = NULL, holder = NULL \
     WHERE event IS NOT NULL AND deliver_by <= ?1 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= ?2))";

/// At most `$4` unfinished events within their deadline (`$2`) whose holder is not
/// alive (since `$3`), soonest deadline first, made `$1`'s. `SKIP LOCKED`: two replicas
/// taking over at once split the events instead of waiting for each other.
pub(crate) const PG_TAKE_OVER: &str = "UPDATE seen_events SET holder = $1 WHERE key IN (\
     SELECT key FROM seen_events WHERE event IS NOT NULL AND deliver_by > $2 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= $3)) \
     ORDER BY deliver_by LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING job, event, deliver_by";
pub(crate) const SQLITE_TAKE_OVER: &str = "UPDATE seen_events SET holder = ?1 WHERE key IN (\
     SELECT key FROM seen_events WHERE event IS NOT NULL AND deliver_by > ?2 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= ?3)) \
     ORDER BY deliver_by LIMIT ?4) \
     RETURNING job, event, deliver_by";
