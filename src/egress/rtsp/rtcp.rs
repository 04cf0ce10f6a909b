//! RTCP sender reports (RFC 3550 §6.4.1) for RTSP readers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `time` as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
pub fn ntp_timestamp(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A compound RTCP packet: a sender report with no report blocks followed by
/// an SDES chunk with a CNAME (RFC 3550 §6.1 requires the CNAME).
///
/// `ntp` is the wall-clock time matching `rtp_timestamp` (same instant, in
/// the track's clock units); `packets`/`octets` count RTP packets and payload
/// bytes sent to this reader on this SSRC.
pub fn sender_report(
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packets: u32,
    octets: u32,
    cname: &str,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(28 + 12 + cname.len());
    // SR: V=2, P=0, RC=0, PT=200, length=6 (32-bit words minus one).
    p.extend_from_slice(&[0x80, 200, 0, 6]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&ntp.to_be_bytes());
    p.extend_from_slice(&rtp_timestamp.to_be_bytes());
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&octets.to_be_bytes());
    // SDES: V=2, SC=1, PT=202; chunk = SSRC, CNAME item, END, padded to 32 bits.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + cname.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    let words = (4 + padded) / 4 - 1;
    p.extend_from_slice(&[0x81, 202]);
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.push(1); // CNAME
    p.push(cname.len() as u8);
    p.extend_from_slice(cname);
    p.resize(p.len() + (padded - chunk_len) + 1, 0);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_parses_with_retina() {
        let ntp = ntp_timestamp(UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
        let pkt = sender_report(0x1234_5678, ntp, 90_000, 10, 1000, "rtspgate");
        assert_eq!(pkt.len() % 4, 0);
        let (first, rest) = retina::rtcp::PacketRef::parse(&pkt).expect("valid SR");
        let (sdes, rest) = retina::rtcp::PacketRef::parse(rest).expect("valid SDES");
        assert!(rest.is_empty());
        assert_eq!(sdes.payload_type(), 202);
        let sr = first.as_sender_report().expect("SR first").expect("parsed");
        assert_eq!(sr.ssrc(), 0x1234_5678);
        assert_eq!(sr.rtp_timestamp(), 90_000);
        assert_eq!(sr.ntp_timestamp().0, ntp);
    }
}
