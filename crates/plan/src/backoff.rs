//! Retry delays: the one function every role uses to decide when a failed
//! step runs again.

use crate::{BackoffStrategy, RetryPolicy};

/// Delay in milliseconds before retry number `retry` (1 = the first retry,
/// i.e. the second attempt). `unit` is a uniform sample in [0, 1) used only
/// when the policy has jitter; with jitter the delay lies in [d/2, d].
pub fn retry_delay_ms(policy: &RetryPolicy, retry: u32, unit: f64) -> u64 {
    let retry = retry.max(1);
    let base = policy.backoff_ms;
    let raw = match policy.strategy {
        BackoffStrategy::Exponential => {
            // 2^(n-1) overflows past 63 retries; saturate instead of wrapping.
            let factor = 1u64.checked_shl(retry - 1).unwrap_or(u64::MAX);
            base.saturating_mul(factor)
        }
        BackoffStrategy::Linear => base.saturating_mul(u64::from(retry)),
        BackoffStrategy::Fixed => base,
    };
    let capped = policy.max_backoff_ms.map_or(raw, |cap| raw.min(cap));
    if policy.jitter {
        let half = capped / 2;
        let spread = (capped - half) as f64 * unit.clamp(0.0, 1.0);
        half + spread.round() as u64
    } else {
        capped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: BackoffStrategy, base: u64, cap: Option<u64>, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_retries: 10,
            backoff_ms: base,
            strategy,
            max_backoff_ms: cap,
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_from_the_base() {
        let p = policy(BackoffStrategy::Exponential, 100, None, false);
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay_ms(&p, n, 0.0)).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600]);
    }

    #[test]
    fn linear_grows_by_the_base() {
        let p = policy(BackoffStrategy::Linear, 1000, None, false);
        let delays: Vec<u64> = (1..=3).map(|n| retry_delay_ms(&p, n, 0.0)).collect();
        assert_eq!(delays, vec![1000, 2000, 3000]);
    }

    #[test]
    fn fixed_stays_at_the_base() {
        let p = policy(BackoffStrategy::Fixed, 250, None, false);
        assert!((1..=6).all(|n| retry_delay_ms(&p, n, 0.0) == 250));
    }

    #[test]
    fn cap_bounds_every_delay() {
        let p = policy(BackoffStrategy::Exponential, 100, Some(500), false);
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay_ms(&p, n, 0.0)).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn huge_retry_numbers_saturate_instead_of_overflowing() {
        let p = policy(BackoffStrategy::Exponential, u64::MAX / 2, None, false);
        assert_eq!(retry_delay_ms(&p, 200, 0.0), u64::MAX);
        let capped = policy(BackoffStrategy::Exponential, 1000, Some(60_000), false);
        assert_eq!(retry_delay_ms(&capped, 100, 0.0), 60_000);
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let p = policy(BackoffStrategy::Exponential, 1000, None, true);
        assert_eq!(retry_delay_ms(&p, 2, 0.0), 1000);
        assert_eq!(retry_delay_ms(&p, 2, 0.999_999_9), 2000);
        assert_eq!(retry_delay_ms(&p, 2, 0.5), 1500);
        for _ in 0..1000 {
            let d = retry_delay_ms(&p, 3, fastrand::f64());
            assert!((2000..=4000).contains(&d), "{d} outside [2000, 4000]");
        }
    }

    #[test]
    fn retry_zero_is_treated_as_the_first_retry() {
        let p = policy(BackoffStrategy::Exponential, 100, None, false);
        assert_eq!(retry_delay_ms(&p, 0, 0.0), 100);
    }
}
