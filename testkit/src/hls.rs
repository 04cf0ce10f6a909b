//! ffmpeg's HLS demuxer as a reader: decodes every frame of an HLS URL for
//! a while and reports each stream's decoded pts, so a test can count
//! frames and find a missing one.

use std::fmt;
use std::process::Command;
use std::time::Duration;

use crate::process::{run_bounded, tail};

/// How long past the requested seconds ffmpeg may take before it is killed
/// (it first waits for a playlist and a segment).
const HLS_GRACE: Duration = Duration::from_secs(20);

/// One output stream of ffmpeg's `framecrc`: its media type and the pts of
/// every decoded frame, in the stream's time base (`1/fps` for video with
/// `-fps_mode passthrough`, `1/sample rate` for audio).
#[derive(Debug, Default, Clone)]
pub struct HlsStream {
    pub media_type: String,
    pub pts: Vec<i64>,
}

/// What ffmpeg decoded from an HLS URL ([`ffmpeg_read_hls`]).
#[derive(Debug, Clone)]
pub struct HlsRead {
    pub url: String,
    /// None if ffmpeg had to be killed.
    pub exit_code: Option<i32>,
    pub streams: Vec<HlsStream>,
    /// `[error]`, `[fatal]` and `[panic]` lines of stderr.
    pub errors: Vec<String>,
    pub stderr: String,
}

impl HlsRead {
    fn pts(&self, kind: &str) -> &[i64] {
        self.streams
            .iter()
            .find(|s| s.media_type == kind)
            .map_or(&[], |s| &s.pts[..])
    }

    /// Decoded video frames' pts, in frame units (1/fps).
    pub fn video(&self) -> &[i64] {
        self.pts("video")
    }

    /// Decoded audio frames' pts (1/sample rate).
    pub fn audio(&self) -> &[i64] {
        self.pts("audio")
    }

    /// Consecutive decoded video frames whose pts differ by other than one
    /// frame: `(before, after)`, in frames (a frame missing or repeated).
    pub fn video_gaps(&self) -> Vec<(i64, i64)> {
        self.video()
            .windows(2)
            .filter(|w| w[1] - w[0] != 1)
            .map(|w| (w[0], w[1]))
            .collect()
    }

    /// Whether ffmpeg's stderr says `what` (e.g. `"Audio: opus"` of an
    /// input stream line).
    pub fn input_has(&self, what: &str) -> bool {
        self.stderr.contains(what)
    }

    /// Problems of a read that should have decoded every frame: a bad exit,
    /// error lines, a video pts gap, fewer frames than asked.
    pub fn problems(&self, min_video: usize, min_audio: usize) -> Vec<String> {
        let mut p = Vec::new();
        if self.exit_code != Some(0) {
            p.push(format!("ffmpeg exit code {:?}", self.exit_code));
        }
        if !self.errors.is_empty() {
            p.push(format!("{} error line(s) from ffmpeg", self.errors.len()));
        }
        let gaps = self.video_gaps();
        if !gaps.is_empty() {
            p.push(format!("video pts gaps (in frames): {gaps:?}"));
        }
        if self.video().len() < min_video {
            p.push(format!(
                "{} video frames decoded, want >= {min_video}",
                self.video().len()
            ));
        }
        if self.audio().len() < min_audio {
            p.push(format!(
                "{} audio frames decoded, want >= {min_audio}",
                self.audio().len()
            ));
        }
        p
    }

    /// Panics with the report unless [`HlsRead::problems`] is empty.
    #[track_caller]
    pub fn assert_clean(&self, min_video: usize, min_audio: usize) {
        let p = self.problems(min_video, min_audio);
        assert!(
            p.is_empty(),
            "unclean HLS read:\n  - {}\n{self}",
            p.join("\n  - ")
        );
    }
}

impl fmt::Display for HlsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ffmpeg read {}: exit {:?}; {} video, {} audio frames decoded",
            self.url,
            self.exit_code,
            self.video().len(),
            self.audio().len()
        )?;
        write!(f, "--- ffmpeg stderr ---\n{}", tail(&self.stderr, 30))
    }
}

/// Decodes `seconds` of the HLS stream at `url` with ffmpeg (every stream,
/// every frame with its own timestamp: no frame-rate conversion, so a frame
/// missing from the stream is a pts gap). Never takes longer than `seconds`
/// + 20 s.
pub fn ffmpeg_read_hls(url: &str, seconds: u64) -> HlsRead {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats"])
        // Info for the input's stream lines; every line is tagged with its
        // level, so error lines are found by tag.
        .args(["-loglevel", "level+info"])
        .args(["-rw_timeout", "10000000", "-i", url])
        .args(["-t", &seconds.to_string(), "-map", "0"])
        .args(["-fps_mode", "passthrough", "-f", "framecrc", "-"]);
    let fin = run_bounded(&mut cmd, Duration::from_secs(seconds) + HLS_GRACE);
    let errors = fin
        .stderr
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[fatal]") || l.contains("[panic]"))
        .map(str::to_string)
        .collect();
    HlsRead {
        url: url.to_string(),
        exit_code: fin.status.and_then(|s| s.code()),
        streams: parse_framecrc(&fin.stdout),
        errors,
        stderr: fin.stderr,
    }
}

fn parse_framecrc(text: &str) -> Vec<HlsStream> {
    let mut streams: Vec<HlsStream> = Vec::new();
    let slot = |streams: &mut Vec<HlsStream>, i: usize| {
        if streams.len() <= i {
            streams.resize_with(i + 1, HlsStream::default);
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#media_type ") {
            if let Some((i, kind)) = rest.split_once(": ") {
                if let Ok(i) = i.parse::<usize>() {
                    slot(&mut streams, i);
                    streams[i].media_type = kind.trim().to_owned();
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // "stream, dts, pts, duration, size, crc"
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if let (Some(Ok(i)), Some(Ok(pts))) = (
            fields.first().map(|s| s.parse::<usize>()),
            fields.get(2).map(|s| s.parse::<i64>()),
        ) {
            slot(&mut streams, i);
            streams[i].pts.push(pts);
        }
    }
    streams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framecrc_streams_and_a_video_gap() {
        let text = "#tb 0: 1/25\n#media_type 0: video\n#tb 1: 1/48000\n#media_type 1: audio\n\
                    0, 0, 0, 1, 100, 0x1\n1, 0, 0, 960, 10, 0x2\n0, 1, 1, 1, 100, 0x3\n\
                    0, 3, 3, 1, 100, 0x4\n";
        let r = HlsRead {
            url: "http://x".into(),
            exit_code: Some(0),
            streams: parse_framecrc(text),
            errors: Vec::new(),
            stderr: String::new(),
        };
        assert_eq!(r.video(), [0, 1, 3]);
        assert_eq!(r.audio(), [0]);
        assert_eq!(r.video_gaps(), [(1, 3)]);
        assert_eq!(r.problems(3, 1).len(), 1);
    }
}
