//! The tables as Diesel sees them, once per backend: Postgres keeps native `uuid` and
//! `timestamptz` columns, SQLite keeps text. Each module offers the same names
//! (`devices`, `seen_events`, `DeviceRow`, `person_key`) so one query body serves both.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use webex_push_domain::{
    ApnsEnvironment, AppFlavour, BundleId, Channel, Device, DeviceToken, PersonId, PushProvider,
};

use super::error::DbError;

pub(crate) mod pg {
    use chrono::{DateTime, Utc};
    use diesel::prelude::*;
    use uuid::Uuid;
    use webex_push_domain::{Device, JobId, StoredEvent};

    use crate::persistence::error::DbError;

    diesel::table! {
        devices (token) {
            token -> Text,
            channel -> Text,
            person_uuid -> Uuid,
            person_id -> Text,
            email -> Nullable<Text>,
            environment -> Nullable<Text>,
            bundle_id -> Nullable<Text>,
            flavour -> Text,
            provider -> Text,
            registered_at -> Timestamptz,
            updated_at -> Timestamptz,
            last_outcome -> Nullable<Text>,
            last_outcome_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        seen_events (key) {
            key -> Text,
            seen_at -> Timestamptz,
            job -> Nullable<Uuid>,
            event -> Nullable<Text>,
            deliver_by -> Nullable<Timestamptz>,
            holder -> Nullable<Uuid>,
        }
    }

    diesel::table! {
        replicas (id) {
            id -> Uuid,
            alive_at -> Timestamptz,
        }
    }

    /// The person as the `person_uuid` column stores it.
    pub(crate) fn person_key(uuid: Uuid) -> Uuid {
        uuid
    }

    #[derive(Queryable, QueryableByName, Selectable)]
    #[diesel(table_name = devices, check_for_backend(diesel::pg::Pg))]
    pub(crate) struct DeviceRow {
        token: String,
        channel: String,
        person_uuid: Uuid,
        person_id: String,
        environment: Option<String>,
        bundle_id: Option<String>,
        flavour: String,
        provider: String,
        registered_at: DateTime<Utc>,
        last_outcome: Option<String>,
        last_outcome_at: Option<DateTime<Utc>>,
    }

    /// A device row of a batched claim: which claim of the batch it answers (`n`, from
    /// 1), and whether that claim recorded its event.
    #[derive(QueryableByName)]
    pub(crate) struct ClaimRow {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        pub(crate) n: i64,
        #[diesel(embed)]
        pub(crate) device: DeviceRow,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        pub(crate) fresh: bool,
    }

    /// An unfinished event taken over from a replica that stopped.
    #[derive(QueryableByName)]
    pub(crate) struct TakenRow {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
        job: Option<Uuid>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        event: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
        deliver_by: Option<DateTime<Utc>>,
    }

    impl TakenRow {
        /// `None` for a row written before events were stored with their job.
        pub(crate) fn into_stored(self) -> Option<StoredEvent> {
            Some(StoredEvent {
                job: JobId::from_uuid(self.job?),
                event: self.event?,
                deliver_by: self.deliver_by?,
            })
        }
    }

    impl DeviceRow {
        pub(crate) fn into_device(self) -> Result<Device, DbError> {
            super::device_from_row(super::RawDevice {
                token: self.token,
                channel: self.channel,
                person_uuid: self.person_uuid,
                person_id: self.person_id,
                environment: self.environment,
                bundle_id: self.bundle_id,
                flavour: self.flavour,
                provider: self.provider,
                registered_at: self.registered_at,
                last_outcome: self.last_outcome,
                last_outcome_at: self.last_outcome_at,
            })
        }
    }
}

pub(crate) mod sqlite {
    use chrono::{DateTime, Utc};
    use diesel::prelude::*;
    use uuid::Uuid;
    use webex_push_domain::{Device, JobId, StoredEvent};

    use crate::persistence::error::DbError;

    diesel::table! {
        devices (token) {
            token -> Text,
            channel -> Text,
            person_uuid -> Text,
            person_id -> Text,
            email -> Nullable<Text>,
            environment -> Nullable<Text>,
            bundle_id -> Nullable<Text>,
            flavour -> Text,
            provider -> Text,
            registered_at -> TimestamptzSqlite,
            updated_at -> TimestamptzSqlite,
            last_outcome -> Nullable<Text>,
            last_outcome_at -> Nullable<TimestamptzSqlite>,
        }
    }

    diesel::table! {
        seen_events (key) {
            key -> Text,
            seen_at -> TimestamptzSqlite,
            job -> Nullable<Text>,
            event -> Nullable<Text>,
            deliver_by -> Nullable<TimestamptzSqlite>,
            holder -> Nullable<Text>,
        }
    }

    diesel::table! {
        replicas (id) {
            id -> Text,
            alive_at -> TimestamptzSqlite,
        }
    }

    /// The person as the `person_uuid` column stores it: hyphenated lowercase, the one
    /// spelling, so equality on the text is equality of people.
    pub(crate) fn person_key(uuid: Uuid) -> String {
        uuid.hyphenated().to_string()
    }

    #[derive(Queryable, Selectable)]
    #[diesel(table_name = devices, check_for_backend(diesel::sqlite::Sqlite))]
    pub(crate) struct DeviceRow {
        token: String,
        channel: String,
        person_uuid: String,
        person_id: String,
        environment: Option<String>,
        bundle_id: Option<String>,
        flavour: String,
        provider: String,
        registered_at: DateTime<Utc>,
        last_outcome: Option<String>,
        last_outcome_at: Option<DateTime<Utc>>,
    }

    /// An unfinished event taken over from a process that stopped.
    #[derive(QueryableByName)]
    pub(crate) struct TakenRow {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        job: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        event: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::TimestamptzSqlite>)]
        deliver_by: Option<DateTime<Utc>>,
    }

    impl TakenRow {
        /// `None` for a row written before events were stored with their job.
        pub(crate) fn into_stored(self) -> Option<StoredEvent> {
            Some(StoredEvent {
                job: JobId::from_uuid(Uuid::try_parse(&self.job?).ok()?),
                event: self.event?,
                deliver_by: self.deliver_by?,
            })
        }
    }

    impl DeviceRow {
        pub(crate) fn into_device(self) -> Result<Device, DbError> {
            let person_uuid = Uuid::try_parse(&self.person_uuid)
                .map_err(|_| DbError::Corrupt("person_uuid is not a UUID"))?;
            super::device_from_row(super::RawDevice {
                token: self.token,
                channel: self.channel,
                person_uuid,
                person_id: self.person_id,
                environment: self.environment,
                bundle_id: self.bundle_id,
                flavour: self.flavour,
                provider: self.provider,
                registered_at: self.registered_at,
                last_outcome: self.last_outcome,
                last_outcome_at: self.last_outcome_at,
            })
        }
    }
}

/// A device row in backend-neutral types, before it is parsed into domain values.
struct RawDevice {
    token: String,
    channel: String,
    person_uuid: Uuid,
    person_id: String,
    environment: Option<String>,
    bundle_id: Option<String>,
    flavour: String,
    provider: String,
    registered_at: DateTime<Utc>,
    last_outcome: Option<String>,
    last_outcome_at: Option<DateTime<Utc>>,
}

fn device_from_row(row: RawDevice) -> Result<Device, DbError> {
    let token = stored_token(&row.token, &row.provider)?;
    let channel = row
        .channel
        .parse::<Channel>()
        .map_err(|_| DbError::Corrupt("channel is not voip or alert"))?;
    // The id as sent is kept for display; should it no longer parse to the stored UUID
    // (it always does when written by this adapter), the UUID is the truth.
    let person = PersonId::parse(&row.person_id)
        .ok()
        .filter(|person| person.uuid() == row.person_uuid)
        .unwrap_or_else(|| PersonId::from_uuid(row.person_uuid));
    let environment = row
        .environment
        .map(|e| e.parse::<ApnsEnvironment>())
        .transpose()
        .map_err(|_| DbError::Corrupt("environment is not production or sandbox"))?;
    let bundle_id = row
        .bundle_id
        .map(|b| BundleId::parse(&b))
        .transpose()
        .map_err(|_| DbError::Corrupt("bundle_id is not a valid bundle id"))?;
    let flavour = row
        .flavour
        .parse::<AppFlavour>()
        .map_err(|_| DbError::Corrupt("flavour is not seed or kitchensink"))?;
    Ok(Device {
        token,
        channel,
        person,
        environment,
        bundle_id,
        flavour,
        registered_at: row.registered_at,
        last_outcome: row.last_outcome,
        last_outcome_at: row.last_outcome_at,
    })
}

/// A token as stored with its provider.
pub(crate) fn stored_token(token: &str, provider: &str) -> Result<DeviceToken, DbError> {
    let provider = provider
        .parse::<PushProvider>()
        .map_err(|_| DbError::Corrupt("provider is not apns or fcm"))?;
    DeviceToken::parse_for(provider, token)
        .map_err(|_| DbError::Corrupt("token is not a valid device token"))
}
