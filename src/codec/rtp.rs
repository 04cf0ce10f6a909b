//! RTP fixed header writing (RFC 3550 §5.1) into one preallocated buffer.

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
