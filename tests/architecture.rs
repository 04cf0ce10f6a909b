//! The import arrows of docs/ARCHITECTURE.md, checked on the source tree:
//! `codec` and `config` import nothing of ours, `bus` only `codec` and `config`, `transcode` only those three, `cmaf`
//! only `bus` and `codec`, `ingest` no egress, and no egress imports another egress or `ingest`. `config` is
//! the settings leaf that sources and egresses read their settings from.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path an item path starts with: `bus` for `bus::Stream`,
/// `egress::hls` for `egress::hls::Muxer`.
fn module_of(path: &str) -> String {
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let path = path.trim_start();
    let first = ident(path);
    if first == "egress" {
        if let Some(after) = path.strip_prefix("egress::") {
            let second = ident(after);
            if !second.is_empty() {
                return format!("egress::{second}");
            }
        }
    }
    first
}

/// Every module a file names through `crate::`, from `use` lines (also
/// grouped ones, `crate::{bus::X, codec::Y}`) and inline paths alike.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, split at depth 0.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(module_of(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            if !item.trim().is_empty() {
                found.push(module_of(&item));
            }
        } else {
            found.push(module_of(rest));
        }
    }
    found
}

/// The text without comment lines: docs may name any module.
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files under `src/<dir>` that name a forbidden module, as `file: path`.
fn violations(dir: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut bad = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).expect("read source");
        for p in crate_paths(&code_only(&text)) {
            if !allowed(&p) {
                bad.push(format!("{}: crate::{p}", f.display()));
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn codec_imports_nothing_of_ours() {
    let bad = violations("codec", |p| p == "codec");
    assert!(
        bad.is_empty(),
        "codec must be the bottom layer:\n{}",
        bad.join("\n")
    );
}

#[test]
fn config_imports_nothing_of_ours() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs");
    let text = fs::read_to_string(root).expect("read config.rs");
    let paths = crate_paths(&code_only(&text));
    assert!(paths.is_empty(), "config must be a leaf: {paths:?}");
    let bad = violations("config", |p| p == "config");
    assert!(bad.is_empty(), "config must be a leaf:\n{}", bad.join("\n"));
}

#[test]
fn auth_and_tls_import_only_config() {
    let mut bad = violations("auth", |p| p == "auth" || p == "config");
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls.rs");
    let text = fs::read_to_string(tls).expect("read tls.rs");
    bad.extend(
        crate_paths(&code_only(&text))
            .into_iter()
            .filter(|p| p != "config")
            .map(|p| format!("src/tls.rs: crate::{p}")),
    );
    assert!(
        bad.is_empty(),
        "auth and tls sit beside config, below every protocol:\n{}",
        bad.join("\n")
    );
}

#[test]
fn limits_imports_nothing_of_ours() {
    // The listeners' connection caps sit beside config, below every protocol.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/limits.rs");
    let text = fs::read_to_string(root).expect("read limits.rs");
    let paths = crate_paths(&code_only(&text));
    assert!(paths.is_empty(), "limits must be a leaf: {paths:?}");
}

#[test]
fn bus_imports_only_codec_and_config() {
    let bad = violations("bus", |p| matches!(p, "bus" | "codec" | "config"));
    assert!(
        bad.is_empty(),
        "bus may import only codec and config:\n{}",
        bad.join("\n")
    );
}

#[test]
fn transcode_reads_and_writes_the_bus_only() {
    // Renditions sit between bus and bus: no egress, ingest or front door.
    let bad = violations("transcode", |p| {
        matches!(p, "transcode" | "bus" | "codec" | "config")
    });
    assert!(
        bad.is_empty(),
        "transcode may import bus, codec and config only:\n{}",
        bad.join("\n")
    );
}

#[test]
fn cmaf_sits_between_bus_and_egress() {
    // The fMP4 writer and segmenter shared by LL-HLS and recording.
    let bad = violations("cmaf", |p| matches!(p, "cmaf" | "bus" | "codec"));
    assert!(
        bad.is_empty(),
        "cmaf may import bus and codec only:\n{}",
        bad.join("\n")
    );
}

#[test]
fn ingest_imports_no_egress_and_no_front_door() {
    let bad = violations("ingest", |p| {
        matches!(p, "ingest" | "bus" | "codec" | "config")
    });
    assert!(
        bad.is_empty(),
        "ingest may import bus, codec and config only:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_egress_imports_another_or_ingest() {
    const EGRESSES: [&str; 4] = ["rtsp", "webrtc", "hls", "record"];
    for egress in EGRESSES {
        let bad = violations(&format!("egress/{egress}"), |p| {
            match p.strip_prefix("egress::") {
                // Another egress is off limits; shared parts of `egress` (the
                // `Egress` trait, `gso`) are not.
                Some(other) => other == egress || !EGRESSES.contains(&other),
                None => matches!(
                    p,
                    "bus" | "codec" | "cmaf" | "config" | "auth" | "tls" | "limits" | "egress"
                ),
            }
        });
        assert!(
            bad.is_empty(),
            "egress/{egress} may import bus, codec, cmaf, config, auth, tls, limits and shared egress parts only:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn the_scanner_sees_imports() {
    // Guards the check itself: a scanner that found nothing would pass every test above.
    assert_eq!(
        crate_paths(
            "use crate::egress::hls::X; let y = crate::bus::Stream::new();\n\
             use crate::{codec::{A, B}, egress::rtsp::C, ingest};"
        ),
        ["egress::hls", "bus", "codec", "egress::rtsp", "ingest"]
    );
}
