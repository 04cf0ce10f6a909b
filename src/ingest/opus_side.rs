//! Opus audio from an RTSP camera, read beside the main session.
//!
//! retina 0.4 has no Opus depacketizer, and `Session::demuxed` refuses a
//! session in which any set-up stream lacks one, so the main session
//! ([`super::rtsp_pull`]) cannot SETUP the Opus stream. This module opens a
//! second RTSP session to the same URL that sets up only the Opus stream
//! and reads retina's raw RTP packets: RFC 7587 §4.2 puts exactly one Opus
//! packet in each RTP payload, so the payload is the bus frame as is.
//!
//! Frames go through the main session's publisher (same rules, and a
//! timeline kept across reconnects like the other tracks'). Readers align
//! audio and video by arrival time (each frame's `received`, e.g. in RTCP
//! sender reports), which a second session to the same camera does not
//! change beyond network jitter.
//!
//! The task lives as long as the main session: the caller aborts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use retina::client::{InitialTimestampPolicy, Session};
use retina::client::{PacketItem, PlayOptions, SessionOptions, SetupOptions, Transport};

use super::publisher::{BusPublisher, Input};
use crate::bus::SourceFrame;

/// How long an RTSP request of the side session may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the side session needs.
pub struct OpusSide {
    pub url: url::Url,
    pub options: SessionOptions,
    pub transport: Transport,
    /// Index of the Opus stream in the camera's DESCRIBE answer.
    pub retina_index: usize,
    /// Track index the frames are published as.
    pub bus_track: usize,
}

/// Runs the side session until the camera fails it or the task is
/// aborted. Failures are logged, not retried: the main session's next
/// reconnect starts a new side session.
pub async fn run(side: OpusSide, publisher: Arc<BusPublisher>) {
    let stream = publisher.stream().clone();
    if let Err(e) = run_inner(side, &publisher).await {
        tracing::warn!(
            path = stream.name(),
            "Opus audio not available: {}",
            crate::config::redact(&e)
        );
    }
}

async fn run_inner(side: OpusSide, publisher: &BusPublisher) -> Result<(), String> {
    let stream = publisher.stream();
    let mut session = tokio::time::timeout(
        REQUEST_TIMEOUT,
        Session::describe(side.url.clone(), side.options),
    )
    .await
    .map_err(|_| "the camera did not answer DESCRIBE for the Opus stream in time".to_owned())?
    .map_err(|e| format!("DESCRIBE for the Opus stream failed: {e}"))?;
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        session.setup(
            side.retina_index,
            SetupOptions::default().transport(side.transport),
        ),
    )
    .await
    .map_err(|_| "the camera did not answer SETUP for the Opus stream in time".to_owned())?
    .map_err(|e| format!("SETUP of the Opus stream failed: {e}"))?;
    let playing = tokio::time::timeout(
        REQUEST_TIMEOUT,
        session.play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive)),
    )
    .await
    .map_err(|_| "the camera did not answer PLAY for the Opus stream in time".to_owned())?
    .map_err(|e| format!("PLAY of the Opus stream failed: {e}"))?;
    let mut playing = Box::pin(playing);
    tracing::info!(
        path = stream.name(),
        "reading Opus audio in a second RTSP session"
    );
    loop {
        let item = match tokio::time::timeout(REQUEST_TIMEOUT, playing.next()).await {
            Err(_) => return Err("no Opus packets for 10 s".to_owned()),
            Ok(None) => return Err("the camera closed the Opus session".to_owned()),
            Ok(Some(Err(e))) => return Err(format!("Opus session: {e}")),
            Ok(Some(Ok(item))) => item,
        };
        let PacketItem::Rtp(pkt) = item else {
            continue;
        };
        if pkt.stream_id() != side.retina_index {
            continue;
        }
        let loss = u32::from(pkt.loss());
        let pts = pkt.timestamp().elapsed();
        let data = pkt.into_payload_bytes();
        if data.is_empty() {
            continue;
        }
        let frame = SourceFrame {
            track: side.bus_track,
            pts,
            dts: None,
            data,
            source_keyframe: true,
            loss,
        };
        publisher.handle(Input::Frame(frame), Instant::now());
    }
}

/// Aborts the side task when the main session ends.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
