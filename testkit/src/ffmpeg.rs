//! ffmpeg and ffprobe as RTSP readers: what a fresh reader decodes, with
//! counts, pts and the first packet's key flag.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::camera::PYTHON;
use crate::process::{
    drain, kill_and_reap, read_lossy, run_bounded, scratch_path, tail, wait_with_deadline, Finished,
};

/// Grace period on top of the requested read duration before ffmpeg is killed.
pub const FFMPEG_GRACE: Duration = Duration::from_secs(15);
/// Socket I/O timeout handed to ffmpeg/ffprobe's RTSP demuxer.
const RTSP_IO_TIMEOUT_US: &str = "10000000";

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
    /// pts of every decoded frame, seconds, in output order.
    pub pts: Vec<f64>,
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

    /// The median distance between consecutive decoded frames' pts,
    /// seconds: the frame interval (40 ms at 25 fps; 21.3 ms for 1024-sample
    /// AAC frames at 48 kHz).
    pub fn frame_interval(&self) -> Option<f64> {
        let mut d: Vec<f64> = self.pts.windows(2).map(|w| w[1] - w[0]).collect();
        if d.is_empty() {
            return None;
        }
        d.sort_by(f64::total_cmp);
        Some(d[d.len() / 2])
    }

    /// Gaps in the decoded timeline: `(pts before, pts after)` for every pair
    /// of consecutive frames further apart than [`PTS_GAP_FRAMES`] frame
    /// intervals (frames lost or never sent), and for every step backwards
    /// (a timeline that jumps back).
    pub fn pts_gaps(&self) -> Vec<(f64, f64)> {
        let Some(interval) = self.frame_interval().filter(|i| *i > 0.0) else {
            return Vec::new();
        };
        self.pts
            .windows(2)
            .filter(|w| w[1] - w[0] > PTS_GAP_FRAMES * interval || w[1] < w[0])
            .map(|w| (w[0], w[1]))
            .collect()
    }
}

/// How many frame intervals two consecutive decoded frames may be apart
/// before [`StreamReport::pts_gaps`] calls it a gap: 2.5 tolerates the
/// jitter of a live encoder, while one missing frame (2 intervals) plus
/// jitter or two missing frames (3 intervals) is a gap.
pub const PTS_GAP_FRAMES: f64 = 2.5;

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
    /// Packets ffmpeg's RTP demuxer reported missing (sum of its
    /// "RTP: missed N packets" warnings).
    pub missed_packets: u64,
    /// Ended by [`FfmpegReader::stop`] while ffmpeg was still reading
    /// (its exit code then reports the signal).
    pub stopped: bool,
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
        } else if self.exit_code != Some(0) && !self.stopped {
            p.push(format!("ffmpeg exit code {:?}", self.exit_code));
        }
        if !self.errors.is_empty() {
            p.push(format!("{} error line(s) from ffmpeg", self.errors.len()));
        }
        if self.missed_packets > 0 {
            p.push(format!(
                "ffmpeg's RTP demuxer missed {} packet(s) (\"RTP: missed N packets\")",
                self.missed_packets
            ));
        }
        for s in &self.streams {
            let gaps = s.pts_gaps();
            if !gaps.is_empty() {
                let shown: Vec<String> = gaps
                    .iter()
                    .take(5)
                    .map(|(a, b)| format!("{a:.3} s -> {b:.3} s"))
                    .collect();
                p.push(format!(
                    "{} pts gap(s) in {} stream #{} (frame interval {:.1} ms): {}",
                    gaps.len(),
                    s.kind,
                    s.index,
                    s.frame_interval().unwrap_or(0.0) * 1000.0,
                    shown.join(", ")
                ));
            }
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
    pts: Vec<f64>,
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
            s.pts.push(p);
        }
    }
    out
}

/// Decodes every frame of every stream of `url` for `seconds` with ffmpeg and
/// reports what it saw. Never takes longer than `seconds` + [`FFMPEG_GRACE`].
pub fn ffmpeg_read(url: &str, transport: Transport, seconds: f64) -> ReadReport {
    FfmpegReader::start(url, transport, seconds).finish()
}

/// An ffmpeg reader running in the background (see [`ffmpeg_read`]), for
/// tests that end the read on an event rather than after a fixed time.
pub struct FfmpegReader {
    child: Child,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    packets_path: PathBuf,
    url: String,
    transport: Transport,
    seconds: f64,
    started: Instant,
}

impl FfmpegReader {
    /// Starts decoding `url` for at most `seconds` of media.
    pub fn start(url: &str, transport: Transport, seconds: f64) -> FfmpegReader {
        let packets_path = scratch_path("packets", "crc");
        let mut cmd = read_command(url, transport, seconds, &packets_path);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ffmpeg: {e} (is it installed? see .ci/run)"));
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        FfmpegReader {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            packets_path,
            url: url.to_string(),
            transport,
            seconds,
            started: Instant::now(),
        }
    }

    /// Waits for the read to end by itself (at most `seconds` +
    /// [`FFMPEG_GRACE`] after the start; killed then).
    pub fn finish(mut self) -> ReadReport {
        let deadline = self.started + Duration::from_secs_f64(self.seconds) + FFMPEG_GRACE;
        let status = wait_with_deadline(
            &mut self.child,
            deadline.saturating_duration_since(Instant::now()),
        );
        self.report(status, false)
    }

    /// Ends the read now as Ctrl-C would (SIGINT: ffmpeg flushes what it
    /// decoded and exits), killing ffmpeg if it has not exited 10 s later.
    /// The report's exit code is then not checked by [`ReadReport::problems`].
    pub fn stop(mut self) -> ReadReport {
        // Exited already: the read ended by itself, not by this stop.
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(10));
        self.report(status, running)
    }

    fn report(mut self, status: Option<ExitStatus>, stopped: bool) -> ReadReport {
        let text = |h: Option<thread::JoinHandle<Vec<u8>>>| {
            let bytes = h.and_then(|h| h.join().ok()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let fin = Finished {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
            elapsed: self.started.elapsed(),
        };
        let packets_text = read_lossy(&self.packets_path);
        let _ = fs::remove_file(&self.packets_path);
        let mut r = parse_read(&self.url, self.transport, self.seconds, fin, &packets_text);
        r.stopped = stopped;
        r
    }
}

impl Drop for FfmpegReader {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn read_command(url: &str, transport: Transport, seconds: f64, packets_path: &Path) -> Command {
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
        .arg(packets_path);
    cmd
}

/// What ffmpeg's stderr (input streams, stream mapping, level-tagged
/// messages) and its two framecrc outputs say about a read.
fn parse_read(
    url: &str,
    transport: Transport,
    seconds: f64,
    fin: Finished,
    packets_text: &str,
) -> ReadReport {
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
    let mut missed_packets = 0;
    for line in fin.stderr.lines() {
        let (level, msg) = split_level(line);
        missed_packets += missed_rtp_packets(msg);
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
            st.pts = s.pts;
        }
    }
    for (out, s) in parse_framecrc(packets_text) {
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
        missed_packets,
        stopped: false,
        stderr: fin.stderr,
    }
}

/// N from ffmpeg's "RTP: missed N packets" (libavformat/rtpdec.c), else 0.
fn missed_rtp_packets(msg: &str) -> u64 {
    msg.split_once("RTP: missed ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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
    // Nothing decoded is not a keyframe.
    f.packet_key && f.frame_key == Some(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_and_missed_packets_from_a_stderr_line() {
        let line = "[rtsp @ 0x55d0c0a2b2c0] [warning] RTP: missed 3 packets";
        let (level, msg) = split_level(line);
        assert_eq!(level, Some("warning"));
        assert_eq!(missed_rtp_packets(msg), 3);
        assert_eq!(missed_rtp_packets("RTP: PT=60: bad cseq"), 0);
    }

    #[test]
    fn framecrc_pts_and_key_flags() {
        let text = "#tb 0: 1/90000\n#tb 1: 1/48000\n\
                    0, 0, 0, 3600, 100, 0x1\n\
                    1, 0, 0, 1024, 10, 0x2\n\
                    0, 3600, 3600, 3600, 100, 0x3, F=0x0\n";
        let s = parse_framecrc(text);
        assert_eq!(s[&0].count, 2);
        assert_eq!(s[&0].first_key, Some(true));
        assert_eq!(s[&0].pts.len(), 2);
        assert!((s[&0].pts[1] - 0.04).abs() < 1e-9, "{:?}", s[&0].pts);
        assert_eq!(s[&1].pts, [0.0]);
    }

    fn stream(pts: &[f64]) -> StreamReport {
        StreamReport {
            frames: pts.len() as u64,
            pts: pts.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_frame_or_a_step_back_is_a_pts_gap() {
        let even: Vec<f64> = (0..50).map(|i| f64::from(i) * 0.04).collect();
        assert!(stream(&even).pts_gaps().is_empty());
        let mut two_lost = even.clone();
        two_lost.drain(10..12);
        let gaps = stream(&two_lost).pts_gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!((gaps[0].0 - 0.36).abs() < 1e-9 && (gaps[0].1 - 0.48).abs() < 1e-9);
        let mut one_lost = even.clone();
        one_lost.remove(10);
        assert!(stream(&one_lost).pts_gaps().is_empty(), "jitter-sized");
        let mut back = even.clone();
        back[20] = 0.1;
        assert_eq!(stream(&back).pts_gaps().len(), 2);
        assert!(stream(&[]).pts_gaps().is_empty());
    }

    #[test]
    fn missed_packets_make_a_read_unclean() {
        let r = ReadReport {
            url: "rtsp://x".into(),
            transport: Transport::Tcp,
            seconds: 1.0,
            exit_code: Some(0),
            timed_out: false,
            elapsed: Duration::from_secs(1),
            streams: Vec::new(),
            first_video_packet_key: None,
            errors: Vec::new(),
            warnings: vec!["RTP: missed 2 packets".into()],
            missed_packets: 2,
            stopped: false,
            stderr: String::new(),
        };
        let p = r.problems(0, 0);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("missed 2"), "{p:?}");
    }
}
