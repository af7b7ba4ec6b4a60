//! API keys issued by the service (finance, ingest, tenant): their lifecycle in one place,
//! shared by the REST API and `meterd keys`. Admin keys come from configuration and are not
//! stored here.
//!
//! A key is never deleted: revoking it stamps `revoked_at`, and authentication reads the row on
//! every request (no cache), so a revocation is refused by every process at once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::auth::{Role, generate_key, hash_key};
use crate::metering::{MeterStore, TenantId};

/// Last use is written at most this often per key: a coarse "is this key still in use?".
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// A request for a key, valid by construction (see [`KeySpec::parse`]).
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub role: Role,
    pub tenant: Option<TenantId>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a key request is refused: a `code` for programs and a message naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KeySpecError {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> KeySpecError {
    KeySpecError {
        code,
        message: message.into(),
    }
}

impl KeySpec {
    /// Checks a key request as it arrives, from the API or the command line.
    pub fn parse(
        role: &str,
        tenant: Option<&str>,
        expires_at: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<KeySpec, KeySpecError> {
        let role = match Role::parse(role) {
            Some(role @ (Role::Finance | Role::Ingest | Role::Tenant)) => role,
            Some(Role::Admin) => {
                return Err(refuse(
                    "invalid_value",
                    "role: admin keys come from configuration (auth.admin_key), not from this endpoint",
                ));
            }
            None => {
                return Err(refuse(
                    "invalid_value",
                    format!("role: must be finance, ingest or tenant (got {role:?})"),
                ));
            }
        };
        let tenant = match (role, tenant) {
            (Role::Tenant, Some(t)) => Some(
                TenantId::parse(t).map_err(|p| refuse("invalid_value", format!("tenant: {p}")))?,
            ),
            (Role::Tenant, None) => {
                return Err(refuse(
                    "missing_field",
                    "tenant: a tenant key must name its tenant",
                ));
            }
            (_, Some(_)) => {
                return Err(refuse(
                    "invalid_value",
                    "tenant: only tenant keys name a tenant",
                ));
            }
            (_, None) => None,
        };
        let expires_at = match expires_at {
            None => None,
            Some(s) => {
                let at = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        refuse(
                            "invalid_value",
                            format!(
                                "expires_at: must be an RFC 3339 time with an offset, e.g. \
                                 2027-01-01T00:00:00Z (got {s:?})"
                            ),
                        )
                    })?
                    .with_timezone(&Utc);
                if at <= now {
                    return Err(refuse(
                        "invalid_value",
                        format!("expires_at: must lie in the future (got {s})"),
                    ));
                }
                Some(at)
            }
        };
        Ok(KeySpec {
            role,
            tenant,
            expires_at,
        })
    }
}

/// A newly issued key: `key` is its secret, shown once; only its hash is stored.
#[derive(Debug, Serialize)]
pub struct IssuedKey {
    pub id: Uuid,
    pub key: String,
    pub role: &'static str,
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Issues a key (creating a named tenant as its first usage would).
pub async fn issue(store: &MeterStore, pool: &PgPool, spec: KeySpec) -> anyhow::Result<IssuedKey> {
    if let Some(tenant) = &spec.tenant {
        store.ensure_tenants(&[tenant.as_str().to_owned()]).await?;
    }
    let id = Uuid::new_v4();
    let key = generate_key();
    let tenant = spec.tenant.as_ref().map(|t| t.as_str().to_owned());
    let (created_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO api_keys (id, key_hash, role, tenant, expires_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(id)
    .bind(hash_key(&key))
    .bind(spec.role.as_str())
    .bind(&tenant)
    .bind(spec.expires_at)
    .fetch_one(pool)
    .await?;
    Ok(IssuedKey {
        id,
        key,
        role: spec.role.as_str(),
        tenant,
        created_at,
        expires_at: spec.expires_at,
    })
}

/// What is known of a key: never the key itself nor its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: Uuid,
    pub role: String,
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was last used, to within [`LAST_USED_RESOLUTION_SECS`]; null if never.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, role, tenant, created_at, expires_at, last_used_at, \
                           revoked_at IS NOT NULL AS revoked, revoked_at";

/// Where a page of the listing starts: after the key created at `created_at` with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl KeyCursor {
    /// The cursor is opaque to clients; it holds the last row's sort key.
    pub fn encode(&self) -> String {
        format!(
            "k{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(s: &str) -> Option<KeyCursor> {
        let (micros, id) = s.strip_prefix('k')?.split_once('_')?;
        Some(KeyCursor {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// Up to `limit` keys in creation order after `after`, and the cursor of the next page (if
/// there may be one). A key created between two pages comes on a later page: never skipped,
/// never repeated.
pub async fn list(
    pool: &PgPool,
    after: Option<KeyCursor>,
    limit: i64,
) -> Result<(Vec<KeyInfo>, Option<KeyCursor>), sqlx::Error> {
    let mut rows: Vec<KeyInfo> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys \
         WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2) \
         ORDER BY created_at, id LIMIT $3"
    )))
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|k| KeyCursor {
            created_at: k.created_at,
            id: k.id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<KeyInfo>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Revokes a key; false if there is no such key. Revoking a revoked key is a no-op that
/// keeps the first revocation time.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// What authentication learns from a presented key's hash.
pub enum KeyCheck {
    Valid {
        id: Uuid,
        role: String,
        tenant: Option<String>,
        /// Whether last use is older than the resolution, so should be written.
        record_use: bool,
    },
    Unknown,
    Revoked,
    Expired(DateTime<Utc>),
}

/// Reads the key's row, every time: a revocation or expiry holds from the next request on.
pub async fn check(pool: &PgPool, hash: &[u8]) -> Result<KeyCheck, sqlx::Error> {
    type Row = (
        Uuid,
        String,
        Option<String>,
        bool,
        Option<DateTime<Utc>>,
        bool,
        bool,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, role, tenant, revoked_at IS NOT NULL, expires_at, \
                expires_at IS NOT NULL AND expires_at <= now(), \
                last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2) \
         FROM api_keys WHERE key_hash = $1",
    )
    .bind(hash)
    .bind(LAST_USED_RESOLUTION_SECS as f64)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => KeyCheck::Unknown,
        Some((_, _, _, true, _, _, _)) => KeyCheck::Revoked,
        Some((_, _, _, _, Some(at), true, _)) => KeyCheck::Expired(at),
        Some((id, role, tenant, _, _, _, record_use)) => KeyCheck::Valid {
            id,
            role,
            tenant,
            record_use,
        },
    })
}

/// Records that a key was used now, unless another request already did within the
/// resolution.
pub async fn record_use(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
    )
    .bind(id)
    .bind(LAST_USED_RESOLUTION_SECS as f64)
    .execute(pool)
    .await?;
    Ok(())
}
