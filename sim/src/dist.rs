//! The seeded random source and the time distributions a scenario names (ring time, talk
//! time, greeting length, wrap-up). Same seed, same draws: the simulator never reads the
//! system's entropy. Owns no I/O.

use crate::SimError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A small, fast, seeded generator (SplitMix64). Not for secrets.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// A generator derived from this seed for a named stream (so adding draws to one part
    /// of the simulation does not shift another's).
    pub fn derive(seed: u64, stream: u64) -> SimRng {
        let mut r = SimRng(seed ^ stream.wrapping_mul(0xd134_2543_de82_ef95));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A distribution of durations in seconds, as written in a scenario:
/// `{ dist = "fixed", seconds = 3 }`, `{ dist = "uniform", min = 2, max = 8 }`,
/// `{ dist = "exponential", mean = 90 }` or `{ dist = "lognormal", median = 60, sigma = 0.8 }`.
/// Every draw is clamped to `[0, max_seconds]` of the scenario's field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Seconds {
    /// Always the same.
    Fixed {
        /// The duration.
        seconds: f64,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        /// Shortest.
        min: f64,
        /// Longest.
        max: f64,
    },
    /// Exponential with this mean.
    Exponential {
        /// The mean.
        mean: f64,
    },
    /// Log-normal: half the draws under `median`; `sigma` is the spread of the log.
    Lognormal {
        /// The median.
        median: f64,
        /// Standard deviation of ln(seconds).
        sigma: f64,
    },
}

/// Durations longer than this are refused (a day).
const LONGEST: f64 = 86_400.0;

impl Seconds {
    /// A fixed duration.
    pub fn fixed(seconds: f64) -> Seconds {
        Seconds::Fixed { seconds }
    }

    /// Checks the parameters; `key` names the field in errors.
    pub fn validate(&self, key: &str) -> Result<(), SimError> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=LONGEST).contains(&v) {
                Ok(())
            } else {
                Err(SimError::invalid(
                    format!("{key}.{name}"),
                    format!("must be between 0 and {LONGEST} seconds, got {v}"),
                ))
            }
        };
        match *self {
            Seconds::Fixed { seconds } => finite("seconds", seconds),
            Seconds::Uniform { min, max } => {
                finite("min", min)?;
                finite("max", max)?;
                if min > max {
                    return Err(SimError::invalid(
                        format!("{key}.max"),
                        format!("must not be below min ({min}), got {max}"),
                    ));
                }
                Ok(())
            }
            Seconds::Exponential { mean } => finite("mean", mean),
            Seconds::Lognormal { median, sigma } => {
                finite("median", median)?;
                if !(sigma.is_finite() && (0.0..=3.0).contains(&sigma)) {
                    return Err(SimError::invalid(
                        format!("{key}.sigma"),
                        format!("must be between 0 and 3, got {sigma}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// One draw.
    pub fn draw(&self, rng: &mut SimRng) -> Duration {
        let s = match *self {
            Seconds::Fixed { seconds } => seconds,
            Seconds::Uniform { min, max } => rng.range(min, max.max(min)),
            Seconds::Exponential { mean } => -mean * (1.0 - rng.unit()).ln(),
            Seconds::Lognormal { median, sigma } => median * (sigma * rng.normal()).exp(),
        };
        Duration::from_secs_f64(s.clamp(0.0, LONGEST))
    }

    /// The mean of the distribution (for summaries).
    pub fn mean(&self) -> f64 {
        match *self {
            Seconds::Fixed { seconds } => seconds,
            Seconds::Uniform { min, max } => (min + max) / 2.0,
            Seconds::Exponential { mean } => mean,
            Seconds::Lognormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws_and_another_seed_does_not() {
        let d = Seconds::Lognormal {
            median: 30.0,
            sigma: 0.7,
        };
        let draws = |seed| {
            let mut r = SimRng::new(seed);
            (0..50).map(|_| d.draw(&mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn draws_follow_their_distribution() {
        let mut r = SimRng::new(1);
        let n = 20_000;
        let u = Seconds::Uniform { min: 2.0, max: 6.0 };
        let xs: Vec<f64> = (0..n).map(|_| u.draw(&mut r).as_secs_f64()).collect();
        assert!(xs.iter().all(|x| (2.0..6.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.05, "{mean}");
        let e = Seconds::Exponential { mean: 10.0 };
        let mean = (0..n).map(|_| e.draw(&mut r).as_secs_f64()).sum::<f64>() / n as f64;
        assert!((mean - 10.0).abs() < 0.4, "{mean}");
        let l = Seconds::Lognormal {
            median: 20.0,
            sigma: 0.5,
        };
        let mut ys: Vec<f64> = (0..n).map(|_| l.draw(&mut r).as_secs_f64()).collect();
        ys.sort_by(f64::total_cmp);
        assert!((ys[n / 2] - 20.0).abs() < 0.6, "median {}", ys[n / 2]);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let e = Seconds::Uniform { min: 5.0, max: 1.0 }
            .validate("carrier.ring_seconds")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "scenario key carrier.ring_seconds.max: must not be below min (5), got 1"
        );
        let e = Seconds::Exponential { mean: -1.0 }
            .validate("carrier.talk_seconds")
            .unwrap_err();
        assert!(e.to_string().contains("carrier.talk_seconds.mean"), "{e}");
        let e = Seconds::Lognormal {
            median: 1.0,
            sigma: f64::NAN,
        }
        .validate("x")
        .unwrap_err();
        assert!(e.to_string().contains("x.sigma"), "{e}");
    }
}
