use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::rating::Arch;

/// A tenant code: 1–64 characters of `A-Za-z0-9._-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, String> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "may hold only A-Z, a-z, 0-9, '.', '_' and '-' (found {c:?})"
            ));
        }
        Ok(TenantId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One function invocation, valid by construction (see `ingest::decode`).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub id: String,
    pub tenant: TenantId,
    pub function: String,
    pub timestamp: DateTime<Utc>,
    pub duration_ms: Decimal,
    pub init_duration_ms: Decimal,
    pub memory_mb: u32,
    pub arch: Arch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_spec_alphabet() {
        assert!(TenantId::parse("acme-Corp_1.eu").is_ok());
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        assert!(TenantId::parse("acme corp").is_err());
        assert!(TenantId::parse("acmé").is_err());
        assert!(TenantId::parse("a/b").is_err());
    }
}
