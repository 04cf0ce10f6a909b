//! A minimal WHEP viewer built on str0m, for tests and `examples/whep_load.rs`:
//! POSTs a recvonly offer, connects over UDP or ICE-TCP (RFC 6544 active,
//! RFC 4571 framing), and counts what it receives after SRTP decryption.
//! Blocking sockets, one thread per viewer; on 127.0.0.1 unless
//! [`Opts::bind`] says otherwise. [`play_answering`] is the same viewer for
//! servers that make the offer themselves (Janus's streaming plugin).

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
    /// The highest fraction of packets lost (0..=1) in any receiver report
    /// this viewer sent.
    pub max_loss: f32,
    /// From sending the POST to the last complete video frame.
    pub last_frame: Option<Duration>,
    /// From sending the POST to the end of the run.
    pub ended: Option<Duration>,
    /// The first video frame contained an SPS (H.264 NAL type 7).
    pub first_frame_has_sps: bool,
    /// First byte of each NAL unit of the first video frame (Annex B).
    pub first_frame_nal_headers: Vec<u8>,
}

impl Received {
    /// Complete video frames per second from the first frame to the end of
    /// the run (the start-up burst of a cached GOP counts; a gateway that
    /// stalls or drops frames later shows as a lower rate).
    pub fn video_fps(&self) -> f64 {
        match (self.first_frame, self.ended) {
            (Some(first), Some(end)) if end > first && self.video_frames > 1 => {
                (self.video_frames - 1) as f64 / (end - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Problems for a viewer that should have played cleanly for the whole
    /// run on loopback: an error, fewer than `min_fps_share` of `camera_fps`
    /// after the first frame, any lost packet (NACK sent or loss reported),
    /// no audio when `audio` is expected.
    pub fn problems(&self, camera_fps: f64, min_fps_share: f64, audio: bool) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.error {
            p.push(format!("error: {e}"));
        }
        let fps = self.video_fps();
        if fps < camera_fps * min_fps_share {
            p.push(format!(
                "{fps:.1} video frames/s after the first frame, want >= {:.1} ({:.0} % of {camera_fps})",
                camera_fps * min_fps_share,
                min_fps_share * 100.0
            ));
        }
        if self.nacks > 0 || self.max_loss > 0.0 {
            p.push(format!(
                "lost packets on loopback: {} NACK(s) sent, loss fraction up to {}",
                self.nacks, self.max_loss
            ));
        }
        if audio && self.audio_frames == 0 {
            p.push("no audio frames".into());
        }
        p
    }

    /// Panics with the viewer's counters unless [`Received::problems`] is empty.
    #[track_caller]
    pub fn assert_clean(&self, camera_fps: f64, min_fps_share: f64, audio: bool) {
        let p = self.problems(camera_fps, min_fps_share, audio);
        assert!(
            p.is_empty(),
            "unclean WHEP viewer:\n  - {}\n{self:?}",
            p.join("\n  - ")
        );
    }
}

/// An HTTP response as a tuple: status, headers (lowercase names), body.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.0 request to `addr` ([`crate::http::request`]), as a tuple.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let r = crate::http::request(addr, method, path, headers, body)?;
    Ok((r.status, r.headers, r.body))
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
                // One clock reading per frame: a first frame that is a
                // keyframe has first_keyframe == first_frame.
                let at = self.t0.elapsed();
                if r.first_frame.is_none() {
                    r.first_frame = Some(at);
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
                r.last_frame = Some(at);
                if m.is_keyframe() {
                    r.keyframes += 1;
                    if r.first_keyframe.is_none() {
                        r.first_keyframe = Some(at);
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
                r.max_loss = r.max_loss.max(s.loss.unwrap_or(0.0));
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
    // A well-behaved WHEP client: a 429 (the gateway's per-address POST
    // rate) is retried after its Retry-After, a few times.
    let mut attempts = 0;
    let (status, headers, body) = loop {
        let (status, headers, body) = http(
            http_addr,
            "POST",
            &format!("/{path}/whep"),
            &[("Content-Type", "application/sdp")],
            offer.to_sdp_string().as_bytes(),
        )
        .map_err(|e| format!("POST: {e}"))?;
        attempts += 1;
        if status != 429 || attempts >= 10 {
            break (status, headers, body);
        }
        let wait = headers
            .iter()
            .find(|(k, _)| k == "retry-after")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .min(5);
        std::thread::sleep(Duration::from_secs(wait));
    };
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
            let stream = connect_tcp(server, opts.stall_after.is_some())
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

/// Connects over TCP. A viewer that will stall gets a small receive buffer
/// (set before connecting, so the advertised window stays small): once it
/// stops reading, the gateway's writes back up within a second instead of
/// filling megabytes of autotuned kernel buffers first, so the gateway's
/// per-viewer queue really fills.
fn connect_tcp(server: SocketAddr, small_window: bool) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if small_window {
        sock.set_recv_buffer_size(STALLED_RECV_BUFFER)?;
    }
    sock.connect_timeout(&server.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}

/// SO_RCVBUF of a viewer that will stall, bytes (the kernel doubles it).
const STALLED_RECV_BUFFER: usize = 4096;

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
    v.r.ended = Some(t0.elapsed());
    Ok(v.r)
}
