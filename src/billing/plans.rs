//! Stored plans and the plan each tenant is on.
//!
//! A plan id names a series of versions that never change once stored: storing a plan adds
//! version max + 1, so an invoice that records `(plan id, version)` can always be re-read. A
//! tenant's plan is a list of assignments, each in force from its billing period until the next.

use super::period::{format_period, next_period};
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::metering::TenantId;
use crate::rating::Plan;

/// The id of the plan `migrate` seeds; tenants created on first use get it by default.
pub const DEFAULT_PLAN_ID: &str = "default";

/// The `default` plan: SPEC §3's AWS Lambda-style prices (us-east-1), verbatim. Compiled in,
/// like `config/default.toml`.
pub const DEFAULT_PLAN: &str = include_str!("../../config/default-plan.json");

/// Namespace of the advisory locks that serialize writers of one plan id. The two-key form is
/// used because its key space never overlaps the one-key form other code may lock with.
const PLAN_LOCK_SPACE: i32 = 0x706c_616e; // "plan"

/// A plan id: 1–64 characters of `A-Za-z0-9._-`, the alphabet of tenant ids, since both
/// appear in URLs and CSV cells.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanId(String);

impl PlanId {
    pub fn parse(s: &str) -> Result<PlanId, String> {
        TenantId::parse(s).map(|_| PlanId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One stored version of a plan.
#[derive(Debug, Clone)]
pub struct StoredPlan {
    pub id: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub plan: Plan,
}

/// When one version of a plan was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanVersion {
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

/// A plan as `GET /v1/plans` lists it: its latest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PlanSummary {
    pub id: String,
    pub version: i32,
    pub name: String,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// One entry of a tenant's plan history: `plan_id` is in force from `effective_from` (the first
/// day of a billing period) until the next entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlanAssignment {
    pub effective_from: NaiveDate,
    pub plan_id: String,
}

/// A tenant with the plan in force for a given period (`None` only without any assignment).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantSummary {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub plan_id: Option<String>,
}

/// Why a plan could not be assigned to a tenant.
#[derive(Debug, thiserror::Error)]
pub enum AssignPlanError {
    #[error("no plan {0:?} has been stored")]
    UnknownPlan(String),
    /// An invoice finalized for `finalized` would be priced differently by the assignment.
    #[error("the tenant's invoice for {} is finalized", format_period(*finalized))]
    PeriodFinalized { finalized: NaiveDate },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What an assignment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// Whether the tenant was created by it.
    pub created: bool,
    /// The period the plan is in force from.
    pub effective_from: NaiveDate,
}

/// SQL for the plan in force for a tenant in a period (both SQL expressions): the latest
/// assignment from that period or before; for a period before the first assignment, the first
/// one, so that late usage from before a tenant was created is still priced.
macro_rules! plan_in_force {
    ($tenant:literal, $period:literal) => {
        concat!(
            "coalesce((SELECT plan_id FROM tenant_plans WHERE tenant = ",
            $tenant,
            " AND effective_from <= ",
            $period,
            " ORDER BY effective_from DESC LIMIT 1), (SELECT plan_id FROM tenant_plans",
            " WHERE tenant = ",
            $tenant,
            " ORDER BY effective_from LIMIT 1))"
        )
    };
}

/// Stores `plan` as the next version of `id` and returns that version.
pub async fn store_plan_version(db: &PgPool, id: &str, plan: &Plan) -> anyhow::Result<i32> {
    Ok(store_plan(db, id, plan).await?.version)
}

/// Stores `plan` as the next version of `id` (1 for a new id). Concurrent writers of one id
/// are serialized, so versions have no gap and no duplicate.
#[tracing::instrument(skip_all, fields(plan = id))]
pub async fn store_plan(db: &PgPool, id: &str, plan: &Plan) -> anyhow::Result<StoredPlan> {
    let document = serde_json::to_string(plan).context("serialize the plan")?;
    let mut tx = db.begin().await.context("begin")?;
    lock_plan_id(&mut tx, id).await?;
    let (version, created_at): (i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO plans (id, version, document)
         SELECT $1, coalesce(max(version), 0) + 1, $2::jsonb FROM plans WHERE id = $1
         RETURNING version, created_at",
    )
    .bind(id)
    .bind(&document)
    .fetch_one(&mut *tx)
    .await
    .context("insert the plan version")?;
    tx.commit().await.context("commit")?;
    Ok(StoredPlan {
        id: id.to_owned(),
        version,
        created_at,
        plan: plan.clone(),
    })
}

/// Stores SPEC §3's plan as `default` version 1, unless a plan with that id was stored before
/// (then the operator's plan stands). Safe when several processes migrate at once.
pub async fn seed_default_plan(db: &PgPool) -> anyhow::Result<()> {
    let plan = Plan::from_json(DEFAULT_PLAN).context("the built-in default plan is invalid")?;
    let document = serde_json::to_string(&plan).context("serialize the default plan")?;
    let mut tx = db.begin().await.context("begin")?;
    lock_plan_id(&mut tx, DEFAULT_PLAN_ID).await?;
    sqlx::query(
        "INSERT INTO plans (id, version, document)
         SELECT $1, 1, $2::jsonb WHERE NOT EXISTS (SELECT 1 FROM plans WHERE id = $1)",
    )
    .bind(DEFAULT_PLAN_ID)
    .bind(&document)
    .execute(&mut *tx)
    .await
    .context("insert the default plan")?;
    tx.commit().await.context("commit")?;
    Ok(())
}

async fn lock_plan_id(conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(PLAN_LOCK_SPACE)
        .bind(id)
        .execute(conn)
        .await
        .context("lock the plan id")?;
    Ok(())
}

/// Version `version` of plan `id` (the latest for `None`) and the plan it holds.
pub async fn load_plan(
    db: impl PgExecutor<'_>,
    id: &str,
    version: Option<i32>,
) -> anyhow::Result<Option<(i32, Plan)>> {
    Ok(find_plan(db, id, version)
        .await?
        .map(|stored| (stored.version, stored.plan)))
}

/// Version `version` of plan `id` (the latest for `None`) with when it was stored.
pub async fn find_plan(
    db: impl PgExecutor<'_>,
    id: &str,
    version: Option<i32>,
) -> anyhow::Result<Option<StoredPlan>> {
    let row: Option<(i32, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT version, created_at, document::text FROM plans
         WHERE id = $1 AND ($2::int4 IS NULL OR version = $2)
         ORDER BY version DESC LIMIT 1",
    )
    .bind(id)
    .bind(version)
    .fetch_optional(db)
    .await
    .context("read a plan")?;
    row.map(|(version, created_at, document)| {
        let plan = Plan::from_json(&document)
            .with_context(|| format!("stored plan {id:?} version {version} is not a valid plan"))?;
        Ok(StoredPlan {
            id: id.to_owned(),
            version,
            created_at,
            plan,
        })
    })
    .transpose()
}

/// Every version of plan `id`, oldest first; empty for an unknown id.
pub async fn plan_versions(db: impl PgExecutor<'_>, id: &str) -> anyhow::Result<Vec<PlanVersion>> {
    let rows: Vec<(i32, DateTime<Utc>)> =
        sqlx::query_as("SELECT version, created_at FROM plans WHERE id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(db)
            .await
            .context("list plan versions")?;
    Ok(rows
        .into_iter()
        .map(|(version, created_at)| PlanVersion {
            version,
            created_at,
        })
        .collect())
}

/// Plans by id (byte order), each as its latest version: `limit` of them from `offset`.
pub async fn list_plans(
    db: impl PgExecutor<'_>,
    limit: i64,
    offset: i64,
) -> anyhow::Result<Vec<PlanSummary>> {
    sqlx::query_as(
        "SELECT DISTINCT ON (id) id, version, document->>'name' AS name,
                document->>'currency' AS currency, created_at
         FROM plans ORDER BY id, version DESC LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
    .context("list plans")
}

/// The id of the plan in force for `tenant` in `period`: the assignment with the latest
/// `effective_from <= period`, or for a period before the first assignment the first one (a
/// tenant's first plan extends backwards). `None` only when the tenant has no assignment.
pub async fn plan_id_for_period(
    db: impl PgExecutor<'_>,
    tenant: &str,
    period: NaiveDate,
) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar(concat!("SELECT ", plan_in_force!("$1", "$2")))
        .bind(tenant)
        .bind(period)
        .fetch_one(db)
        .await
        .context("find the plan in force")
}

/// A tenant's plan assignments, oldest first.
pub async fn plan_history(
    db: impl PgExecutor<'_>,
    tenant: &str,
) -> anyhow::Result<Vec<PlanAssignment>> {
    sqlx::query_as(
        "SELECT effective_from, plan_id FROM tenant_plans WHERE tenant = $1
         ORDER BY effective_from",
    )
    .bind(tenant)
    .fetch_all(db)
    .await
    .context("read the tenant's plan history")
}

/// A tenant with the plan in force for `period`; `None` for an unknown tenant.
pub async fn find_tenant(
    db: impl PgExecutor<'_>,
    tenant: &str,
    period: NaiveDate,
) -> anyhow::Result<Option<TenantSummary>> {
    sqlx::query_as(concat!(
        "SELECT id, created_at, ",
        plan_in_force!("t.id", "$2"),
        " AS plan_id FROM tenants t WHERE id = $1"
    ))
    .bind(tenant)
    .bind(period)
    .fetch_optional(db)
    .await
    .context("read a tenant")
}

/// Tenants by id (byte order) with the plan in force for `period`: `limit` of them from
/// `offset`.
pub async fn list_tenants(
    db: impl PgExecutor<'_>,
    period: NaiveDate,
    limit: i64,
    offset: i64,
) -> anyhow::Result<Vec<TenantSummary>> {
    sqlx::query_as(concat!(
        "SELECT id, created_at, ",
        plan_in_force!("t.id", "$1"),
        " AS plan_id FROM tenants t ORDER BY id LIMIT $2 OFFSET $3"
    ))
    .bind(period)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
    .context("list tenants")
}

/// Puts `tenant` on plan `plan_id` from `effective_from`, creating the tenant (with only this
/// assignment) if it does not exist. Without `effective_from`, a new tenant's plan is in force
/// from `current` (the current period) and an existing tenant's from the period after it. An
/// earlier assignment for the same period is replaced.
///
/// An assignment that would change the plan of a finalized period is refused: one for a period
/// at or before a finalized one, or one that becomes (or replaces) the tenant's first
/// assignment while any invoice exists, since the first assignment also prices the periods
/// before it.
#[tracing::instrument(skip_all, fields(tenant = tenant, plan = plan_id))]
pub async fn assign_plan(
    db: &PgPool,
    tenant: &str,
    plan_id: &str,
    effective_from: Option<NaiveDate>,
    current: NaiveDate,
) -> Result<Assigned, AssignPlanError> {
    let mut tx = db.begin().await.context("begin")?;
    let created = sqlx::query("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .context("create the tenant")?
        .rows_affected()
        == 1;
    // Finalizing the tenant takes the same lock (and an invoice insert's foreign key a
    // conflicting one), so a finalization either commits before the check below or waits.
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .context("lock the tenant")?;
    let plan_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM plans WHERE id = $1)")
        .bind(plan_id)
        .fetch_one(&mut *tx)
        .await
        .context("look the plan up")?;
    if !plan_exists {
        return Err(AssignPlanError::UnknownPlan(plan_id.to_owned()));
    }
    let effective_from = match effective_from {
        Some(period) => period,
        None if created => current,
        None => next_period(current),
    };
    let finalized: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT min(period) FROM invoices WHERE tenant = $1
           AND (period >= $2 OR NOT EXISTS (
                SELECT 1 FROM tenant_plans WHERE tenant = $1 AND effective_from < $2))",
    )
    .bind(tenant)
    .bind(effective_from)
    .fetch_one(&mut *tx)
    .await
    .context("look for finalized periods")?;
    if let Some(finalized) = finalized {
        return Err(AssignPlanError::PeriodFinalized { finalized });
    }
    sqlx::query(
        "INSERT INTO tenant_plans (tenant, effective_from, plan_id) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, effective_from)
         DO UPDATE SET plan_id = EXCLUDED.plan_id, created_at = now()",
    )
    .bind(tenant)
    .bind(effective_from)
    .bind(plan_id)
    .execute(&mut *tx)
    .await
    .context("assign the plan")?;
    tx.commit().await.context("commit")?;
    Ok(Assigned {
        created,
        effective_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_valid() {
        let plan = Plan::from_json(DEFAULT_PLAN).unwrap();
        assert_eq!(plan.name(), "Lambda-style, us-east-1");
        assert_eq!(plan.charges().len(), 3);
    }

    #[test]
    fn plan_ids_use_the_tenant_alphabet() {
        assert!(PlanId::parse("lambda-v2.eu_1").is_ok());
        assert!(PlanId::parse("").is_err());
        assert!(PlanId::parse(&"p".repeat(65)).is_err());
        assert!(PlanId::parse("a b").is_err());
    }
}
