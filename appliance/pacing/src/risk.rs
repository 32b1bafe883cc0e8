//! The abandon-risk arithmetic: the probability that an answered call finds no agent.
//!
//! Owns the distribution of `D = free agents − competing human answers` at a horizon: a
//! constant plus independent Bernoulli terms (agents that may free up count +1, in-flight
//! attempts that may answer count −1) and a binomial term for the new attempts. Small
//! problems are computed exactly (Poisson-binomial by dynamic programming); large ones by the
//! refined normal approximation (normal plus a skewness correction, continuity corrected).
//! Pure arithmetic: no state, no time, no I/O.

/// Above this many uncertain terms the refined normal approximation replaces the exact sum.
const EXACT_TERMS_LIMIT: usize = 60;

/// The random part of `D` at one horizon, before the new attempts are added.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shortfall {
    /// Agents free for sure, minus answered calls already waiting for an agent.
    pub(crate) certain: i64,
    /// Probability that each uncertain agent is free by the horizon.
    pub(crate) agent_free: Vec<f64>,
    /// Probability that each in-flight attempt is answered by a person by the horizon.
    pub(crate) answer: Vec<f64>,
}

/// `P(D − Binomial(k, g) ≤ 0)` for several `k`, prepared once per horizon.
#[derive(Debug, Clone)]
pub(crate) enum ShortfallLaw {
    /// The exact distribution of the uncertain part, as a CDF over `offset..`.
    Exact { offset: i64, cdf: Vec<f64> },
    /// Mean, variance and third central moment of the whole of `D` without new attempts.
    Moments { mean: f64, var: f64, m3: f64 },
}

impl Shortfall {
    /// Prepares the law of `D`, exact when small enough.
    pub(crate) fn law(&self) -> ShortfallLaw {
        let agents: Vec<f64> = self
            .agent_free
            .iter()
            .copied()
            .filter(|p| *p > 1e-9)
            .collect();
        let answers: Vec<f64> = self.answer.iter().copied().filter(|p| *p > 1e-9).collect();
        if agents.len() + answers.len() <= EXACT_TERMS_LIMIT {
            let plus = poisson_binomial(&agents);
            let minus = poisson_binomial(&answers);
            // X = certain + plus − minus, support certain − |minus| ..= certain + |plus|.
            let n_minus = minus.len() as i64 - 1;
            let offset = self.certain - n_minus;
            let mut pmf = vec![0.0; plus.len() + minus.len() - 1];
            for (i, a) in plus.iter().enumerate() {
                for (j, b) in minus.iter().enumerate() {
                    // value = certain + i − j  ->  index i − j + n_minus
                    pmf[(i as i64 - j as i64 + n_minus) as usize] += a * b;
                }
            }
            let mut acc = 0.0;
            let cdf = pmf
                .iter()
                .map(|p| {
                    acc += p;
                    acc.min(1.0)
                })
                .collect();
            ShortfallLaw::Exact { offset, cdf }
        } else {
            let mut mean = self.certain as f64;
            let mut var = 0.0;
            let mut m3 = 0.0;
            for p in &agents {
                mean += p;
                var += p * (1.0 - p);
                m3 += p * (1.0 - p) * (1.0 - 2.0 * p);
            }
            for p in &answers {
                mean -= p;
                var += p * (1.0 - p);
                m3 -= p * (1.0 - p) * (1.0 - 2.0 * p);
            }
            ShortfallLaw::Moments { mean, var, m3 }
        }
    }
}

impl ShortfallLaw {
    /// `P(D − Binomial(k, g) ≤ 0)`: the chance that one more answered call finds no agent
    /// when `k` other new attempts each answer by the horizon with probability `g`.
    pub(crate) fn no_agent_probability(&self, k: u32, g: f64) -> f64 {
        let g = g.clamp(0.0, 1.0);
        match self {
            ShortfallLaw::Exact { offset, cdf } => {
                // P(X ≤ B) = Σ_b P(B = b) · P(X ≤ b).
                let cdf_at = |x: i64| -> f64 {
                    let idx = x - offset;
                    if idx < 0 {
                        0.0
                    } else if idx as usize >= cdf.len() {
                        1.0
                    } else {
                        cdf[idx as usize]
                    }
                };
                binomial_pmf(k, g)
                    .iter()
                    .enumerate()
                    .map(|(b, pb)| pb * cdf_at(b as i64))
                    .sum::<f64>()
                    .clamp(0.0, 1.0)
            }
            ShortfallLaw::Moments { mean, var, m3 } => {
                let kf = f64::from(k);
                let mean = mean - kf * g;
                let var = var + kf * g * (1.0 - g);
                let m3 = m3 - kf * g * (1.0 - g) * (1.0 - 2.0 * g);
                refined_normal_cdf(0.5, mean, var, m3)
            }
        }
    }
}

/// The distribution of a sum of independent Bernoulli variables, by dynamic programming.
pub(crate) fn poisson_binomial(ps: &[f64]) -> Vec<f64> {
    let mut pmf = vec![1.0];
    for &p in ps {
        let mut next = vec![0.0; pmf.len() + 1];
        for (i, q) in pmf.iter().enumerate() {
            next[i] += q * (1.0 - p);
            next[i + 1] += q * p;
        }
        pmf = next;
    }
    pmf
}

fn binomial_pmf(k: u32, g: f64) -> Vec<f64> {
    let n = k as usize;
    if g <= 0.0 {
        let mut v = vec![0.0; n + 1];
        v[0] = 1.0;
        return v;
    }
    if g >= 1.0 {
        let mut v = vec![0.0; n + 1];
        v[n] = 1.0;
        return v;
    }
    // Recurrence from P(0) in log space to stay finite for large k.
    let mut v = Vec::with_capacity(n + 1);
    let mut log_p = f64::from(k) * (1.0 - g).ln();
    let ratio = (g / (1.0 - g)).ln();
    for b in 0..=n {
        v.push(log_p.exp());
        log_p += ((n - b) as f64 / (b + 1) as f64).ln() + ratio;
    }
    v
}

/// `P(X ≤ x)` for a lattice variable with the given moments: normal with a skewness term.
pub(crate) fn refined_normal_cdf(x: f64, mean: f64, var: f64, m3: f64) -> f64 {
    if var <= 1e-12 {
        return if mean <= x { 1.0 } else { 0.0 };
    }
    let sd = var.sqrt();
    let z = (x - mean) / sd;
    let skew = m3 / (sd * sd * sd);
    let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (normal_cdf(z) + skew * (1.0 - z * z) * phi / 6.0).clamp(0.0, 1.0)
}

/// The standard normal CDF.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_binomial_matches_binomial_when_probabilities_are_equal() {
        let pmf = poisson_binomial(&[0.3; 5]);
        let bin = binomial_pmf(5, 0.3);
        for (a, b) in pmf.iter().zip(&bin) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn one_ready_agent_and_one_sure_answer_leaves_the_next_call_without_agent() {
        let s = Shortfall {
            certain: 1,
            agent_free: vec![],
            answer: vec![1.0],
        };
        let law = s.law();
        assert!((law.no_agent_probability(0, 0.0) - 1.0).abs() < 1e-12);
        let s = Shortfall {
            certain: 2,
            agent_free: vec![],
            answer: vec![0.5],
        };
        // D = 2 − Bern(0.5) ≥ 1 always: the next call always finds an agent.
        assert!(s.law().no_agent_probability(0, 0.0) < 1e-12);
        // With one more new attempt answering for sure: D − 1 ≤ 0 iff the in-flight one answers.
        assert!((s.law().no_agent_probability(1, 1.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn refined_normal_tracks_the_exact_sum_for_many_terms() {
        let agents: Vec<f64> = (0..40).map(|i| 0.2 + 0.015 * i as f64).collect();
        let answers: Vec<f64> = (0..50).map(|i| 0.1 + 0.01 * i as f64).collect();
        let s = Shortfall {
            certain: 10,
            agent_free: agents.clone(),
            answer: answers.clone(),
        };
        // Exact by brute DP over the difference.
        let plus = poisson_binomial(&agents);
        let minus = poisson_binomial(&answers);
        for k in [0u32, 5, 20] {
            let g = 0.2;
            let bin = binomial_pmf(k, g);
            let mut exact = 0.0;
            for (i, a) in plus.iter().enumerate() {
                for (j, b) in minus.iter().enumerate() {
                    for (l, c) in bin.iter().enumerate() {
                        if 10 + i as i64 - j as i64 - l as i64 <= 0 {
                            exact += a * b * c;
                        }
                    }
                }
            }
            let approx = s.law().no_agent_probability(k, g);
            assert!(
                (approx - exact).abs() < 0.01,
                "k={k}: approx {approx} exact {exact}"
            );
        }
    }

    #[test]
    fn normal_cdf_is_accurate() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-2.326_348) - 0.01).abs() < 1e-6);
    }
}
