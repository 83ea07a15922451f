//! Durations as saga authors write them: `500ms`, `2s`, `5m`, `1h`.
//!
//! Stored and compared as whole milliseconds. Parsing is strict: one unsigned
//! integer followed by one unit, no spaces, no fractions, no sign, so that a
//! typo such as `5 m` or `1.5s` is reported instead of guessed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with millisecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    ms: u64,
}

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{text}` is empty; write a number and a unit, e.g. `500ms`, `2s`, `5m` or `1h`")]
    Empty { text: String },
    #[error("`{text}` has no unit; write e.g. `{text}ms` or `{text}s` (units: ms, s, m, h)")]
    MissingUnit { text: String },
    #[error("`{text}` does not start with a whole number; write e.g. `500ms`, `2s`, `5m` or `1h`")]
    MissingNumber { text: String },
    #[error("`{text}` has an unknown unit `{unit}`; use one of ms, s, m, h")]
    UnknownUnit { text: String, unit: String },
    #[error("`{text}` is too large")]
    Overflow { text: String },
}

impl Duration {
    pub const ZERO: Self = Self { ms: 0 };

    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self { ms }
    }

    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self { ms: secs.saturating_mul(1000) }
    }

    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.ms
    }

    /// Parse `500ms`, `2s`, `5m` or `1h`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let owned = || text.to_owned();
        if text.is_empty() {
            return Err(DurationError::Empty { text: owned() });
        }
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(DurationError::MissingNumber { text: owned() });
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { text: owned() });
        }
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(DurationError::UnknownUnit { text: owned(), unit: unit.to_owned() }),
        };
        let n: u64 = digits.parse().map_err(|_| DurationError::Overflow { text: owned() })?;
        let ms = n.checked_mul(factor).ok_or_else(|| DurationError::Overflow { text: owned() })?;
        Ok(Self { ms })
    }
}

impl std::fmt::Display for Duration {
    /// The largest unit that divides the value exactly, so `parse(display(d)) == d`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.ms;
        if ms != 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms != 0 && ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(Duration::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(Duration::parse("2s"), Ok(Duration::from_millis(2_000)));
        assert_eq!(Duration::parse("5m"), Ok(Duration::from_millis(300_000)));
        assert_eq!(Duration::parse("1h"), Ok(Duration::from_millis(3_600_000)));
        assert_eq!(Duration::parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        assert!(matches!(Duration::parse(""), Err(DurationError::Empty { .. })));
        assert!(matches!(Duration::parse("500"), Err(DurationError::MissingUnit { .. })));
        assert!(matches!(Duration::parse("ms"), Err(DurationError::MissingNumber { .. })));
        assert!(matches!(Duration::parse("-1s"), Err(DurationError::MissingNumber { .. })));
        assert!(matches!(Duration::parse("1.5s"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(Duration::parse("5 m"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(Duration::parse("2d"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(
            Duration::parse("99999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            Duration::parse("18446744073709551615h"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for text in ["250ms", "1500ms", "2s", "90s", "5m", "1h", "0ms"] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(Duration::parse(&d.to_string()), Ok(d), "{text}");
        }
        assert_eq!(Duration::from_millis(120_000).to_string(), "2m");
    }
}
