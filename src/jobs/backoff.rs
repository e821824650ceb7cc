//! Retry delays: exponential backoff with jitter, computed from the
//! attempt that just failed.

use std::time::Duration;

/// The delay before the retry that follows failed attempt `attempt`
/// (1-based): `base * 2^(attempt-1)`, capped at `max`, then scaled by
/// `jitter` (a factor in `[0.75, 1.25]` drawn by the caller) so that jobs
/// failing together do not retry together. The result never exceeds
/// `max * 1.25`.
pub fn delay(attempt: u32, base_secs: f64, max_secs: f64, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(62) as i32;
    let raw = base_secs * 2f64.powi(exponent);
    let capped = raw.min(max_secs).max(0.0);
    let jitter = jitter.clamp(0.75, 1.25);
    Duration::from_secs_f64(capped * jitter)
}

/// A jitter factor in `[0.75, 1.25]`.
pub fn random_jitter() -> f64 {
    0.75 + rand::random::<f64>() * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let secs: Vec<u64> = (1..=10)
            .map(|a| delay(a, 60.0, 3600.0, 1.0).as_secs())
            .collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        assert_eq!(delay(1, 100.0, 1000.0, 0.75).as_secs(), 75);
        assert_eq!(delay(1, 100.0, 1000.0, 1.25).as_secs(), 125);
        assert_eq!(delay(1, 100.0, 1000.0, 9.0).as_secs(), 125);
    }
}
