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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::{
    Frame, Item, MediaKind, RecvError, Registry, Stream, StreamMaker, StreamState, Track,
};
use crate::codec::is_leading_skippable;
use crate::config::rendition::{Rendition, TranscodeSettings};

use audio::{AudioSettings, AudioTranscoder};

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
}

struct Job {
    registry: Arc<Registry>,
    source: Arc<Stream>,
    out: Arc<Stream>,
    rendition: Rendition,
    settings: TranscodeSettings,
    linger: Duration,
}

impl Job {
    async fn run(self) {
        let mut sub = self.source.subscribe();
        let mut lanes: Vec<Lane> = Vec::new();
        let mut tracks: Vec<Arc<Track>> = Vec::new();
        let mut has_video = false;
        let mut idle_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let why = loop {
            tokio::select! {
                item = sub.recv() => match item {
                    Ok(Item::Tracks(set)) => {
                        let (l, t, notice) = self.lanes(&set.tracks, &tracks, std::mem::take(&mut lanes));
                        lanes = l;
                        tracks = t;
                        has_video = tracks.iter().any(|t| t.kind() == MediaKind::Video);
                        self.out.set_ingest_info(crate::bus::IngestInfo {
                            transport: None,
                            notice,
                        });
                        // State first: a reader woken by the tracks finds it live.
                        self.out.set_state(self.source.state());
                        self.out.set_tracks(tracks.clone());
                    }
                    Ok(Item::Frame(f)) => self.frame(&f, &mut lanes, &tracks, has_video),
                    Err(RecvError::Closed) => break "its path was removed",
                },
                _ = tick.tick() => {
                    let still = self.registry.get(self.source.name());
                    if !still.is_some_and(|s| Arc::ptr_eq(&s, &self.source)) {
                        break "its path was removed";
                    }
                    if !tracks.is_empty() {
                        self.out.set_state(self.source.state());
                    }
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

    /// Lanes and output tracks for a new source track set; a track equal to
    /// the one before keeps its lane (and its encoder state). The notice
    /// says, in plain words, what could not be transcoded.
    fn lanes(
        &self,
        new: &[Arc<Track>],
        old: &[Arc<Track>],
        mut old_lanes: Vec<Lane>,
    ) -> (Vec<Lane>, Vec<Arc<Track>>, Option<String>) {
        let mut lanes = Vec::with_capacity(new.len());
        let mut out = Vec::with_capacity(new.len());
        let mut notes = Vec::new();
        for (i, t) in new.iter().enumerate() {
            // `old` holds output tracks; a kept audio lane's source is
            // compared through the lane itself.
            let kept = match old_lanes.get_mut(i) {
                Some(Lane::Audio(a)) if a.source() == &**t => {
                    Some(std::mem::replace(&mut old_lanes[i], Lane::Pass))
                }
                Some(Lane::Pass) if old.get(i).is_some_and(|o| o == t) => Some(Lane::Pass),
                _ => None,
            };
            let lane = match kept {
                Some(l) => l,
                None => self.lane_for(t, &mut notes),
            };
            out.push(match &lane {
                Lane::Pass => t.clone(),
                Lane::Audio(a) => Arc::new(a.output_track().clone()),
            });
            lanes.push(lane);
        }
        let notice = (!notes.is_empty()).then(|| notes.join("; "));
        (lanes, out, notice)
    }

    fn lane_for(&self, t: &Arc<Track>, notes: &mut Vec<String>) -> Lane {
        if self.rendition.audio_opus
            && t.kind() == MediaKind::Audio
            && !matches!(t.codec, crate::bus::Codec::Opus { .. })
        {
            let s = AudioSettings {
                bitrate: self.settings.opus_bitrate,
            };
            match AudioTranscoder::new(t, &s) {
                Ok(a) => return Lane::Audio(Box::new(a)),
                Err(e) => notes.push(e),
            }
        }
        Lane::Pass
    }

    fn frame(&self, f: &Arc<Frame>, lanes: &mut [Lane], tracks: &[Arc<Track>], has_video: bool) {
        let Some(lane) = lanes.get_mut(f.track) else {
            return;
        };
        match lane {
            Lane::Pass => {
                let Some(track) = tracks.get(f.track) else {
                    return;
                };
                let video = track.kind() == MediaKind::Video;
                if video && is_leading_skippable(&track.codec, &f.data) {
                    self.out.publish_leading(Frame::clone(f));
                } else {
                    let gop_start = f.keyframe && (video || !has_video);
                    self.out.publish(Frame::clone(f), gop_start);
                }
            }
            Lane::Audio(a) => {
                for o in a.push(f) {
                    self.out.publish(o, !has_video);
                }
            }
        }
    }
}
