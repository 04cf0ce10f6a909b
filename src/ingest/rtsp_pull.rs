//! Pulls a camera's RTSP stream with retina and publishes it on the bus.
//!
//! One task per path. `auto` transport tries UDP first and falls back to TCP
//! interleaved when no media arrives within 3 s or the camera refuses UDP
//! (461), because routers with an RTSP ALG and firewalls drop or rewrite UDP.
//! Once UDP failed for a source, later reconnects go straight to TCP.

use std::num::NonZeroU16;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoParametersCodec};

use super::opus_side::{self, AbortOnDrop, OpusSide};
use super::{Backoff, Source, Timeline};
use crate::bus::{Codec, Frame, IngestInfo, MediaKind, Stream, StreamState, Track};
use crate::config::{redact, SourceConfig, TransportPref};

/// How long an RTSP request to the camera may take before we give up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No media over UDP for this long after PLAY: UDP is considered blocked.
const UDP_SILENCE: Duration = Duration::from_secs(3);
/// No media for this long during a session: the camera is considered gone.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

/// RTSP pull source (retina).
pub struct RtspPull {
    config: SourceConfig,
    group: Arc<SessionGroup>,
}

impl RtspPull {
    pub fn new(config: SourceConfig) -> Self {
        RtspPull {
            config,
            group: Arc::new(SessionGroup::default()),
        }
    }
}

impl Source for RtspPull {
    fn run(self: Box<Self>, stream: Arc<Stream>) -> BoxFuture<'static, ()> {
        Box::pin(run(*self, stream))
    }
}

/// Why one session with the camera ended.
#[derive(Debug)]
enum SessionEnd {
    /// UDP was set up but nothing arrived, or the camera refused UDP.
    UdpFailed(String),
    /// Anything else, in plain words.
    Failed(String),
}

/// State that outlives one RTSP session.
struct Pull {
    config: SourceConfig,
    group: Arc<SessionGroup>,
    stream: Arc<Stream>,
    /// Per bus track: timestamp continuity across sessions.
    timelines: Vec<Timeline>,
    /// UDP failed once: use TCP from now on.
    tcp_only: bool,
    notice: Option<String>,
    /// Timestamp continuity of the Opus track read by [`opus_side`].
    opus_timeline: Arc<std::sync::Mutex<Timeline>>,
}

async fn run(src: RtspPull, stream: Arc<Stream>) {
    let url = src.config.display_url();
    let mut pull = Pull {
        tcp_only: src.config.transport == TransportPref::Tcp,
        config: src.config,
        group: src.group,
        stream,
        timelines: Vec::new(),
        notice: None,
        opus_timeline: Arc::new(std::sync::Mutex::new(Timeline::new(48000))),
    };
    let mut backoff = Backoff::default();
    loop {
        let use_tcp = pull.tcp_only;
        let started = Instant::now();
        let (end, was_live) = pull.session(use_tcp).await;
        if was_live {
            backoff.reset();
        }
        let error = match end {
            SessionEnd::UdpFailed(why) if pull.config.transport == TransportPref::Auto => {
                let msg = format!("{why}: UDP is probably blocked or rewritten by a router's RTSP ALG or a firewall; switched to TCP");
                tracing::warn!(path = pull.stream.name(), source = %url, "{msg}");
                pull.notice = Some(msg);
                pull.tcp_only = true;
                // Retry at once over TCP: this is not a camera failure.
                continue;
            }
            SessionEnd::UdpFailed(why) => format!(
                "{why}: UDP is probably blocked or rewritten by a router's RTSP ALG or a firewall; use transport = \"tcp\" or \"auto\""
            ),
            SessionEnd::Failed(why) => why,
        };
        pull.stream.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        let delay = backoff.next_delay();
        tracing::warn!(
            path = pull.stream.name(),
            source = %url,
            after = ?started.elapsed(),
            "source failed: {error}; retrying in {}s",
            delay.as_secs()
        );
        pull.stream.set_state(StreamState::Reconnecting {
            error: error.clone(),
        });
        tokio::time::sleep(delay).await;
    }
}

/// Plain words for a retina error, with credentials redacted.
fn plain_error(what: &str, e: &retina::Error) -> String {
    let first_line = e.to_string();
    let first_line = first_line.lines().next().unwrap_or("").trim().to_owned();
    let detail = match e.status_code() {
        Some(401) => {
            "the camera refused the credentials (401 Unauthorized): check user and password"
                .to_owned()
        }
        Some(403) => "the camera forbids this stream (403 Forbidden)".to_owned(),
        Some(404) => "the camera has no stream at this path (404 Not Found)".to_owned(),
        Some(code) => format!("the camera answered {what} with {code}: {first_line}"),
        None if first_line.contains("onnection refused") => {
            "cannot connect to the camera: connection refused (is it on, and is the port right?)"
                .to_owned()
        }
        None => format!("{what} failed: {first_line}"),
    };
    redact(&detail)
}

impl Pull {
    /// One RTSP session: DESCRIBE, SETUP, PLAY, then frames until failure.
    /// Returns why it ended and whether it went live.
    async fn session(&mut self, use_tcp: bool) -> (SessionEnd, bool) {
        let mut live = false;
        let end = self.session_inner(use_tcp, &mut live).await;
        (end, live)
    }

    fn session_options(&self) -> SessionOptions {
        let creds = self.config.user.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: self.config.pass.clone().unwrap_or_default(),
        });
        SessionOptions::default()
            .creds(creds)
            .user_agent(format!("rtspgate/{}", env!("CARGO_PKG_VERSION")))
            .session_group(self.group.clone())
    }

    async fn session_inner(&mut self, use_tcp: bool, live: &mut bool) -> SessionEnd {
        let options = self.session_options();
        let described = tokio::time::timeout(
            REQUEST_TIMEOUT,
            retina::client::Session::describe(self.config.url.clone(), options),
        )
        .await;
        let mut session = match described {
            Err(_) => {
                return SessionEnd::Failed(format!(
                    "the camera did not answer DESCRIBE within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e)) => return SessionEnd::Failed(plain_error("DESCRIBE", &e)),
            Ok(Ok(s)) => s,
        };

        // Pick the streams we can carry; the rest are skipped with a note.
        let mut picked = Vec::new(); // (retina stream index, kind)
        let mut skipped = Vec::new();
        // Opus: read by a second session (see `opus_side`); (index, channels).
        let mut opus = None;
        for (i, s) in session.streams().iter().enumerate() {
            let enc = s.encoding_name();
            if (s.media(), enc) == ("audio", "opus") && opus.is_none() {
                opus = Some((i, s.channels().map_or(2, NonZeroU16::get)));
                continue;
            }
            let ok = matches!((s.media(), enc), ("video", "h264") | ("video", "h265"))
                || matches!(
                    (s.media(), enc),
                    ("audio", "mpeg4-generic") | ("audio", "pcma") | ("audio", "pcmu")
                );
            if ok {
                picked.push(i);
            } else {
                skipped.push(format!("{}/{}", s.media(), enc));
            }
        }
        if !skipped.is_empty() {
            tracing::info!(
                path = self.stream.name(),
                "skipping unsupported tracks: {}",
                skipped.join(", ")
            );
        }
        if picked.is_empty() && opus.is_some() {
            return SessionEnd::Failed(
                "the camera offers only Opus audio; rtspgate reads Opus only beside a video or other audio track".into(),
            );
        }
        if picked.is_empty() {
            return SessionEnd::Failed(format!(
                "the camera offers no track rtspgate can carry (offered: {})",
                skipped.join(", ")
            ));
        }
        let transport = if use_tcp {
            Transport::Tcp(TcpTransportOptions::default())
        } else {
            Transport::Udp(UdpTransportOptions::default())
        };
        for &i in &picked {
            let setup = tokio::time::timeout(
                REQUEST_TIMEOUT,
                session.setup(
                    i,
                    SetupOptions::default()
                        .transport(transport.clone())
                        .frame_format(FrameFormat::MP4),
                ),
            )
            .await;
            match setup {
                Err(_) => {
                    return SessionEnd::Failed("the camera did not answer SETUP in time".into())
                }
                Ok(Err(e)) if !use_tcp && e.status_code() == Some(461) => {
                    return SessionEnd::UdpFailed(
                        "the camera refused RTP over UDP (461 Unsupported Transport)".into(),
                    )
                }
                Ok(Err(e)) => return SessionEnd::Failed(plain_error("SETUP", &e)),
                Ok(Ok(())) => {}
            }
        }
        let playing = tokio::time::timeout(
            REQUEST_TIMEOUT,
            session
                .play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive)),
        )
        .await;
        let playing = match playing {
            Err(_) => return SessionEnd::Failed("the camera did not answer PLAY in time".into()),
            Ok(Err(e)) => return SessionEnd::Failed(plain_error("PLAY", &e)),
            Ok(Ok(p)) => p,
        };
        let play_at = Instant::now();
        let mut demuxed = match playing.demuxed() {
            Ok(d) => d,
            Err(e) => return SessionEnd::Failed(plain_error("PLAY", &e)),
        };
        self.stream.set_ingest_info(IngestInfo {
            transport: Some(if use_tcp { "tcp" } else { "udp" }.to_owned()),
            notice: self.notice.clone(),
        });

        // retina stream index -> bus track index
        let mut index_of = vec![None; demuxed.streams().len()];
        for (bus_i, &i) in picked.iter().enumerate() {
            index_of[i] = Some(bus_i);
        }
        let mut tracks: Vec<Option<Arc<Track>>> = picked
            .iter()
            .map(|&i| track_from_stream(&demuxed.streams()[i]).map(Arc::new))
            .collect();
        let has_video = picked
            .iter()
            .any(|&i| demuxed.streams()[i].media() == "video");
        // The Opus track comes last on the bus; a second session feeds it.
        let _opus_side = opus.map(|(retina_index, channels)| {
            tracks.push(Some(Arc::new(Track::new(Codec::Opus { channels }, 48000))));
            self.opus_timeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .new_session(play_at);
            AbortOnDrop(tokio::spawn(opus_side::run(
                OpusSide {
                    url: self.config.url.clone(),
                    options: self.session_options(),
                    transport: transport.clone(),
                    retina_index,
                    bus_track: picked.len(),
                    has_video,
                    timeline: self.opus_timeline.clone(),
                },
                self.stream.clone(),
            )))
        });
        let mut published = false;
        let mut got_media = false;
        if self.timelines.len() != picked.len() {
            self.timelines = picked
                .iter()
                .map(|&i| Timeline::new(demuxed.streams()[i].clock_rate_hz()))
                .collect();
        }
        for t in &mut self.timelines {
            t.new_session(play_at);
        }
        // Per track: last transit time and jitter estimate, in seconds.
        let mut jitter: Vec<(Option<f64>, f64)> = vec![(None, 0.0); picked.len()];

        loop {
            let wait = if got_media || use_tcp {
                MEDIA_TIMEOUT
            } else {
                UDP_SILENCE
            };
            let item = match tokio::time::timeout(wait, demuxed.next()).await {
                Err(_) if !got_media && !use_tcp => {
                    return SessionEnd::UdpFailed(format!(
                        "camera connected but no video for {} s over UDP",
                        UDP_SILENCE.as_secs()
                    ))
                }
                Err(_) => {
                    return SessionEnd::Failed(format!(
                        "the camera stopped sending media for {} s",
                        wait.as_secs()
                    ))
                }
                Ok(None) => return SessionEnd::Failed("the camera closed the connection".into()),
                Ok(Some(Err(e))) => return SessionEnd::Failed(plain_error("streaming", &e)),
                Ok(Some(Ok(item))) => item,
            };
            let now = Instant::now();
            let (stream_id, keyframe, elapsed, data, loss, new_params) = match item {
                CodecItem::VideoFrame(f) => {
                    let new_params = f.has_new_parameters();
                    let (sid, key, ts, loss) = (
                        f.stream_id(),
                        f.is_random_access_point(),
                        f.timestamp(),
                        f.loss(),
                    );
                    (
                        sid,
                        key,
                        ts.elapsed(),
                        Bytes::from(f.into_data()),
                        loss,
                        new_params,
                    )
                }
                CodecItem::AudioFrame(f) => (
                    f.stream_id(),
                    true,
                    f.timestamp().elapsed(),
                    Bytes::copy_from_slice(f.data()),
                    f.loss(),
                    false,
                ),
                _ => continue,
            };
            got_media = true;
            let Some(bus_i) = index_of.get(stream_id).copied().flatten() else {
                continue;
            };
            if loss > 0 {
                self.stream
                    .stats
                    .packets_lost
                    .fetch_add(u64::from(loss), Ordering::Relaxed);
            }
            let mut new_track = None;
            if new_params || tracks[bus_i].is_none() {
                if let Some(t) = track_from_stream(&demuxed.streams()[stream_id]) {
                    let t = Arc::new(t);
                    if published {
                        self.stream.update_track(bus_i, t.clone());
                        new_track = Some(t.clone());
                    }
                    tracks[bus_i] = Some(t);
                }
            }
            if !published {
                if tracks.iter().any(Option::is_none) {
                    // Parameter sets not known yet (not in the SDP): wait for in-band ones.
                    continue;
                }
                let all: Vec<Arc<Track>> = tracks.iter().flatten().cloned().collect();
                if has_video && !keyframe {
                    continue;
                }
                let set = self.stream.set_tracks(all);
                tracing::info!(
                    path = self.stream.name(),
                    generation = set.generation,
                    tracks = %set.tracks.iter().map(|t| t.codec.name()).collect::<Vec<_>>().join("+"),
                    transport = if use_tcp { "tcp" } else { "udp" },
                    "source live"
                );
                published = true;
            }
            let is_video = tracks[bus_i]
                .as_ref()
                .is_some_and(|t| t.kind() == MediaKind::Video);
            let gop_start = if has_video {
                is_video && keyframe
            } else {
                true
            };
            // RFC 3550 §6.4.1 interarrival jitter, on frame arrival times.
            let clock = f64::from(demuxed.streams()[stream_id].clock_rate_hz().max(1));
            let transit = now.duration_since(play_at).as_secs_f64() - elapsed as f64 / clock;
            let (last, j) = &mut jitter[bus_i];
            if let Some(last) = *last {
                *j += ((transit - last).abs() - *j) / 16.0;
                self.stream.stats.set_jitter(bus_i, *j);
            }
            *last = Some(transit);
            let pts = self.timelines[bus_i].map(elapsed, now);
            if !*live {
                *live = true;
                self.stream.set_state(StreamState::Live);
            }
            self.stream.publish(
                Frame {
                    track: bus_i,
                    pts,
                    dts: pts,
                    keyframe,
                    received: now,
                    data,
                    new_track,
                },
                gop_start,
            );
        }
    }
}

/// Builds our track description from a retina stream, or `None` while its
/// codec parameters are unknown.
fn track_from_stream(s: &retina::client::Stream) -> Option<Track> {
    let clock_rate = s.clock_rate_hz();
    let channels = s.channels().map_or(1, NonZeroU16::get);
    match (s.media(), s.encoding_name()) {
        ("audio", "pcma") => return Some(Track::new(Codec::Pcma { channels }, clock_rate)),
        ("audio", "pcmu") => return Some(Track::new(Codec::Pcmu { channels }, clock_rate)),
        _ => {}
    }
    match s.parameters()? {
        ParametersRef::Video(v) => {
            let codec = match v.codec_params() {
                VideoParametersCodec::H264 { sps, pps } => Codec::H264 {
                    sps: sps.clone(),
                    pps: pps.clone(),
                },
                VideoParametersCodec::H265 { vps, sps, pps } => Codec::H265 {
                    vps: vps.clone(),
                    sps: sps.clone(),
                    pps: pps.clone(),
                },
                _ => return None,
            };
            // Dimensions, RFC 6381 string and frame rate come from the SPS;
            // the SDP's a=framerate stands in when the SPS has no timing.
            let mut track = Track::new(codec, clock_rate);
            if track.frame_rate.is_none() {
                track.frame_rate = s.framerate().map(f64::from);
            }
            Some(track)
        }
        ParametersRef::Audio(a) if s.encoding_name() == "mpeg4-generic" => Some(Track::new(
            Codec::Aac {
                config: Bytes::copy_from_slice(a.extra_data()),
                channels: a.channels().get(),
            },
            a.clock_rate(),
        )),
        _ => None,
    }
}
