//! Wall-clock times derived from tokio's clock, so that tests on paused time see health
//! timestamps move exactly as far as they advanced time, and the JSON stays deterministic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Maps tokio instants to wall-clock times: one wall reading is taken at creation and every
/// later time is that reading plus the tokio time elapsed since.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base: Instant,
    base_wall: SystemTime,
}

impl WallClock {
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock whose "now" is `wall` at creation (tests use a fixed date).
    pub fn starting_at(wall: SystemTime) -> Self {
        Self {
            base: Instant::now(),
            base_wall: wall,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    pub fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.base) {
            Some(d) => self.base_wall + d,
            None => self.base_wall - self.base.duration_since(at),
        }
    }

    pub fn wall_now(&self) -> SystemTime {
        self.wall(self.now())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Formats a time the way Go's `time.Time` marshals to JSON (RFC 3339 with up to nine
/// fractional digits, trailing zeros dropped), in UTC. `None` is Go's zero time, which upstream
/// reports as `lastUpdated` before the first sync.
pub fn rfc3339_nano(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds since the epoch as a float, for timestamp gauges.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_like_go_rfc3339_nano() {
        assert_eq!(rfc3339_nano(None), "0001-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nano(Some(t)), "2023-11-14T22:13:20.12Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nano(Some(leap)), "2000-02-29T00:00:00Z");
    }
}
