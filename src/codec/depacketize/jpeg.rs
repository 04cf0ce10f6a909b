//! JPEG as RFC 2435: the scan data of one image over packets (by fragment
//! offset), rebuilt into a complete baseline JFIF image: SOI, the
//! quantization tables (from Q, RFC 2435 Appendix A, or in band), DRI for
//! types 64..=127, SOF0, the standard Huffman tables (ITU-T T.81 K.3,
//! Appendix B), SOS, the scan, EOI.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::{AccessUnit, DropReason, Output, RtpPacket, MAX_ACCESS_UNIT_SIZE};

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
        if !buf.ends_with(&[0xff, 0xd9]) {
            buf.put_slice(&[0xff, 0xd9]);
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
        let subsampling = match m.kind & !64 {
            0 => 0x21,
            1 => 0x22,
            _ => return Err(DropReason::Unsupported),
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
        p.put_slice(&[0xff, 0xd8]); // SOI
        for (i, t) in [luma, chroma].into_iter().enumerate() {
            let pq = u8::from(t.len() == 128);
            p.put_slice(&[0xff, 0xdb]); // DQT
            p.put_u16(3 + t.len() as u16);
            p.put_u8(pq << 4 | i as u8);
            p.put_slice(t);
        }
        if dri != 0 {
            p.put_slice(&[0xff, 0xdd, 0, 4]); // DRI
            p.put_u16(dri);
        }
        p.put_slice(&[0xff, 0xc0, 0, 17, 8]); // SOF0, 8-bit samples
        p.put_u16(m.height);
        p.put_u16(m.width);
        p.put_slice(&[3, 0, subsampling, 0, 1, 0x11, 1, 2, 0x11, 1]);
        for (class, id, lens, syms) in [
            (0u8, 0u8, &LUM_DC_CODELENS, &LUM_DC_SYMBOLS[..]),
            (1, 0, &LUM_AC_CODELENS, &LUM_AC_SYMBOLS[..]),
            (0, 1, &CHM_DC_CODELENS, &CHM_DC_SYMBOLS[..]),
            (1, 1, &CHM_AC_CODELENS, &CHM_AC_SYMBOLS[..]),
        ] {
            p.put_slice(&[0xff, 0xc4]); // DHT
            p.put_u16(3 + 16 + syms.len() as u16);
            p.put_u8(class << 4 | id);
            p.put_slice(lens);
            p.put_slice(syms);
        }
        // SOS: 3 components, tables 0/0, 1/1, 1/1; spectral 0..63.
        p.put_slice(&[0xff, 0xda, 0, 12, 3, 0, 0, 1, 0x11, 2, 0x11, 0, 63, 0]);
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
