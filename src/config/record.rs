//! Recording settings: the `record*` keys, at the top level (every path)
//! and in `[paths.NAME]` (that path, over the top level), and the file-name
//! template `record_path` (strftime-like, `%path` for the path name, in
//! UTC; `.mp4` is appended).
//!
//! ```toml
//! record = true                       # every path; or per path
//! record_path = "./recordings/%path/%Y-%m-%d_%H-%M-%S-%f"
//! record_segment_duration = "1h"      # a new file at the first keyframe after it
//! record_part_duration = "1s"         # each fragment written and flushed
//! record_delete_after = "1d"          # "0" keeps recordings forever
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{err, ConfigError};

/// A duration in the file: seconds as a number, or text with units
/// (`"500ms"`, `"10s"`, `"30m"`, `"1h"`, `"1d"`, `"1h30m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    fn parse(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            FileDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            FileDuration::Text(t) => parse_duration(t).ok_or_else(|| {
                err(
                    key,
                    format!("{t:?} is not a duration such as \"10s\", \"30m\", \"1h\" or \"1d\""),
                )
            }),
        }
    }
}

/// `"1h30m"`, `"10s"`, `"500ms"`, `"2d"`, a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(s) = text.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(Duration::from_millis(n.checked_mul(unit_ms)?))?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The `record*` keys of one table (the top level or a `[paths.NAME]`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FileRecord {
    pub record: Option<bool>,
    pub record_path: Option<String>,
    pub record_segment_duration: Option<FileDuration>,
    pub record_part_duration: Option<FileDuration>,
    pub record_delete_after: Option<FileDuration>,
}

/// How one path is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSettings {
    /// `record`: write this path to disk (default off).
    pub enabled: bool,
    /// `record_path`: where its files go.
    pub template: Template,
    /// `record_segment_duration` (default 1 h): a file ends at the first
    /// keyframe after this.
    pub segment_duration: Duration,
    /// `record_part_duration` (default 1 s): each fragment is written and
    /// flushed to disk when complete, so a crash loses at most this much.
    pub part_duration: Duration,
    /// `record_delete_after` (default 1 d): files last written longer ago
    /// are deleted; `None` (`"0"`) keeps them.
    pub delete_after: Option<Duration>,
}

impl Default for RecordSettings {
    fn default() -> Self {
        RecordSettings {
            enabled: false,
            template: Template::parse(DEFAULT_TEMPLATE).unwrap_or(Template(Vec::new())),
            segment_duration: Duration::from_secs(3600),
            part_duration: Duration::from_secs(1),
            delete_after: Some(Duration::from_secs(86_400)),
        }
    }
}

/// The default `record_path`.
pub const DEFAULT_TEMPLATE: &str = "./recordings/%path/%Y-%m-%d_%H-%M-%S-%f";

/// Recording settings of every path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordConfig {
    /// The top-level keys: every path not named in `paths`.
    pub defaults: RecordSettings,
    /// Paths whose `[paths.NAME]` table sets a `record*` key.
    pub paths: BTreeMap<String, RecordSettings>,
}

impl RecordConfig {
    /// The settings of path `name`.
    pub fn for_path(&self, name: &str) -> &RecordSettings {
        self.paths.get(name).unwrap_or(&self.defaults)
    }

    /// Every template in use (to find recordings of paths that are gone).
    pub fn templates(&self) -> Vec<&Template> {
        let mut v: Vec<&Template> = vec![&self.defaults.template];
        for s in self.paths.values() {
            if !v.contains(&&s.template) {
                v.push(&s.template);
            }
        }
        v
    }

    /// Validates the top-level keys, then each path's over them.
    pub fn from_file<'a>(
        top: &FileRecord,
        paths: impl IntoIterator<Item = (&'a String, &'a FileRecord)>,
    ) -> Result<RecordConfig, ConfigError> {
        let defaults = apply(&RecordSettings::default(), top, "")?;
        let mut out = RecordConfig {
            defaults,
            paths: BTreeMap::new(),
        };
        for (name, p) in paths {
            let set = p.record.is_some()
                || p.record_path.is_some()
                || p.record_segment_duration.is_some()
                || p.record_part_duration.is_some()
                || p.record_delete_after.is_some();
            if set {
                let s = apply(&out.defaults, p, &format!("paths.{name}."))?;
                out.paths.insert(name.clone(), s);
            }
        }
        Ok(out)
    }
}

fn apply(
    base: &RecordSettings,
    f: &FileRecord,
    prefix: &str,
) -> Result<RecordSettings, ConfigError> {
    let mut s = base.clone();
    if let Some(on) = f.record {
        s.enabled = on;
    }
    if let Some(t) = &f.record_path {
        s.template = Template::parse(t).map_err(|e| err(format!("{prefix}record_path"), e))?;
    }
    if let Some(d) = &f.record_segment_duration {
        let key = format!("{prefix}record_segment_duration");
        let d = d.parse(&key)?;
        if d < Duration::from_secs(1) {
            return Err(err(key, "must be at least 1s"));
        }
        s.segment_duration = d;
    }
    if let Some(d) = &f.record_part_duration {
        let key = format!("{prefix}record_part_duration");
        let d = d.parse(&key)?;
        if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&d) {
            return Err(err(key, "must be 100ms to 10s"));
        }
        s.part_duration = d;
    }
    if s.part_duration >= s.segment_duration {
        return Err(err(
            format!("{prefix}record_part_duration"),
            "must be shorter than record_segment_duration",
        ));
    }
    if let Some(d) = &f.record_delete_after {
        let d = d.parse(&format!("{prefix}record_delete_after"))?;
        s.delete_after = (!d.is_zero()).then_some(d);
    }
    Ok(s)
}

/// One piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `%path`: the path name.
    Path,
    /// `%Y` (4 digits), `%m`, `%d`, `%H`, `%M`, `%S` (2 digits), `%f`
    /// (microseconds, 6 digits), `%s` (UNIX seconds).
    Field(char),
}

/// A validated `record_path`: a file name template (without `.mp4`) whose
/// time fields say when the file's first frame arrived, in UTC, to the
/// second at least (`%Y %m %d %H %M %S`, or `%s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// Parses `%path`, `%Y %m %d %H %M %S %f %s` and `%%`; errors in plain words.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix("path") {
                rest = r;
                if !lit.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Path);
                continue;
            }
            let mut chars = rest.chars();
            match chars.next() {
                Some('%') => lit.push('%'),
                Some(c @ ('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'f' | 's')) => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(c));
                }
                Some(c) => {
                    return Err(format!(
                        "%{c} is not supported: use %path, %Y, %m, %d, %H, %M, %S, %f (microseconds), %s or %%"
                    ))
                }
                None => return Err("ends with a lone %".into()),
            }
            rest = chars.as_str();
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        let has = |c| pieces.contains(&Piece::Field(c));
        if !(has('s') || ['Y', 'm', 'd', 'H', 'M', 'S'].into_iter().all(has)) {
            return Err(
                "must name the time to the second: %Y, %m, %d, %H, %M and %S, or %s".into(),
            );
        }
        if text.is_empty() || text.ends_with('/') {
            return Err("must end with a file name".into());
        }
        Ok(Template(pieces))
    }

    /// The file of path `name` whose first frame arrived at `start`.
    pub fn render(&self, name: &str, start: jiff::Timestamp) -> PathBuf {
        let dt = start.to_zoned(jiff::tz::TimeZone::UTC).datetime();
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Path => s.push_str(name),
                Piece::Field(c) => s.push_str(&match c {
                    'Y' => format!("{:04}", dt.year()),
                    'm' => format!("{:02}", dt.month()),
                    'd' => format!("{:02}", dt.day()),
                    'H' => format!("{:02}", dt.hour()),
                    'M' => format!("{:02}", dt.minute()),
                    'S' => format!("{:02}", dt.second()),
                    'f' => format!("{:06}", dt.subsec_nanosecond() / 1000),
                    _ => start.as_second().to_string(),
                }),
            }
        }
        s.push_str(".mp4");
        PathBuf::from(s)
    }

    /// The directory under which path `name`'s files lie (the template up
    /// to its first time field, cut at the last `/`), and how many
    /// directory levels below it they can be.
    pub fn root(&self, name: &str) -> (PathBuf, usize) {
        let mut fixed = String::new();
        let mut after = String::new();
        let mut in_fixed = true;
        for p in &self.0 {
            let text = match p {
                Piece::Text(t) => t.clone(),
                Piece::Path => name.to_owned(),
                Piece::Field(_) => {
                    in_fixed = false;
                    "x".into()
                }
            };
            if in_fixed {
                fixed.push_str(&text);
            } else {
                after.push_str(&text);
            }
        }
        let (dir, tail) = match fixed.rfind('/') {
            Some(i) => (fixed[..=i].to_owned(), fixed[i + 1..].to_owned()),
            None => ("./".to_owned(), fixed),
        };
        let depth = (tail + &after).matches('/').count();
        (PathBuf::from(dir), depth)
    }

    /// When the file `file` (as [`Self::render`] wrote it for path `name`)
    /// starts, or `None` if it is not one of that path's files.
    pub fn parse_file(&self, name: &str, file: &str) -> Option<jiff::Timestamp> {
        let mut rest = file.strip_suffix(".mp4")?;
        let mut f = [0i64; 8]; // Y m d H M S f s
        let mut have_s = false;
        for p in &self.0 {
            match p {
                Piece::Text(t) => rest = rest.strip_prefix(t.as_str())?,
                Piece::Path => rest = rest.strip_prefix(name)?,
                Piece::Field(c) => {
                    let (idx, len) = match c {
                        'Y' => (0, 4),
                        'm' => (1, 2),
                        'd' => (2, 2),
                        'H' => (3, 2),
                        'M' => (4, 2),
                        'S' => (5, 2),
                        'f' => (6, 6),
                        _ => (7, rest.bytes().take_while(u8::is_ascii_digit).count()),
                    };
                    let digits = rest.get(..len)?;
                    if len == 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    f[idx] = digits.parse().ok()?;
                    have_s |= idx == 7;
                    rest = &rest[len..];
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        if have_s {
            let t = jiff::Timestamp::from_second(f[7]).ok()?;
            return t.checked_add(jiff::SignedDuration::from_micros(f[6])).ok();
        }
        let dt = jiff::civil::DateTime::new(
            i16::try_from(f[0]).ok()?,
            i8::try_from(f[1]).ok()?,
            i8::try_from(f[2]).ok()?,
            i8::try_from(f[3]).ok()?,
            i8::try_from(f[4]).ok()?,
            i8::try_from(f[5]).ok()?,
            i32::try_from(f[6] * 1000).ok()?,
        )
        .ok()?;
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Some(Duration::from_secs(42)));
        for bad in ["", "h", "10x", "1.5h", "-1s", "s10"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_template_renders_and_parses_back() {
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let at: jiff::Timestamp = "2026-11-28T23:51:52.123456Z".parse().unwrap();
        let file = t.render("cam", at);
        assert_eq!(
            file,
            PathBuf::from("./recordings/cam/2026-11-28_23-51-52-123456.mp4")
        );
        let s = file.to_str().unwrap();
        assert_eq!(t.parse_file("cam", s), Some(at));
        assert_eq!(t.parse_file("cam2", s), None, "another path's name");
        assert_eq!(t.parse_file("cam", "./recordings/cam/notes.txt"), None);
        assert_eq!(
            t.parse_file("cam", "./recordings/cam/2026-13-28_23-51-52-123456.mp4"),
            None,
            "month 13"
        );
        assert_eq!(t.root("cam"), (PathBuf::from("./recordings/cam/"), 0));
    }

    #[test]
    fn templates_with_unix_seconds_and_directories() {
        let t = Template::parse("/var/rec/%Y/%m/%path-%s").unwrap();
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let file = t.render("door", at);
        assert_eq!(file, PathBuf::from("/var/rec/2027/01/door-1800000000.mp4"));
        assert_eq!(t.parse_file("door", file.to_str().unwrap()), Some(at));
        assert_eq!(t.root("door"), (PathBuf::from("/var/rec/"), 2));
        assert_eq!(
            Template::parse("rec/100%%/%path_%s")
                .unwrap()
                .render("a", at),
            PathBuf::from("rec/100%/a_1800000000.mp4")
        );
    }

    #[test]
    fn templates_without_a_time_are_refused() {
        assert!(Template::parse("./rec/%path").unwrap_err().contains("%S"));
        assert!(Template::parse("./rec/%path_%Y%m%d").is_err());
        assert!(Template::parse("./rec/%path_%s_%j")
            .unwrap_err()
            .contains("%j"));
        assert!(Template::parse("./rec/%s/").is_err());
    }

    #[test]
    fn paths_override_the_top_level() {
        let top = FileRecord {
            record: Some(true),
            record_segment_duration: Some(FileDuration::Text("10s".into())),
            ..Default::default()
        };
        let off = FileRecord {
            record: Some(false),
            ..Default::default()
        };
        let names = ["quiet".to_string()];
        let c = RecordConfig::from_file(&top, names.iter().zip([&off])).unwrap();
        assert!(c.for_path("cam").enabled);
        assert!(!c.for_path("quiet").enabled);
        assert_eq!(
            c.for_path("quiet").segment_duration,
            Duration::from_secs(10)
        );
        let bad = FileRecord {
            record_part_duration: Some(FileDuration::Text("20s".into())),
            ..Default::default()
        };
        let e = RecordConfig::from_file(&bad, []).unwrap_err();
        assert_eq!(e.key, "record_part_duration");
    }
}
