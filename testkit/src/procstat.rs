//! CPU and memory of a process from /proc (proc(5)), for the benchmarks.

use std::process::Command;
use std::time::Instant;

/// Clock ticks per second (`getconf CLK_TCK`, 100 if unknown).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds (proc(5) fields 14 and 15).
pub fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3: utime (14) is index 11, stime (15) index 12.
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tck
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds used by `pids` together over a window.
pub struct CpuWindow {
    pids: Vec<u32>,
    tck: f64,
    c0: f64,
    t0: Instant,
}

impl CpuWindow {
    pub fn start(pids: &[u32], tck: f64) -> CpuWindow {
        CpuWindow {
            pids: pids.to_vec(),
            tck,
            c0: pids.iter().map(|p| cpu_seconds(*p, tck)).sum(),
            t0: Instant::now(),
        }
    }

    /// (CPU seconds, wall seconds) since `start`.
    pub fn end(&self) -> (f64, f64) {
        let c1: f64 = self.pids.iter().map(|p| cpu_seconds(*p, self.tck)).sum();
        (c1 - self.c0, self.t0.elapsed().as_secs_f64())
    }
}
