//! The gateway under test: the `rtspgate` binary as a child process, its
//! log captured to a file and checked for panics.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::http::{http_get, HttpResponse};
use crate::ports::{free_port, free_udp_port_pair, free_udp_tcp_port};
use crate::process::{kill_and_reap, poll_until, profile_dir, read_lossy, scratch_path, tail};

/// How long the gateway may take to accept connections on both ports.
pub const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(20);

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

/// The `rtspgate` binary: `$RTSPGATE_BIN` if set (to test or benchmark
/// another build), else `target/<profile>/rtspgate` next to the running test
/// or example (cargo builds it there for integration tests; examples need a
/// `cargo build` of the same profile first).
pub fn try_gateway_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("RTSPGATE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let bin = profile_dir()
        .map(|d| d.join("rtspgate"))
        .ok_or("cannot find the target directory of the running executable")?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: `cargo build` (with --release for release tests and \
             examples) first, or set RTSPGATE_BIN",
            bin.display()
        ))
    }
}

/// [`try_gateway_bin`], panicking with its message.
#[track_caller]
pub fn gateway_bin() -> PathBuf {
    try_gateway_bin().unwrap_or_else(|e| panic!("{e}"))
}

/// What marks a Rust panic in the gateway's log (std's panic hook line
/// `thread '...' panicked at src/...`).
const PANIC_MARK: &str = "panicked at";

impl Gateway {
    /// The binary [`Gateway::start`] runs (see [`gateway_bin`]).
    pub fn bin() -> PathBuf {
        gateway_bin()
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
        Gateway::spawn(extra, true)
    }

    /// [`Gateway::start`] without `-v` and with `RUST_LOG=warn`, for
    /// benchmarks: debug logging costs CPU that a deployment would not spend.
    pub fn start_quiet<I, S>(extra: I) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Gateway::spawn(extra, false)
    }

    /// [`Gateway::start`] with the open-file limit (`RLIMIT_NOFILE`) set to
    /// `nofile`, soft and hard, before the gateway runs: it cannot raise it.
    pub fn start_with_fd_limit<I, S>(nofile: u64, extra: I) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Gateway::spawn_limited(extra, true, Some(nofile))
    }

    fn spawn<I, S>(extra: I, verbose: bool) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Gateway::spawn_limited(extra, verbose, None)
    }

    fn spawn_limited<I, S>(extra: I, verbose: bool, nofile: Option<u64>) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let rtsp_port = free_port();
        let mut http_port = free_port();
        while http_port == rtsp_port {
            http_port = free_port();
        }
        let (rtp, rtcp) = free_udp_port_pair();
        // The WebRTC port must not be the RTP/RTCP pair's (the gateway
        // refuses that configuration).
        let webrtc = (0..100)
            .map(|_| free_udp_tcp_port())
            .find(|p| ![rtp, rtcp, rtsp_port, http_port].contains(p))
            .expect("a free WebRTC port distinct from the others");
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
            rtp.to_string(),
            // Nor the default WebRTC port 8189 (UDP and ICE-TCP).
            "--webrtc-port".into(),
            webrtc.to_string(),
        ];
        if verbose {
            args.push("-v".into());
        }
        args.extend(
            extra
                .into_iter()
                .map(|s| s.as_ref().to_string_lossy().into_owned()),
        );
        let mut cmd = Command::new(Gateway::bin());
        if !verbose {
            cmd.env("RUST_LOG", "warn");
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `lim`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", Gateway::bin().display()));
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
            Gateway::bin().display(),
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

    /// The `/api/v1/sessions` entries of `protocol` (`rtsp`, `webrtc`,
    /// `hls`); empty when the API does not answer.
    pub fn sessions(&self, protocol: &str) -> Vec<serde_json::Value> {
        self.http_get("/api/v1/sessions")
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v["sessions"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["protocol"] == protocol)
            .collect()
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

impl Gateway {
    /// The log lines that report a panic (any thread, caught or not).
    pub fn panic_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(PANIC_MARK))
            .map(str::to_string)
            .collect()
    }

    /// Fails the test (with the log) if the gateway panicked so far. Also
    /// run on drop: a gateway that panicked fails every test that ran it,
    /// even when the panicking task was caught and the clients saw nothing.
    #[track_caller]
    pub fn assert_no_panic(&mut self) {
        let lines = self.panic_lines();
        if !lines.is_empty() {
            self.fail(&format!("the gateway panicked:\n  {}", lines.join("\n  ")));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            if !self.log_shown {
                eprintln!(
                    "--- gateway log ({}) ---\n{}",
                    self.log_path.display(),
                    tail(&self.log(), 200)
                );
            }
        } else {
            self.assert_no_panic();
        }
    }
}
