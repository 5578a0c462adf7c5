//! `--store postgres://…`: parsing the URL into a connection configuration
//! and a TLS setup, and naming the database in logs without its password.
//!
//! tokio-postgres parses libpq's URL form (users, several hosts, ports, a
//! socket directory in `host=`, `sslmode` of disable / prefer / require),
//! but not `sslmode=verify-ca|verify-full` or `sslrootcert`. Those two are
//! taken out of the query string here and applied to the rustls
//! configuration, with libpq's meanings:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default), `require` | if the server offers it / always | only against `sslrootcert`, if given (as libpq) |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and names the host |

use std::{str::FromStr, sync::Arc};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio_postgres::config::Host;

/// A parsed `--store` URL.
pub struct Target {
    /// What tokio-postgres connects with.
    pub config: tokio_postgres::Config,
    /// The TLS client configuration (unused with `sslmode=disable`).
    pub tls: rustls::ClientConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypt, but accept any certificate (libpq's prefer / require
    /// without a root certificate).
    Nothing,
    /// The chain must lead to a root in `sslrootcert`.
    Chain,
    /// The chain, and the certificate must name the host.
    Full,
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never repeat the
    /// URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Target, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let (mut verify, mut root_file) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (key, value) {
                ("sslrootcert", file) => root_file = Some(percent_decode(file)?),
                ("sslmode", "verify-ca") => verify = Some(Verify::Chain),
                ("sslmode", "verify-full") => verify = Some(Verify::Full),
                _ => kept.push(pair),
            }
        }
        if verify.is_some() {
            kept.retain(|p| !p.starts_with("sslmode="));
            kept.push("sslmode=require");
        }
        let rewritten = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        let config = tokio_postgres::Config::from_str(&rewritten).map_err(|e| super::describe(&e))?;
        let verify = match (verify, &root_file) {
            (Some(v), Some(_)) => v,
            (Some(_), None) => return Err("sslmode=verify-ca and verify-full need sslrootcert=<CA file>".into()),
            // libpq: with a root certificate, require checks the chain.
            (None, Some(_)) => Verify::Chain,
            (None, None) => Verify::Nothing,
        };
        let tls = tls_config(verify, root_file.as_deref())?;
        Ok(Target { config, tls })
    }

    /// `postgres://user@host:port/database`, never the password.
    pub fn describe(&self) -> String {
        describe(&self.config)
    }
}

/// `postgres://user@host:port/database` of `config`, never the password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config.get_ports().get(i).or(config.get_ports().first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad percent-encoding in sslrootcert")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent-encoding in sslrootcert")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "sslrootcert is not UTF-8".into())
}

fn tls_config(verify: Verify, root_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match (verify, root_file) {
        (Verify::Nothing, _) | (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { provider, chain: None }))
            .with_no_client_auth(),
        (verify, Some(file)) => {
            let pem = std::fs::read(file).map_err(|e| format!("sslrootcert {file}: {e}"))?;
            let roots = crate::conn::tls::root_store(&pem).map_err(|e| format!("sslrootcert {file}: {e}"))?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> =
                if verify == Verify::Full { webpki } else { Arc::new(Lenient { provider, chain: Some(webpki) }) };
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
    };
    Ok(config)
}

/// libpq's lenient modes: `sslmode=require` without a root certificate
/// (`chain: None`: the connection is encrypted, the server not
/// authenticated) and `sslmode=verify-ca` (the chain must lead to a trusted
/// root; the name in the certificate is not compared with the host).
/// Signatures are checked either way, so the session is bound to the
/// certificate the server presented.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_describe_without_the_password() {
        let t = Target::parse("postgres://tokend:s3cret@db.example:6543/tokens?sslmode=disable").unwrap();
        assert_eq!(t.describe(), "postgres://tokend@db.example:6543/tokens");
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        let t = Target::parse("postgresql://u@/tokens?host=/var/run/postgresql").unwrap();
        assert_eq!(t.describe(), "postgres://u@/var/run/postgresql:5432/tokens");
        assert!(Target::parse("postgres://u:p@h/db?sslmode=require").is_ok());
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for (url, needle) in [
            ("mysql://u:hunter2@h/db", "postgres://"),
            ("postgres://u:hunter2@h:notaport/db", "port"),
            ("postgres://u:hunter2@h/db?sslmode=verify-full", "sslrootcert"),
            ("postgres://u:hunter2@h/db?sslmode=bogus", "sslmode"),
            ("postgres://u:hunter2@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
        ] {
            let err = Target::parse(url).err().unwrap_or_else(|| panic!("{url} must be refused"));
            assert!(err.contains(needle), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }
}
