//! The operator's API against a real camera: add a path at run time, see it
//! go live, kick a reader, remove the path; reload the config file on SIGHUP
//! without touching unchanged paths; `/metrics` counts real traffic.

use std::process::Command;
use std::thread;
use std::time::Duration;

use testkit::*;

fn json_body(r: &HttpResponse) -> serde_json::Value {
    r.json()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

#[test]
fn add_live_kick_remove_round_trip() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let cfg = scratch_path("api", "toml");
    std::fs::write(&cfg, "# operator config\nhttp_port = 1\n").expect("write config");
    // The file's http_port is overridden by the harness's --http-port flag.
    let mut gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    let port = gw.http_port();

    let body = format!(r#"{{"source": "{}", "transport": "tcp"}}"#, cam.url());
    let r = http_request(
        port,
        "POST",
        "/api/v1/paths/added",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .expect("POST");
    assert_eq!(r.status, 201, "{}", r.text());
    let s = gw.wait_live("added", Duration::from_secs(20));
    assert_eq!(s["transport"], "tcp", "{s}");
    // Persisted to the config file, other keys kept.
    let text = std::fs::read_to_string(&cfg).expect("read config");
    assert!(
        text.contains("[paths.added]") && text.contains("http_port = 1"),
        "{text}"
    );

    // A reader, listed as a session, then kicked.
    let url = gw.rtsp_url("added");
    let reader = thread::spawn(move || ffmpeg_read(&url, Transport::Tcp, 20.0));
    let sessions = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let v = json_body(&http_get(port, "/api/v1/sessions").ok()?);
        let list = v["sessions"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    })
    .expect("the reader shows up as a session");
    assert_eq!(sessions[0]["protocol"], "rtsp");
    assert_eq!(sessions[0]["path"], "added");
    assert_eq!(sessions[0]["detail"]["transport"], "tcp", "{sessions:?}");
    assert!(sessions[0]["remote"].is_string(), "{sessions:?}");
    thread::sleep(Duration::from_secs(2));
    let id = sessions[0]["id"].as_str().expect("id").to_owned();
    let r =
        http_request(port, "DELETE", &format!("/api/v1/sessions/{id}"), &[], b"").expect("kick");
    assert_eq!(r.status, 204);
    let report = reader.join().expect("reader");
    assert!(
        report.elapsed < Duration::from_secs(15),
        "the kicked reader should end well before its 20 s: {report}"
    );

    // Metrics saw real traffic.
    let m = http_get(port, "/metrics").expect("metrics").text();
    let bytes_in: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("rtspgate_bytes_in_total{path=\"added\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(bytes_in > 10_000, "{m}");
    assert!(m.contains("rtspgate_stream_live{path=\"added\"} 1"), "{m}");

    let r = http_request(port, "DELETE", "/api/v1/paths/added", &[], b"").expect("DELETE");
    assert_eq!(r.status, 204);
    assert_eq!(
        http_get(port, "/api/v1/streams/added").expect("GET").status,
        404
    );
    let text = std::fs::read_to_string(&cfg).expect("read config");
    assert!(!text.contains("[paths.added]"), "{text}");
}

#[test]
fn sighup_reloads_only_what_changed() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let cfg = scratch_path("reload", "toml");
    let keep = format!(
        "[paths.keep]\nsource = \"{}\"\ntransport = \"tcp\"\n",
        cam.url()
    );
    std::fs::write(
        &cfg,
        format!("{keep}[paths.gone]\nsource = \"{}\"\n", cam.url()),
    )
    .expect("write config");
    let mut gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    gw.wait_live("keep", Duration::from_secs(20));
    gw.wait_live("gone", Duration::from_secs(20));
    let url = gw.rtsp_url("keep");
    let reader = thread::spawn(move || ffmpeg_read(&url, Transport::Tcp, 8.0));
    thread::sleep(Duration::from_secs(2));
    // The camera counts its RTSP connections: `keep` and `gone` so far.
    let clients_before = cam.clients_connected();

    std::fs::write(
        &cfg,
        format!("{keep}[paths.new]\nsource = \"{}\"\n", cam.url()),
    )
    .expect("rewrite config");
    let pid = gw.pid().expect("running gateway");
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
    gw.wait_live("new", Duration::from_secs(20));
    assert!(
        poll_until(Duration::from_secs(5), Duration::from_millis(100), || gw
            .stream("gone")
            .is_none()
            .then_some(()))
        .is_some(),
        "removed path still listed"
    );
    // Exactly one new camera connection: `new`. A reload that restarted the
    // unchanged path in place would have connected `keep` again.
    let clients = cam.clients_connected();
    assert_eq!(
        clients,
        clients_before + 1,
        "camera connections before the reload {clients_before}, after {clients}: \
         only the new path may connect"
    );
    let keep = gw.stream("keep").expect("kept path listed");
    assert_eq!(keep["reconnects"].as_u64(), Some(0), "{keep}");
    // The unchanged path's reader never noticed: every frame, no pts gap.
    let report = reader.join().expect("reader");
    report.assert_clean(196, 0);
    assert!(gw.log().contains("configuration reloaded"), "{}", gw.log());
}
