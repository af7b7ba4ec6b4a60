//! Currencies and money amounts.
//!
//! A money amount is a `Decimal` whose scale is exactly the currency's minor unit, so it prints
//! as the invoice shows it (`"0.40"`, JPY `"3"`). Amounts get that scale only through
//! [`Currency::round`] and [`Currency::from_minor`]; splitting and summing happen in whole minor
//! units (`i128`), where nothing can round.

use rust_decimal::Decimal;

use super::{Exact, RatingError};

string_enum! {
    /// An ISO 4217 currency a plan can bill in.
    #[allow(clippy::upper_case_acronyms)] // ISO codes are written in capitals everywhere else.
    pub enum Currency ("currency") {
        AUD = "AUD", BHD = "BHD", BRL = "BRL", CAD = "CAD", CHF = "CHF", CNY = "CNY",
        DKK = "DKK", EUR = "EUR", GBP = "GBP", HKD = "HKD", INR = "INR", JPY = "JPY",
        KRW = "KRW", KWD = "KWD", MXN = "MXN", NOK = "NOK", NZD = "NZD", PLN = "PLN",
        SEK = "SEK", SGD = "SGD", USD = "USD", ZAR = "ZAR",
    }
}

impl Currency {
    /// Decimal places of the minor unit (ISO 4217 exponent): USD 2, JPY 0, KWD 3.
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::JPY | Currency::KRW => 0,
            Currency::BHD | Currency::KWD => 3,
            _ => 2,
        }
    }

    /// Rounds an exact amount half away from zero to the minor unit.
    pub fn round(self, amount: Exact) -> Result<Decimal, RatingError> {
        self.from_minor(amount.to_units(self.minor_units())?)
    }

    /// An amount given in minor units (cents), with exactly the minor digits.
    pub fn from_minor(self, minor: i128) -> Result<Decimal, RatingError> {
        Decimal::try_from_i128_with_scale(minor, self.minor_units())
            .map_err(|_| RatingError::Overflow)
    }

    /// The amount in minor units; an amount with digits below the minor unit is refused, not
    /// rounded, since it means a caller skipped [`Currency::round`].
    pub fn to_minor(self, amount: Decimal) -> Result<i128, RatingError> {
        let exact = Exact::from(amount);
        let minor = exact.to_units(self.minor_units())?;
        if Exact::new(minor, self.minor_units()) != exact {
            return Err(RatingError::NotRounded {
                amount,
                currency: self,
            });
        }
        Ok(minor)
    }

    /// The amount as an invoice string with exactly the minor digits (`3` → `"3.00"`).
    pub fn format(self, amount: Decimal) -> Result<String, RatingError> {
        Ok(self.from_minor(self.to_minor(amount)?)?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        for (code, minor) in [("USD", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)] {
            assert_eq!(code.parse::<Currency>().unwrap().minor_units(), minor);
        }
        assert_eq!(Currency::ALL.len(), 22);
        assert!("usd".parse::<Currency>().is_err());
    }

    #[test]
    fn rounds_once_half_away_from_zero_to_the_minor_unit() {
        let round = |currency: Currency, text: &str| {
            currency.round(text.parse().unwrap()).unwrap().to_string()
        };
        assert_eq!(round(Currency::USD, "0.125"), "0.13");
        assert_eq!(round(Currency::USD, "-0.125"), "-0.13");
        assert_eq!(round(Currency::USD, "18.33337"), "18.33");
        assert_eq!(round(Currency::USD, "0.4"), "0.40");
        assert_eq!(round(Currency::USD, "-0.001"), "0.00");
        assert_eq!(round(Currency::JPY, "2.5"), "3");
        assert_eq!(round(Currency::KWD, "1.0005"), "1.001");
    }

    #[test]
    fn minor_units_round_trip_and_unrounded_amounts_are_refused() {
        assert_eq!(Currency::USD.to_minor(dec("18.73")), Ok(1873));
        assert_eq!(Currency::USD.to_minor(dec("3")), Ok(300));
        assert_eq!(Currency::JPY.to_minor(dec("-7")), Ok(-7));
        assert_eq!(Currency::USD.from_minor(1873).unwrap().to_string(), "18.73");
        assert_eq!(
            Currency::USD.to_minor(dec("0.125")),
            Err(RatingError::NotRounded {
                amount: dec("0.125"),
                currency: Currency::USD
            })
        );
        assert!(Currency::JPY.to_minor(dec("0.5")).is_err());
    }

    #[test]
    fn formats_with_exactly_the_minor_digits() {
        assert_eq!(Currency::USD.format(dec("0.4")).unwrap(), "0.40");
        assert_eq!(Currency::USD.format(dec("3")).unwrap(), "3.00");
        assert_eq!(Currency::JPY.format(dec("3.000")).unwrap(), "3");
        assert_eq!(Currency::KWD.format(dec("0")).unwrap(), "0.000");
    }
}
