//! VLC's RTSP server as a camera: `cvlc` serving a looped H.264 clip with
//! `--sout '#rtp{sdp=rtsp://…}'`. Its RTSP server offers RTP over UDP only
//! (a SETUP asking for `RTP/AVP/TCP` interleaved is answered `461
//! Unsupported Transport`, VLC 3.0.24): the "UDP-only camera" of issue 12.
//! VLC sends whether anyone reads or not, so a client may start mid-FU-A;
//! the kit does not rely on that (this clip's keyframes are small), use
//! [`crate::udp_relay::Relay::start_mid_fragment`] for a sure one.
//!
//! VLC refuses to run as root, so under euid 0 it runs as `nobody` via
//! `runuser`; the clip lives in a world-readable temp dir. The whole process
//! group is killed on drop (killing `runuser` alone would leave VLC).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{poll_until, read_lossy, run_bounded, scratch_path, tail};
use crate::rtsp_raw::{RawResponse, RawRtsp};

/// How long VLC may take to answer DESCRIBE with 200.
pub const VLC_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running VLC RTSP server; killed (with its process group) on drop.
pub struct Vlc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Vlc {
    /// Makes a 15 s 320x180 25 fps H.264 clip (ffmpeg testsrc, keyframe
    /// every 25 frames), serves it looped at `rtsp://127.0.0.1:<port>/test`
    /// and waits until DESCRIBE answers 200 (panics after
    /// [`VLC_READY_TIMEOUT`]).
    pub fn start() -> Vlc {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtspgate-vlc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create VLC temp dir");
        // `nobody` must reach the clip.
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        let clip = dir.join("clip.mp4");
        let made = run_bounded(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-v", "error", "-f", "lavfi"])
                .args(["-i", "testsrc=size=320x180:rate=25", "-t", "15"])
                .args(["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-y"])
                .arg(&clip),
            Duration::from_secs(30),
        );
        assert!(
            made.success(),
            "ffmpeg could not make the clip: {}",
            made.stderr
        );
        let _ = fs::set_permissions(&clip, fs::Permissions::from_mode(0o644));

        let port = free_port();
        let log = scratch_path("vlc", "log");
        let sout = format!("#rtp{{sdp=rtsp://127.0.0.1:{port}/test}}");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "cvlc"]);
            c
        } else {
            Command::new("cvlc")
        };
        cmd.args(["-q", "--loop", "--no-audio"])
            .arg(&clip)
            .args(["--sout", &sout])
            // Own process group: drop kills runuser and VLC together.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log).expect("create VLC log")));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn cvlc (is vlc installed?): {e}"));
        let vlc = Vlc {
            child: Some(child),
            port,
            dir,
            log,
        };
        let ready = poll_until(VLC_READY_TIMEOUT, Duration::from_millis(200), || {
            vlc.describe().filter(|r| r.status == 200)
        });
        assert!(
            ready.is_some(),
            "VLC did not answer DESCRIBE with 200 within {VLC_READY_TIMEOUT:?}; log:\n{}",
            tail(&read_lossy(&vlc.log), 40)
        );
        vlc
    }

    /// `rtsp://127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// One DESCRIBE on a fresh connection; `None` if refused or no answer
    /// within 5 s.
    pub fn describe(&self) -> Option<RawResponse> {
        let mut c = RawRtsp::connect(self.port).ok()?;
        c.exchange(&format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n",
            self.url()
        ))
    }

    /// What VLC wrote to stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

impl Drop for Vlc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pgid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on our own child's process group.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
