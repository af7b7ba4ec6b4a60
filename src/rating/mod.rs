//! The rate engine: plans, pricing models, money and the per-function split.
//!
//! Everything here is a pure function of its inputs (no database, broker, HTTP or file types), so
//! drafts, finalization and `meterd price` all price usage the same way and it is tested with plain
//! unit and property tests.
//!
//! Arithmetic is exact: quantities and prices are [`rust_decimal::Decimal`] at the edges, but every
//! product and sum is computed in [`Exact`] (an `i128` mantissa with a decimal scale), because
//! `Decimal`'s own `*` and `+` silently round once a result needs more than 28 digits. An amount is
//! rounded once per invoice line; anything that cannot be represented exactly is an
//! [`RatingError::Overflow`], never a rounded number.

/// Defines a fieldless enum whose variants have fixed wire names, with `as_str`, `FromStr`,
/// `Display` and serde all agreeing on those names.
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident ($kind:literal) { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::rating::UnknownName;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| {
                    $crate::rating::UnknownName::new($kind, text, Self::ALL.iter().map(|v| v.as_str()))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod allocate;
mod engine;
mod exact;
mod json;
mod meter;
mod money;
mod offline;
mod plan;
#[cfg(test)]
mod proptests;

pub use allocate::{FunctionAmount, FunctionBreakdown, allocate};
pub use engine::{
    InvoiceLine, LineKind, PricedInvoice, TierLine, UsageRow, UsageTotals, minimum_line, price,
    rate_lines, total,
};
pub use exact::{Exact, InvalidDecimal};
pub use json::FieldError;
pub use meter::{Arch, Meter};
pub use money::Currency;
pub use offline::{PriceError, price_files};
pub use plan::{Allowance, Charge, Plan, Pricing, Tier};

/// Why usage could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    /// A quantity or amount needs more digits than can be computed exactly.
    #[error("a quantity or amount is too large to compute exactly")]
    Overflow,
    /// A usage row holds a negative quantity.
    #[error("usage of function {function:?} has a negative {meter} quantity")]
    NegativeUsage { function: String, meter: Meter },
    /// A money amount has digits below the currency's minor unit.
    #[error("{amount} is not a whole number of {currency} minor units")]
    NotRounded {
        amount: rust_decimal::Decimal,
        currency: Currency,
    },
    /// Allocation weights are negative or all zero, so there is no proportion to split by.
    #[error("allocation weights must be non-negative with a positive sum")]
    BadWeights,
}

/// A name that is not one of a fixed set (meter, arch, currency).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {name:?} (expected one of: {expected})")]
pub struct UnknownName {
    kind: &'static str,
    name: String,
    expected: String,
}

impl UnknownName {
    fn new<'a>(kind: &'static str, name: &str, expected: impl Iterator<Item = &'a str>) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            expected: expected.collect::<Vec<_>>().join(", "),
        }
    }
}
