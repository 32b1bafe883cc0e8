//! Per-leg call quality: an ITU-T G.107 E-model R-factor and MOS estimate from loss, delay
//! and jitter, for the call record.
//!
//! Owns only the arithmetic (G.107 with default values, G.113 Appendix I impairment factors
//! for G.711, delay impairment in the usual simplified form). Must not: gather the figures
//! (the leg's RTCP session and jitter buffer do).

/// The figures one leg's quality is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityInputs {
    /// Packet loss seen by the listener, percent (0–100), after the jitter buffer (late packets
    /// count as lost).
    pub loss_percent: f64,
    /// Round-trip time from RTCP, ms; `None` when no report carried one.
    pub round_trip_ms: Option<f64>,
    /// The jitter buffer's playout delay, ms.
    pub jitter_buffer_ms: f64,
    /// Packetisation, ms.
    pub ptime_ms: f64,
}

/// The estimate stored with the call record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegQuality {
    /// Mouth-to-ear delay assumed, ms.
    pub one_way_delay_ms: f64,
    /// Transmission rating factor R (0–100; 93.2 is a perfect G.711 call).
    pub r_factor: f64,
    /// Mean opinion score, 1.0–4.5.
    pub mos: f64,
}

/// G.113 Appendix I: packet-loss robustness of G.711 without packet loss concealment (our
/// jitter buffer fills gaps with silence).
const BPL_G711_NO_PLC: f64 = 4.3;
/// G.107 default R with no impairment.
const R0_MINUS_DEFAULTS: f64 = 93.2;

/// Delay impairment Id for a one-way delay in ms.
fn delay_impairment(d: f64) -> f64 {
    let excess = (d - 177.3).max(0.0);
    0.024 * d + 0.11 * excess
}

/// Effective equipment impairment for G.711 (Ie = 0) at random loss `ppl` percent.
fn loss_impairment(ppl: f64) -> f64 {
    let ie = 0.0;
    ie + (95.0 - ie) * ppl / (ppl + BPL_G711_NO_PLC)
}

/// MOS from R (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

/// The E-model estimate for one leg.
pub fn estimate(inputs: &QualityInputs) -> LegQuality {
    let network = inputs.round_trip_ms.map_or(0.0, |rtt| rtt / 2.0);
    let one_way = network + inputs.jitter_buffer_ms + inputs.ptime_ms;
    let loss = inputs.loss_percent.clamp(0.0, 100.0);
    let r =
        (R0_MINUS_DEFAULTS - delay_impairment(one_way) - loss_impairment(loss)).clamp(0.0, 100.0);
    LegQuality {
        one_way_delay_ms: one_way,
        r_factor: r,
        mos: mos_from_r(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(loss: f64, rtt: Option<f64>) -> QualityInputs {
        QualityInputs {
            loss_percent: loss,
            round_trip_ms: rtt,
            jitter_buffer_ms: 0.0,
            ptime_ms: 0.0,
        }
    }

    #[test]
    fn a_perfect_g711_call_rates_r_93_and_mos_4_4() {
        let q = estimate(&inputs(0.0, None));
        assert!((q.r_factor - 93.2).abs() < 1e-9);
        assert!((q.mos - 4.41).abs() < 0.01, "{q:?}");
    }

    #[test]
    fn mos_mapping_matches_g107_reference_points() {
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        // G.107 Figure B.1: R = 50 gives MOS ≈ 2.58, R = 70 ≈ 3.60, R = 80 ≈ 4.02.
        assert!((mos_from_r(50.0) - 2.58).abs() < 0.01);
        assert!((mos_from_r(70.0) - 3.60).abs() < 0.01);
        assert!((mos_from_r(80.0) - 4.02).abs() < 0.01);
    }

    #[test]
    fn loss_hurts_g711_without_concealment_sharply() {
        // 1 % loss: Ie,eff = 95 · 1 / 5.3 ≈ 17.9.
        let q = estimate(&inputs(1.0, None));
        assert!((q.r_factor - (93.2 - 95.0 / 5.3)).abs() < 1e-9);
        let worse = estimate(&inputs(5.0, None));
        assert!(worse.mos < q.mos && q.mos < 4.41);
    }

    #[test]
    fn delay_beyond_177_ms_costs_more_per_ms() {
        let at = |rtt: f64| estimate(&inputs(0.0, Some(rtt))).r_factor;
        let below = at(100.0) - at(200.0); // one-way 50 → 100 ms
        let above = at(400.0) - at(500.0); // one-way 200 → 250 ms
        assert!((below - 1.2).abs() < 1e-9, "{below}");
        assert!((above - (1.2 + 5.5)).abs() < 1e-9, "{above}");
    }

    #[test]
    fn one_way_delay_adds_half_the_round_trip_the_buffer_and_the_packet_time() {
        let q = estimate(&QualityInputs {
            loss_percent: 0.0,
            round_trip_ms: Some(80.0),
            jitter_buffer_ms: 40.0,
            ptime_ms: 20.0,
        });
        assert_eq!(q.one_way_delay_ms, 100.0);
    }
}
