//! Reconnect backoff: capped exponential with jitter, sans-IO (the caller sleeps).
//!
//! Delay `n` is drawn from `[d/2, d]` where `d = min(cap, base * 2^n)`, so a thousand boxes
//! that lost the broker together do not all come back in the same second.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    /// A backoff starting at `base`, never over `cap`; `seed` varies the jitter per box.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The delay before the next attempt; each call doubles the ceiling up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: deterministic for a seed, good enough for jitter.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(if span == 0 { 0 } else { r % (span + 1) })
    }

    /// A connection succeeded: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        let mut b = Backoff::new(base, cap, 42);
        for n in 0..20u32 {
            let ceiling = (base * 2u32.pow(n.min(20))).min(cap);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {n}: {d:?} vs {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn two_boxes_with_different_seeds_do_not_retry_in_lockstep() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 2);
        let same = (0..10).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 3, "{same} identical delays out of 10");
    }
}
