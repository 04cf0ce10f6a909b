//! MPEG-4 audio as RFC 3640 `mpeg4-generic` (AAC-hbr and AAC-lbr): the AU
//! header section (§3.2.1) with the field lengths of the `fmtp`, several
//! access units per packet, or one access unit fragmented over packets
//! (§3.2.3). Interleaving (a non-zero AU-Index or AU-Index-delta) is not
//! supported: such packets are dropped.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use h264_reader::rbsp::BitRead;

use super::{AccessUnit, DropReason, Fmtp, Output, RtpPacket, Unsupported};
use crate::codec::nal::plain_reader;

/// The largest AU rebuilt from fragments: the AU-size field is at most
/// 16 bits here.
const MAX_AU_SIZE: usize = 1 << 16;

/// AAC frame length in samples when the `fmtp` has no `constantDuration`.
const DEFAULT_DURATION: u32 = 1024;

/// An AU being rebuilt from fragments.
#[derive(Debug)]
struct Fragmented {
    timestamp: u32,
    size: usize,
    buf: BytesMut,
    /// Packets were lost before its first fragment: it may not be its start.
    after_gap: bool,
    /// Will be dropped for this reason; further fragments are ignored.
    broken: Option<DropReason>,
}

#[derive(Debug)]
pub(super) struct Aac {
    size_length: u32,
    index_length: u32,
    index_delta_length: u32,
    cts_delta_length: u32,
    dts_delta_length: u32,
    random_access: bool,
    stream_state_length: u32,
    aux_size_length: u32,
    duration: u32,
    frag: Option<Fragmented>,
}

impl Aac {
    /// RFC 3640 §4.1 parameters. `sizelength` 1..=16 required; every other
    /// length at most 32 bits.
    pub(super) fn new(fmtp: &Fmtp<'_>) -> Result<Aac, Unsupported> {
        match fmtp.get("mode") {
            Some(m) if m.eq_ignore_ascii_case("AAC-hbr") || m.eq_ignore_ascii_case("AAC-lbr") => {}
            Some(m) => return Err(Unsupported(format!("mpeg4-generic mode={m}"))),
            None => return Err(Unsupported("mpeg4-generic without mode".to_owned())),
        }
        let len = |key: &str| -> Result<u32, Unsupported> {
            match fmtp.number(key)?.unwrap_or(0) {
                n @ 0..=32 => Ok(n),
                n => Err(Unsupported(format!("mpeg4-generic {key}={n}"))),
            }
        };
        let size_length = len("sizelength")?;
        if !(1..=16).contains(&size_length) {
            return Err(Unsupported(format!(
                "mpeg4-generic sizelength={size_length} (1..=16 supported)"
            )));
        }
        Ok(Aac {
            size_length,
            index_length: len("indexlength")?,
            index_delta_length: len("indexdeltalength")?,
            cts_delta_length: len("ctsdeltalength")?,
            dts_delta_length: len("dtsdeltalength")?,
            random_access: fmtp.number("randomaccessindication")?.unwrap_or(0) != 0,
            stream_state_length: len("streamstateindication")?,
            aux_size_length: len("auxiliarydatasizelength")?,
            duration: fmtp
                .number("constantduration")?
                .filter(|&d| d > 0)
                .unwrap_or(DEFAULT_DURATION),
            frag: None,
        })
    }

    pub(super) fn push(&mut self, pkt: &RtpPacket<'_>, gap: bool, out: &mut VecDeque<Output>) {
        if let Some(f) = &mut self.frag {
            if f.timestamp != pkt.timestamp {
                let reason = if gap {
                    DropReason::Loss
                } else {
                    DropReason::Truncated
                };
                f.broken.get_or_insert(reason);
                self.flush(out);
            } else if gap {
                f.broken.get_or_insert(DropReason::Loss);
            }
        }
        match self.parse(pkt.payload) {
            Ok((sizes, data)) => self.take(pkt, gap, &sizes, data, out),
            Err(reason) => match &mut self.frag {
                Some(f) => {
                    f.broken.get_or_insert(reason);
                }
                None => out.push_back(Output::Dropped {
                    timestamp: pkt.timestamp,
                    reason,
                }),
            },
        }
        if pkt.marker && self.frag.is_some() {
            self.flush(out);
        }
    }

    /// Ends an AU still being rebuilt: complete or dropped.
    pub(super) fn flush(&mut self, out: &mut VecDeque<Output>) {
        let Some(f) = self.frag.take() else {
            return;
        };
        let reason = f.broken.or_else(|| {
            (f.buf.len() != f.size).then_some(if f.after_gap {
                DropReason::Loss
            } else {
                DropReason::Truncated
            })
        });
        out.push_back(match reason {
            Some(reason) => Output::Dropped {
                timestamp: f.timestamp,
                reason,
            },
            None => frame(f.timestamp, f.buf.freeze()),
        });
    }

    /// The AU sizes and the data after the header and auxiliary sections.
    fn parse<'p>(&self, payload: &'p [u8]) -> Result<(Vec<usize>, &'p [u8]), DropReason> {
        let Some((len, rest)) = payload.split_first_chunk::<2>() else {
            return Err(DropReason::Truncated);
        };
        let header_bits = u32::from(u16::from_be_bytes(*len));
        let Some((headers, rest)) = rest.split_at_checked(header_bits.div_ceil(8) as usize) else {
            return Err(DropReason::Truncated);
        };
        let mut r = plain_reader(headers);
        let mut left = header_bits;
        let mut sizes = Vec::new();
        let bits = |r: &mut _, n: u32, left: &mut u32| -> Result<u32, DropReason> {
            *left = left.checked_sub(n).ok_or(DropReason::Truncated)?;
            read(r, n)
        };
        while left > 0 {
            let size = bits(&mut r, self.size_length, &mut left)?;
            let index_len = if sizes.is_empty() {
                self.index_length
            } else {
                self.index_delta_length
            };
            if bits(&mut r, index_len, &mut left)? != 0 {
                return Err(DropReason::Unsupported);
            }
            for (present, len) in [
                (self.cts_delta_length > 0, self.cts_delta_length),
                (self.dts_delta_length > 0, self.dts_delta_length),
            ] {
                if present && bits(&mut r, 1, &mut left)? == 1 {
                    bits(&mut r, len, &mut left)?;
                }
            }
            bits(&mut r, u32::from(self.random_access), &mut left)?;
            bits(&mut r, self.stream_state_length, &mut left)?;
            if sizes.len() >= 1024 {
                return Err(DropReason::Corrupt);
            }
            sizes.push(size as usize);
        }
        let mut data = rest;
        if self.aux_size_length > 0 {
            let len = data
                .get(..self.aux_size_length.div_ceil(8) as usize)
                .ok_or(DropReason::Truncated)?;
            let aux_bits = read(&mut plain_reader(len), self.aux_size_length)?;
            let skip = (u64::from(self.aux_size_length) + u64::from(aux_bits)).div_ceil(8);
            data = usize::try_from(skip)
                .ok()
                .and_then(|s| data.get(s..))
                .ok_or(DropReason::Truncated)?;
        }
        Ok((sizes, data))
    }

    fn take(
        &mut self,
        pkt: &RtpPacket<'_>,
        gap: bool,
        sizes: &[usize],
        data: &[u8],
        out: &mut VecDeque<Output>,
    ) {
        let timestamp = pkt.timestamp;
        if let Some(f) = &mut self.frag {
            // A continuation: one AU header with the whole AU's size.
            if sizes != [f.size] {
                f.broken.get_or_insert(DropReason::Corrupt);
            } else if f.broken.is_none() {
                if f.buf.len() + data.len() > f.size {
                    f.broken = Some(DropReason::Corrupt);
                } else {
                    f.buf.extend_from_slice(data);
                }
            }
            if f.buf.len() >= f.size {
                self.flush(out);
            }
            return;
        }
        if let [size] = *sizes {
            if size > data.len() {
                // The first fragment of an AU (RFC 3640 §3.2.3).
                if size > MAX_AU_SIZE {
                    return out.push_back(Output::Dropped {
                        timestamp,
                        reason: DropReason::TooLarge,
                    });
                }
                self.frag = Some(Fragmented {
                    timestamp,
                    size,
                    buf: BytesMut::from(data),
                    after_gap: gap,
                    broken: None,
                });
                return;
            }
        }
        let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if total.is_none_or(|t| t > data.len()) {
            return out.push_back(Output::Dropped {
                timestamp,
                reason: DropReason::Truncated,
            });
        }
        let mut rest = data;
        let mut ts = timestamp;
        for &size in sizes {
            let (au, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            out.push_back(if au.is_empty() {
                Output::Dropped {
                    timestamp: ts,
                    reason: DropReason::Corrupt,
                }
            } else {
                frame(ts, Bytes::copy_from_slice(au))
            });
            ts = ts.wrapping_add(self.duration);
        }
    }
}

fn read<R: BitRead>(r: &mut R, n: u32) -> Result<u32, DropReason> {
    if n == 0 {
        return Ok(0);
    }
    r.read::<u32>(n, "AU-header")
        .map_err(|_| DropReason::Truncated)
}

fn frame(timestamp: u32, data: Bytes) -> Output {
    Output::Frame(AccessUnit {
        timestamp,
        data,
        keyframe: true,
        leading_skippable: false,
        new_param_sets: None,
    })
}
