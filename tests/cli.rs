//! The command line as a user meets it: bad flags and config values exit with
//! status 2 naming the key; served URLs are printed at start-up with
//! passwords redacted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{free_port, free_udp_port_pair, free_udp_tcp_port, scratch_path, Gateway};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(Gateway::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rtspgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_and_values_exit_2_naming_the_key() {
    let (code, err) = run(&["--rtsp-port", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--rtsp-port"), "{err}");

    let (code, err) = run(&["--transport", "carrier-pigeon"]);
    assert_eq!(code, 2, "{err}");

    let (code, err) = run(&["cam=http://example.invalid/"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("source cam") && err.contains("scheme"),
        "{err}"
    );

    let cfg = scratch_path("bad", "toml");
    std::fs::write(&cfg, "rtp_port = 8001\n").expect("write config");
    let (code, err) = run(&["--config", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rtp_port"), "{err}");

    std::fs::write(
        &cfg,
        "[paths.cam]\nsource = \"rtsp://h/\"\ntransprot = \"tcp\"\n",
    )
    .expect("write config");
    let (code, err) = run(&["--config", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("transprot"), "{err}");
}

#[test]
fn prints_served_urls_without_passwords() {
    let rtsp = free_port();
    let http = free_port();
    let (rtp, _) = free_udp_port_pair();
    let mut child = Command::new(Gateway::bin())
        .args([
            "--listen",
            "127.0.0.1",
            "--rtsp-port",
            &rtsp.to_string(),
            "--http-port",
            &http.to_string(),
            "--rtp-port",
            &rtp.to_string(),
            "--webrtc-port",
            &free_udp_tcp_port().to_string(),
            "front=rtsp://admin:hunter2@127.0.0.1:9/a",
            "rtsp://127.0.0.1:9/b",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rtspgate");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
        if lines.iter().filter(|l| l.contains("Play it at")).count() == 2 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("Play it at rtsp://127.0.0.1:{rtsp}/front")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Play it at rtsp://127.0.0.1:{rtsp}/stream1")),
        "{text}"
    );
    assert!(text.contains("rtsp://***@127.0.0.1:9/a"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// Every reader holds a descriptor: the gateway lifts its soft open-file
/// limit to the hard one at start (started here with a soft limit of 256).
#[test]
fn raises_the_open_file_limit_at_start() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(Gateway::bin());
    cmd.args([
        "--listen",
        "127.0.0.1",
        "--rtsp-port",
        &free_port().to_string(),
        "--http-port",
        &free_port().to_string(),
        "--rtp-port",
        &free_udp_port_pair().0.to_string(),
        "--webrtc-port",
        &free_udp_tcp_port().to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // SAFETY: only setrlimit between fork and exec, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 256.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn rtspgate");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    // The banner is printed after start-up, so the limit is set by then.
    let _ = stdout.read_line(&mut first);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert_ne!(nums[0], "256", "soft limit left as started: {line}");
    assert_eq!(
        nums[0], nums[1],
        "soft limit not raised to the hard one: {line}"
    );
}
