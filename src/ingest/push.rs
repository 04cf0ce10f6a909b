//! Streams pushed to the gateway (RTSP ANNOUNCE/RECORD through the RTSP
//! server; later WHIP): the ingest side of [`PublishSink`]. Each
//! publication is a path of its own on the bus, fed through the same
//! [`Publisher`](super::publisher::Publisher) as a camera, and removed when
//! the publisher goes.

use std::sync::Arc;
use std::time::Instant;

use super::publisher::{BusPublisher, Input, Quirks};
use crate::bus::{
    Publication, PublishError, PublishSink, Registry, SourceFrame, SourceTrack, Stream, Track,
};

/// Opens publications as new paths of the registry.
pub struct PushSink {
    registry: Arc<Registry>,
    quirks: Quirks,
}

impl PushSink {
    pub fn new(registry: Arc<Registry>) -> Self {
        PushSink {
            registry,
            quirks: Quirks::default(),
        }
    }
}

impl PublishSink for PushSink {
    fn open(
        &self,
        path: &str,
        tracks: Vec<SourceTrack>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError> {
        if tracks.is_empty() {
            return Err(PublishError::Tracks("no tracks announced".into()));
        }
        let stream = Stream::new(path, "RTSP publisher");
        if !self.registry.insert(stream.clone()) {
            return Err(PublishError::PathInUse(path.to_owned()));
        }
        let publisher = BusPublisher::new(stream, self.quirks);
        let pushed = Pushed {
            publisher,
            registry: self.registry.clone(),
        };
        let applied = pushed.publisher.handle(Input::Start(tracks), now);
        if let Some(why) = applied.failed {
            // Dropping `pushed` removes the path again.
            return Err(PublishError::Tracks(why));
        }
        tracing::info!(path, "publication started");
        Ok(Box::new(pushed))
    }
}

/// One publication: its path lives as long as this does.
struct Pushed {
    publisher: Arc<BusPublisher>,
    registry: Arc<Registry>,
}

impl Publication for Pushed {
    fn push(&mut self, frame: SourceFrame, now: Instant) -> Result<(), String> {
        match self.publisher.handle(Input::Frame(frame), now).failed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn set_parameters(&mut self, track: usize, params: Track, now: Instant) {
        self.publisher
            .handle(Input::Parameters { track, params }, now);
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        let stream = self.publisher.stream();
        self.registry.remove_stream(stream);
        stream.close();
        tracing::info!(path = stream.name(), "publication ended");
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
        let sink: Arc<dyn PublishSink> = Arc::new(PushSink::new(registry.clone()));
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
}
