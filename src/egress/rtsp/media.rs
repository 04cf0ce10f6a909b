//! Packetize once, share with every RTSP reader.
//!
//! One [`RtpMedia`] per stream (and track-set generation) reads the bus,
//! turns each frame into RTP packets with one SSRC, sequence space and
//! timestamp offset per track, and publishes them through a [`Fanout`], so
//! the per-reader work is only writing bytes that already exist. It lives
//! while at least one reader holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::bus::{ByteLen, Fanout, GopLimits, Item, MediaKind, RecvError, Stream, Subscriber};
use crate::codec::Payloader;
use crate::egress::rtsp::sdp;

/// The RTP packets of one frame of one track.
#[derive(Debug)]
pub struct RtpBatch {
    /// Bus track index.
    pub track: usize,
    /// Complete RTP packets (12-byte header + payload), in order: views
    /// into `interleaved`.
    pub packets: Vec<Bytes>,
    /// The same packets framed for RTSP interleaved TCP (RFC 2326 §10.12:
    /// '$', channel, 16-bit length, packet) on channel `channel`, the one
    /// clients pick for this track (`2 * track`): a reader on that channel
    /// is written this one buffer, shared with every other such reader.
    /// Empty if a packet is too long to frame.
    pub interleaved: Bytes,
    pub channel: u8,
    /// RTP timestamp of the frame.
    pub rtp_timestamp: u32,
    /// When the frame reached the gateway.
    pub received: Instant,
}

impl ByteLen for Arc<RtpBatch> {
    fn byte_len(&self) -> usize {
        self.packets.iter().map(Bytes::len).sum()
    }
}

impl RtpBatch {
    /// A batch whose packets live in one interleaved-framed buffer for
    /// `channel` (one copy per frame, for all readers).
    pub fn new(
        track: usize,
        channel: u8,
        packets: &[Bytes],
        rtp_timestamp: u32,
        received: Instant,
    ) -> RtpBatch {
        let total: usize = packets.iter().map(|p| 4 + p.len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut ranges = Vec::with_capacity(packets.len());
        for p in packets {
            let Ok(len) = u16::try_from(p.len()) else {
                // Cannot be interleaved (readers on TCP skip it): keep the
                // packets as they are.
                return RtpBatch {
                    track,
                    packets: packets.to_vec(),
                    interleaved: Bytes::new(),
                    channel,
                    rtp_timestamp,
                    received,
                };
            };
            buf.put_u8(b'$');
            buf.put_u8(channel);
            buf.put_u16(len);
            let start = buf.len();
            buf.extend_from_slice(p);
            ranges.push(start..buf.len());
        }
        let interleaved = buf.freeze();
        RtpBatch {
            track,
            packets: ranges.into_iter().map(|r| interleaved.slice(r)).collect(),
            interleaved,
            channel,
            rtp_timestamp,
            received,
        }
    }
}

/// Fixed per-track RTP parameters shared by all readers.
#[derive(Clone, Copy, Debug)]
pub struct TrackRtp {
    pub ssrc: u32,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Added to the bus timestamp (truncated to 32 bits) to make the RTP timestamp.
    pub ts_offset: u32,
}

impl TrackRtp {
    /// RTP timestamp for a bus timestamp in this track's clock units.
    pub fn rtp_timestamp(&self, pts: i64) -> u32 {
        (pts as u32).wrapping_add(self.ts_offset)
    }
}

/// Where each track's sequence space and timeline stand, for RTP-Info of a
/// reader that starts with no cached packet of that track.
#[derive(Clone, Copy, Debug, Default)]
struct TrackPos {
    next_seq: u16,
    last_rtp_timestamp: u32,
}

/// The shared packetizer of one stream generation.
pub struct RtpMedia {
    pub generation: u64,
    pub tracks: Vec<TrackRtp>,
    fanout: Arc<Fanout<Arc<RtpBatch>>>,
    pos: Arc<Mutex<Vec<TrackPos>>>,
    /// Wall-clock time of bus timestamp 0 (common to all tracks), set on the
    /// first frame: the NTP↔RTP mapping for sender reports.
    epoch: Arc<Mutex<Option<SystemTime>>>,
    task: JoinHandle<()>,
}

impl Drop for RtpMedia {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Readers that fall this many frames behind skip to the next keyframe.
const CAPACITY: usize = 512;

impl RtpMedia {
    /// Starts packetizing `stream` (generation `set`), returning the media and
    /// a first subscriber created before any packet is published.
    fn start(
        stream: Arc<Stream>,
        set: &crate::bus::TrackSet,
        mtu: usize,
    ) -> (Arc<RtpMedia>, Subscriber<Arc<RtpBatch>>) {
        let tracks: Vec<TrackRtp> = set
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| TrackRtp {
                ssrc: rand::random(),
                payload_type: sdp::payload_type(i, t),
                clock_rate: t.clock_rate,
                ts_offset: rand::random(),
            })
            .collect();
        let mut payloaders = Vec::with_capacity(tracks.len());
        let mut pos = Vec::with_capacity(tracks.len());
        for (t, rtp) in set.tracks.iter().zip(&tracks) {
            let seq: u16 = rand::random();
            payloaders.push(
                Payloader::new(&t.codec, rtp.payload_type, rtp.ssrc, seq, mtu)
                    .map_err(|e| {
                        tracing::warn!(
                            path = stream.name(),
                            codec = t.codec.name(),
                            "no RTP payloader: {e}"
                        )
                    })
                    .ok(),
            );
            pos.push(TrackPos {
                next_seq: seq,
                last_rtp_timestamp: rtp.ts_offset,
            });
        }
        let has_video = set.tracks.iter().any(|t| t.kind() == MediaKind::Video);
        let video: Vec<bool> = set
            .tracks
            .iter()
            .map(|t| t.kind() == MediaKind::Video)
            .collect();
        let clock_rates: Vec<u32> = set.tracks.iter().map(|t| t.clock_rate).collect();
        // The codec each payloader was last set to.
        let mut codecs: Vec<_> = set.tracks.iter().map(|t| t.codec.clone()).collect();
        let fanout = Arc::new(Fanout::new(CAPACITY, GopLimits::default()));
        let first = fanout.subscribe();
        let pos = Arc::new(Mutex::new(pos));
        let epoch = Arc::new(Mutex::new(None));
        let generation = set.generation;
        let mut bus = stream.subscribe();
        let task = {
            let fanout = fanout.clone();
            let pos = pos.clone();
            let epoch = epoch.clone();
            let tracks = tracks.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let frame = match bus.recv().await {
                        Ok(Item::Frame(f)) => f,
                        Ok(Item::Tracks(set)) => {
                            if set.generation != generation {
                                // New track layout: readers must DESCRIBE again.
                                fanout.close();
                                break;
                            }
                            // New parameters (e.g. a new SPS) for the frames
                            // after this item.
                            for ((p, codec), t) in
                                payloaders.iter_mut().zip(&mut codecs).zip(&set.tracks)
                            {
                                if let Some(p) = p.as_mut().filter(|_| *codec != t.codec) {
                                    p.set_codec(&t.codec);
                                    *codec = t.codec.clone();
                                }
                            }
                            continue;
                        }
                        Err(RecvError::Closed) => {
                            fanout.close();
                            break;
                        }
                    };
                    let i = frame.track;
                    let (Some(Some(payloader)), Some(rtp)) = (payloaders.get_mut(i), tracks.get(i))
                    else {
                        continue;
                    };
                    {
                        let mut epoch = epoch.lock().unwrap_or_else(|e| e.into_inner());
                        if epoch.is_none() {
                            let age = frame.received.elapsed();
                            let secs = frame.pts as f64 / f64::from(clock_rates[i].max(1));
                            *epoch = SystemTime::now().checked_sub(age).and_then(|t| {
                                if secs >= 0.0 {
                                    t.checked_sub(std::time::Duration::from_secs_f64(secs))
                                } else {
                                    t.checked_add(std::time::Duration::from_secs_f64(-secs))
                                }
                            });
                        }
                    }
                    let ts = rtp.rtp_timestamp(frame.pts);
                    out.clear();
                    if let Err(e) = payloader.payload(&frame.data, ts, frame.keyframe, &mut out) {
                        tracing::debug!(path = stream.name(), track = i, "dropping a frame: {e}");
                        continue;
                    }
                    {
                        let mut pos = pos.lock().unwrap_or_else(|e| e.into_inner());
                        pos[i] = TrackPos {
                            next_seq: payloader.next_seq(),
                            last_rtp_timestamp: ts,
                        };
                    }
                    // H.265 RASL pictures after a CRA go to every reader,
                    // even one that starts at that CRA: skipping them would
                    // leave a sequence number gap that the reader counts as
                    // loss, and its decoder drops them itself (H.265 §8.1.3).
                    let gop_start = frame.keyframe && (video[i] || !has_video);
                    let channel = u8::try_from(2 * i).unwrap_or(u8::MAX);
                    fanout.publish(
                        Arc::new(RtpBatch::new(i, channel, &out, ts, frame.received)),
                        gop_start,
                    );
                }
            })
        };
        let media = Arc::new(RtpMedia {
            generation,
            tracks,
            fanout,
            pos,
            epoch,
            task,
        });
        (media, first)
    }

    /// A new reader of this media.
    pub fn subscribe(&self) -> Subscriber<Arc<RtpBatch>> {
        self.fanout.subscribe()
    }

    /// Whether the packetizer stopped (source gone or restarted with new tracks).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// `(seq, rtptime)` for RTP-Info of track `i` when the reader's first
    /// packet of it is not known yet: the next sequence number and the last
    /// RTP timestamp used.
    pub fn position(&self, i: usize) -> (u16, u32) {
        let pos = self.pos.lock().unwrap_or_else(|e| e.into_inner());
        pos.get(i)
            .map_or((0, 0), |p| (p.next_seq, p.last_rtp_timestamp))
    }

    /// RTP timestamp of track `i` at wall-clock `now`, for sender reports;
    /// `None` before the first frame.
    pub fn rtp_timestamp_at(&self, i: usize, now: SystemTime) -> Option<u32> {
        let epoch = (*self.epoch.lock().unwrap_or_else(|e| e.into_inner()))?;
        let t = self.tracks.get(i)?;
        let secs = match now.duration_since(epoch) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        Some(t.rtp_timestamp((secs * f64::from(t.clock_rate)) as i64))
    }
}

/// Running [`RtpMedia`] by path, shared by all RTSP connections.
#[derive(Default)]
pub struct MediaRegistry {
    map: Mutex<HashMap<String, Weak<RtpMedia>>>,
}

impl MediaRegistry {
    /// The stream's shared packetizer for `set`'s generation (started if
    /// needed) and a new subscriber to it.
    pub fn subscribe(
        &self,
        stream: &Arc<Stream>,
        set: &crate::bus::TrackSet,
        mtu: usize,
    ) -> (Arc<RtpMedia>, Subscriber<Arc<RtpBatch>>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(stream.name()).and_then(Weak::upgrade) {
            if m.generation == set.generation && !m.is_finished() {
                let sub = m.subscribe();
                return (m, sub);
            }
        }
        let (media, sub) = RtpMedia::start(stream.clone(), set, mtu);
        map.insert(stream.name().to_owned(), Arc::downgrade(&media));
        map.retain(|_, w| w.strong_count() > 0);
        (media, sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(sps: &'static [u8]) -> Arc<crate::bus::Track> {
        Arc::new(crate::bus::Track::new(
            crate::bus::Codec::H264 {
                sps: Bytes::from_static(sps),
                pps: Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
            },
            90_000,
        ))
    }

    fn idr(pts: i64) -> crate::bus::Frame {
        crate::bus::Frame {
            track: 0,
            pts,
            dts: pts,
            keyframe: true,
            received: Instant::now(),
            data: Bytes::from_static(&[0, 0, 0, 3, 0x65, 0x88, 0x84]),
        }
    }

    async fn next(sub: &mut Subscriber<Arc<RtpBatch>>) -> Result<Arc<RtpBatch>, RecvError> {
        tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv())
            .await
            .expect("a batch in time")
    }

    #[tokio::test]
    async fn in_band_parameters_reach_the_packets_and_a_new_generation_ends_the_readers() {
        const SPS1: &[u8] = &[0x67, 0x64, 0x00, 0x1f];
        const SPS2: &[u8] = &[0x67, 0x64, 0x00, 0x28];
        let stream = Stream::new("cam", "test");
        let set = stream.set_tracks(vec![h264(SPS1)]);
        let registry = MediaRegistry::default();
        let (_media, mut sub) = registry.subscribe(&stream, &set, 1400);
        stream.publish(idr(0), true);
        let first = next(&mut sub).await.expect("a batch");
        assert!(first.packets.iter().any(|p| p.ends_with(SPS1)));
        // A new SPS in band: the next keyframe is preceded by it.
        stream.set_tracks(vec![h264(SPS2)]);
        stream.publish(idr(3600), true);
        let second = next(&mut sub).await.expect("a batch");
        assert!(second.packets.iter().any(|p| p.ends_with(SPS2)));
        assert!(!second.packets.iter().any(|p| p.ends_with(SPS1)));
        // Other tracks (a new generation): readers must DESCRIBE again.
        let audio = crate::bus::Track::new(crate::bus::Codec::Pcma { channels: 1 }, 8000);
        stream.set_tracks(vec![Arc::new(audio)]);
        assert_eq!(next(&mut sub).await.err(), Some(RecvError::Closed));
    }

    #[test]
    fn batch_packets_are_views_of_one_interleaved_buffer() {
        let packets = vec![Bytes::from(vec![0x80u8; 14]), Bytes::from(vec![7u8; 300])];
        let b = RtpBatch::new(1, 2, &packets, 90_000, Instant::now());
        assert_eq!(b.packets, packets);
        assert_eq!(b.channel, 2);
        assert_eq!(b.interleaved.len(), 4 + 14 + 4 + 300);
        // RFC 2326 §10.12: '$', channel, 16-bit length, packet.
        assert_eq!(&b.interleaved[..4], &[b'$', 2, 0, 14]);
        assert_eq!(&b.interleaved[18..22], &[b'$', 2, 1, 44]);
        assert_eq!(&b.interleaved[22..], &packets[1][..]);
        // The packets share the interleaved buffer (no second copy).
        let range = b.interleaved.as_ptr_range();
        assert!(b.packets.iter().all(|p| range.contains(&p.as_ptr())));
    }

    #[test]
    fn an_unframable_packet_keeps_the_packets_and_no_interleaved_buffer() {
        let packets = vec![Bytes::from(vec![0u8; 70_000])];
        let b = RtpBatch::new(0, 0, &packets, 0, Instant::now());
        assert_eq!(b.packets, packets);
        assert!(b.interleaved.is_empty());
    }
}
