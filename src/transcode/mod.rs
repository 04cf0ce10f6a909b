//! Renditions: a stream transcoded in process and published as a stream of
//! its own (`cam~opus`, `cam~h264`; names in `config::rendition`), read
//! once from its source stream on the bus and fanned out like a camera.
//! Started when a reader opens the rendition (`bus::Registry::open`),
//! ended a while after its last reader left.
//!
//! Pure cores ([`audio::AudioTranscoder`]) with this module as their tokio
//! shell. Imports `bus`, `codec`, `config`; nothing imports it but the
//! wiring in `lib.rs` (egresses reach renditions through the bus registry).

pub mod audio;
pub mod snapshot;
pub mod video;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::{
    Codec, Frame, Item, MediaKind, RecvError, Registry, Stream, StreamMaker, StreamState, Track,
};
use crate::codec::is_leading_skippable;
use crate::config::rendition::{Rendition, TranscodeSettings};

use audio::{AudioSettings, AudioTranscoder};
use video::{VideoSettings, VideoTranscoder};

/// How long a rendition runs on with no reader: a page reload or a
/// player's reconnect finds it still warm.
pub const LINGER: Duration = Duration::from_secs(10);

/// The per-path settings a maker needs: the path's `[paths.NAME]`
/// transcoding keys, `None` for a path the configuration doesn't name (a
/// publisher's), which gets the defaults.
pub type SettingsOf = dyn Fn(&str) -> Option<TranscodeSettings> + Send + Sync;

/// Starts renditions for [`Registry::open`]. See the module docs.
pub struct Maker {
    settings_of: Box<SettingsOf>,
    linger: Duration,
}

impl Maker {
    pub fn new(settings_of: Box<SettingsOf>) -> Arc<Self> {
        Arc::new(Maker {
            settings_of,
            linger: LINGER,
        })
    }

    /// [`Maker::new`] with another idle time before a rendition stops.
    pub fn with_linger(settings_of: Box<SettingsOf>, linger: Duration) -> Arc<Self> {
        Arc::new(Maker {
            settings_of,
            linger,
        })
    }
}

impl StreamMaker for Maker {
    fn make(&self, registry: &Arc<Registry>, name: &str) -> Result<Option<Arc<Stream>>, String> {
        let Some((base, rendition)) = Rendition::parse(name) else {
            return Ok(None);
        };
        if rendition.is_none() {
            return Ok(None);
        }
        let Some(source) = registry.get(base) else {
            return Ok(None);
        };
        let settings = self.settings(base);
        settings.allows(rendition)?;
        if rendition.video_h264 && !video::AVAILABLE {
            return Err(video::TranscodeError::NotBuilt.to_string());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err("renditions need the gateway's runtime".into());
        };
        let out = Stream::new(name, source.source());
        // Live from the start when its source is: a reader that came first
        // waits for the tracks (a few ms) instead of being told "not live".
        out.set_state(source.state());
        if !registry.insert(out.clone()) {
            // Another reader made it first.
            return Ok(registry.get(name));
        }
        tracing::info!(path = base, rendition = name, "rendition started");
        let job = Job {
            registry: registry.clone(),
            source,
            out: out.clone(),
            rendition,
            settings,
            linger: self.linger,
        };
        runtime.spawn(job.run());
        Ok(Some(out))
    }

    fn settings(&self, base: &str) -> TranscodeSettings {
        (self.settings_of)(base).unwrap_or_default()
    }
}

/// What happens to one source track in a rendition.
enum Lane {
    /// The same frames, republished.
    Pass,
    Audio(Box<AudioTranscoder>),
    Video(Box<VideoTranscoder>),
}

impl Lane {
    /// Whether this lane was made for source track `t` and can go on with
    /// it (a video lane takes new parameter sets of the same codec).
    fn keeps(&mut self, t: &Track, old_source: Option<&Arc<Track>>) -> bool {
        match self {
            Lane::Audio(a) => a.source() == t,
            Lane::Video(v) => {
                let same_codec = old_source.is_some_and(|o| o.codec.same_kind_as(&t.codec));
                if same_codec {
                    v.set_source(t);
                }
                same_codec
            }
            Lane::Pass => old_source.is_some_and(|o| **o == *t),
        }
    }
}

struct Job {
    registry: Arc<Registry>,
    source: Arc<Stream>,
    out: Arc<Stream>,
    rendition: Rendition,
    settings: TranscodeSettings,
    linger: Duration,
}

/// A rendition's running state: one lane per source track, the output
/// tracks (published once every transcoded video track has one).
#[derive(Default)]
struct Lanes {
    lanes: Vec<Lane>,
    /// The source tracks the lanes were made for.
    sources: Vec<Arc<Track>>,
    /// Output tracks; `None` for a video lane before its first picture.
    tracks: Vec<Option<Arc<Track>>>,
    has_video: bool,
    /// The output track set has been published.
    ready: bool,
}

impl Job {
    async fn run(self) {
        let mut sub = self.source.subscribe();
        let mut state = Lanes::default();
        let mut idle_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let why = loop {
            tokio::select! {
                item = sub.recv() => match item {
                    Ok(Item::Tracks(set)) => self.new_tracks(&set.tracks, &mut state),
                    Ok(Item::Frame(f)) => self.frame(&f, &mut state),
                    Err(RecvError::Closed) => break "its path was removed",
                },
                _ = tick.tick() => {
                    let still = self.registry.get(self.source.name());
                    if !still.is_some_and(|s| Arc::ptr_eq(&s, &self.source)) {
                        break "its path was removed";
                    }
                    self.out.set_state(self.source.state());
                    if self.out.subscriber_count() > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= self.linger {
                        break "its last reader left";
                    }
                }
            }
        };
        self.registry.remove_stream(&self.out);
        self.out.set_state(StreamState::Failed {
            reason: format!("rendition stopped: {why}"),
        });
        self.out.close();
        tracing::info!(rendition = self.out.name(), why, "rendition stopped");
    }

    /// Lanes for a new source track set; a lane that can go on with its
    /// track keeps its codec state. What can't be transcoded is passed
    /// through and said, in plain words, in the stream's notice.
    fn new_tracks(&self, new: &[Arc<Track>], st: &mut Lanes) {
        let mut old = std::mem::take(&mut st.lanes).into_iter();
        let mut notes = Vec::new();
        st.tracks.clear();
        for (i, t) in new.iter().enumerate() {
            let lane = match old.next() {
                Some(mut l) => {
                    if l.keeps(t, st.sources.get(i)) {
                        l
                    } else {
                        self.lane_for(t, &mut notes)
                    }
                }
                None => self.lane_for(t, &mut notes),
            };
            st.tracks.push(match &lane {
                Lane::Pass => Some(t.clone()),
                Lane::Audio(a) => Some(Arc::new(a.output_track().clone())),
                Lane::Video(v) => v.output_track().map(|t| Arc::new(t.clone())),
            });
            st.lanes.push(lane);
        }
        st.sources = new.to_vec();
        st.has_video = new.iter().any(|t| t.kind() == MediaKind::Video);
        self.out.set_ingest_info(crate::bus::IngestInfo {
            transport: None,
            notice: (!notes.is_empty()).then(|| notes.join("; ")),
        });
        st.ready = false;
        self.publish_tracks(st);
    }

    /// Publishes the output track set once every track has one.
    fn publish_tracks(&self, st: &mut Lanes) {
        let Some(tracks) = st.tracks.iter().cloned().collect::<Option<Vec<_>>>() else {
            return;
        };
        // State first: a reader woken by the tracks finds it live.
        self.out.set_state(self.source.state());
        self.out.set_tracks(tracks);
        st.ready = true;
    }

    fn lane_for(&self, t: &Arc<Track>, notes: &mut Vec<String>) -> Lane {
        let kind = t.kind();
        if self.rendition.audio_opus
            && kind == MediaKind::Audio
            && !matches!(t.codec, Codec::Opus { .. })
        {
            let s = AudioSettings {
                bitrate: self.settings.opus_bitrate,
            };
            match AudioTranscoder::new(t, &s) {
                Ok(a) => return Lane::Audio(Box::new(a)),
                Err(e) => notes.push(e),
            }
        }
        if self.rendition.video_h264 && matches!(t.codec, Codec::H265 { .. }) {
            let s = VideoSettings {
                bitrate: self.settings.video_bitrate,
            };
            match VideoTranscoder::new(t, &s) {
                Ok(v) => return Lane::Video(Box::new(v)),
                Err(e) => notes.push(e.to_string()),
            }
        }
        Lane::Pass
    }

    fn frame(&self, f: &Arc<Frame>, st: &mut Lanes) {
        let i = f.track;
        let (Some(lane), Some(source)) = (st.lanes.get_mut(i), st.sources.get(i)) else {
            return;
        };
        let video = source.kind() == MediaKind::Video;
        match lane {
            Lane::Pass => {
                if !st.ready {
                    return;
                }
                if video && is_leading_skippable(&source.codec, &f.data) {
                    self.out.publish_leading(Frame::clone(f));
                } else {
                    let gop_start = f.keyframe && (video || !st.has_video);
                    self.out.publish(Frame::clone(f), gop_start);
                }
            }
            Lane::Audio(a) => {
                let out = a.push(f);
                if st.ready {
                    for o in out {
                        self.out.publish(o, !st.has_video);
                    }
                }
            }
            Lane::Video(v) => {
                let out = v.push(f);
                let now = v.output_track().map(|t| Arc::new(t.clone()));
                if now.is_some() && st.tracks.get(i) != Some(&now) {
                    if let Some(slot) = st.tracks.get_mut(i) {
                        *slot = now;
                    }
                    self.publish_tracks(st);
                }
                if st.ready {
                    for o in out {
                        let key = o.keyframe;
                        self.out.publish(o, key);
                    }
                }
            }
        }
    }
}
