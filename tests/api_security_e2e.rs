//! The API can't be turned against cameras (issue 10): a PATCH that points
//! a path at another host sends that host none of the stored camera
//! credentials; over real HTTP, the API refuses other host names, other
//! origins and non-JSON bodies, sends no CORS headers, caps the number of
//! paths and keeps the config file's comments and mode when it writes it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use testkit::*;

/// An RTSP server that answers every request `401` with a Basic and a
/// Digest challenge (to tempt a client into sending whatever credentials it
/// has) and records every request it receives, until dropped.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, done) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (seen, done) = (seen.clone(), done.clone());
                        thread::spawn(move || answer_401(conn, &seen, &done));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Recorder {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `n` requests arrived; panics with what arrived otherwise.
    fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<String> {
        poll_until(timeout, Duration::from_millis(50), || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| {
            panic!(
                "fewer than {n} requests within {timeout:?}: {:?}",
                self.requests()
            )
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads RTSP requests from `conn` (each up to its blank line; they carry
/// no body) and answers each `401`, for at most 20 s.
fn answer_401(
    mut conn: TcpStream,
    seen: &Mutex<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let request = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            let cseq = request
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("cseq")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_else(|| "0".into());
            if let Ok(mut s) = seen.lock() {
                s.push(request);
            }
            let answer = format!(
                "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n\
                 WWW-Authenticate: Basic realm=\"cam\"\r\n\
                 WWW-Authenticate: Digest realm=\"cam\", nonce=\"0123456789abcdef\"\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// The `Authorization` header values of `requests`.
fn authorizations(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|r| r.lines())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_owned())
        })
        .collect()
}

fn json(port: u16, method: &str, path: &str, body: &str) -> HttpResponse {
    http_request(
        port,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[test]
fn patching_the_source_to_another_host_sends_it_no_stored_password() {
    let _g = serial();
    require_tools();
    let (user, pass) = ("camuser", "s3cr3t-Cam-Pa55");
    let cam =
        Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None).with_auth(user, pass));
    let mut gw = Gateway::start([format!("cam={}", cam.url_with_creds())]);
    // The stored credentials work with the camera they were given for.
    gw.wait_live("cam", Duration::from_secs(20));

    let rec = Recorder::start();
    let r = json(
        gw.http_port(),
        "PATCH",
        "/api/v1/paths/cam",
        &format!(r#"{{"source": "rtsp://127.0.0.1:{}/stolen"}}"#, rec.port),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json().expect("JSON")["has_credentials"],
        false,
        "{}",
        r.text()
    );
    // The gateway goes there, is refused, and retries: record for a while.
    rec.wait_requests(1, Duration::from_secs(10));
    thread::sleep(Duration::from_secs(4));
    let requests = rec.requests();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    for r in &requests {
        assert!(
            !r.contains(user) && !r.contains(pass) && !r.contains(&basic),
            "the old credentials went to the new host:\n{r}"
        );
    }
    assert_eq!(
        authorizations(&requests),
        Vec::<String>::new(),
        "no credentials were given for the new host: {requests:?}"
    );

    // The recorder does see credentials when the request gives them (so
    // the check above can fail).
    let r = json(
        gw.http_port(),
        "PATCH",
        "/api/v1/paths/cam",
        &format!(
            r#"{{"source": "rtsp://127.0.0.1:{}/given", "user": "newuser", "pass": "newpass"}}"#,
            rec.port
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let new_basic = base64::engine::general_purpose::STANDARD.encode("newuser:newpass");
    let sent = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let auth = authorizations(&rec.requests());
        (!auth.is_empty()).then_some(auth)
    })
    .expect("the given credentials are sent");
    for a in &sent {
        assert!(a.contains("newuser") || a.contains(&new_basic), "{a}");
        assert!(!a.contains(user) && !a.contains(&basic), "{a}");
    }
    gw.assert_no_panic();
}

/// A raw HTTP/1.1 request (the testkit client writes its own Host header);
/// the status and the response head.
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

#[test]
fn api_refuses_other_hosts_origins_and_bodies_over_real_http() {
    let cfg = scratch_path("api-security", "toml");
    let original = "# north gate: ask Jo first\nmax_paths = 2 # the NVR's limit\n\n\
                    [paths.one]\nsource = \"rtsp://127.0.0.1:9/one\" # unplugged\n";
    std::fs::write(&cfg, original).expect("write config");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    let port = gw.http_port();
    let get = |host: &str, extra: &str| {
        raw(
            port,
            &format!(
                "GET /api/v1/streams HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    let me = format!("127.0.0.1:{port}");

    let (code, head) = get(&me, "");
    assert_eq!(code, 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("access-control-"),
        "{head}"
    );
    let (code, head) = get(
        &format!("localhost:{port}"),
        &format!("Origin: http://localhost:{port}\r\n"),
    );
    assert_eq!(code, 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("access-control-"),
        "{head}"
    );
    let (code, head) = get(&format!("rebind.attacker.example:{port}"), "");
    assert_eq!(code, 403, "{head}");
    assert!(head.contains("api_allowed_hosts"), "{head}");
    let (code, head) = get(&me, "Origin: http://attacker.example\r\n");
    assert_eq!(code, 403, "{head}");
    let (code, head) = raw(
        port,
        &format!("GET /api/v1/webrtc/sessions HTTP/1.1\r\nHost: {me}\r\nOrigin: http://{me}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("access-control-"),
        "{head}"
    );

    let body = r#"{"source": "rtsp://127.0.0.1:9/x"}"#;
    for (ct, framing) in [
        (
            "Content-Type: text/plain\r\n",
            format!("Content-Length: {}\r\n", body.len()),
        ),
        (
            "Content-Type: application/x-www-form-urlencoded\r\n",
            format!("Content-Length: {}\r\n", body.len()),
        ),
        ("", format!("Content-Length: {}\r\n", body.len())),
        ("", "Transfer-Encoding: chunked\r\n".to_owned()),
    ] {
        let payload = if framing.contains("chunked") {
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
        } else {
            body.to_owned()
        };
        let (code, head) = raw(
            port,
            &format!("POST /api/v1/paths/x HTTP/1.1\r\nHost: {me}\r\n{ct}{framing}Connection: close\r\n\r\n{payload}"),
        );
        assert_eq!(code, 415, "{ct}{framing}: {head}");
    }
    // No body, no Content-Type needed.
    let r = http_request(port, "DELETE", "/api/v1/paths/nope", &[], b"").expect("DELETE");
    assert_eq!(r.status, 404, "{}", r.text());

    // max_paths = 2 with one path in the file: one more, then 507.
    let r = json(port, "POST", "/api/v1/paths/two", body);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = json(port, "POST", "/api/v1/paths/three", body);
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(
        r.json().expect("JSON")["error"]
            .as_str()
            .unwrap_or("")
            .contains("max_paths"),
        "{}",
        r.text()
    );

    // The API's write kept the file's comments, entries and mode.
    let text = std::fs::read_to_string(&cfg).expect("read config");
    assert!(text.starts_with(original), "{text}");
    assert!(
        text.contains("[paths.two]") && !text.contains("three"),
        "{text}"
    );
    let mode = std::fs::metadata(&cfg).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // WHEP keeps its CORS: browsers on other origins need it.
    let (_, head) = raw(
        port,
        &format!("OPTIONS /one/whep HTTP/1.1\r\nHost: {me}\r\nOrigin: http://player.example\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
}
