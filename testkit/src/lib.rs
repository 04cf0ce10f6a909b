//! rtspgate's test kit, shared by the integration tests (`tests/`) and the
//! benchmarks (`examples/`): real peers only, no mocks.
//!
//! - [`camera`]: `testkit/camera.py`, a scriptable GStreamer RTSP camera;
//! - [`gateway`]: the `rtspgate` binary as a child, failing the test on a
//!   panic in its log;
//! - [`ffmpeg`]: ffmpeg/ffprobe RTSP readers ([`ffmpeg::ReadReport`]);
//! - [`hls`]: ffmpeg's HLS demuxer as a reader ([`hls::HlsRead`]);
//! - [`http`]: a tiny HTTP/1.0 client for the JSON API;
//! - [`browser`]: headless Chromium scripts under `tests/browser/`;
//! - [`whep`]: a str0m WHEP viewer;
//! - [`rtsp_reader`]: a raw RTSP reader recording RTP headers, H.264/H.265
//!   NAL unit types (aggregation packets, parameter sets before keyframes)
//!   and sender reports (dozens at once);
//! - [`udp_relay`]: an RTSP proxy that moves UDP RTP through its own sockets
//!   and drops chosen packets (a lossy link), starts video mid-FU-A, moves
//!   RTP timestamps back;
//! - [`vlc`]: VLC's UDP-only RTSP server serving a looped H.264 clip;
//! - [`ports`], [`process`]: free ports, bounded child processes, polling.
//!
//! Every wait has a deadline and every child process is killed on `Drop`.
//! `use testkit::*;` brings the common names into scope.

pub mod browser;
pub mod camera;
pub mod ffmpeg;
pub mod gateway;
pub mod hls;
pub mod http;
pub mod ports;
pub mod process;
pub mod procstat;
pub mod rtsp_raw;
pub mod rtsp_reader;
pub mod udp_relay;
pub mod vlc;
pub mod whep;

pub use browser::{browser_dir, require_browser, run_browser_script, BrowserRun, WindowRule};
pub use camera::{camera_script, AudioCodec, AuthScheme, Camera, CameraOpts, VideoCodec, PYTHON};
pub use ffmpeg::{
    ffmpeg_read, ffprobe_streams, first_video_frame, first_video_frame_is_key, require_tools,
    try_ffprobe_streams, FfmpegReader, FirstVideoFrame, ReadReport, StreamReport, Transport,
};
pub use gateway::{gateway_bin, Gateway};
pub use hls::{ffmpeg_read_hls, HlsRead};
pub use http::{http_get, http_request, HttpResponse};
pub use ports::{free_port, free_port_on, free_udp_port_pair, free_udp_tcp_port};
pub use process::{poll_until, repo_root, scratch_path, serial, tail};
pub use udp_relay::Relay;
pub use vlc::Vlc;
