//! JPEG as RFC 2435: the scan data of one image over packets (by fragment
//! offset), rebuilt into a complete baseline JFIF image: SOI, the
//! quantization tables (from Q, RFC 2435 Appendix A, or in band), DRI for
//! types 64..=127, SOF0, the standard Huffman tables (ITU-T T.81 K.3,
//! Appendix B), SOS, the scan, EOI. The types' sampling, the Huffman tables
//! and the markers come from `codec/jpeg.rs`, which parses such images and
//! payloads them the other way.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::{AccessUnit, DropReason, Output, RtpPacket, MAX_ACCESS_UNIT_SIZE};
use crate::codec::jpeg::{JpegSampling, DHT, DQT, DRI, EOI, SOF0, SOI, SOS, STANDARD_HUFFMAN};

/// An image being rebuilt.
#[derive(Debug)]
struct Image {
    timestamp: u32,
    /// JFIF headers followed by the scan data received so far.
    buf: BytesMut,
    /// Length of the headers in `buf`: the scan's fragment offset 0.
    header_len: usize,
    broken: Option<DropReason>,
}

#[derive(Debug)]
pub(super) struct Jpeg {
    image: Option<Image>,
    /// In-band tables of Q 128..=254 (RFC 2435 §4.2: a later frame may
    /// send the same Q with Length 0): precision byte and table data.
    tables: Vec<Option<(u8, Bytes)>>,
}

/// The fields of the main JPEG header (RFC 2435 §3.1).
struct Main {
    offset: usize,
    kind: u8,
    q: u8,
    width: u16,
    height: u16,
}

impl Jpeg {
    pub(super) fn new() -> Jpeg {
        Jpeg {
            image: None,
            tables: vec![None; 128],
        }
    }

    pub(super) fn push(&mut self, pkt: &RtpPacket<'_>, gap: bool, out: &mut VecDeque<Output>) {
        if let Some(img) = &mut self.image {
            if img.timestamp != pkt.timestamp {
                // The marker bit of its last packet never came.
                img.broken.get_or_insert(if gap {
                    DropReason::Loss
                } else {
                    DropReason::Truncated
                });
                self.flush(out);
            } else if gap {
                img.broken.get_or_insert(DropReason::Loss);
            }
        }
        if let Err(reason) = self.add(pkt) {
            let img = self.image.get_or_insert_with(|| Image {
                timestamp: pkt.timestamp,
                buf: BytesMut::new(),
                header_len: 0,
                broken: None,
            });
            img.broken.get_or_insert(reason);
            img.buf = BytesMut::new();
        }
        if pkt.marker {
            self.flush(out);
        }
    }

    /// Ends the image being rebuilt: complete only if its marker came
    /// (called on the marker; otherwise with `broken` set).
    pub(super) fn flush(&mut self, out: &mut VecDeque<Output>) {
        let Some(img) = self.image.take() else {
            return;
        };
        let timestamp = img.timestamp;
        if let Some(reason) = img.broken {
            return out.push_back(Output::Dropped { timestamp, reason });
        }
        let mut buf = img.buf;
        if !buf.ends_with(&[0xff, EOI]) {
            buf.put_slice(&[0xff, EOI]);
        }
        out.push_back(Output::Frame(AccessUnit {
            timestamp,
            data: buf.freeze(),
            keyframe: true,
            leading_skippable: false,
            new_param_sets: None,
        }));
    }

    fn add(&mut self, pkt: &RtpPacket<'_>) -> Result<(), DropReason> {
        let Some((main, rest)) = pkt.payload.split_first_chunk::<8>() else {
            return Err(DropReason::Truncated);
        };
        let m = Main {
            offset: usize::from(main[1]) << 16 | usize::from(main[2]) << 8 | usize::from(main[3]),
            kind: main[4],
            q: main[5],
            width: u16::from(main[6]) * 8,
            height: u16::from(main[7]) * 8,
        };
        // Restart marker header (§3.1.7) in every packet of types 64..=127.
        let (dri, rest) = if (64..=127).contains(&m.kind) {
            let Some((rh, rest)) = rest.split_first_chunk::<4>() else {
                return Err(DropReason::Truncated);
            };
            (u16::from_be_bytes([rh[0], rh[1]]), rest)
        } else {
            (0, rest)
        };
        if m.offset == 0 {
            if self.image.as_ref().is_some_and(|i| i.broken.is_some()) {
                // Already dropped (loss earlier in this timestamp).
                return Ok(());
            }
            let (buf, scan) = self.headers(&m, dri, rest)?;
            let header_len = buf.len();
            self.image = Some(Image {
                timestamp: pkt.timestamp,
                buf,
                header_len,
                broken: None,
            });
            return self.append(scan);
        }
        let Some(img) = &self.image else {
            return Err(DropReason::MidFragment);
        };
        if img.broken.is_some() {
            return Ok(());
        }
        if img.buf.len().checked_sub(img.header_len) != Some(m.offset) {
            return Err(DropReason::Corrupt);
        }
        self.append(rest)
    }

    fn append(&mut self, data: &[u8]) -> Result<(), DropReason> {
        let Some(img) = &mut self.image else {
            return Err(DropReason::MidFragment);
        };
        if img.buf.len().saturating_add(data.len()) > MAX_ACCESS_UNIT_SIZE {
            return Err(DropReason::TooLarge);
        }
        img.buf.put_slice(data);
        Ok(())
    }

    /// The JFIF headers of an image from its first packet; returns them
    /// and the scan data that follows the quantization table header.
    fn headers<'p>(
        &mut self,
        m: &Main,
        dri: u16,
        rest: &'p [u8],
    ) -> Result<(BytesMut, &'p [u8]), DropReason> {
        // Types 0 (4:2:2) and 1 (4:2:0), §4.1; 64 and 65 with restarts.
        let Some(sampling) = JpegSampling::from_rtp_type(m.kind) else {
            return Err(DropReason::Unsupported);
        };
        if m.width == 0 || m.height == 0 {
            return Err(DropReason::Corrupt);
        }
        let (precision, table, scan) = match m.q {
            0 | 100..=127 => return Err(DropReason::Corrupt),
            1..=99 => (0, Bytes::copy_from_slice(&make_tables(m.q)), rest),
            _ => {
                // Quantization table header (§3.1.8).
                let Some((qh, rest)) = rest.split_first_chunk::<4>() else {
                    return Err(DropReason::Truncated);
                };
                let precision = qh[1];
                let len = usize::from(u16::from_be_bytes([qh[2], qh[3]]));
                let Some((data, scan)) = rest.split_at_checked(len) else {
                    return Err(DropReason::Truncated);
                };
                let slot = self.tables.get_mut(usize::from(m.q - 128));
                if len > 0 {
                    let t = (precision, Bytes::copy_from_slice(data));
                    if m.q < 255 {
                        if let Some(s) = slot {
                            *s = Some(t.clone());
                        }
                    }
                    (t.0, t.1, scan)
                } else {
                    // Length 0: the tables sent earlier with this Q
                    // (never for Q = 255).
                    match slot.and_then(|s| s.clone()).filter(|_| m.q < 255) {
                        Some((p, t)) => (p, t, scan),
                        None => return Err(DropReason::Unsupported),
                    }
                }
            }
        };
        // Table 0 (luma) then 1 (chroma), 64 bytes each, 128 when 16-bit
        // (precision bit i for table i); a single table serves both.
        let size = |i: u8| if precision & (1 << i) != 0 { 128 } else { 64 };
        let Some((luma, chroma)) = table.split_at_checked(size(0)) else {
            return Err(DropReason::Truncated);
        };
        let chroma = chroma.get(..size(1)).unwrap_or(luma);

        let mut p = BytesMut::with_capacity(1024);
        p.put_slice(&[0xff, SOI]);
        for (i, t) in [luma, chroma].into_iter().enumerate() {
            let pq = u8::from(t.len() == 128);
            p.put_slice(&[0xff, DQT]);
            p.put_u16(3 + t.len() as u16);
            p.put_u8(pq << 4 | i as u8);
            p.put_slice(t);
        }
        if dri != 0 {
            p.put_slice(&[0xff, DRI, 0, 4]);
            p.put_u16(dri);
        }
        p.put_slice(&[0xff, SOF0, 0, 17, 8]); // 8-bit samples
        p.put_u16(m.height);
        p.put_u16(m.width);
        let luma = sampling.luma_factors();
        p.put_slice(&[3, 0, luma, 0, 1, 0x11, 1, 2, 0x11, 1]);
        for t in &STANDARD_HUFFMAN {
            p.put_slice(&[0xff, DHT]);
            p.put_u16(3 + 16 + t.symbols.len() as u16);
            p.put_u8(t.class << 4 | t.id);
            p.put_slice(t.lengths);
            p.put_slice(t.symbols);
        }
        // 3 components, tables 0/0, 1/1, 1/1; spectral 0..63.
        p.put_slice(&[0xff, SOS, 0, 12, 3, 0, 0, 1, 0x11, 2, 0x11, 0, 63, 0]);
        Ok((p, scan))
    }
}

/// The luma and chroma tables (zigzag order) for Q 1..=99 (RFC 2435
/// Appendix A: T.81 Tables K.1 and K.2 scaled as the IJG library does).
fn make_tables(q: u8) -> [u8; 128] {
    let factor = u32::from(q.clamp(1, 99));
    let scale = if factor < 50 {
        5000 / factor
    } else {
        200 - factor * 2
    };
    let mut out = [0u8; 128];
    for (i, &z) in ZIGZAG.iter().enumerate() {
        let l = (u32::from(LUMA_QUANTIZER[z]) * scale + 50) / 100;
        let c = (u32::from(CHROMA_QUANTIZER[z]) * scale + 50) / 100;
        out[i] = l.clamp(1, 255) as u8;
        out[i + 64] = c.clamp(1, 255) as u8;
    }
    out
}

#[rustfmt::skip]
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// ITU-T T.81 Table K.1.
#[rustfmt::skip]
const LUMA_QUANTIZER: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// ITU-T T.81 Table K.2.
#[rustfmt::skip]
const CHROMA_QUANTIZER: [u8; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];
