//! The server's TLS configuration (rustls, ring), from PEM: the certificate
//! chain and key, and optionally a CA whose client certificates are
//! required (mTLS). HTTP/2 is the only protocol offered (ALPN `h2`).

use std::sync::Arc;

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration could not be built; names the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain has no certificate, or one that cannot be read.
    #[error("no PEM certificate could be read: {0}")]
    Certificate(String),
    /// The private key cannot be read.
    #[error("no PEM private key could be read: {0}")]
    Key(String),
    /// The client CA cannot be read or used.
    #[error("the client CA cannot be used: {0}")]
    ClientCa(String),
    /// rustls refused the combination (say, a key that does not match).
    #[error("{0}")]
    Config(String),
}

/// An acceptor for `cert` and `key`, requiring client certificates signed by
/// `client_ca` when given.
pub fn acceptor(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("the file holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let roots = root_store(pem).map_err(TlsError::ClientCa)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The trust anchors in a PEM file's contents: every CERTIFICATE block, at
/// least one. Used for client CAs here and for PostgreSQL's `sslrootcert`.
pub(crate) fn root_store(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("the file holds no CERTIFICATE block".into());
    }
    Ok(roots)
}
