//! Length-prefixed (AVCC/HVCC) NAL unit framing (ISO/IEC 14496-15) and
//! the one bit reader every bitstream parser of this module uses.

use std::iter::FusedIterator;
use std::num::NonZeroUsize;

use h264_reader::rbsp::{BitReader, BitReaderError, ByteReader};

use super::PayloadError;

/// Why a parameter set, slice header or AudioSpecificConfig could not be
/// read: truncated, a forbidden value, or a corrupt emulation prevention
/// sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ParamError {
    /// The structure being read, e.g. `H.264 SPS`.
    pub what: &'static str,
    pub reason: String,
}

impl ParamError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        ParamError {
            what,
            reason: reason.into(),
        }
    }

    /// Adapter for `map_err` on the bit reader's results.
    pub(crate) fn bits(what: &'static str) -> impl Fn(BitReaderError) -> ParamError {
        move |e| {
            let reason = match e {
                BitReaderError::ReaderErrorFor(field, io) => format!("at {field}: {io}"),
                BitReaderError::ExpGolombTooLarge(field) => {
                    format!("at {field}: Exp-Golomb code longer than 32 bits")
                }
                other => format!("{other:?}"),
            };
            ParamError::new(what, reason)
        }
    }
}

/// The bit reader over a NAL unit's RBSP: `header_len` header bytes (1 for
/// H.264, 2 for H.265) skipped and emulation prevention bytes (`00 00 03`,
/// H.264 §7.4.1, H.265 §7.4.2) removed on the fly. This (h264-reader's, the
/// one retina uses) is the only bit reader in rtspgate; Exp-Golomb reads
/// (H.264 §9.1) come with its [`h264_reader::rbsp::BitRead`] trait.
pub(crate) fn rbsp_reader(nal: &[u8], header_len: NonZeroUsize) -> BitReader<ByteReader<&[u8]>> {
    BitReader::new(ByteReader::skipping_bytes(nal, header_len))
}

/// The same bit reader over plain bytes (no emulation prevention), e.g. an
/// AudioSpecificConfig.
pub(crate) fn plain_reader(data: &[u8]) -> BitReader<&[u8]> {
    BitReader::new(data)
}

/// Iterates the NAL units of a frame in which each NAL unit is preceded by a
/// 4-byte big-endian length (ISO/IEC 14496-15 §5.3.2 `NALUnitLength` with
/// `lengthSizeMinusOne = 3`; the same framing for H.264 and H.265).
///
/// Yields each NAL unit (header byte(s) first, no prefix) as a sub-slice of
/// `data`; no copying. Yields one [`PayloadError::Malformed`] and then stops
/// if a length prefix is truncated, is zero, or runs past the end of `data`.
/// An empty `data` yields nothing.
pub fn avcc_nal_units(data: &[u8]) -> AvccNalUnits<'_> {
    AvccNalUnits { rest: data }
}

/// The NAL units of an Annex B byte stream (ITU-T H.264 / H.265 Annex B:
/// each NAL unit after a `00 00 01` or `00 00 00 01` start code), as
/// sub-slices of `data` without the start codes; trailing zero bytes of a
/// NAL unit (`trailing_zero_8bits`) are cut; empty units are skipped.
pub fn annexb_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &(_, body)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&(sc, _)| sc);
        let mut unit = &data[body..end];
        while let [head @ .., 0] = unit {
            unit = head;
        }
        if !unit.is_empty() {
            out.push(unit);
        }
    }
    out
}

/// Iterator returned by [`avcc_nal_units`].
#[derive(Clone, Debug)]
pub struct AvccNalUnits<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AvccNalUnits<'a> {
    type Item = Result<&'a [u8], PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Some(Err(PayloadError::Malformed(format!(
                "frame ends inside a 4-byte NAL unit length prefix ({} bytes left)",
                rest.len()
            ))));
        };
        let len = u32::from_be_bytes(*len);
        if len == 0 {
            return Some(Err(PayloadError::Malformed(
                "zero-length NAL unit".to_owned(),
            )));
        }
        let Some((nal, tail)) = usize::try_from(len)
            .ok()
            .and_then(|len| tail.split_at_checked(len))
        else {
            return Some(Err(PayloadError::Malformed(format!(
                "NAL unit length {len} exceeds the {} bytes left in the frame",
                tail.len()
            ))));
        };
        self.rest = tail;
        Some(Ok(nal))
    }
}

impl FusedIterator for AvccNalUnits<'_> {}

#[cfg(test)]
mod tests {
    use h264_reader::rbsp::BitRead;

    use super::*;

    #[test]
    fn rbsp_reader_skips_header_and_emulation_prevention() {
        // Header 0x67, then 00 00 03 01: the 03 is not payload.
        let nal = [0x67, 0x00, 0x00, 0x03, 0x01];
        let mut r = rbsp_reader(&nal, NonZeroUsize::MIN);
        assert_eq!(r.read::<u32>(24, "x").unwrap(), 1);
        // Exp-Golomb: 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3.
        let mut r = plain_reader(&[0b1010_0110, 0b0100_0000]);
        for want in 0..4 {
            assert_eq!(r.read_ue("x").unwrap(), want);
        }
        let e = r
            .read_ue("x")
            .map_err(ParamError::bits("test"))
            .unwrap_err();
        assert_eq!(e.what, "test");
    }

    #[test]
    fn avcc_iterates_and_rejects_bad_framing() {
        let data = [0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41];
        let nals: Vec<_> = avcc_nal_units(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(nals, vec![&[0x65, 1][..], &[0x41][..]]);
        assert_eq!(avcc_nal_units(&[]).count(), 0);

        for bad in [
            &[0, 0, 0][..],                   // truncated prefix
            &[0, 0, 0, 0, 0x65][..],          // zero length
            &[0, 0, 0, 5, 0x65, 1][..],       // runs past the end
            &[0, 0, 0, 1, 0x65, 0, 0][..],    // good NAL then truncated prefix
            &[0xff, 0xff, 0xff, 0xff, 1][..], // huge length
        ] {
            let items: Vec<_> = avcc_nal_units(bad).collect();
            assert!(
                matches!(items.last(), Some(Err(PayloadError::Malformed(_)))),
                "{bad:02x?}: {items:?}"
            );
            assert!(items[..items.len() - 1].iter().all(|i| i.is_ok()));
        }
    }
}

#[cfg(test)]
mod annexb_tests {
    use super::annexb_nal_units;

    #[test]
    fn annexb_units_split_on_both_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 0, 7,
        ];
        assert_eq!(
            annexb_nal_units(&data),
            [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 0, 7][..]]
        );
        assert!(annexb_nal_units(&[0, 0, 1]).is_empty());
        assert!(annexb_nal_units(&[]).is_empty());
    }
}
