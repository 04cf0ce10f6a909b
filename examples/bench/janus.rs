//! Janus (Debian package `janus`) as the WebRTC peer: its streaming plugin
//! pulls the camera over RTSP (one `rtsp` mountpoint per camera), viewers
//! use its plain HTTP API (janus.transport.http): create a session, attach
//! the streaming plugin, `watch` (Janus offers), `start` with our answer.
//!
//! Janus gathers no ICE candidates on loopback, so it runs inside the
//! benchmark's network namespace with ICE restricted to the veth there.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procs::{NetNs, Proc, TempDir};
use testkit::whep;

pub const BIN: &str = "/usr/bin/janus";
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
const HTTP_PORT: u16 = 8088;

/// Why Janus cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !Path::new(BIN).exists() {
        return Some("janus is not installed (Debian: `apt-get install janus`)".into());
    }
    if !Path::new(LIB)
        .join("plugins/libjanus_streaming.so")
        .exists()
        || !Path::new(LIB).join("transports/libjanus_http.so").exists()
    {
        return Some(format!(
            "janus's streaming plugin or HTTP transport is missing under {LIB}"
        ));
    }
    None
}

pub struct Janus {
    // Stopped before its directory goes (fields drop in order).
    proc: Proc,
    dir: TempDir,
    pub api: SocketAddr,
}

fn disable_list(dir: &str, keep: &str) -> String {
    std::fs::read_dir(Path::new(LIB).join(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".so") && n != keep)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

impl Janus {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Starts Janus in `ns` with mountpoints 1..=N pulling `cameras`.
    pub fn start(ns: &NetNs, cameras: &[String]) -> Result<Janus, String> {
        let tmp = TempDir::create(std::env::temp_dir().join(format!(
            "rtspgate-bench-janus-{}-{}",
            std::process::id(),
            cameras.len()
        )))?;
        let dir = tmp.0.clone();
        let d = dir.display();
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "janus.jcfg",
            format!(
                r#"general: {{
	configs_folder = "{d}"
	plugins_folder = "{LIB}/plugins"
	transports_folder = "{LIB}/transports"
	events_folder = "{LIB}/events"
	loggers_folder = "{LIB}/loggers"
	debug_level = 3
	session_timeout = 60
	interface = "{peer}"
}}
media: {{
	rtp_port_range = "20000-60000"
}}
nat: {{
	ice_enforce_list = "{ifname}"
}}
plugins: {{
	disable = "{plugins}"
}}
transports: {{
	disable = "{transports}"
}}
events: {{
	broadcast = false
}}
loggers: {{
	disable = "{loggers}"
}}
"#,
                peer = ns.peer,
                ifname = ns.peer_if,
                plugins = disable_list("plugins", "libjanus_streaming.so"),
                transports = disable_list("transports", "libjanus_http.so"),
                loggers = disable_list("loggers", ""),
            ),
        )?;
        write(
            "janus.transport.http.jcfg",
            format!(
                r#"general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {HTTP_PORT}
	ip = "{peer}"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#,
                peer = ns.peer
            ),
        )?;
        let mut mounts = String::from("general: {\n}\n");
        for (i, url) in cameras.iter().enumerate() {
            mounts.push_str(&format!(
                r#"cam{id}: {{
	type = "rtsp"
	id = {id}
	description = "camera {i}"
	audio = false
	video = true
	url = "{url}"
	rtsp_reconnect_delay = 5
	rtsp_failcheck = false
}}
"#,
                id = i + 1
            ));
        }
        write("janus.plugin.streaming.jcfg", mounts)?;

        let mut cmd = ns.command(Path::new(BIN));
        cmd.args(["-F", &d.to_string(), "-C"])
            .arg(dir.join("janus.jcfg"))
            .args(["-o", "-N", "-L"])
            .arg(dir.join("janus.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let proc = Proc::spawn("janus", &mut cmd)?;
        let j = Janus {
            proc,
            dir: tmp,
            api: SocketAddr::from((ns.peer, HTTP_PORT)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _, _)) = whep::http(j.api, "GET", "/janus/info", &[], b"") {
                return Ok(j);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "janus did not answer on {} ({})",
            j.api,
            j.log_tail()
        ))
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.0.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Waits until each of `n` mountpoints has had media within the last
    /// second; returns how many have.
    pub fn wait_media(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut live = 0;
        while Instant::now() < deadline {
            live = self.live_mountpoints().unwrap_or(0);
            if live >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        live
    }

    fn live_mountpoints(&self) -> Result<usize, String> {
        let s = Session::new(self.api)?;
        let r = s.request(json!({"request": "list"}))?;
        let list = r["plugindata"]["data"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let live = list
            .iter()
            .filter(|m| {
                m["media"].as_array().is_some_and(|media| {
                    media
                        .iter()
                        .any(|x| x["age_ms"].as_u64().is_some_and(|a| a < 1000))
                })
            })
            .count();
        Ok(live)
    }
}

/// One Janus API session with the streaming plugin attached.
pub struct Session {
    api: SocketAddr,
    id: u64,
    handle: u64,
    tx: u64,
}

fn post(api: SocketAddr, path: &str, body: &Value) -> Result<Value, String> {
    let (status, _, resp) = whep::http(
        api,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .map_err(|e| format!("janus POST {path}: {e}"))?;
    let v: Value =
        serde_json::from_slice(&resp).map_err(|e| format!("janus POST {path}: {status}: {e}"))?;
    if v["janus"] == "error" {
        return Err(format!("janus: {}", v["error"]));
    }
    Ok(v)
}

impl Session {
    pub fn new(api: SocketAddr) -> Result<Session, String> {
        let v = post(
            api,
            "/janus",
            &json!({"janus": "create", "transaction": "c"}),
        )?;
        let id = v["data"]["id"].as_u64().ok_or("janus create: no id")?;
        let v = post(
            api,
            &format!("/janus/{id}"),
            &json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}),
        )?;
        let handle = v["data"]["id"].as_u64().ok_or("janus attach: no id")?;
        Ok(Session {
            api,
            id,
            handle,
            tx: 0,
        })
    }

    fn path(&self) -> String {
        format!("/janus/{}/{}", self.id, self.handle)
    }

    /// A synchronous plugin request (`list`, `info`): the answer.
    pub fn request(&self, body: Value) -> Result<Value, String> {
        post(
            self.api,
            &self.path(),
            &json!({"janus": "message", "transaction": "r", "body": body}),
        )
    }

    /// An asynchronous plugin message; its event comes by long poll.
    fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<(), String> {
        self.tx += 1;
        let mut m =
            json!({"janus": "message", "transaction": format!("t{}", self.tx), "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        post(self.api, &self.path(), &m).map(|_| ())
    }

    /// Long-polls until an event carrying a JSEP offer arrives.
    fn wait_offer(&self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (_, _, body) = whep::http(
                self.api,
                "GET",
                &format!("/janus/{}?maxev=1", self.id),
                &[],
                b"",
            )
            .map_err(|e| format!("janus long poll: {e}"))?;
            let v: Value =
                serde_json::from_slice(&body).map_err(|e| format!("janus event: {e}"))?;
            if let Some(sdp) = v["jsep"]["sdp"].as_str() {
                return Ok(sdp.to_owned());
            }
            if v["plugindata"]["data"]["error"].is_string() {
                return Err(format!("janus: {}", v["plugindata"]["data"]["error"]));
            }
        }
        Err("janus sent no offer".into())
    }

    fn destroy(&self) {
        let _ = post(
            self.api,
            &format!("/janus/{}", self.id),
            &json!({"janus": "destroy", "transaction": "d"}),
        );
    }
}

/// One str0m viewer of mountpoint `id`, as [`whep::play`] is one of
/// rtspgate: Janus offers, the viewer answers. Timings count from `watch`.
pub fn view(api: SocketAddr, id: u64, opts: &whep::Opts) -> whep::Received {
    let mut s = match Session::new(api) {
        Ok(s) => s,
        Err(e) => {
            return whep::Received {
                error: Some(e),
                ..Default::default()
            }
        }
    };
    let cell = std::cell::RefCell::new(&mut s);
    let r = whep::play_answering(
        || {
            let mut s = cell.borrow_mut();
            s.message(json!({"request": "watch", "id": id}), None)?;
            s.wait_offer(Duration::from_secs(20))
        },
        |answer| {
            let mut s = cell.borrow_mut();
            s.message(
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )?;
            // Our candidate is in the answer; tell Janus there are no more.
            post(
                s.api,
                &s.path(),
                &json!({"janus": "trickle", "transaction": "e", "candidate": {"completed": true}}),
            )
            .map(|_| ())
        },
        opts,
    );
    if opts.delete {
        s.destroy();
    }
    r
}

/// The "Janus version" line of `janus --help`.
pub fn version() -> String {
    Command::new(BIN)
        .arg("--help")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("Janus version"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "janus".into())
}
