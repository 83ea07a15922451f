//! The command lines of `payment` and `psp-sim`. What they share with every
//! participant binary (logging, signals, exit codes, secrets kept out of
//! messages) is the SDK's `skald_participant::service`.
//!
//! The binaries' `main`s only call [`payment::main`] and [`psp_sim::main`],
//! so tests can run the same programs.

pub mod payment;
pub mod psp_sim;

/// A share between 0 and 1, for `--*-rate` flags.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1 (like 0.05)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_shares() {
        assert_eq!(rate("0.25"), Ok(0.25));
        assert_eq!(rate("1"), Ok(1.0));
        assert!(rate("1.5").is_err());
        assert!(rate("-0.1").is_err());
        assert!(rate("NaN").is_err());
    }
}
