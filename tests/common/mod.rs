//! End-to-end test harness: real peers only (GStreamer camera, ffmpeg/ffprobe,
//! the gateway binary), no mocks.
//!
//! Every helper is bounded in time and every child process is killed on
//! `Drop`, so a failing test never leaves processes behind or hangs.
//!
//! Include with `mod common;` from an integration test. Not every test binary
//! uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Debian's interpreter: it has python3-gi; a pyenv python on PATH does not.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a camera may take to print its READY line.
pub const CAMERA_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the gateway may take to accept connections on both ports.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace period on top of the requested read duration before ffmpeg is killed.
pub const FFMPEG_GRACE: Duration = Duration::from_secs(15);
/// Socket I/O timeout handed to ffmpeg/ffprobe's RTSP demuxer.
const RTSP_IO_TIMEOUT_US: &str = "10000000";

pub fn camera_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/camera.py")
}

// ---------------------------------------------------------------------------
// Misc utilities
// ---------------------------------------------------------------------------

/// Serialises tests that spawn heavy processes (encoders, decoders): the CI
/// machine has two cores. Poisoning (a panicking test) is ignored.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An even/odd pair of UDP ports (RTP, RTCP) on 127.0.0.1 that were both free
/// a moment ago.
pub fn free_udp_port_pair() -> (u16, u16) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let p = a.local_addr().unwrap().port();
        if !p.is_multiple_of(2) || p == u16::MAX {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return (p, p + 1);
        }
    }
    panic!("no free even/odd UDP port pair on 127.0.0.1 after 100 attempts");
}

/// A port on 127.0.0.1 that was free for both TCP and UDP a moment ago
/// (the WebRTC port takes both).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 after 100 attempts");
}

/// A fresh, unique path under cargo's target tmp dir for logs and scratch files.
pub fn scratch_path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    fs::create_dir_all(&dir).expect("create target tmp dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{stem}-{}-{n}.{ext}", std::process::id()))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `s` (for panic messages).
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Polls `f` every `every` until it returns `Some` or `timeout` elapses.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` to exit for at most `timeout`; kills it afterwards.
/// Returns the exit status, or `None` if it had to be killed.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                kill_and_reap(child);
                return None;
            }
        }
    }
}

/// Reads a pipe to the end on a thread so the child never blocks on it.
fn drain<R: Read + Send + 'static>(r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut r = r;
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Output of a child run with a hard deadline.
struct Finished {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Finished {
    fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

fn run_bounded(cmd: &mut Command, timeout: Duration) -> Finished {
    let started = Instant::now();
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed? see .ci/run)"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_with_deadline(&mut child, timeout);
    Finished {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Headless Chromium (scripts under tests/browser/, playwright-core)
// ---------------------------------------------------------------------------

/// `tests/browser/`, where the node scripts and their node_modules live.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Panics with what to install when Chromium or playwright-core is missing.
pub fn require_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: apt-get install -y chromium (see .ci/run)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: npm ci --prefix tests/browser (see .ci/run)"
    );
}

/// What a browser script printed: its exit code (`None` if killed at the
/// deadline), the JSON of its last stdout line, and its stderr.
pub struct BrowserRun {
    pub code: Option<i32>,
    pub json: serde_json::Value,
    pub stderr: String,
}

/// Runs `node tests/browser/<script> <args>` with a hard deadline and parses
/// the one line of JSON it prints last; panics with its output if there is none.
pub fn run_browser_script<S: AsRef<OsStr>>(
    script: &str,
    args: &[S],
    timeout: Duration,
) -> BrowserRun {
    require_browser();
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join(script)).args(args);
    let out = run_bounded(&mut cmd, timeout);
    let line = out.stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{script} exit {:?}, no JSON ({e})\nstdout: {}\nstderr: {}",
            out.status.and_then(|s| s.code()),
            out.stdout,
            tail(&out.stderr, 40)
        )
    });
    BrowserRun {
        code: out.status.and_then(|s| s.code()),
        json,
        stderr: out.stderr,
    }
}

// ---------------------------------------------------------------------------
// HTTP (tiny HTTP/1.0 client, enough for the JSON API)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("invalid JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.0 request to 127.0.0.1:`port`, `Connection: close`, bounded by
/// 5 s per socket operation.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
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
    parse_http_response(&raw)
}

pub fn http_get(port: u16, path: &str) -> io::Result<HttpResponse> {
    http_request(port, "GET", path, &[], b"")
}

fn parse_http_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

// ---------------------------------------------------------------------------
// Camera (tests/support/camera.py on GstRtspServer)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    None,
}

impl VideoCodec {
    pub fn arg(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
            VideoCodec::None => "none",
        }
    }
    /// ffmpeg's codec name for this codec.
    pub fn ffmpeg_name(self) -> Option<&'static str> {
        match self {
            VideoCodec::H264 => Some("h264"),
            VideoCodec::H265 => Some("hevc"),
            VideoCodec::None => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Pcma,
    Pcmu,
    Opus,
    None,
}

impl AudioCodec {
    pub fn arg(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Pcma => "pcma",
            AudioCodec::Pcmu => "pcmu",
            AudioCodec::Opus => "opus",
            AudioCodec::None => "none",
        }
    }
    /// ffmpeg's codec name for this codec.
    pub fn ffmpeg_name(self) -> Option<&'static str> {
        match self {
            AudioCodec::Aac => Some("aac"),
            AudioCodec::Pcma => Some("pcm_alaw"),
            AudioCodec::Pcmu => Some("pcm_mulaw"),
            AudioCodec::Opus => Some("opus"),
            AudioCodec::None => None,
        }
    }
    /// Decoded frames per second as ffmpeg counts them (AAC: 1024-sample
    /// frames at 48 kHz; PCM: 20 ms packets; Opus: 20 ms frames).
    pub fn frames_per_second(self) -> f64 {
        match self {
            AudioCodec::Aac => 48000.0 / 1024.0,
            AudioCodec::Pcma | AudioCodec::Pcmu | AudioCodec::Opus => 50.0,
            AudioCodec::None => 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CameraOpts {
    pub video: VideoCodec,
    pub audio: AudioCodec,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub bframes: bool,
    /// Require RTSP Digest auth with these credentials.
    pub user: Option<String>,
    pub pass: Option<String>,
    /// Mount path, starting with '/'.
    pub path: String,
    /// Passed verbatim to camera.py after everything else.
    pub extra_args: Vec<String>,
}

impl Default for CameraOpts {
    fn default() -> Self {
        CameraOpts {
            video: VideoCodec::H264,
            audio: AudioCodec::None,
            fps: 25,
            width: 640,
            height: 360,
            bitrate_kbps: 1000,
            gop: 25,
            bframes: false,
            user: None,
            pass: None,
            path: "/test".into(),
            extra_args: Vec::new(),
        }
    }
}

impl CameraOpts {
    pub fn new(video: VideoCodec, audio: AudioCodec) -> Self {
        CameraOpts {
            video,
            audio,
            ..Default::default()
        }
    }
    pub fn with_auth(mut self, user: &str, pass: &str) -> Self {
        self.user = Some(user.into());
        self.pass = Some(pass.into());
        self
    }

    fn args(&self, port: u16) -> Vec<String> {
        let mut a = vec![
            "--port".into(),
            port.to_string(),
            "--path".into(),
            self.path.clone(),
            "--video".into(),
            self.video.arg().into(),
            "--audio".into(),
            self.audio.arg().into(),
            "--fps".into(),
            self.fps.to_string(),
            "--size".into(),
            format!("{}x{}", self.width, self.height),
            "--bitrate".into(),
            self.bitrate_kbps.to_string(),
            "--gop".into(),
            self.gop.to_string(),
        ];
        if self.bframes {
            a.push("--bframes".into());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.pass) {
            a.extend(["--user".into(), u.clone(), "--pass".into(), p.clone()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A running `camera.py`. Killed on drop.
pub struct Camera {
    opts: CameraOpts,
    port: u16,
    url: String,
    child: Option<Child>,
    stderr_path: PathBuf,
}

/// Exit code camera.py uses when it cannot bind its port.
const CAMERA_EXIT_PORT_IN_USE: i32 = 2;

impl Camera {
    /// Starts a camera on a free port picked by the camera itself.
    pub fn start(opts: CameraOpts) -> Camera {
        Camera::start_on_port(0, opts)
    }

    /// Starts a camera on `port` (0 = any). If the port is still held (e.g.
    /// right after a kill) it retries until [`CAMERA_READY_TIMEOUT`].
    pub fn start_on_port(port: u16, opts: CameraOpts) -> Camera {
        let script = camera_script();
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} not found: the camera needs Debian's python3 with python3-gi (see .ci/run)"
        );
        assert!(script.exists(), "{} is missing", script.display());
        let deadline = Instant::now() + CAMERA_READY_TIMEOUT;
        loop {
            match Camera::try_start(port, &opts, deadline) {
                Ok(cam) => return cam,
                Err((Some(CAMERA_EXIT_PORT_IN_USE), _))
                    if port != 0 && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                Err((code, msg)) => panic!(
                    "camera.py {opts:?} on port {port} failed to start (exit code {code:?}):\n{msg}"
                ),
            }
        }
    }

    fn try_start(
        port: u16,
        opts: &CameraOpts,
        deadline: Instant,
    ) -> Result<Camera, (Option<i32>, String)> {
        let stderr_path = scratch_path("camera", "log");
        let stderr = File::create(&stderr_path).expect("create camera log");
        let mut child = Command::new(PYTHON)
            .arg(camera_script())
            .args(opts.args(port))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {PYTHON}: {e}"));

        // Read stdout on a thread (keeps draining after READY).
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        let url = url.trim().to_string();
                        let port = url
                            .strip_prefix("rtsp://127.0.0.1:")
                            .and_then(|rest| rest.split('/').next())
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| {
                                panic!("cannot parse port from READY line {line:?}")
                            });
                        return Ok(Camera {
                            opts: opts.clone(),
                            port,
                            url,
                            child: Some(child),
                            stderr_path,
                        });
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the script died (or is dying).
                    let code = wait_with_deadline(&mut child, Duration::from_secs(5))
                        .and_then(|s| s.code());
                    return Err((code, Camera::failure_text(&stderr_path, &seen)));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err((status.code(), Camera::failure_text(&stderr_path, &seen)));
                    }
                    if Instant::now() >= deadline {
                        kill_and_reap(&mut child);
                        return Err((
                            None,
                            format!(
                                "no READY line within {CAMERA_READY_TIMEOUT:?}\n{}",
                                Camera::failure_text(&stderr_path, &seen)
                            ),
                        ));
                    }
                }
            }
        }
    }

    fn failure_text(stderr_path: &Path, stdout: &[String]) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ({}) ---\n{}",
            stdout.join("\n"),
            stderr_path.display(),
            tail(&read_lossy(stderr_path), 60)
        )
    }

    /// `rtsp://127.0.0.1:<port><path>` (no credentials).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The URL with `user:pass@` if the camera requires auth, else [`url`](Self::url).
    pub fn url_with_creds(&self) -> String {
        match (&self.opts.user, &self.opts.pass) {
            (Some(u), Some(p)) => self.url.replacen("rtsp://", &format!("rtsp://{u}:{p}@"), 1),
            _ => self.url.clone(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn opts(&self) -> &CameraOpts {
        &self.opts
    }

    /// What camera.py wrote to stderr so far (GStreamer warnings etc.).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the camera abruptly (SIGKILL, like a power cut) and reaps it.
    /// The TCP listener is gone once this returns.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Kills the camera (if running) and starts it again with the same
    /// options on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        let fresh = Camera::start_on_port(port, self.opts.clone());
        assert_eq!(fresh.port, port, "camera restarted on another port");
        *self = fresh;
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for Camera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Camera")
            .field("url", &self.url)
            .field("opts", &self.opts)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Gateway (the rtspgate binary)
// ---------------------------------------------------------------------------

/// A running gateway with stdout+stderr captured to a log file. Killed on drop.
pub struct Gateway {
    child: Option<Child>,
    rtsp_port: u16,
    http_port: u16,
    log_path: PathBuf,
    args: Vec<String>,
    /// The log was already included in a panic message.
    log_shown: bool,
}

impl Gateway {
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_rtspgate")
    }

    /// Spawns `rtspgate --listen 127.0.0.1 --rtsp-port P --http-port Q -v
    /// <extra...>` (extra args are typically source specs like
    /// `cam=rtsp://127.0.0.1:PORT/test`) and waits until both ports accept
    /// TCP connections. Panics with the log if the gateway exits or is not
    /// ready within [`GATEWAY_READY_TIMEOUT`].
    pub fn start<I, S>(extra: I) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let rtsp_port = free_port();
        let mut http_port = free_port();
        while http_port == rtsp_port {
            http_port = free_port();
        }
        let log_path = scratch_path("gateway", "log");
        let log = File::create(&log_path).expect("create gateway log");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1".into(),
            "--rtsp-port".into(),
            rtsp_port.to_string(),
            "--http-port".into(),
            http_port.to_string(),
            // Tests may run gateways side by side: never the default 8000/8001.
            "--rtp-port".into(),
            free_udp_port_pair().0.to_string(),
            // Nor the default WebRTC port 8189 (UDP and ICE-TCP).
            "--webrtc-port".into(),
            free_udp_tcp_port().to_string(),
            "-v".into(),
        ];
        args.extend(
            extra
                .into_iter()
                .map(|s| s.as_ref().to_string_lossy().into_owned()),
        );
        let child = Command::new(Gateway::bin())
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", Gateway::bin()));
        let mut gw = Gateway {
            child: Some(child),
            rtsp_port,
            http_port,
            log_path,
            args,
            log_shown: false,
        };
        gw.wait_ports(GATEWAY_READY_TIMEOUT);
        gw
    }

    fn wait_ports(&mut self, timeout: Duration) {
        let ports = [self.rtsp_port, self.http_port];
        let ok = poll_until(timeout, Duration::from_millis(50), || {
            if !self.is_running() {
                return Some(false);
            }
            ports
                .iter()
                .all(|p| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], *p)),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
                .then_some(true)
        });
        match ok {
            Some(true) => {}
            Some(false) => self.fail("gateway exited during startup"),
            None => self.fail(&format!(
                "gateway not accepting on rtsp {} / http {} within {timeout:?}",
                self.rtsp_port, self.http_port
            )),
        }
    }

    /// Panics with `msg`, the command line and the gateway log.
    pub fn fail(&mut self, msg: &str) -> ! {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(s))) => format!("exited: {s}"),
            Some(_) => "running".to_string(),
            None => "killed".to_string(),
        };
        self.log_shown = true;
        panic!(
            "{msg}\ngateway: {} {}\nstatus: {status}\n--- gateway log ({}) ---\n{}",
            Gateway::bin(),
            self.args.join(" "),
            self.log_path.display(),
            tail(&self.log(), 200)
        );
    }

    pub fn rtsp_port(&self) -> u16 {
        self.rtsp_port
    }
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `rtsp://127.0.0.1:<rtsp-port>/<name>`
    pub fn rtsp_url(&self, name: &str) -> String {
        format!(
            "rtsp://127.0.0.1:{}/{}",
            self.rtsp_port,
            name.trim_start_matches('/')
        )
    }

    /// `http://127.0.0.1:<http-port><path>` (a leading '/' is added if missing).
    pub fn http_url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("http://127.0.0.1:{}{sep}{path}", self.http_port)
    }

    pub fn http_get(&self, path: &str) -> io::Result<HttpResponse> {
        http_get(self.http_port, path)
    }

    /// `GET /api/v1/streams`, parsed.
    pub fn streams(&self) -> Result<serde_json::Value, String> {
        let r = self
            .http_get("/api/v1/streams")
            .map_err(|e| format!("GET /api/v1/streams: {e}"))?;
        if r.status != 200 {
            return Err(format!(
                "GET /api/v1/streams: HTTP {}: {}",
                r.status,
                r.text()
            ));
        }
        r.json()
    }

    /// The entry named `name` in `streams`, if any.
    pub fn stream(&self, name: &str) -> Option<serde_json::Value> {
        let v = self.streams().ok()?;
        v.get("streams")?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
            .cloned()
    }

    /// Polls the API until stream `name` has `"state": "live"`; returns its
    /// entry. Panics (with the last API answer and the log) on timeout or if
    /// the gateway exits.
    pub fn wait_live(&mut self, name: &str, timeout: Duration) -> serde_json::Value {
        self.wait_state(name, "live", timeout)
    }

    /// Polls the API until stream `name` is in `state`.
    pub fn wait_state(&mut self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let mut last = String::from("(no answer yet)");
        let mut died = false;
        let found = poll_until(timeout, Duration::from_millis(100), || {
            if !self.is_running() {
                died = true;
                return Some(None);
            }
            match self.streams() {
                Ok(v) => {
                    last = v.to_string();
                    let entry = v
                        .get("streams")
                        .and_then(|s| s.as_array())
                        .and_then(|a| {
                            a.iter()
                                .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
                        })
                        .cloned();
                    match entry {
                        Some(e) if e.get("state").and_then(|s| s.as_str()) == Some(state) => {
                            Some(Some(e))
                        }
                        _ => None,
                    }
                }
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        match found {
            Some(Some(entry)) => entry,
            _ if died => self.fail(&format!(
                "gateway exited while waiting for stream {name:?} to be {state}; last API answer: {last}"
            )),
            _ => self.fail(&format!(
                "stream {name:?} not {state} within {timeout:?}; last API answer: {last}"
            )),
        }
    }

    /// Everything the gateway wrote to stdout and stderr so far.
    /// The gateway's process id (to send it signals), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILLs the gateway and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.log_shown {
            eprintln!(
                "--- gateway log ({}) ---\n{}",
                self.log_path.display(),
                tail(&self.log(), 200)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// ffmpeg / ffprobe readers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn arg(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// One input stream as decoded by ffmpeg.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Input stream index.
    pub index: usize,
    /// "video", "audio", "data", ...
    pub kind: String,
    /// ffmpeg codec name: h264, hevc, aac, pcm_alaw, pcm_mulaw, opus, ...
    pub codec: String,
    /// The full `Stream #0:N: ...` line from ffmpeg.
    pub description: String,
    /// Decoded frames (video) or decoded audio frames/packets (audio).
    pub frames: u64,
    /// pts of the first / last decoded frame, seconds.
    pub first_pts: Option<f64>,
    pub last_pts: Option<f64>,
    /// Packets received (before decoding) for this stream.
    pub packets: u64,
    /// Key flag of the first packet received for this stream.
    pub first_packet_key: Option<bool>,
}

impl StreamReport {
    /// Decoded frames per second over the span of pts.
    pub fn fps(&self) -> Option<f64> {
        let (a, b) = (self.first_pts?, self.last_pts?);
        (b > a && self.frames > 1).then(|| (self.frames - 1) as f64 / (b - a))
    }
}

/// What one `ffmpeg` session decoding an RTSP URL saw.
#[derive(Debug, Clone)]
pub struct ReadReport {
    pub url: String,
    pub transport: Transport,
    pub seconds: f64,
    /// None if ffmpeg had to be killed at the deadline.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub streams: Vec<StreamReport>,
    /// Key flag of the first *received* video packet. ffmpeg's H.264 decoder
    /// silently drops frames before the first keyframe, so the decoded
    /// counts alone cannot tell whether a reader started on a keyframe.
    pub first_video_packet_key: Option<bool>,
    /// `[error]`/`[fatal]`/`[panic]` lines from stderr.
    pub errors: Vec<String>,
    /// `[warning]` lines from stderr.
    pub warnings: Vec<String>,
    pub stderr: String,
}

impl ReadReport {
    pub fn video(&self) -> Option<&StreamReport> {
        self.streams.iter().find(|s| s.kind == "video")
    }
    pub fn audio(&self) -> Option<&StreamReport> {
        self.streams.iter().find(|s| s.kind == "audio")
    }
    pub fn video_frames(&self) -> u64 {
        self.video().map_or(0, |s| s.frames)
    }
    pub fn audio_frames(&self) -> u64 {
        self.audio().map_or(0, |s| s.frames)
    }
    /// (kind, codec) per input stream, in stream order.
    pub fn codecs(&self) -> Vec<(String, String)> {
        self.streams
            .iter()
            .map(|s| (s.kind.clone(), s.codec.clone()))
            .collect()
    }
    /// Whether ffmpeg fell back from UDP to TCP interleaving.
    pub fn fell_back_to_tcp(&self) -> bool {
        self.stderr.contains("retrying with TCP")
    }

    /// Problems that make this read unclean, as human-readable lines.
    pub fn problems(&self, min_video_frames: u64, min_audio_frames: u64) -> Vec<String> {
        let mut p = Vec::new();
        if self.timed_out {
            p.push(format!(
                "ffmpeg did not finish within {:?} and was killed",
                Duration::from_secs_f64(self.seconds) + FFMPEG_GRACE
            ));
        } else if self.exit_code != Some(0) {
            p.push(format!("ffmpeg exit code {:?}", self.exit_code));
        }
        if !self.errors.is_empty() {
            p.push(format!("{} error line(s) from ffmpeg", self.errors.len()));
        }
        if self.transport == Transport::Udp && self.fell_back_to_tcp() {
            p.push("asked for UDP but ffmpeg fell back to TCP".into());
        }
        if min_video_frames > 0 && self.video_frames() < min_video_frames {
            p.push(format!(
                "decoded {} video frames, want >= {min_video_frames}",
                self.video_frames()
            ));
        }
        if min_audio_frames > 0 && self.audio_frames() < min_audio_frames {
            p.push(format!(
                "decoded {} audio frames, want >= {min_audio_frames}",
                self.audio_frames()
            ));
        }
        p
    }

    /// Panics with a readable summary unless ffmpeg exited 0, logged no
    /// errors and decoded at least the given numbers of frames.
    #[track_caller]
    pub fn assert_clean(&self, min_video_frames: u64, min_audio_frames: u64) {
        let problems = self.problems(min_video_frames, min_audio_frames);
        if !problems.is_empty() {
            panic!(
                "unclean read of {}:\n  - {}\n{self}",
                self.url,
                problems.join("\n  - ")
            );
        }
    }
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ffmpeg read {} over {} for {}s: exit {:?}{} after {:.1}s",
            self.url,
            self.transport.arg(),
            self.seconds,
            self.exit_code,
            if self.timed_out { " (killed)" } else { "" },
            self.elapsed.as_secs_f64()
        )?;
        for s in &self.streams {
            writeln!(
                f,
                "  #{} {} {}: {} frames decoded ({} packets, first packet key {:?}, ~{} fps)",
                s.index,
                s.kind,
                s.codec,
                s.frames,
                s.packets,
                s.first_packet_key,
                s.fps().map_or("?".into(), |v| format!("{v:.1}"))
            )?;
        }
        if self.streams.is_empty() {
            writeln!(f, "  (no streams)")?;
        }
        if !self.errors.is_empty() {
            writeln!(f, "  errors:")?;
            for e in self.errors.iter().take(30) {
                writeln!(f, "    {e}")?;
            }
            if self.errors.len() > 30 {
                writeln!(f, "    ... {} more", self.errors.len() - 30)?;
            }
        }
        write!(f, "--- ffmpeg stderr ---\n{}", tail(&self.stderr, 40))
    }
}

const LEVELS: [&str; 8] = [
    "panic", "fatal", "error", "warning", "info", "verbose", "debug", "trace",
];

/// Splits one `-loglevel level+...` stderr line such as
/// `[h264 @ 0x55..] [error] msg` or `[error] msg` into its level and message.
fn split_level(line: &str) -> (Option<&'static str>, &str) {
    let mut rest = line;
    // At most two bracket groups: an optional "[ctx @ 0x..]", then "[level]".
    for _ in 0..2 {
        let Some((tag, after)) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else {
            break;
        };
        if let Some(level) = LEVELS.iter().find(|l| **l == tag) {
            return (Some(level), after.strip_prefix(' ').unwrap_or(after));
        }
        rest = after.trim_start();
    }
    (None, line)
}

/// Parses an input `Stream #0:N...: Kind: codec ...` line.
fn parse_stream_line(msg: &str) -> Option<(usize, String, String)> {
    let rest = msg.trim_start().strip_prefix("Stream #0:")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let index = digits.parse().ok()?;
    // Skip "(eng)", "[0x1]" etc. up to ": Kind: ".
    let (_, after) = rest.split_once(": ")?;
    let (kind, codec_part) = after.split_once(": ")?;
    let codec = codec_part.split([' ', ',']).next()?.to_string();
    Some((index, kind.trim().to_ascii_lowercase(), codec))
}

/// Parses `Stream #0:I -> #O:J (...)` mapping lines.
fn parse_mapping_line(msg: &str) -> Option<(usize, usize, usize)> {
    let rest = msg.trim_start().strip_prefix("Stream #0:")?;
    let (input, rest) = rest.split_once(" -> #")?;
    let input = input.trim().parse().ok()?;
    let (out_file, rest) = rest.split_once(':')?;
    let out_stream: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((input, out_file.parse().ok()?, out_stream.parse().ok()?))
}

/// Per output-stream data from a framecrc file: (count, first pts s, last pts
/// s, first key flag).
#[derive(Default, Debug)]
struct CrcStream {
    count: u64,
    first_pts: Option<f64>,
    last_pts: Option<f64>,
    first_key: Option<bool>,
}

fn parse_framecrc(text: &str) -> BTreeMap<usize, CrcStream> {
    let mut tb: BTreeMap<usize, f64> = BTreeMap::new();
    let mut out: BTreeMap<usize, CrcStream> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#tb ") {
            // "#tb 0: 1/25"
            if let Some((idx, frac)) = rest.split_once(':') {
                let (n, d) = frac.trim().split_once('/').unwrap_or(("1", "1"));
                if let (Ok(i), Ok(n), Ok(d)) = (
                    idx.trim().parse::<usize>(),
                    n.parse::<f64>(),
                    d.parse::<f64>(),
                ) {
                    tb.insert(i, n / d);
                }
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // "idx, dts, pts, duration, size, 0xcrc[, F=0x..][, S=...]"
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(idx) = fields.first().and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        let pts = fields
            .get(2)
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|p| *p != i64::MIN)
            .map(|p| p as f64 * tb.get(&idx).copied().unwrap_or(1.0));
        let flags = fields
            .iter()
            .find_map(|f| f.strip_prefix("F=0x"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(1); // no F= means flags == AV_PKT_FLAG_KEY
        let s = out.entry(idx).or_default();
        if s.count == 0 {
            s.first_key = Some(flags & 1 == 1);
        }
        s.count += 1;
        if let Some(p) = pts {
            s.first_pts.get_or_insert(p);
            s.last_pts = Some(p);
        }
    }
    out
}

/// Decodes every frame of every stream of `url` for `seconds` with ffmpeg and
/// reports what it saw. Never takes longer than `seconds` + [`FFMPEG_GRACE`].
pub fn ffmpeg_read(url: &str, transport: Transport, seconds: f64) -> ReadReport {
    let packets_path = scratch_path("packets", "crc");
    let t = format!("{seconds}");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-y"])
        .args(["-loglevel", "level+info"])
        .args(["-timeout", RTSP_IO_TIMEOUT_US])
        .args(["-rtsp_transport", transport.arg()])
        .args(["-i", url])
        // Output 0: decode everything, one framecrc line per decoded frame.
        .args(["-t", &t, "-map", "0", "-f", "framecrc", "-"])
        // Output 1: the received packets as they are (key flags).
        .args([
            "-t",
            &t,
            "-map",
            "0",
            "-c",
            "copy",
            "-copyinkf",
            "-f",
            "framecrc",
        ])
        .arg(&packets_path);
    let timeout = Duration::from_secs_f64(seconds) + FFMPEG_GRACE;
    let fin = run_bounded(&mut cmd, timeout);
    let packets_text = read_lossy(&packets_path);
    let _ = fs::remove_file(&packets_path);

    // stderr: input streams, stream mapping, level-tagged messages.
    #[derive(PartialEq)]
    enum Section {
        None,
        Input,
        Mapping,
        Other,
    }
    let mut section = Section::None;
    let mut streams: BTreeMap<usize, StreamReport> = BTreeMap::new();
    let mut decoded_out: BTreeMap<usize, usize> = BTreeMap::new(); // out0 stream -> input
    let mut copied_out: BTreeMap<usize, usize> = BTreeMap::new(); // out1 stream -> input
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for line in fin.stderr.lines() {
        let (level, msg) = split_level(line);
        match level {
            Some("panic" | "fatal" | "error") => errors.push(msg.to_string()),
            Some("warning") => warnings.push(msg.to_string()),
            _ => {}
        }
        if msg.starts_with("Input #") {
            section = Section::Input;
        } else if msg.starts_with("Output #") {
            section = Section::Other;
        } else if msg.starts_with("Stream mapping:") {
            section = Section::Mapping;
        } else if section == Section::Input {
            if let Some((index, kind, codec)) = parse_stream_line(msg) {
                streams.insert(
                    index,
                    StreamReport {
                        index,
                        kind,
                        codec,
                        description: msg.trim().to_string(),
                        ..Default::default()
                    },
                );
            }
        } else if section == Section::Mapping {
            if let Some((input, file, out)) = parse_mapping_line(msg) {
                match file {
                    0 => decoded_out.insert(out, input),
                    _ => copied_out.insert(out, input),
                };
            } else if !msg.trim_start().starts_with("Stream #") {
                section = Section::Other;
            }
        }
    }

    for (out, s) in parse_framecrc(&fin.stdout) {
        if let Some(st) = decoded_out.get(&out).and_then(|i| streams.get_mut(i)) {
            st.frames = s.count;
            st.first_pts = s.first_pts;
            st.last_pts = s.last_pts;
        }
    }
    for (out, s) in parse_framecrc(&packets_text) {
        if let Some(st) = copied_out.get(&out).and_then(|i| streams.get_mut(i)) {
            st.packets = s.count;
            st.first_packet_key = s.first_key;
        }
    }
    let streams: Vec<StreamReport> = streams.into_values().collect();
    let first_video_packet_key = streams
        .iter()
        .find(|s| s.kind == "video")
        .and_then(|s| s.first_packet_key);
    ReadReport {
        url: url.to_string(),
        transport,
        seconds,
        exit_code: fin.status.and_then(|s| s.code()),
        timed_out: fin.timed_out(),
        elapsed: fin.elapsed,
        streams,
        first_video_packet_key,
        errors,
        warnings,
        stderr: fin.stderr,
    }
}

fn ffprobe_json(
    url: &str,
    transport: Transport,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "error", "-of", "json"])
        .args(["-timeout", RTSP_IO_TIMEOUT_US])
        .args(["-rtsp_transport", transport.arg()])
        .args(extra)
        .arg(url);
    let fin = run_bounded(&mut cmd, Duration::from_secs(25));
    if fin.timed_out() {
        return Err(format!("ffprobe {url} timed out; stderr:\n{}", fin.stderr));
    }
    if !fin.success() {
        return Err(format!(
            "ffprobe {url} failed ({:?}); stderr:\n{}",
            fin.status, fin.stderr
        ));
    }
    serde_json::from_str(&fin.stdout).map_err(|e| format!("ffprobe JSON: {e}: {}", fin.stdout))
}

/// `(codec_type, codec_name)` per stream, e.g. `("video", "h264")`,
/// `("audio", "pcm_alaw")`.
pub fn try_ffprobe_streams(
    url: &str,
    transport: Transport,
) -> Result<Vec<(String, String)>, String> {
    let v = ffprobe_json(
        url,
        transport,
        &["-show_entries", "stream=index,codec_type,codec_name"],
    )?;
    let mut out: Vec<(i64, String, String)> = v["streams"]
        .as_array()
        .ok_or_else(|| format!("no streams in ffprobe output: {v}"))?
        .iter()
        .map(|s| {
            (
                s["index"].as_i64().unwrap_or(0),
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, t, n)| (t, n)).collect())
}

/// Like [`try_ffprobe_streams`] but panics with ffprobe's stderr on failure.
#[track_caller]
pub fn ffprobe_streams(url: &str, transport: Transport) -> Vec<(String, String)> {
    try_ffprobe_streams(url, transport).unwrap_or_else(|e| panic!("{e}"))
}

/// The first video frame a fresh reader gets.
#[derive(Debug, Clone)]
pub struct FirstVideoFrame {
    /// Key flag of the first received packet (demuxer/parser view).
    pub packet_key: bool,
    /// Decoder view of the same frame (decoded even if it is not a keyframe).
    pub frame_key: Option<bool>,
    /// "I", "P", "B", ...
    pub pict_type: Option<String>,
}

/// Connects a fresh ffprobe and inspects only the first video packet/frame.
pub fn first_video_frame(url: &str, transport: Transport) -> Result<FirstVideoFrame, String> {
    let v = ffprobe_json(
        url,
        transport,
        &[
            // Output frames even before the first keyframe, so a non-key
            // start is visible instead of silently skipped.
            "-flags2",
            "+showall",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_packets",
            "-show_frames",
            "-show_entries",
            "packet=flags:frame=key_frame,pict_type",
        ],
    )?;
    // With both -show_packets and -show_frames ffprobe emits one interleaved
    // "packets_and_frames" array, each entry tagged with "type".
    let items = v["packets_and_frames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first_of = |t: &str| items.iter().find(|i| i["type"] == t).cloned();
    let packet = first_of("packet").ok_or_else(|| format!("no video packet from ffprobe: {v}"))?;
    let packet_flags = packet["flags"].as_str().unwrap_or_default();
    let frame = first_of("frame").unwrap_or_default();
    Ok(FirstVideoFrame {
        packet_key: packet_flags.starts_with('K'),
        frame_key: frame["key_frame"].as_i64().map(|k| k == 1),
        pict_type: frame["pict_type"].as_str().map(str::to_string),
    })
}

/// Whether the first video frame a fresh reader of `url` receives is a
/// keyframe (both the packet flag and, if decodable, the decoder agree).
#[track_caller]
pub fn first_video_frame_is_key(url: &str, transport: Transport) -> bool {
    let f = first_video_frame(url, transport).unwrap_or_else(|e| panic!("{e}"));
    f.packet_key && f.frame_key != Some(false)
}

/// Panics early with an actionable message if a required tool is missing.
pub fn require_tools() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} is not installed (run .ci/run)");
    }
    let ok = Command::new(PYTHON)
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); \
             from gi.repository import GstRtspServer",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} cannot import GstRtspServer (need python3-gi and gir1.2-gst-rtsp-server-1.0; run .ci/run)"
    );
}
