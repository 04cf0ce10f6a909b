//! A lossy link for tests: an RTSP proxy between the gateway and a camera
//! that moves the RTP/RTCP of UDP sessions through its own sockets, so it
//! can drop chosen packets on a real UDP path.
//!
//! SETUP requests get `client_port=` rewritten to a relay port pair; the
//! camera's answer gets `server_port=` rewritten to the same pair (retina
//! connects its sockets to the server ports, so packets must come from
//! them). Each pair forwards camera → client and client → camera by source
//! address. Video packets (payload type 96, the test camera's) can be
//! dropped every Nth while [`Relay::drop_every`] says so. Two more quirks of
//! real UDP paths and cameras: [`Relay::start_mid_fragment`] makes the
//! first video packet the client gets the rest of an H.264 FU-A (what a
//! client that joins a running UDP stream, or loses its first packets,
//! sees), and [`Relay::jump_timestamps_back`] steps every later RTP
//! timestamp back (a camera whose clock is reset). Blocking threads; they
//! end when the relay is dropped.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Payload type of the test camera's video (testkit/camera.py).
const VIDEO_PT: u8 = 96;

#[derive(Default)]
struct Shared {
    /// Drop every Nth video packet; 0 = none.
    every: AtomicU32,
    video_seen: AtomicU64,
    dropped: AtomicU64,
    forwarded: AtomicU64,
    /// Video packets are dropped until an FU-A continuation fragment.
    mid_fragment: AtomicBool,
    /// Video packets dropped before that continuation fragment.
    skipped_to_mid_fragment: AtomicU64,
    /// Seconds subtracted from every RTP timestamp from now on.
    back_secs: AtomicU32,
    stop: AtomicBool,
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
    /// Like [`Relay::start`], but the first video packet forwarded (over
    /// UDP) is an H.264 FU-A fragment without the start bit, the middle or
    /// end of its NAL unit (RFC 6184 §5.8): the packets before it are
    /// dropped.
    pub fn start_mid_fragment(camera_port: u16) -> Relay {
        let relay = Relay::start(camera_port);
        relay.shared.mid_fragment.store(true, Ordering::Relaxed);
        relay
    }

    /// Video packets dropped to make the first one a continuation fragment (see
    /// [`Relay::start_mid_fragment`]); 0 while none was forwarded yet.
    pub fn skipped_to_mid_fragment(&self) -> u64 {
        self.shared.skipped_to_mid_fragment.load(Ordering::Relaxed)
    }

    /// From now on, every RTP timestamp forwarded is `secs` seconds earlier
    /// (video at 90 kHz, the test camera's audio at 48 kHz or 8 kHz for
    /// G.711): a camera clock that jumps back. RTCP passes unchanged.
    pub fn jump_timestamps_back(&self, secs: u32) {
        self.shared.back_secs.store(secs, Ordering::Relaxed);
    }

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
    while !sh.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if from == camera {
            if rtp
                && n >= 12
                && buf[1] & 0x7f == VIDEO_PT
                && sh.mid_fragment.load(Ordering::Relaxed)
            {
                if is_fu_a_continuation(&buf[..n]) {
                    sh.mid_fragment.store(false, Ordering::Relaxed);
                } else {
                    sh.skipped_to_mid_fragment.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let back = sh.back_secs.load(Ordering::Relaxed);
            if rtp && n >= 12 && back > 0 {
                let clock: u32 = match buf[1] & 0x7f {
                    VIDEO_PT => 90_000,
                    0 | 8 => 8_000,
                    _ => 48_000,
                };
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])
                    .wrapping_sub(back.wrapping_mul(clock));
                buf[4..8].copy_from_slice(&ts.to_be_bytes());
            }
            if rtp && n >= 12 && buf[1] & 0x7f == VIDEO_PT {
                let k = sh.video_seen.fetch_add(1, Ordering::Relaxed) + 1;
                let every = u64::from(sh.every.load(Ordering::Relaxed));
                if every > 0 && k.is_multiple_of(every) {
                    sh.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            sh.forwarded.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send_to(&buf[..n], client);
        } else {
            let _ = sock.send_to(&buf[..n], camera);
        }
    }
}

/// Whether an RTP packet carries an H.264 FU-A (type 28) without the start
/// bit: a middle or end fragment (RFC 6184 §5.8).
fn is_fu_a_continuation(pkt: &[u8]) -> bool {
    let Some(&first) = pkt.first() else {
        return false;
    };
    let mut at = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        // Header extension: 4 bytes, then its length in 32-bit words.
        let Some(words) = pkt.get(at + 2..at + 4) else {
            return false;
        };
        at += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    match pkt.get(at..at + 2) {
        Some(&[indicator, header]) => indicator & 0x1f == 28 && header & 0x80 == 0,
        _ => false,
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
