//! G.711 µ-law (PCMU) and A-law (PCMA): 8-bit companded samples to and from 16-bit linear PCM,
//! and transcoding between the two laws for bridges whose legs negotiated different codecs.
//!
//! Owns only the sample arithmetic (ITU-T G.711, segment/mantissa form). Knows nothing of RTP
//! packets or payload types; [`Codec`] names the law a leg negotiated.

/// Bias added before µ-law segment search (ITU-T G.711, 33 in 14-bit units, shifted to 16-bit).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent after biasing without overflow.
const ULAW_CLIP: i32 = 32_635;

/// One of the two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, RTP static payload type 0 (North America, Japan).
    Pcmu,
    /// A-law, RTP static payload type 8 (Europe and most of the world).
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 table 4).
    pub const fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` lines.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec for an SDP encoding name (case-insensitive), if it is one of ours.
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    /// Decodes one companded byte to linear PCM.
    pub fn decode_sample(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(byte),
            Codec::Pcma => alaw_to_linear(byte),
        }
    }

    /// Encodes one linear PCM sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(sample),
            Codec::Pcma => linear_to_alaw(sample),
        }
    }

    /// Decodes a payload, appending linear samples to `out`.
    pub fn decode(self, payload: &[u8], out: &mut Vec<i16>) {
        let table = match self {
            Codec::Pcmu => &ULAW_DECODE,
            Codec::Pcma => &ALAW_DECODE,
        };
        out.extend(payload.iter().map(|&b| table[usize::from(b)]));
    }

    /// Encodes linear samples, appending companded bytes to `out`.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| self.encode_sample(s)));
    }

    /// The byte a silent (zero) sample encodes to.
    pub const fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }
}

/// Converts a payload from one law to the other in place, through a 256-entry table (the
/// same result as decoding and re-encoding). A no-op when `from == to`.
pub fn transcode_in_place(from: Codec, to: Codec, payload: &mut [u8]) {
    let table = match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => &ULAW_TO_ALAW,
        (Codec::Pcma, Codec::Pcmu) => &ALAW_TO_ULAW,
        _ => return,
    };
    for b in payload {
        *b = table[usize::from(*b)];
    }
}

/// µ-law byte to linear PCM.
pub const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear PCM to µ-law byte.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    // Highest set bit is between 7 and 14 after biasing; the segment is its distance from 7.
    let exponent = (31 - s.leading_zeros() as i32) - 7;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// A-law byte to linear PCM.
pub const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

/// Linear PCM to A-law byte.
pub const fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut pcm = (sample as i32) >> 3;
    let mask: i32 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment end points of the 13-bit scale.
    let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut segment = 0;
    while segment < 8 && pcm > ends[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (segment as i32) << 4;
    if segment < 2 {
        aval |= (pcm >> 1) & 0x0F;
    } else {
        aval |= (pcm >> segment) & 0x0F;
    }
    (aval ^ mask) as u8
}

const fn decode_table(codec: Codec) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match codec {
            Codec::Pcmu => ulaw_to_linear(i as u8),
            Codec::Pcma => alaw_to_linear(i as u8),
        };
        i += 1;
    }
    t
}

const fn transcode_table(from: Codec) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match from {
            Codec::Pcmu => linear_to_alaw(ulaw_to_linear(i as u8)),
            Codec::Pcma => linear_to_ulaw(alaw_to_linear(i as u8)),
        };
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = decode_table(Codec::Pcmu);
static ALAW_DECODE: [i16; 256] = decode_table(Codec::Pcma);
static ULAW_TO_ALAW: [u8; 256] = transcode_table(Codec::Pcmu);
static ALAW_TO_ULAW: [u8; 256] = transcode_table(Codec::Pcma);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_ulaw_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // 0x7F is µ-law's negative zero; it decodes to 0, which encodes as positive zero.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expected,
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn every_alaw_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn known_reference_values_match_g711() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(Codec::Pcmu.silence(), linear_to_ulaw(0));
        assert_eq!(Codec::Pcma.silence(), linear_to_alaw(0));
    }

    #[test]
    fn transcoding_tables_equal_decode_then_encode() {
        for code in 0..=255u8 {
            let mut b = [code];
            transcode_in_place(Codec::Pcmu, Codec::Pcma, &mut b);
            assert_eq!(b[0], linear_to_alaw(ulaw_to_linear(code)));
            let mut b = [code];
            transcode_in_place(Codec::Pcma, Codec::Pcmu, &mut b);
            assert_eq!(b[0], linear_to_ulaw(alaw_to_linear(code)));
        }
    }

    #[test]
    fn transcoding_a_tone_keeps_it_within_quantisation_error() {
        let tone: Vec<i16> = (0..800)
            .map(|n| {
                (8_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * n as f64 / 8_000.0).sin()) as i16
            })
            .collect();
        let mut ulaw = Vec::new();
        Codec::Pcmu.encode(&tone, &mut ulaw);
        transcode_in_place(Codec::Pcmu, Codec::Pcma, &mut ulaw);
        let mut back = Vec::new();
        Codec::Pcma.decode(&ulaw, &mut back);
        for (a, b) in tone.iter().zip(&back) {
            let err = (i32::from(*a) - i32::from(*b)).abs();
            assert!(
                err <= i32::from(a.unsigned_abs() / 8) + 64,
                "{a} became {b}"
            );
        }
    }

    proptest! {
        #[test]
        fn quantisation_error_is_bounded_by_the_segment_step(s in any::<i16>()) {
            // Each law's step is at most 1/16 of the magnitude plus a small floor; both clip
            // near full scale.
            let clip = 32_124i32;
            let target = i32::from(s).clamp(-clip, clip);
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let back = i32::from(codec.decode_sample(codec.encode_sample(s)));
                prop_assert!((back - target).abs() <= target.abs() / 16 + 132,
                    "{:?}: {} -> {}", codec, s, back);
            }
        }

        #[test]
        fn encoding_is_monotonic(a in any::<i16>(), b in any::<i16>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            for codec in [Codec::Pcmu, Codec::Pcma] {
                prop_assert!(codec.decode_sample(codec.encode_sample(lo))
                    <= codec.decode_sample(codec.encode_sample(hi)));
            }
        }
    }
}
