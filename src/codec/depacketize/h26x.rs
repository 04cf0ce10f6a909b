//! H.264 (RFC 6184: single NAL unit, STAP-A, FU-A) and H.265 (RFC 7798:
//! single NAL unit, AP, FU; no DONL) access unit reassembly into 4-byte
//! length-prefixed NAL units.
//!
//! An access unit ends at the marker bit, or when a packet with another
//! timestamp arrives (cameras that never set the marker). Parameter sets,
//! SEI or delimiters that come alone (their own timestamp or marker) are
//! carried into the next access unit instead of being one.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::{AccessUnit, DropReason, Fmtp, Output, ParamSets, RtpPacket, Unsupported};
use crate::codec::h264::{h264_is_idr, h264_nal_type, H264_NAL_PPS, H264_NAL_SPS};
use crate::codec::h265::{
    h265_is_irap, h265_is_rasl, h265_is_vcl, h265_nal_type, H265_NAL_CRA, H265_NAL_PPS,
    H265_NAL_SPS, H265_NAL_VPS,
};
use crate::codec::nal::avcc_nal_units;

use super::MAX_ACCESS_UNIT_SIZE;

/// NAL units carried over (parameter sets without a picture) are capped at
/// this many bytes.
const MAX_CARRIED: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    H264,
    H265,
}

/// The access unit being rebuilt.
#[derive(Debug, Default)]
struct Au {
    /// RTP timestamp of its packets; `None` when no access unit is open.
    timestamp: Option<u32>,
    /// NAL units, each with a 4-byte length prefix.
    buf: BytesMut,
    /// Offset in `buf` of the length prefix of a fragmented NAL unit whose
    /// end has not come yet.
    frag: Option<usize>,
    /// Why it will be dropped; its further packets are not looked at.
    broken: Option<DropReason>,
    /// Packets were lost just before it: it is handed out only if its first
    /// picture's first slice is there.
    after_gap: bool,
}

#[derive(Debug)]
pub(super) struct H26x {
    syntax: Syntax,
    au: Au,
    /// Non-VCL NAL units (AVCC framing) of an earlier timestamp, put in
    /// front of the next access unit.
    carried: BytesMut,
    /// Output waits for a random access point: at the start and after any
    /// dropped access unit.
    need_keyframe: bool,
    /// H.265: output resumed at a CRA or BLA, whose RASL pictures are not
    /// decodable; until the next IRAP.
    skip_rasl: bool,
    params: ParamSets,
}

impl H26x {
    /// RFC 6184 §8.1 `packetization-mode`: 0 (single NAL unit) and 1
    /// (non-interleaved) accepted, and STAP-A/FU-A taken in either (cameras
    /// that omit the parameter send them); 2 (interleaved) is unsupported.
    pub(super) fn new_h264(fmtp: &Fmtp<'_>) -> Result<H26x, Unsupported> {
        match fmtp.number("packetization-mode")? {
            None | Some(0) | Some(1) => Ok(Self::new(Syntax::H264)),
            Some(m) => Err(Unsupported(format!(
                "H.264 packetization-mode={m} (interleaved: STAP-B, MTAP, FU-B)"
            ))),
        }
    }

    /// RFC 7798 §7.1: with `sprop-max-don-diff` > 0 packets carry DONL/DOND
    /// and may come out of decoding order, which needs a reordering buffer
    /// this does not have: unsupported.
    pub(super) fn new_h265(fmtp: &Fmtp<'_>) -> Result<H26x, Unsupported> {
        match fmtp.number("sprop-max-don-diff")? {
            None | Some(0) => Ok(Self::new(Syntax::H265)),
            Some(d) => Err(Unsupported(format!(
                "H.265 sprop-max-don-diff={d} (DONL, decoding order differs from transmission order)"
            ))),
        }
    }

    fn new(syntax: Syntax) -> H26x {
        H26x {
            syntax,
            au: Au::default(),
            carried: BytesMut::new(),
            need_keyframe: true,
            skip_rasl: false,
            params: ParamSets::default(),
        }
    }

    pub(super) fn push(&mut self, pkt: &RtpPacket<'_>, gap: bool, out: &mut VecDeque<Output>) {
        if self.au.timestamp.is_some_and(|ts| ts != pkt.timestamp) {
            // The open access unit never got its marker; if packets were
            // lost, its end may be among them.
            if gap {
                self.au.broken.get_or_insert(DropReason::Loss);
            }
            self.finish(out);
        }
        if gap {
            // The lost packets may have held a reference picture.
            self.need_keyframe = true;
        }
        if self.au.timestamp.is_none() {
            self.au.timestamp = Some(pkt.timestamp);
            self.au.after_gap = gap;
        } else if gap {
            self.au.broken.get_or_insert(DropReason::Loss);
        }
        if self.au.broken.is_none() {
            if let Err(reason) = self.add_payload(pkt.payload) {
                self.break_au(reason);
            }
        }
        if pkt.marker {
            self.finish(out);
        }
    }

    pub(super) fn flush(&mut self, out: &mut VecDeque<Output>) {
        self.finish(out);
    }

    fn break_au(&mut self, reason: DropReason) {
        self.au.broken.get_or_insert(reason);
        // Release the memory now: nothing of it will be used.
        self.au.buf = BytesMut::new();
        self.au.frag = None;
    }

    fn reserve(&mut self, n: usize) -> Result<(), DropReason> {
        match self.au.buf.len().checked_add(n) {
            Some(t) if t <= MAX_ACCESS_UNIT_SIZE => Ok(()),
            _ => Err(DropReason::TooLarge),
        }
    }

    /// Appends one complete NAL unit.
    fn add_nal(&mut self, nal: &[u8]) -> Result<(), DropReason> {
        if self.au.frag.is_some() {
            // A fragmented NAL unit's end never came, with no gap.
            return Err(DropReason::Truncated);
        }
        self.check_nal(nal)?;
        self.reserve(4 + nal.len())?;
        // `reserve` bounded the length by MAX_ACCESS_UNIT_SIZE.
        self.au.buf.put_u32(nal.len() as u32);
        self.au.buf.put_slice(nal);
        Ok(())
    }

    /// A NAL unit header that may appear in the bitstream: forbidden bit
    /// clear, and a type that is not an RTP packet type (H.264 0, 24..=31;
    /// H.265 48..=50) nor, for H.265, a temporal id of 0.
    fn check_nal(&self, nal: &[u8]) -> Result<(), DropReason> {
        match (self.syntax, nal) {
            (_, []) | (Syntax::H265, [_]) => Err(DropReason::Truncated),
            (_, [h, ..]) if h & 0x80 != 0 => Err(DropReason::Corrupt),
            (Syntax::H264, [h, ..]) if matches!(h264_nal_type(*h), 0 | 24..=31) => {
                Err(DropReason::Corrupt)
            }
            (Syntax::H265, [h0, h1, ..])
                if h1 & 0x07 == 0 || matches!(h265_nal_type(*h0), 48..=50) =>
            {
                Err(DropReason::Corrupt)
            }
            _ => Ok(()),
        }
    }

    /// Aggregation packet body (STAP-A, RFC 6184 §5.7.1; AP, RFC 7798
    /// §4.4.2): NAL units each preceded by a 16-bit size.
    fn add_aggregate(&mut self, mut body: &[u8]) -> Result<(), DropReason> {
        if body.is_empty() {
            return Err(DropReason::Truncated);
        }
        while !body.is_empty() {
            let Some((len, rest)) = body.split_first_chunk::<2>() else {
                return Err(DropReason::Truncated);
            };
            let Some((nal, rest)) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))
            else {
                return Err(DropReason::Truncated);
            };
            self.add_nal(nal)?;
            body = rest;
        }
        Ok(())
    }

    /// One fragment (FU-A, RFC 6184 §5.8; FU, RFC 7798 §4.4.3): `header`
    /// the rebuilt NAL unit header, `data` this fragment's share.
    fn add_fragment(
        &mut self,
        header: &[u8],
        start: bool,
        end: bool,
        data: &[u8],
    ) -> Result<(), DropReason> {
        if start && end {
            // Both bits set is forbidden (RFC 6184 §5.8, RFC 7798 §4.4.3).
            return Err(DropReason::Corrupt);
        }
        if start {
            if self.au.frag.is_some() {
                return Err(DropReason::Truncated);
            }
            self.check_nal(header)?;
            self.reserve(4 + header.len() + data.len())?;
            self.au.frag = Some(self.au.buf.len());
            self.au.buf.put_u32(0);
            self.au.buf.put_slice(header);
            self.au.buf.put_slice(data);
        } else {
            let Some(at) = self.au.frag else {
                return Err(DropReason::MidFragment);
            };
            self.reserve(data.len())?;
            self.au.buf.put_slice(data);
            if end {
                self.au.frag = None;
                let len = self.au.buf.len() - at - 4;
                // Bounded by MAX_ACCESS_UNIT_SIZE.
                let prefix = (len as u32).to_be_bytes();
                if let Some(p) = self.au.buf.get_mut(at..at + 4) {
                    p.copy_from_slice(&prefix);
                }
            }
        }
        Ok(())
    }

    fn add_payload(&mut self, payload: &[u8]) -> Result<(), DropReason> {
        match self.syntax {
            Syntax::H264 => {
                let Some((&hdr, body)) = payload.split_first() else {
                    return Err(DropReason::Truncated);
                };
                if hdr & 0x80 != 0 {
                    return Err(DropReason::Corrupt);
                }
                match h264_nal_type(hdr) {
                    1..=23 => self.add_nal(payload),
                    24 => {
                        if self.au.frag.is_some() {
                            return Err(DropReason::Truncated);
                        }
                        self.add_aggregate(body)
                    }
                    28 => {
                        let Some((&fu, data)) = body.split_first() else {
                            return Err(DropReason::Truncated);
                        };
                        let nal_hdr = (hdr & 0xe0) | h264_nal_type(fu);
                        self.add_fragment(&[nal_hdr], fu & 0x80 != 0, fu & 0x40 != 0, data)
                    }
                    // STAP-B, MTAP16/24, FU-B: packetization-mode 2 only;
                    // 0, 30, 31: reserved.
                    _ => Err(DropReason::Corrupt),
                }
            }
            Syntax::H265 => {
                let [h0, h1, ..] = *payload else {
                    return Err(DropReason::Truncated);
                };
                let body = payload.get(2..).unwrap_or_default();
                match h265_nal_type(h0) {
                    48 => {
                        if self.au.frag.is_some() {
                            return Err(DropReason::Truncated);
                        }
                        self.check_nal(&[h0 & !(0x3f << 1), h1])?;
                        self.add_aggregate(body)
                    }
                    49 => {
                        let Some((&fu, data)) = body.split_first() else {
                            return Err(DropReason::Truncated);
                        };
                        let nal_hdr = [(h0 & 0x81) | ((fu & 0x3f) << 1), h1];
                        self.add_fragment(&nal_hdr, fu & 0x80 != 0, fu & 0x40 != 0, data)
                    }
                    50 => Err(DropReason::Unsupported),
                    _ => self.add_nal(payload),
                }
            }
        }
    }

    fn nal_type(&self, nal: &[u8]) -> u8 {
        let b = nal.first().copied().unwrap_or(0);
        match self.syntax {
            Syntax::H264 => h264_nal_type(b),
            Syntax::H265 => h265_nal_type(b),
        }
    }

    fn is_vcl(&self, t: u8) -> bool {
        match self.syntax {
            Syntax::H264 => (1..=5).contains(&t),
            Syntax::H265 => h265_is_vcl(t),
        }
    }

    /// Whether a VCL NAL unit is its picture's first slice: H.264
    /// `first_mb_in_slice` = 0 (its ue(v) code is a single 1 bit, §7.3.3),
    /// H.265 `first_slice_segment_in_pic_flag` (§7.3.6.1). Data partitions
    /// B and C (H.264 types 3, 4) have no slice header and count as first.
    fn is_first_slice(&self, nal: &[u8]) -> bool {
        match self.syntax {
            Syntax::H264 if matches!(nal.first().map(|&b| h264_nal_type(b)), Some(1 | 2 | 5)) => {
                nal.get(1).is_some_and(|b| b & 0x80 != 0)
            }
            Syntax::H264 => true,
            Syntax::H265 => nal.get(2).is_some_and(|b| b & 0x80 != 0),
        }
    }

    /// Ends the open access unit: hands it out, drops it, or carries its
    /// parameter sets forward.
    fn finish(&mut self, out: &mut VecDeque<Output>) {
        let au = std::mem::take(&mut self.au);
        let Some(timestamp) = au.timestamp else {
            return;
        };
        let mut drop = |this: &mut H26x, reason| {
            this.need_keyframe = true;
            out.push_back(Output::Dropped { timestamp, reason });
        };
        if let Some(reason) = au.broken {
            return drop(self, reason);
        }
        if au.frag.is_some() {
            return drop(self, DropReason::Truncated);
        }
        let mut buf = std::mem::take(&mut self.carried);
        if buf.len() + au.buf.len() > MAX_ACCESS_UNIT_SIZE {
            return drop(self, DropReason::TooLarge);
        }
        buf.extend_from_slice(&au.buf);
        let data = buf.freeze();

        let mut first_vcl: Option<&[u8]> = None;
        let mut keyframe = false;
        // Only complete NAL units were written, so there is no framing error.
        for nal in avcc_nal_units(&data).map_while(Result::ok) {
            let t = self.nal_type(nal);
            if self.is_vcl(t) {
                first_vcl.get_or_insert(nal);
                keyframe |= match self.syntax {
                    Syntax::H264 => h264_is_idr(t),
                    Syntax::H265 => h265_is_irap(t),
                };
            }
        }
        let Some(first_vcl) = first_vcl else {
            // No picture: carried into the next access unit (bounded).
            if data.len() <= MAX_CARRIED {
                self.carried = BytesMut::from(&data[..]);
            }
            return;
        };
        if au.after_gap && !self.is_first_slice(first_vcl) {
            return drop(self, DropReason::Loss);
        }
        let first_type = self.nal_type(first_vcl);
        let rasl = self.syntax == Syntax::H265 && h265_is_rasl(first_type);
        if keyframe {
            if self.syntax == Syntax::H265 {
                // RASL pictures after a CRA are decodable only if decoding
                // started before it; after a BLA never (H.265 §8.1.3).
                let bla = (16..=18).contains(&first_type);
                self.skip_rasl = bla || (self.need_keyframe && first_type == H265_NAL_CRA);
            }
            self.need_keyframe = false;
        } else if self.need_keyframe || (rasl && self.skip_rasl) {
            out.push_back(Output::Dropped {
                timestamp,
                reason: DropReason::NoReference,
            });
            return;
        }
        let new_param_sets = self.update_params(&data);
        out.push_back(Output::Frame(AccessUnit {
            timestamp,
            data,
            keyframe,
            leading_skippable: rasl,
            new_param_sets,
        }));
    }

    /// Records the access unit's parameter sets; returns all known ones if
    /// any is new or changed.
    fn update_params(&mut self, data: &Bytes) -> Option<ParamSets> {
        let mut changed = false;
        for nal in avcc_nal_units(data).map_while(Result::ok) {
            let slot = match (self.syntax, self.nal_type(nal)) {
                (Syntax::H264, H264_NAL_SPS) | (Syntax::H265, H265_NAL_SPS) => &mut self.params.sps,
                (Syntax::H264, H264_NAL_PPS) | (Syntax::H265, H265_NAL_PPS) => &mut self.params.pps,
                (Syntax::H265, H265_NAL_VPS) => &mut self.params.vps,
                _ => continue,
            };
            if slot.as_deref() != Some(nal) {
                *slot = Some(data.slice_ref(nal));
                changed = true;
            }
        }
        changed.then(|| self.params.clone())
    }
}
