//! The two hot queries of the persistence adapter, through the whole adapter (blocking
//! pool, r2d2, Diesel) against Postgres holding 100,000 devices:
//! "devices of a person on a channel" and "register".
//!
//! `cargo bench -p webex-push-adapters --bench persistence`; uses `TEST_DATABASE_URL`
//! (admin URL) or a throwaway cluster, in a fresh database dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use diesel::{Connection as _, RunQueryDsl as _};
use uuid::Uuid;
use webex_push_adapters::persistence::{DatabaseConfig, DieselRegistrationStore};
use webex_push_domain::{
    AppFlavour, Channel, DeviceToken, EmailAddress, PersonId, Registration, RegistrationPort,
};
use webex_push_test_support::TestDatabase;

const DEVICES: u32 = 100_000;
/// Each person has two VoIP and two Alert tokens.
const PEOPLE: u32 = DEVICES / 4;
const SEQUENTIAL: usize = 5_000;
const CONCURRENT_TASKS: usize = 16;
const CONCURRENT_OPS: usize = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = TestDatabase::postgres();
    let store = DieselRegistrationStore::connect(&DatabaseConfig::with_url(db.url())).await?;
    seed(db.url()).context("seeding")?;
    println!(
        "Postgres, {DEVICES} devices of {PEOPLE} people, pool of {} connections",
        webex_push_adapters::persistence::DEFAULT_POSTGRES_POOL_SIZE
    );

    let lookups = sequential(SEQUENTIAL, |i| {
        let store = store.clone();
        async move {
            let person = person(i as u32 * 7919 % PEOPLE);
            let devices = store.devices_of(&person, Channel::Voip).await?;
            anyhow::ensure!(devices.len() == 2, "seeded person has two VoIP devices");
            Ok(())
        }
    })
    .await?;
    report("devices_of (sequential)", &lookups);
    let lookup_store = store.clone();
    let rate = concurrent(move |i| {
        let store = lookup_store.clone();
        async move {
            store
                .devices_of(&person(i as u32 * 104_729 % PEOPLE), Channel::Alert)
                .await?;
            Ok(())
        }
    })
    .await?;
    println!("devices_of ({CONCURRENT_TASKS} concurrent): {rate:.0} queries/s");

    let registered: Arc<Vec<Registration>> =
        Arc::new((0..SEQUENTIAL).map(|_| new_registration()).collect());
    let registers = sequential(SEQUENTIAL, |i| {
        let store = store.clone();
        let registered = Arc::clone(&registered);
        async move {
            store.register(&registered[i], Utc::now()).await?;
            Ok(())
        }
    })
    .await?;
    report("register, new tokens (sequential)", &registers);
    let rate = concurrent(move |i| {
        let store = store.clone();
        let registered = Arc::clone(&registered);
        async move {
            // Half new tokens (the insert path), half tokens registered again (the
            // update path of the upsert).
            let registration = if i % 2 == 0 {
                new_registration()
            } else {
                registered[i % registered.len()].clone()
            };
            store.register(&registration, Utc::now()).await?;
            Ok(())
        }
    })
    .await?;
    println!("register ({CONCURRENT_TASKS} concurrent, half updates): {rate:.0} registrations/s");
    drop(db);
    Ok(())
}

/// 100,000 devices in one statement: seeding through the adapter would take minutes.
fn seed(url: &str) -> anyhow::Result<()> {
    let mut conn = diesel::PgConnection::establish(url)?;
    let started = Instant::now();
    diesel::sql_query(format!(
        "INSERT INTO devices (token, channel, person_uuid, person_id, email, environment, \
                              bundle_id, registered_at, updated_at) \
         SELECT md5(i::text) || md5((-i)::text), \
                CASE WHEN i % 2 = 0 THEN 'voip' ELSE 'alert' END, \
                lpad(to_hex(i / 4), 32, '0')::uuid, \
                lpad(to_hex(i / 4), 32, '0')::uuid::text, \
                'user' || (i / 4) || '@example.com', 'production', NULL, now(), now() \
         FROM generate_series(0, {}) AS i",
        DEVICES - 1
    ))
    .execute(&mut conn)?;
    diesel::sql_query("ANALYZE devices").execute(&mut conn)?;
    println!("seeded {DEVICES} devices in {:?}", started.elapsed());
    Ok(())
}

/// The person the seed gave number `n`.
fn person(n: u32) -> PersonId {
    PersonId::from_uuid(Uuid::from_u128(u128::from(n)))
}

fn random_token() -> anyhow::Result<DeviceToken> {
    Ok(DeviceToken::parse(&format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    ))?)
}

fn new_registration() -> Registration {
    Registration {
        person: PersonId::from_uuid(Uuid::new_v4()),
        email: Some(email()),
        voip_token: Some(random_token().unwrap_or_else(|e| panic!("{e}"))),
        alert_token: random_token().unwrap_or_else(|e| panic!("{e}")),
        environment: None,
        bundle_id: None,
        flavour: AppFlavour::Seed,
    }
}

fn email() -> EmailAddress {
    EmailAddress::parse("bench@example.com").unwrap_or_else(|e| panic!("{e}"))
}

async fn sequential<F, Fut>(count: usize, mut op: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut timings = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        op(i).await?;
        timings.push(started.elapsed());
    }
    Ok(timings)
}

/// Operations per second with `CONCURRENT_TASKS` callers sharing `CONCURRENT_OPS` operations.
async fn concurrent<F, Fut>(op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in (task..CONCURRENT_OPS).step_by(CONCURRENT_TASKS) {
                    op(i).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(CONCURRENT_OPS as f64 / started.elapsed().as_secs_f64())
}

fn report(name: &str, timings: &[Duration]) {
    let mut sorted = timings.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "{name}: n={} mean={:?} p50={:?} p95={:?} p99={:?} max={:?}",
        sorted.len(),
        mean,
        at(0.50),
        at(0.95),
        at(0.99),
        sorted[sorted.len() - 1]
    );
}
