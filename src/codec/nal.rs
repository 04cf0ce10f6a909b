//! Length-prefixed (AVCC/HVCC) NAL unit framing, ISO/IEC 14496-15.

use std::iter::FusedIterator;

use super::PayloadError;

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
    use super::*;

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
