use rust_decimal::Decimal;
use serde::Deserialize;

/// The platform-wide metering rules (config section `metering`, SPEC §2).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MeteringRules {
    pub duration_granularity_ms: u64,
    pub min_duration_ms: u64,
    pub memory_granularity_mb: u32,
    pub min_memory_mb: u32,
    pub max_duration_ms: u64,
    pub max_event_age_days: u32,
}

impl Default for MeteringRules {
    fn default() -> Self {
        MeteringRules {
            duration_granularity_ms: 1,
            min_duration_ms: 0,
            memory_granularity_mb: 1,
            min_memory_mb: 0,
            max_duration_ms: 3_600_000,
            max_event_age_days: 90,
        }
    }
}

impl MeteringRules {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.duration_granularity_ms > 0,
            "metering.duration_granularity_ms must be at least 1"
        );
        anyhow::ensure!(
            self.memory_granularity_mb > 0,
            "metering.memory_granularity_mb must be at least 1"
        );
        anyhow::ensure!(
            self.max_duration_ms <= 365 * 24 * 3_600_000,
            "metering.max_duration_ms must be at most a year"
        );
        anyhow::ensure!(
            self.min_duration_ms <= 365 * 24 * 3_600_000 && self.min_memory_mb <= 1 << 20,
            "metering.min_duration_ms / min_memory_mb are out of range"
        );
        Ok(())
    }

    /// `max(min_duration_ms, ceil((duration + init) / granularity) × granularity)`.
    ///
    /// Works on the exact ceiling of the decimal sum: for an integer granularity g,
    /// ceil(x / g) = ceil(ceil(x) / g), so no decimal division (which could round) is needed.
    /// Inputs are bounded by validation (each ≤ `max_duration_ms`), so the result fits.
    pub fn billed_ms(&self, duration_ms: Decimal, init_duration_ms: Decimal) -> i64 {
        let total = (duration_ms + init_duration_ms).ceil();
        let total = u64::try_from(total).expect("validated durations are non-negative and fit");
        let g = self.duration_granularity_ms;
        let rounded = total.div_ceil(g) * g;
        rounded.max(self.min_duration_ms) as i64
    }

    /// `max(min_memory_mb, ceil(memory_mb / granularity) × granularity)`.
    pub fn billed_mb(&self, memory_mb: u32) -> i64 {
        let g = self.memory_granularity_mb;
        let rounded = memory_mb.div_ceil(g) * g;
        i64::from(rounded.max(self.min_memory_mb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn lambda_style_defaults_bill_to_the_millisecond() {
        let r = MeteringRules::default();
        assert_eq!(r.billed_ms(d("120"), d("0")), 120);
        assert_eq!(r.billed_ms(d("120.0001"), d("0")), 121);
        assert_eq!(r.billed_ms(d("0.2"), d("0.3")), 1);
        assert_eq!(r.billed_ms(d("0"), d("0")), 0);
        assert_eq!(r.billed_mb(1536), 1536);
    }

    #[test]
    fn azure_style_rules_round_up_and_apply_minimums() {
        let r = MeteringRules {
            duration_granularity_ms: 100,
            min_duration_ms: 100,
            memory_granularity_mb: 128,
            min_memory_mb: 128,
            ..MeteringRules::default()
        };
        assert_eq!(r.billed_ms(d("0"), d("0")), 100);
        assert_eq!(r.billed_ms(d("100"), d("0")), 100);
        assert_eq!(r.billed_ms(d("100.5"), d("0")), 200);
        assert_eq!(r.billed_ms(d("150"), d("60")), 300);
        assert_eq!(r.billed_mb(1), 128);
        assert_eq!(r.billed_mb(129), 256);
        assert_eq!(r.billed_mb(256), 256);
    }

    #[test]
    fn a_sliver_above_a_multiple_still_rounds_up() {
        // Decimal division by 3 would round 3.000…01 / 3 down to 1; the ceiling identity does not.
        let r = MeteringRules {
            duration_granularity_ms: 3,
            ..MeteringRules::default()
        };
        assert_eq!(r.billed_ms(d("3.0000000000000000000000001"), d("0")), 6);
        assert_eq!(r.billed_ms(d("3"), d("0")), 3);
    }
}
