//! What a client sends to prove who it is: an `Authorization` header
//! (Basic RFC 7617, Bearer RFC 6750, Digest RFC 7616) or query parameters
//! (`user`/`pass`, `token`, `jwt`) for players that can't set headers.
//! Parsing is bounded and total: any malformed input is an `Err`, never a panic.

use std::fmt;

use base64::Engine as _;

/// Longest `Authorization` value looked at, in bytes; longer is malformed.
pub const MAX_HEADER_LEN: usize = 4096;

/// Credentials as received.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// Nothing sent.
    #[default]
    None,
    /// Basic, or `?user=&pass=` in the query.
    Password { user: String, pass: String },
    /// `Authorization: Bearer`, `?token=` or `?jwt=`.
    Token(String),
    /// `Authorization: Digest`.
    Digest(DigestResponse),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Password { user, .. } => write!(f, "Password({user:?}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::Digest(d) => write!(f, "Digest({:?}, ***)", d.username),
        }
    }
}

impl Credentials {
    /// The user name the client claims, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Credentials::Password { user, .. } => Some(user),
            Credentials::Digest(d) => Some(&d.username),
            _ => None,
        }
    }
}

/// The fields of a Digest `Authorization` header (RFC 7616 §3.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// Lowercase hex.
    pub response: String,
    /// `MD5` (also when absent) or `SHA-256`.
    pub algorithm: String,
    /// `auth`, or empty for the RFC 2069 form most RTSP clients send.
    pub qop: String,
    pub nc: String,
    pub cnonce: String,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("Authorization header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("unknown Authorization scheme")]
    UnknownScheme,
    #[error("Basic credentials are not base64 of user:password")]
    BadBasic,
    #[error("Digest parameters are malformed")]
    BadDigest,
    #[error("empty Bearer token")]
    EmptyToken,
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, Malformed> {
    if value.len() > MAX_HEADER_LEN {
        return Err(Malformed::TooLong);
    }
    let value = std::str::from_utf8(value).map_err(|_| Malformed::UnknownScheme)?;
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Malformed::BadBasic)?;
        let text = String::from_utf8(raw).map_err(|_| Malformed::BadBasic)?;
        let (user, pass) = text.split_once(':').ok_or(Malformed::BadBasic)?;
        return Ok(Credentials::Password {
            user: user.to_owned(),
            pass: pass.to_owned(),
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(Malformed::EmptyToken);
        }
        return Ok(Credentials::Token(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("digest") {
        return parse_digest(rest).map(Credentials::Digest);
    }
    Err(Malformed::UnknownScheme)
}

/// Parses `k=v, k="quoted \" v", ...` into a Digest response; the required
/// fields (username, nonce, uri, response) must be present.
fn parse_digest(params: &str) -> Result<DigestResponse, Malformed> {
    let mut d = DigestResponse::default();
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=').ok_or(Malformed::BadDigest)?;
        let key = rest.get(..eq).ok_or(Malformed::BadDigest)?.trim();
        rest = rest.get(eq + 1..).ok_or(Malformed::BadDigest)?.trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or(Malformed::BadDigest)?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or(Malformed::BadDigest)?;
            rest = quoted.get(end..).ok_or(Malformed::BadDigest)?;
            value = out;
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest
                .get(..end)
                .ok_or(Malformed::BadDigest)?
                .trim()
                .to_owned();
            rest = rest.get(end..).ok_or(Malformed::BadDigest)?;
        }
        let slot = match key.to_ascii_lowercase().as_str() {
            "username" => &mut d.username,
            "realm" => &mut d.realm,
            "nonce" => &mut d.nonce,
            "uri" => &mut d.uri,
            "response" => &mut d.response,
            "algorithm" => &mut d.algorithm,
            "qop" => &mut d.qop,
            "nc" => &mut d.nc,
            "cnonce" => &mut d.cnonce,
            _ => continue,
        };
        *slot = value;
    }
    if d.username.is_empty() || d.nonce.is_empty() || d.uri.is_empty() || d.response.is_empty() {
        return Err(Malformed::BadDigest);
    }
    d.response.make_ascii_lowercase();
    Ok(d)
}

/// Query parameters that carry credentials, in the order they are looked for.
pub const QUERY_KEYS: [&str; 4] = ["user", "pass", "token", "jwt"];

/// Credentials from a URL query (`user`+`pass`, `token` or `jwt`), for
/// players that can't set headers; `None` when the query has none.
pub fn from_query(query: &str) -> Option<Credentials> {
    let mut user = None;
    let mut pass = None;
    let mut token = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "user" => user = Some(v.into_owned()),
            "pass" => pass = Some(v.into_owned()),
            "token" | "jwt" => token = Some(v.into_owned()),
            _ => {}
        }
    }
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        return Some(Credentials::Token(t));
    }
    match (user, pass) {
        (Some(user), Some(pass)) if !user.is_empty() => Some(Credentials::Password { user, pass }),
        _ => None,
    }
}

/// The credential parameters of `query` re-encoded (`user=..&pass=..`), to
/// append to every URI a playlist writes so a player that can't set headers
/// keeps authenticating; empty when the query has none.
pub fn query_suffix(query: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if QUERY_KEYS.contains(&&*k) {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_bearer_digest() {
        assert_eq!(
            parse_authorization(b"Basic dmlld2VyOnNlOmNyZXQ=").unwrap(),
            Credentials::Password {
                user: "viewer".into(),
                pass: "se:cret".into()
            }
        );
        assert_eq!(
            parse_authorization(b"bearer abc.def").unwrap(),
            Credentials::Token("abc.def".into())
        );
        let Credentials::Digest(d) = parse_authorization(
            br#"Digest username="vi\"ew", realm="rtspgate", nonce="n1", uri="rtsp://h/cam", response="ABCD", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c""#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(d.username, "vi\"ew");
        assert_eq!(d.response, "abcd");
        assert_eq!(d.algorithm, "SHA-256");
        assert_eq!(
            (d.qop.as_str(), d.nc.as_str(), d.cnonce.as_str()),
            ("auth", "00000001", "c")
        );
    }

    #[test]
    fn malformed_is_an_error_never_a_panic() {
        let long = format!("Basic {}", "A".repeat(70_000));
        let cases: Vec<&[u8]> = vec![
            b"Basic !!!notbase64",
            b"Basic dXNlcg==", // "user", no colon
            b"Basic //79",     // not UTF-8
            b"Negotiate abc",
            b"",
            b"Bearer ",
            br#"Digest username="unterminated"#,
            br#"Digest username="a", nonce="n", uri="u""#, // no response
            b"Digest username",
            b"Digest ====",
            b"Digest username=\"\\",
            b"\xff\xfe",
            long.as_bytes(),
        ];
        for c in cases {
            assert!(
                parse_authorization(c).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn query_credentials_and_suffix() {
        assert_eq!(
            from_query("_HLS_msn=3&user=v&pass=s%26x"),
            Some(Credentials::Password {
                user: "v".into(),
                pass: "s&x".into()
            })
        );
        assert_eq!(
            from_query("jwt=t.t.t"),
            Some(Credentials::Token("t.t.t".into()))
        );
        assert_eq!(from_query("user=v"), None);
        assert_eq!(from_query("_HLS_msn=3"), None);
        assert_eq!(
            query_suffix("_HLS_msn=3&user=v&pass=s%26x"),
            "user=v&pass=s%26x"
        );
        assert_eq!(query_suffix("_HLS_part=1"), "");
    }
}
