//! HTTP auth and HTTPS with real peers: a gateway with a self-signed
//! certificate (`tls_self_signed = true`) and `[[auth.users]]`; headless
//! Chromium plays WHEP (credentials in an `Authorization` header), LL-HLS
//! with hls.js (credentials in the query, carried into every playlist URI)
//! and the viewer page (the browser's login answer), all over HTTPS; curl
//! (HTTPS, and bound to 127.0.0.2) checks refusals, the API's defaults and
//! malformed headers; `/api/v1/sessions` names each viewer's user.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An answer seen by curl.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request with curl (certificate not checked: it is self-signed),
/// at most 15 s; `extra` are more curl arguments (`-u`, `-H`, `--interface`).
fn curl(url: &str, extra: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "15",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
    }
}

const VIEWER: &str = "viewer:secret";
const API_USER: &str = "ops:opspass";

/// The camera and an HTTPS gateway with `viewer` (read `cam`) and `ops`
/// (api, metrics); waits until `cam` is live.
fn secured_gateway() -> (Camera, Gateway, String) {
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let cfg = scratch_path("http-auth", "toml");
    std::fs::write(
        &cfg,
        format!(
            r#"tls_self_signed = true
rtsps_port = {}

[paths.cam]
source = "{}"

[[auth.users]]
user = "viewer"
pass = "secret"
permissions = [{{ action = "read", path = "cam" }}]

[[auth.users]]
user = "ops"
pass = "opspass"
permissions = [{{ action = "api" }}, {{ action = "metrics" }}]
"#,
            free_port(),
            cam.url()
        ),
    )
    .expect("write config");
    let mut gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    let base = format!("https://127.0.0.1:{}", gw.http_port());
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let a = curl(&format!("{base}/api/v1/streams/cam"), &["-u", API_USER]);
        if a.status == 200 && a.json()["state"] == "live" {
            break;
        }
        if Instant::now() > deadline {
            gw.fail(&format!("cam not live over HTTPS: {a:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
    (cam, gw, base)
}

/// The users on the sessions of `protocol` (`webrtc`, `hls`).
fn session_users(base: &str, protocol: &str) -> Vec<serde_json::Value> {
    let a = curl(&format!("{base}/api/v1/sessions"), &["-u", API_USER]);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["protocol"] == protocol)
        .map(|s| s["user"].clone())
        .collect()
}

/// Without credentials, or with another user's, every read and API route
/// over HTTPS is 401 with the Basic challenge; the right user gets 200.
#[test]
fn https_routes_ask_for_their_permission() {
    let _g = serial();
    let (_cam, mut gw, base) = secured_gateway();
    let head = |url: &str, extra: &[&str]| -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-k",
                "--max-time",
                "15",
                "-D",
                "-",
                "-o",
                "/dev/null",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let h = head(&format!("{base}/cam/index.m3u8"), &[]);
    assert!(
        h.starts_with("http/2 401") || h.starts_with("http/1.1 401"),
        "{h}"
    );
    assert!(
        h.contains("www-authenticate: basic realm=\"rtspgate\""),
        "{h}"
    );
    for (url, ok_user, extra) in [
        ("/cam/", VIEWER, &[][..]),
        ("/cam/index.m3u8", VIEWER, &[][..]),
        (
            "/cam/whep",
            VIEWER,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/sdp",
                "--data",
                "v=0",
            ][..],
        ),
        ("/api/v1/streams", API_USER, &[][..]),
        ("/api/v1/sessions", API_USER, &[][..]),
        ("/api/v1/webrtc/sessions", API_USER, &[][..]),
        ("/metrics", API_USER, &[][..]),
    ] {
        let url = format!("{base}{url}");
        let other = if ok_user == VIEWER { API_USER } else { VIEWER };
        for creds in [None, Some(other), Some("viewer:wrong")] {
            let mut args = extra.to_vec();
            if let Some(c) = creds {
                args.extend(["-u", c]);
            }
            let a = curl(&url, &args);
            assert_eq!(a.status, 401, "{url} as {creds:?}: {a:?}");
        }
        let mut args = extra.to_vec();
        args.extend(["-u", ok_user]);
        let a = curl(&url, &args);
        // WHEP: the offer is nonsense, but it got past authentication.
        let want = if url.ends_with("/whep") { 400 } else { 200 };
        assert_eq!(a.status, want, "{url} as {ok_user}: {a:?}");
    }
    // Bad Authorization headers: 400 (HTTP/1.1, where the auth layer sees
    // them all), never 200.
    let long = format!("Authorization: Basic {}", "A".repeat(64 * 1024));
    for bad in [
        "Authorization: Basic !!!notbase64",
        "Authorization: Negotiate abc",
        "Authorization: Digest username=\"unterminated",
        long.as_str(),
    ] {
        for url in ["/cam/", "/api/v1/streams", "/cam/index.m3u8"] {
            let a = curl(&format!("{base}{url}"), &["--http1.1", "-H", bad]);
            assert_eq!(a.status, 400, "{url} with {:.40}: {a:?}", bad);
        }
    }
    // Over HTTP/2 hyper refuses a 64 KiB header list itself (431 or a
    // reset stream): no page either.
    let a = curl(&format!("{base}/cam/"), &["-H", &long, "-u", VIEWER]);
    assert_ne!(a.status, 200, "{a:?}");
    // Plain HTTP on the HTTPS port gets no page.
    let plain = curl(
        &format!("http://127.0.0.1:{}/cam/", gw.http_port()),
        &["-u", VIEWER],
    );
    assert_ne!(plain.status, 200, "{plain:?}");
    gw.assert_no_panic();
}

/// Chromium over HTTPS: WHEP with `Authorization: Basic`, LL-HLS with
/// hls.js given `?user=&pass=` (every playlist URI carries them on), and
/// the viewer page behind the browser's login answer. Each decodes about
/// a healthy run's frames, and the API names each session's user.
#[test]
fn chromium_plays_whep_hls_and_the_page_with_credentials_over_https() {
    let _g = serial();
    require_browser();
    let (_cam, mut gw, base) = secured_gateway();

    // WHEP with the credentials in a header. (Refusals are checked with
    // curl: a same-origin 401 with a Basic challenge makes Chromium ask
    // its user, which a headless run can't answer.)
    let whep = |auth: &str, seconds: u32| -> BrowserRun {
        let args: Vec<String> = vec![
            "--page".into(),
            format!("{base}/web/style.css"),
            "--url".into(),
            format!("{base}/cam/whep"),
            "--seconds".into(),
            seconds.to_string(),
            "--delete".into(),
            "--timeout".into(),
            "60".into(),
            "--auth".into(),
            auth.into(),
        ];
        run_browser_script("whep_play.mjs", &args, Duration::from_secs(90))
    };
    let base2 = base.clone();
    let watcher = thread::spawn(move || {
        // While the WHEP viewer plays, its session names its user.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let users = session_users(&base2, "webrtc");
            if !users.is_empty() {
                return users;
            }
            thread::sleep(Duration::from_millis(200));
        }
        Vec::new()
    });
    let played = whep(VIEWER, 8);
    let v = &played.json["viewers"][0];
    assert_eq!(v["status"], 201, "{}", played.json);
    let problems = WindowRule::video_25fps(false).problems(v);
    assert!(problems.is_empty(), "WHEP over HTTPS: {problems:?}\n{v}");
    assert_eq!(v["deleteStatus"], 200, "{v}");
    assert_eq!(
        watcher.join().expect("watcher"),
        [serde_json::json!("viewer")],
        "the WHEP session's user"
    );

    // LL-HLS: hls.js (on another origin) is refused without credentials
    // and plays with the query form.
    let refused = run_browser_script(
        "hls_play.mjs",
        &[&format!("{base}/cam/index.m3u8"), "--timeout", "20"],
        Duration::from_secs(50),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.json);
    let fatal = refused.json["fatal"].as_str().unwrap_or_default();
    assert!(fatal.contains("401"), "{}", refused.json);
    let url = format!("{base}/cam/index.m3u8?user=viewer&pass=secret");
    let run = run_browser_script(
        "hls_play.mjs",
        &[url.as_str(), "--frames", "100", "--timeout", "45"],
        Duration::from_secs(80),
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.json, run.stderr);
    let problems = WindowRule::video_25fps(false).problems(&run.json);
    assert!(
        problems.is_empty(),
        "LL-HLS over HTTPS: {problems:?}\n{}",
        run.json
    );
    let parts = run.json["partsLoaded"].as_u64().unwrap_or(0);
    assert!(parts >= 10, "LL-HLS parts, with credentials: {}", run.json);
    assert_eq!(
        session_users(&base, "hls"),
        [serde_json::json!("viewer")],
        "the HLS muxer names its viewer's user"
    );

    // The viewer page over HTTPS, after the browser's login answer.
    let page = run_browser_script(
        "viewer_page.mjs",
        &[
            base.as_str(),
            "cam",
            "--auth",
            VIEWER,
            "--no-index",
            "--frames",
            "60",
            "--timeout",
            "45",
        ],
        Duration::from_secs(80),
    );
    assert_eq!(page.json["ok"], true, "{}\n{}", page.json, page.stderr);
    assert_eq!(page.json["transport"], "webrtc", "{}", page.json);
    gw.assert_no_panic();
}

/// Under the defaults (no users): the API and `/metrics` answer anonymous
/// clients on 127.0.0.1 only; a client bound to 127.0.0.2 gets 401, and
/// reading is for anyone.
#[test]
fn default_api_is_for_loopback_only() {
    let _g = serial();
    let mut gw = Gateway::start(Vec::<String>::new());
    gw.wait_live("demo", LIVE_TIMEOUT);
    let base = format!("http://127.0.0.1:{}", gw.http_port());
    for url in ["/api/v1/streams", "/api/v1/sessions", "/metrics"] {
        let url = format!("{base}{url}");
        assert_eq!(curl(&url, &[]).status, 200, "{url}");
        let far = curl(&url, &["--interface", "127.0.0.2"]);
        assert_eq!(far.status, 401, "{url} from 127.0.0.2: {far:?}");
    }
    let page = curl(&format!("{base}/demo/"), &["--interface", "127.0.0.2"]);
    assert_eq!(page.status, 200);
    gw.assert_no_panic();
}
