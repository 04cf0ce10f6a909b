//! RTP fixed header writing (RFC 3550 §5.1) into one preallocated buffer,
//! and reading of received packets ([`parse_rtp`]).

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the fixed RTP header we write: no CSRCs, no extension, no padding.
pub const RTP_HEADER_LEN: usize = 12;

/// Writes the RTP packets of one frame into a single buffer allocated up
/// front, handing each finished packet to `out` as a [`Bytes`] view of it.
///
/// The caller computes the exact total size first, so no packet causes a
/// reallocation; each packet is then `split().freeze()`-ed off the front.
pub(crate) struct PacketSink<'a> {
    buf: BytesMut,
    out: &'a mut Vec<Bytes>,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    /// Bytes announced to `new` and not yet written, to check the size plan.
    budget: usize,
}

impl<'a> PacketSink<'a> {
    /// `total_len`: exact sum of the sizes (header included) of all packets
    /// that will be written; `packets`: their number.
    pub(crate) fn new(
        out: &'a mut Vec<Bytes>,
        total_len: usize,
        packets: usize,
        payload_type: u8,
        ssrc: u32,
        seq: u16,
    ) -> Self {
        out.reserve(packets);
        PacketSink {
            buf: BytesMut::with_capacity(total_len),
            out,
            payload_type,
            ssrc,
            seq,
            budget: total_len,
        }
    }

    /// Starts a packet: writes its 12-byte header with the next sequence
    /// number. The payload is then appended with [`Self::put`] and the packet
    /// closed with [`Self::finish`].
    pub(crate) fn start(&mut self, marker: bool, timestamp: u32) {
        debug_assert!(self.buf.is_empty(), "start() while a packet is open");
        // V=2, P=0, X=0, CC=0.
        self.buf.put_u8(0x80);
        self.buf
            .put_u8(if marker { 0x80 } else { 0 } | (self.payload_type & 0x7f));
        self.buf.put_u16(self.seq);
        self.buf.put_u32(timestamp);
        self.buf.put_u32(self.ssrc);
        self.seq = self.seq.wrapping_add(1);
    }

    /// Appends payload bytes to the open packet.
    #[inline]
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Closes the open packet and appends it to `out`.
    pub(crate) fn finish(&mut self) {
        debug_assert!(self.buf.len() >= RTP_HEADER_LEN, "finish() without start()");
        debug_assert!(
            self.buf.len() <= self.budget,
            "frame larger than its precomputed size"
        );
        self.budget = self.budget.saturating_sub(self.buf.len());
        let pkt = self.buf.split().freeze();
        self.out.push(pkt);
    }

    /// Ends the frame; returns the sequence number the next packet will carry.
    pub(crate) fn done(self) -> u16 {
        debug_assert!(self.buf.is_empty(), "done() while a packet is open");
        debug_assert_eq!(self.budget, 0, "frame smaller than its precomputed size");
        self.seq
    }
}

/// A received RTP packet's header fields and payload (RFC 3550 §5.1):
/// CSRCs and the header extension (§5.3.1) are stepped over and padding
/// (§5.1 P bit) removed. `None` for anything that is not an RTP version 2
/// packet whose lengths add up; never panics. `loss` is 0: the receiver
/// counts gaps from sequence numbers.
pub fn parse_rtp(packet: &[u8]) -> Option<(u8, super::RtpPacket<'_>)> {
    let first = *packet.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let second = *packet.get(1)?;
    let sequence_number = u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]);
    let timestamp = u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?);
    let csrcs = usize::from(first & 0x0f);
    let mut start = 12usize.checked_add(csrcs.checked_mul(4)?)?;
    if first & 0x10 != 0 {
        let ext = packet.get(start..start.checked_add(4)?)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        start = start.checked_add(4)?.checked_add(words.checked_mul(4)?)?;
    }
    let mut end = packet.len();
    if first & 0x20 != 0 {
        let pad = usize::from(*packet.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = packet.get(start..end)?;
    Some((
        second & 0x7f,
        super::RtpPacket {
            sequence_number,
            timestamp,
            marker: second & 0x80 != 0,
            payload,
            loss: 0,
        },
    ))
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn headers_extensions_and_padding() {
        // V=2, X=1, CC=1, M=1 PT=96, seq 7, ts 9000, SSRC, 1 CSRC,
        // extension of 1 word, payload "ab", P=1 with 2 bytes of padding.
        let mut p = vec![0xb1, 0xe0, 0, 7, 0, 0, 0x23, 0x28, 1, 2, 3, 4, 5, 6, 7, 8];
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        p.extend_from_slice(b"ab");
        p.extend_from_slice(&[0, 2]);
        let (pt, pkt) = parse_rtp(&p).expect("valid");
        assert_eq!(pt, 96);
        assert_eq!(
            (pkt.sequence_number, pkt.timestamp, pkt.marker, pkt.payload),
            (7, 9000, true, &b"ab"[..])
        );
    }

    #[test]
    fn lengths_that_do_not_add_up_are_refused() {
        assert!(parse_rtp(&[]).is_none());
        assert!(parse_rtp(&[0x80, 0x60, 0, 1]).is_none());
        // Version 1.
        assert!(parse_rtp(&[0x40; 12]).is_none());
        // 15 CSRCs announced, none there.
        assert!(parse_rtp(&[0x8f, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        // Padding longer than the packet.
        assert!(parse_rtp(&[0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_none());
        // An empty payload is a packet (NAT keepalives).
        assert!(parse_rtp(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_some());
    }
}
