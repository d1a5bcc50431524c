//! Go-style durations (`metav1.Duration`): "30s", "1m0s", "1h2m3.5s", "250ms".
//! Upstream writes them with Go's `Duration.String()`, so we format the same way to keep
//! `--write-config-to` output identical and round-trippable.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration spelled the way Go spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?} (expected e.g. \"30s\", \"1m0s\", \"2h45m\")")]
    Syntax(String),
    #[error("invalid duration {0:?} (must not be negative)")]
    Negative(String),
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || DurationError::Syntax(input.to_string());
        let mut s = input;
        if let Some(rest) = s.strip_prefix('-') {
            // Go accepts negative durations; every kube-proxy field rejects them, so we do it here.
            if rest.trim_start_matches(['0', '.']).is_empty() && !rest.is_empty() {
                return Ok(GoDuration::ZERO);
            }
            return Err(DurationError::Negative(input.to_string()));
        }
        s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(GoDuration::ZERO);
        }
        if s.is_empty() {
            return Err(syntax());
        }
        let mut total: u128 = 0;
        while !s.is_empty() {
            let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (int_part, rest) = s.split_at(int_len);
            let (frac_part, rest) = match rest.strip_prefix('.') {
                Some(r) => {
                    let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                    r.split_at(n)
                }
                None => ("", rest),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(syntax());
            }
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let (unit, rest) = rest.split_at(unit_len);
            let scale = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(syntax)?.1;
            let whole: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| syntax())?
            };
            let mut nanos = whole.checked_mul(scale).ok_or_else(syntax)?;
            // Fractions beyond nanosecond precision are truncated, like Go does.
            let mut place = scale;
            for digit in frac_part.bytes() {
                place /= 10;
                nanos += u128::from(digit - b'0') * place;
            }
            total = total.checked_add(nanos).ok_or_else(syntax)?;
            s = rest;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| syntax())?;
        Ok(GoDuration(Duration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }
}

/// `whole.frac` with trailing zeros of the fraction dropped.
fn decimal(whole: u128, frac: u128, frac_digits: usize) -> String {
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0frac_digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.as_nanos();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000 {
            return write!(f, "{n}ns");
        }
        if n < 1_000_000 {
            return write!(f, "{}\u{b5}s", decimal(n / 1_000, n % 1_000, 3));
        }
        if n < 1_000_000_000 {
            return write!(f, "{}ms", decimal(n / 1_000_000, n % 1_000_000, 6));
        }
        let secs = n / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let s = decimal(s, n % 1_000_000_000, 9);
        match (h, m) {
            (0, 0) => write!(f, "{s}s"),
            (0, m) => write!(f, "{m}m{s}s"),
            (h, m) => write!(f, "{h}h{m}m{s}s"),
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings_round_trip() {
        for s in [
            "0s", "1s", "30s", "1m0s", "15m0s", "1h0m0s", "24h0m0s", "250ms", "1.5s", "1m30.25s",
            "1µs", "7ns",
        ] {
            let d: GoDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn shorthand_input_is_accepted() {
        let parse = |s: &str| s.parse::<GoDuration>().unwrap().0;
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("2h45m"), Duration::from_secs(9900));
        assert_eq!(parse("300s"), Duration::from_secs(300));
        assert_eq!(parse(".5s"), Duration::from_millis(500));
        assert_eq!(parse("1us"), Duration::from_micros(1));
    }

    #[test]
    fn malformed_or_negative_input_is_rejected() {
        for s in ["", "5", "abc", "5x", "s", "1.s.", "-5s"] {
            assert!(s.parse::<GoDuration>().is_err(), "{s}");
        }
    }
}
