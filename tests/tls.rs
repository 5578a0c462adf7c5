//! TLS and mTLS with certificates made at run time (rcgen): a TLS client
//! connects, a plaintext client is refused, and with a client CA a client
//! without a certificate is refused.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokend::{
    pb::{self, verify_service_client::VerifyServiceClient},
    server::TlsFiles,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    ca_pem: String,
    server: TlsFiles,
    client_cert: String,
    client_key: String,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["sibling-service".into()]);
    let ca_pem = ca.pem();
    Pki {
        server: TlsFiles {
            cert: write(dir, "server.pem", &server_cert),
            key: write(dir, "server.key", &server_key),
            client_ca: Some(write(dir, "ca.pem", &ca_pem)),
        },
        ca_pem,
        client_cert,
        client_key,
    }
}

async fn tls_channel(server: &TestServer, pki: &Pki, with_identity: bool) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Channel::from_shared(format!("https://localhost:{}", server.addr.port())).unwrap().tls_config(tls)?.connect().await
}

async fn verify_call(channel: Channel) -> Result<pb::VerifyResponse, tonic::Status> {
    let req = pb::VerifyRequest { token: "x".into(), required_scopes: vec![], ..Default::default() };
    VerifyServiceClient::new(channel).verify(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn tls_clients_connect_and_plaintext_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = pki(dir.path());
    pki.server.client_ca = None;
    let tls = pki.server.clone();
    let server = TestServer::start_with(move |c| c.tls = Some(tls)).await;

    let channel = tls_channel(&server, &pki, false).await.expect("TLS handshake");
    let r = verify_call(channel).await.expect("Verify over TLS");
    assert_eq!(result(&r), pb::VerifyResult::Malformed);

    // Plaintext HTTP/2 to a TLS port fails.
    let plain = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await;
    match plain {
        Err(_) => {}
        Ok(channel) => assert!(verify_call(channel).await.is_err(), "a plaintext call must not succeed"),
    }
}

#[tokio::test]
async fn mtls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let tls = pki.server.clone();
    let server = TestServer::start_with(move |c| c.tls = Some(tls)).await;

    let with_cert = tls_channel(&server, &pki, true).await.expect("mTLS handshake");
    assert!(verify_call(with_cert).await.is_ok());

    match tls_channel(&server, &pki, false).await {
        Err(_) => {}
        Ok(channel) => assert!(verify_call(channel).await.is_err(), "a client without a certificate must be refused"),
    }
}

#[tokio::test]
async fn unreadable_or_invalid_tls_files_stop_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let missing = dir.path().join("missing.pem");
    let mut config = tokend::Config::new(dir.path().join("data"));
    config.tls = Some(TlsFiles { cert: missing.clone(), ..pki.server.clone() });
    let err = tokend::Tokend::open(config).await.err().expect("must not start");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let garbage = write(dir.path(), "garbage.pem", "not a certificate");
    let mut config = tokend::Config::new(dir.path().join("data2"));
    config.tls = Some(TlsFiles { cert: garbage.clone(), ..pki.server });
    let err = tokend::Tokend::open(config).await.err().expect("must not start");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
}

#[tokio::test]
async fn health_checks_stay_plaintext_on_the_health_port_with_mtls_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let tls = pki.server.clone();
    let server = TestServer::start_with(move |c| c.tls = Some(tls)).await;
    // What Kubernetes' gRPC probe does: plaintext, no certificate.
    let plain = Channel::from_shared(format!("http://{}", server.health_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain.clone());
    for service in ["", "tokend.v1.VerifyService"] {
        let req = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let status = health.check(req).await.expect("plaintext health check").into_inner().status;
        assert_eq!(status, 1, "SERVING for {service:?}");
    }
    // Nothing else is served there.
    assert_eq!(verify_call(plain).await.unwrap_err().code(), tonic::Code::Unimplemented);
}

/// Reads `stream` until the server closes it; how long that took, or `None`
/// if it was still open after `limit`.
fn closed_within(stream: &mut impl std::io::Read, started: std::time::Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if started.elapsed() >= limit {
                    return None;
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_timeout_covers_the_tls_handshake_and_the_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = pki(dir.path());
    pki.server.client_ca = None;
    let tls = pki.server.clone();
    let timeout = Duration::from_secs(1);
    let server = TestServer::start_with(move |c| {
        c.tls = Some(tls);
        c.limits.handshake_timeout = timeout;
    })
    .await;
    let (addr, ca) = (server.addr, pki.ca_pem.clone());
    tokio::task::spawn_blocking(move || {
        let limit = timeout + Duration::from_secs(1);
        // Connected, never a ClientHello.
        let started = std::time::Instant::now();
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert!(closed_within(&mut silent, started, limit).is_some(), "a silent TLS connection stayed open");

        // TLS completed, then no HTTP/2 at all.
        let started = std::time::Instant::now();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connection = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("the TLS handshake completes");
        }
        assert!(closed_within(&mut tls, started, limit).is_some(), "a TLS connection without a request stayed open");
    })
    .await
    .unwrap();
    // A real client still gets through.
    let channel = tls_channel(&server, &pki, false).await.expect("TLS handshake");
    assert!(verify_call(channel).await.is_ok());
}
