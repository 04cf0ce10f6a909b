//! The few codec-parameter facts the fMP4 sample entries and the RFC 6381
//! `CODECS` strings need, read from parameter sets and AudioSpecificConfig,
//! plus the access-unit sanitiser for AVCC/HVCC samples.
//!
//! Only the leading fields of each parameter set are parsed (profile, level,
//! chroma format, bit depth): everything the decoder needs travels verbatim
//! in `avcC`/`hvcC`, so nothing else has to be understood here.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a parameter set or audio config could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The NAL unit or config ends before the field being read.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// A field holds a value the specification forbids.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Reads bits MSB-first from an RBSP (emulation prevention already removed),
/// with Exp-Golomb support (ITU-T H.264 §9.1 / H.265 §9.2).
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    /// Names the structure in errors.
    what: &'static str,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader { data, pos: 0, what }
    }

    fn bit(&mut self) -> Result<u32, ParamError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(ParamError::Truncated(self.what))?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    /// `u(n)` for n ≤ 32.
    fn bits(&mut self, n: u32) -> Result<u32, ParamError> {
        let mut v: u32 = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), ParamError> {
        if self.pos + n > self.data.len() * 8 {
            return Err(ParamError::Truncated(self.what));
        }
        self.pos += n;
        Ok(())
    }

    /// `ue(v)`; codes longer than 32 bits are refused (no valid SPS field is that large).
    fn ue(&mut self) -> Result<u32, ParamError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(ParamError::Invalid("Exp-Golomb code longer than 32 bits"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`), ITU-T H.264
/// §7.4.1 / H.265 §7.4.2. Only the first `limit` output bytes are produced:
/// the fields read here sit near the start of the parameter set.
fn rbsp(nal: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len().min(limit));
    let mut zeros = 0;
    for &b in nal {
        if out.len() >= limit {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// The H.264 SPS fields used by `avcC` and the codec string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvcSpsInfo {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// `chroma_format_idc`, `bit_depth_luma_minus8 + 8`, `bit_depth_chroma_minus8 + 8`;
    /// present for the high profiles whose SPS carries them (ITU-T H.264 §7.3.2.1.1).
    pub chroma: Option<(u8, u8, u8)>,
}

/// Parses the start of an H.264 SPS NAL unit (header byte included, no
/// start code or length prefix), ITU-T H.264 §7.3.2.1.1.
///
/// Errors: not an SPS (nal_unit_type ≠ 7), or truncated.
pub fn parse_avc_sps(sps: &[u8]) -> Result<AvcSpsInfo, ParamError> {
    const WHAT: &str = "H.264 SPS";
    let header = *sps.first().ok_or(ParamError::Truncated(WHAT))?;
    if header & 0x1f != 7 {
        return Err(ParamError::Invalid("H.264 SPS has the wrong NAL unit type"));
    }
    let data = rbsp(&sps[1..], 64);
    let mut r = BitReader::new(&data, WHAT);
    let profile_idc = r.bits(8)? as u8;
    let constraint_flags = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let _sps_id = r.ue()?;
    // The profiles whose SPS carries chroma_format_idc and bit depths.
    let chroma = if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(ParamError::Invalid("H.264 SPS chroma_format_idc above 3"));
        }
        if chroma_format_idc == 3 {
            let _separate_colour_plane = r.bit()?;
        }
        let luma = r.ue()?;
        let chroma_depth = r.ue()?;
        if luma > 6 || chroma_depth > 6 {
            return Err(ParamError::Invalid("H.264 SPS bit depth above 14"));
        }
        Some((
            chroma_format_idc as u8,
            luma as u8 + 8,
            chroma_depth as u8 + 8,
        ))
    } else {
        None
    };
    Ok(AvcSpsInfo {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma,
    })
}

/// The H.265 SPS fields used by `hvcC` and the codec string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HevcSpsInfo {
    pub profile_space: u8,
    pub tier_flag: bool,
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, flag 0 in the most significant bit.
    pub compatibility_flags: [u8; 4],
    /// The 48 bits from `general_progressive_source_flag` on.
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
    pub chroma_format_idc: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
}

/// Parses the start of an H.265 SPS NAL unit (2-byte header included),
/// ITU-T H.265 §7.3.2.2.1 with `profile_tier_level()` from §7.3.3.
///
/// Errors: not an SPS (nal_unit_type ≠ 33), or truncated.
pub fn parse_hevc_sps(sps: &[u8]) -> Result<HevcSpsInfo, ParamError> {
    const WHAT: &str = "H.265 SPS";
    let header = *sps.first().ok_or(ParamError::Truncated(WHAT))?;
    if (header >> 1) & 0x3f != 33 {
        return Err(ParamError::Invalid("H.265 SPS has the wrong NAL unit type"));
    }
    let body = sps.get(2..).ok_or(ParamError::Truncated(WHAT))?;
    let data = rbsp(body, 128);
    let mut r = BitReader::new(&data, WHAT);
    let _vps_id = r.bits(4)?;
    let max_sub_layers_minus1 = r.bits(3)? as u8;
    let temporal_id_nested = r.bit()? == 1;

    // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3.
    let profile_space = r.bits(2)? as u8;
    let tier_flag = r.bit()? == 1;
    let profile_idc = r.bits(5)? as u8;
    let compat = r.bits(32)?;
    let mut constraint_flags = [0u8; 6];
    for b in &mut constraint_flags {
        *b = r.bits(8)? as u8;
    }
    let level_idc = r.bits(8)? as u8;
    let mut sub_profile_present = [false; 8];
    let mut sub_level_present = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        sub_profile_present[i] = r.bit()? == 1;
        sub_level_present[i] = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?; // reserved_zero_2bits
        }
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if sub_profile_present[i] {
            r.skip(88)?; // sub-layer profile space .. constraint flags
        }
        if sub_level_present[i] {
            r.skip(8)?;
        }
    }

    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(ParamError::Invalid("H.265 SPS chroma_format_idc above 3"));
    }
    if chroma_format_idc == 3 {
        let _separate_colour_plane = r.bit()?;
    }
    let _width = r.ue()?;
    let _height = r.ue()?;
    if r.bit()? == 1 {
        // conformance window offsets
        for _ in 0..4 {
            r.ue()?;
        }
    }
    let luma = r.ue()?;
    let chroma = r.ue()?;
    if luma > 8 || chroma > 8 {
        return Err(ParamError::Invalid("H.265 SPS bit depth above 16"));
    }
    Ok(HevcSpsInfo {
        profile_space,
        tier_flag,
        profile_idc,
        compatibility_flags: compat.to_be_bytes(),
        constraint_flags,
        level_idc,
        num_temporal_layers: max_sub_layers_minus1 + 1,
        temporal_id_nested,
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma_minus8: luma as u8,
        bit_depth_chroma_minus8: chroma as u8,
    })
}

/// RFC 6381 §3.3 codec string for H.264: `avc1.PPCCLL` (lowercase hex).
pub fn avc_codec_string(sps: &AvcSpsInfo) -> String {
    format!(
        "avc1.{:02x}{:02x}{:02x}",
        sps.profile_idc, sps.constraint_flags, sps.level_idc
    )
}

/// ISO/IEC 14496-15 Annex E.3 codec string for H.265 in `hvc1` sample
/// entries, e.g. `hvc1.1.6.L93.B0`.
pub fn hevc_codec_string(sps: &HevcSpsInfo) -> String {
    let space = match sps.profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    // The compatibility flags are written in reverse bit order (flag 0 as
    // the least significant bit), in hex without leading zeros.
    let compat = u32::from_be_bytes(sps.compatibility_flags).reverse_bits();
    let tier = if sps.tier_flag { 'H' } else { 'L' };
    let mut s = format!(
        "hvc1.{space}{}.{compat:x}.{tier}{}",
        sps.profile_idc, sps.level_idc
    );
    // Constraint bytes, each as hex, trailing zero bytes omitted.
    let used = sps
        .constraint_flags
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &sps.constraint_flags[..used] {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

/// The audio object type of an MPEG-4 AudioSpecificConfig
/// (ISO/IEC 14496-3 §1.6.2.1), with the 31 escape resolved.
pub fn aac_object_type(config: &[u8]) -> Result<u8, ParamError> {
    const WHAT: &str = "AAC AudioSpecificConfig";
    let mut r = BitReader::new(config, WHAT);
    let aot = r.bits(5)? as u8;
    let aot = if aot == 31 {
        32 + r.bits(6)? as u8
    } else {
        aot
    };
    if aot == 0 {
        return Err(ParamError::Invalid("AAC audio object type 0 (null)"));
    }
    Ok(aot)
}

/// RFC 6381 §3.3 codec string for AAC: `mp4a.40.<audio object type>`.
pub fn aac_codec_string(aot: u8) -> String {
    format!("mp4a.40.{aot}")
}

/// Why a video access unit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessUnitError {
    #[error("NAL unit length prefix runs past the end of the access unit")]
    BadLength,
    #[error("access unit has no NAL units besides parameter sets")]
    Empty,
}

/// Checks the 4-byte length-prefixed NAL framing (ISO/IEC 14496-15 §5.3.2)
/// of a video access unit and removes in-band parameter sets (H.264 SPS/PPS,
/// H.265 VPS/SPS/PPS), which `avc1`/`hvc1` sample entries require to be in
/// the sample entry only (ISO/IEC 14496-15 §5.4.2.1, §8.4.1.1).
///
/// Returns the input unchanged (no copy) when there is nothing to remove.
pub fn sanitize_access_unit(data: &Bytes, hevc: bool) -> Result<Bytes, AccessUnitError> {
    let is_param_set = |first: u8| {
        if hevc {
            matches!((first >> 1) & 0x3f, 32..=34)
        } else {
            matches!(first & 0x1f, 7 | 8)
        }
    };
    let mut pos = 0;
    let mut remove = false;
    let mut kept = 0;
    while pos < data.len() {
        let len_bytes: [u8; 4] = data
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(AccessUnitError::BadLength)?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let start = pos + 4;
        let end = start.checked_add(len).ok_or(AccessUnitError::BadLength)?;
        if len == 0 || end > data.len() {
            return Err(AccessUnitError::BadLength);
        }
        // `len > 0` and `end <= data.len()`, so `start` is in bounds.
        if is_param_set(data[start]) {
            remove = true;
        } else {
            kept += 1;
        }
        pos = end;
    }
    if kept == 0 {
        return Err(AccessUnitError::Empty);
    }
    if !remove {
        return Ok(data.clone());
    }
    let mut out = BytesMut::with_capacity(data.len());
    let mut pos = 0;
    while pos < data.len() {
        // The framing was validated above, so these reads stay in bounds.
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let nal = &data[pos + 4..pos + 4 + len];
        if !is_param_set(nal[0]) {
            out.put_u32(len as u32);
            out.put_slice(nal);
        }
        pos += 4 + len;
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS/PPS of `testdata/h264_640x360_25fps.h264` (x264, High, level 3.0).
    pub(crate) fn fixture_h264_sps() -> Vec<u8> {
        crate::egress::hls::testutil::h264_fixture().sps
    }

    #[test]
    fn avc_sps_of_the_fixture() {
        let info = parse_avc_sps(&fixture_h264_sps()).expect("fixture SPS parses");
        assert_eq!(info.profile_idc, 100);
        assert_eq!(info.level_idc, 30);
        assert_eq!(info.chroma, Some((1, 8, 8)));
        assert_eq!(avc_codec_string(&info), "avc1.64001e");
    }

    #[test]
    fn avc_sps_baseline_has_no_chroma_fields() {
        // Constrained Baseline 3.0, hand-written: 67 42 C0 1E + ue(0)=1 + rest.
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
        let info = parse_avc_sps(&sps).expect("valid baseline SPS");
        assert_eq!(info.chroma, None);
        assert_eq!(avc_codec_string(&info), "avc1.42c01e");
    }

    #[test]
    fn avc_sps_errors() {
        assert!(matches!(parse_avc_sps(&[]), Err(ParamError::Truncated(_))));
        assert!(matches!(
            parse_avc_sps(&[0x68, 0x42]),
            Err(ParamError::Invalid(_))
        ));
        assert!(matches!(
            parse_avc_sps(&[0x67, 0x64, 0x00]),
            Err(ParamError::Truncated(_))
        ));
    }

    #[test]
    fn hevc_sps_of_the_fixture() {
        let fx = crate::egress::hls::testutil::h265_fixture();
        let info = parse_hevc_sps(&fx.sps).expect("fixture SPS parses");
        assert_eq!(info.profile_idc, 1, "Main");
        assert_eq!(info.chroma_format_idc, 1);
        assert_eq!(info.bit_depth_luma_minus8, 0);
        assert_eq!(info.level_idc, 60);
        assert_eq!(hevc_codec_string(&info), "hvc1.1.6.L60.90");
    }

    #[test]
    fn hevc_sps_from_libheif() {
        // SPS from mp4-atom's hvcC test vector (x265 via libheif), Main Still? No: Main, level 4 (120).
        let sps = [
            66, 1, 1, 1, 96, 0, 0, 3, 0, 144, 0, 0, 3, 0, 0, 3, 0, 120, 160, 2, 128, 128, 53, 159,
            89, 102, 98, 164, 145, 38, 191, 252, 26, 176, 26, 172, 4, 0, 0, 3, 0, 4, 0, 0, 3, 0,
            100, 32,
        ];
        let info = parse_hevc_sps(&sps).expect("valid SPS");
        assert_eq!(info.profile_idc, 1);
        assert_eq!(info.compatibility_flags, [0x60, 0, 0, 0]);
        assert_eq!(info.constraint_flags, [0x90, 0, 0, 0, 0, 0]);
        assert_eq!(info.level_idc, 120);
        assert_eq!(hevc_codec_string(&info), "hvc1.1.6.L120.90");
    }

    #[test]
    fn aac_object_types() {
        assert_eq!(aac_object_type(&[0x12, 0x10]), Ok(2)); // AAC-LC 44.1 kHz stereo
        assert_eq!(aac_object_type(&[0xf8, 0x20]), Ok(33)); // escape: 32 + 1
        assert!(aac_object_type(&[]).is_err());
        assert!(aac_object_type(&[0x00, 0x00]).is_err());
        assert_eq!(aac_codec_string(2), "mp4a.40.2");
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3], 64), vec![0, 0, 1, 0, 0]);
        assert_eq!(rbsp(&[1, 2, 3, 4], 2), vec![1, 2]);
    }

    #[test]
    fn exp_golomb() {
        // 1 → 0, 010 → 1, 011 → 2, 00100 → 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue(), Ok(0));
        assert_eq!(r.ue(), Ok(1));
        assert_eq!(r.ue(), Ok(2));
        assert_eq!(r.ue(), Ok(3));
    }

    #[test]
    fn access_unit_sanitising() {
        let idr = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
        assert_eq!(sanitize_access_unit(&idr, false), Ok(idr.clone()));

        let with_ps = Bytes::from_static(&[
            0, 0, 0, 2, 0x67, 0x64, 0, 0, 0, 1, 0x68, 0, 0, 0, 2, 0x65, 0x88,
        ]);
        assert_eq!(sanitize_access_unit(&with_ps, false), Ok(idr.clone()));

        let hevc = Bytes::from_static(&[0, 0, 0, 2, 0x40, 0x01, 0, 0, 0, 3, 0x26, 0x01, 0xaf]);
        assert_eq!(
            sanitize_access_unit(&hevc, true),
            Ok(Bytes::from_static(&[0, 0, 0, 3, 0x26, 0x01, 0xaf]))
        );

        let short = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
        assert_eq!(
            sanitize_access_unit(&short, false),
            Err(AccessUnitError::BadLength)
        );
        let only_ps = Bytes::from_static(&[0, 0, 0, 1, 0x67]);
        assert_eq!(
            sanitize_access_unit(&only_ps, false),
            Err(AccessUnitError::Empty)
        );
        assert_eq!(
            sanitize_access_unit(&Bytes::new(), false),
            Err(AccessUnitError::Empty)
        );
    }
}
