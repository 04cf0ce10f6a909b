//! Playback: one progressive MP4 (`ftyp`, `moov` with complete sample
//! tables, then one `mdat`; ISO/IEC 14496-12 §8) synthesized over the
//! recording files that cover a time span, so browsers and ffplay can seek
//! in it with HTTP Range requests. Only the headers are built in memory;
//! the media bytes are read from the files when a range asks for them.
//!
//! The span starts at the last video keyframe at or before the asked start
//! (so the first picture decodes) and ends before the asked end. Files are
//! joined while each starts where the previous ended (within
//! [`JOIN_TOLERANCE`]) and has the same track layout and sample entries;
//! a gap or a codec change ends the answer there.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom as mp4;
use mp4_atom::Encode;

use super::index::FileIndex;

/// Largest gap (or overlap) between one file's end and the next file's
/// start that still joins them.
pub const JOIN_TOLERANCE: Duration = Duration::from_secs(1);

/// One recording file with what it holds.
#[derive(Debug, Clone)]
pub struct Segment {
    pub file: PathBuf,
    /// When its first frame arrived (from its name), in UTC.
    pub start: jiff::Timestamp,
    pub index: FileIndex,
}

impl Segment {
    /// When its last sample ends.
    pub fn end(&self) -> jiff::Timestamp {
        let d = jiff::SignedDuration::try_from(self.index.duration()).unwrap_or_default();
        self.start.checked_add(d).unwrap_or(self.start)
    }
}

/// A piece of the answer read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub file: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    pub len: u64,
}

/// The synthesized MP4: `head` (`ftyp`, `moov`, `mdat` header) then the
/// chunks' bytes back to back.
#[derive(Debug, Clone)]
pub struct Plan {
    pub head: Bytes,
    pub chunks: Vec<Chunk>,
    /// Total length in bytes.
    pub len: u64,
    /// Media duration (the lead track's).
    pub duration: Duration,
}

impl Plan {
    /// Which chunk byte `at` of the answer is read from, and where in it;
    /// `None` for a byte of the head or past the end.
    pub fn locate(&self, at: u64) -> Option<(usize, u64)> {
        let head = self.head.len() as u64;
        if at < head {
            return None;
        }
        let mut pos = head;
        for (i, c) in self.chunks.iter().enumerate() {
            if at < pos + c.len {
                return Some((i, at - pos));
            }
            pos += c.len;
        }
        None
    }
}

/// Why there is nothing to play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("nothing is recorded between {start} and {end}")]
    NothingRecorded { start: String, end: String },
    #[error("the recording could not be assembled: {0}")]
    Encode(String),
}

/// A sample picked for the answer.
#[derive(Clone, Copy)]
struct Picked {
    size: u32,
    duration: u32,
    cts: i32,
    sync: bool,
}

/// Builds the answer for `[start, start + duration)` from `segments`
/// (sorted by start, each indexed); see the module docs.
pub fn plan(
    segments: &[Segment],
    start: jiff::Timestamp,
    duration: Duration,
) -> Result<Plan, PlanError> {
    let end = start
        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX);
    let nothing = || PlanError::NothingRecorded {
        start: start.to_string(),
        end: end.to_string(),
    };
    // The files overlapping the span, joined while they line up.
    let first = segments
        .iter()
        .position(|s| s.end() > start && s.start < end && !s.index.tracks.is_empty())
        .ok_or_else(nothing)?;
    let mut used: Vec<&Segment> = vec![&segments[first]];
    for s in &segments[first + 1..] {
        let prev = used[used.len() - 1];
        if s.start >= end {
            break;
        }
        let gap = (s.start.duration_since(prev.end())).unsigned_abs();
        if gap > JOIN_TOLERANCE || !same_layout(&prev.index, &s.index) {
            break;
        }
        used.push(s);
    }
    let ntracks = used[0].index.tracks.len();
    let mut picked: Vec<Vec<Picked>> = vec![Vec::new(); ntracks];
    // Per track: the chunks (by index into `chunks`) and their sample counts.
    let mut track_chunks: Vec<Vec<(usize, u32)>> = vec![Vec::new(); ntracks];
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut began = false;
    for (n, seg) in used.iter().enumerate() {
        let idx = &seg.index;
        let secs = |t: usize, dts: u64| idx.seconds_at(t, dts);
        let from = (start.as_nanosecond() - seg.start.as_nanosecond()) as f64 / 1e9;
        let to = (end.as_nanosecond() - seg.start.as_nanosecond()) as f64 / 1e9;
        // The first file starts at the last lead keyframe at or before the
        // asked start.
        let t0 = if n == 0 {
            let lead = &idx.tracks[0].samples;
            lead.iter()
                .rfind(|s| s.sync && secs(0, s.dts) <= from + 1e-6)
                .or_else(|| lead.iter().find(|s| s.sync))
                .map_or(f64::INFINITY, |s| secs(0, s.dts))
        } else {
            f64::NEG_INFINITY
        };
        for run in &idx.runs {
            let t = &idx.tracks[run.track];
            let samples = &t.samples[run.first..run.first + run.count];
            let mut chunk: Option<(u64, u64, u32)> = None; // offset, len, count
            for s in samples {
                let at = secs(run.track, s.dts);
                if at + 1e-6 < t0 || at >= to {
                    continue;
                }
                if run.track == 0 && !began {
                    began = true;
                }
                picked[run.track].push(Picked {
                    size: s.size,
                    duration: s.duration,
                    cts: s.cts,
                    sync: s.sync,
                });
                chunk = Some(match chunk {
                    Some((o, l, c)) => (o, l + u64::from(s.size), c + 1),
                    None => (s.offset, u64::from(s.size), 1),
                });
            }
            if let Some((offset, len, count)) = chunk {
                track_chunks[run.track].push((chunks.len(), count));
                chunks.push(Chunk {
                    file: seg.file.clone(),
                    offset,
                    len,
                });
            }
        }
    }
    if !began || picked[0].is_empty() {
        return Err(nothing());
    }
    let payload: u64 = chunks.iter().map(|c| c.len).sum();
    let large = payload + 16 > u64::from(u32::MAX);
    let build = |offsets: &[u64], co64: bool| -> Result<Vec<u8>, PlanError> {
        let mut moov = used[0].index.moov.clone();
        moov.mvex = None;
        moov.mvhd.timescale = 1000;
        let mut movie_ms = 0u64;
        for (ti, trak) in moov.trak.iter_mut().enumerate() {
            let samples = &picked[ti];
            let timescale = trak.mdia.mdhd.timescale.max(1);
            let media: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
            let ms = media * 1000 / u64::from(timescale);
            movie_ms = movie_ms.max(ms);
            trak.tkhd.duration = ms;
            trak.mdia.mdhd.duration = media;
            let first_cts = samples.first().map_or(0, |s| s.cts);
            trak.edts = (first_cts > 0).then(|| mp4::Edts {
                elst: Some(mp4::Elst {
                    entries: vec![mp4::ElstEntry {
                        segment_duration: ms,
                        media_time: Some(u64::try_from(first_cts).unwrap_or(0)),
                        media_rate: 1.into(),
                    }],
                }),
            });
            let stbl = &mut trak.mdia.minf.stbl;
            stbl.stts = mp4::Stts {
                entries: runs_of(samples.iter().map(|s| s.duration))
                    .map(|(n, d)| mp4::SttsEntry {
                        sample_count: n,
                        sample_delta: d,
                    })
                    .collect(),
            };
            stbl.ctts = samples.iter().any(|s| s.cts != 0).then(|| mp4::Ctts {
                entries: runs_of(samples.iter().map(|s| s.cts))
                    .map(|(n, c)| mp4::CttsEntry {
                        sample_count: n,
                        sample_offset: i64::from(c),
                    })
                    .collect(),
            });
            stbl.stss = samples.iter().any(|s| !s.sync).then(|| mp4::Stss {
                entries: samples
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.sync)
                    .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX))
                    .collect(),
            });
            stbl.stsz = mp4::Stsz {
                samples: mp4::StszSamples::Different {
                    sizes: samples.iter().map(|s| s.size).collect(),
                },
            };
            let counts = &track_chunks[ti];
            let mut stsc = Vec::new();
            // (first chunk, samples per chunk, chunks in the entry)
            for (n, c) in runs_of(counts.iter().map(|(_, c)| *c)) {
                let first_chunk = stsc.last().map_or(1, |e: &(u32, u32, u32)| e.0 + e.2);
                stsc.push((first_chunk, c, n));
            }
            stbl.stsc = mp4::Stsc {
                entries: stsc
                    .iter()
                    .map(|(first, per, _)| mp4::StscEntry {
                        first_chunk: *first,
                        samples_per_chunk: *per,
                        sample_description_index: 1,
                    })
                    .collect(),
            };
            let offs: Vec<u64> = counts.iter().map(|(ci, _)| offsets[*ci]).collect();
            if co64 {
                stbl.stco = None;
                stbl.co64 = Some(mp4::Co64 { entries: offs });
            } else {
                stbl.co64 = None;
                stbl.stco = Some(mp4::Stco {
                    entries: offs
                        .iter()
                        .map(|o| u32::try_from(*o).unwrap_or(u32::MAX))
                        .collect(),
                });
            }
        }
        moov.mvhd.duration = movie_ms;
        let ftyp = mp4::Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: vec![b"isom".into(), b"iso2".into(), b"mp41".into()],
        };
        let mut buf = Vec::new();
        ftyp.encode(&mut buf)
            .and_then(|()| moov.encode(&mut buf))
            .map_err(|e| PlanError::Encode(e.to_string()))?;
        Ok(buf)
    };
    // Chunk offsets depend on the head's size, which does not depend on
    // their values (fixed-width fields): measure, then fill in.
    let zeros = vec![0u64; chunks.len()];
    let mdat_header = if large { 16 } else { 8 };
    let probe = build(&zeros, false)?;
    let co64 = large || probe.len() as u64 + mdat_header + payload > u64::from(u32::MAX);
    let probe = if co64 { build(&zeros, true)? } else { probe };
    let mut offsets = Vec::with_capacity(chunks.len());
    let mut at = probe.len() as u64 + mdat_header;
    for c in &chunks {
        offsets.push(at);
        at += c.len;
    }
    let head = build(&offsets, co64)?;
    let mut out = BytesMut::with_capacity(head.len() + 16);
    out.put_slice(&head);
    if large {
        out.put_u32(1);
        out.put_slice(b"mdat");
        out.put_u64(16 + payload);
    } else {
        out.put_u32(u32::try_from(8 + payload).unwrap_or(u32::MAX));
        out.put_slice(b"mdat");
    }
    let head = out.freeze();
    let lead_ts = used[0].index.tracks[0].timescale();
    let lead_ticks: u64 = picked[0].iter().map(|s| u64::from(s.duration)).sum();
    Ok(Plan {
        len: head.len() as u64 + payload,
        head,
        chunks,
        duration: Duration::from_secs_f64(lead_ticks as f64 / f64::from(lead_ts)),
    })
}

/// Run-length encoding: (count, value) of equal neighbours.
fn runs_of<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> impl Iterator<Item = (u32, T)> {
    let mut out: Vec<(u32, T)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out.into_iter()
}

/// Whether two files can be joined: the same tracks with the same sample
/// entries and timescales.
fn same_layout(a: &FileIndex, b: &FileIndex) -> bool {
    a.tracks.len() == b.tracks.len()
        && a.tracks.iter().zip(&b.tracks).all(|(x, y)| {
            x.trak.mdia.mdhd.timescale == y.trak.mdia.mdhd.timescale
                && x.trak.mdia.minf.stbl.stsd == y.trak.mdia.minf.stbl.stsd
        })
}

/// A byte range asked with `Range` (RFC 9110 §14.2), resolved against a
/// representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) `Range`: the whole representation, `200`.
    Full,
    /// Bytes `[first, last]`, `206`.
    Part { first: u64, last: u64 },
    /// No byte of the range exists, `416`.
    Unsatisfiable,
}

/// Parses a `Range` header value for a representation of `len` bytes. One
/// range only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges, other
/// units or a malformed value are answered with the whole body, as RFC 9110
/// §14.2 allows a server to ignore `Range`.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeAsk {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-n: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part {
                    first: len.saturating_sub(n),
                    last: len - 1,
                }
            }
        }
        (false, Some(first), last) if b.trim().is_empty() || last.is_some() => {
            if first >= len {
                return RangeAsk::Unsatisfiable;
            }
            match last {
                Some(l) if l < first => RangeAsk::Full,
                Some(l) => RangeAsk::Part {
                    first,
                    last: l.min(len - 1),
                },
                None => RangeAsk::Part {
                    first,
                    last: len - 1,
                },
            }
        }
        _ => RangeAsk::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::record::index::{read, tests::recorded};
    use std::path::Path;

    fn segment(file: &str, start: jiff::Timestamp, bytes: &[u8]) -> Segment {
        let index = read(&mut std::io::Cursor::new(bytes), bytes.len() as u64).unwrap();
        Segment {
            file: PathBuf::from(file),
            start,
            index,
        }
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let p = |v| parse_range(Some(v), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(
            p("bytes=0-"),
            Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(
            p("bytes=100-199"),
            Part {
                first: 100,
                last: 199
            }
        );
        assert_eq!(
            p("bytes=900-5000"),
            Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            p("bytes=-100"),
            Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            p("bytes=-5000"),
            Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(p("bytes=5-1"), Full);
        assert_eq!(p("bytes=0-1,5-6"), Full);
        assert_eq!(p("items=0-1"), Full);
        assert_eq!(p("bytes=a-b"), Full);
        assert_eq!(p("bytes=+1-2"), Full);
        assert_eq!(p("bytes=-"), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    /// Two 4 s files back to back play as one 8 s movie whose sample
    /// tables point at the files' bytes; a start in the middle begins at
    /// the keyframe before it; a span with no file is an error.
    #[test]
    fn files_join_into_one_movie() {
        let a = recorded(4);
        let b = recorded(4);
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = t0 + jiff::SignedDuration::from_secs(4);
        let segs = [segment("a.mp4", t0, &a), segment("b.mp4", t1, &b)];
        let p = plan(&segs, t0, Duration::from_secs(60)).unwrap();
        assert_eq!(p.duration, Duration::from_secs(8));
        let mut body = p.head.to_vec();
        for c in &p.chunks {
            let src = if c.file == Path::new("a.mp4") { &a } else { &b };
            body.extend_from_slice(&src[c.offset as usize..(c.offset + c.len) as usize]);
        }
        assert_eq!(body.len() as u64, p.len);
        // mp4-atom reads it back: ftyp, moov, mdat; 200 video samples.
        let mut slice = &body[..];
        use mp4_atom::Decode;
        let _ftyp = mp4::Any::decode(&mut slice).unwrap();
        let mp4::Any::Moov(moov) = mp4::Any::decode(&mut slice).unwrap() else {
            panic!("no moov");
        };
        let v = &moov.trak[0].mdia.minf.stbl;
        let mp4::StszSamples::Different { sizes } = &v.stsz.samples else {
            panic!("sizes")
        };
        assert_eq!(sizes.len(), 200);
        assert_eq!(
            v.stss.as_ref().unwrap().entries,
            vec![1, 26, 51, 76, 101, 126, 151, 176]
        );
        // The first chunk offset points at the first access unit.
        let off = v.stco.as_ref().unwrap().entries[0] as usize;
        assert_eq!(
            u32::from_be_bytes(body[off..off + 4].try_into().unwrap()),
            300
        );

        let mid = t0 + jiff::SignedDuration::from_millis(5500);
        let p = plan(&segs, mid, Duration::from_secs(1)).unwrap();
        // From the keyframe at 5 s to before 6.5 s.
        assert_eq!(p.duration, Duration::from_millis(1520));

        let later = t0 + jiff::SignedDuration::from_secs(100);
        assert!(matches!(
            plan(&segs, later, Duration::from_secs(10)),
            Err(PlanError::NothingRecorded { .. })
        ));
        // A gap between files ends the answer at the gap.
        let far = t0 + jiff::SignedDuration::from_secs(30);
        let gapped = [segment("a.mp4", t0, &a), segment("b.mp4", far, &b)];
        let p = plan(&gapped, t0, Duration::from_secs(60)).unwrap();
        assert_eq!(p.duration, Duration::from_secs(4));
        assert_eq!(p.locate(p.head.len() as u64), Some((0, 0)));
        assert_eq!(p.locate(p.len), None);
    }
}
