//! A minimal WHEP viewer built on str0m, for tests and `examples/whep_load.rs`:
//! POSTs a recvonly offer, connects over UDP or ICE-TCP (RFC 6544 active,
//! RFC 4571 framing), and counts what it receives after SRTP decryption.
//! Blocking sockets, one thread per viewer; on 127.0.0.1 unless
//! [`Opts::bind`] says otherwise. [`play_answering`] is the same viewer for
//! servers that make the offer themselves (Janus's streaming plugin).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Transport for the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
}

/// What one viewer saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub status: u16,
    pub location: Option<String>,
    pub error: Option<String>,
    /// From sending the POST to the 201 answer.
    pub post: Option<Duration>,
    /// From sending the POST to ICE+DTLS connected.
    pub connected: Option<Duration>,
    /// From sending the POST to the first complete video frame.
    pub first_frame: Option<Duration>,
    /// From sending the POST to the first keyframe (the first picture a
    /// decoder can show).
    pub first_keyframe: Option<Duration>,
    pub video_frames: u64,
    pub keyframes: u64,
    pub audio_frames: u64,
    /// RTP packets and payload bytes received (decrypted), from str0m's
    /// ingress stats.
    pub packets: u64,
    pub bytes: u64,
    /// NACKs this viewer sent (packets it found missing), from str0m's
    /// ingress stats.
    pub nacks: u64,
    /// The first video frame contained an SPS (H.264 NAL type 7).
    pub first_frame_has_sps: bool,
    /// First byte of each NAL unit of the first video frame (Annex B).
    pub first_frame_nal_headers: Vec<u8>,
}

/// An HTTP response: status, headers (lowercase names), body.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.0 request to `addr`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, raw[split + 4..].to_vec()))
}

enum Sock {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        peer: SocketAddr,
        acc: Vec<u8>,
    },
}

struct Viewer {
    rtc: Rtc,
    sock: Sock,
    local: SocketAddr,
    /// Known from our offer, or from the remote offer's first video section.
    video_mid: Option<Mid>,
    t0: Instant,
    r: Received,
    /// Latest ingress stats: video packets, video bytes, video NACKs, audio
    /// packets, audio bytes, audio NACKs.
    counts: [u64; 6],
}

impl Viewer {
    /// Drains str0m until its next timeout (required after every mutation).
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| format!("rtc: {e}"))? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => match &mut self.sock {
                    Sock::Udp(s) => {
                        let _ = s.send_to(&t.contents, t.destination);
                    }
                    Sock::Tcp { stream, .. } => {
                        let len = u16::try_from(t.contents.len()).map_err(|_| "packet too big")?;
                        let mut framed = len.to_be_bytes().to_vec();
                        framed.extend_from_slice(&t.contents);
                        stream
                            .write_all(&framed)
                            .map_err(|e| format!("ICE-TCP write: {e}"))?;
                    }
                },
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        let r = &mut self.r;
        match e {
            Event::Connected => r.connected = Some(self.t0.elapsed()),
            Event::MediaAdded(m) if m.kind == MediaKind::Video && self.video_mid.is_none() => {
                self.video_mid = Some(m.mid);
            }
            Event::MediaData(m) if Some(m.mid) == self.video_mid => {
                if r.first_frame.is_none() {
                    r.first_frame = Some(self.t0.elapsed());
                    // Annex B from str0m's depacketizer: 00 00 01 67 = SPS.
                    r.first_frame_nal_headers = m
                        .data
                        .windows(4)
                        .filter(|w| w[..3] == [0, 0, 1])
                        .map(|w| w[3])
                        .collect();
                    r.first_frame_has_sps = r.first_frame_nal_headers.iter().any(|h| h & 0x1f == 7);
                }
                r.video_frames += 1;
                if m.is_keyframe() {
                    r.keyframes += 1;
                    if r.first_keyframe.is_none() {
                        r.first_keyframe = Some(self.t0.elapsed());
                    }
                }
            }
            Event::MediaData(_) => r.audio_frames += 1,
            Event::MediaIngressStats(s) => {
                let at = if Some(s.mid) == self.video_mid { 0 } else { 3 };
                self.counts[at] = s.packets;
                self.counts[at + 1] = s.bytes;
                self.counts[at + 2] = s.nacks;
                r.packets = self.counts[0] + self.counts[3];
                r.bytes = self.counts[1] + self.counts[4];
                r.nacks = self.counts[2] + self.counts[5];
            }
            _ => {}
        }
    }

    fn input(&mut self, proto: Protocol, from: SocketAddr, data: &[u8]) -> Result<(), String> {
        if let Ok(recv) = Receive::new(proto, from, self.local, data) {
            self.rtc
                .handle_input(Input::Receive(Instant::now(), recv))
                .map_err(|e| format!("rtc: {e}"))?;
            self.drain()?;
        }
        Ok(())
    }

    /// Waits up to `wait` for network input and feeds it; then a timeout tick.
    fn step(&mut self, wait: Duration, buf: &mut [u8]) -> Result<(), String> {
        let wait = wait.max(Duration::from_millis(1));
        match &mut self.sock {
            Sock::Udp(s) => {
                let _ = s.set_read_timeout(Some(wait));
                if let Ok((n, from)) = s.recv_from(buf) {
                    let data = buf[..n].to_vec();
                    self.input(Protocol::Udp, from, &data)?;
                }
            }
            Sock::Tcp { stream, acc, peer } => {
                let peer = *peer;
                let _ = stream.set_read_timeout(Some(wait));
                match stream.read(buf) {
                    Ok(0) => return Err("ICE-TCP connection closed".into()),
                    Ok(n) => acc.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                let mut packets = Vec::new();
                while acc.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([acc[0], acc[1]]));
                    if acc.len() < 2 + len {
                        break;
                    }
                    packets.push(acc.drain(..2 + len).skip(2).collect::<Vec<u8>>());
                }
                for p in packets {
                    self.input(Protocol::Tcp, peer, &p)?;
                }
            }
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .map_err(|e| format!("rtc: {e}"))?;
        Ok(())
    }
}

/// How a viewer plays.
#[derive(Debug, Clone)]
pub struct Opts {
    pub via: Via,
    /// How long to play.
    pub dur: Duration,
    /// DELETE the session at the end.
    pub delete: bool,
    /// Ends the run early when set.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop reading the socket this long after connecting (a stalled
    /// viewer: over ICE-TCP the gateway's writes to it back up).
    pub stall_after: Option<Duration>,
    /// Local address of the UDP socket (127.0.0.1 by default; the
    /// benchmark uses its network namespace's veth address).
    pub bind: IpAddr,
    /// Incremented when the first keyframe arrives, so a load generator
    /// knows when all its viewers show a picture.
    pub progress: Option<Arc<AtomicUsize>>,
}

impl Opts {
    pub fn new(via: Via, dur: Duration) -> Opts {
        Opts {
            via,
            dur,
            delete: true,
            stop: None,
            stall_after: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            progress: None,
        }
    }
}

/// Plays `http://<http_addr>/<path>/whep` as `opts` says.
pub fn play(http_addr: SocketAddr, path: &str, opts: &Opts) -> Received {
    let mut r = Received::default();
    match play_inner(http_addr, path, opts, &mut r) {
        Ok(v) => v,
        Err(e) => {
            r.error = Some(e);
            r
        }
    }
}

fn play_inner(
    http_addr: SocketAddr,
    path: &str,
    opts: &Opts,
    r: &mut Received,
) -> Result<Received, String> {
    let via = opts.via;
    let mut rtc = Rtc::builder()
        .set_stats_interval(Some(Duration::from_millis(500)))
        .build(Instant::now());
    // UDP: bind first and announce the socket. TCP: the answer says where
    // to connect; the local candidate is announced after connecting.
    let udp = match via {
        Via::Udp => {
            let s = UdpSocket::bind((opts.bind, 0)).map_err(|e| e.to_string())?;
            let local = s.local_addr().map_err(|e| e.to_string())?;
            rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
            Some(s)
        }
        Via::Tcp => None,
    };
    let mut change = rtc.sdp_api();
    let video_mid = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;

    let t0 = Instant::now();
    let (status, headers, body) = http(
        http_addr,
        "POST",
        &format!("/{path}/whep"),
        &[("Content-Type", "application/sdp")],
        offer.to_sdp_string().as_bytes(),
    )
    .map_err(|e| format!("POST: {e}"))?;
    r.status = status;
    r.post = Some(t0.elapsed());
    let answer = String::from_utf8_lossy(&body).into_owned();
    if status != 201 {
        return Err(format!("POST: {status} {answer}"));
    }
    r.location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone());
    let answer_sdp = SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer_sdp)
        .map_err(|e| format!("answer: {e}"))?;

    let (sock, local) = match udp {
        Some(s) => {
            let local = s.local_addr().map_err(|e| e.to_string())?;
            (Sock::Udp(s), local)
        }
        None => {
            let server = answer
                .lines()
                .filter(|l| l.starts_with("a=candidate:") && l.contains("tcptype passive"))
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("{}:{}", f.get(4)?, f.get(5)?)
                        .parse::<SocketAddr>()
                        .ok()
                })
                .ok_or("no ICE-TCP candidate in the answer")?;
            let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                .map_err(|e| format!("ICE-TCP connect {server}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().map_err(|e| e.to_string())?;
            let c = Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .map_err(|e| e.to_string())?;
            rtc.add_local_candidate(c);
            (
                Sock::Tcp {
                    stream,
                    peer: server,
                    acc: Vec::new(),
                },
                local,
            )
        }
    };
    let v = Viewer {
        rtc,
        sock,
        local,
        video_mid: Some(video_mid),
        t0,
        r: std::mem::take(r),
        counts: [0; 6],
    };
    let r = run_media(v, opts)?;
    if opts.delete {
        if let Some(loc) = &r.location {
            let _ = http(http_addr, "DELETE", loc, &[], b"");
        }
    }
    Ok(r)
}

/// Plays a stream whose server makes the offer (Janus): `get_offer` returns
/// the server's SDP offer (with its candidates), `send_answer` delivers our
/// answer (with our one UDP host candidate on `opts.bind`). UDP only;
/// `opts.delete` is the caller's business. Timings count from `get_offer`.
pub fn play_answering(
    get_offer: impl FnOnce() -> Result<String, String>,
    send_answer: impl FnOnce(&str) -> Result<(), String>,
    opts: &Opts,
) -> Received {
    let mut r = Received::default();
    let t0 = Instant::now();
    let run = || -> Result<Received, String> {
        let mut rtc = Rtc::builder()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(Instant::now());
        let s = UdpSocket::bind((opts.bind, 0)).map_err(|e| e.to_string())?;
        let local = s.local_addr().map_err(|e| e.to_string())?;
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        let offer = get_offer()?;
        let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| format!("offer: {e}"))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("accept offer: {e}"))?;
        send_answer(&answer.to_sdp_string())?;
        r.post = Some(t0.elapsed());
        let v = Viewer {
            rtc,
            sock: Sock::Udp(s),
            local,
            video_mid: None,
            t0,
            r: std::mem::take(&mut r),
            counts: [0; 6],
        };
        run_media(v, opts)
    };
    match run() {
        Ok(v) => v,
        Err(e) => Received {
            error: Some(e),
            ..r
        },
    }
}

/// Receives until `opts.dur` is over (or `opts.stop`).
fn run_media(mut v: Viewer, opts: &Opts) -> Result<Received, String> {
    let mut counted = false;
    let t0 = v.t0;
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + opts.dur;
    loop {
        let timeout = v.drain()?;
        if !counted && v.r.first_keyframe.is_some() {
            counted = true;
            if let Some(p) = &opts.progress {
                p.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        if now >= end
            || opts
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
        if let (Some(after), Some(at)) = (opts.stall_after, v.r.connected) {
            if t0.elapsed() >= at + after {
                // Stalled: read nothing, answer nothing, until the end.
                std::thread::sleep(end.saturating_duration_since(Instant::now()));
                break;
            }
        }
        let wait = timeout
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        v.step(wait, &mut buf)?;
    }
    Ok(v.r)
}
