//! Pulls a camera's RTSP stream and publishes it on the bus.
//!
//! One RTSP session per camera, every track in it: retina does RTSP (auth,
//! SETUP/PLAY, keepalives, TCP interleaved or UDP sockets, RTP header
//! checks, timestamp extension) and hands over raw RTP packets; our
//! [`Depacketizer`]s rebuild access units per track. A lost, truncated or
//! corrupt packet drops the access units it spoils (counted by reason in
//! the stream's stats), never the session: video resumes at the next
//! random access point. The session ends only when the camera stops
//! sending or closes.
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
    Credentials, InitialTimestampPolicy, PacketItem, PlayOptions, SessionGroup, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{ParametersRef, VideoParametersCodec};

use super::publisher::{BusPublisher, Input, Quirks};
use super::rtp_track::{RtpEvent, RtpTrack};
use super::{Backoff, Source};
use crate::bus::{Codec, IngestInfo, MediaKind, SourceTrack, Stream, StreamState, Track};
use crate::codec::{RtpFormat, RtpPacket};
use crate::config::{redact, SourceConfig, TransportPref};

/// How long an RTSP request to the camera may take before we give up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No media over UDP for this long after PLAY: UDP is considered blocked.
const UDP_SILENCE: Duration = Duration::from_secs(3);
/// No media for this long during a session: the camera is considered gone.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);
/// How the first RTP timestamp of each stream is found: many cameras send
/// an RTP-Info `rtptime` that disagrees with their packets, or none, so the
/// packets' own timestamps are taken when it does not fit.
const INITIAL_RTP_TIMESTAMP: InitialTimestampPolicy = InitialTimestampPolicy::Permissive;

/// RTSP pull source (retina).
pub struct RtspPull {
    config: SourceConfig,
    group: Arc<SessionGroup>,
    quirks: Quirks,
}

impl RtspPull {
    pub fn new(config: SourceConfig) -> Self {
        RtspPull {
            config,
            group: Arc::new(SessionGroup::default()),
            quirks: Quirks::default(),
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
    /// The rules and the timelines, across sessions; shared with the Opus
    /// side session.
    publisher: Arc<BusPublisher>,
    /// UDP failed once: use TCP from now on.
    tcp_only: bool,
    notice: Option<String>,
}

async fn run(src: RtspPull, stream: Arc<Stream>) {
    let url = src.config.display_url();
    let mut pull = Pull {
        tcp_only: src.config.transport == TransportPref::Tcp,
        config: src.config,
        group: src.group,
        publisher: BusPublisher::new(stream, src.quirks),
        notice: None,
    };
    let mut backoff = Backoff::default();
    let on_demand = pull.config.on_demand.clone();
    let mut demand = pull.stream().demand();
    loop {
        if on_demand.is_some() && *demand.borrow_and_update() == 0 {
            pull.stream().go_idle();
            tracing::info!(path = pull.stream().name(), "on-demand source idle");
            if demand.wait_for(|n| *n > 0).await.is_err() {
                return;
            }
            tracing::info!(path = pull.stream().name(), source = %url, "a reader arrived: starting the on-demand source");
            pull.stream().set_state(StreamState::Waiting);
        }
        let use_tcp = pull.tcp_only;
        let started = Instant::now();
        let (end, live_since) = match &on_demand {
            None => pull.session(use_tcp).await,
            Some(od) => {
                let close_after = od.close_after;
                tokio::select! {
                    r = pull.session(use_tcp) => r,
                    () = super::no_demand_for(&mut demand, close_after) => {
                        tracing::info!(path = pull.stream().name(), "no reader for {} s: closing the on-demand source", close_after.as_secs());
                        continue;
                    }
                }
            }
        };
        if let Some(since) = live_since {
            backoff.live_session_ended(since.elapsed(), Instant::now());
        }
        let error = match end {
            SessionEnd::UdpFailed(why) if pull.config.transport == TransportPref::Auto => {
                let msg = format!("{why}: UDP is probably blocked or rewritten by a router's RTSP ALG or a firewall; switched to TCP");
                tracing::warn!(path = pull.stream().name(), source = %url, "{msg}");
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
        pull.stream()
            .stats
            .reconnects
            .fetch_add(1, Ordering::Relaxed);
        let delay = backoff.next_delay(Instant::now());
        tracing::warn!(
            path = pull.stream().name(),
            source = %url,
            after = ?started.elapsed(),
            "source failed: {error}; retrying in {:.2} s",
            delay.as_secs_f32()
        );
        pull.stream().set_state(StreamState::Reconnecting {
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
    fn stream(&self) -> &Arc<Stream> {
        self.publisher.stream()
    }

    /// One RTSP session: DESCRIBE, SETUP, PLAY, then frames until failure.
    /// Returns why it ended and since when it was live (if it went live).
    async fn session(&mut self, use_tcp: bool) -> (SessionEnd, Option<Instant>) {
        let mut live = None;
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

    async fn session_inner(&mut self, use_tcp: bool, live: &mut Option<Instant>) -> SessionEnd {
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
        let formats = sdp_formats(session.sdp(), session.streams());
        let mut picked: Vec<Picked> = Vec::new();
        let mut skipped = Vec::new();
        for (i, s) in session.streams().iter().enumerate() {
            let carried = matches!(
                (s.media(), s.encoding_name()),
                ("video", "h264" | "h265" | "jpeg")
                    | ("audio", "mpeg4-generic" | "pcma" | "pcmu" | "opus")
            );
            let fmtp = formats.get(i).and_then(Option::as_deref);
            let receiver = carried
                .then(|| {
                    RtpTrack::new(
                        &RtpFormat {
                            encoding_name: s.encoding_name(),
                            clock_rate: s.clock_rate_hz(),
                            channels: s.channels().map(NonZeroU16::get),
                            fmtp,
                        },
                        track_from_stream(s).as_ref(),
                        s.framerate().map(f64::from),
                    )
                })
                .transpose();
            match receiver {
                Ok(Some(receiver)) => picked.push(Picked {
                    stream_id: i,
                    receiver,
                }),
                Ok(None) => skipped.push(format!("{}/{}", s.media(), s.encoding_name())),
                Err(e) => skipped.push(format!("{}/{} ({e})", s.media(), s.encoding_name())),
            }
        }
        if !skipped.is_empty() {
            tracing::info!(
                path = self.stream().name(),
                "skipping unsupported tracks: {}",
                skipped.join(", ")
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
        for p in &picked {
            let setup = tokio::time::timeout(
                REQUEST_TIMEOUT,
                session.setup(
                    p.stream_id,
                    SetupOptions::default().transport(transport.clone()),
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
        // Tracks and what we know of their codec parameters, from the SDP
        // (retina parsed it); in-band parameter sets update them later.
        let tracks: Vec<SourceTrack> = picked
            .iter()
            .filter_map(|p| session.streams().get(p.stream_id))
            .map(|s| SourceTrack {
                kind: if s.media() == "video" {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                },
                clock_rate: s.clock_rate_hz(),
                track: track_from_stream(s),
            })
            .collect();
        let playing = tokio::time::timeout(
            REQUEST_TIMEOUT,
            session.play(PlayOptions::default().initial_timestamp(INITIAL_RTP_TIMESTAMP)),
        )
        .await;
        let playing = match playing {
            Err(_) => return SessionEnd::Failed("the camera did not answer PLAY in time".into()),
            Ok(Err(e)) => return SessionEnd::Failed(plain_error("PLAY", &e)),
            Ok(Ok(p)) => p,
        };
        let mut playing = Box::pin(playing);
        let play_at = Instant::now();
        self.stream().set_ingest_info(IngestInfo {
            transport: Some(if use_tcp { "tcp" } else { "udp" }.to_owned()),
            notice: self.notice.clone(),
        });

        // retina stream index -> position in `picked` (= bus track index)
        let mut index_of = vec![None; playing.streams().len()];
        for (bus_i, p) in picked.iter().enumerate() {
            if let Some(slot) = index_of.get_mut(p.stream_id) {
                *slot = Some(bus_i);
            }
        }
        let applied = self.publisher.handle(Input::Start(tracks), play_at);
        if let Some(why) = applied.failed {
            return SessionEnd::Failed(why);
        }
        let mut got_media = false;
        let mut events = Vec::new();

        loop {
            let wait = if got_media || use_tcp {
                MEDIA_TIMEOUT
            } else {
                UDP_SILENCE
            };
            let item = match tokio::time::timeout(wait, playing.next()).await {
                Err(_) if !got_media && !use_tcp => {
                    return SessionEnd::UdpFailed(format!(
                        "camera connected but no media for {} s over UDP",
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
            let PacketItem::Rtp(pkt) = item else {
                continue;
            };
            let Some(bus_i) = index_of.get(pkt.stream_id()).copied().flatten() else {
                continue;
            };
            let Some(p) = picked.get_mut(bus_i) else {
                continue;
            };
            got_media = true;
            let extended = pkt.timestamp().elapsed();
            p.receiver.push(
                bus_i,
                RtpPacket {
                    sequence_number: pkt.sequence_number(),
                    timestamp: pkt.header().timestamp(),
                    marker: pkt.mark(),
                    payload: pkt.payload(),
                    loss: pkt.loss(),
                },
                extended,
                &mut events,
            );
            let now = Instant::now();
            for event in events.drain(..) {
                let frame = match event {
                    RtpEvent::Dropped(reason) => {
                        self.stream().stats.frame_dropped(reason);
                        continue;
                    }
                    RtpEvent::Params(params) => {
                        self.publisher.handle(
                            Input::Parameters {
                                track: bus_i,
                                params,
                            },
                            now,
                        );
                        continue;
                    }
                    RtpEvent::Frame(frame) => frame,
                };
                let applied = self.publisher.handle(Input::Frame(frame), now);
                if applied.live {
                    live.get_or_insert_with(Instant::now);
                    if let Some(set) = self.stream().tracks() {
                        tracing::info!(
                            path = self.stream().name(),
                            generation = set.generation,
                            tracks = %set.tracks.iter().map(|t| t.codec.name()).collect::<Vec<_>>().join("+"),
                            transport = if use_tcp { "tcp" } else { "udp" },
                            "source live"
                        );
                    }
                }
                if let Some(why) = applied.failed {
                    return SessionEnd::Failed(why);
                }
            }
        }
    }
}

/// One track of the session being read.
struct Picked {
    /// retina's stream index.
    stream_id: usize,
    receiver: RtpTrack,
}

/// The `a=fmtp` parameters (after the payload type) of each retina stream,
/// by retina's stream index. retina leaves out media sections it cannot
/// parse, so each stream is matched to the next SDP media section of the
/// same media type and first payload type, in order.
fn sdp_formats(sdp: &[u8], streams: &[retina::client::Stream]) -> Vec<Option<String>> {
    let Ok(parsed) = sdp_types::Session::parse(sdp) else {
        return vec![None; streams.len()];
    };
    let mut medias = parsed.medias.iter();
    streams
        .iter()
        .map(|s| {
            let pt = s.rtp_payload_type().to_string();
            let media = medias.by_ref().find(|m| {
                m.media == s.media() && m.fmt.split_whitespace().next() == Some(pt.as_str())
            })?;
            media.attributes.iter().find_map(|a| {
                let v = a.value.as_deref()?;
                let (fmt, params) = v.split_once(' ')?;
                (a.attribute == "fmtp" && fmt == pt).then(|| params.trim().to_owned())
            })
        })
        .collect()
}

/// Builds our track description from a retina stream, or `None` while its
/// codec parameters are unknown.
fn track_from_stream(s: &retina::client::Stream) -> Option<Track> {
    let clock_rate = s.clock_rate_hz();
    let channels = s.channels().map_or(1, NonZeroU16::get);
    match (s.media(), s.encoding_name()) {
        ("audio", "pcma") => return Some(Track::new(Codec::Pcma { channels }, clock_rate)),
        ("audio", "pcmu") => return Some(Track::new(Codec::Pcmu { channels }, clock_rate)),
        // RFC 7587 §7: always `opus/48000/2` in the SDP, whatever the
        // stream's channel count; the decoder finds it in each packet.
        ("audio", "opus") => return Some(Track::new(Codec::Opus { channels }, 48000)),
        // RFC 2435: no parameters; the size comes with the first image.
        ("video", "jpeg") => return Some(Track::new(Codec::Jpeg, 90_000)),
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
