//! A raw, blocking RTSP connection for tests that send what no real client
//! would: malformed requests, requests sent byte by byte, readers that stop
//! reading. Reads responses (stepping over interleaved frames) and notices
//! when the server closes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response: status, headers (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a wait for the server to close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// EOF or reset after this long.
    After(Duration),
    /// Still open at the deadline.
    StillOpen,
}

/// A TCP connection to an RTSP server.
pub struct RawRtsp {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Interleaved frames stepped over so far.
    pub interleaved: u64,
    /// Bytes of interleaved frames stepped over so far.
    pub interleaved_bytes: u64,
}

impl RawRtsp {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> io::Result<RawRtsp> {
        Self::with_socket(port, None)
    }

    /// Connects with a receive buffer of `bytes` set before the handshake
    /// (so the TCP window stays small): a reader that stops reading fills
    /// it fast and the server's writes block.
    pub fn connect_small_window(port: u16, bytes: usize) -> io::Result<RawRtsp> {
        Self::with_socket(port, Some(bytes))
    }

    fn with_socket(port: u16, recv_buffer: Option<usize>) -> io::Result<RawRtsp> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if let Some(b) = recv_buffer {
            socket.set_recv_buffer_size(b)?;
        }
        socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true)?;
        Ok(RawRtsp {
            stream,
            buf: Vec::new(),
            interleaved: 0,
            interleaved_bytes: 0,
        })
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `request` and reads its response within 5 s.
    pub fn exchange(&mut self, request: &str) -> Option<RawResponse> {
        self.send(request.as_bytes()).ok()?;
        self.response(Duration::from_secs(5))
    }

    /// The next response within `timeout` (interleaved frames before it
    /// are stepped over); `None` on timeout or close.
    pub fn response(&mut self, timeout: Duration) -> Option<RawResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.take_response() {
                return Some(r);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() || !self.fill(left).ok()? {
                // One more look: the close may follow the last response.
                return self.take_response();
            }
        }
    }

    /// Reads (and drops) everything until the server closes, up to
    /// `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Closed {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Closed::StillOpen;
            };
            match self.fill(left) {
                Ok(true) => {
                    // Keep memory flat on long waits.
                    if self.buf.len() > 1 << 20 {
                        self.buf.clear();
                    }
                }
                Ok(false) => return Closed::After(start.elapsed()),
                Err(e) if is_timeout(&e) => return Closed::StillOpen,
                Err(_) => return Closed::After(start.elapsed()),
            }
        }
    }

    /// Everything received but not yet taken as a response, as text.
    pub fn pending_text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// One read within `timeout`: `Ok(false)` at EOF.
    fn fill(&mut self, timeout: Duration) -> io::Result<bool> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn take_response(&mut self) -> Option<RawResponse> {
        loop {
            if self.buf.first() == Some(&b'$') {
                if self.buf.len() < 4 {
                    return None;
                }
                let len = 4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < len {
                    return None;
                }
                self.interleaved += 1;
                self.interleaved_bytes += len as u64;
                self.buf.drain(..len);
                continue;
            }
            let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
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
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if self.buf.len() < end + 4 + len {
                return None;
            }
            let body = self.buf[end + 4..end + 4 + len].to_vec();
            self.buf.drain(..end + 4 + len);
            return Some(RawResponse {
                status,
                headers,
                body,
            });
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
