//! A lossy link for tests: an RTSP proxy between the gateway and a camera
//! that moves the RTP/RTCP of UDP sessions through its own sockets, so it
//! can drop chosen packets on a real UDP path.
//!
//! SETUP requests get `client_port=` rewritten to a relay port pair; the
//! camera's answer gets `server_port=` rewritten to the same pair (retina
//! connects its sockets to the server ports, so packets must come from
//! them). Each pair forwards camera → client and client → camera by source
//! address. Video packets (payload type 96, the test camera's) can be
//! dropped every Nth while [`Relay::drop_every`] says so. Blocking threads;
//! they end when the relay is dropped.
//!
//! Two more camera quirks, both on UDP sessions set up after the call:
//! - [`Relay::start_mid_fragment`]: each session's video starts with the
//!   middle of a fragmented NAL unit (H.264 FU-A, RFC 6184 §5.8; H.265 FU,
//!   RFC 7798 §4.4.3), as a UDP camera that was already sending gives it;
//! - [`Relay::jump_timestamps_back`]: from a moment on, every RTP timestamp
//!   (and every RTCP sender report's RTP timestamp, consistently) is moved
//!   back by a fixed duration at each payload type's clock rate (from the
//!   SDP), as a camera whose clock is reset does.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Payload type of the test camera's video (testkit/camera.py).
const VIDEO_PT: u8 = 96;

#[derive(Default)]
struct Shared {
    /// Drop every Nth video packet; 0 = none.
    every: AtomicU32,
    video_seen: AtomicU64,
    dropped: AtomicU64,
    forwarded: AtomicU64,
    stop: AtomicBool,
    /// Drop each session's video until a non-first fragment of a NAL unit.
    mid_fragment: AtomicBool,
    /// Video packets dropped before the first forwarded one (mid_fragment).
    skipped_to_fragment: AtomicU64,
    /// The first video RTP packet forwarded (whole datagram), if any.
    first_video: Mutex<Option<Vec<u8>>>,
    /// From this instant, move RTP timestamps back by this duration.
    jump: Mutex<Option<(Instant, Duration)>>,
    /// RTP packets and sender reports whose timestamp was moved back.
    jumped_rtp: AtomicU64,
    jumped_sr: AtomicU64,
    /// From the SDP: payload type -> (encoding name lower case, clock rate).
    rtpmap: Mutex<HashMap<u8, (String, u32)>>,
    /// SSRC -> clock rate, learnt from RTP packets (for sender reports).
    ssrc_rate: Mutex<HashMap<u32, u32>>,
    /// Relay pairs waiting for the camera's SETUP answer, with the client's
    /// ports: (rtp socket, rtcp socket, client rtp, client rtcp).
    pending: Mutex<VecDeque<(UdpSocket, UdpSocket, SocketAddr, SocketAddr)>>,
}

/// A running relay; stops on drop.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
}

impl Relay {
    /// Listens on 127.0.0.1 and proxies every connection to the camera at
    /// `127.0.0.1:camera_port`.
    pub fn start(camera_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        thread::spawn(move || {
            while !sh.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(camera) = TcpStream::connect(("127.0.0.1", camera_port)) else {
                            continue;
                        };
                        let (c2, s2) = (
                            client.try_clone().expect("dup"),
                            camera.try_clone().expect("dup"),
                        );
                        let (sh1, sh2) = (sh.clone(), sh.clone());
                        thread::spawn(move || pipe(client, camera, sh1, true));
                        thread::spawn(move || pipe(s2, c2, sh2, false));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay { port, shared }
    }

    /// The relay's RTSP port: use `rtsp://127.0.0.1:<port>/<camera path>`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every `n`th video packet from now on (0: drop none).
    pub fn drop_every(&self, n: u32) {
        self.shared.every.store(n, Ordering::Relaxed);
    }

    /// Every UDP session set up from now on starts its video with the first
    /// FU-A (H.264, type 28) / FU (H.265, type 49) packet WITHOUT the start
    /// bit: the video packets before it are dropped (counted in
    /// [`skipped_to_fragment`](Self::skipped_to_fragment)), so the client's
    /// first video packet is the middle or end of a fragmented NAL unit.
    /// Needs keyframes larger than one packet (e.g. pattern "snow").
    pub fn start_mid_fragment(&self) {
        self.shared.mid_fragment.store(true, Ordering::Relaxed);
    }

    /// Video packets dropped to start mid-fragment.
    pub fn skipped_to_fragment(&self) -> u64 {
        self.shared.skipped_to_fragment.load(Ordering::Relaxed)
    }

    /// The first video RTP packet forwarded to a client (the whole datagram).
    pub fn first_video_packet(&self) -> Option<Vec<u8>> {
        self.shared.first_video.lock().ok()?.clone()
    }

    /// `after` from now on, every forwarded RTP timestamp is `by` earlier:
    /// `by` × the payload type's clock rate from the SDP (90000 for video:
    /// 10 s = 900000 ticks; 48000 for Opus, ...), subtracted modulo 2^32.
    /// RTCP sender reports after that moment get the same subtraction on
    /// their RTP timestamp (their NTP time is unchanged), so the reports
    /// stay consistent with the packets: the camera's media clock jumped,
    /// not its wall clock.
    pub fn jump_timestamps_back(&self, after: Duration, by: Duration) {
        if let Ok(mut j) = self.shared.jump.lock() {
            *j = Some((Instant::now() + after, by));
        }
    }

    /// RTP packets whose timestamp was moved back so far.
    pub fn jumped_packets(&self) -> u64 {
        self.shared.jumped_rtp.load(Ordering::Relaxed)
    }

    /// RTCP sender reports whose RTP timestamp was moved back so far.
    pub fn jumped_sender_reports(&self) -> u64 {
        self.shared.jumped_sr.load(Ordering::Relaxed)
    }

    /// Video packets seen from the camera so far (dropped or not).
    pub fn video_seen(&self) -> u64 {
        self.shared.video_seen.load(Ordering::Relaxed)
    }

    /// Video packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Packets forwarded from the camera so far (RTP and RTCP).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn bind_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let p = a.local_addr().expect("addr").port();
        if !p.is_multiple_of(2) || p == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
            return (a, b);
        }
    }
    panic!("no free even/odd UDP port pair");
}

/// The value of `key=` in a Transport header line, as `(a, b)` for `a-b`.
fn ports(line: &str, key: &str) -> Option<(u16, u16)> {
    let v = line.split(';').find_map(|p| p.trim().strip_prefix(key))?;
    let (a, b) = v.split_once('-').unwrap_or((v, ""));
    let a: u16 = a.trim().parse().ok()?;
    Some((a, b.trim().parse().unwrap_or(a + 1)))
}

fn replace_ports(line: &str, key: &str, a: u16, b: u16) -> String {
    line.split(';')
        .map(|p| {
            if p.trim().starts_with(key) {
                format!("{key}{a}-{b}")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Rewrites the Transport line of one message head; `to_camera` says which
/// way the message goes.
fn rewrite(head: &str, to_camera: bool, sh: &Arc<Shared>) -> String {
    head.split("\r\n")
        .map(|l| {
            if !l.to_ascii_lowercase().starts_with("transport:") || l.contains("/TCP") {
                return l.to_owned();
            }
            if to_camera {
                // The client's SETUP: the camera sends to the relay instead.
                let Some((crtp, crtcp)) = ports(l, "client_port=") else {
                    return l.to_owned();
                };
                let (a, b) = bind_pair();
                let (pa, pb) = (
                    a.local_addr().unwrap().port(),
                    b.local_addr().unwrap().port(),
                );
                sh.pending.lock().unwrap().push_back((
                    a,
                    b,
                    SocketAddr::from(([127, 0, 0, 1], crtp)),
                    SocketAddr::from(([127, 0, 0, 1], crtcp)),
                ));
                replace_ports(l, "client_port=", pa, pb)
            } else {
                let Some((srtp, srtcp)) = ports(l, "server_port=") else {
                    return l.to_owned();
                };
                let Some((a, b, crtp, crtcp)) = sh.pending.lock().unwrap().pop_front() else {
                    return l.to_owned();
                };
                let (pa, pb) = (
                    a.local_addr().unwrap().port(),
                    b.local_addr().unwrap().port(),
                );
                // The client sees its own ports echoed, and the relay as the server.
                let l = replace_ports(l, "client_port=", crtp.port(), crtcp.port());
                let camera = |p| SocketAddr::from(([127, 0, 0, 1], p));
                for (sock, client, cam, rtp) in [
                    (a, crtp, camera(srtp), true),
                    (b, crtcp, camera(srtcp), false),
                ] {
                    let sh = sh.clone();
                    thread::spawn(move || forward(sock, client, cam, rtp, sh));
                }
                replace_ports(&l, "server_port=", pa, pb)
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Moves datagrams between the camera and the client on one relay socket.
fn forward(sock: UdpSocket, client: SocketAddr, camera: SocketAddr, rtp: bool, sh: Arc<Shared>) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 65536];
    // This session's video reached its first mid-fragment packet.
    let mut started = !sh.mid_fragment.load(Ordering::Relaxed);
    while !sh.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if from != camera {
            let _ = sock.send_to(&buf[..n], camera);
            continue;
        }
        let pkt = &mut buf[..n];
        if rtp && n >= 12 && pkt[1] & 0x7f == VIDEO_PT {
            if !started {
                if !is_later_fragment(pkt, &sh) {
                    sh.skipped_to_fragment.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                started = true;
            }
            let k = sh.video_seen.fetch_add(1, Ordering::Relaxed) + 1;
            let every = u64::from(sh.every.load(Ordering::Relaxed));
            if every > 0 && k.is_multiple_of(every) {
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Ok(mut first) = sh.first_video.lock() {
                first.get_or_insert_with(|| pkt.to_vec());
            }
        }
        if rtp {
            jump_rtp(pkt, &sh);
        } else {
            jump_sender_reports(pkt, &sh);
        }
        sh.forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = sock.send_to(pkt, client);
    }
}

/// The RTP payload of `pkt` (RFC 3550 §5.1: after CSRCs and extension).
fn rtp_payload(pkt: &[u8]) -> Option<&[u8]> {
    let cc = usize::from(*pkt.first()? & 0x0f);
    let mut at = 12 + 4 * cc;
    if pkt.first()? & 0x10 != 0 {
        let len = pkt.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    pkt.get(at..)
}

/// A fragmentation unit that is not the first of its NAL unit (start bit
/// unset): FU-A for H.264 (RFC 6184 §5.8), FU for H.265 (RFC 7798 §4.4.3).
fn is_later_fragment(pkt: &[u8], sh: &Shared) -> bool {
    let Some(payload) = rtp_payload(pkt) else {
        return false;
    };
    let pt = pkt.get(1).map_or(0, |b| b & 0x7f);
    let h265 = sh
        .rtpmap
        .lock()
        .ok()
        .and_then(|m| m.get(&pt).map(|(name, _)| name == "h265"))
        .unwrap_or(false);
    if h265 {
        let nal_type = payload.first().map(|b| (b >> 1) & 0x3f);
        nal_type == Some(49) && payload.get(2).is_some_and(|fu| fu & 0x80 == 0)
    } else {
        let nal_type = payload.first().map(|b| b & 0x1f);
        nal_type == Some(28) && payload.get(1).is_some_and(|fu| fu & 0x80 == 0)
    }
}

/// How far back timestamps go now, if the jump is on: the duration.
fn jump_now(sh: &Shared) -> Option<Duration> {
    let j = *sh.jump.lock().ok()?;
    j.and_then(|(from, by)| (Instant::now() >= from).then_some(by))
}

fn ticks(by: Duration, rate: u32) -> u32 {
    // Modulo 2^32 like the RTP timestamp itself.
    (by.as_secs_f64() * f64::from(rate)).round() as u64 as u32
}

/// Moves an RTP packet's timestamp back if the jump is on; learns its
/// SSRC's clock rate either way.
fn jump_rtp(pkt: &mut [u8], sh: &Shared) {
    if pkt.len() < 12 {
        return;
    }
    let pt = pkt[1] & 0x7f;
    let Some(rate) = sh
        .rtpmap
        .lock()
        .ok()
        .and_then(|m| m.get(&pt).map(|(_, r)| *r))
    else {
        return;
    };
    let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
    if let Ok(mut m) = sh.ssrc_rate.lock() {
        m.insert(ssrc, rate);
    }
    let Some(by) = jump_now(sh) else {
        return;
    };
    let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]).wrapping_sub(ticks(by, rate));
    pkt[4..8].copy_from_slice(&ts.to_be_bytes());
    sh.jumped_rtp.fetch_add(1, Ordering::Relaxed);
}

/// Moves the RTP timestamp of each sender report (RFC 3550 §6.4.1) in a
/// compound RTCP packet back if the jump is on.
fn jump_sender_reports(pkt: &mut [u8], sh: &Shared) {
    let Some(by) = jump_now(sh) else {
        return;
    };
    let mut at = 0usize;
    while let Some(head) = pkt.get(at..at + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
        if head[1] == 200 && pkt.len() >= at + 20 {
            let s = &pkt[at + 4..at + 8];
            let ssrc = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            let rate = sh.ssrc_rate.lock().ok().and_then(|m| m.get(&ssrc).copied());
            if let Some(rate) = rate {
                let t = &pkt[at + 16..at + 20];
                let ts = u32::from_be_bytes([t[0], t[1], t[2], t[3]]).wrapping_sub(ticks(by, rate));
                pkt[at + 16..at + 20].copy_from_slice(&ts.to_be_bytes());
                sh.jumped_sr.fetch_add(1, Ordering::Relaxed);
            }
        }
        at += len;
    }
}

/// Records `a=rtpmap:<pt> <name>/<rate>` lines of an SDP body.
fn learn_rtpmap(body: &[u8], sh: &Shared) {
    let text = String::from_utf8_lossy(body);
    let Ok(mut m) = sh.rtpmap.lock() else {
        return;
    };
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("a=rtpmap:") else {
            continue;
        };
        let Some((pt, enc)) = rest.split_once(' ') else {
            continue;
        };
        let mut parts = enc.split('/');
        let (Ok(pt), Some(name), Some(Ok(rate))) = (
            pt.trim().parse::<u8>(),
            parts.next(),
            parts.next().map(|r| r.trim().parse::<u32>()),
        ) else {
            continue;
        };
        m.insert(pt, (name.to_ascii_lowercase(), rate));
    }
}

/// Copies RTSP messages from `from` to `to`, rewriting Transport headers.
fn pipe(mut from: TcpStream, mut to: TcpStream, sh: Arc<Shared>, to_camera: bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    while !sh.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if buf.first() == Some(&b'$') {
                // Interleaved data (not used over UDP): pass through.
                if buf.len() < 4 {
                    break;
                }
                let total = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                if buf.len() < total {
                    break;
                }
                if to.write_all(&buf[..total]).is_err() {
                    return;
                }
                buf.drain(..total);
                continue;
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + body_len;
            if buf.len() < total {
                break;
            }
            if !to_camera {
                learn_rtpmap(&buf[end + 4..total], &sh);
            }
            let mut out = rewrite(&head, to_camera, &sh).into_bytes();
            out.extend_from_slice(&buf[end..total]);
            if to.write_all(&out).is_err() {
                return;
            }
            buf.drain(..total);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
