//! VLC's RTSP server as a camera: `cvlc` streaming a looped H.264 clip with
//! `--sout '#rtp{sdp=rtsp://…}'`. It sends RTP over UDP only (no
//! interleaved TCP) and a client joins the running stream wherever it is,
//! so the first packet it gets is often the middle of an FU-A (issue 12).
//!
//! VLC refuses to run as root: under euid 0 it runs as `nobody` through
//! `runuser`, with the clip in a directory `nobody` can read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long VLC may take to answer DESCRIBE after it starts.
const READY: Duration = Duration::from_secs(15);

/// Whether `cvlc` is installed (on `PATH`; `cvlc --version` would refuse
/// to run as root).
pub fn have_vlc() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("cvlc").is_file()))
}

/// A running VLC RTSP server; killed (with its clip directory removed) on
/// drop.
pub struct Vlc {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Vlc {
    /// Makes a 10 s 640x360 25 fps H.264 clip (GOP 25, no B-frames) with
    /// ffmpeg, starts VLC looping it at `rtsp://127.0.0.1:<port>/test`, and
    /// returns once VLC answers DESCRIBE with 200 (panics after 15 s).
    pub fn start() -> Vlc {
        let dir = std::env::temp_dir().join(format!(
            "rtspgate-vlc-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("clip dir");
        set_mode(&dir, 0o755);
        let clip = dir.join("clip.mp4");
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=640x360:rate=25")
            .args(["-t", "10", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"])
            .arg(&clip)
            .status()
            .expect("run ffmpeg");
        assert!(made.success(), "ffmpeg could not make the VLC clip");
        set_mode(&clip, 0o644);
        let port = free_port();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "cvlc"]);
            c
        } else {
            Command::new("cvlc")
        };
        cmd.args(["--intf", "dummy", "--loop", "--sout-keep"])
            .arg(&clip)
            .arg("--sout")
            .arg(format!("#rtp{{sdp=rtsp://127.0.0.1:{port}/test}}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start cvlc");
        let vlc = Vlc { child, port, dir };
        let deadline = Instant::now() + READY;
        while !vlc.describe_ok() {
            assert!(
                Instant::now() < deadline,
                "VLC did not answer DESCRIBE on port {port} within {READY:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        vlc
    }

    /// `rtsp://127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }

    fn describe_ok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\n\r\n", self.url());
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        buf.get(..n).is_some_and(|b| b.starts_with(b"RTSP/1.0 200"))
    }
}

impl Drop for Vlc {
    fn drop(&mut self) {
        // runuser passes SIGKILL on to nothing: kill VLC by its port's
        // command line too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .args(["-f", &format!("rtsp://127.0.0.1:{}/test", self.port)])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
