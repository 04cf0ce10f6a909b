//! Headless Chromium: the node scripts under `tests/browser/` (playwright-core
//! driving Debian's /usr/bin/chromium), each printing one line of JSON last.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{repo_root, run_bounded, tail};

/// `tests/browser/`, where the node scripts and their node_modules live.
pub fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
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

/// What a browser must show over the fixed window after its first decoded
/// frame (the `window` object of the scripts under `tests/browser/`).
#[derive(Debug, Clone, Copy)]
pub struct WindowRule {
    /// Decoded frames in the window, at least (90 in 4 s at 25 fps: 90 %).
    pub min_frames: u64,
    /// Dropped frames in the window, at most.
    pub max_dropped: u64,
    /// Allowed range of `currentTime` advance per wall second.
    pub rate: (f64, f64),
    /// Whether audio must have been decoded in the window.
    pub audio: bool,
    /// hls.js stall errors (`bufferStalledError`) in the window, at most.
    pub max_stalls: u64,
    /// WebRTC video freezes (`freezeCount`) in the window, at most.
    pub max_freezes: u64,
}

impl WindowRule {
    /// 25 fps video for the scripts' default 4 s window: >= 90 frames,
    /// <= 5 dropped, `currentTime` advancing at 0.8–1.2× wall time.
    pub const fn video_25fps(audio: bool) -> WindowRule {
        WindowRule {
            min_frames: 90,
            max_dropped: 5,
            rate: (0.8, 1.2),
            audio,
            max_stalls: 0,
            max_freezes: 0,
        }
    }

    /// Problems with `report["window"]` as human-readable lines: missing
    /// window, too few frames, too many dropped, playback not at about 1×,
    /// stalls (waiting events, freezes, hls.js stall errors), lost packets,
    /// no audio decoded.
    pub fn problems(&self, report: &serde_json::Value) -> Vec<String> {
        let w = &report["window"];
        if !w.is_object() {
            return vec![format!(
                "no measurement window after the first frame (first frame never decoded?): {report}"
            )];
        }
        let n = |k: &str| w[k].as_f64().unwrap_or(0.0);
        let mut p = Vec::new();
        if n("frames") < self.min_frames as f64 {
            p.push(format!(
                "{} frames decoded in the {:.1} s window, want >= {}",
                n("frames"),
                n("seconds"),
                self.min_frames
            ));
        }
        if n("dropped") > self.max_dropped as f64 {
            p.push(format!(
                "{} frames dropped in the window, want <= {}",
                n("dropped"),
                self.max_dropped
            ));
        }
        let (lo, hi) = self.rate;
        if !(lo..=hi).contains(&n("rate")) {
            p.push(format!(
                "currentTime advanced {:.2} s in {:.2} s ({:.2}x), want {lo}x..{hi}x",
                n("currentTimeAdvance"),
                n("seconds"),
                n("rate")
            ));
        }
        if n("freezes") > self.max_freezes as f64 {
            p.push(format!(
                "freezes = {} in the window, want <= {}",
                n("freezes"),
                self.max_freezes
            ));
        }
        for k in ["waiting", "packetsLost"] {
            if n(k) > 0.0 {
                p.push(format!("{k} = {} in the window, want 0", n(k)));
            }
        }
        if n("stalls") > self.max_stalls as f64 {
            p.push(format!(
                "stalls = {} in the window, want <= {}",
                n("stalls"),
                self.max_stalls
            ));
        }
        if self.audio && n("audioSamples") <= 0.0 && n("audioDecodedBytes") <= 0.0 {
            p.push("no audio decoded in the window".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_that_plays_passes_and_a_stall_fails() {
        let rule = WindowRule::video_25fps(true);
        let good = serde_json::json!({"window": {"seconds": 4.0, "frames": 100,
            "dropped": 0, "rate": 1.0, "currentTimeAdvance": 4.0, "waiting": 0,
            "audioSamples": 192000}});
        assert!(
            rule.problems(&good).is_empty(),
            "{:?}",
            rule.problems(&good)
        );
        let stalled = serde_json::json!({"window": {"seconds": 4.0, "frames": 40,
            "dropped": 9, "rate": 0.4, "currentTimeAdvance": 1.6, "waiting": 2,
            "audioSamples": 0}});
        assert_eq!(
            rule.problems(&stalled).len(),
            5,
            "{:?}",
            rule.problems(&stalled)
        );
        assert_eq!(rule.problems(&serde_json::json!({})).len(), 1);
    }
}
