//! The `[auth]` table: users, permissions and the authentication method,
//! validated into [`AuthSettings`]. MediaMTX's model, so its users can carry
//! their `authInternalUsers` over.
//!
//! ```toml
//! [auth]
//! method = "internal"            # internal | http | jwt
//! [[auth.users]]
//! user = "viewer"                # "any" = clients that send no credentials
//! pass = "secret"                # plain, "argon2:$argon2id$..." or "sha256:<base64>"
//! ips = ["192.168.1.0/24"]       # empty or missing = any address
//! permissions = [{ action = "read", path = "cam" }]
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{err, ConfigError};

/// What a client wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Watch a path: RTSP PLAY, WHEP, LL-HLS, the viewer page.
    Read,
    /// Send a stream into a path: RTSP ANNOUNCE/RECORD, WHIP.
    Publish,
    /// The REST API (`/api/*`).
    Api,
    /// `/metrics`.
    Metrics,
    /// Recordings: `/<path>/playback` and the recording lists.
    Playback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Publish => "publish",
            Action::Api => "api",
            Action::Metrics => "metrics",
            Action::Playback => "playback",
        }
    }
}

/// `[auth] method`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// `[[auth.users]]` in this file.
    #[default]
    Internal,
    /// Ask `auth.http_address` (POST JSON, allow on 2xx).
    Http,
    /// Bearer / `?jwt=` tokens checked against `auth.jwt_jwks`.
    Jwt,
}

/// The file form of `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub method: Option<AuthMethod>,
    #[serde(default)]
    pub users: Vec<FileUser>,
    /// `http://host:port/path` the `http` method posts to.
    pub http_address: Option<String>,
    /// Seconds an `http` answer is reused for the same request (default 5).
    pub http_cache: Option<u64>,
    /// JWKS of the `jwt` method: an `http://` URL or a file path.
    pub jwt_jwks: Option<String>,
    /// Claim holding the permissions (default `rtspgate_permissions`).
    pub jwt_claim: Option<String>,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    pub user: String,
    #[serde(default)]
    pub pass: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<FilePermission>,
}

/// One `permissions` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePermission {
    pub action: Action,
    #[serde(default)]
    pub path: Option<String>,
}

/// Which paths a permission covers.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// `path` omitted: every path (and actions without a path).
    All,
    Exact(String),
    /// `path = "~regex"`, anchored at both ends.
    Regex(regex::Regex),
}

impl PathMatch {
    /// Whether a request for `path` (`None` for actions without one, such
    /// as `api`) is covered.
    pub fn matches(&self, path: Option<&str>) -> bool {
        match (self, path) {
            (PathMatch::All, _) => true,
            (_, None) => false,
            (PathMatch::Exact(p), Some(path)) => p == path,
            (PathMatch::Regex(re), Some(path)) => re.is_match(path),
        }
    }
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatch::All, PathMatch::All) => true,
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// A permission: an action on some paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Permission {
    pub action: Action,
    pub path: PathMatch,
}

impl Permission {
    /// Parses one permission; `key` names it in errors.
    pub fn parse(key: &str, p: &FilePermission) -> Result<Permission, ConfigError> {
        let path = match p.path.as_deref() {
            None | Some("") => PathMatch::All,
            Some(p) if p.starts_with('~') => {
                let re = p.trim_start_matches('~');
                let anchored = format!("^(?:{re})$");
                PathMatch::Regex(
                    regex::Regex::new(&anchored)
                        .map_err(|e| err(format!("{key}.path"), format!("bad regex: {e}")))?,
                )
            }
            Some(exact) => PathMatch::Exact(exact.to_owned()),
        };
        Ok(Permission {
            action: p.action,
            path,
        })
    }
}

/// A stored password.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Plain text: the only form RTSP Digest can check.
    Plain(String),
    /// PHC string of an Argon2 hash (`argon2:$argon2id$v=19$...`).
    Argon2(String),
    /// SHA-256 of the password (`sha256:<base64>`, MediaMTX's form), 32 bytes.
    Sha256([u8; 32]),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret itself, not even a hash.
        f.write_str(match self {
            Password::Plain(_) => "Plain(***)",
            Password::Argon2(_) => "Argon2(***)",
            Password::Sha256(_) => "Sha256(***)",
        })
    }
}

impl Password {
    fn parse(key: &str, raw: &str) -> Result<Password, ConfigError> {
        use base64::Engine as _;
        if let Some(phc) = raw.strip_prefix("argon2:") {
            // Validated now so a typo fails at load, not at the first login.
            argon2::PasswordHash::new(phc)
                .map_err(|e| err(key, format!("not an argon2 PHC string: {e}")))?;
            return Ok(Password::Argon2(phc.to_owned()));
        }
        if let Some(b64) = raw.strip_prefix("sha256:") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| err(key, format!("sha256: value is not base64: {e}")))?;
            let hash: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                err(
                    key,
                    format!(
                        "sha256: value is {} bytes, a SHA-256 hash is 32 bytes",
                        b.len()
                    ),
                )
            })?;
            return Ok(Password::Sha256(hash));
        }
        Ok(Password::Plain(raw.to_owned()))
    }
}

/// Who a user entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserName {
    /// `user = "any"`: clients that send no credentials.
    Any,
    Name(String),
}

/// One validated `[[auth.users]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub user: UserName,
    /// `None` only for [`UserName::Any`].
    pub pass: Option<Password>,
    /// Allowed client addresses; empty = any.
    pub ips: Vec<ipnet::IpNet>,
    pub permissions: Vec<Permission>,
}

impl User {
    /// Whether `ip` may use this entry.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.ips.is_empty() || self.ips.iter().any(|net| net.contains(&ip))
    }

    /// Whether this entry grants `action` on `path`.
    pub fn grants(&self, action: Action, path: Option<&str>) -> bool {
        self.permissions
            .iter()
            .any(|p| p.action == action && p.path.matches(path))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket
/// reports IPv4 peers) as the IPv4 address it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Validated `[auth]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSettings {
    pub method: AuthMethod,
    /// The `internal` users. With none configured, [`AuthSettings::default`]
    /// gives the defaults: anyone may `read`; `api` and `metrics` from
    /// loopback only (127.0.0.1 and ::1); nobody may `publish`.
    pub users: Vec<User>,
    /// `http` method: where to POST.
    pub http_address: Option<url::Url>,
    /// `http` method: how long an answer is reused.
    pub http_cache: Duration,
    /// `jwt` method: where the keys are.
    pub jwt_jwks: Option<JwksSource>,
    /// `jwt` method: the claim holding permissions.
    pub jwt_claim: String,
}

/// Where a JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    Url(url::Url),
    File(PathBuf),
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            method: AuthMethod::Internal,
            users: default_users(),
            http_address: None,
            http_cache: Duration::from_secs(5),
            jwt_jwks: None,
            jwt_claim: "rtspgate_permissions".into(),
        }
    }
}

/// The users in force when none are configured.
fn default_users() -> Vec<User> {
    let all = |action| Permission {
        action,
        path: PathMatch::All,
    };
    // The two loopback addresses local clients use, not all of
    // 127.0.0.0/8: narrower is safer, and a test can stand in for a remote
    // client by binding 127.0.0.2.
    let loopback: Vec<ipnet::IpNet> = ["127.0.0.1/32", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    vec![
        User {
            user: UserName::Any,
            pass: None,
            ips: Vec::new(),
            permissions: vec![all(Action::Read), all(Action::Playback)],
        },
        User {
            user: UserName::Any,
            pass: None,
            ips: loopback,
            permissions: vec![all(Action::Api), all(Action::Metrics)],
        },
    ]
}

impl AuthSettings {
    /// Validates `[auth]`; errors name the key (`auth.users[2].ips[0]`).
    pub fn from_file(file: Option<&FileAuth>) -> Result<AuthSettings, ConfigError> {
        let mut s = AuthSettings::default();
        let Some(file) = file else {
            return Ok(s);
        };
        s.method = file.method.unwrap_or_default();
        if !file.users.is_empty() {
            s.users = file
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| parse_user(&format!("auth.users[{i}]"), u))
                .collect::<Result<_, _>>()?;
        }
        if let Some(addr) = &file.http_address {
            let url = url::Url::parse(addr)
                .map_err(|e| err("auth.http_address", format!("{addr:?}: {e}")))?;
            if url.scheme() != "http" || url.host_str().is_none() {
                return Err(err(
                    "auth.http_address",
                    format!("{addr:?} must be an http:// URL (the hook is meant to run beside rtspgate)"),
                ));
            }
            s.http_address = Some(url);
        }
        if let Some(secs) = file.http_cache {
            s.http_cache = Duration::from_secs(secs);
        }
        if let Some(jwks) = &file.jwt_jwks {
            s.jwt_jwks = Some(match url::Url::parse(jwks) {
                Ok(u) if u.scheme() == "http" => JwksSource::Url(u),
                Ok(u) if u.scheme() != "file" && u.scheme().len() > 1 => {
                    return Err(err(
                        "auth.jwt_jwks",
                        format!("{jwks:?}: give an http:// URL or a file path"),
                    ))
                }
                _ => JwksSource::File(PathBuf::from(jwks.trim_start_matches("file://"))),
            });
        }
        if let Some(claim) = &file.jwt_claim {
            s.jwt_claim = claim.clone();
        }
        match s.method {
            AuthMethod::Http if s.http_address.is_none() => {
                return Err(err("auth.http_address", "method = \"http\" needs it"))
            }
            AuthMethod::Jwt if s.jwt_jwks.is_none() => {
                return Err(err("auth.jwt_jwks", "method = \"jwt\" needs it"))
            }
            _ => {}
        }
        Ok(s)
    }
}

fn parse_user(key: &str, u: &FileUser) -> Result<User, ConfigError> {
    let user = match u.user.as_str() {
        "any" => UserName::Any,
        "" => return Err(err(format!("{key}.user"), "empty")),
        name if name.contains(':') => {
            return Err(err(
                format!("{key}.user"),
                "a user name can't contain ':' (Basic auth splits on it)",
            ))
        }
        name => UserName::Name(name.to_owned()),
    };
    let pass = match (&user, u.pass.as_deref()) {
        (UserName::Any, None | Some("")) => None,
        (UserName::Any, Some(_)) => {
            return Err(err(
                format!("{key}.pass"),
                "user \"any\" means clients without credentials; it has no password",
            ))
        }
        (UserName::Name(_), None | Some("")) => {
            return Err(err(
                format!("{key}.pass"),
                "missing (only user \"any\" goes without one)",
            ))
        }
        (UserName::Name(_), Some(p)) => Some(Password::parse(&format!("{key}.pass"), p)?),
    };
    let ips = u
        .ips
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_net(&format!("{key}.ips[{i}]"), raw))
        .collect::<Result<_, _>>()?;
    let permissions = u
        .permissions
        .iter()
        .enumerate()
        .map(|(i, p)| Permission::parse(&format!("{key}.permissions[{i}]"), p))
        .collect::<Result<_, _>>()?;
    Ok(User {
        user,
        pass,
        ips,
        permissions,
    })
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(key: &str, raw: &str) -> Result<ipnet::IpNet, ConfigError> {
    let raw = raw.trim();
    if let Ok(net) = raw.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    raw.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| err(key, format!("{raw:?} is not an IP address or CIDR")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuthSettings, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            auth: FileAuth,
        }
        let f: F = toml::from_str(text).unwrap();
        AuthSettings::from_file(Some(&f.auth))
    }

    #[test]
    fn defaults_read_for_all_api_from_loopback_only() {
        let s = AuthSettings::default();
        let any_read = s.users.iter().any(|u| {
            u.user == UserName::Any
                && u.grants(Action::Read, Some("cam"))
                && u.ip_allowed("203.0.113.9".parse().unwrap())
        });
        assert!(any_read);
        for action in [Action::Api, Action::Metrics] {
            let allowed = |ip: &str| {
                s.users
                    .iter()
                    .any(|u| u.grants(action, None) && u.ip_allowed(ip.parse().unwrap()))
            };
            assert!(allowed("127.0.0.1") && allowed("::1") && allowed("::ffff:127.0.0.1"));
            assert!(!allowed("192.168.1.5") && !allowed("::2") && !allowed("127.0.0.2"));
        }
        assert!(!s
            .users
            .iter()
            .any(|u| u.grants(Action::Publish, Some("cam"))));
    }

    #[test]
    fn users_with_ips_regex_and_hashes() {
        let s = parse(
            r#"
            [auth]
            [[auth.users]]
            user = "viewer"
            pass = "secret"
            ips = ["192.168.1.0/24", "2001:db8::/32", "10.0.0.7"]
            permissions = [{ action = "read", path = "~cam[0-9]+" }, { action = "api" }]
            [[auth.users]]
            user = "h"
            pass = "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
            "#,
        )
        .unwrap();
        let v = &s.users[0];
        assert_eq!(v.user, UserName::Name("viewer".into()));
        assert!(v.grants(Action::Read, Some("cam12")));
        assert!(!v.grants(Action::Read, Some("xcam1")), "regex is anchored");
        assert!(!v.grants(Action::Read, Some("cam1x")), "regex is anchored");
        assert!(v.grants(Action::Api, None));
        assert!(!v.grants(Action::Publish, Some("cam1")));
        assert!(v.ip_allowed("192.168.1.200".parse().unwrap()));
        assert!(v.ip_allowed("::ffff:10.0.0.7".parse().unwrap()));
        assert!(v.ip_allowed("2001:db8::1".parse().unwrap()));
        assert!(!v.ip_allowed("10.0.0.8".parse().unwrap()));
        assert!(matches!(s.users[1].pass, Some(Password::Sha256(_))));
        assert!(!format!("{:?}", s.users[0]).contains("secret"));
    }

    #[test]
    fn bad_entries_name_their_key() {
        let cases = [
            (
                r#"[[auth.users]]
                user = "a"
                pass = "x"
                ips = ["300.1.1.1/8"]"#,
                "auth.users[0].ips[0]",
            ),
            (
                r#"[[auth.users]]
                user = "a""#,
                "auth.users[0].pass",
            ),
            (
                r#"[[auth.users]]
                user = "any"
                pass = "x""#,
                "auth.users[0].pass",
            ),
            (
                r#"[[auth.users]]
                user = "a"
                pass = "argon2:nonsense""#,
                "auth.users[0].pass",
            ),
            (
                r#"[[auth.users]]
                user = "a"
                pass = "sha256:AAAA""#,
                "auth.users[0].pass",
            ),
            (
                r#"[[auth.users]]
                user = "a"
                pass = "p"
                permissions = [{ action = "read", path = "~(" }]"#,
                "auth.users[0].permissions[0].path",
            ),
            ("method = \"http\"", "auth.http_address"),
            ("method = \"jwt\"", "auth.jwt_jwks"),
            ("http_address = \"https://x/\"", "auth.http_address"),
        ];
        for (body, key) in cases {
            let e = parse(&format!("[auth]\n{body}")).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
        }
    }
}
