//! The test camera: `testkit/camera.py` on GstRtspServer (H.264/H.265/MJPEG
//! video, AAC/PCMA/PCMU/Opus audio, Digest or Basic auth, one or many
//! mounts) and its quirks: one session only, open-GOP CRA keyframes,
//! B-frames, a resolution change mid-stream, aggregation packets.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{kill_and_reap, read_lossy, scratch_path, tail, wait_with_deadline};

/// Debian's interpreter: it has python3-gi; a pyenv python on PATH does not.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a camera may take to print its READY line.
pub const CAMERA_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `testkit/camera.py`, the one camera script of tests and benchmarks.
pub fn camera_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("camera.py")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    /// Motion JPEG (RFC 2435, `JPEG/90000`, static payload type 26).
    Mjpeg,
    None,
}

impl VideoCodec {
    pub fn arg(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
            VideoCodec::Mjpeg => "mjpeg",
            VideoCodec::None => "none",
        }
    }
    /// ffmpeg's codec name for this codec.
    pub fn ffmpeg_name(self) -> Option<&'static str> {
        match self {
            VideoCodec::H264 => Some("h264"),
            VideoCodec::H265 => Some("hevc"),
            VideoCodec::Mjpeg => Some("mjpeg"),
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

/// The RTSP authentication scheme a camera with credentials offers (only
/// that one, in its `WWW-Authenticate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// RFC 2617 Digest (MD5), what most cameras offer.
    Digest,
    /// RFC 7617 Basic, what some older cameras offer alone.
    Basic,
}

impl AuthScheme {
    pub fn arg(self) -> &'static str {
        match self {
            AuthScheme::Digest => "digest",
            AuthScheme::Basic => "basic",
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
    /// B-frames (H.264 Main profile or H.265, 2 consecutive): packets carry
    /// PTS != DTS, decode order differs from presentation order.
    pub bframes: bool,
    /// H.265 only: open GOP (x265 `open-gop=1:repeat-headers=1`). The
    /// stream starts with an IDR; every later keyframe is a CRA (NAL unit
    /// type 21) preceded in band by VPS/SPS/PPS. With `bframes` and a `gop`
    /// whose frames between keyframes are not whole B-B-P groups (e.g. 12;
    /// not 10 or 25) two RASL pictures (type 8) follow each CRA.
    pub open_gop: bool,
    /// H.264/H.265: aggregation packets, as some cameras send
    /// (`rtph264pay aggregate-mode=max-stap`, `rtph265pay
    /// aggregate-mode=max`): the NAL units of one access unit that fit the
    /// MTU together travel in one STAP-A (RFC 6184 §5.7.1, NAL unit type
    /// 24) or AP (RFC 7798 §4.4.2, type 48), among them the in-band
    /// parameter sets before every keyframe.
    pub aggregate: bool,
    /// 0: no limit. N > 0: while N RTSP connections are open, the DESCRIBE
    /// of another one is answered `503 Service Unavailable` (a camera that
    /// allows one session: `max_sessions: 1`).
    pub max_sessions: u32,
    /// `Some((seconds, width, height))`: that many seconds after the media
    /// is built (its first DESCRIBE), the video switches to `width`x`height`
    /// in the same session (new SPS in band at a keyframe).
    pub resize: Option<(f64, u32, u32)>,
    /// Require RTSP auth (in `auth`) with these credentials.
    pub user: Option<String>,
    pub pass: Option<String>,
    /// The one scheme offered with `user`/`pass`.
    pub auth: AuthScheme,
    /// Mount path, starting with '/'.
    pub path: String,
    /// Address to listen on.
    pub address: String,
    /// videotestsrc pattern: "ball" compresses to ~100 kbit/s whatever the
    /// target; "snow" (noise) fills `bitrate_kbps` like a real camera.
    pub pattern: String,
    /// 0: one mount at `path`. M > 0: one H.264 encoder feeding M mounts
    /// `<path>0 .. <path>M-1` (the benchmark fan-out).
    pub mounts: u32,
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
            open_gop: false,
            aggregate: false,
            max_sessions: 0,
            resize: None,
            user: None,
            pass: None,
            auth: AuthScheme::Digest,
            path: "/test".into(),
            address: "127.0.0.1".into(),
            pattern: "ball".into(),
            mounts: 0,
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
    /// Requires RTSP Digest auth with these credentials.
    pub fn with_auth(mut self, user: &str, pass: &str) -> Self {
        self.user = Some(user.into());
        self.pass = Some(pass.into());
        self
    }

    /// Requires RTSP Basic auth (and offers nothing else) with these
    /// credentials.
    pub fn with_basic_auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = AuthScheme::Basic;
        self.with_auth(user, pass)
    }

    /// The command line of camera.py for these options on `port` (0: any),
    /// for callers that manage the process themselves (the benchmark).
    pub fn command(&self, port: u16) -> Command {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(camera_script())
            .args(self.args(port))
            .env("PYTHONUNBUFFERED", "1");
        cmd
    }

    fn args(&self, port: u16) -> Vec<String> {
        let mut a = vec![
            "--address".into(),
            self.address.clone(),
            "--pattern".into(),
            self.pattern.clone(),
            "--mounts".into(),
            self.mounts.to_string(),
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
        if self.open_gop {
            a.push("--open-gop".into());
        }
        if self.aggregate {
            a.push("--aggregate".into());
        }
        if self.max_sessions > 0 {
            a.extend(["--max-sessions".into(), self.max_sessions.to_string()]);
        }
        if let Some((after, w, h)) = self.resize {
            a.extend([
                "--resize-after".into(),
                after.to_string(),
                "--resize-to".into(),
                format!("{w}x{h}"),
            ]);
        }
        if let (Some(u), Some(p)) = (&self.user, &self.pass) {
            a.extend(["--user".into(), u.clone(), "--pass".into(), p.clone()]);
            a.extend(["--auth".into(), self.auth.arg().into()]);
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
    /// The camera exits when this pipe closes (with the test process).
    _stdin: Option<ChildStdin>,
    stderr_path: PathBuf,
    /// RTSP connections the camera accepted (its `CLIENT` lines).
    clients: Arc<Mutex<Vec<String>>>,
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
        let mut child = opts
            .command(port)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {PYTHON}: {e}"));

        // Read stdout on a thread (keeps draining after READY).
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        let clients: Arc<Mutex<Vec<String>>> = Arc::default();
        let counted = clients.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(ip) = line.strip_prefix("CLIENT ") {
                    if let Ok(mut c) = counted.lock() {
                        c.push(ip.to_string());
                    }
                    continue;
                }
                // After READY nobody listens any more: keep draining.
                let _ = tx.send(line);
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
                            .strip_prefix("rtsp://")
                            .and_then(|rest| rest.split('/').next())
                            .and_then(|authority| authority.rsplit(':').next())
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| {
                                panic!("cannot parse port from READY line {line:?}")
                            });
                        return Ok(Camera {
                            opts: opts.clone(),
                            port,
                            url,
                            _stdin: child.stdin.take(),
                            child: Some(child),
                            stderr_path,
                            clients,
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

    /// A camera with `opts` shared by every test of this test process that
    /// asks for the same options: started once, alive until the process
    /// ends (its stdin pipe closes then). For tests that neither stop it nor
    /// count its clients.
    pub fn shared(opts: CameraOpts) -> Arc<Camera> {
        static SHARED: Mutex<Vec<(Vec<String>, Arc<Camera>)>> = Mutex::new(Vec::new());
        let key = opts.args(0);
        let mut all = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cam)) = all.iter().find(|(k, _)| *k == key) {
            return cam.clone();
        }
        let cam = Arc::new(Camera::start(opts));
        all.push((key, cam.clone()));
        cam
    }

    /// RTSP connections the camera has accepted so far (each TCP connection
    /// of a client: a gateway pulling it, an ffprobe, ...).
    pub fn clients_connected(&self) -> usize {
        self.clients.lock().map_or(0, |c| c.len())
    }

    /// `rtsp://<address>:<port><path>` (no credentials); with `mounts` > 0,
    /// append the mount number.
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
