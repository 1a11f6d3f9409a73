//! The Registration port contract, run against SQLite and Postgres, plus what only one
//! backend can show (outages, locks, start-up errors) and the migrations round trip.
//!
//! Postgres: `TEST_DATABASE_URL` (admin URL) or a throwaway cluster from the installed
//! server binaries; each test gets its own database, dropped afterwards.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, SubsecRound as _, TimeZone as _, Utc};
use secrecy::SecretString;
use uuid::Uuid;
use webex_push_adapters::persistence::{DatabaseConfig, DieselRegistrationStore, StoreSetupError};
use webex_push_domain::{
    ApnsEnvironment, AppFlavour, BundleId, Channel, Claim, DeviceToken, EmailAddress, EventClaim,
    EventKey, JobId, PersonId, PushProvider, Registration, RegistrationPort, ReplicaId, StoreError,
};
use webex_push_test_support::{
    TestCluster, TestDatabase, TestSqlite, eventually, eventually_explained,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

enum Db {
    Sqlite(TestSqlite),
    Postgres(TestDatabase),
}

/// A store on a fresh database. Fields drop in order: the store's pool closes before
/// the database is dropped.
struct Harness {
    store: DieselRegistrationStore,
    db: Db,
}

fn test_config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url: Some(SecretString::from(url)),
        pool_size: Some(4),
        connect_timeout: Duration::from_secs(2),
        checkout_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
        run_migrations: true,
    }
}

impl Harness {
    async fn new(backend: Backend) -> Self {
        let db = match backend {
            Backend::Sqlite => Db::Sqlite(TestSqlite::new()),
            Backend::Postgres => Db::Postgres(TestDatabase::postgres()),
        };
        let store = DieselRegistrationStore::connect(&test_config(db.url()))
            .await
            .expect("store connects to a fresh database");
        Self { store, db }
    }

    /// Another store on the same database: a second replica.
    async fn replica(&self) -> DieselRegistrationStore {
        DieselRegistrationStore::connect(&test_config(self.db.url()))
            .await
            .expect("replica connects")
    }

    fn postgres(&self) -> &TestDatabase {
        match &self.db {
            Db::Postgres(db) => db,
            Db::Sqlite(_) => panic!("a Postgres-only test ran on SQLite"),
        }
    }
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite(db) => db.url(),
            Db::Postgres(db) => db.url().to_owned(),
        }
    }
}

fn token() -> DeviceToken {
    DeviceToken::parse(&format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    ))
    .unwrap()
}

fn webex_id(uuid: Uuid) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("ciscospark://us/PEOPLE/{}", uuid.hyphenated()))
}

fn person() -> PersonId {
    PersonId::parse(&webex_id(Uuid::new_v4())).unwrap()
}

fn registration(person: &PersonId) -> Registration {
    Registration {
        person: person.clone(),
        email: Some(EmailAddress::parse("ada@example.com").unwrap()),
        voip_token: Some(token()),
        alert_token: token(),
        environment: None,
        bundle_id: None,
        flavour: AppFlavour::Seed,
    }
}

/// A fixed instant with microseconds, so time round trips are checked to the microsecond.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// The person whose one device lets [`CaseClaims::record_key`] record any key.
const WITNESS: Uuid = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);

/// The key a raw test key is recorded under: every raw key stands for one event.
fn key_of(raw: &str) -> EventKey {
    EventKey::new("test", &PersonId::from_uuid(WITNESS), raw)
}

/// A claim of `raw` (when `Some`) for `person` by `job`.
fn claim_of(raw: Option<&str>, job: JobId, at: DateTime<Utc>, person: &PersonId) -> EventClaim {
    EventClaim {
        key: raw.map(key_of),
        job,
        person: person.clone(),
        at,
        event: format!("{{\"raw\":{:?}}}", raw.unwrap_or("")),
        deliver_by: at + secs(30),
        holder: ReplicaId::new(),
    }
}

/// The port's `claim`, spelled as the cases below use it.
#[async_trait::async_trait]
trait CaseClaims {
    /// A claim of `raw` for `person` by a job never seen before.
    async fn claim_new_job(
        &self,
        raw: Option<&str>,
        at: DateTime<Utc>,
        person: &PersonId,
    ) -> Result<Claim, StoreError>;

    /// Claims `raw` for [`WITNESS`] (who has a device) by a new job: whether the key was
    /// recorded now, that is, whether it was new.
    async fn record_key(&self, raw: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
}

#[async_trait::async_trait]
impl CaseClaims for DieselRegistrationStore {
    async fn claim_new_job(
        &self,
        raw: Option<&str>,
        at: DateTime<Utc>,
        person: &PersonId,
    ) -> Result<Claim, StoreError> {
        self.claim(&claim_of(raw, JobId::new(), at, person)).await
    }

    async fn record_key(&self, raw: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let witness = PersonId::from_uuid(WITNESS);
        let mut device = registration(&witness);
        device.voip_token = Some(DeviceToken::parse(&"a".repeat(64)).unwrap());
        device.alert_token = DeviceToken::parse(&"b".repeat(64)).unwrap();
        if self.devices_of(&witness, Channel::Voip).await?.is_empty() {
            self.register(&device, at).await?;
        }
        let claim = self
            .claim(&claim_of(Some(raw), JobId::new(), at, &witness))
            .await?;
        Ok(matches!(claim, Claim::Devices(_)))
    }
}

macro_rules! for_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::new(super::Backend::Sqlite).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::new(super::Backend::Postgres).await).await;
                }
            )*
        }
    };
}

for_both_backends!(
    registered_tokens_are_found_by_person_and_channel,
    registering_a_token_again_replaces_what_it_was_registered_as,
    a_token_moves_to_the_person_who_registers_it_last,
    fifty_concurrent_registrations_of_one_token_leave_exactly_one_row,
    a_person_can_have_any_number_of_devices_on_each_channel,
    trimming_keeps_the_most_recently_registered_devices_of_that_person_and_channel,
    every_spelling_of_a_person_finds_the_same_devices,
    unregister_removes_only_that_token_and_says_whether_it_was_there,
    a_token_registered_before_the_cutoff_is_removed,
    a_token_registered_again_at_or_after_the_cutoff_is_kept,
    a_removal_racing_a_re_registration_never_loses_the_new_registration,
    recording_an_outcome_keeps_it_and_pins_the_environment_when_given,
    recording_an_outcome_for_an_unknown_token_creates_nothing,
    an_event_is_new_exactly_once_across_replicas,
    a_claim_returns_the_devices_and_records_the_event_once_across_replicas,
    a_claim_for_a_person_without_devices_records_nothing,
    hundreds_of_concurrent_claims_each_get_their_own_devices_and_each_event_is_claimed_once,
    over_a_hundred_concurrent_outcomes_are_each_recorded_on_their_own_token,
    claims_and_marks_share_one_record_of_seen_events,
    pruning_forgets_only_events_seen_before_the_cutoff,
    sql_injection_strings_are_stored_and_returned_verbatim,
    registrations_sharing_tokens_in_opposite_order_do_not_deadlock,
    ping_answers_while_the_database_is_up,
    migrations_apply_revert_and_apply_again,
    a_store_without_migrations_reports_missing_tables_as_unknown_until_migrated,
    a_retry_of_the_same_job_finds_its_own_claim_and_another_job_a_duplicate,
    a_message_id_of_five_kilobytes_is_claimed_once,
    unfinished_events_of_a_stopped_replica_are_taken_over_once_and_finished_ones_never,
    a_million_old_keys_are_pruned_in_bounded_batches_until_caught_up,
    a_person_has_devices_of_both_flavours_each_read_back_as_registered,
    reverting_the_flavour_migration_removes_only_kitchensink_tokens,
    an_android_token_is_stored_with_its_provider_claimed_and_trimmed_as_registered,
    reverting_the_provider_migration_removes_only_fcm_tokens,
);

fn android_registration(person: &PersonId, fill: &str) -> Registration {
    Registration {
        email: None,
        voip_token: None,
        // FCM tokens are case-sensitive and not hex.
        alert_token: DeviceToken::parse_fcm(&format!("{fill}:APA91b-Xy_{}", Uuid::new_v4()))
            .unwrap(),
        environment: None,
        flavour: AppFlavour::KitchenSink,
        ..registration(person)
    }
}

async fn an_android_token_is_stored_with_its_provider_claimed_and_trimmed_as_registered(
    h: Harness,
) {
    let ada = person();
    let iphone = registration(&ada);
    let android = android_registration(&ada, "dA");
    h.store.register(&iphone, t0()).await.unwrap();
    h.store.register(&android, t0() + secs(1)).await.unwrap();
    let device = h.store.device(&android.alert_token).await.unwrap().unwrap();
    assert_eq!(device.token, android.alert_token);
    assert_eq!(device.token.provider(), PushProvider::Fcm);
    assert_eq!(device.channel, Channel::Alert);
    assert_eq!(device.flavour, AppFlavour::KitchenSink);
    let iphone_alert = h.store.device(&iphone.alert_token).await.unwrap().unwrap();
    assert_eq!(iphone_alert.token.provider(), PushProvider::Apns);

    let claim = h
        .store
        .claim(&claim_of(Some("call-1"), JobId::new(), t0(), &ada))
        .await
        .unwrap();
    let Claim::Devices(devices) = claim else {
        panic!("{claim:?}");
    };
    assert_eq!(devices.len(), 3);
    assert!(devices.contains(&device));

    // The alert channel holds both kinds of normal token: one per device, the limit.
    let evicted = h.store.trim_devices(&ada, Channel::Alert, 1).await.unwrap();
    assert_eq!(evicted, vec![iphone.alert_token.clone()]);
    let newer = android_registration(&ada, "eB");
    h.store.register(&newer, t0() + secs(2)).await.unwrap();
    let evicted = h.store.trim_devices(&ada, Channel::Alert, 1).await.unwrap();
    assert_eq!(evicted, vec![android.alert_token.clone()]);
    assert_eq!(evicted[0].provider(), PushProvider::Fcm);
    assert!(h.store.unregister(&newer.alert_token).await.unwrap());
}

async fn reverting_the_provider_migration_removes_only_fcm_tokens(h: Harness) {
    let (ada, bob) = (person(), person());
    h.store.register(&registration(&ada), t0()).await.unwrap();
    h.store
        .register(&android_registration(&bob, "x"), t0())
        .await
        .unwrap();
    assert_eq!(
        h.store.revert_last_migration().await.unwrap(),
        "20261207000005"
    );
    assert_eq!(h.store.run_migrations().await.unwrap().len(), 1);
    // An FCM token read as an APNs one would be garbage: it is gone, the iPhone kept.
    assert!(h.store.all_devices_of(&bob).await.unwrap().is_empty());
    let kept = h.store.all_devices_of(&ada).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .all(|d| d.token.provider() == PushProvider::Apns)
    );
}

fn kitchensink_registration(person: &PersonId) -> Registration {
    Registration {
        email: None,
        environment: Some(ApnsEnvironment::Sandbox),
        flavour: AppFlavour::KitchenSink,
        ..registration(person)
    }
}

async fn a_person_has_devices_of_both_flavours_each_read_back_as_registered(h: Harness) {
    let ada = person();
    let seed = registration(&ada);
    let kitchensink = kitchensink_registration(&ada);
    h.store.register(&seed, t0()).await.unwrap();
    h.store.register(&kitchensink, t0()).await.unwrap();

    let devices = h.store.all_devices_of(&ada).await.unwrap();
    assert_eq!(devices.len(), 4);
    for device in &devices {
        let expected = if [seed.voip(), &seed.alert_token].contains(&&device.token) {
            AppFlavour::Seed
        } else {
            AppFlavour::KitchenSink
        };
        assert_eq!(device.flavour, expected, "{device:?}");
    }
    let claim = h
        .store
        .claim_new_job(Some("both"), t0(), &ada)
        .await
        .unwrap();
    let mut expected = both_tokens(&seed);
    expected.extend(both_tokens(&kitchensink));
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(tokens_of(&claim), expected);

    // The same token registered again by the other app takes that app's flavour.
    let moved = Registration {
        flavour: AppFlavour::Seed,
        email: Some(EmailAddress::parse("ada@example.com").unwrap()),
        ..kitchensink.clone()
    };
    h.store.register(&moved, t0() + secs(1)).await.unwrap();
    let device = h.store.device(kitchensink.voip()).await.unwrap().unwrap();
    assert_eq!(device.flavour, AppFlavour::Seed);
}

async fn reverting_the_flavour_migration_removes_only_kitchensink_tokens(h: Harness) {
    let (ada, bob) = (person(), person());
    let seed = registration(&ada);
    h.store.register(&seed, t0()).await.unwrap();
    h.store
        .register(&kitchensink_registration(&bob), t0())
        .await
        .unwrap();

    // The provider migration came after it: reverted first.
    assert_eq!(
        h.store.revert_last_migration().await.unwrap(),
        "20261207000005"
    );
    let reverted = h.store.revert_last_migration().await.unwrap();
    assert_eq!(reverted, "20261206000004");
    // Without the column a KitchenSink token would get the seed's VoIP pushes, which
    // get the app killed: such tokens are gone, the seed's kept.
    assert_eq!(h.store.run_migrations().await.unwrap().len(), 2);
    assert!(h.store.all_devices_of(&bob).await.unwrap().is_empty());
    let kept = h.store.all_devices_of(&ada).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|device| device.flavour == AppFlavour::Seed));
}

async fn a_retry_of_the_same_job_finds_its_own_claim_and_another_job_a_duplicate(h: Harness) {
    let ada = person();
    h.store.register(&registration(&ada), t0()).await.unwrap();
    let other = h.replica().await;
    let job = JobId::new();
    let first = h
        .store
        .claim(&claim_of(Some("call-1"), job, t0(), &ada))
        .await
        .unwrap();
    // The same job again, as after a timeout whose statement did commit, on another
    // replica or connection: still its own claim, so it rings.
    let retried = other
        .claim(&claim_of(Some("call-1"), job, t0() + secs(1), &ada))
        .await
        .unwrap();
    let redelivered = other
        .claim(&claim_of(Some("call-1"), JobId::new(), t0(), &ada))
        .await
        .unwrap();
    assert!(
        matches!(first, Claim::Devices(ref d) if d.len() == 2),
        "{first:?}"
    );
    assert_eq!(retried, first);
    assert!(
        matches!(redelivered, Claim::Duplicate(_)),
        "{redelivered:?}"
    );

    // Two tries of one job racing each other: both are the job's own.
    let raced = claim_of(Some("call-2"), JobId::new(), t0(), &ada);
    let (a, b) = tokio::join!(h.store.claim(&raced), other.claim(&raced));
    assert!(matches!(a.unwrap(), Claim::Devices(_)));
    assert!(matches!(b.unwrap(), Claim::Devices(_)));
}

async fn a_message_id_of_five_kilobytes_is_claimed_once(h: Harness) {
    use webex_push_domain::{Event, NewMessage};
    let ada = person();
    h.store.register(&registration(&ada), t0()).await.unwrap();
    let message = |id: String| {
        Event::Message(NewMessage {
            message_id: id,
            room_id: "room".into(),
            room_type: None,
            recipient: ada.clone(),
            sender: None,
            sender_email: None,
            occurred_at: t0(),
            webhook: None,
        })
    };
    let long = "M".repeat(5 * 1024);
    let claim = |event: &Event| EventClaim {
        key: event.key(),
        job: JobId::new(),
        person: ada.clone(),
        at: t0(),
        event: serde_json::to_string(event).unwrap(),
        deliver_by: t0() + secs(300),
        holder: ReplicaId::new(),
    };
    let event = message(long.clone());
    let first = h.store.claim(&claim(&event)).await.unwrap();
    let again = h.store.claim(&claim(&event)).await.unwrap();
    let other = h
        .store
        .claim(&claim(&message(format!("{long}N"))))
        .await
        .unwrap();
    assert!(
        matches!(first, Claim::Devices(ref d) if d.len() == 2),
        "{first:?}"
    );
    assert!(matches!(again, Claim::Duplicate(_)), "{again:?}");
    assert!(matches!(other, Claim::Devices(_)), "{other:?}");
}

async fn unfinished_events_of_a_stopped_replica_are_taken_over_once_and_finished_ones_never(
    h: Harness,
) {
    let ada = person();
    h.store.register(&registration(&ada), t0()).await.unwrap();
    let stopped = ReplicaId::new();
    let alive = ReplicaId::new();
    let taker = ReplicaId::new();
    let mut claims = Vec::new();
    for (raw, holder, deliver_by) in [
        ("unfinished", stopped, t0() + secs(30)),
        ("finished", stopped, t0() + secs(30)),
        ("late", stopped, t0() - secs(1)),
        ("held", alive, t0() + secs(30)),
    ] {
        let mut claim = claim_of(Some(raw), JobId::new(), t0() - secs(5), &ada);
        claim.holder = holder;
        claim.deliver_by = deliver_by;
        h.store.claim(&claim).await.unwrap();
        claims.push(claim);
    }
    h.store.finish_event(&key_of("finished")).await.unwrap();
    // `alive` and `stopped` said so at t0 - 20 s; `alive` again just now.
    let long_ago = t0() - secs(20);
    h.store
        .take_over_events(stopped, long_ago, long_ago, 0)
        .await
        .unwrap();
    h.store
        .take_over_events(alive, t0(), long_ago, 0)
        .await
        .unwrap();

    let alive_since = t0() - secs(10);
    let other = h.replica().await;
    let (a, b) = tokio::join!(
        h.store.take_over_events(taker, t0(), alive_since, 10),
        other.take_over_events(ReplicaId::new(), t0(), alive_since, 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let taken: Vec<_> = a.events.iter().chain(&b.events).collect();
    assert_eq!(taken.len(), 1, "taken over once: {taken:?}");
    assert_eq!(taken[0].job, claims[0].job);
    assert_eq!(taken[0].event, claims[0].event);
    assert_eq!(taken[0].deliver_by, claims[0].deliver_by.trunc_subsecs(6));
    assert_eq!(
        a.expired + b.expired,
        1,
        "the late one is forgotten, counted once"
    );

    // The taker is alive now: nobody takes its event from it, and once finished it is
    // gone for good.
    let again = other
        .take_over_events(ReplicaId::new(), t0() + secs(1), t0(), 10)
        .await
        .unwrap();
    assert!(again.events.is_empty(), "{again:?}");
    h.store.finish_event(&key_of("unfinished")).await.unwrap();
    let later = other
        .take_over_events(ReplicaId::new(), t0() + secs(20), t0() + secs(19), 10)
        .await
        .unwrap();
    assert!(
        later.events.iter().all(|e| e.job == claims[3].job),
        "only the event of `alive`, which stopped saying so: {later:?}"
    );
    // Still de-duplicated after all that.
    assert!(!h.store.record_key("unfinished", t0()).await.unwrap());
}

async fn a_million_old_keys_are_pruned_in_bounded_batches_until_caught_up(h: Harness) {
    use diesel::{Connection as _, RunQueryDsl as _};
    const OLD: u32 = 1_000_000;
    assert!(h.store.record_key("recent", t0()).await.unwrap());
    match &h.db {
        Db::Postgres(db) => {
            let mut conn = diesel::PgConnection::establish(db.url()).unwrap();
            diesel::sql_query(format!(
                "INSERT INTO seen_events (key, seen_at) SELECT 'old:' || n, \
                 TIMESTAMPTZ '2026-11-01 00:00:00+00' FROM generate_series(1, {OLD}) AS n"
            ))
            .execute(&mut conn)
            .unwrap();
        }
        Db::Sqlite(db) => {
            let mut conn =
                diesel::SqliteConnection::establish(&db.path().to_string_lossy()).unwrap();
            diesel::sql_query(format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {OLD}) \
                 INSERT INTO seen_events (key, seen_at) \
                 SELECT 'old:' || i, '2026-11-01 00:00:00+00:00' FROM n"
            ))
            .execute(&mut conn)
            .unwrap();
        }
    }
    let batch = 20_000;
    let mut batches = Vec::new();
    loop {
        let pruned = h
            .store
            .prune_seen_events(t0() - secs(3600), batch)
            .await
            .unwrap();
        batches.push(pruned);
        if pruned < u64::from(batch) {
            break;
        }
    }
    assert_eq!(batches.iter().sum::<u64>(), u64::from(OLD));
    assert!(batches.iter().all(|&n| n <= u64::from(batch)));
    assert_eq!(batches.len(), 51, "{batches:?}");
    assert!(
        !h.store.record_key("recent", t0()).await.unwrap(),
        "the recent key is kept"
    );
}

async fn registered_tokens_are_found_by_person_and_channel(h: Harness) {
    let ada = person();
    let mut reg = registration(&ada);
    reg.environment = Some(ApnsEnvironment::Production);
    reg.bundle_id = Some(BundleId::parse("com.example.Phone").unwrap());
    h.store.register(&reg, t0()).await.unwrap();

    let voip = h.store.devices_of(&ada, Channel::Voip).await.unwrap();
    assert_eq!(voip.len(), 1);
    let device = &voip[0];
    assert_eq!(&device.token, reg.voip());
    assert_eq!(device.channel, Channel::Voip);
    assert_eq!(device.person, ada);
    assert_eq!(device.person.original(), ada.original());
    assert_eq!(device.environment, Some(ApnsEnvironment::Production));
    assert_eq!(device.bundle_id, reg.bundle_id);
    assert_eq!(device.registered_at, t0());
    assert_eq!(device.last_outcome, None);
    assert_eq!(device.last_outcome_at, None);

    let alert = h.store.devices_of(&ada, Channel::Alert).await.unwrap();
    assert_eq!(alert.len(), 1);
    assert_eq!(alert[0].token, reg.alert_token);
    assert_eq!(alert[0].channel, Channel::Alert);

    assert_eq!(h.store.all_devices_of(&ada).await.unwrap().len(), 2);
    assert_eq!(
        h.store
            .device(&reg.alert_token)
            .await
            .unwrap()
            .unwrap()
            .channel,
        Channel::Alert
    );
    assert_eq!(h.store.device(&token()).await.unwrap(), None);
    assert!(
        h.store
            .devices_of(&person(), Channel::Voip)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn registering_a_token_again_replaces_what_it_was_registered_as(h: Harness) {
    let ada = person();
    let first = registration(&ada);
    h.store.register(&first, t0()).await.unwrap();

    let mut again = first.clone();
    again.email = Some(EmailAddress::parse("ada.lovelace@example.org").unwrap());
    again.environment = Some(ApnsEnvironment::Sandbox);
    again.bundle_id = Some(BundleId::parse("com.example.Beta").unwrap());
    h.store.register(&again, t0() + secs(60)).await.unwrap();

    let voip = h.store.devices_of(&ada, Channel::Voip).await.unwrap();
    assert_eq!(voip.len(), 1, "one row per token, always");
    assert_eq!(voip[0].registered_at, t0() + secs(60));
    assert_eq!(voip[0].environment, Some(ApnsEnvironment::Sandbox));
    assert_eq!(voip[0].bundle_id, again.bundle_id);

    // Registering without an environment forgets the old one: the app knows best.
    h.store.register(&first, t0() + secs(120)).await.unwrap();
    let device = h.store.device(first.voip()).await.unwrap().unwrap();
    assert_eq!(device.environment, None);
    assert_eq!(device.bundle_id, None);
    assert_eq!(h.store.all_devices_of(&ada).await.unwrap().len(), 2);
}

async fn a_token_moves_to_the_person_who_registers_it_last(h: Harness) {
    let (ada, bob) = (person(), person());
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();
    let mut bobs = reg.clone();
    bobs.person = bob.clone();
    h.store.register(&bobs, t0() + secs(1)).await.unwrap();

    assert!(h.store.all_devices_of(&ada).await.unwrap().is_empty());
    let voip = h.store.devices_of(&bob, Channel::Voip).await.unwrap();
    assert_eq!(voip.len(), 1);
    assert_eq!(&voip[0].token, reg.voip());
    assert_eq!(voip[0].person, bob);
}

async fn fifty_concurrent_registrations_of_one_token_leave_exactly_one_row(h: Harness) {
    let shared = token();
    let people: Vec<PersonId> = (0..50).map(|_| person()).collect();
    let tasks: Vec<_> = people
        .iter()
        .enumerate()
        .map(|(i, someone)| {
            let store = h.store.clone();
            let mut reg = registration(someone);
            reg.voip_token = Some(shared.clone());
            tokio::spawn(async move { store.register(&reg, t0() + secs(i as i64)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.unwrap().unwrap();
    }

    let mut owners = 0;
    let mut alert_rows = 0;
    for someone in &people {
        owners += h
            .store
            .devices_of(someone, Channel::Voip)
            .await
            .unwrap()
            .len();
        alert_rows += h
            .store
            .devices_of(someone, Channel::Alert)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(owners, 1, "exactly one row holds the shared token");
    assert_eq!(alert_rows, 50, "every registration's own token is kept");
    let device = h.store.device(&shared).await.unwrap().unwrap();
    assert!(people.contains(&device.person));
}

async fn a_person_can_have_any_number_of_devices_on_each_channel(h: Harness) {
    let ada = person();
    let phones: Vec<Registration> = (0..3).map(|_| registration(&ada)).collect();
    for (i, phone) in phones.iter().enumerate() {
        h.store
            .register(phone, t0() + secs(i as i64))
            .await
            .unwrap();
    }
    let mut voip: Vec<DeviceToken> = h
        .store
        .devices_of(&ada, Channel::Voip)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    let mut expected: Vec<DeviceToken> = phones.iter().map(|p| p.voip().clone()).collect();
    voip.sort();
    expected.sort();
    assert_eq!(voip, expected);
    assert_eq!(
        h.store
            .devices_of(&ada, Channel::Alert)
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn trimming_keeps_the_most_recently_registered_devices_of_that_person_and_channel(
    h: Harness,
) {
    let ada = person();
    let bob = person();
    let phones: Vec<Registration> = (0..5).map(|_| registration(&ada)).collect();
    for (i, phone) in phones.iter().enumerate() {
        h.store
            .register(phone, t0() + secs(i as i64))
            .await
            .unwrap();
    }
    // The oldest phone registers again: it is now the most recent.
    h.store.register(&phones[0], t0() + secs(10)).await.unwrap();
    h.store.register(&registration(&bob), t0()).await.unwrap();

    let mut removed = h.store.trim_devices(&ada, Channel::Voip, 3).await.unwrap();
    removed.sort();
    let mut expected = vec![phones[1].voip().clone(), phones[2].voip().clone()];
    expected.sort();
    assert_eq!(removed, expected);
    let mut kept: Vec<DeviceToken> = h
        .store
        .devices_of(&ada, Channel::Voip)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    kept.sort();
    let mut expected: Vec<DeviceToken> = [0, 3, 4]
        .iter()
        .map(|&i| phones[i].voip().clone())
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
    // The other channel and the other person are untouched until trimmed themselves.
    assert_eq!(
        h.store
            .devices_of(&ada, Channel::Alert)
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        h.store.devices_of(&bob, Channel::Voip).await.unwrap().len(),
        1
    );
    // Within the limit nothing goes.
    assert!(
        h.store
            .trim_devices(&ada, Channel::Voip, 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.store
            .trim_devices(&bob, Channel::Voip, 1)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn every_spelling_of_a_person_finds_the_same_devices(h: Harness) {
    let uuid = Uuid::new_v4();
    let padded = webex_id(uuid);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "ciscospark://urn:TEAM:eu-central-1_k/PEOPLE/{uuid}"
    ));
    let sent_as = PersonId::parse(&padded).unwrap();
    let reg = registration(&sent_as);
    h.store.register(&reg, t0()).await.unwrap();

    for spelling in [
        uuid.to_string(),
        uuid.simple().to_string(),
        url_safe,
        padded.clone(),
    ] {
        let asked = PersonId::parse(&spelling).unwrap();
        let found = h.store.devices_of(&asked, Channel::Voip).await.unwrap();
        assert_eq!(found.len(), 1, "spelling {spelling}");
        assert_eq!(found[0].person.original(), padded, "the id as sent is kept");
    }
}

async fn unregister_removes_only_that_token_and_says_whether_it_was_there(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();

    assert!(h.store.unregister(reg.voip()).await.unwrap());
    assert!(!h.store.unregister(reg.voip()).await.unwrap());
    assert!(!h.store.unregister(&token()).await.unwrap());
    assert!(
        h.store
            .devices_of(&ada, Channel::Voip)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.store
            .devices_of(&ada, Channel::Alert)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_token_registered_before_the_cutoff_is_removed(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();

    let removed = h
        .store
        .remove_unless_registered_since(reg.voip(), t0() + secs(1))
        .await
        .unwrap();
    assert!(removed);
    assert_eq!(h.store.device(reg.voip()).await.unwrap(), None);
    assert!(h.store.device(&reg.alert_token).await.unwrap().is_some());
    assert!(
        !h.store
            .remove_unless_registered_since(reg.voip(), t0() + secs(1))
            .await
            .unwrap(),
        "removing a gone token reports false"
    );
}

async fn a_token_registered_again_at_or_after_the_cutoff_is_kept(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();

    for since in [t0() - secs(1), t0()] {
        let removed = h
            .store
            .remove_unless_registered_since(reg.voip(), since)
            .await
            .unwrap();
        assert!(!removed, "registered at or after {since}");
    }
    assert!(h.store.device(reg.voip()).await.unwrap().is_some());
}

async fn a_removal_racing_a_re_registration_never_loses_the_new_registration(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();
    let cutoff = t0() + secs(10);

    // APNs said the token died at `cutoff`; the app re-registers it after that.
    let (removal, registration) = tokio::join!(
        h.store.remove_unless_registered_since(reg.voip(), cutoff),
        h.store.register(&reg, cutoff + secs(1)),
    );
    registration.unwrap();
    removal.unwrap();
    let device = h.store.device(reg.voip()).await.unwrap();
    assert_eq!(
        device.map(|d| d.registered_at),
        Some(cutoff + secs(1)),
        "whichever ran first, the newer registration survives"
    );
}

async fn recording_an_outcome_keeps_it_and_pins_the_environment_when_given(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();

    h.store
        .record_outcome(
            reg.voip(),
            "delivered",
            Some(ApnsEnvironment::Sandbox),
            t0() + secs(5),
        )
        .await
        .unwrap();
    let device = h.store.device(reg.voip()).await.unwrap().unwrap();
    assert_eq!(device.last_outcome.as_deref(), Some("delivered"));
    assert_eq!(device.last_outcome_at, Some(t0() + secs(5)));
    assert_eq!(device.environment, Some(ApnsEnvironment::Sandbox));

    h.store
        .record_outcome(reg.voip(), "TooManyRequests", None, t0() + secs(9))
        .await
        .unwrap();
    let device = h.store.device(reg.voip()).await.unwrap().unwrap();
    assert_eq!(device.last_outcome.as_deref(), Some("TooManyRequests"));
    assert_eq!(device.last_outcome_at, Some(t0() + secs(9)));
    assert_eq!(
        device.environment,
        Some(ApnsEnvironment::Sandbox),
        "no environment given: the pinned one stays"
    );
    assert_eq!(
        device.registered_at,
        t0(),
        "an outcome is not a registration"
    );
    let alert = h.store.device(&reg.alert_token).await.unwrap().unwrap();
    assert_eq!(alert.last_outcome, None, "only that token's row changes");
}

async fn recording_an_outcome_for_an_unknown_token_creates_nothing(h: Harness) {
    let ghost = token();
    h.store
        .record_outcome(&ghost, "delivered", Some(ApnsEnvironment::Production), t0())
        .await
        .unwrap();
    assert_eq!(h.store.device(&ghost).await.unwrap(), None);
}

async fn an_event_is_new_exactly_once_across_replicas(h: Harness) {
    let other = h.replica().await;
    let key = format!("telephony_calls:{}", Uuid::new_v4());
    assert!(h.store.record_key(&key, t0()).await.unwrap());
    assert!(!other.record_key(&key, t0() + secs(1)).await.unwrap());
    assert!(!h.store.record_key(&key, t0() + secs(2)).await.unwrap());

    // Racing replicas: exactly one wins.
    let raced = format!("messages:{}", Uuid::new_v4());
    let (a, b) = tokio::join!(
        h.store.record_key(&raced, t0()),
        other.record_key(&raced, t0())
    );
    assert!(
        a.unwrap() ^ b.unwrap(),
        "exactly one replica sees the event first"
    );
}

/// The claim's tokens, sorted.
fn tokens_of(claim: &Claim) -> Vec<DeviceToken> {
    let (Claim::Devices(devices) | Claim::Duplicate(devices)) = claim;
    let mut tokens: Vec<DeviceToken> = devices.iter().map(|device| device.token.clone()).collect();
    tokens.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    tokens
}

/// Both tokens of `registration`, sorted: a claim answers with all of a person's
/// devices (the domain picks which an event goes to).
fn both_tokens(registration: &Registration) -> Vec<DeviceToken> {
    let mut tokens = vec![
        registration.voip().clone(),
        registration.alert_token.clone(),
    ];
    tokens.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    tokens
}

async fn a_claim_returns_the_devices_and_records_the_event_once_across_replicas(h: Harness) {
    let other = h.replica().await;
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();
    let key = format!("ring:{}:call-1", ada.uuid());

    let first = h.store.claim_new_job(Some(&key), t0(), &ada).await.unwrap();
    assert!(matches!(first, Claim::Devices(_)), "{first:?}");
    assert_eq!(tokens_of(&first), both_tokens(&reg));
    let Claim::Devices(devices) = &first else {
        unreachable!()
    };
    assert!(devices.iter().all(|device| device.person == ada));
    let mut channels: Vec<Channel> = devices.iter().map(|device| device.channel).collect();
    channels.sort_by_key(|channel| channel.as_str());
    assert_eq!(channels, [Channel::Alert, Channel::Voip]);
    assert!(devices.iter().all(|device| device.registered_at == t0()));

    let again = other
        .claim_new_job(Some(&key), t0() + secs(1), &ada)
        .await
        .unwrap();
    assert!(matches!(again, Claim::Duplicate(_)), "{again:?}");
    assert_eq!(tokens_of(&again), both_tokens(&reg));

    // No key: nothing to de-duplicate, the devices every time.
    for _ in 0..2 {
        let unkeyed = h.store.claim_new_job(None, t0(), &ada).await.unwrap();
        assert!(matches!(unkeyed, Claim::Devices(_)), "{unkeyed:?}");
        assert_eq!(tokens_of(&unkeyed), both_tokens(&reg));
    }

    // Racing replicas: exactly one claims the event.
    let raced = format!("message:{}:msg-1", ada.uuid());
    let (a, b) = tokio::join!(
        h.store.claim_new_job(Some(&raced), t0(), &ada),
        other.claim_new_job(Some(&raced), t0(), &ada)
    );
    let fresh = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|claim| matches!(claim, Claim::Devices(_)))
        .count();
    assert_eq!(fresh, 1, "exactly one replica claims the event");
}

/// Many webhooks at once (on Postgres they share batched statements): every claim gets
/// its own person's devices, and of the four claims of each event exactly one is fresh,
/// whether the repeats landed in the same batch or in another replica's.
async fn hundreds_of_concurrent_claims_each_get_their_own_devices_and_each_event_is_claimed_once(
    h: Harness,
) {
    let other = h.replica().await;
    let people: Vec<(PersonId, Registration)> = (0..30)
        .map(|_| {
            let ada = person();
            let reg = registration(&ada);
            (ada, reg)
        })
        .collect();
    for (_, reg) in &people {
        h.store.register(reg, t0()).await.unwrap();
    }
    let nobody = person();
    let stores = [h.store.clone(), other];
    let mut claims = tokio::task::JoinSet::new();
    for round in 0..4 {
        for (index, (ada, _)) in people.iter().enumerate() {
            let store = stores[(round + index) % 2].clone();
            let (ada, nobody) = (ada.clone(), nobody.clone());
            claims.spawn(async move {
                let key = format!("ring:{}:call-1", ada.uuid());
                let claim = store.claim_new_job(Some(&key), t0(), &ada).await.unwrap();
                // A person without devices, in the same batches: nothing, every time.
                let none = store
                    .claim_new_job(
                        Some(&format!("ring:{}:{index}", nobody.uuid())),
                        t0(),
                        &nobody,
                    )
                    .await
                    .unwrap();
                assert_eq!(none, Claim::Devices(Vec::new()));
                (index, claim)
            });
        }
    }
    let mut fresh = vec![0; people.len()];
    while let Some(joined) = claims.join_next().await {
        let (index, claim) = joined.unwrap();
        assert_eq!(tokens_of(&claim), both_tokens(&people[index].1));
        if matches!(claim, Claim::Devices(_)) {
            fresh[index] += 1;
        }
    }
    assert_eq!(
        fresh,
        vec![1; people.len()],
        "each event claimed exactly once"
    );
    assert!(
        h.store
            .record_key(&format!("ring:{}:0", nobody.uuid()), t0())
            .await
            .unwrap(),
        "no key recorded for the person without devices"
    );
}

/// Many pushes finishing at once (on Postgres their outcomes share batched statements):
/// each token keeps its own outcome and only a given environment is pinned.
async fn over_a_hundred_concurrent_outcomes_are_each_recorded_on_their_own_token(h: Harness) {
    let regs: Vec<Registration> = (0..60).map(|_| registration(&person())).collect();
    for reg in &regs {
        h.store.register(reg, t0()).await.unwrap();
    }
    let mut outcomes = tokio::task::JoinSet::new();
    for (index, reg) in regs.iter().enumerate() {
        for (token, outcome) in [
            (reg.voip().clone(), format!("voip-{index}")),
            (reg.alert_token.clone(), format!("alert-{index}")),
        ] {
            let store = h.store.clone();
            let pin = (index % 2 == 0).then_some(ApnsEnvironment::Sandbox);
            let at = t0() + secs(i64::try_from(index).unwrap());
            outcomes.spawn(async move {
                store
                    .record_outcome(&token, &outcome, pin, at)
                    .await
                    .unwrap();
            });
        }
    }
    outcomes.spawn({
        let store = h.store.clone();
        async move {
            store
                .record_outcome(&token(), "delivered", None, t0())
                .await
                .unwrap();
        }
    });
    while let Some(joined) = outcomes.join_next().await {
        joined.unwrap();
    }
    for (index, reg) in regs.iter().enumerate() {
        let at = t0() + secs(i64::try_from(index).unwrap());
        let pin = (index % 2 == 0).then_some(ApnsEnvironment::Sandbox);
        for (token, outcome) in [
            (reg.voip(), format!("voip-{index}")),
            (&reg.alert_token, format!("alert-{index}")),
        ] {
            let device = h.store.device(token).await.unwrap().unwrap();
            assert_eq!(device.last_outcome.as_deref(), Some(outcome.as_str()));
            assert_eq!(device.last_outcome_at, Some(at));
            assert_eq!(device.environment, pin);
        }
    }
}

async fn a_claim_for_a_person_without_devices_records_nothing(h: Harness) {
    let nobody = person();
    let ada = person();
    h.store.register(&registration(&ada), t0()).await.unwrap();
    let key = format!("ring:{}:call-1", nobody.uuid());

    for _ in 0..2 {
        let claim = h
            .store
            .claim_new_job(Some(&key), t0(), &nobody)
            .await
            .unwrap();
        assert_eq!(claim, Claim::Devices(Vec::new()));
    }
    assert!(
        h.store.record_key(&key, t0()).await.unwrap(),
        "the key was not recorded"
    );
    assert_eq!(
        h.store
            .prune_seen_events(t0() + secs(1), 1_000)
            .await
            .unwrap(),
        1
    );
}

async fn claims_and_marks_share_one_record_of_seen_events(h: Harness) {
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();
    let marked = format!("ring:{}:call-1", ada.uuid());
    let claimed = format!("ring:{}:call-2", ada.uuid());

    assert!(h.store.record_key(&marked, t0()).await.unwrap());
    let claim = h
        .store
        .claim_new_job(Some(&marked), t0(), &ada)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Duplicate(_)), "{claim:?}");

    let claim = h
        .store
        .claim_new_job(Some(&claimed), t0() + secs(10), &ada)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Devices(_)), "{claim:?}");
    assert!(!h.store.record_key(&claimed, t0()).await.unwrap());

    // The claim stored its time: pruning before it keeps it, after it forgets it.
    assert_eq!(
        h.store
            .prune_seen_events(t0() + secs(1), 1_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.store
            .prune_seen_events(t0() + secs(11), 1_000)
            .await
            .unwrap(),
        1
    );
    let claim = h
        .store
        .claim_new_job(Some(&claimed), t0() + secs(20), &ada)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Devices(_)), "{claim:?}");
}

async fn pruning_forgets_only_events_seen_before_the_cutoff(h: Harness) {
    let old = "callMemberships:old";
    let recent = "callMemberships:recent";
    assert!(h.store.record_key(old, t0() - secs(7200)).await.unwrap());
    assert!(h.store.record_key(recent, t0()).await.unwrap());

    assert_eq!(
        h.store
            .prune_seen_events(t0() - secs(3600), 1_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.store
            .prune_seen_events(t0() - secs(3600), 1_000)
            .await
            .unwrap(),
        0
    );
    assert!(
        h.store.record_key(old, t0()).await.unwrap(),
        "pruned: new again"
    );
    assert!(
        !h.store.record_key(recent, t0()).await.unwrap(),
        "kept: still seen"
    );
    assert_eq!(
        h.store
            .prune_seen_events(t0() + secs(1), 1_000)
            .await
            .unwrap(),
        2
    );
}

async fn sql_injection_strings_are_stored_and_returned_verbatim(h: Harness) {
    let nasty = [
        "'; DROP TABLE devices; --",
        "\"); DELETE FROM seen_events; --",
        "Robert'); DROP TABLE seen_events;--",
        "' OR '1'='1",
        "\\'; SELECT pg_sleep(10); --",
        "ünïcödé ☎ \u{0}-less but with\nnewlines\tand tabs",
    ];
    let ada = person();
    let reg = registration(&ada);
    h.store.register(&reg, t0()).await.unwrap();
    for (i, text) in nasty.iter().enumerate() {
        // Postgres text cannot hold NUL; the domain never produces one in these fields.
        let text = text.replace('\u{0}', "");
        assert!(h.store.record_key(&text, t0()).await.unwrap(), "{text:?}");
        assert!(!h.store.record_key(&text, t0()).await.unwrap(), "{text:?}");
        h.store
            .record_outcome(reg.voip(), &text, None, t0() + secs(i as i64))
            .await
            .unwrap();
        let device = h.store.device(reg.voip()).await.unwrap().unwrap();
        assert_eq!(device.last_outcome.as_deref(), Some(text.as_str()));
    }
    assert_eq!(
        h.store.all_devices_of(&ada).await.unwrap().len(),
        2,
        "tables intact"
    );
    assert_eq!(
        h.store
            .prune_seen_events(t0() + secs(1), 1_000)
            .await
            .unwrap(),
        nasty.len() as u64
    );
}

async fn registrations_sharing_tokens_in_opposite_order_do_not_deadlock(h: Harness) {
    let (a, b) = (token(), token());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = h.store.clone();
            let mut reg = registration(&person());
            // Half register (a, b), half (b, a): the same two rows locked in both orders.
            (reg.voip_token, reg.alert_token) = if i % 2 == 0 {
                (Some(a.clone()), b.clone())
            } else {
                (Some(b.clone()), a.clone())
            };
            tokio::spawn(async move { store.register(&reg, t0() + secs(i)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.unwrap().unwrap();
    }
    let first = h.store.device(&a).await.unwrap().unwrap();
    let second = h.store.device(&b).await.unwrap().unwrap();
    assert_eq!(
        first.person, second.person,
        "the pair was written atomically"
    );
    assert_ne!(first.channel, second.channel);
}

async fn ping_answers_while_the_database_is_up(h: Harness) {
    h.store.ping().await.unwrap();
    let (in_use, idle) = h.store.pool_state();
    assert_eq!(in_use, 0);
    assert!(idle >= 1);
}

async fn migrations_apply_revert_and_apply_again(h: Harness) {
    let ada = person();
    h.store.register(&registration(&ada), t0()).await.unwrap();

    let reverted = h.store.revert_all_migrations().await.unwrap();
    assert_eq!(reverted.len(), 5, "every migration reverted: {reverted:?}");
    assert!(
        h.store.devices_of(&ada, Channel::Voip).await.is_err(),
        "the tables are really gone"
    );
    assert!(h.store.record_key("k", t0()).await.is_err());

    let applied = h.store.run_migrations().await.unwrap();
    assert_eq!(
        applied.len(),
        5,
        "every migration applied again: {applied:?}"
    );
    assert!(
        h.store.run_migrations().await.unwrap().is_empty(),
        "nothing pending"
    );
    assert!(h.store.all_devices_of(&ada).await.unwrap().is_empty());
    h.store.register(&registration(&ada), t0()).await.unwrap();
    assert!(h.store.record_key("k", t0()).await.unwrap());
}

async fn a_store_without_migrations_reports_missing_tables_as_unknown_until_migrated(h: Harness) {
    h.store.revert_all_migrations().await.unwrap();
    let mut config = test_config(h.db.url());
    config.run_migrations = false;
    let store = DieselRegistrationStore::connect(&config).await.unwrap();
    store.ping().await.unwrap();
    assert!(matches!(
        store.devices_of(&person(), Channel::Voip).await,
        Err(StoreError::Unknown(_))
    ));
    assert_eq!(store.run_migrations().await.unwrap().len(), 5);
    assert!(
        store
            .devices_of(&person(), Channel::Voip)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Asserts that `result` is `Unavailable` and came within `limit` of `started`.
fn assert_unavailable_within<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    started: Instant,
    limit: Duration,
) {
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
    assert!(took < limit, "took {took:?}, more than {limit:?}");
}

/// Waits, up to `limit`, for `ping` to succeed again.
async fn wait_until_available(store: &DieselRegistrationStore, limit: Duration) {
    let last_error = std::sync::Mutex::new(None);
    let explain = || format!("the last error: {:?}", last_error.lock().unwrap());
    eventually_explained(
        limit,
        "the store recovering",
        explain,
        async || match store.ping().await {
            Ok(()) => true,
            Err(error) => {
                *last_error.lock().unwrap() = Some(error);
                false
            }
        },
    )
    .await;
}

mod postgres_only {
    use super::*;

    /// Postgres refuses a NUL byte in text. A claim carrying one fails on its own; the
    /// claims that came in the same batch get their devices.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_the_database_refuses_does_not_fail_the_claims_batched_with_it() {
        let h = Harness::new(Backend::Postgres).await;
        let ada = person();
        let reg = registration(&ada);
        h.store.register(&reg, t0()).await.unwrap();
        let mut claims = tokio::task::JoinSet::new();
        for n in 0..40 {
            let (store, ada) = (h.store.clone(), ada.clone());
            claims.spawn(async move {
                let key = if n % 10 == 3 {
                    format!("message:{}:bad\u{0}{n}", ada.uuid())
                } else {
                    format!("message:{}:good-{n}", ada.uuid())
                };
                (
                    key.contains('\0'),
                    store.claim_new_job(Some(&key), t0(), &ada).await,
                )
            });
        }
        let (mut good, mut bad) = (0, 0);
        while let Some(joined) = claims.join_next().await {
            match joined.unwrap() {
                (false, claim) => {
                    let claim = claim.unwrap();
                    assert!(matches!(claim, Claim::Devices(_)), "{claim:?}");
                    assert_eq!(tokens_of(&claim), both_tokens(&reg));
                    good += 1;
                }
                (true, claim) => {
                    assert!(matches!(claim, Err(StoreError::Unknown(_))), "{claim:?}");
                    bad += 1;
                }
            }
        }
        assert_eq!((good, bad), (36, 4));
    }

    /// Postgres refuses a NUL byte in text. An outcome carrying one fails on its own;
    /// the outcomes recorded in the same batch are kept on their tokens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_the_database_refuses_does_not_fail_the_outcomes_batched_with_it() {
        let h = Harness::new(Backend::Postgres).await;
        let regs: Vec<Registration> = (0..20).map(|_| registration(&person())).collect();
        for reg in &regs {
            h.store.register(reg, t0()).await.unwrap();
        }
        let mut outcomes = tokio::task::JoinSet::new();
        for (index, reg) in regs.iter().enumerate() {
            let (store, token) = (h.store.clone(), reg.voip().clone());
            let outcome = if index % 5 == 2 {
                format!("bad\u{0}{index}")
            } else {
                format!("good-{index}")
            };
            outcomes.spawn(async move {
                let recorded = store.record_outcome(&token, &outcome, None, t0()).await;
                (index, outcome.contains('\0'), recorded)
            });
        }
        let (mut good, mut bad) = (0, 0);
        while let Some(joined) = outcomes.join_next().await {
            let (index, refused, recorded) = joined.unwrap();
            let device = h.store.device(regs[index].voip()).await.unwrap().unwrap();
            if refused {
                assert!(
                    matches!(recorded, Err(StoreError::Unknown(_))),
                    "{recorded:?}"
                );
                assert_eq!(device.last_outcome, None);
                bad += 1;
            } else {
                recorded.unwrap();
                assert_eq!(device.last_outcome, Some(format!("good-{index}")));
                good += 1;
            }
        }
        assert_eq!((good, bad), (16, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_outage_gives_unavailable_quickly_and_the_store_recovers_by_itself() {
        let h = Harness::new(Backend::Postgres).await;
        let ada = person();
        let reg = registration(&ada);
        h.store.register(&reg, t0()).await.unwrap();

        h.postgres().take_offline();
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        assert_unavailable_within(
            h.store.devices_of(&ada, Channel::Voip).await,
            started,
            limit,
        );
        let started = Instant::now();
        assert_unavailable_within(
            h.store.register(&registration(&ada), t0()).await,
            started,
            limit,
        );
        let started = Instant::now();
        assert_unavailable_within(h.store.ping().await, started, limit);

        h.postgres().bring_online();
        wait_until_available(&h.store, Duration::from_secs(15)).await;
        let devices = h.store.devices_of(&ada, Channel::Voip).await.unwrap();
        assert_eq!(devices.len(), 1, "the acknowledged registration survived");
        assert_eq!(&devices[0].token, reg.voip());
    }

    /// The server itself dies (immediate stop, as in a crash) and comes back on the
    /// same port: a cluster of this test's own, since the shared one must not be stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_postgres_gives_unavailable_and_restarting_it_brings_the_store_back() {
        let cluster = TestCluster::start();
        let store = DieselRegistrationStore::connect(&test_config(cluster.admin_url()))
            .await
            .unwrap();
        let ada = person();
        let reg = registration(&ada);
        store.register(&reg, t0()).await.unwrap();

        cluster.kill();
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        assert_unavailable_within(store.devices_of(&ada, Channel::Voip).await, started, limit);
        let started = Instant::now();
        assert_unavailable_within(
            store.register(&registration(&ada), t0()).await,
            started,
            limit,
        );

        cluster.restart();
        wait_until_available(&store, Duration::from_secs(15)).await;
        let devices = store.devices_of(&ada, Channel::Voip).await.unwrap();
        assert_eq!(
            devices.len(),
            1,
            "the acknowledged registration survived the crash"
        );
        assert_eq!(&devices[0].token, reg.voip());
        store.register(&registration(&ada), t0()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_the_server_closed_are_replaced_without_an_error() {
        let h = Harness::new(Backend::Postgres).await;
        h.store.ping().await.unwrap();
        h.postgres().terminate_connections();
        // The dead connection fails its statement, is dropped, and the operation is
        // tried once more on a new one: no error reaches the caller.
        h.store.ping().await.unwrap();
        assert!(
            h.store
                .devices_of(&person(), Channel::Voip)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_pool_answers_unavailable_instead_of_hanging() {
        let db = TestDatabase::postgres();
        let mut config = test_config(db.url().to_owned());
        config.pool_size = Some(1);
        config.statement_timeout = Duration::from_secs(30);
        let store = DieselRegistrationStore::connect(&config).await.unwrap();
        // Hold the only connection: lock the table from another session so a write blocks,
        // until the test has seen the pool exhausted (or has failed: the sender is gone).
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking({
            let url = db.url().to_owned();
            move || {
                use diesel::{Connection as _, RunQueryDsl as _};
                let mut conn = diesel::PgConnection::establish(&url).unwrap();
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    diesel::sql_query("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
                        .execute(conn)?;
                    let _ = released.recv();
                    Ok(())
                })
                .unwrap();
            }
        });
        // Wait until the lock is held, then fill the pool with a blocked write.
        let admin = db.admin_url().to_owned();
        let name = db.name().to_owned();
        wait_for_lock(&admin, &name).await;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.register(&registration(&person()), t0()).await })
        };
        // The writer holds the only connection while it waits on the lock.
        eventually(
            Duration::from_secs(3),
            "the writer taking the only connection",
            async || store.pool_state().0 > 0,
        )
        .await;
        let started = Instant::now();
        assert_unavailable_within(store.ping().await, started, Duration::from_secs(3));
        release.send(()).unwrap();
        blocker.await.unwrap();
        writer.await.unwrap().unwrap();
        store.ping().await.unwrap();
    }

    async fn wait_for_lock(admin_url: &str, database: &str) {
        use diesel::{Connection as _, QueryableByName, RunQueryDsl as _};
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = format!(
            "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE d.datname = '{database}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        );
        let mut conn = diesel::PgConnection::establish(admin_url).unwrap();
        eventually(Duration::from_secs(5), "the table lock taken", async || {
            let count: Vec<Count> = diesel::sql_query(&sql).load(&mut conn).unwrap();
            count.first().is_some_and(|c| c.n > 0)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_on_an_empty_database_all_migrate_it_once() {
        let db = TestDatabase::postgres();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let config = test_config(db.url().to_owned());
                tokio::spawn(async move { DieselRegistrationStore::connect(&config).await })
            })
            .collect();
        let mut stores = Vec::new();
        for start in futures::future::join_all(starts).await {
            stores.push(start.unwrap().expect("every replica starts"));
        }
        let ada = person();
        stores[0].register(&registration(&ada), t0()).await.unwrap();
        assert_eq!(stores[3].all_devices_of(&ada).await.unwrap().len(), 2);
        assert!(stores[1].run_migrations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn start_up_against_a_closed_port_fails_fast_with_the_real_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let error = DieselRegistrationStore::connect(&test_config(format!(
            "postgres://postgres:s3cret@127.0.0.1:{port}/push"
        )))
        .await
        .err()
        .expect("connecting to a closed port fails");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            error,
            StoreSetupError::Connect {
                backend: "postgres",
                ..
            }
        ));
        let message = format!("{error}");
        assert!(
            message.contains("refused"),
            "the real cause is shown: {message}"
        );
        assert!(!message.contains("s3cret"), "never the password: {message}");
    }

    #[tokio::test]
    async fn start_up_against_a_missing_database_names_the_problem() {
        let db = TestDatabase::postgres();
        let missing = webex_push_test_support::with_database(db.url(), "no_such_database_here");
        let error = DieselRegistrationStore::connect(&test_config(missing))
            .await
            .err()
            .expect("connecting to a missing database fails");
        let message = format!("{error}");
        assert!(message.contains("does not exist"), "{message}");
    }
}

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_locked_by_another_process_gives_unavailable_then_recovers() {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;

        let h = Harness::new(Backend::Sqlite).await;
        let Db::Sqlite(file) = &h.db else {
            unreachable!()
        };
        let mut other =
            diesel::SqliteConnection::establish(&file.path().to_string_lossy()).unwrap();
        other.batch_execute("BEGIN EXCLUSIVE").unwrap();

        let started = Instant::now();
        assert_unavailable_within(
            h.store.register(&registration(&person()), t0()).await,
            started,
            Duration::from_secs(5),
        );
        other.batch_execute("COMMIT").unwrap();
        let ada = person();
        h.store.register(&registration(&ada), t0()).await.unwrap();
        assert_eq!(h.store.all_devices_of(&ada).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_file_runs_in_wal_mode() {
        let h = Harness::new(Backend::Sqlite).await;
        h.store
            .register(&registration(&person()), t0())
            .await
            .unwrap();
        let Db::Sqlite(file) = &h.db else {
            unreachable!()
        };
        let wal = format!("{}-wal", file.path().display());
        assert!(
            std::path::Path::new(&wal).exists(),
            "{wal} exists in WAL mode"
        );
        // It holds every device token: its owner's only, and so are SQLite's side files.
        use std::os::unix::fs::PermissionsExt as _;
        for path in [file.path().display().to_string(), wal] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{path} is {mode:o}");
        }
        assert_eq!(h.store.backend_name(), "sqlite");
    }

    #[tokio::test]
    async fn start_up_with_an_unusable_file_fails_with_the_real_error() {
        let error = DieselRegistrationStore::connect(&test_config(
            "sqlite:///nonexistent-directory/webex-push.db".into(),
        ))
        .await
        .err()
        .expect("a file in a missing directory cannot be created");
        assert!(matches!(error, StoreSetupError::CreateSqlite { .. }));
        let message = error.to_string();
        assert!(
            message.contains("/nonexistent-directory/webex-push.db"),
            "{message}"
        );
        assert!(message.contains("No such file or directory"), "{message}");

        let error = DieselRegistrationStore::connect(&test_config("mysql://db/push".into()))
            .await
            .err()
            .expect("unknown schemes are refused");
        assert!(matches!(error, StoreSetupError::Url(_)));
    }
}

/// The VoIP token of an iOS registration (every one these tests make has one).
trait Voip {
    fn voip(&self) -> &DeviceToken;
}

impl Voip for Registration {
    fn voip(&self) -> &DeviceToken {
        self.voip_token
            .as_ref()
            .expect("an iOS registration has a VoIP token")
    }
}
