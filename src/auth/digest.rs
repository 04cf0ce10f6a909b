//! HTTP Digest (RFC 7616, RFC 2617 for RTSP clients): challenges with
//! stateless nonces and response checks, MD5 and SHA-256.
//!
//! A nonce is `<unix seconds, hex>.<HMAC-SHA256(secret, seconds | client IP), hex>`:
//! it can be checked without state, is bound to the address it was given to,
//! and expires after [`NONCE_LIFETIME`] (then the client is told `stale=true`
//! and retries without asking its user again).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::credentials::DigestResponse;

/// How long a nonce is accepted.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// The realm in every challenge.
pub const REALM: &str = "rtspgate";

/// Digest algorithms offered, strongest first (RFC 7616 §3.7: the server
/// lists its preference first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        if name.is_empty() || name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Makes and checks nonces; one per process (a restart invalidates them,
/// clients then simply get a new challenge).
pub struct NonceKey {
    secret: [u8; 32],
}

/// The result of checking a Digest response.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestCheck {
    Valid,
    /// Right password, nonce too old: challenge again with `stale=true`.
    Stale,
    Invalid,
}

impl Default for NonceKey {
    fn default() -> Self {
        NonceKey {
            secret: rand::random(),
        }
    }
}

impl NonceKey {
    fn mac(&self, secs: u64, ip: IpAddr) -> String {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(&secs.to_be_bytes());
        mac.update(ip.to_string().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A fresh nonce for a client at `ip`.
    pub fn nonce(&self, ip: IpAddr, now: SystemTime) -> String {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("{secs:x}.{}", self.mac(secs, ip))
    }

    /// `WWW-Authenticate` values: SHA-256 first, then MD5 (RFC 7616 §3.7).
    pub fn challenges(&self, ip: IpAddr, now: SystemTime, stale: bool) -> Vec<String> {
        let nonce = self.nonce(ip, now);
        let stale = if stale { ", stale=TRUE" } else { "" };
        [Algorithm::Sha256, Algorithm::Md5]
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm={}{stale}",
                    a.name()
                )
            })
            .collect()
    }

    /// Checks `d` for a request with `method` (e.g. `DESCRIBE`, `GET`) from
    /// `ip`, given the user's plain password.
    pub fn check(
        &self,
        d: &DigestResponse,
        method: &str,
        password: &str,
        ip: IpAddr,
        now: SystemTime,
    ) -> DigestCheck {
        let Some(alg) = Algorithm::from_name(&d.algorithm) else {
            return DigestCheck::Invalid;
        };
        let Some((secs_hex, mac)) = d.nonce.split_once('.') else {
            return DigestCheck::Invalid;
        };
        let Ok(secs) = u64::from_str_radix(secs_hex, 16) else {
            return DigestCheck::Invalid;
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(secs, ip).as_bytes()) {
            return DigestCheck::Invalid;
        }
        let ha1 = alg.hash_hex(&format!("{}:{}:{password}", d.username, d.realm));
        let ha2 = alg.hash_hex(&format!("{method}:{}", d.uri));
        let expected = match d.qop.as_str() {
            "" => alg.hash_hex(&format!("{ha1}:{}:{ha2}", d.nonce)),
            "auth" => alg.hash_hex(&format!(
                "{ha1}:{}:{}:{}:auth:{ha2}",
                d.nonce, d.nc, d.cnonce
            )),
            _ => return DigestCheck::Invalid,
        };
        if d.realm != REALM || !constant_time_eq(expected.as_bytes(), d.response.as_bytes()) {
            return DigestCheck::Invalid;
        }
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_secs.saturating_sub(secs) > NONCE_LIFETIME.as_secs() || secs > now_secs + 60 {
            return DigestCheck::Stale;
        }
        DigestCheck::Valid
    }
}

/// Compares secrets without an early exit that would leak where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client computes (RFC 7616 §3.4.1), written out independently.
    fn client(alg: Algorithm, nonce: &str, qop: bool) -> DigestResponse {
        let (user, pass, method, uri) =
            ("viewer", "secret", "DESCRIBE", "rtsp://127.0.0.1:8554/cam");
        let h = |s: String| alg.hash_hex(&s);
        let ha1 = h(format!("{user}:{REALM}:{pass}"));
        let ha2 = h(format!("{method}:{uri}"));
        let response = if qop {
            h(format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"))
        } else {
            h(format!("{ha1}:{nonce}:{ha2}"))
        };
        DigestResponse {
            username: user.into(),
            realm: REALM.into(),
            nonce: nonce.into(),
            uri: uri.into(),
            response,
            algorithm: alg.name().into(),
            qop: if qop { "auth".into() } else { String::new() },
            nc: "00000001".into(),
            cnonce: "abc".into(),
        }
    }

    #[test]
    fn md5_and_sha256_with_and_without_qop() {
        let key = NonceKey::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = SystemTime::now();
        let nonce = key.nonce(ip, now);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            for qop in [false, true] {
                let d = client(alg, &nonce, qop);
                assert_eq!(
                    key.check(&d, "DESCRIBE", "secret", ip, now),
                    DigestCheck::Valid
                );
                assert_eq!(
                    key.check(&d, "DESCRIBE", "wrong", ip, now),
                    DigestCheck::Invalid
                );
                assert_eq!(
                    key.check(&d, "PLAY", "secret", ip, now),
                    DigestCheck::Invalid
                );
                let other: IpAddr = "127.0.0.2".parse().unwrap();
                assert_eq!(
                    key.check(&d, "DESCRIBE", "secret", other, now),
                    DigestCheck::Invalid
                );
            }
        }
    }

    #[test]
    fn nonce_expires_stale_and_forged_nonce_is_invalid() {
        let key = NonceKey::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let then = SystemTime::now();
        let d = client(Algorithm::Md5, &key.nonce(ip, then), false);
        let later = then + NONCE_LIFETIME + Duration::from_secs(2);
        assert_eq!(
            key.check(&d, "DESCRIBE", "secret", ip, later),
            DigestCheck::Stale
        );
        let forged = client(Algorithm::Md5, "1.deadbeef", false);
        assert_eq!(
            key.check(&forged, "DESCRIBE", "secret", ip, then),
            DigestCheck::Invalid
        );
        let other_key = NonceKey::default();
        assert_eq!(
            other_key.check(&d, "DESCRIBE", "secret", ip, then),
            DigestCheck::Invalid
        );
        assert!(key.challenges(ip, then, true)[0].contains("stale=TRUE"));
        assert!(key.challenges(ip, then, false)[0].contains("algorithm=SHA-256"));
    }
}
