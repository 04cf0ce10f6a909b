//! JPEG (ITU-T T.81) as MJPEG cameras send it: the one parser of the
//! complete JFIF images the bus carries ([`JpegImage`]: frame header,
//! quantization tables, restart interval, scan), the facts RTP JPEG (RFC
//! 2435) builds on (the types' chroma subsampling, the standard Huffman
//! tables of T.81 Annex K), and the RFC 2435 payloader. The reverse
//! direction (RTP to JFIF) is `depacketize/jpeg.rs`, which reads its tables
//! and markers from here.

use bytes::Bytes;

use super::{PayloadError, RtpParams, RTP_HEADER_LEN};

/// Marker codes (T.81 Table B.1), the byte after `0xFF`.
pub(crate) const SOI: u8 = 0xd8;
pub(crate) const EOI: u8 = 0xd9;
/// Baseline DCT frame header.
pub(crate) const SOF0: u8 = 0xc0;
/// Extended sequential DCT, Huffman coding.
pub(crate) const SOF1: u8 = 0xc1;
pub(crate) const DHT: u8 = 0xc4;
pub(crate) const DQT: u8 = 0xdb;
pub(crate) const DRI: u8 = 0xdd;
pub(crate) const SOS: u8 = 0xda;

/// The largest width or height RFC 2435 can describe: 255 blocks of 8
/// pixels (§3.1.5, §3.1.6).
pub const RTP_JPEG_MAX_DIMENSION: u16 = 2040;

/// Chroma subsampling of the two RTP JPEG types (RFC 2435 §4.1): three
/// components, Cb and Cr sampled 1x1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegSampling {
    /// Type 0: luma 2x1 (4:2:2).
    Yuv422,
    /// Type 1: luma 2x2 (4:2:0).
    Yuv420,
}

impl JpegSampling {
    /// The RFC 2435 type (0 or 1); 64 more with restart markers (§3.1.7).
    pub fn rtp_type(self) -> u8 {
        match self {
            JpegSampling::Yuv422 => 0,
            JpegSampling::Yuv420 => 1,
        }
    }

    /// The sampling of RFC 2435 type `rtp_type` (0, 1, 64, 65); `None` for
    /// the other types, which have no standard meaning.
    pub fn from_rtp_type(rtp_type: u8) -> Option<JpegSampling> {
        match rtp_type & !64 {
            0 => Some(JpegSampling::Yuv422),
            1 => Some(JpegSampling::Yuv420),
            _ => None,
        }
    }

    /// The luma component's `Hi`/`Vi` byte of the frame header (T.81
    /// B.2.2): horizontal factor in the high nibble.
    pub fn luma_factors(self) -> u8 {
        match self {
            JpegSampling::Yuv422 => 0x21,
            JpegSampling::Yuv420 => 0x22,
        }
    }
}

/// One Huffman table as a DHT segment carries it (T.81 B.2.4.2).
pub(crate) struct HuffmanTable {
    /// `Tc`: 0 DC, 1 AC.
    pub(crate) class: u8,
    /// `Th`: 0 luma, 1 chroma.
    pub(crate) id: u8,
    /// `Li`: codes of each length 1..=16.
    pub(crate) lengths: &'static [u8; 16],
    pub(crate) symbols: &'static [u8],
}

/// The tables of T.81 K.3 (luma DC), K.5 (luma AC), K.4 (chroma DC) and
/// K.6 (chroma AC): the ones RFC 2435 images are coded with (its Appendix
/// B), in the order a JFIF header lists them.
pub(crate) const STANDARD_HUFFMAN: [HuffmanTable; 4] = [
    HuffmanTable {
        class: 0,
        id: 0,
        lengths: &LUM_DC_CODELENS,
        symbols: &LUM_DC_SYMBOLS,
    },
    HuffmanTable {
        class: 1,
        id: 0,
        lengths: &LUM_AC_CODELENS,
        symbols: &LUM_AC_SYMBOLS,
    },
    HuffmanTable {
        class: 0,
        id: 1,
        lengths: &CHM_DC_CODELENS,
        symbols: &CHM_DC_SYMBOLS,
    },
    HuffmanTable {
        class: 1,
        id: 1,
        lengths: &CHM_AC_CODELENS,
        symbols: &CHM_AC_SYMBOLS,
    },
];

/// Why a JPEG image cannot be read, or not sent as RTP JPEG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    /// Not a well-formed JPEG image: no SOI, a segment running past the
    /// end, no frame header or scan.
    #[error("malformed JPEG image: {0}")]
    Malformed(String),
    /// A valid image RFC 2435 cannot carry (progressive, 4:4:4, custom
    /// Huffman tables, larger than 2040x2040, ...).
    #[error("JPEG image RTP cannot carry (RFC 2435): {0}")]
    Unsupported(String),
}

impl From<JpegError> for PayloadError {
    fn from(e: JpegError) -> Self {
        match e {
            JpegError::Malformed(m) => PayloadError::Malformed(format!("JPEG: {m}")),
            JpegError::Unsupported(m) => PayloadError::Unsupported(format!("JPEG: {m}")),
        }
    }
}

fn malformed(what: &str) -> JpegError {
    JpegError::Malformed(what.to_owned())
}

/// One quantization table as DQT carries it (T.81 B.2.4.1): 64 values in
/// zigzag order, one byte each, or two (big-endian) when `sixteen_bit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantTable<'a> {
    pub sixteen_bit: bool,
    pub values: &'a [u8],
}

/// One component of the frame header (T.81 B.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Component {
    id: u8,
    /// `Hi` in the high nibble, `Vi` in the low.
    factors: u8,
    /// `Tqi`: quantization table 0..=3.
    table: u8,
}

/// What a JPEG image says of itself, read from its markers up to the end of
/// its first scan (ITU-T T.81 Annex B). Nothing is trusted: every length is
/// checked against the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JpegImage<'a> {
    /// The frame header's marker (`0xC0` baseline, `0xC1` extended, `0xC2`
    /// progressive, ...).
    pub sof: u8,
    /// Sample precision in bits (8 or 12).
    pub precision: u8,
    /// Width and height in pixels (the frame header's `X`, `Y`; a height
    /// of 0 means it comes later in a DNL segment).
    pub width: u16,
    pub height: u16,
    components: Vec<Component>,
    /// Quantization tables by destination `Tq` 0..=3, the last defined.
    tables: [Option<QuantTable<'a>>; 4],
    /// `Ri` of the DRI segment: MCUs per restart interval, 0 for none.
    pub restart_interval: u16,
    /// Every DHT table is T.81 K.3-K.6's for its class and destination.
    standard_huffman: bool,
    /// `Csj` and `Tdj`/`Taj` of the first scan's components (T.81 B.2.3).
    scan_components: Vec<(u8, u8)>,
    /// The first scan's entropy-coded data (restart markers included), up to
    /// the marker that ends it (EOI for a baseline image) or the end of the
    /// data.
    pub scan: &'a [u8],
}

impl<'a> JpegImage<'a> {
    /// Reads `data`, a JPEG image from SOI, up to the end of its first scan.
    ///
    /// Errors: [`JpegError::Malformed`] when it does not start with SOI, a
    /// segment is shorter than its fields or runs past the end, or there is
    /// no frame header (SOFn) before the first scan (SOS).
    pub fn parse(data: &'a [u8]) -> Result<JpegImage<'a>, JpegError> {
        let Some(([0xff, SOI], mut rest)) = data.split_first_chunk::<2>() else {
            return Err(malformed("it does not start with SOI (FF D8)"));
        };
        let mut frame: Option<(u8, &[u8])> = None;
        let mut tables = [None; 4];
        let mut restart_interval = 0;
        let mut standard_huffman = true;
        loop {
            // Fill bytes (0xFF) may precede a marker (T.81 B.1.1.2).
            let skip = rest.iter().take_while(|&&b| b == 0xff).count();
            if skip == 0 {
                return Err(malformed("bytes between segments where a marker should be"));
            }
            let Some((&marker, after)) = rest.get(skip..).and_then(<[u8]>::split_first) else {
                return Err(malformed("it ends before its scan"));
            };
            // Markers without a segment (T.81 B.1.1.3): TEM, RSTn, SOI.
            if marker == 0x01 || (0xd0..=SOI).contains(&marker) {
                rest = after;
                continue;
            }
            if marker == EOI {
                return Err(malformed("EOI before any scan"));
            }
            let Some((len, after)) = after.split_first_chunk::<2>() else {
                return Err(malformed("a segment without its length"));
            };
            let len = usize::from(u16::from_be_bytes(*len));
            let Some((body, after)) = len.checked_sub(2).and_then(|n| after.split_at_checked(n))
            else {
                return Err(malformed("a segment runs past the end of the image"));
            };
            rest = after;
            match marker {
                DQT => read_dqt(body, &mut tables)?,
                DHT => standard_huffman &= dht_is_standard(body)?,
                DRI => {
                    let Some(ri) = body.first_chunk::<2>() else {
                        return Err(malformed("a DRI segment shorter than 2 bytes"));
                    };
                    restart_interval = u16::from_be_bytes(*ri);
                }
                // SOF0..=SOF15 but DHT (C4), JPG (C8) and DAC (CC).
                0xc0..=0xcf if !matches!(marker, DHT | 0xc8 | 0xcc) => {
                    frame = Some((marker, body));
                }
                SOS => {
                    let Some((sof, header)) = frame else {
                        return Err(malformed("a scan before the frame header"));
                    };
                    return Self::finish(
                        sof,
                        header,
                        body,
                        rest,
                        tables,
                        restart_interval,
                        standard_huffman,
                    );
                }
                // APPn, COM, DNL, ...: nothing RTP or a reader needs.
                _ => {}
            }
        }
    }

    fn finish(
        sof: u8,
        header: &[u8],
        sos: &[u8],
        scan: &'a [u8],
        tables: [Option<QuantTable<'a>>; 4],
        restart_interval: u16,
        standard_huffman: bool,
    ) -> Result<JpegImage<'a>, JpegError> {
        // P, Y, X, Nf, then Nf * (Ci, Hi/Vi, Tqi).
        let Some(([precision, y0, y1, x0, x1, nf], comps)) = header.split_first_chunk::<6>() else {
            return Err(malformed("a frame header shorter than 6 bytes"));
        };
        let components: Vec<Component> = comps
            .chunks_exact(3)
            .take(usize::from(*nf))
            .filter_map(|c| match *c {
                [id, factors, table] => Some(Component { id, factors, table }),
                _ => None,
            })
            .collect();
        if components.len() != usize::from(*nf) || *nf == 0 {
            return Err(malformed(
                "a frame header with fewer components than it counts",
            ));
        }
        let Some((&ns, sos_comps)) = sos.split_first() else {
            return Err(malformed("an empty scan header"));
        };
        let scan_components: Vec<(u8, u8)> = sos_comps
            .chunks_exact(2)
            .take(usize::from(ns))
            .filter_map(|c| match *c {
                [id, tables] => Some((id, tables)),
                _ => None,
            })
            .collect();
        if scan_components.len() != usize::from(ns) || ns == 0 {
            return Err(malformed(
                "a scan header with fewer components than it counts",
            ));
        }
        Ok(JpegImage {
            sof,
            precision: *precision,
            width: u16::from_be_bytes([*x0, *x1]),
            height: u16::from_be_bytes([*y0, *y1]),
            components,
            tables,
            restart_interval,
            standard_huffman,
            scan_components,
            scan: scan.get(..scan_len(scan)).unwrap_or(scan),
        })
    }

    /// Width and height in pixels; `None` when either is 0.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        (self.width > 0 && self.height > 0).then(|| (u32::from(self.width), u32::from(self.height)))
    }

    /// What RFC 2435 sends of this image, or why it cannot: 8-bit
    /// sequential DCT with Huffman coding (SOF0, or SOF1 used as baseline),
    /// Y, Cb, Cr with luma 2x1 or 2x2 and chroma 1x1 (types 0 and 1,
    /// §4.1), Cb and Cr sharing one quantization table, the standard
    /// Huffman tables (DC/AC table 0 for luma, 1 for chroma; Appendix B),
    /// at most [`RTP_JPEG_MAX_DIMENSION`] pixels each way.
    pub fn rtp(&self) -> Result<RtpJpeg<'a>, JpegError> {
        let unsupported = |why: String| Err(JpegError::Unsupported(why));
        if !matches!(self.sof, SOF0 | SOF1) || self.precision != 8 {
            return unsupported(format!(
                "only 8-bit baseline images (SOF0) are sent; this one has SOF marker {:#04X} \
                 with {}-bit samples",
                self.sof, self.precision
            ));
        }
        let (y, cb, cr) = match self.components[..] {
            [y, cb, cr] => (y, cb, cr),
            _ => {
                return unsupported(format!(
                    "{} components (RTP JPEG carries Y, Cb, Cr)",
                    self.components.len()
                ))
            }
        };
        let sampling = match (y.factors, cb.factors, cr.factors) {
            (0x21, 0x11, 0x11) => JpegSampling::Yuv422,
            (0x22, 0x11, 0x11) => JpegSampling::Yuv420,
            (l, b, r) => {
                return unsupported(format!(
                    "sampling factors Y {l:02X}, Cb {b:02X}, Cr {r:02X} \
                     (RTP JPEG carries Y 21 or 22 with chroma 11: 4:2:2 or 4:2:0)"
                ))
            }
        };
        if cb.table != cr.table {
            return unsupported("Cb and Cr use different quantization tables".to_owned());
        }
        let table = |c: Component| {
            self.tables
                .get(usize::from(c.table))
                .copied()
                .flatten()
                .ok_or_else(|| malformed("a component's quantization table is not defined"))
        };
        let (luma, chroma) = (table(y)?, table(cb)?);
        if self.scan_components != [(y.id, 0x00), (cb.id, 0x11), (cr.id, 0x11)]
            || !self.standard_huffman
        {
            return unsupported(
                "the image is not coded with the standard Huffman tables (luma 0, chroma 1); \
                 set the camera's or encoder's Huffman tables to default (not optimized)"
                    .to_owned(),
            );
        }
        if self.width == 0
            || self.height == 0
            || self.width > RTP_JPEG_MAX_DIMENSION
            || self.height > RTP_JPEG_MAX_DIMENSION
        {
            return unsupported(format!(
                "{}x{} pixels (RTP JPEG carries 1..={RTP_JPEG_MAX_DIMENSION} each way)",
                self.width, self.height
            ));
        }
        if self.scan.is_empty() {
            return Err(malformed("an empty scan"));
        }
        Ok(RtpJpeg {
            sampling,
            // Within 1..=2040, so at most 255 blocks: fits a byte.
            width_blocks: self.width.div_ceil(8) as u8,
            height_blocks: self.height.div_ceil(8) as u8,
            luma,
            chroma,
            restart_interval: self.restart_interval,
            scan: self.scan,
        })
    }
}

/// What the RTP JPEG packets of one image carry (RFC 2435 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpJpeg<'a> {
    pub sampling: JpegSampling,
    /// Width and height in 8-pixel blocks, rounded up (§3.1.5, §3.1.6).
    pub width_blocks: u8,
    pub height_blocks: u8,
    /// Table 0 (luma) and 1 (chroma) of the quantization table header
    /// (§3.1.8).
    pub luma: QuantTable<'a>,
    pub chroma: QuantTable<'a>,
    /// Restart interval; above 0 the type is 64 or 65 (§3.1.7).
    pub restart_interval: u16,
    pub scan: &'a [u8],
}

/// Length of a scan's entropy-coded data: up to the first marker other
/// than a stuffed `FF 00` or a restart marker (T.81 B.1.1.5, F.1.2.3).
fn scan_len(data: &[u8]) -> usize {
    let mut from = 0;
    while let Some(at) = data
        .get(from..)
        .and_then(|d| d.iter().position(|&b| b == 0xff))
        .and_then(|p| p.checked_add(from))
    {
        match data.get(at.saturating_add(1)) {
            Some(0x00 | 0xd0..=0xd7) => from = at.saturating_add(2),
            // Any other marker, fill bytes before one, or a lone FF at the end.
            _ => return at,
        }
    }
    data.len()
}

/// Reads the tables of one DQT segment (T.81 B.2.4.1: `Pq`/`Tq`, then 64
/// values of 1 or 2 bytes, repeated) into `tables`.
fn read_dqt<'a>(
    mut body: &'a [u8],
    tables: &mut [Option<QuantTable<'a>>; 4],
) -> Result<(), JpegError> {
    while let Some((&pq_tq, rest)) = body.split_first() {
        let sixteen_bit = pq_tq >> 4 != 0;
        let len = if sixteen_bit { 128 } else { 64 };
        let Some((values, rest)) = rest.split_at_checked(len) else {
            return Err(malformed("a DQT segment shorter than its tables"));
        };
        let Some(slot) = tables.get_mut(usize::from(pq_tq & 0x0f)) else {
            return Err(malformed("a quantization table destination above 3"));
        };
        *slot = Some(QuantTable {
            sixteen_bit,
            values,
        });
        body = rest;
    }
    Ok(())
}

/// Whether every table of one DHT segment (T.81 B.2.4.2: `Tc`/`Th`, 16
/// counts, the symbols, repeated) is the standard one for its class and
/// destination ([`STANDARD_HUFFMAN`]).
fn dht_is_standard(mut body: &[u8]) -> Result<bool, JpegError> {
    let mut standard = true;
    while let Some((&tc_th, rest)) = body.split_first() {
        let Some((lengths, rest)) = rest.split_first_chunk::<16>() else {
            return Err(malformed("a DHT segment shorter than its code lengths"));
        };
        let count: usize = lengths.iter().map(|&n| usize::from(n)).sum();
        let Some((symbols, rest)) = rest.split_at_checked(count) else {
            return Err(malformed("a DHT segment shorter than its symbols"));
        };
        standard &= STANDARD_HUFFMAN.iter().any(|t| {
            tc_th == (t.class << 4 | t.id) && lengths == t.lengths && symbols == t.symbols
        });
        body = rest;
    }
    Ok(standard)
}

/// Sends one JFIF image as RFC 2435 packets: the main JPEG header (type 0
/// or 1, 64 or 65 with a restart interval, Q = 255, width and height in
/// blocks, fragment offset), the restart marker header in every packet of
/// types 64/65 (F = L = 1, count 0x3FFF: fragments are not aligned to
/// restart intervals, §3.1.7), the quantization table header with the
/// image's luma and chroma tables in the first packet (§3.1.8: Q = 255
/// sends them with every image), then the scan split at the MTU. Marker
/// bit on the last packet (§3).
///
/// Errors: `Malformed`/`Unsupported` from [`JpegImage::parse`] and
/// [`JpegImage::rtp`]; `Unsupported` when the first packet's headers do
/// not fit the MTU or the scan is 16 MiB or more (24-bit offsets).
/// Returns the next sequence number.
pub(crate) fn payload_jpeg(
    data: &[u8],
    timestamp: u32,
    rtp: RtpParams,
    out: &mut Vec<Bytes>,
) -> Result<u16, PayloadError> {
    let image = JpegImage::parse(data)?;
    let j = image.rtp()?;
    let restart = j.restart_interval > 0;
    let main_len = if restart { 8 + 4 } else { 8 };
    let tables_len = 4 + j.luma.values.len() + j.chroma.values.len();
    let (Some(first_room), Some(room)) = (
        rtp.max_payload
            .checked_sub(main_len + tables_len)
            .filter(|&n| n > 0),
        rtp.max_payload.checked_sub(main_len),
    ) else {
        return Err(PayloadError::Unsupported(format!(
            "JPEG: the quantization tables ({tables_len} bytes with their header) do not fit \
             a {}-byte RTP payload",
            rtp.max_payload
        )));
    };
    let scan = j.scan;
    if scan.len() >= 1 << 24 {
        return Err(PayloadError::Unsupported(format!(
            "JPEG: a scan of {} bytes (RTP JPEG fragment offsets are 24-bit)",
            scan.len()
        )));
    }
    let (first, later) = scan.split_at(first_room.min(scan.len()));
    let packets = 1 + later.len().div_ceil(room);
    let total = packets * (RTP_HEADER_LEN + main_len) + tables_len + scan.len();
    let kind = j.sampling.rtp_type() | if restart { 64 } else { 0 };
    let precision = u8::from(j.luma.sixteen_bit) | u8::from(j.chroma.sixteen_bit) << 1;
    let mut sink = rtp.sink(out, total, packets);
    let chunks = std::iter::once(first).chain(later.chunks(room));
    let mut offset = 0usize;
    for (i, chunk) in chunks.enumerate() {
        sink.start(i + 1 == packets, timestamp);
        // Below 2^24 (checked above): the low three bytes are the offset.
        let o = (offset as u32).to_be_bytes();
        sink.put(&[
            0,
            o[1],
            o[2],
            o[3],
            kind,
            255,
            j.width_blocks,
            j.height_blocks,
        ]);
        if restart {
            let ri = j.restart_interval.to_be_bytes();
            sink.put(&[ri[0], ri[1], 0xff, 0xff]);
        }
        if i == 0 {
            // At most 256 bytes of tables: fits the 16-bit length.
            let len = ((tables_len - 4) as u16).to_be_bytes();
            sink.put(&[0, precision, len[0], len[1]]);
            sink.put(j.luma.values);
            sink.put(j.chroma.values);
        }
        sink.put(chunk);
        sink.finish();
        offset += chunk.len();
    }
    Ok(sink.done())
}

// ITU-T T.81 Tables K.3-K.6 (RFC 2435 Appendix B).
const LUM_DC_CODELENS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const LUM_DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUM_AC_CODELENS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const LUM_AC_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const CHM_DC_CODELENS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const CHM_DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const CHM_AC_CODELENS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const CHM_AC_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Depacketizer, Output, Payloader, RtpFormat, RtpPacket, Track};

    /// `ffmpeg -f lavfi -i testsrc2=size=64x48 -frames 1 -pix_fmt yuvj420p
    /// -q:v 5 -huffman default`: 4:2:0, one table for all components.
    const IMG_420: &[u8] = include_bytes!("testdata/jpeg_64x48_420.jpg");
    /// The same with `-threads 3 -slices 3`: a restart interval (DRI 4,
    /// RST markers in the scan), the four Huffman tables in one DHT segment.
    const IMG_420_DRI: &[u8] = include_bytes!("testdata/jpeg_64x48_420_dri.jpg");
    /// `gst-launch-1.0 videotestsrc num-buffers=1 !
    /// video/x-raw,format=Y42B,width=64,height=48 ! jpegenc quality=85`
    /// (libjpeg): 4:2:2 (luma 2x1), tables 0 and 1, the DHT tables one
    /// per segment.
    const IMG_422: &[u8] = include_bytes!("testdata/jpeg_64x48_422.jpg");

    fn payload(image: &[u8], mtu: usize) -> Result<Vec<Bytes>, PayloadError> {
        let mut p = Payloader::new(&Codec::Jpeg, 26, 0x1234, 100, mtu)?;
        let mut out = Vec::new();
        p.payload(image, 9000, true, &mut out)?;
        Ok(out)
    }

    /// Our depacketizer's images from complete RTP packets.
    fn depacketize(packets: &[Bytes]) -> Vec<Output> {
        let mut d = Depacketizer::new(&RtpFormat {
            encoding_name: "JPEG",
            clock_rate: 90_000,
            channels: None,
            fmtp: None,
        })
        .unwrap();
        let mut out = Vec::new();
        for p in packets {
            d.push(RtpPacket {
                sequence_number: u16::from_be_bytes([p[2], p[3]]),
                timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                marker: p[1] & 0x80 != 0,
                payload: &p[RTP_HEADER_LEN..],
                loss: 0,
            });
            out.extend(std::iter::from_fn(|| d.pull()));
        }
        out
    }

    /// The picture ffmpeg decodes from a JPEG image, as raw planes.
    fn ffmpeg_decode(image: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "jpeg_pipe", "-i", "pipe:0"])
            .args(["-f", "rawvideo", "pipe:1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg runs (a real decoder is the test's peer)");
        child.stdin.take().unwrap().write_all(image).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn reads_the_headers_of_each_fixture() {
        let i = JpegImage::parse(IMG_420).unwrap();
        assert_eq!(
            (i.sof, i.precision, i.dimensions()),
            (SOF0, 8, Some((64, 48)))
        );
        assert_eq!(i.restart_interval, 0);
        let r = i.rtp().unwrap();
        assert_eq!(r.sampling, JpegSampling::Yuv420);
        assert_eq!((r.width_blocks, r.height_blocks), (8, 6));
        assert_eq!(r.luma, r.chroma, "one table for all components");
        assert!(IMG_420.ends_with(&[0xff, EOI]));
        assert!(IMG_420[..IMG_420.len() - 2].ends_with(r.scan));

        let r = JpegImage::parse(IMG_420_DRI).unwrap().rtp().unwrap();
        assert_eq!((r.sampling, r.restart_interval), (JpegSampling::Yuv420, 4));
        assert!(r.scan.windows(2).any(|w| w == [0xff, 0xd0]), "RST0 kept");

        let r = JpegImage::parse(IMG_422).unwrap().rtp().unwrap();
        assert_eq!(r.sampling, JpegSampling::Yuv422);
        assert_eq!(r.luma.values.len(), 64);
        assert!(!r.luma.sixteen_bit);
    }

    /// JFIF → our payloader → our depacketizer → an image ffmpeg decodes to
    /// the very pixels of the original, for each type (1, 65, 0).
    #[test]
    fn round_trip_decodes_to_the_same_pixels() {
        for (name, image, kind) in [
            ("420", IMG_420, 1u8),
            ("420 with restarts", IMG_420_DRI, 65),
            ("422", IMG_422, 0),
        ] {
            let packets = payload(image, 300).unwrap();
            assert!(packets.len() > 3, "{name}: fragmented");
            let main = |p: &Bytes| p[RTP_HEADER_LEN..RTP_HEADER_LEN + 8].to_vec();
            let mut offset = 0;
            for (i, p) in packets.iter().enumerate() {
                assert!(p.len() <= 300, "{name}");
                assert_eq!(p[1] & 0x7f, 26);
                assert_eq!(p[1] & 0x80 != 0, i + 1 == packets.len(), "{name}: marker");
                let m = main(p);
                assert_eq!(u32::from_be_bytes([0, m[1], m[2], m[3]]), offset, "{name}");
                assert_eq!(&m[4..], &[kind, 255, 8, 6], "{name}: type, Q, size");
                let mut hdr = RTP_HEADER_LEN + 8;
                if kind >= 64 {
                    // Restart interval 4, F = L = 1, count 0x3FFF (§3.1.7).
                    assert_eq!(&p[hdr..hdr + 4], &[0, 4, 0xff, 0xff]);
                    hdr += 4;
                }
                if i == 0 {
                    // Quantization table header (§3.1.8): two 8-bit tables.
                    assert_eq!(&p[hdr..hdr + 4], &[0, 0, 0, 128], "{name}");
                    hdr += 4 + 128;
                }
                offset += (p.len() - hdr) as u32;
            }
            let out = depacketize(&packets);
            let [Output::Frame(au)] = &out[..] else {
                panic!("{name}: {out:?}")
            };
            assert!(au.keyframe);
            let rebuilt = JpegImage::parse(&au.data).unwrap();
            let original = JpegImage::parse(image).unwrap();
            assert_eq!(rebuilt.scan, original.scan, "{name}");
            assert_eq!(offset as usize, original.scan.len(), "{name}");
            assert_eq!(rebuilt.rtp().unwrap(), original.rtp().unwrap(), "{name}");
            assert_eq!(ffmpeg_decode(&au.data), ffmpeg_decode(image), "{name}");
            // The rebuilt image is sent the same way again.
            assert_eq!(payload(&au.data, 300).unwrap(), packets, "{name}");
        }
    }

    #[test]
    fn what_rtp_jpeg_cannot_carry_is_refused_with_the_reason() {
        let unsupported = |image: &[u8]| match payload(image, 1400) {
            Err(PayloadError::Unsupported(why)) => why,
            other => panic!("{other:?}"),
        };
        let sof = IMG_420.windows(2).position(|w| w == [0xff, SOF0]).unwrap();
        // Progressive.
        let mut img = IMG_420.to_vec();
        img[sof + 1] = 0xc2;
        assert!(unsupported(&img).contains("baseline"));
        // 4:4:4: luma 1x1.
        let mut img = IMG_420.to_vec();
        img[sof + 11] = 0x11;
        assert!(unsupported(&img).contains("sampling factors"));
        // An optimized (non-standard) Huffman table.
        let mut img = IMG_420.to_vec();
        let dht = img.windows(2).position(|w| w == [0xff, DHT]).unwrap();
        img[dht + 5 + 16] ^= 1;
        assert!(unsupported(&img).contains("standard Huffman"));
        // Wider than 2040 pixels.
        let mut img = IMG_420.to_vec();
        img[sof + 7..sof + 9].copy_from_slice(&2048u16.to_be_bytes());
        assert!(unsupported(&img).contains("2048x48"));
        // Tables that do not fit the MTU's first packet.
        match payload(IMG_420, 100) {
            Err(PayloadError::Unsupported(why)) => assert!(why.contains("do not fit"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Not a JPEG image.
        assert!(matches!(
            payload(b"GIF89a", 1400),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            payload(&[], 1400),
            Err(PayloadError::Malformed(_))
        ));
    }

    /// Nothing of the image is trusted: every truncation and every byte
    /// overwritten parse and payload without a panic, and what is sent
    /// fits the MTU.
    #[test]
    fn damaged_images_never_panic() {
        for image in [IMG_420, IMG_420_DRI, IMG_422] {
            for n in 0..image.len() {
                if let Ok(packets) = payload(&image[..n], 200) {
                    assert!(packets.iter().all(|p| p.len() <= 200));
                }
            }
            for i in 0..image.len() {
                for b in [0x00, 0xff, 0xd9, 0x7f] {
                    let mut img = image.to_vec();
                    img[i] = b;
                    if let Ok(packets) = payload(&img, 200) {
                        assert!(packets.iter().all(|p| p.len() <= 200));
                    }
                }
            }
        }
    }

    #[test]
    fn a_jpeg_track_takes_its_dimensions_from_an_image() {
        let track = Track::new(Codec::Jpeg, 90_000);
        assert_eq!((track.dimensions, track.summary.is_none()), (None, true));
        let sized = track.jpeg_dimensions_changed(IMG_422).unwrap();
        assert_eq!(sized.dimensions, Some((64, 48)));
        assert_eq!(sized.jpeg_dimensions_changed(IMG_420), None, "same size");
        assert_eq!(track.jpeg_dimensions_changed(b"not an image"), None);
        let h264 = Track::new(crate::codec::tests::h264_codec(), 90_000);
        assert_eq!(h264.jpeg_dimensions_changed(IMG_420), None);
        assert!(crate::codec::is_random_access(&Codec::Jpeg, IMG_420));
        assert_eq!(Codec::Jpeg.name(), "mjpeg");
        assert_eq!(Codec::Jpeg.kind(), crate::codec::MediaKind::Video);
    }
}
