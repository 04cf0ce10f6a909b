//! RTP packetization of H.264 (RFC 6184, packetization-mode=1) and H.265
//! (RFC 7798, no DONL) access units: one single NAL unit packet per NAL unit
//! that fits, fragmentation units (FU-A / FU) for larger ones, and in-band
//! parameter sets before random access points that lack them; and what
//! both syntaxes share outside RTP: random access detection and the
//! removal of in-band parameter sets for fMP4 samples.

use bytes::{BufMut, Bytes, BytesMut};

use super::rtp::{PacketSink, RTP_HEADER_LEN};
use super::{h264, h265, nal::avcc_nal_units, Codec, PayloadError, RtpParams};

/// An H.264/H.265 access unit as an Annex B byte stream (ITU-T H.264 /
/// H.265 Annex B: `00 00 00 01` before each NAL unit), what decoders take:
/// the codec's parameter sets first (VPS, SPS, PPS as in `codec`) when
/// `with_parameter_sets`, then the NAL units of `avcc` (4-byte length
/// prefixes, ISO/IEC 14496-15), stopping at a framing error. Other codecs
/// get only `avcc`'s NAL units.
pub fn annexb_access_unit(codec: &Codec, avcc: &[u8], with_parameter_sets: bool) -> Vec<u8> {
    let sets: Vec<&[u8]> = match (with_parameter_sets, codec) {
        (true, Codec::H265 { vps, sps, pps }) => vec![vps, sps, pps],
        (true, Codec::H264 { sps, pps }) => vec![sps, pps],
        _ => Vec::new(),
    };
    let len = sets.iter().map(|s| s.len() + 4).sum::<usize>() + avcc.len();
    let mut out = Vec::with_capacity(len);
    for unit in sets
        .into_iter()
        .chain(avcc_nal_units(avcc).map_while(Result::ok))
    {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
    }
    out
}

/// Whether a video access unit (NAL units with 4-byte length prefixes,
/// ISO/IEC 14496-15) is a random access point: it holds an IDR slice
/// (H.264 type 5) or an IRAP picture (H.265 types 16..=23: BLA, IDR, CRA).
/// Always true for JPEG (every image is intra coded); false for audio
/// codecs; NAL units after a framing error are not looked at.
pub fn is_random_access(codec: &Codec, access_unit: &[u8]) -> bool {
    let syntax = match codec {
        Codec::H264 { .. } => Syntax::H264,
        Codec::H265 { .. } => Syntax::H265,
        Codec::Jpeg => return true,
        _ => return false,
    };
    avcc_nal_units(access_unit)
        .map_while(Result::ok)
        .any(|nal| syntax.is_random_access(syntax.nal_type(nal)))
}

/// Whether a video access unit (as for [`is_random_access`]) is an H.265
/// RASL picture (its first VCL NAL unit is type 8 or 9): skippable, and
/// to be skipped, by a reader whose decoding starts at the CRA before it
/// (H.265 §8.1.3). Always false for H.264 (no such pictures: an IDR starts
/// a closed GOP) and for audio.
pub fn is_leading_skippable(codec: &Codec, access_unit: &[u8]) -> bool {
    if !matches!(codec, Codec::H265 { .. }) {
        return false;
    }
    avcc_nal_units(access_unit)
        .map_while(Result::ok)
        .map(|nal| Syntax::H265.nal_type(nal))
        .find(|&t| h265::h265_is_vcl(t))
        .is_some_and(h265::h265_is_rasl)
}

/// Why a video access unit was refused by [`sanitize_access_unit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessUnitError {
    #[error("NAL unit length prefix runs past the end of the access unit")]
    BadLength,
    #[error("access unit has no NAL units besides parameter sets")]
    Empty,
}

/// Checks the 4-byte length-prefixed NAL framing (ISO/IEC 14496-15 §5.3.2)
/// of a video access unit and removes in-band parameter sets (H.264
/// SPS/PPS, H.265 VPS/SPS/PPS when `hevc`), which `avc1`/`hvc1` sample
/// entries require to be in the sample entry only (ISO/IEC 14496-15
/// §5.4.2.1, §8.4.1.1).
///
/// Returns the input unchanged (no copy) when there is nothing to remove.
pub fn sanitize_access_unit(data: &Bytes, hevc: bool) -> Result<Bytes, AccessUnitError> {
    let syntax = if hevc { Syntax::H265 } else { Syntax::H264 };
    let is_param_set = |nal: &[u8]| syntax.param_set_types().contains(&syntax.nal_type(nal));
    let mut remove = false;
    let mut kept = 0;
    for nal in avcc_nal_units(data) {
        let nal = nal.map_err(|_| AccessUnitError::BadLength)?;
        if is_param_set(nal) {
            remove = true;
        } else {
            kept += 1;
        }
    }
    if kept == 0 {
        return Err(AccessUnitError::Empty);
    }
    if !remove {
        return Ok(data.clone());
    }
    let mut out = BytesMut::with_capacity(data.len());
    // The framing was validated above: `map_while` drops nothing, and each
    // length came from a 4-byte prefix, so it fits a u32.
    for nal in avcc_nal_units(data).map_while(Result::ok) {
        if !is_param_set(nal) {
            out.put_u32(nal.len() as u32);
            out.put_slice(nal);
        }
    }
    Ok(out.freeze())
}

/// Which of the two NAL unit syntaxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    H264,
    H265,
}

impl Syntax {
    /// NAL unit header length in bytes.
    fn header_len(self) -> usize {
        match self {
            Syntax::H264 => 1,
            Syntax::H265 => 2,
        }
    }

    /// Bytes each fragment carries before its share of the NAL unit body:
    /// FU indicator + FU header (RFC 6184 §5.8), or payload header + FU
    /// header (RFC 7798 §4.4.3).
    fn fu_overhead(self) -> usize {
        match self {
            Syntax::H264 => 2,
            Syntax::H265 => 3,
        }
    }

    fn nal_type(self, nal: &[u8]) -> u8 {
        let b = nal.first().copied().unwrap_or(0);
        match self {
            Syntax::H264 => h264::h264_nal_type(b),
            Syntax::H265 => h265::h265_nal_type(b),
        }
    }

    fn check_nal(self, nal: &[u8]) -> Result<(), PayloadError> {
        match self {
            Syntax::H264 => h264::check_nal(nal),
            Syntax::H265 => h265::check_nal(nal),
        }
    }

    /// IDR (H.264) or IRAP (H.265) VCL NAL unit type.
    fn is_random_access(self, nal_type: u8) -> bool {
        match self {
            Syntax::H264 => h264::h264_is_idr(nal_type),
            Syntax::H265 => h265::h265_is_irap(nal_type),
        }
    }

    fn aud(self) -> u8 {
        match self {
            Syntax::H264 => h264::H264_NAL_AUD,
            Syntax::H265 => h265::H265_NAL_AUD,
        }
    }

    /// Parameter set types in the order they are inserted.
    fn param_set_types(self) -> &'static [u8] {
        match self {
            Syntax::H264 => &[h264::H264_NAL_SPS, h264::H264_NAL_PPS],
            Syntax::H265 => &[h265::H265_NAL_VPS, h265::H265_NAL_SPS, h265::H265_NAL_PPS],
        }
    }

    /// Number of packets and their total size in bytes (headers included)
    /// for one NAL unit of `nal_len` bytes, given `max_payload` bytes of RTP
    /// payload per packet (at least `fu_overhead() + 1`).
    fn packets_for(self, nal_len: usize, max_payload: usize) -> (usize, usize) {
        if nal_len <= max_payload {
            return (1, RTP_HEADER_LEN + nal_len);
        }
        let body = nal_len - self.header_len();
        let per = max_payload - self.fu_overhead();
        let n = body.div_ceil(per);
        (n, n * (RTP_HEADER_LEN + self.fu_overhead()) + body)
    }

    /// Writes one NAL unit (already checked) as a single NAL unit packet or,
    /// if longer than `max_payload`, as FU-A / FU fragments of at most
    /// `max_payload` bytes each. `marker` goes on the last packet.
    fn write_nal(
        self,
        sink: &mut PacketSink<'_>,
        nal: &[u8],
        timestamp: u32,
        marker: bool,
        max_payload: usize,
    ) {
        if nal.len() <= max_payload {
            sink.start(marker, timestamp);
            sink.put(nal);
            sink.finish();
            return;
        }
        let (hdr, body) = nal.split_at(self.header_len());
        let per = max_payload - self.fu_overhead();
        let n = body.len().div_ceil(per);
        for (i, chunk) in body.chunks(per).enumerate() {
            let (start, end) = (i == 0, i + 1 == n);
            sink.start(marker && end, timestamp);
            match (self, hdr) {
                (Syntax::H264, &[h0]) => sink.put(&h264::fu_a_headers(h0, start, end)),
                (Syntax::H265, &[h0, h1]) => sink.put(&h265::fu_headers(h0, h1, start, end)),
                _ => unreachable!("split_at(header_len()) gives header_len() bytes"),
            }
            sink.put(chunk);
            sink.finish();
        }
    }
}

/// Packetizer state for one H.264 or H.265 track.
#[derive(Clone, Debug)]
pub(crate) struct VideoPayloader {
    syntax: Syntax,
    /// The usable current parameter sets, in insertion order.
    param_sets: Vec<Bytes>,
}

impl VideoPayloader {
    /// `param_sets`: in the order of [`Syntax::param_set_types`]; empty or
    /// malformed ones are ignored (never sent in-band).
    pub(crate) fn new(syntax: Syntax, param_sets: &[&Bytes]) -> Self {
        VideoPayloader {
            syntax,
            param_sets: param_sets
                .iter()
                .filter(|p| syntax.check_nal(p).is_ok())
                .map(|p| (*p).clone())
                .collect(),
        }
    }

    /// Packetizes one access unit of AVCC/HVCC length-prefixed NAL units.
    /// See [`super::Payloader::payload`]. Returns the next sequence number.
    pub(crate) fn payload(
        &self,
        data: &[u8],
        timestamp: u32,
        keyframe: bool,
        rtp: RtpParams,
        out: &mut Vec<Bytes>,
    ) -> Result<u16, PayloadError> {
        let syntax = self.syntax;
        let ps_types = syntax.param_set_types();

        // Pass 1: validate everything before writing anything.
        let mut count = 0usize;
        let mut random_access = keyframe;
        let mut first_is_aud = false;
        let mut seen_ps = 0u8;
        for nal in avcc_nal_units(data) {
            let nal = nal?;
            syntax.check_nal(nal)?;
            let t = syntax.nal_type(nal);
            first_is_aud |= count == 0 && t == syntax.aud();
            random_access |= syntax.is_random_access(t);
            if let Some(i) = ps_types.iter().position(|&p| p == t) {
                seen_ps |= 1 << i;
            }
            count += 1;
        }
        if count == 0 {
            return Err(PayloadError::Malformed(
                "access unit has no NAL units".to_owned(),
            ));
        }

        // The NAL units to send: the access unit's, with the current
        // parameter sets after a leading access unit delimiter (H.264
        // §7.4.1.2.3, H.265 §7.4.2.4.4) if it is a random access point
        // missing any of them.
        let insert = random_access && seen_ps != (1 << ps_types.len()) - 1;
        let inserted: &[Bytes] = if insert { &self.param_sets } else { &[] };
        let at = usize::from(first_is_aud);
        // Pass 1 validated the framing, so `map_while(Result::ok)` drops nothing.
        let units = || {
            avcc_nal_units(data)
                .map_while(Result::ok)
                .take(at)
                .chain(inserted.iter().map(|p| &p[..]))
                .chain(avcc_nal_units(data).map_while(Result::ok).skip(at))
        };

        // Pass 2: size; pass 3: write into one buffer.
        let (packets, total) = units().fold((0, 0), |(p, t), nal| {
            let (np, nt) = syntax.packets_for(nal.len(), rtp.max_payload);
            (p + np, t + nt)
        });
        let mut sink = rtp.sink(out, total, packets);
        let mut units = units().peekable();
        while let Some(nal) = units.next() {
            let last = units.peek().is_none();
            syntax.write_nal(&mut sink, nal, timestamp, last, rtp.max_payload);
        }
        Ok(sink.done())
    }
}
