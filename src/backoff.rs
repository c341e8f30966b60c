//! Retry delays: exponential backoff with full jitter, capped
//! (`random(0, min(max, base * 2^attempt))`). A leaf shared by the binlog
//! reader's reconnects, the delivery engine's retries and `pikachu dlq
//! replay`.

use std::time::Duration;

/// Delay before retry number `attempt` (0 = first retry).
pub(crate) fn full_jitter(base: Duration, max: Duration, attempt: u32, rand01: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let cap = exp.min(max);
    cap.mul_f64(rand01.clamp(0.0, 1.0))
}

/// A random number in [0, 1).
pub(crate) fn rand01() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(full_jitter(b, m, 0, 1.0), Duration::from_secs(1));
        assert_eq!(full_jitter(b, m, 3, 1.0), Duration::from_secs(8));
        assert_eq!(full_jitter(b, m, 10, 1.0), m);
        assert_eq!(full_jitter(b, m, 40, 1.0), m);
        assert_eq!(full_jitter(b, m, 3, 0.5), Duration::from_secs(4));
        assert_eq!(full_jitter(b, m, 3, 0.0), Duration::ZERO);
    }
}
