//! `auth.method = "jwt"`: a token (Bearer, `?jwt=`, or the password of
//! Basic/RTSP credentials) signed with a key of the configured JWKS
//! (RFC 7517), RS256, ES256 or EdDSA, carrying its permissions in a claim
//! of the same shape as `permissions` in `[[auth.users]]`.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use crate::config::auth::{FilePermission, JwksSource, Permission};

/// A JWKS is re-read this often.
const REFRESH: Duration = Duration::from_secs(300);
/// A token naming an unknown key re-reads the JWKS at most this often.
const MISS_REFRESH: Duration = Duration::from_secs(10);

/// What a valid token grants.
#[derive(Debug)]
pub struct Grant {
    /// `sub`, shown as the session's user.
    pub user: Option<String>,
    pub permissions: Vec<Permission>,
}

/// Checks tokens against one JWKS.
pub struct JwtVerifier {
    source: JwksSource,
    claim: String,
    keys: Mutex<Option<(JwkSet, Instant)>>,
}

impl JwtVerifier {
    pub fn new(source: JwksSource, claim: String) -> JwtVerifier {
        JwtVerifier {
            source,
            claim,
            keys: Mutex::new(None),
        }
    }

    async fn load(&self) -> Result<JwkSet, String> {
        let bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("reading JWKS {}: {e}", path.display()))?
                .into(),
            JwksSource::Url(url) => {
                let (status, body) =
                    super::client::request("GET", url, None, Duration::from_secs(5)).await?;
                if !(200..300).contains(&status) {
                    return Err(format!("JWKS URL answered {status}"));
                }
                body
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("JWKS is not a JWK set: {e}"))
    }

    /// The key set, re-read when old or when `kid` is missing from it.
    async fn keys(&self, kid: Option<&str>) -> Result<JwkSet, String> {
        let mut slot = self.keys.lock().await;
        let now = Instant::now();
        let stale = match &*slot {
            None => true,
            Some((set, at)) => {
                let age = now.saturating_duration_since(*at);
                age > REFRESH || (kid.is_some_and(|k| set.find(k).is_none()) && age > MISS_REFRESH)
            }
        };
        if stale {
            match self.load().await {
                Ok(set) => *slot = Some((set, now)),
                Err(e) if slot.is_none() => return Err(e),
                Err(e) => tracing::warn!("keeping the previous JWKS: {e}"),
            }
        }
        slot.as_ref()
            .map(|(set, _)| set.clone())
            .ok_or_else(|| "no JWKS".to_owned())
    }

    /// Verifies `token`; `Err` says why in words (logged, never sent).
    pub async fn verify(&self, token: &str) -> Result<Grant, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad token: {e}"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(format!("algorithm {:?} not accepted", header.alg));
        }
        let set = self.keys(header.kid.as_deref()).await?;
        let jwk = match header.kid.as_deref() {
            Some(kid) => set.find(kid),
            None if set.keys.len() == 1 => set.keys.first(),
            None => None,
        }
        .ok_or("no key in the JWKS for this token")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| format!("token refused: {e}"))?;
        let claims = data.claims;
        let perms: Vec<FilePermission> = match claims.get(&self.claim) {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("claim {}: {e}", self.claim))?,
            None => Vec::new(),
        };
        let permissions = perms
            .iter()
            .enumerate()
            .map(|(i, p)| Permission::parse(&format!("{}[{i}]", self.claim), p))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Grant {
            user: claims
                .get("sub")
                .and_then(|s| s.as_str())
                .map(str::to_owned),
            permissions,
        })
    }
}
