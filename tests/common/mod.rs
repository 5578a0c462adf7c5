//! An in-process tokend on 127.0.0.1:0 with a temp data dir and a manual
//! clock, and gRPC clients for it.

#![allow(dead_code)]

pub mod postgres;
pub mod process;
pub mod proxy;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tempfile::TempDir;
use tokend::{
    Config, Tokend,
    clock::{Clock, Time},
    pb::{self, token_service_client::TokenServiceClient, verify_service_client::VerifyServiceClient},
    server::ServeError,
    token::Secret,
};
use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(request)
    }
}

pub type AdminClient = TokenServiceClient<InterceptedService<Channel, Bearer>>;

pub struct TestServer {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Where health checks alone are served, in plaintext (--health-listen).
    pub health_addr: SocketAddr,
    /// The bootstrap admin token.
    pub admin_token: String,
    pub clock: Clock,
    pub dir: Arc<TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

/// A realistic start time for the manual clock (2026-11-22T00:00:00Z).
pub const START: Time = Time(1_795_305_600_000_000_000);

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let clock = Clock::manual(START);
        let admin = Secret::generate("tk");
        let mut config = Config::new(dir.path());
        config.clock = clock.clone();
        config.bootstrap_token = Some(admin.clone());
        // Tests run many servers: skip the drive-cache fsync to spare the disk.
        config.fsync = false;
        adjust(&mut config);
        Self::start_in(dir, config, admin.expose().to_owned()).await
    }

    /// Starts a server on an existing data dir (a restart).
    pub async fn start_in(dir: Arc<TempDir>, config: Config, admin_token: String) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), dir, config, admin_token).await
    }

    /// Starts a server whose gRPC port is `addr` (a restart where clients
    /// expect it).
    pub async fn start_on(addr: SocketAddr, dir: Arc<TempDir>, config: Config, admin_token: String) -> TestServer {
        let clock = config.clock.clone();
        let tokend = Tokend::open(config).await.expect("tokend starts");
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (listener.local_addr().unwrap(), metrics.local_addr().unwrap());
        let health_addr = health.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners =
            tokend::server::Listeners { grpc: listener, admin: None, metrics: Some(metrics), health: Some(health) };
        let task = tokio::spawn(tokend.serve_on(listeners, async {
            let _ = stopped.await;
        }));
        TestServer { addr, metrics_addr, health_addr, admin_token, clock, dir, stop: Some(stop), task: Some(task) }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    pub async fn admin(&self) -> AdminClient {
        self.admin_as(&self.admin_token).await
    }

    pub async fn admin_as(&self, token: &str) -> AdminClient {
        TokenServiceClient::with_interceptor(self.channel().await, Bearer(token.to_owned()))
    }

    pub async fn verifier(&self) -> VerifyServiceClient<Channel> {
        VerifyServiceClient::new(self.channel().await)
    }

    /// Stops the server and starts another on its data dir, with the same
    /// clock and admin token and a config `adjust`ed (a restart).
    #[allow(dead_code)] // Not every test binary restarts.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let (clock, admin_token) = (self.clock.clone(), self.admin_token.clone());
        let dir = self.stop().await;
        let mut config = Config::new(dir.path());
        config.clock = clock;
        config.fsync = false;
        adjust(&mut config);
        Self::start_in(dir, config, admin_token).await
    }

    /// Graceful shutdown; returns once the server has flushed and stopped.
    pub async fn stop(mut self) -> Arc<TempDir> {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task.take().unwrap()).await;
        result.expect("server stops in time").unwrap().expect("server stops cleanly");
        self.dir.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn issue_request(name: &str, owner: &str, scopes: &[&str]) -> pb::IssueRequest {
    pb::IssueRequest {
        name: name.into(),
        owner: owner.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: s, nanos: 0 }
}

pub async fn issue(admin: &mut AdminClient, name: &str, owner: &str, scopes: &[&str]) -> pb::IssueResponse {
    admin.issue(issue_request(name, owner, scopes)).await.expect("issue succeeds").into_inner()
}

pub async fn verify(client: &mut VerifyServiceClient<Channel>, token: &str, required: &[&str]) -> pb::VerifyResponse {
    client
        .verify(pb::VerifyRequest {
            token: token.into(),
            required_scopes: required.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("verify succeeds as an RPC")
        .into_inner()
}

/// Every token matching `filter`, following next_page_token to the end.
pub async fn list_all(admin: &mut AdminClient, filter: pb::ListRequest) -> Vec<pb::Token> {
    let mut tokens = Vec::new();
    let mut request = pb::ListRequest { page_size: 1000, ..filter };
    loop {
        let page = admin.list(request.clone()).await.expect("list succeeds").into_inner();
        tokens.extend(page.tokens);
        if page.next_page_token.is_empty() {
            return tokens;
        }
        request.page_token = page.next_page_token;
    }
}

pub fn result(r: &pb::VerifyResponse) -> pb::VerifyResult {
    pb::VerifyResult::try_from(r.result).unwrap()
}

pub fn status(t: &pb::Token) -> pb::TokenStatus {
    pb::TokenStatus::try_from(t.status).unwrap()
}

/// `GET path` on the server's metrics listener: (head, body).
pub async fn scrape(server: &TestServer, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.metrics_addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the series whose line starts with `series` (name and labels).
pub fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Every audit event matching `filter`, following next_page_token.
pub async fn audit_events(admin: &mut AdminClient, filter: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    let mut request = pb::ListAuditEventsRequest { page_size: 1000, ..filter };
    loop {
        let page = admin.list_audit_events(request.clone()).await.expect("ListAuditEvents succeeds").into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        request.page_token = page.next_page_token;
    }
}

/// Recomputes the chain of `events` (the whole trail, in order).
pub fn check_chain(events: &[pb::AuditEvent]) -> Result<tokend::audit::Head, tokend::audit::Broken> {
    let mut chain = tokend::audit::Chain::default();
    for e in events {
        chain.push(Some(e))?;
    }
    Ok(chain.head())
}

/// Copies the directory tree `from` into `to` (a data dir, while no server
/// has it open).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
