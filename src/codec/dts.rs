//! Decoding timestamps of H.264/H.265 video whose source carries
//! presentation timestamps only (RTP: RFC 6184 §5.1 and RFC 7798 §4.1 give
//! each access unit its sampling, i.e. presentation, instant).
//!
//! With B-frames the decoding order differs from the output order, and a
//! fMP4 sample needs both times (ISO/IEC 14496-12 §8.6.1: decode time and
//! composition offset). A decoder that may hold `R` pictures back
//! (`max_num_reorder_frames`, H.264 §E.2.1; `sps_max_num_reorder_pics`,
//! H.265 §7.4.3.2.1) outputs, once it has decoded picture `n`, the picture
//! at output position `n - R`: at most `R` pictures precede any picture in
//! decoding order and follow it in output order, so that picture is always
//! decoded by then. Its presentation time is therefore the earliest time
//! picture `n` can be decoded at and still be shown on time, and is taken
//! as `n`'s decoding timestamp: the same timestamps as muxers of the
//! encoder's own output give (x264's, ffmpeg's).
//!
//! Output order is the order of the pictures' order counts (POC: H.264
//! §8.2.1, H.265 §8.3.1), read from each picture's first slice header. The
//! first `R` pictures after a (re)start have no such earlier picture: they
//! are spaced one frame duration apart before the first one.
//!
//! The approach follows MediaMTX's DTS extractors (bluenviron/mediacommon
//! `h264/dts_extractor.go`, `h265/dts_extractor.go`), which also derive
//! decoding times from the POC and the reorder depth, here with a bounded
//! queue of the pending pictures' presentation times instead of an assumed
//! constant frame rate.

use super::h264::{H264PocType, H264SliceOrder, H264SliceReader};
use super::h265::{h265_first_slice, h265_is_irap, H265Pps, H265SliceOrder, H265Sps};
use super::track::{Codec, ParamSummary, Track};

/// The largest reorder depth used (H.264 §A.3.1 and H.265 §A.4.2 bound the
/// decoded picture buffer to 16 frames).
const MAX_REORDER: u32 = 16;

/// Derives decoding timestamps for one H.264 or H.265 track from its
/// parameter sets, each access unit and its presentation timestamp. See
/// the module docs.
///
/// Guarantees, for every input (garbage included, without panicking):
/// - a track without reordering (reorder depth 0: H.264 `pic_order_cnt_type`
///   2, Baseline, `max_num_reorder_frames` 0; H.265
///   `sps_max_num_reorder_pics` 0; audio; parameters that do not parse)
///   gets `dts == pts` exactly. So does an H.264 track whose SPS does not
///   declare `max_num_reorder_frames` (many cameras' Main/High streams
///   without B-frames), until a picture comes out of order: from there on
///   the level's bound (`MaxDpbFrames`) is the depth, and that one
///   picture's `dts` steps back (a one-time re-base of the timeline);
/// - otherwise `dts <= pts`, and `dts` strictly increases from one access
///   unit to the next, unless a `pts` falls to or below the previous `dts`
///   (a clock that jumps back, not reordering): then the extractor starts
///   over from that access unit, as at a stream start, and the bus's
///   timeline re-bases the jump.
///
/// A slice header that does not parse (or an access unit without one)
/// orders pictures by their presentation timestamps until the next IDR
/// (H.264) or IRAP (H.265) picture.
///
/// New parameter sets or a new source session need a new extractor.
#[derive(Debug)]
pub struct DtsExtractor {
    order: Order,
    /// `R`: how many pictures the decoder may hold back.
    reorder: usize,
    /// Nominal frame duration in clock units (from the SPS VUI timing; 25
    /// fps when absent), for the first `R` pictures after a start.
    frame_duration: i64,
    /// Pictures decoded but not yet output: (POC period, order key, pts).
    /// At most `reorder + 1` entries.
    pending: Vec<(u64, i64, i64)>,
    /// Pictures since the last start, up to `reorder`.
    since_start: usize,
    /// Presentation timestamp of the first picture since the last start.
    anchor: i64,
    prev_dts: Option<i64>,
    /// Counts POC restarts (IDR, H.264 MMCO 5, H.265 IRAP with
    /// `NoRaslOutputFlag`), so that order keys compare across them.
    period: u64,
    /// The POC is unknown until the next IDR/IRAP: order by pts.
    pts_order: bool,
    /// An H.264 SPS without `max_num_reorder_frames` (only the level's
    /// bound, `MaxDpbFrames`): `dts = pts` (`reorder` 0) until a picture
    /// comes out of order, then this depth.
    undeclared: Option<usize>,
    /// While `undeclared`: the largest order key so far.
    max_key: Option<(u64, i64)>,
}

/// The codec-specific part: how a picture's order count is found.
#[derive(Debug)]
enum Order {
    /// No reordering: `dts = pts`.
    None,
    H264(Box<H264Poc>),
    H265(Box<H265Poc>),
}

/// H.264 order count state (§8.2.1): of the previous reference picture for
/// type 0, of the previous picture for type 1.
struct H264Poc {
    reader: H264SliceReader,
    prev_msb: i64,
    prev_lsb: i64,
    prev_frame_num: u32,
    prev_frame_num_offset: i64,
}

impl std::fmt::Debug for H264Poc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Poc")
            .field("poc_type", self.reader.poc_type())
            .field("prev_msb", &self.prev_msb)
            .field("prev_lsb", &self.prev_lsb)
            .finish_non_exhaustive()
    }
}

/// H.265 order count state (§8.3.1): `PicOrderCntMsb` and
/// `slice_pic_order_cnt_lsb` of the previous `TemporalId` 0 picture that
/// is not a RASL, RADL or sub-layer non-reference picture.
#[derive(Debug)]
struct H265Poc {
    sps: H265Sps,
    pps: H265Pps,
    prev_tid0: Option<(i64, i64)>,
}

impl DtsExtractor {
    /// An extractor for `track`, from its parameter sets (the SPS summary
    /// and, for slice headers, the SPS and PPS NAL units). Tracks that do
    /// not reorder, or whose parameters do not parse, pass `pts` through.
    pub fn new(track: &Track) -> Self {
        let clock = i64::from(track.clock_rate.max(1));
        let frame_duration = track
            .frame_rate
            .filter(|f| f.is_finite() && *f >= 1.0 && *f <= 1000.0)
            .map_or(clock / 25, |f| (clock as f64 / f).round() as i64)
            .max(1);
        let depth = track.summary.as_ref().and_then(ParamSummary::max_reorder);
        let (order, reorder) = match (&track.codec, &track.summary) {
            (Codec::H264 { sps, pps }, Some(ParamSummary::H264(_))) => {
                match H264SliceReader::new(sps, pps) {
                    Some(reader) if *reader.poc_type() != H264PocType::DecodeOrder => {
                        let poc = H264Poc {
                            reader,
                            prev_msb: 0,
                            prev_lsb: 0,
                            prev_frame_num: 0,
                            prev_frame_num_offset: 0,
                        };
                        // An SPS whose level says nothing: the largest DPB.
                        (Order::H264(Box::new(poc)), depth.unwrap_or(MAX_REORDER))
                    }
                    _ => (Order::None, 0),
                }
            }
            (Codec::H265 { pps, .. }, Some(ParamSummary::H265(sps))) => match H265Pps::parse(pps) {
                Some(pps) => {
                    let poc = H265Poc {
                        sps: sps.clone(),
                        pps,
                        prev_tid0: None,
                    };
                    (Order::H265(Box::new(poc)), sps.max_reorder)
                }
                None => (Order::None, 0),
            },
            _ => (Order::None, 0),
        };
        let reorder = reorder.min(MAX_REORDER) as usize;
        let undeclared = match &track.summary {
            Some(ParamSummary::H264(s)) if s.max_reorder_inferred => Some(reorder),
            _ => None,
        };
        DtsExtractor {
            order: if reorder == 0 { Order::None } else { order },
            reorder: if undeclared.is_some() { 0 } else { reorder },
            undeclared: undeclared.filter(|&r| r > 0),
            max_key: None,
            frame_duration,
            pending: Vec::with_capacity(reorder + 1),
            since_start: 0,
            anchor: 0,
            prev_dts: None,
            period: 0,
            pts_order: false,
        }
    }

    /// The reorder depth in pictures in use; 0 means `dts == pts`.
    pub fn reorder_depth(&self) -> usize {
        self.reorder
    }

    /// The decoding timestamp of `access_unit` (NAL units with 4-byte
    /// length prefixes, ISO/IEC 14496-15, in decoding order as received)
    /// presented at `pts`; both in the track's clock units (90 kHz for
    /// video).
    pub fn extract(&mut self, access_unit: &[u8], pts: i64) -> i64 {
        if self.reorder == 0 && self.undeclared.is_none() {
            return pts;
        }
        let (period, key) = self.order_key(access_unit, pts);
        if let Some(depth) = self.undeclared {
            // (Keys compare only while they are order counts.)
            let out_of_order = self.max_key.is_some_and(|m| (period, key) < m);
            if out_of_order && !self.pts_order {
                // The first picture output before an earlier-decoded one:
                // the stream reorders after all. Start over here (the
                // timeline re-bases this one step back).
                tracing::debug!(depth, "pictures reorder; deriving DTS");
                self.undeclared = None;
                self.reorder = depth;
                self.pending.clear();
                self.since_start = 0;
                self.prev_dts = None;
            } else {
                if !self.pts_order {
                    self.max_key = self.max_key.max(Some((period, key)));
                }
                return pts;
            }
        }
        if self.since_start == 0 {
            self.anchor = pts;
        }
        self.pending.push((period, key, pts));
        let candidate = if self.pending.len() > self.reorder {
            // The earliest pending picture in output order is shown now.
            let earliest = self
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, (p, k, _))| (*p, *k))
                .map(|(i, _)| i);
            earliest.map_or(pts, |i| self.pending.swap_remove(i).2)
        } else {
            // Fewer than R pictures before this one since the start.
            let missing = self.reorder.saturating_sub(self.since_start) as i64;
            self.anchor
                .saturating_sub(missing.saturating_mul(self.frame_duration))
        };
        self.since_start = self.since_start.saturating_add(1).min(self.reorder);
        let dts = match self.prev_dts.map(|p| p.saturating_add(1)) {
            Some(floor) if floor > pts => {
                // The presentation clock went back past the decoding one:
                // start over here.
                tracing::debug!(pts, floor, "pts below the decoding clock; restarting DTS");
                self.pending.clear();
                self.pending.push((period, key, pts));
                self.since_start = 1.min(self.reorder);
                self.anchor = pts;
                pts.saturating_sub((self.reorder as i64).saturating_mul(self.frame_duration))
            }
            Some(floor) => candidate.min(pts).max(floor),
            None => candidate.min(pts),
        };
        self.prev_dts = Some(dts);
        dts
    }

    /// The picture's place in output order: its POC within the current POC
    /// period, or its pts while the POC is unknown.
    fn order_key(&mut self, access_unit: &[u8], pts: i64) -> (u64, i64) {
        let found = match &mut self.order {
            Order::None => None,
            Order::H264(poc) => poc.reader.first_slice(access_unit).map(|s| {
                let restart = s.idr;
                let value = (!self.pts_order || restart).then(|| poc.order_count(&s));
                (restart || s.mmco5, value)
            }),
            Order::H265(poc) => h265_first_slice(access_unit, &poc.sps, &poc.pps).map(|s| {
                let irap = h265_is_irap(s.nal_type);
                let value = (!self.pts_order || irap).then(|| poc.order_count(&s, self.pts_order));
                let restart = value.is_some_and(|(_, restart)| restart);
                (restart, value.map(|(v, _)| v))
            }),
        };
        match found {
            Some((restart, Some(value))) => {
                if restart || self.pts_order {
                    self.period = self.period.wrapping_add(1);
                    self.pts_order = false;
                }
                (self.period, value)
            }
            Some((_, None)) => (self.period, pts),
            None => {
                if !self.pts_order {
                    tracing::debug!("no slice header to order by; ordering by pts until the next random access point");
                    self.pts_order = true;
                    // The pictures of this period still pending compare by
                    // pts from now on, as the following ones do.
                    for (period, key, pts) in &mut self.pending {
                        if *period == self.period {
                            *key = *pts;
                        }
                    }
                }
                (self.period, pts)
            }
        }
    }
}

impl H264Poc {
    /// `PicOrderCnt` of the picture (H.264 §8.2.1: the smaller of the two
    /// field order counts of a frame), updating the state for the next.
    /// A picture with MMCO 5 (§8.2.1: its order count becomes 0 after
    /// decoding) starts a new period, like an IDR.
    fn order_count(&mut self, s: &H264SliceOrder) -> i64 {
        let delta0 = i64::from(s.delta[0]);
        let delta1 = i64::from(s.delta[1]);
        let (top, bottom) = match self.reader.poc_type() {
            H264PocType::Lsb { log2_max_lsb } => {
                // §8.2.1.1.
                let max = 1i64 << (*log2_max_lsb).min(16);
                let (prev_msb, prev_lsb) = if s.idr {
                    (0, 0)
                } else {
                    (self.prev_msb, self.prev_lsb)
                };
                let lsb = i64::from(s.poc_lsb);
                let msb = if lsb < prev_lsb && prev_lsb - lsb >= max / 2 {
                    prev_msb.saturating_add(max)
                } else if lsb > prev_lsb && lsb - prev_lsb > max / 2 {
                    prev_msb.saturating_sub(max)
                } else {
                    prev_msb
                };
                if s.nal_ref_idc != 0 {
                    (self.prev_msb, self.prev_lsb) = if s.mmco5 { (0, 0) } else { (msb, lsb) };
                }
                let top = msb.saturating_add(lsb);
                match s.field {
                    None => (top, top.saturating_add(delta0)),
                    Some(_) => (top, top),
                }
            }
            H264PocType::FrameNum {
                offset_for_non_ref_pic,
                offset_for_top_to_bottom_field,
                offsets_for_ref_frame,
            } => {
                // §8.2.1.2.
                let max_frame_num = 1i64 << self.reader.log2_max_frame_num().min(16);
                let offset = if s.idr {
                    0
                } else if self.prev_frame_num > s.frame_num {
                    self.prev_frame_num_offset.saturating_add(max_frame_num)
                } else {
                    self.prev_frame_num_offset
                };
                (self.prev_frame_num, self.prev_frame_num_offset) = if s.mmco5 {
                    (0, 0)
                } else {
                    (s.frame_num, offset)
                };
                let cycle_len = offsets_for_ref_frame.len() as i64;
                let mut abs = if cycle_len != 0 {
                    offset.saturating_add(i64::from(s.frame_num))
                } else {
                    0
                };
                if s.nal_ref_idc == 0 && abs > 0 {
                    abs -= 1;
                }
                let mut expected = 0i64;
                if abs > 0 && cycle_len > 0 {
                    let cycles = (abs - 1) / cycle_len;
                    let in_cycle = ((abs - 1) % cycle_len) as usize;
                    let per_cycle = offsets_for_ref_frame
                        .iter()
                        .fold(0i64, |a, &o| a.saturating_add(i64::from(o)));
                    expected = cycles.saturating_mul(per_cycle).saturating_add(
                        offsets_for_ref_frame
                            .iter()
                            .take(in_cycle.saturating_add(1))
                            .fold(0i64, |a, &o| a.saturating_add(i64::from(o))),
                    );
                }
                if s.nal_ref_idc == 0 {
                    expected = expected.saturating_add(i64::from(*offset_for_non_ref_pic));
                }
                let t2b = i64::from(*offset_for_top_to_bottom_field);
                let top = expected.saturating_add(delta0);
                match s.field {
                    None => (top, top.saturating_add(t2b).saturating_add(delta1)),
                    Some(false) => (top, top),
                    Some(true) => {
                        let b = expected.saturating_add(t2b).saturating_add(delta0);
                        (b, b)
                    }
                }
            }
            // Not built for type 2 (no reordering).
            H264PocType::DecodeOrder => (0, 0),
        };
        if s.mmco5 {
            // After decoding, the picture's order count is 0 (§8.2.1).
            return 0;
        }
        top.min(bottom)
    }
}

impl H265Poc {
    /// `PicOrderCntVal` of the picture (H.265 §8.3.1) and whether it
    /// restarts the order count (an IRAP picture with `NoRaslOutputFlag`:
    /// IDR, BLA, or a CRA that `first` is true for: the first picture after
    /// a start or a loss of order), updating the state for the next.
    fn order_count(&mut self, s: &H265SliceOrder, first: bool) -> (i64, bool) {
        let max = 1i64 << self.sps.log2_max_poc_lsb.min(16);
        let lsb = i64::from(s.poc_lsb);
        let restart = h265_is_irap(s.nal_type)
            && (matches!(s.nal_type, 16..=20) || first || self.prev_tid0.is_none());
        let msb = match self.prev_tid0 {
            Some((prev_msb, prev_lsb)) if !restart => {
                if lsb < prev_lsb && prev_lsb - lsb >= max / 2 {
                    prev_msb.saturating_add(max)
                } else if lsb > prev_lsb && lsb - prev_lsb > max / 2 {
                    prev_msb.saturating_sub(max)
                } else {
                    prev_msb
                }
            }
            _ => 0,
        };
        // RADL (6, 7), RASL (8, 9) and sub-layer non-reference pictures
        // (even types up to 14) do not anchor the next derivation.
        let sub_layer_non_ref = s.nal_type <= 14 && s.nal_type.is_multiple_of(2);
        let anchors = !(matches!(s.nal_type, 6..=9) || sub_layer_non_ref);
        if s.temporal_id == 0 && anchors {
            self.prev_tid0 = Some((msb, lsb));
        }
        (msb.saturating_add(lsb), restart)
    }
}

#[cfg(test)]
pub(crate) mod tests;
