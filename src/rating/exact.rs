//! [`Exact`]: the decimal type every product and sum of the engine is computed in.
//!
//! Why not `Decimal`: its 96-bit mantissa makes `*` and `+` round silently once a result needs
//! more than 28 digits (10^11 GB-s with 13 decimals × a 10-decimal price needs 30). An `Exact` holds
//! an `i128` mantissa (38 digits) and any scale, and every operation is checked: a result that
//! does not fit is an error, never a rounded number.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RatingError;

/// An exact decimal `mantissa × 10^-scale`, kept normalized (no trailing fractional zeros) so
/// equal values compare and hash equal and mantissas stay as small as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exact {
    mantissa: i128,
    scale: u32,
}

/// A string that is not a plain decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDecimal(&'static str);

impl Exact {
    /// Zero.
    pub const ZERO: Exact = Exact {
        mantissa: 0,
        scale: 0,
    };

    /// The value `mantissa × 10^-scale`.
    pub fn new(mut mantissa: i128, mut scale: u32) -> Self {
        if mantissa == 0 {
            return Self::ZERO;
        }
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Self { mantissa, scale }
    }

    /// Whether the value is zero.
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// Whether the value is below zero.
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The number of decimal places (of the normalized value).
    pub fn scale(self) -> u32 {
        self.scale
    }

    /// `self + other`, or `Overflow`.
    pub fn try_add(self, other: Self) -> Result<Self, RatingError> {
        let (a, b, scale) = align(self, other)?;
        Ok(Self::new(
            a.checked_add(b).ok_or(RatingError::Overflow)?,
            scale,
        ))
    }

    /// `self - other`, or `Overflow`.
    pub fn try_sub(self, other: Self) -> Result<Self, RatingError> {
        let (a, b, scale) = align(self, other)?;
        Ok(Self::new(
            a.checked_sub(b).ok_or(RatingError::Overflow)?,
            scale,
        ))
    }

    /// `self × other`, or `Overflow`.
    pub fn try_mul(self, other: Self) -> Result<Self, RatingError> {
        let mantissa = self.mantissa.checked_mul(other.mantissa);
        Ok(Self::new(
            mantissa.ok_or(RatingError::Overflow)?,
            self.scale + other.scale,
        ))
    }

    /// How many whole `divisor`s it takes to cover `self`: `ceil(self / divisor)`, for a
    /// non-negative `self` and a positive `divisor` (package pricing).
    pub(super) fn div_ceil(self, divisor: Self) -> Result<Self, RatingError> {
        debug_assert!(!self.is_negative() && divisor.mantissa > 0);
        let (a, b, _) = align(self, divisor)?;
        let packages = a.unsigned_abs().div_ceil(b.unsigned_abs());
        Ok(Self::new(
            i128::try_from(packages).map_err(|_| RatingError::Overflow)?,
            0,
        ))
    }

    /// Rounds half away from zero to `dp` decimal places and returns the result as a whole
    /// number of `10^-dp` units (e.g. cents for `dp = 2`).
    pub fn to_units(self, dp: u32) -> Result<i128, RatingError> {
        if self.scale <= dp {
            return scale_up(self.mantissa, dp - self.scale);
        }
        // |mantissa| < 2·10^38, so past 10^38 the value is under half a unit: it rounds to zero.
        let Some(divisor) = 10i128.checked_pow(self.scale - dp) else {
            return Ok(0);
        };
        let (units, rest) = (self.mantissa / divisor, self.mantissa % divisor);
        let away = rest.unsigned_abs() * 2 >= divisor.unsigned_abs();
        Ok(if away {
            units + self.mantissa.signum()
        } else {
            units
        })
    }

    /// The same value as a `Decimal`, or `Overflow` if it needs more than 28 decimals or a
    /// mantissa wider than 96 bits.
    pub fn to_decimal(self) -> Result<Decimal, RatingError> {
        Decimal::try_from_i128_with_scale(self.mantissa, self.scale)
            .map_err(|_| RatingError::Overflow)
    }
}

/// Brings two values to their common (larger) scale so their mantissas can be added or compared.
fn align(a: Exact, b: Exact) -> Result<(i128, i128, u32), RatingError> {
    let scale = a.scale.max(b.scale);
    Ok((
        scale_up(a.mantissa, scale - a.scale)?,
        scale_up(b.mantissa, scale - b.scale)?,
        scale,
    ))
}

fn scale_up(mantissa: i128, digits: u32) -> Result<i128, RatingError> {
    if mantissa == 0 || digits == 0 {
        return Ok(mantissa);
    }
    10i128
        .checked_pow(digits)
        .and_then(|factor| mantissa.checked_mul(factor))
        .ok_or(RatingError::Overflow)
}

impl From<Decimal> for Exact {
    fn from(value: Decimal) -> Self {
        Self::new(value.mantissa(), value.scale())
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        match align(*self, *other) {
            Ok((a, b, _)) => a.cmp(&b),
            // Only the operand with the smaller scale is scaled up; if that overflowed, its
            // magnitude exceeds the other's, so its sign alone decides.
            Err(_) if self.scale < other.scale => self.mantissa.cmp(&0),
            Err(_) => 0.cmp(&other.mantissa),
        }
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.is_negative() { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl FromStr for Exact {
    type Err = InvalidDecimal;

    /// Accepts only `-?digits(.digits)?`: no exponent, `+`, `_` or spaces, which
    /// `Decimal::from_str` would let through.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SYNTAX: InvalidDecimal = InvalidDecimal("not a decimal number");
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, "0"));
        let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !is_digits(int) || !is_digits(frac) {
            return Err(SYNTAX);
        }
        let mut mantissa: i128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or(InvalidDecimal("too many digits"))?;
        }
        let scale = u32::try_from(frac.len()).map_err(|_| InvalidDecimal("too many digits"))?;
        Ok(Self::new(
            if negative { -mantissa } else { mantissa },
            scale,
        ))
    }
}

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(text: &str) -> Exact {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_normalized() {
        for (text, shown) in [
            ("0", "0"),
            ("-0.000", "0"),
            ("0.0000150000", "0.000015"),
            ("007.50", "7.5"),
            ("-12.345", "-12.345"),
            ("6000000000", "6000000000"),
        ] {
            assert_eq!(exact(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_plain_decimal() {
        for text in [
            "", "-", ".5", "5.", "1e5", "+1", "1_000", " 1", "1.2.3", "0x10", "NaN",
        ] {
            assert_eq!(
                text.parse::<Exact>(),
                Err(InvalidDecimal("not a decimal number")),
                "{text:?}"
            );
        }
        assert_eq!(
            "1".repeat(40).parse::<Exact>(),
            Err(InvalidDecimal("too many digits"))
        );
    }

    #[test]
    fn multiplies_beyond_decimal_precision_exactly() {
        let quantity: Decimal = "100000000000.0000000000001".parse().unwrap();
        let price: Decimal = "0.0000166667".parse().unwrap();
        let product = Exact::from(quantity).try_mul(price.into()).unwrap();
        assert_eq!(product.to_string(), "1666670.00000000000000000166667");
        // The reason this type exists: Decimal rounds the same product without a word.
        assert_ne!((quantity * price).to_string(), product.to_string());
        assert_eq!(product.to_decimal(), Err(RatingError::Overflow));
    }

    #[test]
    fn overflow_is_an_error_not_a_rounded_number() {
        let big = exact(&"9".repeat(30));
        assert_eq!(big.try_mul(big), Err(RatingError::Overflow));
        assert_eq!(
            exact("1").try_add(exact(&format!("0.{}1", "0".repeat(38)))),
            Err(RatingError::Overflow)
        );
    }

    #[test]
    fn rounds_half_away_from_zero() {
        for (text, dp, units) in [
            ("0.125", 2, 13),
            ("-0.125", 2, -13),
            ("0.1249999", 2, 12),
            ("2.5", 0, 3),
            ("-2.5", 0, -3),
            ("3", 2, 300),
            ("0.0049999", 2, 0),
        ] {
            assert_eq!(exact(text).to_units(dp), Ok(units), "{text} to {dp}");
        }
        let tiny = Exact::new(i128::MAX, 60);
        assert_eq!(tiny.to_units(2), Ok(0));
    }

    #[test]
    fn compares_across_scales_even_when_aligning_overflows() {
        assert!(exact("1.5") < exact("1.50001"));
        assert!(exact("-2") < exact("-1.9"));
        let huge = exact(&"9".repeat(37));
        let tiny = Exact::new(1, 30);
        let negative_huge = exact(&format!("-{}", "9".repeat(37)));
        // Both branches of the fallback: the overflowing operand on either side.
        assert_eq!(huge.cmp(&tiny), Ordering::Greater);
        assert_eq!(tiny.cmp(&huge), Ordering::Less);
        assert_eq!(negative_huge.cmp(&tiny), Ordering::Less);
        assert_eq!(tiny.cmp(&negative_huge), Ordering::Greater);
    }

    #[test]
    fn package_count_rounds_up() {
        assert_eq!(exact("10").div_ceil(exact("3")), Ok(exact("4")));
        assert_eq!(exact("9").div_ceil(exact("3")), Ok(exact("3")));
        assert_eq!(exact("0.01").div_ceil(exact("1000")), Ok(exact("1")));
        assert_eq!(exact("0").div_ceil(exact("2.5")), Ok(Exact::ZERO));
    }

    #[test]
    fn serializes_as_a_string() {
        let value = exact("18.33337");
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, "\"18.33337\"");
        assert_eq!(serde_json::from_str::<Exact>(&json).unwrap(), value);
    }
}
