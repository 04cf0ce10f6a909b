use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::config::auth::FileAuth;

fn settings(toml_text: &str) -> AuthSettings {
    #[derive(serde::Deserialize)]
    struct F {
        auth: FileAuth,
    }
    let f: F = toml::from_str(toml_text).unwrap();
    AuthSettings::from_file(Some(&f.auth)).unwrap()
}

const USERS: &str = r#"
[auth]
[[auth.users]]
user = "viewer"
pass = "secret"
permissions = [{ action = "read", path = "cam" }]
[[auth.users]]
user = "admin"
pass = "sha256:cTv9p4hwv50bJh9WUob4XpfuYU7+Xw+vfDTnyk9luso="
ips = ["127.0.0.0/8"]
permissions = [{ action = "api" }, { action = "read" }]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn ask(
    a: &Authenticator,
    from: &str,
    action: Action,
    path: Option<&str>,
    c: Credentials,
) -> Decision {
    a.check(&Request {
        ip: ip(from),
        action,
        path,
        protocol: Protocol::Rtsp,
        credentials: &c,
        method: "DESCRIBE",
        id: None,
        query: None,
    })
    .await
}

fn pw(user: &str, pass: &str) -> Credentials {
    Credentials::Password {
        user: user.into(),
        pass: pass.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn defaults_read_for_anyone_api_from_loopback() {
    let a = Authenticator::new(AuthSettings::default());
    let anon = Decision::Allow { user: None };
    assert_eq!(
        ask(
            &a,
            "203.0.113.5",
            Action::Read,
            Some("cam"),
            Credentials::None
        )
        .await,
        anon
    );
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Api, None, Credentials::None).await,
        anon
    );
    assert_eq!(
        ask(&a, "::1", Action::Metrics, None, Credentials::None).await,
        anon
    );
    let challenge = Decision::Challenge { stale: false };
    assert_eq!(
        ask(&a, "127.0.0.2", Action::Api, None, Credentials::None).await,
        challenge,
        "the default loopback is 127.0.0.1 and ::1 only (issue 10)"
    );
    assert_eq!(
        ask(&a, "192.168.1.9", Action::Api, None, Credentials::None).await,
        challenge
    );
    assert_eq!(
        ask(&a, "192.168.1.9", Action::Metrics, None, Credentials::None).await,
        challenge
    );
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Publish,
            Some("cam"),
            Credentials::None
        )
        .await,
        challenge
    );
    assert_eq!(
        a.rtsp_challenges(ip("127.0.0.1"), false),
        vec!["Basic realm=\"rtspgate\"".to_owned()],
        "no plain passwords: Digest can't be checked, so not offered"
    );
}

#[tokio::test(start_paused = true)]
async fn users_passwords_ips_and_permissions() {
    let a = Authenticator::new(settings(USERS));
    let viewer = Decision::Allow {
        user: Some("viewer".into()),
    };
    assert_eq!(
        ask(
            &a,
            "198.51.100.1",
            Action::Read,
            Some("cam"),
            pw("viewer", "secret")
        )
        .await,
        viewer
    );
    assert_eq!(
        ask(
            &a,
            "198.51.100.1",
            Action::Read,
            Some("cam"),
            Credentials::None
        )
        .await,
        Decision::Challenge { stale: false }
    );
    assert_eq!(
        ask(
            &a,
            "198.51.100.1",
            Action::Read,
            Some("cam2"),
            pw("viewer", "secret")
        )
        .await,
        Decision::Deny
    );
    assert_eq!(
        ask(
            &a,
            "198.51.100.1",
            Action::Api,
            None,
            pw("viewer", "secret")
        )
        .await,
        Decision::Deny
    );
    // "adminpass" hashed with SHA-256, only from loopback.
    let admin = Decision::Allow {
        user: Some("admin".into()),
    };
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Api, None, pw("admin", "adminpass")).await,
        admin
    );
    assert_eq!(
        ask(
            &a,
            "::ffff:127.0.0.1",
            Action::Read,
            Some("x"),
            pw("admin", "adminpass")
        )
        .await,
        admin
    );
    assert_eq!(
        ask(
            &a,
            "198.51.100.1",
            Action::Api,
            None,
            pw("admin", "adminpass")
        )
        .await,
        Decision::Deny
    );
    // Configured users replace the defaults: loopback API needs a user now.
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Api, None, Credentials::None).await,
        Decision::Challenge { stale: false }
    );
    assert_eq!(
        a.rtsp_challenges(ip("127.0.0.1"), false).len(),
        3,
        "Digest SHA-256, MD5, Basic"
    );
}

#[tokio::test(start_paused = true)]
async fn wrong_password_and_unknown_user_are_slowed_alike() {
    let a = Authenticator::new(settings(USERS));
    for creds in [pw("viewer", "nope"), pw("nobody", "secret")] {
        let from = if creds.user() == Some("viewer") {
            "198.51.100.2"
        } else {
            "198.51.100.3"
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            ask(&a, from, Action::Read, Some("cam"), creds.clone()).await,
            Decision::Deny
        );
        assert_eq!(t0.elapsed(), throttle::PENALTY);
        let t1 = tokio::time::Instant::now();
        assert_eq!(
            ask(&a, from, Action::Read, Some("cam"), creds).await,
            Decision::Deny
        );
        assert!(t1.elapsed() >= throttle::PENALTY, "{:?}", t1.elapsed());
    }
    // A right password from another address is not held up.
    let t0 = tokio::time::Instant::now();
    assert!(matches!(
        ask(
            &a,
            "198.51.100.4",
            Action::Read,
            Some("cam"),
            pw("viewer", "secret")
        )
        .await,
        Decision::Allow { .. }
    ));
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn digest_round_trip() {
    let a = Authenticator::new(settings(USERS));
    let from = ip("127.0.0.1");
    let challenge = &a.rtsp_challenges(from, false)[1];
    assert!(challenge.contains("algorithm=MD5"), "{challenge}");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let md5 = |s: String| format!("{:x}", md5::Md5::digest(s.as_bytes()));
    let uri = "rtsp://127.0.0.1:8554/cam";
    let ha1 = md5(format!("viewer:{}:secret", digest::REALM));
    let ha2 = md5(format!("DESCRIBE:{uri}"));
    let response = md5(format!("{ha1}:{nonce}:{ha2}"));
    let header = format!(
        "Digest username=\"viewer\", realm=\"rtspgate\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
    );
    let creds = credentials::parse_authorization(header.as_bytes()).unwrap();
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Read, Some("cam"), creds).await,
        Decision::Allow {
            user: Some("viewer".into())
        }
    );
    let bad = header.replace(&response, &md5("x".into()));
    let creds = credentials::parse_authorization(bad.as_bytes()).unwrap();
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Read, Some("cam"), creds).await,
        Decision::Deny
    );
}

#[tokio::test]
async fn argon2_hash_verifies() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
    let phc = argon2::Argon2::default()
        .hash_password(b"hunter2", &salt)
        .unwrap()
        .to_string();
    let a = Authenticator::new(settings(&format!(
        "[auth]\n[[auth.users]]\nuser = \"u\"\npass = \"argon2:{phc}\"\npermissions = [{{ action = \"read\" }}]"
    )));
    for _ in 0..2 {
        assert_eq!(
            ask(
                &a,
                "127.0.0.1",
                Action::Read,
                Some("cam"),
                pw("u", "hunter2")
            )
            .await,
            Decision::Allow {
                user: Some("u".into())
            }
        );
    }
    assert_eq!(
        ask(
            &a,
            "127.0.0.9",
            Action::Read,
            Some("cam"),
            pw("u", "hunter3")
        )
        .await,
        Decision::Deny
    );
}

/// A small hook server: allows `viewer`/`secret` to read `cam`, records bodies.
async fn hook_server() -> (url::Url, Arc<Mutex<Vec<serde_json::Value>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/auth",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let seen = s2.clone();
            async move {
                let ok = v["user"] == "viewer" && v["password"] == "secret" && v["path"] == "cam";
                seen.lock().unwrap().push(v);
                if ok {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/auth").parse().unwrap(), seen)
}

#[tokio::test]
async fn http_hook_is_asked_and_cached() {
    let (url, seen) = hook_server().await;
    let a = Authenticator::new(settings(&format!(
        "[auth]\nmethod = \"http\"\nhttp_address = \"{url}\""
    )));
    assert_eq!(
        a.rtsp_challenges(ip("127.0.0.1"), false),
        vec!["Basic realm=\"rtspgate\"".to_owned()],
        "the hook needs the password: no Digest"
    );
    let allow = Decision::Allow {
        user: Some("viewer".into()),
    };
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam"),
            pw("viewer", "secret")
        )
        .await,
        allow
    );
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam"),
            pw("viewer", "secret")
        )
        .await,
        allow
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the second answer came from the cache"
    );
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["ip"], "127.0.0.1");
    assert_eq!(body["action"], "read");
    assert_eq!(body["protocol"], "rtsp");
    for key in [
        "user", "password", "token", "ip", "action", "path", "protocol", "id", "query",
    ] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam2"),
            pw("viewer", "secret")
        )
        .await,
        Decision::Deny
    );
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam"),
            Credentials::None
        )
        .await,
        Decision::Challenge { stale: false }
    );
}

#[tokio::test]
async fn http_hook_down_refuses() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let a = Authenticator::new(settings(&format!(
        "[auth]\nmethod = \"http\"\nhttp_address = \"http://{addr}/auth\""
    )));
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam"),
            Credentials::None
        )
        .await,
        Decision::Challenge { stale: false }
    );
}

#[tokio::test]
async fn jwt_from_jwks_file() {
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key_raw());
    let dir = std::env::temp_dir().join(format!("rtspgate-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]}).to_string(),
    )
    .unwrap();
    let a = Authenticator::new(settings(&format!(
        "[auth]\nmethod = \"jwt\"\njwt_jwks = \"{}\"",
        jwks.display()
    )));
    let enc = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let exp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |exp: u64, perms: serde_json::Value| {
        encode(
            &header,
            &serde_json::json!({"sub": "alice", "exp": exp, "rtspgate_permissions": perms}),
            &enc,
        )
        .unwrap()
    };
    let good = token(exp, serde_json::json!([{"action": "read", "path": "cam"}]));
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("cam"),
            Credentials::Token(good.clone())
        )
        .await,
        Decision::Allow {
            user: Some("alice".into())
        }
    );
    assert_eq!(
        ask(&a, "127.0.0.1", Action::Read, Some("cam"), pw("any", &good)).await,
        Decision::Allow {
            user: Some("alice".into())
        },
        "RTSP clients send the token as the password"
    );
    assert_eq!(
        ask(
            &a,
            "127.0.0.1",
            Action::Read,
            Some("other"),
            Credentials::Token(good)
        )
        .await,
        Decision::Deny
    );
    let expired = token(exp - 3600, serde_json::json!([{"action": "read"}]));
    assert_eq!(
        ask(
            &a,
            "127.0.0.2",
            Action::Read,
            Some("cam"),
            Credentials::Token(expired)
        )
        .await,
        Decision::Deny
    );
    let forged = {
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        encode(
            &header,
            &serde_json::json!({"sub": "mallory", "exp": exp, "rtspgate_permissions": [{"action": "read"}]}),
            &EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        ask(
            &a,
            "127.0.0.3",
            Action::Read,
            Some("cam"),
            Credentials::Token(forged)
        )
        .await,
        Decision::Deny
    );
    assert_eq!(
        ask(
            &a,
            "127.0.0.4",
            Action::Read,
            Some("cam"),
            Credentials::None
        )
        .await,
        Decision::Challenge { stale: false }
    );
    let _ = std::fs::remove_dir_all(dir);
}
