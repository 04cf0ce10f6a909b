//! Reading a recording back: the boxes of one fragmented MP4 file (ISO/IEC
//! 14496-12 §8.8) turned into per-track sample tables with file offsets.
//! Files may end in the middle of a fragment (a crash, a file still being
//! written): reading stops at the last fragment whose samples are all in
//! the file. Nothing in a file is trusted: sizes and offsets are checked
//! against the file's length, box sizes are capped.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use mp4_atom as mp4;
use mp4_atom::Decode;

/// `moov` and `moof` boxes larger than this are refused (a recorder's are
/// a few kilobytes; a 1 s fragment of 4K video lists ~60 samples).
const MAX_HEADER_BOX: u64 = 16 << 20;

/// `sample_is_non_sync_sample` of `sample_flags` (§8.8.3.1).
const NON_SYNC: u32 = 0x0001_0000;

/// One sample of a recording file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Byte offset in the file.
    pub offset: u64,
    pub size: u32,
    /// Decode time (`tfdt`-based), in the track's timescale.
    pub dts: u64,
    /// In the track's timescale.
    pub duration: u32,
    /// `pts - dts`, in the track's timescale.
    pub cts: i32,
    pub sync: bool,
}

/// One contiguous run of one track's samples in the file (a `trun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index into [`FileIndex::tracks`].
    pub track: usize,
    /// Index of the run's first sample in that track's samples.
    pub first: usize,
    pub count: usize,
}

/// One track of a recording file.
#[derive(Debug, Clone)]
pub struct TrackIndex {
    /// The track's `trak` from the file's init segment (sample entry,
    /// timescale, handler).
    pub trak: mp4::Trak,
    pub samples: Vec<SampleRef>,
}

impl TrackIndex {
    pub fn timescale(&self) -> u32 {
        self.trak.mdia.mdhd.timescale.max(1)
    }
}

/// What a recording file holds.
#[derive(Debug, Clone)]
pub struct FileIndex {
    /// The init segment's `moov`.
    pub moov: mp4::Moov,
    /// In the `moov`'s track order; the first is the lead track (video
    /// when there is one), whose time decides the file's duration.
    pub tracks: Vec<TrackIndex>,
    /// The runs in file order.
    pub runs: Vec<Run>,
}

impl FileIndex {
    /// The media time covered by the lead track.
    pub fn duration(&self) -> std::time::Duration {
        let Some(t) = self.tracks.first() else {
            return std::time::Duration::ZERO;
        };
        let ticks: u64 = t.samples.iter().map(|s| u64::from(s.duration)).sum();
        std::time::Duration::from_nanos(
            u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(t.timescale()))
                .unwrap_or(u64::MAX),
        )
    }

    /// Seconds from the lead track's first sample to `dts` of track `i`
    /// (every track shares one timeline origin in a recording).
    pub fn seconds_at(&self, i: usize, dts: u64) -> f64 {
        let (Some(lead), Some(t)) = (self.tracks.first(), self.tracks.get(i)) else {
            return 0.0;
        };
        let lead0 = lead.samples.first().map_or(0, |s| s.dts) as f64 / f64::from(lead.timescale());
        dts as f64 / f64::from(t.timescale()) - lead0
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a recording: {0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> IndexError {
    IndexError::Invalid(s.into())
}

/// Reads the file at `path`; see the module docs.
pub fn read_file(path: &Path) -> Result<FileIndex, IndexError> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let len = f.get_ref().metadata()?.len();
    read(&mut f, len)
}

/// Reads a recording of `len` bytes from `r`.
pub fn read<R: Read + Seek>(r: &mut R, len: u64) -> Result<FileIndex, IndexError> {
    let mut pos = 0u64;
    let mut moov: Option<mp4::Moov> = None;
    let mut tracks: Vec<TrackIndex> = Vec::new();
    let mut runs = Vec::new();
    while pos + 8 <= len {
        r.seek(SeekFrom::Start(pos))?;
        let mut head = [0u8; 16];
        r.read_exact(&mut head[..8])?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, header_len) = match size32 {
            0 => (len - pos, 8u64),
            1 => {
                if pos + 16 > len {
                    break;
                }
                r.read_exact(&mut head[8..16])?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[8..16]);
                (u64::from_be_bytes(b), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return Err(invalid(format!("a box of {size} bytes at {pos}")));
        }
        let Some(end) = pos.checked_add(size).filter(|&e| e <= len) else {
            // Cut short: the file ends inside this box.
            break;
        };
        if &kind == b"moov" || &kind == b"moof" {
            if size > MAX_HEADER_BOX {
                return Err(invalid(format!("a {size}-byte header box")));
            }
            let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
            r.seek(SeekFrom::Start(pos))?;
            r.read_exact(&mut buf)?;
            let mut slice = &buf[..];
            if &kind == b"moov" {
                let m = mp4::Moov::decode(&mut slice)
                    .map_err(|e| invalid(format!("unreadable moov: {e}")))?;
                tracks = m
                    .trak
                    .iter()
                    .map(|t| TrackIndex {
                        trak: t.clone(),
                        samples: Vec::new(),
                    })
                    .collect();
                moov = Some(m);
            } else {
                let Some(m) = &moov else {
                    return Err(invalid("a fragment before the init segment"));
                };
                let Ok(moof) = mp4::Moof::decode(&mut slice) else {
                    break;
                };
                if !add_fragment(m, &moof, pos, len, &mut tracks, &mut runs) {
                    // Its samples run past the end of the file.
                    break;
                }
            }
        }
        pos = end;
    }
    let moov = moov.ok_or_else(|| invalid("no init segment (moov)"))?;
    Ok(FileIndex { moov, tracks, runs })
}

/// Adds the samples of `moof` (at `moof_pos`) if all of them lie within
/// the file's `len` bytes; returns whether it did.
fn add_fragment(
    moov: &mp4::Moov,
    moof: &mp4::Moof,
    moof_pos: u64,
    len: u64,
    tracks: &mut [TrackIndex],
    runs: &mut Vec<Run>,
) -> bool {
    let mut staged: Vec<(usize, Vec<SampleRef>)> = Vec::new();
    let mut next_base = moof_pos;
    for traf in &moof.traf {
        let id = traf.tfhd.track_id;
        let Some(ti) = moov.trak.iter().position(|t| t.tkhd.track_id == id) else {
            return false;
        };
        let trex = moov
            .mvex
            .as_ref()
            .and_then(|m| m.trex.iter().find(|t| t.track_id == id));
        let base = match (traf.tfhd.base_data_offset, traf.tfhd.default_base_is_moof) {
            (Some(b), _) => b,
            (None, true) => moof_pos,
            (None, false) => next_base,
        };
        let mut dts = traf.tfdt.as_ref().map_or_else(
            || {
                tracks[ti]
                    .samples
                    .last()
                    .map_or(0, |s| s.dts + u64::from(s.duration))
            },
            |t| t.base_media_decode_time,
        );
        let mut offset = base;
        for trun in &traf.trun {
            if let Some(d) = trun.data_offset {
                match base.checked_add_signed(i64::from(d)) {
                    Some(o) => offset = o,
                    None => return false,
                }
            }
            let mut samples = Vec::with_capacity(trun.samples.len());
            for e in trun.samples.iter() {
                let duration = e
                    .duration
                    .or(traf.tfhd.default_sample_duration)
                    .or(trex.map(|t| t.default_sample_duration))
                    .unwrap_or(0);
                let size = e
                    .size
                    .or(traf.tfhd.default_sample_size)
                    .or(trex.map(|t| t.default_sample_size))
                    .unwrap_or(0);
                let flags = e
                    .flags
                    .or(traf.tfhd.default_sample_flags)
                    .or(trex.map(|t| t.default_sample_flags))
                    .unwrap_or(0);
                let Some(end) = offset.checked_add(u64::from(size)).filter(|&e| e <= len) else {
                    return false;
                };
                samples.push(SampleRef {
                    offset,
                    size,
                    dts,
                    duration,
                    cts: i32::try_from(e.cts.unwrap_or(0)).unwrap_or(0),
                    sync: flags & NON_SYNC == 0,
                });
                offset = end;
                dts = dts.saturating_add(u64::from(duration));
            }
            staged.push((ti, samples));
        }
        next_base = offset;
    }
    for (ti, samples) in staged {
        if samples.is_empty() {
            continue;
        }
        let t = &mut tracks[ti];
        runs.push(Run {
            track: ti,
            first: t.samples.len(),
            count: samples.len(),
        });
        t.samples.extend(samples);
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cmaf::testutil::{aac_track, frame, h264_fixture, h264_track, synthetic_au};
    use crate::egress::record::core::{FileAction, RecorderCore};
    use std::time::Duration;

    /// One recorded file of `seconds` of 25 fps video (a keyframe every
    /// second) and 48 kHz AAC, as the recorder writes it.
    pub(crate) fn recorded(seconds: u32) -> Vec<u8> {
        let fx = h264_fixture();
        let mut core = RecorderCore::new(Duration::from_secs(3600), Duration::from_secs(1));
        core.handle_tracks(&[h264_track(&fx), aac_track()]);
        let mut file = Vec::new();
        let feed = |core: &mut RecorderCore, file: &mut Vec<u8>| {
            while let Some(a) = core.poll() {
                match a {
                    FileAction::Open { init, .. } => file.extend_from_slice(&init),
                    FileAction::Append { data, .. } => file.extend_from_slice(&data),
                    _ => {}
                }
            }
        };
        let wall = |ms: u64| crate::cmaf::testutil::wall(Duration::from_millis(ms));
        let mut audio = 0i64;
        for i in 0..seconds * 25 {
            let key = i.is_multiple_of(25);
            let dts = i64::from(i) * 3600;
            core.handle_frame(
                &frame(0, dts, key, synthetic_au(key, 300, i as u8)),
                wall(u64::from(i) * 40),
            );
            // AAC frames of 1024 samples up to this video time.
            while audio * 1024 * 90_000 <= dts * 48_000 {
                core.handle_frame(
                    &frame(1, audio * 1024, true, bytes::Bytes::from(vec![0x21; 50])),
                    wall(u64::from(i) * 40),
                );
                audio += 1;
            }
            feed(&mut core, &mut file);
        }
        core.flush();
        feed(&mut core, &mut file);
        file
    }

    #[test]
    fn a_recording_reads_back_with_every_sample() {
        let file = recorded(4);
        let idx = read(&mut std::io::Cursor::new(&file), file.len() as u64).unwrap();
        assert_eq!(idx.tracks.len(), 2);
        let v = &idx.tracks[0].samples;
        assert_eq!(v.len(), 100);
        assert_eq!(v.iter().filter(|s| s.sync).count(), 4);
        assert!(v.windows(2).all(|w| w[1].dts == w[0].dts + 3600));
        assert_eq!(idx.duration(), Duration::from_secs(4));
        for s in v {
            let at = s.offset as usize;
            assert_eq!(
                u32::from_be_bytes(file[at..at + 4].try_into().unwrap()),
                300,
                "offset points at the access unit's length prefix"
            );
        }
        assert!(idx.tracks[1].samples.len() >= 180);
        assert!(idx.tracks[1].samples.iter().all(|s| s.size == 50 && s.sync));
    }

    /// A file cut inside a fragment (kill -9, power loss) reads up to its
    /// last complete fragment.
    #[test]
    fn a_cut_file_reads_up_to_its_last_complete_fragment() {
        let file = recorded(4);
        let full = read(&mut std::io::Cursor::new(&file), file.len() as u64).unwrap();
        let cut = file.len() - 1000;
        let idx = read(&mut std::io::Cursor::new(&file[..cut]), cut as u64).unwrap();
        let n = idx.tracks[0].samples.len();
        assert!(
            (50..100).contains(&n),
            "{n} of {}",
            full.tracks[0].samples.len()
        );
        assert!(idx
            .tracks
            .iter()
            .flat_map(|t| &t.samples)
            .all(|s| s.offset + u64::from(s.size) <= cut as u64));
        // Only the init segment: no samples, still readable.
        let init_len = file.windows(4).position(|w| w == b"moof").unwrap() - 4;
        let idx = read(
            &mut std::io::Cursor::new(&file[..init_len]),
            init_len as u64,
        )
        .unwrap();
        assert_eq!(idx.tracks[0].samples.len(), 0);
        assert!(read(&mut std::io::Cursor::new(&file[..20]), 20).is_err());
    }
}
