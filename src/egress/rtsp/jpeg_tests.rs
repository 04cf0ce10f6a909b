//! The RTSP re-serve of an MJPEG stream read by a real client: ffmpeg
//! (`DESCRIBE` → `JPEG/90000` on payload type 26, RTP over TCP) decodes our
//! RFC 2435 packets to the very pixels of the images on the bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::server::{RtspServer, ServerConfig};
use crate::auth::Authenticator;
use crate::bus::{Codec, Frame, Registry, Sessions, Stream, StreamState, Track};
use crate::limits::{ConnLimiter, Listener};

/// 64x48 4:2:0 with a restart interval (RFC 2435 type 65).
const IMAGE: &[u8] = include_bytes!("../../codec/testdata/jpeg_64x48_420_dri.jpg");

/// `ffmpeg args...` with `input` on stdin; its stdout, after checking it
/// reported no error.
async fn ffmpeg(args: &[&str], input: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("ffmpeg done in time")
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decodes_the_rtsp_reserve_of_an_mjpeg_stream() {
    let registry = Registry::new();
    let cam = Stream::new("cam", "test");
    let track = Track::new(Codec::Jpeg, 90_000)
        .jpeg_dimensions_changed(IMAGE)
        .expect("the image's size");
    cam.set_tracks(vec![Arc::new(track)]);
    cam.set_state(StreamState::Live);
    registry.insert(cam.clone());
    let (rtp_port, _) = testkit::ports::free_udp_port_pair();
    let server = RtspServer::new(
        registry,
        Sessions::new(),
        Authenticator::new(Default::default()),
        ServerConfig {
            // Several packets per image.
            mtu: 400,
            session_timeout: Duration::from_secs(60),
            log_messages: false,
            describe_wait: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        },
        [127, 0, 0, 1].into(),
        rtp_port,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("rtsp://{}/cam", listener.local_addr().unwrap());
    let serving = tokio::spawn(server.run(listener, ConnLimiter::new(Listener::Rtsp, 10, 0)));
    // A 25 fps camera.
    let publishing = tokio::spawn(async move {
        for n in 0.. {
            cam.publish(
                Frame {
                    track: 0,
                    pts: n * 3600,
                    dts: n * 3600,
                    keyframe: true,
                    received: Instant::now(),
                    data: Bytes::from_static(IMAGE),
                },
                true,
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let frames = 10;
    let decoded = ffmpeg(
        &[
            "-rtsp_transport",
            "tcp",
            "-i",
            &url,
            "-frames:v",
            &frames.to_string(),
            "-f",
            "rawvideo",
            "pipe:1",
        ],
        &[],
    )
    .await;
    let picture = ffmpeg(
        &[
            "-f",
            "jpeg_pipe",
            "-i",
            "pipe:0",
            "-f",
            "rawvideo",
            "pipe:1",
        ],
        IMAGE,
    )
    .await;
    assert_eq!(decoded.len(), frames * picture.len(), "{frames} pictures");
    assert!(decoded.chunks(picture.len()).all(|p| p == picture));
    publishing.abort();
    serving.abort();
}
