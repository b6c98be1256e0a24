//! TLS for the listener (HTTPS, WSS) and for the server's own outgoing connections
//! (the JWKS fetch).
//!
//! Owns: loading the certificate chain and key (PEM), the reloadable server config
//! (SIGHUP: new handshakes use the new certificate, established connections keep theirs),
//! and the client config with the system's CA certificates. Never: the accept loop (`server`).
//!
//! Crypto provider: rustls with `ring` (a C compiler is all it needs to build; `aws-lc-rs`
//! needs cmake and a longer build, and offers nothing this server uses).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{what} {path}")]
    Pem {
        /// What was expected (`certificate chain in`, `private key in`).
        what: &'static str,
        /// The configured path.
        path: String,
        /// The parser's or file system's answer.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair (the key does not match the certificate, an unsupported
    /// key type).
    #[error("certificate {cert} with key {key}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The listener's TLS settings: the files, and the config built from them, swapped as a
/// whole by [`Tls::reload`].
pub struct Tls {
    cert_file: String,
    key_file: String,
    config: parking_lot::RwLock<Arc<rustls::ServerConfig>>,
    reloads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads the PEM certificate chain and private key.
    pub fn load(cert_file: &str, key_file: &str) -> Result<Tls, TlsError> {
        let config = server_config(cert_file, key_file)?;
        Ok(Tls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            config: parking_lot::RwLock::new(Arc::new(config)),
            reloads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Reads the files again. On success new handshakes use the new certificate;
    /// connections already established are untouched. On failure the old certificate
    /// stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert_file, &self.key_file)?;
        *self.config.write() = Arc::new(config);
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().clone())
    }
}

fn server_config(cert_file: &str, key_file: &str) -> Result<rustls::ServerConfig, TlsError> {
    let pem = |what, path: &str, source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem("certificate chain in", cert_file, e))?;
    if chain.is_empty() {
        return Err(pem(
            "certificate chain in",
            cert_file,
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem("private key in", key_file, e))?;
    let config_error = |source| TlsError::Config {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A connector for outgoing HTTPS (the system's CA certificates; no client certificate).
pub(crate) fn client_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        // The system's trust store (as the broker and Redis clients use): an operator
        // who adds a private CA there reaches an identity provider it signed.
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "loading the system's CA certificates");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                ignored,
                "no CA certificates found: outgoing HTTPS will fail"
            );
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// Reloads `tls` on every SIGHUP until the process ends (logs each outcome). Does
/// nothing when `tls` is `None` or on platforms without signals.
pub async fn reload_on_sighup(tls: Option<Arc<Tls>>) {
    let Some(tls) = tls else {
        return std::future::pending().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: TLS certificates will not be reloaded");
            return std::future::pending().await;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(cert = %tls.cert_file, "SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    cause = ?std::error::Error::source(&e),
                    "SIGHUP: TLS reload failed; the previous certificate stays in use"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending().await
}
