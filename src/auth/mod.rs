//! Who may do what: one [`Authenticator`] that every protocol asks (RTSP and
//! RTSPS readers, WHEP, LL-HLS, the page, the API, `/metrics`).
//!
//! A protocol turns what the client sent into [`Credentials`] and a
//! [`Request`]; [`Authenticator::check`] answers [`Decision::Allow`] (with
//! the user to record on the session), [`Decision::Challenge`] (nothing
//! usable was sent: answer 401 with [`Authenticator::rtsp_challenges`] or
//! [`HTTP_CHALLENGE`]) or [`Decision::Deny`] (401; a wrong password has
//! already been slowed down by the [`throttle`]). Methods: `internal`
//! (`[[auth.users]]`), `http` (an external hook) and `jwt`. Settings are
//! swapped whole on SIGHUP.

pub mod client;
pub mod credentials;
pub mod digest;
pub mod jwt;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::auth::{canonical_ip, Password, User, UserName};
pub use crate::config::auth::{Action, AuthMethod, AuthSettings};
pub use credentials::{Credentials, Malformed};
use digest::{DigestCheck, NonceKey};
use throttle::Throttle;

/// The `WWW-Authenticate` value of HTTP 401 answers (RFC 7617).
pub const HTTP_CHALLENGE: &str = "Basic realm=\"rtspgate\", charset=\"UTF-8\"";

/// The protocol a request arrives on (told to the `http` hook, and logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Rtsp,
    Rtsps,
    Webrtc,
    Hls,
    /// The page, the API, `/metrics`.
    Http,
}

/// One question to the authenticator.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The client's address (IPv4-mapped IPv6 is treated as IPv4).
    pub ip: IpAddr,
    pub action: Action,
    /// The path asked for; `None` for `api` and `metrics`.
    pub path: Option<&'a str>,
    pub protocol: Protocol,
    pub credentials: &'a Credentials,
    /// RTSP or HTTP method (`DESCRIBE`, `GET`), needed to check Digest.
    pub method: &'a str,
    /// Session id, when the protocol has one yet.
    pub id: Option<&'a str>,
    /// The raw URL query, told to the `http` hook.
    pub query: Option<&'a str>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `user` is who to record on the session (`None`: anonymous).
    Allow { user: Option<String> },
    /// No usable credentials were sent: ask for them (401 with challenges;
    /// `stale`: a Digest nonce expired, the client retries on its own).
    Challenge { stale: bool },
    /// Refused (401). A wrong password and an unknown user are the same.
    Deny,
}

/// The POST body of `auth.method = "http"`.
#[derive(Serialize)]
struct HookRequest<'a> {
    user: &'a str,
    password: &'a str,
    token: &'a str,
    ip: String,
    action: Action,
    path: &'a str,
    protocol: Protocol,
    id: &'a str,
    query: &'a str,
}

/// Answers "may this client do this?" for every protocol.
pub struct Authenticator {
    settings: RwLock<Arc<AuthSettings>>,
    nonces: NonceKey,
    throttle: Throttle,
    /// `http` hook answers: request body → (allowed, when asked).
    hook_cache: Mutex<HashMap<Vec<u8>, (bool, Instant)>>,
    jwt: RwLock<Option<Arc<jwt::JwtVerifier>>>,
    /// Argon2 checks are slow (by design): user + SHA-256 of a password
    /// that verified → when, so a viewer's every HLS request doesn't pay.
    argon2_ok: Mutex<HashMap<(String, [u8; 32]), Instant>>,
}

/// How long a verified Argon2 password is remembered.
const ARGON2_MEMO: Duration = Duration::from_secs(600);
/// Entries kept at most in each cache.
const MAX_CACHE: usize = 10_000;

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Arc<Authenticator> {
        let a = Arc::new(Authenticator {
            settings: RwLock::new(Arc::new(AuthSettings::default())),
            nonces: NonceKey::default(),
            throttle: Throttle::default(),
            hook_cache: Mutex::new(HashMap::new()),
            jwt: RwLock::new(None),
            argon2_ok: Mutex::new(HashMap::new()),
        });
        a.reload(settings);
        a
    }

    /// Replaces the settings (SIGHUP); caches of the old ones are dropped.
    pub fn reload(&self, settings: AuthSettings) {
        let jwt = settings
            .jwt_jwks
            .clone()
            .map(|src| Arc::new(jwt::JwtVerifier::new(src, settings.jwt_claim.clone())));
        *self.jwt.write().unwrap_or_else(|e| e.into_inner()) = jwt;
        self.hook_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.argon2_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<AuthSettings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `WWW-Authenticate` values for an RTSP 401, preferred first: Digest
    /// SHA-256 and MD5 (RFC 7616) when some user has a plain password (the
    /// only kind Digest can check), then Basic.
    pub fn rtsp_challenges(&self, ip: IpAddr, stale: bool) -> Vec<String> {
        let s = self.settings();
        let digest = s.method == AuthMethod::Internal
            && s.users
                .iter()
                .any(|u| matches!(u.pass, Some(Password::Plain(_))));
        let mut v = if digest {
            self.nonces
                .challenges(canonical_ip(ip), SystemTime::now(), stale)
        } else {
            Vec::new()
        };
        v.push("Basic realm=\"rtspgate\"".into());
        v
    }

    /// Decides `req`. A failed login is logged (address and user, never the
    /// password) and the answer is held back by the address's throttle debt.
    pub async fn check(&self, req: &Request<'_>) -> Decision {
        let ip = canonical_ip(req.ip);
        // A rendition (`cam~opus`) is its path's media: the path's permissions.
        let path = req.path.map(crate::config::rendition::base);
        let req = Request { ip, path, ..*req };
        let now = Instant::now();
        let has_creds = *req.credentials != Credentials::None;
        if has_creds && !self.throttle.may_try(ip, now) {
            tracing::warn!(%ip, protocol = ?req.protocol, "login refused unchecked: too many failed logins from this address");
            return Decision::Deny;
        }
        let settings = self.settings();
        let outcome = match settings.method {
            AuthMethod::Internal => self.check_internal(&settings, &req).await,
            AuthMethod::Http => self.check_hook(&settings, &req).await,
            AuthMethod::Jwt => self.check_jwt(&req).await,
        };
        match outcome {
            Outcome::Allow(user) => {
                if user.is_some() {
                    self.throttle.succeeded(ip);
                }
                Decision::Allow { user }
            }
            Outcome::NoCredentials => Decision::Challenge { stale: false },
            Outcome::Stale => Decision::Challenge { stale: true },
            Outcome::NotPermitted => {
                tracing::info!(%ip, user = req.credentials.user(), action = req.action.as_str(), path = req.path, protocol = ?req.protocol, "not permitted");
                Decision::Deny
            }
            Outcome::BadCredentials => {
                let hold = self.throttle.failed(ip, now);
                tracing::warn!(%ip, user = req.credentials.user(), protocol = ?req.protocol, "authentication failed; answering in {} ms", hold.as_millis());
                tokio::time::sleep(hold).await;
                Decision::Deny
            }
        }
    }

    async fn check_internal(&self, s: &AuthSettings, req: &Request<'_>) -> Outcome {
        let anonymous_ok = s.users.iter().any(|u| {
            u.user == UserName::Any && u.ip_allowed(req.ip) && u.grants(req.action, req.path)
        });
        fn named<'s>(s: &'s AuthSettings, name: &'s str) -> impl Iterator<Item = &'s User> {
            s.users
                .iter()
                .filter(move |u| matches!(&u.user, UserName::Name(n) if n == name))
        }
        let (user, verified) = match req.credentials {
            Credentials::None | Credentials::Token(_) => {
                return if anonymous_ok {
                    Outcome::Allow(None)
                } else {
                    Outcome::NoCredentials
                }
            }
            Credentials::Password { user, pass } => {
                let mut ok = Vec::new();
                for u in named(s, user) {
                    if self.password_ok(user, u, pass).await {
                        ok.push(u);
                    }
                }
                (user.as_str(), ok)
            }
            Credentials::Digest(d) => {
                let mut ok = Vec::new();
                let mut stale = false;
                for u in named(s, &d.username) {
                    if let Some(Password::Plain(p)) = &u.pass {
                        match self
                            .nonces
                            .check(d, req.method, p, req.ip, SystemTime::now())
                        {
                            DigestCheck::Valid => ok.push(u),
                            DigestCheck::Stale => stale = true,
                            DigestCheck::Invalid => {}
                        }
                    }
                }
                if ok.is_empty() && stale {
                    return Outcome::Stale;
                }
                (d.username.as_str(), ok)
            }
        };
        if verified.is_empty() {
            return if anonymous_ok {
                Outcome::Allow(None)
            } else {
                Outcome::BadCredentials
            };
        }
        let permitted = verified
            .iter()
            .any(|u| u.ip_allowed(req.ip) && u.grants(req.action, req.path));
        if permitted || anonymous_ok {
            Outcome::Allow(Some(user.to_owned()))
        } else {
            Outcome::NotPermitted
        }
    }

    async fn password_ok(&self, name: &str, user: &User, pass: &str) -> bool {
        match &user.pass {
            None => false,
            Some(Password::Plain(p)) => digest::constant_time_eq(p.as_bytes(), pass.as_bytes()),
            Some(Password::Sha256(h)) => {
                digest::constant_time_eq(&Sha256::digest(pass.as_bytes()), h)
            }
            Some(Password::Argon2(phc)) => {
                let key = (name.to_owned(), Sha256::digest(pass.as_bytes()).into());
                {
                    let memo = self.argon2_ok.lock().unwrap_or_else(|e| e.into_inner());
                    if memo.get(&key).is_some_and(|at| at.elapsed() < ARGON2_MEMO) {
                        return true;
                    }
                }
                let (phc, pass) = (phc.clone(), pass.to_owned());
                // Argon2 takes tens of milliseconds of CPU: not on a runtime thread.
                let ok = tokio::task::spawn_blocking(move || {
                    use argon2::password_hash::{PasswordHash, PasswordVerifier};
                    PasswordHash::new(&phc).is_ok_and(|h| {
                        argon2::Argon2::default()
                            .verify_password(pass.as_bytes(), &h)
                            .is_ok()
                    })
                })
                .await
                .unwrap_or(false);
                if ok {
                    let mut memo = self.argon2_ok.lock().unwrap_or_else(|e| e.into_inner());
                    if memo.len() >= MAX_CACHE {
                        memo.clear();
                    }
                    memo.insert(key, Instant::now());
                }
                ok
            }
        }
    }

    async fn check_hook(&self, s: &AuthSettings, req: &Request<'_>) -> Outcome {
        let Some(url) = &s.http_address else {
            return Outcome::NotPermitted;
        };
        let (user, password, token) = match req.credentials {
            Credentials::None => ("", "", ""),
            Credentials::Password { user, pass } => (user.as_str(), pass.as_str(), ""),
            Credentials::Token(t) => ("", "", t.as_str()),
            // The hook needs the password itself; Digest never sends it
            // (and isn't offered with this method).
            Credentials::Digest(_) => return Outcome::BadCredentials,
        };
        let body = HookRequest {
            user,
            password,
            token,
            ip: req.ip.to_string(),
            action: req.action,
            path: req.path.unwrap_or(""),
            protocol: req.protocol,
            id: req.id.unwrap_or(""),
            query: req.query.unwrap_or(""),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return Outcome::NotPermitted;
        };
        let cached = {
            let cache = self.hook_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&body)
                .filter(|(_, at)| at.elapsed() < s.http_cache)
                .map(|(ok, _)| *ok)
        };
        let allowed = match cached {
            Some(ok) => ok,
            None => {
                let ok =
                    match client::request("POST", url, Some(body.clone()), Duration::from_secs(5))
                        .await
                    {
                        Ok((status, _)) => (200..300).contains(&status),
                        Err(e) => {
                            tracing::warn!("auth hook {url}: {e}; refusing");
                            false
                        }
                    };
                let mut cache = self.hook_cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_CACHE {
                    cache.clear();
                }
                cache.insert(body, (ok, Instant::now()));
                ok
            }
        };
        match (allowed, req.credentials) {
            (true, c) => Outcome::Allow(c.user().map(str::to_owned)),
            (false, Credentials::None) => Outcome::NoCredentials,
            (false, _) => Outcome::BadCredentials,
        }
    }

    async fn check_jwt(&self, req: &Request<'_>) -> Outcome {
        let token = match req.credentials {
            Credentials::Token(t) => t.as_str(),
            // RTSP clients can only send user:password: the token goes in
            // the password, any user name.
            Credentials::Password { pass, .. } => pass.as_str(),
            Credentials::None => return Outcome::NoCredentials,
            Credentials::Digest(_) => return Outcome::BadCredentials,
        };
        let verifier = self.jwt.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(verifier) = verifier else {
            return Outcome::NotPermitted;
        };
        match verifier.verify(token).await {
            Ok(grant) => {
                let permitted = grant
                    .permissions
                    .iter()
                    .any(|p| p.action == req.action && p.path.matches(req.path));
                if permitted {
                    Outcome::Allow(Some(grant.user.unwrap_or_else(|| "jwt".into())))
                } else {
                    Outcome::NotPermitted
                }
            }
            Err(e) => {
                tracing::info!(ip = %req.ip, "JWT refused: {e}");
                Outcome::BadCredentials
            }
        }
    }
}

enum Outcome {
    Allow(Option<String>),
    NoCredentials,
    Stale,
    NotPermitted,
    BadCredentials,
}

#[cfg(test)]
mod tests;
