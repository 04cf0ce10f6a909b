//! A raw RTSP reader (tokio): DESCRIBE, SETUP of every track over TCP
//! interleaved or UDP, PLAY, then it records the header of every RTP packet
//! and every RTCP sender report with their arrival times, so a test can
//! count frames, sequence gaps (lost packets), H.264/H.265 aggregation
//! packets and keyframes without parameter sets, and check sender report
//! contents (RFC 3550 §6.4.1). Light enough to run dozens at once on a
//! 2-core machine (no decoding). Over UDP it can send RTCP receiver reports
//! (RFC 3550 §6.4.2) and nothing else, to test sessions kept alive by RTCP
//! alone. No authentication.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Lower transport for RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    Udp,
}

/// How long one RTSP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One received RTP packet (header facts only).
#[derive(Debug, Clone)]
pub struct Pkt {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub ssrc: u32,
    pub pt: u8,
    /// Payload octets (RFC 3550 §6.4.1: header, CSRCs and extension excluded).
    pub payload_len: usize,
    /// Video: this packet starts or carries an IDR/IRAP NAL unit.
    pub key: bool,
    /// H.264/H.265: the NAL unit type in the payload header (H.264 1..=23
    /// a single NAL unit, 24..=27 aggregation, 28/29 FU-A/FU-B; H.265
    /// 0..=47 a single NAL unit, 48 AP, 49 FU); `None` for other encodings.
    pub packet_type: Option<u8>,
    /// H.264/H.265: the types of the NAL units that begin in this packet
    /// (a single NAL unit's, a start fragment's, each aggregated unit's);
    /// empty for continuation fragments and other encodings.
    pub nal_starts: Vec<u8>,
    pub at: Instant,
    pub wall: SystemTime,
}

/// One RTCP sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone)]
pub struct Sr {
    pub ssrc: u32,
    /// 64-bit NTP timestamp (32.32 seconds since 1900).
    pub ntp: u64,
    pub rtp: u32,
    pub packets: u32,
    pub octets: u32,
    pub at: Instant,
    pub wall: SystemTime,
    /// RTP packets and payload octets this reader had received on `ssrc`
    /// when the report arrived.
    pub received_packets: u64,
    pub received_octets: u64,
}

/// What one track's `m=` section said, and what arrived for it.
#[derive(Debug, Clone, Default)]
pub struct TrackRec {
    pub media: String,
    /// rtpmap encoding name, lower case: `h264`, `h265`, `mpeg4-generic`, `opus`, ...
    pub encoding: String,
    pub clock_rate: u32,
    pub control: String,
    pub packets: Vec<Pkt>,
    pub srs: Vec<Sr>,
}

impl TrackRec {
    pub fn is_video(&self) -> bool {
        self.media == "video"
    }

    /// Packets missing between the first and last received (sequence
    /// gaps), and packets that arrived out of order or twice.
    pub fn lost(&self) -> (u64, u64) {
        let mut lost = 0u64;
        let mut disorder = 0u64;
        for w in self.packets.windows(2) {
            let d = w[1].seq.wrapping_sub(w[0].seq);
            if d == 0 || d >= 0x8000 {
                disorder += 1;
            } else {
                lost += u64::from(d - 1);
            }
        }
        (lost, disorder)
    }

    /// Frames whose last packet arrived in `[from, to]`: video packets with
    /// the marker bit (RFC 6184 §5.1), every audio packet (one frame each
    /// from the gateway).
    pub fn frames_between(&self, from: Instant, to: Instant) -> usize {
        self.packets
            .iter()
            .filter(|p| p.at >= from && p.at <= to && (p.marker || !self.is_video()))
            .count()
    }

    /// How much later than its media time a packet arriving in `[from,
    /// to]` came, compared with the earliest: per packet, arrival time
    /// minus RTP timestamp (in seconds, unwrapped from the first packet),
    /// then the 99th percentile minus the minimum. A reader served late
    /// in bursts (a gateway that cannot keep up and queues) shows a large
    /// spread even when no frame is missing. `None` without packets.
    pub fn delay_spread(&self, from: Instant, to: Instant) -> Option<Duration> {
        let first = self.packets.first()?;
        let rate = f64::from(self.clock_rate.max(1));
        let mut d: Vec<f64> = self
            .packets
            .iter()
            .filter(|p| p.at >= from && p.at <= to)
            .map(|p| {
                let media = f64::from(p.ts.wrapping_sub(first.ts) as i32) / rate;
                (p.at - first.at).as_secs_f64() - media
            })
            .collect();
        if d.is_empty() {
            return None;
        }
        d.sort_by(f64::total_cmp);
        let p99 = d[(d.len() - 1) * 99 / 100];
        Some(Duration::from_secs_f64((p99 - d[0]).max(0.0)))
    }

    /// H.264/H.265 aggregation packets received: STAP-A, STAP-B, MTAP16,
    /// MTAP24 ([`H264_AGGREGATION`]) or AP ([`H265_AGGREGATION`]).
    pub fn aggregation_packets(&self) -> usize {
        self.packets
            .iter()
            .filter(|p| match (self.encoding.as_str(), p.packet_type) {
                ("h264", Some(t)) => H264_AGGREGATION.contains(&t),
                ("h265", Some(t)) => t == H265_AGGREGATION,
                _ => false,
            })
            .count()
    }

    /// The access units (runs of packets with one RTP timestamp) that hold
    /// an IDR/IRAP NAL unit, in arrival order, with the NAL units that
    /// began before it in the same access unit.
    pub fn keyframe_access_units(&self) -> Vec<KeyframeAu> {
        let enc = self.encoding.as_str();
        let mut out = Vec::new();
        for (n, au) in self.packets.chunk_by(|a, b| a.ts == b.ts).enumerate() {
            let starts: Vec<u8> = au
                .iter()
                .flat_map(|p| p.nal_starts.iter().copied())
                .collect();
            let Some(k) = starts.iter().position(|t| is_key_nal(enc, *t)) else {
                continue;
            };
            let before_key = starts.get(..k).unwrap_or_default().to_vec();
            let missing = parameter_set_types(enc)
                .iter()
                .filter(|ps| !before_key.contains(ps))
                .copied()
                .collect();
            out.push(KeyframeAu {
                ts: au.first().map_or(0, |p| p.ts),
                before_key,
                missing_parameter_sets: missing,
                first_received: n == 0,
            });
        }
        out
    }

    /// All frames (see [`frames_between`](Self::frames_between)).
    pub fn frames(&self) -> usize {
        self.packets
            .iter()
            .filter(|p| p.marker || !self.is_video())
            .count()
    }
}

/// An access unit holding an IDR (H.264) or IRAP (H.265) NAL unit, as a
/// reader received it.
#[derive(Debug, Clone)]
pub struct KeyframeAu {
    /// The RTP timestamp its packets share (90 kHz clock units).
    pub ts: u32,
    /// Types of the NAL units that began in this access unit before its
    /// first IDR/IRAP NAL unit, in order (an AUD, parameter sets, SEI ...).
    pub before_key: Vec<u8>,
    /// Parameter sets ([`parameter_set_types`]) not among `before_key`.
    pub missing_parameter_sets: Vec<u8>,
    /// Its first packet is the first the reader received: the reader may
    /// have joined in the middle of it.
    pub first_received: bool,
}

/// What a reader recorded.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub tracks: Vec<TrackRec>,
    /// The session id the server gave.
    pub session: String,
    /// When and why the server ended the connection (EOF or error), if it did.
    pub ended: Option<(Instant, String)>,
    /// When PLAY was answered.
    pub playing_since: Option<Instant>,
}

impl Recording {
    pub fn video(&self) -> Option<&TrackRec> {
        self.tracks.iter().find(|t| t.is_video())
    }
    pub fn audio(&self) -> Option<&TrackRec> {
        self.tracks.iter().find(|t| t.media == "audio")
    }
    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        let mut s = format!("session {}", self.session);
        for t in &self.tracks {
            let (lost, disorder) = t.lost();
            s.push_str(&format!(
                "; {} {}: {} packets, {} frames, {} SRs, lost {lost}, out of order {disorder}",
                t.media,
                t.encoding,
                t.packets.len(),
                t.frames(),
                t.srs.len()
            ));
        }
        if let Some((_, why)) = &self.ended {
            s.push_str(&format!("; ended by the server: {why}"));
        }
        s
    }
}

/// Controls a recording reader from outside.
#[derive(Debug, Clone)]
pub struct Control {
    /// Over UDP: send an RTCP receiver report every second while true.
    pub send_rr: Arc<AtomicBool>,
    /// Ends the recording early.
    pub stop: Arc<AtomicBool>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            send_rr: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

enum Media {
    Tcp,
    /// Per track: (RTP socket, RTCP socket, server RTCP address).
    Udp(Vec<(Arc<UdpSocket>, Arc<UdpSocket>, SocketAddr)>),
}

/// A playing session, ready to record.
pub struct Reader {
    conn: TcpStream,
    inbuf: Vec<u8>,
    rec: Recording,
    media: Media,
    url: String,
    cseq: u32,
}

/// An RTSP response: status, headers (lower-case names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits one complete RTSP message off `buf`: `Ok(Some(..))` for a
/// response, interleaved frames are returned as `Err((channel, data))`.
fn take_message(buf: &mut Vec<u8>) -> Option<Result<Resp, (u8, Vec<u8>)>> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return None;
        }
        let ch = buf[1];
        let data = buf[4..4 + len].to_vec();
        buf.drain(..4 + len);
        return Some(Err((ch, data)));
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let body = buf[end + 4..end + 4 + len].to_vec();
    buf.drain(..end + 4 + len);
    Some(Ok(Resp {
        status,
        headers,
        body,
    }))
}

/// Parses the `m=` sections of an SDP: media, encoding, clock rate, control.
fn parse_sdp(sdp: &str) -> Vec<TrackRec> {
    let mut out: Vec<TrackRec> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            out.push(TrackRec {
                media: m.split_whitespace().next().unwrap_or("").to_owned(),
                ..Default::default()
            });
        } else if let Some(t) = out.last_mut() {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let enc = map.split_whitespace().nth(1).unwrap_or("");
                let mut parts = enc.split('/');
                t.encoding = parts.next().unwrap_or("").to_ascii_lowercase();
                t.clock_rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            } else if let Some(c) = line.strip_prefix("a=control:") {
                t.control = c.to_owned();
            }
        }
    }
    out
}

/// H.264 aggregation packet types (RFC 6184 §5.7): STAP-A, STAP-B,
/// MTAP16, MTAP24.
pub const H264_AGGREGATION: [u8; 4] = [24, 25, 26, 27];
/// The H.265 aggregation packet type (RFC 7798 §4.4.2: AP).
pub const H265_AGGREGATION: u8 = 48;

/// The NAL unit type of an H.264 (RFC 6184 §1.3) or H.265 (RFC 7798 §1.1.4)
/// NAL unit header starting at `header`'s first byte.
fn nal_type(hevc: bool, header: u8) -> u8 {
    if hevc {
        (header >> 1) & 0x3f
    } else {
        header & 0x1f
    }
}

/// The NAL units an aggregation payload carries, from `first` (the offset
/// of the first 16-bit size): each unit's type, stopping at a size that
/// runs past the end.
fn aggregated_types(hevc: bool, payload: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = first;
    while let (Some(size), Some(&header)) = (payload.get(i..i + 2), payload.get(i + 2)) {
        let n = usize::from(u16::from_be_bytes([size[0], size[1]]));
        if n == 0 || i + 2 + n > payload.len() {
            break;
        }
        out.push(nal_type(hevc, header));
        i += 2 + n;
    }
    out
}

/// The payload header's NAL unit type and the types of the NAL units that
/// begin in an RTP payload of `encoding` (`h264`: RFC 6184, `h265`: RFC
/// 7798 without DONL): a single NAL unit packet's own type, the inner type
/// of a fragmentation unit with the start bit, each unit of a STAP-A,
/// STAP-B or AP. MTAPs give the packet type and no units. `(None, [])` for
/// other encodings and empty payloads.
fn nal_units(encoding: &str, payload: &[u8]) -> (Option<u8>, Vec<u8>) {
    let hevc = match encoding {
        "h264" => false,
        "h265" => true,
        _ => return (None, Vec::new()),
    };
    let Some(&b0) = payload.first() else {
        return (None, Vec::new());
    };
    let t = nal_type(hevc, b0);
    let starts = match (hevc, t) {
        // STAP-A: sizes right after the header; STAP-B: after a 16-bit DON.
        (false, 24) => aggregated_types(false, payload, 1),
        (false, 25) => aggregated_types(false, payload, 3),
        (false, 26 | 27) => Vec::new(),
        (true, H265_AGGREGATION) => aggregated_types(true, payload, 2),
        // FU-A (H.264 type 28) and FU (H.265 type 49): the FU header's
        // start bit and type.
        (false, 28) | (true, 49) => {
            let fu_header = payload.get(if hevc { 2 } else { 1 });
            fu_header
                .filter(|h| *h & 0x80 != 0)
                .map(|h| vec![if hevc { h & 0x3f } else { h & 0x1f }])
                .unwrap_or_default()
        }
        (false, 29) => Vec::new(),
        _ => vec![t],
    };
    (Some(t), starts)
}

/// Whether a NAL unit of this type is an IDR (H.264 type 5, RFC 6184) or
/// IRAP (H.265 types 16..=21, RFC 7798) picture's.
pub fn is_key_nal(encoding: &str, nal_type: u8) -> bool {
    match encoding {
        "h264" => nal_type == 5,
        "h265" => (16..=21).contains(&nal_type),
        _ => false,
    }
}

/// The parameter set NAL unit types a keyframe needs: H.264 SPS, PPS (7,
/// 8); H.265 VPS, SPS, PPS (32, 33, 34). Empty for other encodings.
pub fn parameter_set_types(encoding: &str) -> &'static [u8] {
    match encoding {
        "h264" => &[7, 8],
        "h265" => &[32, 33, 34],
        _ => &[],
    }
}

/// Parses an RTP packet into a [`Pkt`]; `None` if it is not one.
fn parse_rtp(encoding: &str, p: &[u8], at: Instant, wall: SystemTime) -> Option<Pkt> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let ext = p.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    let payload = p.get(off..end)?;
    let (packet_type, nal_starts) = nal_units(encoding, payload);
    Some(Pkt {
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        marker: p[1] & 0x80 != 0,
        pt: p[1] & 0x7f,
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload_len: payload.len(),
        key: nal_starts.iter().any(|t| is_key_nal(encoding, *t)),
        packet_type,
        nal_starts,
        at,
        wall,
    })
}

impl Recording {
    fn on_rtp(&mut self, track: usize, data: &[u8], at: Instant, wall: SystemTime) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        if let Some(p) = parse_rtp(&t.encoding, data, at, wall) {
            t.packets.push(p);
        }
    }

    fn on_rtcp(&mut self, track: usize, mut data: &[u8], at: Instant, wall: SystemTime) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        // A compound packet: walk the RTCP packets by their length words.
        while data.len() >= 4 {
            let len = 4 * (usize::from(u16::from_be_bytes([data[2], data[3]])) + 1);
            let Some(pkt) = data.get(..len) else { break };
            if pkt[1] == 200 && pkt.len() >= 28 {
                let u32_at =
                    |i: usize| u32::from_be_bytes([pkt[i], pkt[i + 1], pkt[i + 2], pkt[i + 3]]);
                let ssrc = u32_at(4);
                let mine = t.packets.iter().filter(|p| p.ssrc == ssrc);
                let (n, octets) =
                    mine.fold((0u64, 0u64), |(n, o), p| (n + 1, o + p.payload_len as u64));
                t.srs.push(Sr {
                    ssrc,
                    ntp: (u64::from(u32_at(8)) << 32) | u64::from(u32_at(12)),
                    rtp: u32_at(16),
                    packets: u32_at(20),
                    octets: u32_at(24),
                    at,
                    wall,
                    received_packets: n,
                    received_octets: octets,
                });
            }
            data = &data[len..];
        }
    }
}

async fn bind_pair() -> Result<(UdpSocket, UdpSocket), String> {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let p = a.local_addr().map_err(|e| e.to_string())?.port();
        if !p.is_multiple_of(2) || p == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)).await {
            return Ok((a, b));
        }
    }
    Err("no free even/odd UDP port pair".into())
}

impl Reader {
    async fn request(&mut self, method: &str, uri: &str, extra: &[String]) -> Result<Resp, String> {
        self.cseq += 1;
        let mut req = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: rtsp_reader-test\r\n",
            self.cseq
        );
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.conn
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{method}: write: {e}"))?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            while let Some(m) = take_message(&mut self.inbuf) {
                match m {
                    Ok(r) => return Ok(r),
                    Err((ch, data)) => self.on_interleaved(ch, &data),
                }
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline, self.conn.read(&mut chunk))
                .await
                .map_err(|_| format!("{method}: no answer within {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| format!("{method}: read: {e}"))?;
            if n == 0 {
                return Err(format!("{method}: the server closed the connection"));
            }
            self.inbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn on_interleaved(&mut self, ch: u8, data: &[u8]) {
        let (at, wall) = (Instant::now(), SystemTime::now());
        let track = usize::from(ch / 2);
        if ch.is_multiple_of(2) {
            self.rec.on_rtp(track, data, at, wall);
        } else {
            self.rec.on_rtcp(track, data, at, wall);
        }
    }

    /// Connects to `url` (no credentials), DESCRIBEs, SETUPs every track
    /// over `via` and PLAYs.
    pub async fn open(url: &str, via: Via) -> Result<Reader, String> {
        let hostport = url
            .strip_prefix("rtsp://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| format!("bad URL {url}"))?;
        let conn = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(hostport))
            .await
            .map_err(|_| format!("connect {hostport}: timed out"))?
            .map_err(|e| format!("connect {hostport}: {e}"))?;
        let _ = conn.set_nodelay(true);
        let mut r = Reader {
            conn,
            inbuf: Vec::new(),
            rec: Recording::default(),
            media: Media::Tcp,
            url: url.to_owned(),
            cseq: 0,
        };
        let d = r
            .request("DESCRIBE", url, &["Accept: application/sdp".to_owned()])
            .await?;
        if d.status != 200 {
            return Err(format!(
                "DESCRIBE: {} {}",
                d.status,
                String::from_utf8_lossy(&d.body)
            ));
        }
        let base = d
            .header("content-base")
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_owned();
        r.rec.tracks = parse_sdp(&String::from_utf8_lossy(&d.body));
        let mut session: Option<String> = None;
        let mut udp = Vec::new();
        for i in 0..r.rec.tracks.len() {
            let control = r.rec.tracks[i].control.clone();
            let uri = if control.starts_with("rtsp://") {
                control
            } else {
                format!("{base}/{control}")
            };
            let mut pair = None;
            let transport = match via {
                Via::Tcp => format!(
                    "Transport: RTP/AVP/TCP;unicast;interleaved={}-{}",
                    2 * i,
                    2 * i + 1
                ),
                Via::Udp => {
                    let (a, b) = bind_pair().await?;
                    let p = a.local_addr().map_err(|e| e.to_string())?.port();
                    pair = Some((a, b));
                    format!("Transport: RTP/AVP;unicast;client_port={p}-{}", p + 1)
                }
            };
            let mut h = vec![transport];
            if let Some(s) = &session {
                h.push(format!("Session: {s}"));
            }
            let s = r.request("SETUP", &uri, &h).await?;
            if s.status != 200 {
                return Err(format!("SETUP {uri}: {}", s.status));
            }
            let id = s
                .header("session")
                .and_then(|v| v.split(';').next())
                .ok_or("SETUP: no Session header")?
                .to_owned();
            session = Some(id);
            if let Some((a, b)) = pair {
                let t = s.header("transport").unwrap_or_default();
                let server_rtp: u16 = t
                    .split(';')
                    .find_map(|p| p.strip_prefix("server_port="))
                    .and_then(|p| p.split('-').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("SETUP: no server_port in {t:?}"))?;
                let server_ip = r.conn.peer_addr().map_err(|e| e.to_string())?.ip();
                udp.push((
                    Arc::new(a),
                    Arc::new(b),
                    SocketAddr::new(server_ip, server_rtp + 1),
                ));
            }
        }
        let session = session.ok_or("no tracks in the SDP")?;
        let p = r
            .request(
                "PLAY",
                &base,
                &[format!("Session: {session}"), "Range: npt=0-".into()],
            )
            .await?;
        if p.status != 200 {
            return Err(format!("PLAY: {}", p.status));
        }
        r.rec.playing_since = Some(Instant::now());
        r.rec.session = session;
        if via == Via::Udp {
            r.media = Media::Udp(udp);
        }
        Ok(r)
    }

    /// The tracks the SDP described.
    pub fn tracks(&self) -> &[TrackRec] {
        &self.rec.tracks
    }

    /// Records until `until`, `ctl.stop`, or the server ending the
    /// connection. Sends nothing on the RTSP connection (no keep-alive);
    /// over UDP, RTCP receiver reports while `ctl.send_rr`. With
    /// `teardown`, ends with a TEARDOWN; else the connection is just dropped.
    pub async fn record(mut self, until: Instant, ctl: Control, teardown: bool) -> Recording {
        // UDP sockets feed one channel: (track, is_rtcp, data, at, wall).
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, bool, Vec<u8>, Instant, SystemTime)>();
        let mut tasks = Vec::new();
        let mut rr_targets = Vec::new();
        if let Media::Udp(socks) = &self.media {
            for (i, (rtp, rtcp, server_rtcp)) in socks.iter().enumerate() {
                rr_targets.push((rtcp.clone(), *server_rtcp));
                for (sock, is_rtcp) in [(rtp.clone(), false), (rtcp.clone(), true)] {
                    let tx = tx.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = sock.recv(&mut buf).await {
                            let now = (Instant::now(), SystemTime::now());
                            if tx
                                .send((i, is_rtcp, buf[..n].to_vec(), now.0, now.1))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }));
                }
            }
        }
        drop(tx);
        let mut rr_tick = tokio::time::interval(Duration::from_secs(1));
        let mut stop_tick = tokio::time::interval(Duration::from_millis(50));
        let deadline = tokio::time::Instant::from_std(until);
        let mut chunk = vec![0u8; 65536];
        let mut tcp_open = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop_tick.tick() => {
                    if ctl.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                r = self.conn.read(&mut chunk), if tcp_open => {
                    match r {
                        Ok(0) | Err(_) => {
                            let why = match r { Err(e) => format!("read error: {e}"), _ => "connection closed".into() };
                            self.rec.ended = Some((Instant::now(), why));
                            tcp_open = false;
                            // Over TCP nothing more can arrive.
                            if matches!(self.media, Media::Tcp) {
                                break;
                            }
                        }
                        Ok(n) => {
                            self.inbuf.extend_from_slice(&chunk[..n]);
                            while let Some(m) = take_message(&mut self.inbuf) {
                                if let Err((ch, data)) = m {
                                    self.on_interleaved(ch, &data);
                                }
                            }
                        }
                    }
                }
                Some((i, is_rtcp, data, at, wall)) = rx.recv() => {
                    if is_rtcp {
                        self.rec.on_rtcp(i, &data, at, wall);
                    } else {
                        self.rec.on_rtp(i, &data, at, wall);
                    }
                }
                _ = rr_tick.tick(), if !rr_targets.is_empty() => {
                    if ctl.send_rr.load(Ordering::Relaxed) {
                        // RR with no report blocks: V=2, RC=0, PT=201, length 1, SSRC.
                        let rr = [0x80u8, 201, 0, 1, 0x12, 0x34, 0x56, 0x78];
                        for (sock, to) in &rr_targets {
                            let _ = sock.send_to(&rr, to).await;
                        }
                    }
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        if teardown && tcp_open {
            let base = self.url.clone();
            let s = format!("Session: {}", self.rec.session);
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.request("TEARDOWN", &base, &[s]),
            )
            .await;
        }
        self.rec
    }
}

/// Opens and records `url` until `until` (on the current tokio runtime).
pub async fn read(url: &str, via: Via, until: Instant) -> Result<Recording, String> {
    let r = Reader::open(url, via).await?;
    Ok(r.record(until, Control::default(), true).await)
}

/// NTP 32.32 timestamp as seconds since 1900.
pub fn ntp_secs(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// `wall` as seconds since 1900 (the NTP epoch).
pub fn wall_ntp_secs(wall: SystemTime) -> f64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + 2_208_988_800.0
}

/// The sender's wall clock (NTP seconds) of RTP timestamp `ts`, by `sr`'s
/// NTP↔RTP mapping.
pub fn wall_of(sr: &Sr, ts: u32, clock_rate: u32) -> f64 {
    let d = ts.wrapping_sub(sr.rtp) as i32;
    ntp_secs(sr.ntp) + f64::from(d) / f64::from(clock_rate.max(1))
}

/// A tokio runtime for tests that run many readers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_of_each_packet_kind() {
        // H.264: single NAL unit (IDR), STAP-A (SPS 4 bytes, PPS 2 bytes),
        // FU-A start and continuation of an IDR.
        assert_eq!(nal_units("h264", &[0x65, 1, 2]), (Some(5), vec![5]));
        let stap_a = [24, 0, 4, 0x67, 1, 2, 3, 0, 2, 0x68, 9];
        assert_eq!(nal_units("h264", &stap_a), (Some(24), vec![7, 8]));
        assert_eq!(nal_units("h264", &[0x7c, 0x85, 1]), (Some(28), vec![5]));
        assert_eq!(nal_units("h264", &[0x7c, 0x05, 1]), (Some(28), vec![]));
        // A size running past the end stops the walk.
        assert_eq!(nal_units("h264", &[24, 0, 9, 0x67]), (Some(24), vec![]));
        // H.265: AP with VPS, SPS, PPS; FU start of an IDR_W_RADL (19).
        let ap = [96, 1, 0, 2, 64, 1, 0, 2, 66, 1, 0, 2, 68, 1];
        assert_eq!(nal_units("h265", &ap), (Some(48), vec![32, 33, 34]));
        assert_eq!(
            nal_units("h265", &[98, 1, 0x80 | 19, 7]),
            (Some(49), vec![19])
        );
        assert!(is_key_nal("h265", 19) && is_key_nal("h264", 5) && !is_key_nal("h265", 1));
        assert_eq!(nal_units("opus", &[1, 2]), (None, vec![]));
    }
}
