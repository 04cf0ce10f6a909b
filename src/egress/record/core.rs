//! The recorder's pure core: bus items in, file actions out. It drives the
//! shared CMAF segmenter with long segments (one file each) and short
//! fragments (each written and flushed on its own), so every file is a
//! fragmented MP4 that plays up to its last complete fragment: the init
//! segment first, then `moof`+`mdat` pairs; no final `moov` is needed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::bus::{Frame, Track};
use crate::cmaf::segmenter::{Notice, Segmenter, SegmenterConfig, SegmenterOutput};

/// What the shell does with the disk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// Start a new file named after `start` (the wall-clock arrival time of
    /// its first frame) and write `init` (`ftyp`+`moov`) into it. A file
    /// still open is complete.
    Open { start: SystemTime, init: Bytes },
    /// Append one fragment (`moof`+`mdat`, `duration` of media) to the
    /// open file and flush it to disk.
    Append { data: Bytes, duration: Duration },
    /// The open file is complete.
    Close,
    /// Media dropped or re-timed, for the log.
    Notice(Notice),
}

/// One stream's recorder: see the module docs.
#[derive(Debug)]
pub struct RecorderCore {
    config: SegmenterConfig,
    segmenter: Segmenter,
    /// The tracks last handed in, to start afresh on them.
    tracks: Vec<Arc<Track>>,
    /// The latest init segment: the one new files start with.
    init: Option<Bytes>,
    open: bool,
    out: VecDeque<FileAction>,
}

impl RecorderCore {
    /// A recorder cutting files at the first keyframe after
    /// `segment_duration`, with fragments of about `part_duration`.
    pub fn new(segment_duration: Duration, part_duration: Duration) -> Self {
        let config = SegmenterConfig {
            part_duration,
            segment_duration,
        };
        RecorderCore {
            config,
            segmenter: Segmenter::new(config),
            tracks: Vec::new(),
            init: None,
            open: false,
            out: VecDeque::new(),
        }
    }

    /// The stream's tracks from the next frame on (the bus's `Item::Tracks`).
    pub fn handle_tracks(&mut self, tracks: &[Arc<Track>]) {
        self.tracks = tracks.to_vec();
        self.segmenter.handle_tracks(tracks);
        self.drain();
    }

    /// One frame; `wall` is when it arrived (names the file it starts).
    pub fn handle_frame(&mut self, frame: &Frame, wall: SystemTime) {
        self.segmenter.handle_frame(frame, wall);
        self.drain();
    }

    /// Completes the open file (the source ended, or frames were skipped):
    /// the next keyframe starts a new one.
    pub fn flush(&mut self) {
        self.segmenter.flush();
        self.drain();
        if self.open {
            self.open = false;
            self.out.push_back(FileAction::Close);
        }
    }

    /// Drops the open file's state and starts over on the current tracks:
    /// the next keyframe opens a new file (after a write error).
    pub fn restart(&mut self) {
        self.segmenter = Segmenter::new(self.config);
        self.init = None;
        self.open = false;
        let tracks = std::mem::take(&mut self.tracks);
        self.handle_tracks(&tracks);
    }

    /// The next action, oldest first.
    pub fn poll(&mut self) -> Option<FileAction> {
        self.out.pop_front()
    }

    fn drain(&mut self) {
        while let Some(o) = self.segmenter.poll_output() {
            match o {
                SegmenterOutput::Init { data, .. } => self.init = Some(data),
                SegmenterOutput::SegmentStart {
                    program_date_time, ..
                } => {
                    // The segmenter writes an init segment before its first
                    // segment, so there is one.
                    if let Some(init) = self.init.clone() {
                        self.open = true;
                        self.out.push_back(FileAction::Open {
                            start: program_date_time,
                            init,
                        });
                    }
                }
                SegmenterOutput::Part { data, duration, .. } => {
                    if self.open {
                        self.out.push_back(FileAction::Append { data, duration });
                    }
                }
                SegmenterOutput::SegmentEnd { .. } => {
                    if self.open {
                        self.open = false;
                        self.out.push_back(FileAction::Close);
                    }
                }
                SegmenterOutput::Notice(n) => self.out.push_back(FileAction::Notice(n)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::testutil::{frame, h264_fixture, h264_track, synthetic_au};

    /// Frame `i` of a 25 fps stream, a keyframe every second.
    fn vf(i: u32) -> Frame {
        let key = i.is_multiple_of(25);
        frame(0, i64::from(i) * 3600, key, synthetic_au(key, 200, i as u8))
    }

    fn wall(ms: i64) -> SystemTime {
        crate::cmaf::testutil::wall(Duration::from_millis(ms as u64))
    }

    fn actions(core: &mut RecorderCore) -> Vec<FileAction> {
        std::iter::from_fn(|| core.poll()).collect()
    }

    /// 25 fps H.264 with a keyframe every second: files are cut at the
    /// first keyframe after the segment duration, each starting with the
    /// init segment and its first frame's wall time, fragments between.
    #[test]
    fn files_start_at_keyframes_after_the_segment_duration() {
        let fx = h264_fixture();
        let mut core = RecorderCore::new(Duration::from_secs(2), Duration::from_secs(1));
        core.handle_tracks(&[h264_track(&fx)]);
        let mut all = Vec::new();
        for i in 0..125u32 {
            let f = vf(i);
            core.handle_frame(&f, wall(i64::from(i) * 40));
            all.extend(actions(&mut core));
        }
        core.flush();
        all.extend(actions(&mut core));
        let opens: Vec<SystemTime> = all
            .iter()
            .filter_map(|a| match a {
                FileAction::Open { start, init } => {
                    assert!(!init.is_empty());
                    Some(*start)
                }
                _ => None,
            })
            .collect();
        // 5 s of media: files at 0, 2 and 4 s.
        assert_eq!(
            opens,
            vec![wall(0), wall(2000), wall(4000)],
            "{:?}",
            all.iter()
                .filter(|a| !matches!(a, FileAction::Append { .. }))
                .collect::<Vec<_>>()
        );
        let closes = all.iter().filter(|a| **a == FileAction::Close).count();
        assert_eq!(closes, 3);
        let media: Duration = all
            .iter()
            .filter_map(|a| match a {
                FileAction::Append { duration, .. } => Some(*duration),
                _ => None,
            })
            .sum();
        assert_eq!(media, Duration::from_secs(5));
        // Every Append falls between an Open and its Close.
        let mut open = false;
        for a in &all {
            match a {
                FileAction::Open { .. } => open = true,
                FileAction::Close => open = false,
                FileAction::Append { .. } => assert!(open),
                FileAction::Notice(_) => {}
            }
        }
    }

    #[test]
    fn restart_opens_a_new_file_at_the_next_keyframe() {
        let fx = h264_fixture();
        let mut core = RecorderCore::new(Duration::from_secs(3600), Duration::from_secs(1));
        core.handle_tracks(&[h264_track(&fx)]);
        for i in 0..30u32 {
            core.handle_frame(&vf(i), wall(i64::from(i) * 40));
        }
        let before: Vec<_> = actions(&mut core);
        assert_eq!(
            before
                .iter()
                .filter(|a| matches!(a, FileAction::Open { .. }))
                .count(),
            1
        );
        core.restart();
        for i in 30..60u32 {
            core.handle_frame(&vf(i), wall(i64::from(i) * 40));
        }
        let after: Vec<_> = actions(&mut core);
        let opens: Vec<_> = after
            .iter()
            .filter_map(|a| match a {
                FileAction::Open { start, .. } => Some(*start),
                _ => None,
            })
            .collect();
        assert_eq!(opens, vec![wall(50 * 40)], "the keyframe at frame 50");
    }
}
