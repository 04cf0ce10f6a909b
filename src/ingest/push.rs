//! Streams pushed to the gateway (RTSP ANNOUNCE/RECORD through the RTSP
//! server, WHIP): the ingest side of [`PublishSink`], and the one home of
//! the publish rules. A publication feeds its path through the same
//! [`Publisher`](super::publisher::Publisher) as a camera; RTP arrives
//! through the same [`RtpTrack`] receiver as a pulled camera's.
//!
//! Rules: a path with a pulled source (or a rendition) refuses publishers
//! ([`PublishError::PathInUse`]); a `source = "publisher"` path takes one
//! publisher at a time, a second is refused unless `override_publisher`,
//! which ends the first; an unconfigured path takes one only with
//! `allow_unconfigured_publish` ([`PublishError::NotPublishable`]). A
//! configured path and its readers outlive its publications (readers get
//! frames again when a publisher returns); an unconfigured one ends with
//! its publication.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::publisher::{BusPublisher, Input, Quirks};
use super::rtp_track::{RtpEvent, RtpTrack, TimestampExtender};
use crate::bus::{
    Publication, PublishError, PublishSink, Registry, RtpSource, SourceFrame, SourceTrack, Stream,
    StreamState, Track,
};
use crate::codec::RtpPacket;
use crate::config::PublishConfig;

/// What a configured publisher path says while nobody publishes to it.
pub const PUBLISHER_LEFT: &str = "the publisher left; readers stay connected and get frames \
     again when it returns";

/// Opens publications onto paths of the registry, by the publish rules of
/// the config (see the module docs).
pub struct PushSink {
    registry: Arc<Registry>,
    quirks: Quirks,
    state: Arc<Mutex<SinkState>>,
}

struct SinkState {
    config: PublishConfig,
    /// Paths that have a publisher, and configured publisher paths.
    slots: HashMap<String, Slot>,
    next_id: u64,
}

/// A path's publishing side: one publisher for the path's whole life, so
/// timestamps and track generations carry on from one publication to the
/// next as from one camera session to the next.
struct Slot {
    publisher: Arc<BusPublisher>,
    /// The publication in charge.
    active: Option<(u64, Arc<AtomicBool>)>,
    /// Configured with `source = "publisher"`: outlives its publications.
    configured: bool,
}

impl PushSink {
    /// A sink with the default rules (no publisher paths, unconfigured
    /// paths refused) until [`Self::set_config`].
    pub fn new(registry: Arc<Registry>) -> Self {
        PushSink {
            registry,
            quirks: Quirks::default(),
            state: Arc::new(Mutex::new(SinkState {
                config: PublishConfig::default(),
                slots: HashMap::new(),
                next_id: 0,
            })),
        }
    }

    /// Applies the publish rules of a (re)loaded config: each
    /// `source = "publisher"` path gets its stream at once (readers may
    /// wait on it before anyone publishes); a path no longer configured
    /// goes when its publisher does.
    pub fn set_config(&self, config: PublishConfig) {
        let mut st = lock(&self.state);
        for name in config.paths.keys() {
            if let Some(slot) = st.slots.get_mut(name) {
                slot.configured = true;
                continue;
            }
            let stream = Stream::new(name.clone(), "publisher");
            if !self.registry.insert(stream.clone()) {
                tracing::warn!(
                    path = name.as_str(),
                    "publisher path not created: the name is in use by a pulled source"
                );
                continue;
            }
            st.slots.insert(
                name.clone(),
                Slot {
                    publisher: BusPublisher::new(stream, self.quirks),
                    active: None,
                    configured: true,
                },
            );
        }
        let gone: Vec<String> = st
            .slots
            .keys()
            .filter(|n| !config.paths.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let Some(slot) = st.slots.get_mut(&name) else {
                continue;
            };
            slot.configured = false;
            if slot.active.is_none() {
                if let Some(slot) = st.slots.remove(&name) {
                    end_stream(&self.registry, slot.publisher.stream());
                }
            }
        }
        st.config = config;
    }

    fn attach(
        &self,
        path: &str,
        tracks: Vec<SourceTrack>,
        receivers: Vec<(RtpTrack, TimestampExtender)>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError> {
        if tracks.is_empty() {
            return Err(PublishError::Tracks("no tracks announced".into()));
        }
        let mut st = lock(&self.state);
        let configured = st.config.paths.get(path).copied();
        if let Some(slot) = st.slots.get_mut(path) {
            if let Some((_, kicked)) = &slot.active {
                if !configured.is_some_and(|p| p.override_publisher) {
                    return Err(PublishError::PathInUse(path.to_owned()));
                }
                // override_publisher: the old publication ends at its next
                // packet, and its end no longer touches the path.
                kicked.store(true, Ordering::Relaxed);
                tracing::info!(path, "publisher replaced by a new one");
            }
        } else {
            if self.registry.get(path).is_some() {
                // A pulled camera or a rendition.
                return Err(PublishError::PathInUse(path.to_owned()));
            }
            if configured.is_none() && !st.config.allow_unconfigured {
                return Err(PublishError::NotPublishable(path.to_owned()));
            }
            let stream = Stream::new(path, "publisher");
            if !self.registry.insert(stream.clone()) {
                return Err(PublishError::PathInUse(path.to_owned()));
            }
            st.slots.insert(
                path.to_owned(),
                Slot {
                    publisher: BusPublisher::new(stream, self.quirks),
                    active: None,
                    configured: configured.is_some(),
                },
            );
        }
        st.next_id += 1;
        let id = st.next_id;
        let kicked = Arc::new(AtomicBool::new(false));
        let Some(slot) = st.slots.get_mut(path) else {
            return Err(PublishError::PathInUse(path.to_owned()));
        };
        slot.active = Some((id, kicked.clone()));
        let publisher = slot.publisher.clone();
        drop(st);
        let pushed = Pushed {
            path: path.to_owned(),
            id,
            kicked,
            publisher,
            receivers,
            registry: self.registry.clone(),
            state: self.state.clone(),
            events: Vec::new(),
        };
        let applied = pushed.publisher.handle(Input::Start(tracks), now);
        if let Some(why) = applied.failed {
            // Dropping `pushed` gives the path back.
            return Err(PublishError::Tracks(why));
        }
        tracing::info!(path, "publication started");
        Ok(Box::new(pushed))
    }
}

impl PublishSink for PushSink {
    fn open(
        &self,
        path: &str,
        tracks: Vec<SourceTrack>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError> {
        self.attach(path, tracks, Vec::new(), now)
    }

    fn open_rtp(
        &self,
        path: &str,
        tracks: Vec<RtpSource>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError> {
        let mut receivers = Vec::with_capacity(tracks.len());
        let mut described = Vec::with_capacity(tracks.len());
        for (i, t) in tracks.iter().enumerate() {
            let format = t.format();
            let announced = format.track();
            let receiver = RtpTrack::new(&format, announced.as_ref(), t.framerate)
                .map_err(|e| PublishError::Tracks(format!("track {i}: {e}")))?;
            let kind = match format.encoding_name.to_ascii_uppercase().as_str() {
                "H264" | "H265" | "JPEG" => crate::bus::MediaKind::Video,
                _ => crate::bus::MediaKind::Audio,
            };
            described.push(SourceTrack {
                kind,
                clock_rate: receiver.clock_rate(),
                track: announced,
            });
            receivers.push((receiver, TimestampExtender::default()));
        }
        self.attach(path, described, receivers, now)
    }
}

fn lock(state: &Mutex<SinkState>) -> std::sync::MutexGuard<'_, SinkState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn end_stream(registry: &Registry, stream: &Arc<Stream>) {
    registry.remove_stream(stream);
    stream.close();
}

/// One publication: the path's publisher is fed while this is in charge.
struct Pushed {
    path: String,
    id: u64,
    /// Set when another publisher took over (`override_publisher`).
    kicked: Arc<AtomicBool>,
    publisher: Arc<BusPublisher>,
    /// Per track, for publications that arrive as RTP.
    receivers: Vec<(RtpTrack, TimestampExtender)>,
    registry: Arc<Registry>,
    state: Arc<Mutex<SinkState>>,
    events: Vec<RtpEvent>,
}

impl Pushed {
    fn check(&self) -> Result<(), String> {
        if self.kicked.load(Ordering::Relaxed) {
            Err("replaced by a new publisher (override_publisher)".into())
        } else {
            Ok(())
        }
    }
}

impl Publication for Pushed {
    fn push(&mut self, frame: SourceFrame, now: Instant) -> Result<(), String> {
        self.check()?;
        match self.publisher.handle(Input::Frame(frame), now).failed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn set_parameters(&mut self, track: usize, params: Track, now: Instant) {
        if self.check().is_ok() {
            self.publisher
                .handle(Input::Parameters { track, params }, now);
        }
    }

    fn push_rtp(
        &mut self,
        track: usize,
        packet: RtpPacket<'_>,
        now: Instant,
    ) -> Result<(), String> {
        self.check()?;
        let Some((receiver, extender)) = self.receivers.get_mut(track) else {
            return Err(format!("RTP for track {track}, which was not announced"));
        };
        let extended = extender.extend(packet.timestamp);
        receiver.push(track, packet, extended, &mut self.events);
        let mut failed = None;
        for event in self.events.drain(..) {
            let applied = match event {
                RtpEvent::Dropped(reason) => {
                    self.publisher.stream().stats.frame_dropped(reason);
                    continue;
                }
                RtpEvent::Params(params) => self
                    .publisher
                    .handle(Input::Parameters { track, params }, now),
                RtpEvent::Frame(frame) => self.publisher.handle(Input::Frame(frame), now),
            };
            if applied.failed.is_some() {
                failed = applied.failed;
            }
        }
        match failed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        let Some(slot) = st.slots.get_mut(&self.path) else {
            return;
        };
        if slot.active.as_ref().map(|(id, _)| *id) != Some(self.id) {
            // Replaced: the path is the new publisher's.
            return;
        }
        slot.active = None;
        if slot.configured {
            self.publisher
                .stream()
                .set_state(StreamState::Reconnecting {
                    error: PUBLISHER_LEFT.into(),
                });
        } else if let Some(slot) = st.slots.remove(&self.path) {
            end_stream(&self.registry, slot.publisher.stream());
        }
        tracing::info!(path = self.path.as_str(), "publication ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Codec, Item, StreamState};
    use bytes::Bytes;

    fn h264() -> Track {
        Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f]),
                pps: Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
            },
            90_000,
        )
    }

    fn frame(pts: i64, nal_header: u8) -> SourceFrame {
        SourceFrame {
            track: 0,
            pts,
            dts: None,
            data: Bytes::from(vec![0, 0, 0, 2, nal_header, 0x88]),
            source_keyframe: false,
            loss: 0,
        }
    }

    #[tokio::test]
    async fn pushed_frames_go_through_the_publisher_onto_a_new_path() {
        let registry = Registry::new();
        let push = PushSink::new(registry.clone());
        push.set_config(PublishConfig {
            allow_unconfigured: true,
            ..PublishConfig::default()
        });
        let sink: Arc<dyn PublishSink> = Arc::new(push);
        let t0 = Instant::now();
        let mut publication = sink
            .open("pushed", vec![SourceTrack::known(h264())], t0)
            .expect("a free path");
        let stream = registry.get("pushed").expect("the path exists");
        let mut reader = stream.subscribe();
        // A delta frame before the first IDR is dropped, as from a camera.
        publication.push(frame(0, 0x41), t0).expect("pushed");
        publication.push(frame(3600, 0x65), t0).expect("pushed");
        publication.push(frame(7200, 0x41), t0).expect("pushed");
        assert_eq!(stream.state(), StreamState::Live);
        let mut got = Vec::new();
        while let Ok(Some(item)) = reader.try_recv() {
            got.push(match item {
                Item::Tracks(set) => format!("tracks {}", set.generation),
                Item::Frame(f) => format!("{} {}", f.pts, f.keyframe),
            });
        }
        assert_eq!(got, ["tracks 1", "3600 true", "7200 false"]);

        // The path is taken while published, and free again after.
        assert_eq!(
            sink.open("pushed", vec![SourceTrack::known(h264())], t0)
                .err(),
            Some(PublishError::PathInUse("pushed".into()))
        );
        drop(publication);
        assert!(registry.get("pushed").is_none());
        assert!(reader.recv().await.is_err(), "readers are ended");
        assert!(sink
            .open("pushed", vec![SourceTrack::known(h264())], t0)
            .is_ok());
    }

    fn config(override_publisher: bool) -> PublishConfig {
        let mut c = PublishConfig::default();
        c.paths.insert(
            "pub".into(),
            crate::config::PublisherPath { override_publisher },
        );
        c
    }

    #[tokio::test]
    async fn the_rules_say_who_may_publish_where() {
        let registry = Registry::new();
        registry.insert(Stream::new("cam", "rtsp://camera/"));
        let sink = PushSink::new(registry.clone());
        sink.set_config(config(false));
        let t0 = Instant::now();
        let open = |path: &str| sink.open(path, vec![SourceTrack::known(h264())], t0).err();
        assert_eq!(open("cam"), Some(PublishError::PathInUse("cam".into())));
        assert_eq!(
            open("other"),
            Some(PublishError::NotPublishable("other".into()))
        );
        // The configured path exists before anyone publishes.
        assert!(registry.get("pub").is_some());
        let first = sink
            .open("pub", vec![SourceTrack::known(h264())], t0)
            .expect("first publisher");
        assert_eq!(open("pub"), Some(PublishError::PathInUse("pub".into())));
        drop(first);
        assert!(open("pub").is_none(), "free again");
    }

    #[tokio::test]
    async fn readers_of_a_configured_path_outlive_its_publisher() {
        let registry = Registry::new();
        let sink = PushSink::new(registry.clone());
        sink.set_config(config(false));
        let t0 = Instant::now();
        let stream = registry.get("pub").expect("configured");
        let mut reader = stream.subscribe();
        let mut p = sink
            .open("pub", vec![SourceTrack::known(h264())], t0)
            .expect("publisher");
        p.push(frame(0, 0x65), t0).expect("pushed");
        drop(p);
        assert!(matches!(stream.state(), StreamState::Reconnecting { .. }));
        let mut p = sink
            .open("pub", vec![SourceTrack::known(h264())], t0)
            .expect("publisher again");
        p.push(frame(3600, 0x65), t0).expect("pushed");
        assert_eq!(stream.state(), StreamState::Live);
        let mut keyframes = 0;
        while let Ok(Some(item)) = reader.try_recv() {
            if matches!(item, Item::Frame(f) if f.keyframe) {
                keyframes += 1;
            }
        }
        assert_eq!(keyframes, 2, "the same reader got both publications");
        assert!(registry.get("pub").is_some());
    }

    #[tokio::test]
    async fn override_publisher_ends_the_first_publication() {
        let registry = Registry::new();
        let sink = PushSink::new(registry.clone());
        sink.set_config(config(true));
        let t0 = Instant::now();
        let mut first = sink
            .open("pub", vec![SourceTrack::known(h264())], t0)
            .expect("first");
        let mut second = sink
            .open("pub", vec![SourceTrack::known(h264())], t0)
            .expect("second replaces it");
        assert!(
            first.push(frame(0, 0x65), t0).is_err(),
            "the first is ended"
        );
        drop(first);
        second.push(frame(0, 0x65), t0).expect("the second goes on");
        assert_eq!(
            registry.get("pub").expect("path").state(),
            StreamState::Live
        );
    }

    #[tokio::test]
    async fn rtp_publications_are_depacketized_like_a_camera() {
        let registry = Registry::new();
        let sink = PushSink::new(registry.clone());
        sink.set_config(config(false));
        let t0 = Instant::now();
        let mut p = sink
            .open_rtp(
                "pub",
                vec![RtpSource {
                    encoding_name: "PCMU".into(),
                    clock_rate: 8000,
                    channels: None,
                    fmtp: None,
                    framerate: None,
                }],
                t0,
            )
            .expect("publisher");
        let stream = registry.get("pub").expect("path");
        let mut reader = stream.subscribe();
        for i in 0..3u16 {
            let pkt = RtpPacket {
                sequence_number: i,
                timestamp: 1_000_000 + u32::from(i) * 160,
                marker: false,
                payload: &[0xff; 160],
                loss: 0,
            };
            p.push_rtp(0, pkt, t0).expect("packet");
        }
        let mut pts = Vec::new();
        while let Ok(Some(item)) = reader.try_recv() {
            if let Item::Frame(f) = item {
                pts.push(f.pts);
            }
        }
        assert_eq!(pts.len(), 3, "{pts:?}");
        assert_eq!(pts[1] - pts[0], 160);
        let pkt = RtpPacket {
            sequence_number: 9,
            timestamp: 0,
            marker: false,
            payload: &[0xff],
            loss: 0,
        };
        assert!(p.push_rtp(1, pkt, t0).is_err(), "no track 1");
    }
}
