//! Bearer-key authentication and the role rules of SPEC §5.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AppState, error::ApiError};
use crate::keys::{self, KeyCheck};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Finance,
    Ingest,
    Tenant,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "finance" => Some(Role::Finance),
            "ingest" => Some(Role::Ingest),
            "tenant" => Some(Role::Tenant),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Ingest => "ingest",
            Role::Tenant => "tenant",
        }
    }
}

/// Who is calling: the role of the presented key and, for tenant keys, the tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub tenant: Option<String>,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Reading a tenant's data: admin and finance read all; a tenant key reads its own and
    /// gets 404 for any other (their existence is not revealed); other roles get 403.
    pub fn require_tenant_reader(&self, tenant: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Finance => Ok(()),
            Role::Tenant if self.tenant.as_deref() == Some(tenant) => Ok(()),
            Role::Tenant => Err(ApiError::not_found(format!("no tenant {tenant:?}"))),
            Role::Ingest => Err(ApiError::forbidden()),
        }
    }
}

/// SHA-256 of a key: keys are high-entropy random strings, so a plain hash suffices and
/// lookup stays one indexed read.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new random key, shown once to its owner.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("mk_{hex}")
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = req.headers().get(header::AUTHORIZATION).cloned();
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let header = header.ok_or_else(|| {
                ApiError::unauthorized("send an API key as Authorization: Bearer <key>")
            })?;
            let value = header
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
            let key = match value.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
                _ => {
                    return Err(ApiError::unauthorized(
                        "only the Bearer scheme is accepted: Authorization: Bearer <key>",
                    ));
                }
            };
            let hash = hash_key(key);
            if hash == state.admin_key_hash {
                return Ok(Caller {
                    role: Role::Admin,
                    tenant: None,
                });
            }
            let (id, role, tenant, record_use) = match keys::check(&state.pool, &hash).await? {
                KeyCheck::Valid {
                    id,
                    role,
                    tenant,
                    record_use,
                } => (id, role, tenant, record_use),
                KeyCheck::Unknown => return Err(ApiError::unauthorized("unknown API key")),
                KeyCheck::Revoked => {
                    return Err(ApiError::unauthorized("this API key was revoked"));
                }
                KeyCheck::Expired(at) => {
                    return Err(ApiError::unauthorized(format!(
                        "this API key expired at {}",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )));
                }
            };
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("api_keys holds an unknown role {role:?}"))?;
            if record_use {
                // Off the request path: a slow or failed write never delays or fails a request.
                let pool = state.pool.clone();
                tokio::spawn(async move {
                    if let Err(e) = keys::record_use(&pool, id).await {
                        tracing::debug!(error = %e, "could not record an API key's last use");
                    }
                });
            }
            Ok(Caller { role, tenant })
        })
    }
}
