//! LL-HLS playlists: a typed model of one media playlist, its writer
//! (full and delta updates), the multivariant writer, the blocking-reload
//! decision, and the resource naming scheme. Pure: wall-clock times come in
//! as values.
//!
//! Spec: draft-pantos-hls-rfc8216bis (HLS 2nd edition; the sections cited
//! are those of revision 16).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// `init-<version>.mp4`.
pub fn init_uri(version: u64) -> String {
    format!("init-{version}.mp4")
}

/// `seg-<msn>.mp4`.
pub fn segment_uri(msn: u64) -> String {
    format!("seg-{msn}.mp4")
}

/// `part-<msn>-<index>.mp4` (index 0-based within the segment).
pub fn part_uri(msn: u64, index: u64) -> String {
    format!("part-{msn}-{index}.mp4")
}

/// A media resource named by [`init_uri`], [`segment_uri`] or [`part_uri`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Init(u64),
    Segment(u64),
    Part(u64, u64),
}

/// Parses a file name produced by the URI functions; `None` for anything else
/// (including leading zeros and signs, so each resource has one name).
pub fn parse_uri(name: &str) -> Option<Resource> {
    fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        canonical.then(|| s.parse().ok()).flatten()
    }
    let stem = name.strip_suffix(".mp4")?;
    if let Some(v) = stem.strip_prefix("init-") {
        return num(v).map(Resource::Init);
    }
    if let Some(m) = stem.strip_prefix("seg-") {
        return num(m).map(Resource::Segment);
    }
    let (m, i) = stem.strip_prefix("part-")?.split_once('-')?;
    Some(Resource::Part(num(m)?, num(i)?))
}

/// Formats a wall-clock time as EXT-X-PROGRAM-DATE-TIME wants it (ISO 8601
/// / RFC 3339, UTC, millisecond precision), e.g. `2024-01-01T00:00:00.000Z`.
/// Times before 1970 are written as the epoch.
pub fn format_program_date_time(t: SystemTime) -> String {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds as a decimal-floating-point with 5 decimals (§4.2).
fn secs(d: Duration) -> String {
    format!("{:.5}", d.as_secs_f64())
}

/// Playlist settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistConfig {
    /// Complete segments listed (older ones are removed and EXT-X-MEDIA-SEQUENCE advances).
    pub window: usize,
    /// EXT-X-PART-INF PART-TARGET.
    pub part_target: Duration,
    /// Lower bound for EXT-X-TARGETDURATION (seconds), normally the
    /// configured segment duration rounded up.
    pub min_target_duration: u64,
}

/// One Partial Segment (EXT-X-PART, §4.4.4.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub duration: Duration,
    pub uri: String,
    /// Starts with an independent frame (INDEPENDENT=YES).
    pub independent: bool,
}

/// One Media Segment, complete or in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media Sequence Number.
    pub msn: u64,
    /// EXTINF duration: the sum of the parts' durations.
    pub duration: Duration,
    /// EXT-X-PROGRAM-DATE-TIME of the segment's first frame.
    pub program_date_time: SystemTime,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// EXT-X-MAP URI of its init segment.
    pub map_uri: String,
    pub uri: String,
    pub parts: Vec<Part>,
}

/// The outcome of a blocking playlist reload request (§6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadDecision {
    /// Answer now with the current playlist.
    Ready,
    /// Hold the request until the playlist changes (and time out with 503).
    Wait,
    /// Answer 400 Bad Request; the reason is for the response body.
    BadRequest(&'static str),
}

/// The model of one LL-HLS media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    config: PlaylistConfig,
    segments: VecDeque<Segment>,
    current: Option<Segment>,
    /// MSN the next begun segment gets.
    next_msn: u64,
    discontinuity_sequence: u64,
    /// Largest rounded EXTINF so far (seconds); the target duration never shrinks.
    max_rounded_duration: u64,
}

impl MediaPlaylist {
    /// An empty playlist whose first segment will be `first_msn`.
    pub fn new(config: PlaylistConfig, first_msn: u64) -> Self {
        MediaPlaylist {
            config,
            segments: VecDeque::new(),
            current: None,
            next_msn: first_msn,
            discontinuity_sequence: 0,
            max_rounded_duration: 0,
        }
    }

    pub fn config(&self) -> &PlaylistConfig {
        &self.config
    }

    /// Complete segments, oldest first.
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// The segment in progress (its parts so far), if any.
    pub fn current(&self) -> Option<&Segment> {
        self.current.as_ref()
    }

    /// EXT-X-MEDIA-SEQUENCE: the MSN of the first listed segment.
    pub fn media_sequence(&self) -> u64 {
        self.segments
            .front()
            .or(self.current.as_ref())
            .map_or(self.next_msn, |s| s.msn)
    }

    /// EXT-X-DISCONTINUITY-SEQUENCE (§4.4.3.3): discontinuities removed with
    /// old segments.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// MSN of the last complete segment.
    pub fn last_complete_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// EXT-X-TARGETDURATION (§4.4.3.1): every EXTINF rounded to the nearest
    /// integer is at most this. It only grows (a longer GOP stretches
    /// segments), never shrinks.
    pub fn target_duration(&self) -> u64 {
        self.config
            .min_target_duration
            .max(self.max_rounded_duration)
            .max(1)
    }

    /// Starts a segment; returns its MSN. A segment still in progress is
    /// ended first.
    pub fn begin_segment(
        &mut self,
        program_date_time: SystemTime,
        discontinuity: bool,
        map_uri: String,
    ) -> u64 {
        self.end_segment();
        let msn = self.next_msn;
        self.next_msn += 1;
        self.current = Some(Segment {
            msn,
            duration: Duration::ZERO,
            program_date_time,
            discontinuity,
            map_uri,
            uri: segment_uri(msn),
            parts: Vec::new(),
        });
        msn
    }

    /// Adds a part to the segment in progress; returns its (MSN, index), or
    /// `None` when no segment is in progress.
    pub fn add_part(&mut self, duration: Duration, independent: bool) -> Option<(u64, u64)> {
        let seg = self.current.as_mut()?;
        let index = seg.parts.len() as u64;
        seg.parts.push(Part {
            duration,
            uri: part_uri(seg.msn, index),
            independent,
        });
        seg.duration += duration;
        Some((seg.msn, index))
    }

    /// Completes the segment in progress and drops segments beyond the
    /// window; returns the completed MSN. A segment without parts is
    /// discarded (its MSN is not reused).
    pub fn end_segment(&mut self) -> Option<u64> {
        let seg = self.current.take()?;
        if seg.parts.is_empty() {
            return None;
        }
        let msn = seg.msn;
        // Nearest integer, halves up (§4.4.3.1).
        let rounded = (seg.duration + Duration::from_millis(500)).as_secs();
        self.max_rounded_duration = self.max_rounded_duration.max(rounded);
        self.segments.push_back(seg);
        while self.segments.len() > self.config.window.max(1) {
            if let Some(old) = self.segments.pop_front() {
                // §6.2.1: removing a segment that had EXT-X-DISCONTINUITY
                // increments EXT-X-DISCONTINUITY-SEQUENCE.
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        Some(msn)
    }

    /// The next part to be published, as (MSN, index): the target of
    /// EXT-X-PRELOAD-HINT. Between segments that is part 0 of the next one.
    pub fn next_part(&self) -> (u64, u64) {
        match &self.current {
            Some(s) => (s.msn, s.parts.len() as u64),
            None => (self.next_msn, 0),
        }
    }

    /// Whether (MSN, index) names a part listed now or earlier: `Some(true)`
    /// published, `Some(false)` will never exist (its segment ended with
    /// fewer parts), `None` not yet.
    pub fn part_published(&self, msn: u64, index: u64) -> Option<bool> {
        let (next_msn, next_index) = self.next_part();
        if msn > next_msn || (msn == next_msn && index >= next_index) {
            return None;
        }
        let count = if let Some(c) = self.current.as_ref().filter(|c| c.msn == msn) {
            c.parts.len()
        } else {
            match self.segments.iter().find(|s| s.msn == msn) {
                Some(s) => s.parts.len(),
                // Older than the window, or never completed: whether it
                // existed no longer matters.
                None => return Some(false),
            }
        };
        Some(index < count as u64)
    }

    /// Total duration of what is listed, complete segments and parts in progress.
    fn total_duration(&self) -> Duration {
        self.segments
            .iter()
            .chain(self.current.iter())
            .map(|s| s.duration)
            .sum()
    }

    /// CAN-SKIP-UNTIL (§4.4.3.8): six target durations, the minimum the spec allows.
    pub fn skip_boundary(&self) -> Duration {
        Duration::from_secs(6 * self.target_duration())
    }

    /// How many leading segments a delta update (§6.2.5.1) replaces: those
    /// that end at least CAN-SKIP-UNTIL before the end of the playlist.
    pub fn skippable_segments(&self) -> usize {
        let total = self.total_duration();
        let boundary = self.skip_boundary();
        let mut end = Duration::ZERO;
        let mut n = 0;
        for s in &self.segments {
            end += s.duration;
            if total.saturating_sub(end) >= boundary {
                n += 1;
            } else {
                break;
            }
        }
        n
    }

    /// Writes the media playlist (§4.4). With `skip` (the `_HLS_skip=YES`
    /// directive, §6.2.5.1) older segments are replaced by
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS=n` (§4.4.5.2) when any are old enough.
    ///
    /// Parts are listed for the segment in progress and the complete
    /// segments ending within three target durations of the end of the
    /// playlist (§6.2.2: older parts SHOULD be removed).
    ///
    /// `query` (URL-encoded `k=v&...`, empty for none) is appended to every
    /// URI written (map, parts, segments, preload hint), e.g. the
    /// credentials of a player that can't send headers.
    pub fn write_media_playlist(&self, skip: bool, query: &str) -> String {
        let td = self.target_duration();
        let mut o = String::with_capacity(2048);
        // `write!` into a String cannot fail.
        let _ = writeln!(o, "#EXTM3U");
        let _ = writeln!(o, "#EXT-X-VERSION:9");
        let _ = writeln!(o, "#EXT-X-TARGETDURATION:{td}");
        let _ = writeln!(
            o,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={}",
            secs(self.skip_boundary()),
            secs(self.config.part_target * 3),
        );
        let _ = writeln!(
            o,
            "#EXT-X-PART-INF:PART-TARGET={}",
            secs(self.config.part_target)
        );
        let _ = writeln!(o, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence());
        let _ = writeln!(
            o,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        let _ = writeln!(o, "#EXT-X-INDEPENDENT-SEGMENTS");

        let skipped = if skip { self.skippable_segments() } else { 0 };
        if skipped > 0 {
            let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }

        let total = self.total_duration();
        let parts_window = Duration::from_secs(3 * td);
        let mut end = Duration::ZERO;
        let mut map: Option<&str> = None;
        for (i, s) in self.segments.iter().enumerate() {
            end += s.duration;
            if i < skipped {
                continue;
            }
            let with_parts = total.saturating_sub(end) <= parts_window;
            write_segment_tags(&mut o, s, &mut map, with_parts, query);
            let _ = writeln!(o, "#EXTINF:{},", secs(s.duration));
            let _ = writeln!(o, "{}", WithQuery(&s.uri, query));
        }
        if let Some(s) = &self.current {
            if !s.parts.is_empty() {
                write_segment_tags(&mut o, s, &mut map, true, query);
            }
        }
        let (msn, index) = self.next_part();
        let _ = writeln!(
            o,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            WithQuery(&part_uri(msn, index), query)
        );
        o
    }

    /// Decides a blocking playlist reload (§6.2.5.2) for `_HLS_msn` and
    /// `_HLS_part`:
    /// - `_HLS_part` without `_HLS_msn`: Bad Request;
    /// - MSN beyond the last complete segment + 2, or a part beyond the last
    ///   published part by more than the Advance Part Limit (3 / PART-TARGET
    ///   when that is under 1 s, else 3): Bad Request;
    /// - the segment (without `_HLS_part`) or the part is published: Ready;
    /// - otherwise Wait.
    pub fn reload_decision(&self, msn: Option<u64>, part: Option<u64>) -> ReloadDecision {
        let Some(msn) = msn else {
            return match part {
                Some(_) => ReloadDecision::BadRequest("_HLS_part requires _HLS_msn"),
                None => ReloadDecision::Ready,
            };
        };
        // The segment that completes next (in progress or about to start).
        let (next_msn, published) = self.next_part();
        if msn > next_msn.saturating_add(1) {
            return ReloadDecision::BadRequest(
                "_HLS_msn is more than one segment beyond the next one",
            );
        }
        if let Some(part) = part {
            // Integer nanoseconds: 3 / 0.2 in floating point is not 15.
            let target = self.config.part_target.as_nanos();
            let limit = if target > 0 && target < 1_000_000_000 {
                u64::try_from(3_000_000_000u128.div_ceil(target)).unwrap_or(u64::MAX)
            } else {
                3
            };
            // Parts between the last published one and the requested one;
            // for a later segment at least `part + 1` (the parts left in the
            // current segment are unknown).
            // `part` is the client's number: u64::MAX must not overflow.
            let ahead = if msn == next_msn {
                part.saturating_add(1).saturating_sub(published)
            } else if msn > next_msn {
                part.saturating_add(1)
            } else {
                0
            };
            if ahead > limit {
                return ReloadDecision::BadRequest("_HLS_part is beyond the Advance Part Limit");
            }
        }
        if msn < next_msn {
            return ReloadDecision::Ready;
        }
        match part {
            Some(p) if msn == next_msn && p < published => ReloadDecision::Ready,
            _ => ReloadDecision::Wait,
        }
    }
}

/// Writes the tags that precede a segment's URI (or its parts, for the
/// segment in progress): EXT-X-DISCONTINUITY, EXT-X-MAP when it differs from
/// the one in force, EXT-X-PROGRAM-DATE-TIME, and its EXT-X-PART lines.
fn write_segment_tags<'a>(
    o: &mut String,
    s: &'a Segment,
    map: &mut Option<&'a str>,
    parts: bool,
    query: &str,
) {
    if s.discontinuity {
        let _ = writeln!(o, "#EXT-X-DISCONTINUITY");
    }
    if *map != Some(s.map_uri.as_str()) {
        let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", WithQuery(&s.map_uri, query));
        *map = Some(&s.map_uri);
    }
    let _ = writeln!(
        o,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        format_program_date_time(s.program_date_time)
    );
    if parts {
        for p in &s.parts {
            let _ = write!(
                o,
                "#EXT-X-PART:DURATION={},URI=\"{}\"",
                secs(p.duration),
                WithQuery(&p.uri, query)
            );
            if p.independent {
                let _ = write!(o, ",INDEPENDENT=YES");
            }
            o.push('\n');
        }
    }
}

/// One variant stream of a multivariant playlist (EXT-X-STREAM-INF, §4.4.6.2).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The media playlist URI, relative to the multivariant playlist.
    pub uri: String,
    /// Peak bit rate (bits/s).
    pub bandwidth: u64,
    /// Average bit rate (bits/s), when measured.
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings, e.g. `["avc1.64001f", "mp4a.40.2"]`.
    pub codecs: Vec<String>,
    /// Width × height in pixels.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// Writes a multivariant playlist (§4.4.6) listing `streams`; `query` is
/// appended to every URI as in [`MediaPlaylist::write_media_playlist`].
pub fn write_multivariant(streams: &[StreamInfo], query: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "#EXTM3U");
    let _ = writeln!(o, "#EXT-X-VERSION:9");
    let _ = writeln!(o, "#EXT-X-INDEPENDENT-SEGMENTS");
    for s in streams {
        let _ = write!(o, "#EXT-X-STREAM-INF:BANDWIDTH={}", s.bandwidth);
        if let Some(avg) = s.average_bandwidth {
            let _ = write!(o, ",AVERAGE-BANDWIDTH={avg}");
        }
        if !s.codecs.is_empty() {
            let _ = write!(o, ",CODECS=\"{}\"", s.codecs.join(","));
        }
        if let Some((w, h)) = s.resolution {
            let _ = write!(o, ",RESOLUTION={w}x{h}");
        }
        if let Some(f) = s.frame_rate {
            let _ = write!(o, ",FRAME-RATE={f:.3}");
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", WithQuery(&s.uri, query));
    }
    o
}

/// A relative URI with `?query` appended when the query is not empty.
/// Quoted-string URIs (RFC 8216 §4.2) can't hold `"`, CR or LF, which a
/// URL-encoded query never contains.
struct WithQuery<'a>(&'a str, &'a str);

impl std::fmt::Display for WithQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            "" => f.write_str(self.0),
            q => write!(f, "{}?{q}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::hls::testutil::wall;

    fn config() -> PlaylistConfig {
        PlaylistConfig {
            window: 7,
            part_target: Duration::from_millis(200),
            min_target_duration: 1,
        }
    }

    /// `n` complete 1 s segments of five 200 ms parts, then `parts` parts of
    /// the next one. Segment `k` (0-based) starts at `wall(k s)`.
    fn playlist(first_msn: u64, n: u64, parts: u64) -> MediaPlaylist {
        let mut p = MediaPlaylist::new(config(), first_msn);
        for k in 0..n {
            p.begin_segment(wall(Duration::from_secs(k)), false, init_uri(0));
            for i in 0..5 {
                p.add_part(Duration::from_millis(200), i == 0);
            }
            p.end_segment();
        }
        if parts > 0 {
            p.begin_segment(wall(Duration::from_secs(n)), false, init_uri(0));
            for i in 0..parts {
                p.add_part(Duration::from_millis(200), i == 0);
            }
        }
        p
    }

    fn golden(name: &str, actual: &str) {
        let path = format!(
            "{}/src/egress/hls/testdata/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let expected = std::fs::read_to_string(&path).expect("golden file exists");
        assert_eq!(actual, expected, "{name} differs from the golden file");
    }

    fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
            other => panic!("not parsed as a media playlist: {other:?}"),
        }
    }

    #[test]
    fn program_date_time_format() {
        assert_eq!(
            format_program_date_time(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(wall(Duration::from_millis(1_234))),
            "2024-01-01T00:00:01.234Z"
        );
        // 2024-02-29T23:59:59.999Z, a leap day.
        let leap = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(format_program_date_time(leap), "2024-02-29T23:59:59.999Z");
        // 2000-03-01 (after a 400-year leap day) and 2100-03-01 (no leap day).
        let d = |days: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400);
        assert_eq!(
            format_program_date_time(d(11_017)),
            "2000-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(d(47_541)),
            "2100-03-01T00:00:00.000Z"
        );
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_program_date_time(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn uris_round_trip() {
        assert_eq!(parse_uri(&init_uri(3)), Some(Resource::Init(3)));
        assert_eq!(parse_uri(&segment_uri(42)), Some(Resource::Segment(42)));
        assert_eq!(parse_uri(&part_uri(42, 0)), Some(Resource::Part(42, 0)));
        for bad in [
            "seg-.mp4",
            "seg-01.mp4",
            "seg-1.ts",
            "part-1.mp4",
            "part-1-x.mp4",
            "part-+1-2.mp4",
            "index.m3u8",
            "seg-99999999999999999999999.mp4",
        ] {
            assert_eq!(parse_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn live_playlist_matches_golden() {
        let p = playlist(100, 3, 2);
        let text = p.write_media_playlist(false, "");
        golden("live.m3u8", &text);
        let m = parse_media(&text);
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.media_sequence, 100);
        assert_eq!(m.target_duration, 1);
    }

    #[test]
    fn window_drops_old_segments_and_counts_discontinuities() {
        let mut p = MediaPlaylist::new(config(), 0);
        for k in 0..10u64 {
            // Segments 2 and 5 follow a discontinuity; 8 uses a new init.
            let disc = k == 2 || k == 5 || k == 8;
            let map = init_uri(u64::from(k >= 8));
            p.begin_segment(wall(Duration::from_secs(k)), disc, map);
            for i in 0..5 {
                p.add_part(Duration::from_millis(200), i == 0);
            }
            p.end_segment();
        }
        p.begin_segment(wall(Duration::from_secs(10)), false, init_uri(1));
        p.add_part(Duration::from_millis(200), true);
        assert_eq!(p.segments().len(), 7);
        assert_eq!(p.media_sequence(), 3);
        // Segment 2 (with a discontinuity) was removed.
        assert_eq!(p.discontinuity_sequence(), 1);
        let text = p.write_media_playlist(false, "");
        golden("window.m3u8", &text);
        let m = parse_media(&text);
        assert_eq!(m.segments.len(), 7);
        assert_eq!(m.discontinuity_sequence, 1);
    }

    #[test]
    fn delta_update_skips_only_old_segments() {
        let mut p = MediaPlaylist::new(
            PlaylistConfig {
                window: 12,
                ..config()
            },
            0,
        );
        for k in 0..10u64 {
            p.begin_segment(wall(Duration::from_secs(k)), false, init_uri(0));
            for i in 0..5 {
                p.add_part(Duration::from_millis(200), i == 0);
            }
            p.end_segment();
        }
        p.begin_segment(wall(Duration::from_secs(10)), false, init_uri(0));
        p.add_part(Duration::from_millis(200), true);
        // 10.2 s listed, boundary 6 s: segments ending at ≤ 4.2 s are skipped.
        assert_eq!(p.skippable_segments(), 4);
        let text = p.write_media_playlist(true, "");
        golden("delta.m3u8", &text);
        let m = parse_media(&text);
        assert_eq!(m.segments.len(), 6, "the skipped segments are not listed");
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"));
        // Without enough history nothing is skipped and no tag is written.
        let short = playlist(0, 3, 1);
        assert_eq!(short.skippable_segments(), 0);
        assert_eq!(
            short.write_media_playlist(true, ""),
            short.write_media_playlist(false, "")
        );
    }

    #[test]
    fn parts_only_for_recent_segments() {
        let p = playlist(0, 7, 3);
        let text = p.write_media_playlist(false, "");
        // Listed end = 7.6 s, parts window 3 s: segments ending at ≥ 4.6 s
        // (MSN 4, 5, 6) keep their parts, plus the segment in progress.
        for msn in 0..4 {
            assert!(
                !text.contains(&format!("part-{msn}-")),
                "MSN {msn} parts listed"
            );
        }
        for msn in 4..8 {
            assert!(
                text.contains(&format!("part-{msn}-0.mp4")),
                "MSN {msn} parts missing"
            );
        }
        assert_eq!(parse_media(&text).segments.len(), 7);
    }

    #[test]
    fn empty_and_starting_playlists_parse() {
        let p = MediaPlaylist::new(config(), 5);
        let text = p.write_media_playlist(false, "");
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5-0.mp4\"\n"));
        assert_eq!(parse_media(&text).segments.len(), 0);
        let p = playlist(5, 0, 1);
        let text = p.write_media_playlist(false, "");
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-5-0.mp4\",INDEPENDENT=YES\n")
        );
        assert_eq!(parse_media(&text).segments.len(), 0);
    }

    #[test]
    fn target_duration_follows_long_segments() {
        let mut p = MediaPlaylist::new(config(), 0);
        p.begin_segment(wall(Duration::ZERO), false, init_uri(0));
        p.add_part(Duration::from_millis(2_400), true);
        p.end_segment();
        assert_eq!(p.target_duration(), 2);
        p.begin_segment(wall(Duration::ZERO), false, init_uri(0));
        p.add_part(Duration::from_millis(2_600), true);
        p.end_segment();
        assert_eq!(p.target_duration(), 3);
        // Segments without parts are not listed.
        p.begin_segment(wall(Duration::ZERO), false, init_uri(0));
        assert_eq!(p.end_segment(), None);
        assert_eq!(p.segments().len(), 2);
        assert_eq!(p.next_part(), (3, 0));
    }

    #[test]
    fn part_publication() {
        let p = playlist(10, 2, 2);
        assert_eq!(p.part_published(10, 4), Some(true));
        assert_eq!(p.part_published(10, 5), Some(false));
        assert_eq!(p.part_published(12, 1), Some(true));
        assert_eq!(p.part_published(12, 2), None);
        assert_eq!(p.part_published(13, 0), None);
        assert_eq!(p.part_published(3, 0), Some(false));
    }

    #[test]
    fn blocking_reload_decisions() {
        use ReloadDecision::*;
        // Complete 10, 11; 12 in progress with parts 0 and 1 published.
        let p = playlist(10, 2, 2);
        assert_eq!(p.reload_decision(None, None), Ready);
        assert!(matches!(p.reload_decision(None, Some(0)), BadRequest(_)));
        assert_eq!(
            p.reload_decision(Some(5), None),
            Ready,
            "older than the window"
        );
        assert_eq!(p.reload_decision(Some(11), None), Ready);
        assert_eq!(
            p.reload_decision(Some(11), Some(9)),
            Ready,
            "segment complete"
        );
        assert_eq!(p.reload_decision(Some(12), Some(1)), Ready);
        assert_eq!(p.reload_decision(Some(12), Some(2)), Wait);
        assert_eq!(p.reload_decision(Some(12), None), Wait);
        assert_eq!(p.reload_decision(Some(13), Some(0)), Wait);
        // Last complete MSN is 11: up to 13 may be waited for, 14 is too far.
        assert_eq!(p.reload_decision(Some(13), None), Wait);
        assert!(matches!(p.reload_decision(Some(14), None), BadRequest(_)));
        // Advance Part Limit = 3 / 0.2 s = 15 parts.
        assert_eq!(p.reload_decision(Some(12), Some(16)), Wait);
        assert!(matches!(
            p.reload_decision(Some(12), Some(17)),
            BadRequest(_)
        ));
        assert_eq!(p.reload_decision(Some(13), Some(14)), Wait);
        assert!(matches!(
            p.reload_decision(Some(13), Some(15)),
            BadRequest(_)
        ));
        // Client-chosen numbers at the top of u64: refused, not overflowed.
        for msn in [12, 13] {
            assert!(matches!(
                p.reload_decision(Some(msn), Some(u64::MAX)),
                BadRequest(_)
            ));
        }
        assert!(matches!(
            p.reload_decision(Some(u64::MAX), Some(u64::MAX)),
            BadRequest(_)
        ));

        // Between segments: 11 complete, nothing in progress.
        let p = playlist(10, 2, 0);
        assert_eq!(p.reload_decision(Some(12), Some(0)), Wait);
        assert_eq!(p.reload_decision(Some(13), None), Wait);
        assert!(matches!(p.reload_decision(Some(14), None), BadRequest(_)));
        // Before anything: the first segment will be 0.
        let p = MediaPlaylist::new(config(), 0);
        assert_eq!(p.reload_decision(Some(0), Some(0)), Wait);
        assert_eq!(p.reload_decision(Some(1), None), Wait);
        assert!(matches!(p.reload_decision(Some(2), None), BadRequest(_)));
    }

    #[test]
    fn multivariant_matches_golden() {
        let text = write_multivariant(
            &[StreamInfo {
                uri: "stream.m3u8".into(),
                bandwidth: 1_234_567,
                average_bandwidth: Some(1_000_000),
                codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
                resolution: Some((1280, 720)),
                frame_rate: Some(25.0),
            }],
            "",
        );
        golden("multivariant.m3u8", &text);
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => {
                assert_eq!(m.variants.len(), 1);
                assert_eq!(m.variants[0].bandwidth, 1_234_567);
                assert_eq!(
                    m.variants[0].codecs.as_deref(),
                    Some("avc1.64001f,mp4a.40.2")
                );
            }
            other => panic!("not a multivariant playlist: {other:?}"),
        }
    }

    /// Every URI of both playlists (the media playlist, EXT-X-MAP,
    /// EXT-X-PART, segments, EXT-X-PRELOAD-HINT), and nothing else, carries
    /// the query; without one nothing changes.
    #[test]
    fn query_goes_on_every_uri() {
        let q = "user=v&pass=s%26x";
        let p = playlist(10, 3, 2);
        let uris = |text: &str| -> Vec<String> {
            let mut v = Vec::new();
            for line in text.lines() {
                if !line.starts_with('#') && !line.is_empty() {
                    v.push(line.to_owned());
                }
                let mut rest = line;
                while let Some(i) = rest.find("URI=\"") {
                    rest = &rest[i + 5..];
                    let end = rest.find('"').expect("closing quote");
                    v.push(rest[..end].to_owned());
                    rest = &rest[end..];
                }
            }
            v
        };
        for skip in [false, true] {
            let plain = p.write_media_playlist(skip, "");
            let with = p.write_media_playlist(skip, q);
            let (a, b) = (uris(&plain), uris(&with));
            // A map, parts, segments and the preload hint.
            assert!(a.len() >= 8, "{plain}");
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(format!("{a}?{q}"), *b);
            }
            assert_eq!(with.replace(&format!("?{q}"), ""), plain);
        }
        let mv = write_multivariant(
            &[StreamInfo {
                uri: "stream.m3u8".into(),
                bandwidth: 1,
                average_bandwidth: None,
                codecs: vec![],
                resolution: None,
                frame_rate: None,
            }],
            q,
        );
        assert!(mv.ends_with("\nstream.m3u8?user=v&pass=s%26x\n"), "{mv}");
    }
}
