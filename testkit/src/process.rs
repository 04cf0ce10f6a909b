//! Child processes with hard deadlines, scratch files, polling.
//!
//! Every helper is bounded in time and every child is killed on `Drop` by
//! its owner, so a failing test never leaves processes behind or hangs.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Serialises tests that spawn heavy processes (encoders, decoders): the CI
/// machine has two cores. Poisoning (a panicking test) is ignored.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The repository root (the testkit lives in `<root>/testkit`).
pub fn repo_root() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent().unwrap_or(kit).to_path_buf()
}

/// `target/<profile>` of the running test or example: integration tests run
/// from `target/<profile>/deps/`, examples from `target/<profile>/examples/`,
/// and cargo puts the binaries they need (`rtspgate`) in `target/<profile>/`.
pub fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().map(Path::to_path_buf),
        _ => Some(dir.to_path_buf()),
    }
}

/// A fresh, unique path for logs and scratch files, under `target/tmp/e2e`
/// (the system temp dir if the target dir cannot be found).
pub fn scratch_path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = profile_dir()
        .and_then(|p| p.parent().map(|t| t.join("tmp")))
        .unwrap_or_else(std::env::temp_dir)
        .join("e2e");
    fs::create_dir_all(&dir).expect("create target tmp dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{stem}-{}-{n}.{ext}", std::process::id()))
}

pub fn read_lossy(path: &Path) -> String {
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

pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` to exit for at most `timeout`; kills it afterwards.
/// Returns the exit status, or `None` if it had to be killed.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub fn drain<R: Read + Send + 'static>(r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut r = r;
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Output of a child run with a hard deadline.
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Finished {
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
