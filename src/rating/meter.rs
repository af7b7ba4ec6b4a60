//! What is metered: the three meters and the two CPU architectures.

string_enum! {
    /// A usage meter that plans price.
    pub enum Meter ("meter") {
        /// Number of invocations.
        Requests = "requests",
        /// Memory × billed duration, in GB-seconds.
        Compute = "compute",
        /// Billed duration, in seconds.
        Duration = "duration",
    }
}

impl Meter {
    /// The unit a quantity of this meter is counted in, as shown on invoice lines.
    pub fn unit(self) -> &'static str {
        match self {
            Meter::Requests => "requests",
            Meter::Compute => "GB-s",
            Meter::Duration => "s",
        }
    }
}

string_enum! {
    /// The CPU architecture a function ran on.
    pub enum Arch ("arch") {
        /// 64-bit x86.
        X86_64 = "x86_64",
        /// 64-bit ARM (Graviton and the like).
        Arm64 = "arm64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for arch in Arch::ALL {
            assert_eq!(arch.as_str().parse::<Arch>(), Ok(*arch));
            let json = serde_json::to_string(arch).unwrap();
            assert_eq!(json, format!("\"{arch}\""));
            assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), *arch);
        }
        assert_eq!("compute".parse::<Meter>(), Ok(Meter::Compute));
        assert_eq!(Meter::Compute.unit(), "GB-s");
    }

    #[test]
    fn unknown_name_lists_the_expected_ones() {
        let err = "x86".parse::<Arch>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown arch "x86" (expected one of: x86_64, arm64)"#
        );
    }
}
