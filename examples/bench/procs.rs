//! Processes and network namespaces the benchmark starts, and what it
//! reads about them from /proc. Everything started is registered, so Drop
//! *and* Ctrl-C (see [`cleanup_all`]) kill it and delete the namespaces.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to remove on Ctrl-C.
#[derive(Default)]
struct Live {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    pids: Vec::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory removed on drop (and on Ctrl-C).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn create(path: PathBuf) -> Result<TempDir, String> {
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        live().dirs.push(path.clone());
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        live().dirs.retain(|d| *d != self.0);
    }
}

/// Kills every registered process and deletes every registered namespace
/// (for the Ctrl-C handler; Drop does the same one by one).
pub fn cleanup_all() {
    let Live {
        pids,
        namespaces,
        dirs,
    } = std::mem::take(&mut *live());
    for pid in pids {
        // Each child leads its own process group (see Proc::spawn).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
    for ns in namespaces {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns `cmd` in a process group of its own, so that what it starts
    /// (a profiling wrapper's child) is stopped with it.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc, String> {
        let child = cmd
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        live().pids.push(child.id());
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Spawns `cmd` with stdout piped and waits up to `timeout` for a line
    /// starting with `READY `; returns the rest of it.
    pub fn spawn_ready(
        name: &str,
        cmd: &mut Command,
        timeout: Duration,
    ) -> Result<(Proc, String), String> {
        cmd.stdout(Stdio::piped());
        let mut p = Proc::spawn(name, cmd)?;
        let out = p
            .child
            .stdout
            .take()
            .ok_or_else(|| format!("{name}: no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("READY ") {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(v) => Ok((p, v)),
            Err(_) => {
                let alive = p.running();
                Err(format!(
                    "{name} did not print READY within {timeout:?} ({})",
                    if alive { "still running" } else { "exited" }
                ))
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so servers can say goodbye (RTSP TEARDOWN) and the
        // camera stops sending to them; SIGKILL after a second.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        live().pids.retain(|p| *p != pid);
    }
}

/// A network namespace with one veth pair: `host` (here) ↔ `peer` (inside),
/// a /30 between them, loopback up inside, and no other route: traffic from
/// inside can reach only `host`. Deleted on drop (which also removes the
/// veth pair).
pub struct NetNs {
    pub name: String,
    pub host: Ipv4Addr,
    pub peer: Ipv4Addr,
    pub peer_if: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// `index` picks the /30: 10.200.<index>.0/30.
    pub fn create(index: u8) -> Result<NetNs, String> {
        let pid = std::process::id();
        let name = format!("rtspgate-bench-{pid}-{index}");
        let host_if = format!("rgb{}h{index}", pid % 100_000);
        let peer_if = format!("rgb{}n{index}", pid % 100_000);
        let host = Ipv4Addr::new(10, 200, index, 1);
        let peer = Ipv4Addr::new(10, 200, index, 2);
        // Refuse to shadow an address range the machine already uses.
        let routes = Command::new("ip")
            .args(["-4", "route", "show", "to", "match", &host.to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if routes.lines().any(|l| !l.starts_with("default")) {
            return Err(format!(
                "10.200.{index}.0/30 is already routed here ({}); not creating a namespace over it",
                routes.trim()
            ));
        }
        ip(&["netns", "add", &name])?;
        live().namespaces.push(name.clone());
        let ns = NetNs {
            name,
            host,
            peer,
            peer_if: peer_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ])?;
        ip(&["link", "set", &peer_if, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{peer}/30"),
            "dev",
            &peer_if,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &peer_if, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program args...` run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let name = self.name.clone();
        live().namespaces.retain(|n| *n != name);
    }
}

/// The first descendant of `pid` whose command name is `name`.
pub fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return Some(c);
            }
            todo.push(c);
        }
    }
    None
}

/// stdin and stderr to /dev/null.
pub fn stdio_null(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null()).stderr(Stdio::null())
}
