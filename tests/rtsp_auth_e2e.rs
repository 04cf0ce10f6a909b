//! End to end: users and permissions on the RTSP re-serve and RTSPS, with
//! real peers (ffmpeg/ffprobe, GStreamer rtspsrc, a raw TCP client) against
//! the `rtspgate` binary and a GStreamer test camera. Every test runs under
//! `testkit::serial()`.
//!
//! Which scheme a client used is read from the gateway's wire log (`-vv`),
//! which keeps an `Authorization` header's scheme and redacts the rest.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::*;

/// 25 fps for 6 s: 150 frames; a reader may miss at most 3 (as in rtsp_e2e).
const READ_SECS: f64 = 6.0;
const MIN_VIDEO: u64 = 147;

const USER: &str = "viewer";
/// Distinctive, so a grep of the log can't match anything else.
const PASS: &str = "Vw-s3cr3t";
/// SHA-256 of [`PASS`], base64: a hashed password, which Digest can't check.
const PASS_SHA256: &str = "hV7Q29yi8gBBpRWCjepyBMDRVv/mRItWKbpeZFOqf9s=";
const WRONG: &str = "Wr0ng-guess";
/// Basic credentials of the API user, for `/api/v1/sessions`.
const ADMIN: (&str, &str) = ("admin", "Adm-pw-9");
/// SHA-256 of the API user's password, base64.
const ADMIN_SHA256: &str = "lTOycujLyFsPGvoPi0iow8I64kliCvmGkH1WcDDom60=";

/// A users config: `viewer` may read, `admin` may use the API (with
/// `pass`, `admin_pass`: plain or `sha256:` hashes), and anonymous clients
/// may use the API from loopback (so testkit's own polling of
/// `/api/v1/streams` works whatever the HTTP side asks).
fn users_config_with(pass: &str, admin_pass: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[[auth.users]]
user = "{USER}"
pass = "{pass}"
permissions = [{{ action = "read" }}]

[[auth.users]]
user = "{admin}"
pass = "{admin_pass}"
permissions = [{{ action = "api" }}]

[[auth.users]]
user = "any"
ips = ["127.0.0.1/32"]
permissions = [{{ action = "api" }}]
"#,
        admin = ADMIN.0,
    )
}

/// [`users_config_with`] plain passwords: Digest is offered.
fn users_config(extra: &str) -> String {
    users_config_with(PASS, ADMIN.1, extra)
}

/// A gateway logging every RTSP message (`-v` from testkit, plus `-v`),
/// with `config` and one camera on path `cam`.
fn gateway(cam: &Camera, config: &str) -> Gateway {
    let path = scratch_path("auth", "toml");
    std::fs::write(&path, config).expect("write config");
    let mut gw = Gateway::start([
        "-v".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        format!("cam={}", cam.url()),
    ]);
    if config.contains("tls_") {
        // With TLS the API speaks HTTPS, which the kit's HTTP client does
        // not: the gateway's own log says when the path is live.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !gw.log().contains("source live path=\"cam\"") {
            if std::time::Instant::now() > deadline {
                gw.fail("cam not live within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        gw.wait_live("cam", Duration::from_secs(20));
    }
    gw
}

fn with_creds(url: &str, user: &str, pass: &str) -> String {
    url.replacen("://", &format!("://{user}:{pass}@"), 1)
}

/// The log written since `from` bytes.
fn log_since(gw: &Gateway, from: usize) -> String {
    gw.log().get(from..).unwrap_or_default().to_owned()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// GStreamer `rtspsrc` (TCP) decodes 50 frames of `url`, authenticating
/// with `creds` if given. Returns whether it did, and its stderr.
fn gst_reads(url: &str, creds: Option<(&str, &str)>) -> (bool, String) {
    let mut args = vec![
        "-q".to_owned(),
        "rtspsrc".into(),
        format!("location={url}"),
        "protocols=tcp".into(),
        "latency=200".into(),
    ];
    if let Some((user, pass)) = creds {
        args.push(format!("user-id={user}"));
        args.push(format!("user-pw={pass}"));
    }
    for a in [
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
        "!",
        "identity",
        "eos-after=50",
        "!",
        "fakesink",
    ] {
        args.push(a.into());
    }
    let mut child = Command::new("gst-launch-1.0")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 (see .ci/run)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (ok, err)
}

/// `ffprobe` of `url` must fail, reporting a 401.
#[track_caller]
fn assert_refused(url: &str) {
    match try_ffprobe_streams(url, Transport::Tcp) {
        Ok(s) => panic!("ffprobe {url} was let in: {s:?}"),
        Err(e) => assert!(
            e.contains("401"),
            "ffprobe {url} failed without a 401:\n{e}"
        ),
    }
}

/// The RTSP entries of `/api/v1/sessions`, asked as the API user.
fn rtsp_sessions(gw: &Gateway) -> Vec<serde_json::Value> {
    let auth = basic(ADMIN.0, ADMIN.1);
    let Ok(r) = http_request(
        gw.http_port(),
        "GET",
        "/api/v1/sessions",
        &[("Authorization", &auth)],
        b"",
    ) else {
        return Vec::new();
    };
    let v = r.json().unwrap_or_default();
    v["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["protocol"] == "rtsp")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ffmpeg_and_gstreamer_read_with_digest_and_are_refused_without() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    // A plain password: Digest (SHA-256, MD5) is offered before Basic.
    let mut gw = gateway(&cam, &users_config(""));
    let url = gw.rtsp_url("cam");

    assert_refused(&url);

    let mark = gw.log().len();
    let streams = ffprobe_streams(&with_creds(&url, USER, PASS), Transport::Tcp);
    assert_eq!(streams, [("video".into(), "h264".into())]);
    let log = log_since(&gw, mark);
    assert!(
        log.contains("Authorization: Digest (redacted)") && !log.contains("Authorization: Basic"),
        "ffprobe must have used Digest:\n{}",
        tail(&log, 60)
    );

    // A full read, listed with its user while it plays.
    let reader = FfmpegReader::start(&with_creds(&url, USER, PASS), Transport::Tcp, READ_SECS);
    let listed = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        rtsp_sessions(&gw).into_iter().find(|s| s["user"] == USER)
    });
    let report = reader.finish();
    report.assert_clean(MIN_VIDEO, 0);
    let listed = listed.unwrap_or_else(|| {
        panic!(
            "no RTSP session with \"user\": \"{USER}\" in /api/v1/sessions while ffmpeg played\n{}",
            tail(&gw.log(), 40)
        )
    });
    assert_eq!(listed["path"], "cam", "{listed}");

    // GStreamer: refused without credentials, reads with Digest.
    let (ok, err) = gst_reads(&url, None);
    assert!(!ok, "rtspsrc without credentials was let in:\n{err}");
    let mark = gw.log().len();
    let (ok, err) = gst_reads(&url, Some((USER, PASS)));
    assert!(
        ok,
        "rtspsrc with credentials did not decode 50 frames:\n{err}"
    );
    let log = log_since(&gw, mark);
    assert!(
        log.contains("Authorization: Digest (redacted)") && !log.contains("Authorization: Basic"),
        "rtspsrc must have used Digest:\n{}",
        tail(&log, 60)
    );

    // Credentials in the URL query, for clients that can't send them
    // otherwise; SETUP and PLAY (built from the Content-Base, which has
    // no query) go through on the same connection.
    let streams = ffprobe_streams(&format!("{url}?user={USER}&pass={PASS}"), Transport::Tcp);
    assert_eq!(streams, [("video".into(), "h264".into())]);

    // A wrong password last (it puts a throttle debt on 127.0.0.1).
    let mark = gw.log().len();
    assert_refused(&with_creds(&url, USER, WRONG));
    let log = log_since(&gw, mark);
    assert!(
        log.contains("authentication failed") && log.contains("127.0.0.1"),
        "the failed login must be logged with the address:\n{}",
        tail(&log, 40)
    );
    let all = gw.log();
    for secret in [PASS, WRONG] {
        assert!(!all.contains(secret), "{secret:?} is in the gateway log");
        for user in [USER, "nobody"] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            assert!(
                !all.contains(&b64),
                "Basic credentials are in the gateway log"
            );
        }
    }
    gw.assert_no_panic();
}

#[test]
fn only_basic_is_offered_for_hashed_passwords() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    // Hashed passwords only: Digest can't check them, so only Basic is offered.
    let mut gw = gateway(
        &cam,
        &users_config_with(
            &format!("sha256:{PASS_SHA256}"),
            &format!("sha256:{ADMIN_SHA256}"),
            "",
        ),
    );
    let url = gw.rtsp_url("cam");

    // The challenge: Basic only.
    let mut s = TcpStream::connect(("127.0.0.1", gw.rtsp_port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let reply = exchange(
        &mut s,
        &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
    );
    assert!(reply.starts_with("RTSP/1.0 401"), "{reply}");
    assert!(
        reply.contains("WWW-Authenticate: Basic realm=\"rtspgate\"") && !reply.contains("Digest"),
        "{reply}"
    );

    assert_refused(&url);
    let mark = gw.log().len();
    let report = ffmpeg_read(&with_creds(&url, USER, PASS), Transport::Tcp, READ_SECS);
    report.assert_clean(MIN_VIDEO, 0);
    let log = log_since(&gw, mark);
    assert!(
        log.contains("Authorization: Basic (redacted)") && !log.contains("Authorization: Digest"),
        "ffmpeg must have used Basic:\n{}",
        tail(&log, 60)
    );

    let mark = gw.log().len();
    let (ok, err) = gst_reads(&url, Some((USER, PASS)));
    assert!(ok, "rtspsrc with Basic did not decode 50 frames:\n{err}");
    let log = log_since(&gw, mark);
    assert!(
        log.contains("Authorization: Basic (redacted)") && !log.contains("Authorization: Digest"),
        "rtspsrc must have used Basic:\n{}",
        tail(&log, 60)
    );
    let (ok, err) = gst_reads(&url, None);
    assert!(!ok, "rtspsrc without credentials was let in:\n{err}");

    // A wrong password and an unknown user get the same answer.
    let wrong = exchange(
        &mut s,
        &format!(
            "DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {}\r\n\r\n",
            basic(USER, WRONG)
        ),
    );
    let unknown = exchange(
        &mut s,
        &format!(
            "DESCRIBE {url} RTSP/1.0\r\nCSeq: 3\r\nAuthorization: {}\r\n\r\n",
            basic("nobody", WRONG)
        ),
    );
    assert_eq!(
        wrong.replace("CSeq: 2", "CSeq: 3"),
        unknown,
        "a wrong password and an unknown user must look the same"
    );
    assert!(wrong.starts_with("RTSP/1.0 401"), "{wrong}");
    assert!(
        !gw.log().contains(WRONG),
        "the password is in the gateway log"
    );
    gw.assert_no_panic();
}

/// Sends `request` on `s` and reads one response (headers and any body).
fn exchange(s: &mut TcpStream, request: &str) -> String {
    s.write_all(request.as_bytes()).expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Content-Length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn malformed_authorization_gets_401_or_400_never_200() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    // No users: anonymous reading is allowed, so a 200 would mean the
    // malformed header was ignored.
    let mut gw = gateway(&cam, "");
    let url = gw.rtsp_url("cam");
    // Longer than an Authorization value may be, and longer than a whole
    // request may be (then the answer is 400 and the connection closes,
    // possibly reset before the client reads the 400: never a 200).
    let long = format!("Basic {}", "A".repeat(60 * 1024));
    let too_long = format!("Basic {}", "A".repeat(64 * 1024));
    let cases = [
        "Basic !!!not-base64",
        "Basic dXNlcg==",
        "Digest username=\"unterminated",
        "Digest username=\"a\", nonce=\"n\"",
        "Negotiate abc",
        "Bearer",
        "",
        long.as_str(),
        too_long.as_str(),
    ];
    for value in cases {
        let mut s = TcpStream::connect(("127.0.0.1", gw.rtsp_port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reply = exchange(
            &mut s,
            &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 5\r\nAuthorization: {value}\r\n\r\n"),
        );
        let shown = value.get(..40).unwrap_or(value);
        let reset_after_400 = value.len() > 64 * 1024 && reply.is_empty();
        assert!(
            reply.starts_with("RTSP/1.0 401")
                || reply.starts_with("RTSP/1.0 400")
                || reset_after_400,
            "Authorization: {shown:?} got:\n{reply}"
        );
        if reply.starts_with("RTSP/1.0 401") {
            assert!(reply.contains("CSeq: 5\r\n"), "{reply}");
            assert!(reply.contains("WWW-Authenticate: Basic"), "{reply}");
            // The connection stays open for a retry.
            let again = exchange(&mut s, "OPTIONS * RTSP/1.0\r\nCSeq: 6\r\n\r\n");
            assert!(again.starts_with("RTSP/1.0 200"), "{again}");
        }
    }
    // A new connection without the header is served.
    let mut s = TcpStream::connect(("127.0.0.1", gw.rtsp_port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let reply = exchange(
        &mut s,
        &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
    );
    assert!(reply.starts_with("RTSP/1.0 200"), "{reply}");
    let streams = ffprobe_streams(&url, Transport::Tcp);
    assert_eq!(streams, [("video".into(), "h264".into())]);
    gw.assert_no_panic();
}

#[test]
fn rtsps_reads_over_tls_with_credentials() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let rtsps_port = free_port();
    let mut gw = gateway(
        &cam,
        &users_config(&format!(
            "tls_self_signed = true\nrtsps_port = {rtsps_port}\n"
        )),
    );
    let url = format!("rtsps://127.0.0.1:{rtsps_port}/cam");
    assert_refused(&url);
    let mark = gw.log().len();
    let report = ffmpeg_read(&with_creds(&url, USER, PASS), Transport::Tcp, READ_SECS);
    report.assert_clean(MIN_VIDEO, 0);
    let log = log_since(&gw, mark);
    assert!(
        log.contains("Authorization: Digest (redacted)"),
        "ffmpeg over RTSPS must have authenticated:\n{}",
        tail(&log, 60)
    );

    // Plain RTSP sent to the RTSPS port gets no RTSP answer: the failed
    // handshake just closes, and the port keeps serving TLS.
    let mut s = TcpStream::connect(("127.0.0.1", rtsps_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let reply = exchange(&mut s, "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert!(!reply.contains("RTSP/1.0"), "{reply}");
    let streams = ffprobe_streams(&with_creds(&url, USER, PASS), Transport::Tcp);
    assert_eq!(streams, [("video".into(), "h264".into())]);
    gw.assert_no_panic();
}
