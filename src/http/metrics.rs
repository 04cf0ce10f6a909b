//! Prometheus text exposition (format 0.0.4) at `/metrics`: per path
//! counters and gauges, readers by protocol, and process metrics from /proc.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;

use super::AppState;
use crate::bus::{Protocol, StreamState};
use crate::limits::{Limiters, RefuseReason};

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `# HELP` and `# TYPE` for one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A per-path metric: name, type, help, and how to read it.
type PerPath = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::bus::StreamStats) -> u64,
);

/// The whole exposition; `limiters` (put into the router by `lib.rs`) adds
/// the listeners' connection counts.
pub fn render(app: &AppState, limiters: Option<&Limiters>) -> String {
    let mut out = String::with_capacity(4096);
    let streams = app.registry.list();
    let per_path: [PerPath; 5] = [
        (
            "rtspgate_bytes_in_total",
            "counter",
            "Media payload bytes received from the source.",
            |s| s.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "rtspgate_bytes_out_total",
            "counter",
            "Media bytes sent to readers: RTP over RTSP and WebRTC, files over LL-HLS.",
            |s| s.bytes_out.load(Ordering::Relaxed),
        ),
        (
            "rtspgate_frames_in_total",
            "counter",
            "Frames (access units) received from the source.",
            |s| s.frames_in.load(Ordering::Relaxed),
        ),
        (
            "rtspgate_reconnects_total",
            "counter",
            "Times the source failed and was retried.",
            |s| s.reconnects.load(Ordering::Relaxed),
        ),
        (
            "rtspgate_rtp_packets_lost_total",
            "counter",
            "RTP packets lost from the source (sequence number gaps).",
            |s| s.packets_lost.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in per_path {
        family(&mut out, name, kind, help);
        for s in &streams {
            let _ = writeln!(
                out,
                "{name}{{path=\"{}\"}} {}",
                label(s.name()),
                get(&s.stats)
            );
        }
    }
    family(
        &mut out,
        "rtspgate_frames_dropped_total",
        "counter",
        "Access units from the source that could not be rebuilt or decoded and were dropped, by reason (loss, mid_fragment, truncated, corrupt, too_large, unsupported, no_reference).",
    );
    for s in &streams {
        for (reason, n) in s.stats.frames_dropped() {
            let _ = writeln!(
                out,
                "rtspgate_frames_dropped_total{{path=\"{}\",reason=\"{}\"}} {n}",
                label(s.name()),
                reason.as_str()
            );
        }
    }
    family(
        &mut out,
        "rtspgate_stream_live",
        "gauge",
        "1 while the path's source is live, else 0.",
    );
    for s in &streams {
        let live = u8::from(s.state() == StreamState::Live);
        let _ = writeln!(
            out,
            "rtspgate_stream_live{{path=\"{}\"}} {live}",
            label(s.name())
        );
    }
    family(
        &mut out,
        "rtspgate_jitter_seconds",
        "gauge",
        "Interarrival jitter of the source per track (RFC 3550 §6.4.1, from frame arrival times).",
    );
    for s in &streams {
        for (i, j) in s.stats.jitter().iter().enumerate() {
            let _ = writeln!(
                out,
                "rtspgate_jitter_seconds{{path=\"{}\",track=\"{i}\"}} {j:.6}",
                label(s.name())
            );
        }
    }
    family(
        &mut out,
        "rtspgate_readers",
        "gauge",
        "Sessions by path and protocol (RTSP readers, WHEP sessions, LL-HLS muxers).",
    );
    for s in &streams {
        for protocol in Protocol::ALL {
            let _ = writeln!(
                out,
                "rtspgate_readers{{path=\"{}\",protocol=\"{protocol}\"}} {}",
                label(s.name()),
                app.sessions.count(protocol, s.name())
            );
        }
    }
    if let Some(limiters) = limiters {
        connection_metrics(&mut out, limiters);
    }
    process_metrics(&mut out);
    out
}

/// Per TCP listener: connections open, the cap, and refusals by cap.
fn connection_metrics(out: &mut String, limiters: &Limiters) {
    family(
        out,
        "rtspgate_connections",
        "gauge",
        "TCP connections open per listener (rtsp, rtsps, http, ice_tcp).",
    );
    for l in &limiters.0 {
        let _ = writeln!(
            out,
            "rtspgate_connections{{listener=\"{}\"}} {}",
            l.listener().name(),
            l.current()
        );
    }
    family(
        out,
        "rtspgate_connections_max",
        "gauge",
        "max_connections of each listener, as fitted under the open-file limit.",
    );
    for l in &limiters.0 {
        let _ = writeln!(
            out,
            "rtspgate_connections_max{{listener=\"{}\"}} {}",
            l.listener().name(),
            l.max()
        );
    }
    family(
        out,
        "rtspgate_connections_refused_total",
        "counter",
        "TCP connections refused at accept, by listener and the cap reached.",
    );
    for l in &limiters.0 {
        for reason in RefuseReason::ALL {
            let _ = writeln!(
                out,
                "rtspgate_connections_refused_total{{listener=\"{}\",reason=\"{}\"}} {}",
                l.listener().name(),
                reason.name(),
                l.refused(reason)
            );
        }
    }
}

/// Standard process metrics (as the Prometheus client libraries name them).
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) start at ") ".
    let Some(rest) = stat.rfind(") ").map(|i| &stat[i + 2..]) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // USER_HZ and the page size are 100 and 4096 on every Linux we run on.
    let ticks = 100.0;
    let page = 4096.0;
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // Indexes per proc(5), minus the 2 fields before ") ".
    if let (Some(utime), Some(stime)) = (num(11), num(12)) {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {:.2}",
            (utime + stime) / ticks
        );
    }
    if let Some(threads) = num(17) {
        family(out, "process_threads", "gauge", "OS threads.");
        let _ = writeln!(out, "process_threads {threads}");
    }
    if let Some(vsize) = num(20) {
        family(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    }
    if let Some(rss) = num(21) {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page);
    }
    if let (Some(start), Ok(uptime)) = (num(19), std::fs::read_to_string("/proc/uptime")) {
        let up: f64 = uptime
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        family(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time since the Unix epoch in seconds.",
        );
        let _ = writeln!(
            out,
            "process_start_time_seconds {:.0}",
            now - up + start / ticks
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
}

pub async fn handler(
    State(app): State<AppState>,
    limiters: Option<Extension<Arc<Limiters>>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&app, limiters.as_deref().map(|l| &**l)),
    )
}
