//! Which session an incoming packet belongs to, on the one port shared by
//! all viewers. Pure: bytes and addresses in, a session id out.
//!
//! RFC 7983 §7: a packet whose first byte is 0..=3 is STUN; its USERNAME
//! attribute starts with our ICE ufrag (RFC 8445 §7.2.2: `LOCAL:REMOTE` from
//! our side), which is unique per session. Everything else (DTLS, SRTP,
//! SRTCP) is matched by the remote transport address that STUN established.
//! Both lookups are hash maps: no scan over sessions.

use std::collections::HashMap;
use std::net::SocketAddr;

/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// USERNAME attribute type (RFC 8489 §14.3).
const ATTR_USERNAME: u16 = 0x0006;
const STUN_HEADER_LEN: usize = 20;

/// Whether `packet` looks like STUN (RFC 7983 §7: first byte 0..=3, and the
/// RFC 8489 magic cookie).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= STUN_HEADER_LEN && packet[0] < 4 && packet[4..8] == MAGIC_COOKIE
}

/// The recipient's ufrag from a STUN message's USERNAME (`"ours:theirs"`):
/// the part before the colon. `None` if not STUN, no USERNAME, or malformed.
pub fn stun_local_ufrag(packet: &[u8]) -> Option<&str> {
    if !is_stun(packet) {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let mut attrs = packet.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if ty == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return Some(username.split(':').next().unwrap_or(username));
        }
        // Attribute values are padded to a multiple of 4 bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(padded..)?;
    }
    None
}

/// Transport of a remote address: the same remote IP and port may be a UDP
/// and a TCP peer at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Session lookup tables. `K` is the session id type.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<(Transport, SocketAddr), K>,
    /// Reverse index so removal does not scan: the addresses each session got.
    addrs_of: HashMap<K, Vec<(Transport, SocketAddr)>>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Demux {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Demux<K> {
    /// Registers a session by its local ICE ufrag.
    pub fn add_session(&mut self, ufrag: &str, id: K) {
        self.by_ufrag.insert(ufrag.to_owned(), id);
        self.addrs_of.entry(id).or_default();
    }

    /// The session a packet from `from` belongs to: by STUN USERNAME if it
    /// is STUN with a known ufrag, else by address.
    pub fn lookup(&self, transport: Transport, from: SocketAddr, packet: &[u8]) -> Option<K> {
        if let Some(ufrag) = stun_local_ufrag(packet) {
            if let Some(&id) = self.by_ufrag.get(ufrag) {
                return Some(id);
            }
        }
        self.by_addr.get(&(transport, from)).copied()
    }

    /// Remembers that `from` belongs to `id` (after a STUN request for it).
    /// A remote address that moved to another session is taken from the old one.
    pub fn learn(&mut self, transport: Transport, from: SocketAddr, id: K) {
        let key = (transport, from);
        match self.by_addr.insert(key, id) {
            Some(old) if old == id => return,
            Some(old) => {
                if let Some(v) = self.addrs_of.get_mut(&old) {
                    v.retain(|a| *a != key);
                }
            }
            None => {}
        }
        self.addrs_of.entry(id).or_default().push(key);
    }

    /// Forgets a session and every address it had.
    pub fn remove_session(&mut self, ufrag: &str, id: K) {
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
        for key in self.addrs_of.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&key) == Some(&id) {
                self.by_addr.remove(&key);
            }
        }
    }

    /// Forgets one address (e.g. a closed TCP connection).
    pub fn forget_addr(&mut self, transport: Transport, from: SocketAddr) {
        let key = (transport, from);
        if let Some(id) = self.by_addr.remove(&key) {
            if let Some(v) = self.addrs_of.get_mut(&id) {
                v.retain(|a| *a != key);
            }
        }
    }

    /// Number of registered sessions and addresses (for tests and metrics).
    pub fn len(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }
}

/// RFC 4571 framing for ICE-TCP (RFC 6544 §3): each packet is preceded by
/// its length as a 16-bit big-endian number. Feed bytes in, get packets out.
#[derive(Debug, Default)]
pub struct Rfc4571Decoder {
    buf: Vec<u8>,
}

impl Rfc4571Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete packet, if one is buffered. A zero-length frame
    /// is skipped.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        loop {
            let len = usize::from(u16::from_be_bytes([*self.buf.first()?, *self.buf.get(1)?]));
            if self.buf.len() < 2 + len {
                return None;
            }
            let packet = self.buf[2..2 + len].to_vec();
            self.buf.drain(..2 + len);
            if len > 0 {
                return Some(packet);
            }
        }
    }

    /// Bytes buffered but not yet a complete packet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Frames one packet for ICE-TCP: 2-byte big-endian length, then the
/// packet. Errors if it is longer than 65535 bytes.
pub fn rfc4571_frame(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(packet.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request with USERNAME `user` and one more attribute.
    pub(crate) fn binding_request(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY first, so USERNAME is not the first attribute.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn ufrag_from_username() {
        let p = binding_request("srvU:cliX");
        assert!(is_stun(&p));
        assert_eq!(stun_local_ufrag(&p), Some("srvU"));
        assert_eq!(stun_local_ufrag(&binding_request("abc")), Some("abc"));
        // Truncated attribute, not STUN, DTLS record.
        assert_eq!(stun_local_ufrag(&p[..p.len() - 6]), None);
        assert_eq!(stun_local_ufrag(&[0x80, 0x60, 0, 1]), None);
        assert_eq!(
            stun_local_ufrag(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        // Length field past the end.
        let mut bad = p.clone();
        bad[3] = 0xff;
        assert_eq!(stun_local_ufrag(&bad), None);
    }

    #[test]
    fn demux_by_ufrag_then_address() {
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let mut d = Demux::default();
        d.add_session("u1", 1u32);
        d.add_session("u2", 2u32);
        assert_eq!(
            d.lookup(Transport::Udp, a, &binding_request("u2:x")),
            Some(2)
        );
        assert_eq!(d.lookup(Transport::Udp, a, &[0x80, 0x60]), None);
        d.learn(Transport::Udp, a, 2);
        d.learn(Transport::Udp, b, 1);
        assert_eq!(d.lookup(Transport::Udp, a, &[0x80, 0x60]), Some(2));
        assert_eq!(d.lookup(Transport::Tcp, a, &[0x80, 0x60]), None);
        // The address moves to session 1.
        d.learn(Transport::Udp, a, 1);
        assert_eq!(d.lookup(Transport::Udp, a, &[22]), Some(1));
        d.remove_session("u1", 1);
        assert_eq!(d.lookup(Transport::Udp, a, &[22]), None);
        assert_eq!(d.lookup(Transport::Udp, b, &[22]), None);
        assert_eq!(d.len(), (1, 0));
        d.learn(Transport::Tcp, b, 2);
        d.forget_addr(Transport::Tcp, b);
        assert_eq!(d.len(), (1, 0));
        d.remove_session("u2", 2);
        assert_eq!(d.len(), (0, 0));
    }

    #[test]
    fn rfc4571_roundtrip_across_reads() {
        let mut dec = Rfc4571Decoder::default();
        let mut wire = rfc4571_frame(b"hello").unwrap();
        wire.extend(rfc4571_frame(b"").unwrap());
        wire.extend(rfc4571_frame(&[9; 300]).unwrap());
        for chunk in wire.chunks(7) {
            dec.push(chunk);
        }
        assert_eq!(dec.next_packet().as_deref(), Some(&b"hello"[..]));
        assert_eq!(dec.next_packet().map(|p| p.len()), Some(300));
        assert_eq!(dec.next_packet(), None);
        assert_eq!(dec.pending(), 0);
        dec.push(&[0, 5, 1]);
        assert_eq!(dec.next_packet(), None);
        assert_eq!(dec.pending(), 3);
        assert!(rfc4571_frame(&vec![0; 70000]).is_none());
    }
}
