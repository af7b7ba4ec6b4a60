//! Records a batch of usage events exactly once: one transaction that creates unknown
//! tenants, inserts every event id into the accepted-event ledger, and adds only the events
//! the ledger had not seen to the hourly and monthly buckets.
//!
//! Locks are always taken in the same order (tenants, ledger, hourly, monthly; each sorted by
//! key, byte order = the "C" collation), so competing consumers wait for each other but never
//! deadlock, and a duplicate racing its twin in another transaction waits for that
//! transaction and is then seen as a duplicate.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use anyhow::Context;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

use super::{MeteringRules, UsageEvent};

/// What a batch did: events newly counted and events already counted before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    pub accepted: u64,
    pub duplicates: u64,
}

/// The write side of metering: shared by the AMQP consumer and HTTP ingest.
pub struct MeterStore {
    pool: PgPool,
    rules: MeteringRules,
    default_plan: String,
    /// Tenants known to exist, so most batches skip the tenant upsert. Tenants are never
    /// deleted, so a stale entry cannot be wrong.
    known_tenants: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey<'a> {
    tenant: &'a str,
    start: DateTime<Utc>,
    function: &'a str,
    arch: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
struct BucketSums {
    requests: i64,
    billed_ms: i128,
    mb_ms: i128,
}

impl MeterStore {
    pub fn new(pool: PgPool, rules: MeteringRules, default_plan: String) -> Self {
        MeterStore {
            pool,
            rules,
            default_plan,
            known_tenants: Mutex::new(HashSet::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn rules(&self) -> &MeteringRules {
        &self.rules
    }

    /// Records the events in one transaction; on error nothing is recorded.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn record_events(&self, events: &[UsageEvent]) -> anyhow::Result<RecordOutcome> {
        // The first occurrence of an id in the batch wins; later ones are duplicates.
        let mut seen = HashSet::with_capacity(events.len());
        let mut candidates: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| seen.insert((e.tenant.as_str(), e.id.as_str())))
            .collect();
        candidates.sort_unstable_by(|a, b| {
            (a.tenant.as_str(), a.id.as_str()).cmp(&(b.tenant.as_str(), b.id.as_str()))
        });

        let new_tenants = self.unknown_tenants(&candidates);
        let mut tx = self.pool.begin().await.context("begin")?;
        if !new_tenants.is_empty() {
            create_tenants(&mut tx, &new_tenants, &self.default_plan).await?;
        }
        let fresh = insert_into_ledger(&mut tx, &candidates).await?;
        let hourly = self.aggregate(&fresh);
        upsert_hourly(&mut tx, &hourly).await?;
        upsert_monthly(&mut tx, &roll_up_monthly(&hourly)).await?;
        tx.commit().await.context("commit")?;

        if !new_tenants.is_empty() {
            self.known_tenants
                .lock()
                .expect("tenant cache poisoned")
                .extend(new_tenants);
        }
        let accepted = fresh.len() as u64;
        Ok(RecordOutcome {
            accepted,
            duplicates: events.len() as u64 - accepted,
        })
    }

    /// Creates tenants that do not exist yet, on the default plan (as first usage would).
    pub async fn ensure_tenants(&self, tenants: &[String]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin")?;
        create_tenants(&mut tx, tenants, &self.default_plan).await?;
        tx.commit().await.context("commit")?;
        self.known_tenants
            .lock()
            .expect("tenant cache poisoned")
            .extend(tenants.iter().cloned());
        Ok(())
    }

    fn unknown_tenants(&self, events: &[&UsageEvent]) -> Vec<String> {
        let known = self.known_tenants.lock().expect("tenant cache poisoned");
        let mut unknown: Vec<String> = events
            .iter()
            .map(|e| e.tenant.as_str())
            .filter(|t| !known.contains(*t))
            .map(str::to_owned)
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    fn aggregate<'a>(&self, events: &[&'a UsageEvent]) -> BTreeMap<BucketKey<'a>, BucketSums> {
        let mut buckets: BTreeMap<BucketKey<'a>, BucketSums> = BTreeMap::new();
        for e in events {
            let billed_ms = self.rules.billed_ms(e.duration_ms, e.init_duration_ms);
            let billed_mb = self.rules.billed_mb(e.memory_mb);
            let key = BucketKey {
                tenant: e.tenant.as_str(),
                start: hour_start(e.timestamp),
                function: &e.function,
                arch: e.arch.as_str(),
            };
            let sums = buckets.entry(key).or_default();
            sums.requests += 1;
            sums.billed_ms += i128::from(billed_ms);
            sums.mb_ms += i128::from(billed_ms) * i128::from(billed_mb);
        }
        buckets
    }
}

/// The UTC hour an instant falls in.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .expect("truncating to the hour is always valid")
}

/// The billing period (first day of the UTC month) an instant falls in.
pub fn period_start(t: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("first of a month is valid")
}

async fn create_tenants(
    tx: &mut Transaction<'_, Postgres>,
    tenants: &[String],
    default_plan: &str,
) -> anyhow::Result<()> {
    // A tenant created on first use is on the default plan from the current period; the
    // plan in force for an earlier period is the earliest assignment (see billing).
    sqlx::query(
        "WITH created AS (
             INSERT INTO tenants (id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING id)
         INSERT INTO tenant_plans (tenant, effective_from, plan_id)
         SELECT id, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $2 FROM created",
    )
    .bind(tenants)
    .bind(default_plan)
    .execute(&mut **tx)
    .await
    .context("create tenants on first use")?;
    Ok(())
}

/// Inserts the (sorted) candidates into the ledger and returns those it had not seen.
async fn insert_into_ledger<'a>(
    tx: &mut Transaction<'_, Postgres>,
    candidates: &[&'a UsageEvent],
) -> anyhow::Result<Vec<&'a UsageEvent>> {
    let tenants: Vec<&str> = candidates.iter().map(|e| e.tenant.as_str()).collect();
    let ids: Vec<&str> = candidates.iter().map(|e| e.id.as_str()).collect();
    let mut inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO accepted_events (tenant, event_id)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT DO NOTHING
         RETURNING tenant, event_id",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .context("insert into the accepted-event ledger")?;
    // Both lists are in (tenant, id) byte order: walk them together.
    inserted.sort_unstable();
    let mut fresh = Vec::with_capacity(inserted.len());
    let mut next = inserted.iter().peekable();
    for e in candidates {
        if let Some((t, id)) = next.peek()
            && t == e.tenant.as_str()
            && id == &e.id
        {
            fresh.push(*e);
            next.next();
        }
    }
    anyhow::ensure!(
        fresh.len() == inserted.len(),
        "the ledger returned ids the batch did not hold"
    );
    Ok(fresh)
}

async fn upsert_hourly(
    tx: &mut Transaction<'_, Postgres>,
    buckets: &BTreeMap<BucketKey<'_>, BucketSums>,
) -> anyhow::Result<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let mut columns = BucketColumns::default();
    for (k, sums) in buckets {
        columns.push(k.tenant, k.function, k.arch, sums);
    }
    let hours: Vec<DateTime<Utc>> = buckets.keys().map(|k| k.start).collect();
    sqlx::query(
        "INSERT INTO usage_hourly AS u (tenant, hour, function, arch, requests, billed_ms, mb_ms)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                              $5::int8[], $6::numeric[], $7::numeric[])
         ON CONFLICT (tenant, hour, function, arch) DO UPDATE SET
             requests = u.requests + EXCLUDED.requests,
             billed_ms = u.billed_ms + EXCLUDED.billed_ms,
             mb_ms = u.mb_ms + EXCLUDED.mb_ms",
    )
    .bind(&columns.tenants)
    .bind(&hours)
    .bind(&columns.functions)
    .bind(&columns.archs)
    .bind(&columns.requests)
    .bind(&columns.billed_ms)
    .bind(&columns.mb_ms)
    .execute(&mut **tx)
    .await
    .context("add to hourly buckets")?;
    Ok(())
}

fn roll_up_monthly<'a>(
    hourly: &BTreeMap<BucketKey<'a>, BucketSums>,
) -> BTreeMap<(&'a str, NaiveDate, &'a str, &'static str), BucketSums> {
    let mut monthly = BTreeMap::new();
    for (k, s) in hourly {
        let sums: &mut BucketSums = monthly
            .entry((k.tenant, period_start(k.start), k.function, k.arch))
            .or_default();
        sums.requests += s.requests;
        sums.billed_ms += s.billed_ms;
        sums.mb_ms += s.mb_ms;
    }
    monthly
}

async fn upsert_monthly(
    tx: &mut Transaction<'_, Postgres>,
    buckets: &BTreeMap<(&str, NaiveDate, &str, &'static str), BucketSums>,
) -> anyhow::Result<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let periods: Vec<NaiveDate> = buckets.keys().map(|k| k.1).collect();
    let mut columns = BucketColumns::default();
    for ((tenant, _, function, arch), sums) in buckets {
        columns.push(tenant, function, arch, sums);
    }
    sqlx::query(
        "INSERT INTO usage_monthly AS u (tenant, period, function, arch, requests, billed_ms, mb_ms)
         SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[],
                              $5::int8[], $6::numeric[], $7::numeric[])
         ON CONFLICT (tenant, period, function, arch) DO UPDATE SET
             requests = u.requests + EXCLUDED.requests,
             billed_ms = u.billed_ms + EXCLUDED.billed_ms,
             mb_ms = u.mb_ms + EXCLUDED.mb_ms",
    )
    .bind(&columns.tenants)
    .bind(&periods)
    .bind(&columns.functions)
    .bind(&columns.archs)
    .bind(&columns.requests)
    .bind(&columns.billed_ms)
    .bind(&columns.mb_ms)
    .execute(&mut **tx)
    .await
    .context("add to monthly buckets")?;
    Ok(())
}

/// Bucket rows as the column arrays `unnest` takes.
#[derive(Default)]
struct BucketColumns<'a> {
    tenants: Vec<&'a str>,
    functions: Vec<&'a str>,
    archs: Vec<&'static str>,
    requests: Vec<i64>,
    billed_ms: Vec<Decimal>,
    mb_ms: Vec<Decimal>,
}

impl<'a> BucketColumns<'a> {
    fn push(&mut self, tenant: &'a str, function: &'a str, arch: &'static str, sums: &BucketSums) {
        self.tenants.push(tenant);
        self.functions.push(function);
        self.archs.push(arch);
        self.requests.push(sums.requests);
        // A batch sum is far below Decimal's 96-bit range (≤ 10⁶ events × 4.8·10¹¹).
        self.billed_ms
            .push(Decimal::from_i128_with_scale(sums.billed_ms, 0));
        self.mb_ms
            .push(Decimal::from_i128_with_scale(sums.mb_ms, 0));
    }
}
