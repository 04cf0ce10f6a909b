//! TLS for RTSPS and HTTPS (rustls with aws-lc, no OpenSSL): the server
//! certificate from PEM files (re-read on SIGHUP) or made self-signed at
//! start, behind one resolver every listener shares, so a reload reaches
//! new connections of every protocol at once.

use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::config::TlsSource;

/// Why a certificate could not be loaded, in plain words.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The server certificate in force; swapped whole on reload.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The TLS identity of the gateway.
pub struct Tls {
    source: TlsSource,
    resolver: Arc<Resolver>,
}

impl Tls {
    /// Loads the files, or makes a self-signed certificate for `localhost`,
    /// 127.0.0.1 and ::1.
    pub fn load(source: &TlsSource) -> Result<Tls, TlsError> {
        let key = certified_key(source)?;
        Ok(Tls {
            source: source.clone(),
            resolver: Arc::new(Resolver {
                current: RwLock::new(Arc::new(key)),
            }),
        })
    }

    /// Re-reads the certificate files (SIGHUP); a self-signed certificate
    /// is kept. On error the certificate in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        if self.source == TlsSource::SelfSigned {
            return Ok(());
        }
        let key = certified_key(&self.source)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// SHA-256 of the leaf certificate (DER), as `AB:CD:...`, what browsers
    /// and `openssl x509 -fingerprint -sha256` show.
    pub fn fingerprint(&self) -> String {
        let key = self
            .resolver
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        key.cert
            .first()
            .map(|c| {
                Sha256::digest(c.as_ref())
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default()
    }

    /// An acceptor offering `alpn` protocols (e.g. `h2`, `http/1.1`; empty
    /// for RTSPS), TLS 1.2 and 1.3.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

fn certified_key(source: &TlsSource) -> Result<CertifiedKey, TlsError> {
    let (certs, key) = match source {
        TlsSource::Files { cert, key } => (read_certs(cert)?, read_key(key)?),
        TlsSource::SelfSigned => self_signed()?,
    };
    let provider = aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| TlsError::Invalid(format!("certificate and key don't go together: {e}")))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        what: "tls_cert",
        path: path.display().to_string(),
        source,
    })?;
    let certs = CertificateDer::pem_reader_iter(BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("tls_cert {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "tls_cert {}: no CERTIFICATE block in the PEM file",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "tls_key",
        path: path.display().to_string(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsError::Invalid(format!(
            "tls_key {}: no usable private key: {e}",
            path.display()
        ))
    })
}

fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Invalid(format!("making a self-signed certificate: {e}")))?;
    let key = PrivateKeyDer::try_from(signing_key.serialize_der())
        .map_err(|e| TlsError::Invalid(format!("self-signed key: {e}")))?;
    Ok((vec![cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_has_a_fingerprint_and_files_reload() {
        let tls = Tls::load(&TlsSource::SelfSigned).unwrap();
        let fp = tls.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");

        let dir = std::env::temp_dir().join(format!("rtspgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
        };
        write("a.example");
        let src = TlsSource::Files {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let tls = Tls::load(&src).unwrap();
        let before = tls.fingerprint();
        write("b.example");
        tls.reload().unwrap();
        assert_ne!(tls.fingerprint(), before, "SIGHUP picks up the new files");
        std::fs::write(dir.join("key.pem"), "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert_ne!(
            tls.fingerprint(),
            before,
            "a bad file keeps the certificate in force"
        );
        assert!(matches!(
            Tls::load(&TlsSource::Files {
                cert: dir.join("nope.pem"),
                key: dir.join("key.pem")
            }),
            Err(TlsError::Read {
                what: "tls_cert",
                ..
            })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
