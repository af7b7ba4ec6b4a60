//! Splitting invoice amounts over functions by the largest-remainder method, in minor units, so
//! the parts always add up exactly to the whole.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::{Currency, Exact, RatingError};

/// Splits `amount_minor` in proportion to `weights`, returning the shares in the order of
/// `weights`: each share is the floor of its exact proportion, and the units left over go one
/// each to the largest remainders, ties to the key that sorts first. A negative amount is split
/// as its absolute value, then negated. The weights must be non-negative with a positive sum.
pub fn allocate<K: Ord>(
    amount_minor: i128,
    weights: &[(K, Exact)],
) -> Result<Vec<i128>, RatingError> {
    if weights.iter().any(|(_, w)| w.is_negative()) {
        return Err(RatingError::BadWeights);
    }
    // Whole numbers at a common scale have the same proportions as the decimals.
    let scale = weights.iter().map(|(_, w)| w.scale()).max().unwrap_or(0);
    let units = weights
        .iter()
        .map(|(_, w)| w.to_units(scale).map(i128::unsigned_abs))
        .collect::<Result<Vec<u128>, _>>()?;
    let total = units
        .iter()
        .try_fold(0u128, |sum, &w| sum.checked_add(w))
        .ok_or(RatingError::Overflow)?;
    if total == 0 {
        return Err(RatingError::BadWeights);
    }

    let whole = amount_minor.unsigned_abs();
    let mut shares: Vec<(u128, u128)> = units
        .iter()
        .map(|&w| mul_div_rem(whole, w, total))
        .collect();
    let floored: u128 = shares.iter().map(|(share, _)| share).sum();
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        (shares[b].1.cmp(&shares[a].1)).then_with(|| weights[a].0.cmp(&weights[b].0))
    });
    // Fewer units are left over than there are weights: each floor lost less than one.
    for &i in by_remainder.iter().take((whole - floored) as usize) {
        shares[i].0 += 1;
    }
    shares
        .into_iter()
        .map(|(share, _)| {
            let share = i128::try_from(share).map_err(|_| RatingError::Overflow)?;
            Ok(if amount_minor < 0 { -share } else { share })
        })
        .collect()
}

/// `(a × b / d, a × b % d)` through a 256-bit product, for `b ≤ d` (so the quotient fits):
/// an amount in minor units times a 28-digit quantity overflows `u128`.
fn mul_div_rem(a: u128, b: u128, d: u128) -> (u128, u128) {
    let (high, low) = widening_mul(a, b);
    // Long division one bit at a time; the remainder starts as `high`, which is below `d`.
    let (mut quotient, mut rest) = (0u128, high);
    for bit in (0..128).rev() {
        let carry = rest >> 127 == 1;
        rest = (rest << 1) | ((low >> bit) & 1);
        quotient <<= 1;
        // With a carry the true remainder is 2^128 + rest ≥ d, and the difference fits.
        if carry || rest >= d {
            rest = rest.wrapping_sub(d);
            quotient |= 1;
        }
    }
    (quotient, rest)
}

/// The 256-bit product of two `u128` as `(high, low)` halves.
fn widening_mul(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0, b1, b0) = (a >> 64, a & LOW, b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let middle = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let high = p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
    (high, (p00 & LOW) | (middle << 64))
}

/// One function's share of an invoice; `function` is `None` for an amount no function caused
/// (a minimum charge with no usage to split it by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionAmount {
    /// The function's name, or `None` for the unattributed share.
    pub function: Option<String>,
    /// Its share, with the currency's minor digits.
    pub amount: Decimal,
}

/// The per-function split of an invoice, built line by line in minor units.
#[derive(Debug, Clone)]
pub struct FunctionBreakdown {
    currency: Currency,
    minor: BTreeMap<Option<String>, i128>,
}

impl FunctionBreakdown {
    /// Starts a split that lists every given function, even one whose share stays zero.
    pub fn new(currency: Currency, functions: impl IntoIterator<Item = String>) -> Self {
        Self {
            currency,
            minor: functions.into_iter().map(|f| (Some(f), 0)).collect(),
        }
    }

    /// Splits one line's rounded amount in proportion to each function's weight (its quantity
    /// of the line's meter, or late quantity for an adjustment); an amount whose weights are all
    /// zero goes to the `None` function.
    pub fn add(&mut self, amount: Decimal, weights: &[(String, Exact)]) -> Result<(), RatingError> {
        let amount = self.currency.to_minor(amount)?;
        for (function, _) in weights {
            self.minor.entry(Some(function.clone())).or_insert(0);
        }
        if amount == 0 {
            return Ok(());
        }
        if weights.iter().all(|(_, weight)| weight.is_zero()) {
            return self.credit(None, amount);
        }
        for ((function, _), share) in weights.iter().zip(allocate(amount, weights)?) {
            self.credit(Some(function.clone()), share)?;
        }
        Ok(())
    }

    /// Splits an amount in proportion to what each function has been given so far (how a
    /// minimum line is split, so add it after the usage lines and before any adjustment).
    pub fn add_in_proportion(&mut self, amount: Decimal) -> Result<(), RatingError> {
        let weights: Vec<(String, Exact)> = self
            .minor
            .iter()
            .filter_map(|(function, &minor)| Some((function.clone()?, Exact::new(minor.max(0), 0))))
            .collect();
        self.add(amount, &weights)
    }

    /// The split sorted by function (`None` first); with no function at all, one `None` entry
    /// holding zero, so the split always has a row to sum.
    pub fn finish(self) -> Result<Vec<FunctionAmount>, RatingError> {
        let currency = self.currency;
        if self.minor.is_empty() {
            return Ok(vec![FunctionAmount {
                function: None,
                amount: currency.from_minor(0)?,
            }]);
        }
        self.minor
            .into_iter()
            .map(|(function, minor)| {
                Ok(FunctionAmount {
                    function,
                    amount: currency.from_minor(minor)?,
                })
            })
            .collect()
    }

    fn credit(&mut self, function: Option<String>, minor: i128) -> Result<(), RatingError> {
        let share = self.minor.entry(function).or_insert(0);
        *share = share.checked_add(minor).ok_or(RatingError::Overflow)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, &str)]) -> Vec<(String, Exact)> {
        pairs
            .iter()
            .map(|(key, weight)| (key.to_string(), weight.parse().unwrap()))
            .collect()
    }

    #[test]
    fn leftover_units_go_to_the_largest_remainders() {
        // Exact shares 1.538…, 3.076…, 5.384…: floors 1, 3, 5 and one unit left for the first.
        let split = allocate(10, &weights(&[("a", "1"), ("b", "2"), ("c", "3.5")]));
        assert_eq!(split, Ok(vec![2, 3, 5]));
    }

    #[test]
    fn ties_go_to_the_key_that_sorts_first() {
        assert_eq!(
            allocate(100, &weights(&[("a", "1"), ("b", "1"), ("c", "1")])),
            Ok(vec![34, 33, 33])
        );
        assert_eq!(
            allocate(1, &weights(&[("b", "5"), ("a", "5")])),
            Ok(vec![0, 1])
        );
    }

    #[test]
    fn negative_amounts_split_by_absolute_value_then_negate() {
        let split = allocate(-100, &weights(&[("a", "1"), ("b", "1"), ("c", "1")]));
        assert_eq!(split, Ok(vec![-34, -33, -33]));
    }

    #[test]
    fn weights_need_a_positive_sum_and_no_negatives() {
        assert_eq!(
            allocate(5, &weights(&[("a", "0")])),
            Err(RatingError::BadWeights)
        );
        assert_eq!(allocate::<String>(5, &[]), Err(RatingError::BadWeights));
        assert_eq!(
            allocate(5, &weights(&[("a", "2"), ("b", "-1")])),
            Err(RatingError::BadWeights)
        );
    }

    #[test]
    fn products_wider_than_128_bits_are_exact() {
        let big = "1".to_owned() + &"0".repeat(27);
        let twice = "2".to_owned() + &"0".repeat(27);
        let amount = 10i128.pow(30);
        let split = allocate(
            amount,
            &weights(&[("a", &big), ("b", &twice), ("c", "0.0000000001")]),
        );
        let third = amount / 3;
        assert_eq!(split, Ok(vec![third, 2 * third + 1, 0]));
    }

    #[test]
    fn wide_division_matches_plain_division() {
        for (a, b, d) in [
            (7u128, 3, 4),
            (1 << 100, 12345, 99999),
            (u128::MAX, u128::MAX - 1, u128::MAX),
        ] {
            let (q, r) = mul_div_rem(a, b, d);
            if let Some(product) = a.checked_mul(b) {
                assert_eq!((q, r), (product / d, product % d));
            } else {
                assert_eq!((q, r), (u128::MAX - 1, 0));
            }
        }
        assert_eq!(widening_mul(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
    }

    #[test]
    fn an_amount_no_function_used_is_unattributed() {
        let mut split = FunctionBreakdown::new(Currency::USD, ["f".to_owned()]);
        split
            .add("1.00".parse().unwrap(), &weights(&[("f", "0")]))
            .unwrap();
        split.add_in_proportion("2.00".parse().unwrap()).unwrap();
        let expected = vec![
            FunctionAmount {
                function: None,
                amount: "3.00".parse().unwrap(),
            },
            FunctionAmount {
                function: Some("f".into()),
                amount: "0.00".parse().unwrap(),
            },
        ];
        assert_eq!(split.finish(), Ok(expected));
    }

    #[test]
    fn an_unrounded_amount_is_refused() {
        let mut split = FunctionBreakdown::new(Currency::USD, []);
        let err = split.add("0.125".parse().unwrap(), &weights(&[("f", "1")]));
        assert!(matches!(err, Err(RatingError::NotRounded { .. })));
    }
}
