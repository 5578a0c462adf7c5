//! The front door, tried as an outsider would, with real sockets against the
//! real server: idle and slow-headers connections closed at the handshake
//! timeout, the connection cap, keepalive, the announced stream limit,
//! oversize metadata and a 64 KiB header block, a rapid-reset flood and the
//! cooldown of a peer that keeps flooding, the admin plane's deadline and
//! load shedding, and the real binary's descriptors.

mod common;

use std::time::{Duration, Instant};

use common::{
    START, TestServer, issue, issue_request, postgres::Postgres, proxy::Proxy, result, scrape, value, verify,
};
use h2::client::SendRequest;
use hyper::body::Bytes;
use tokend::{Config, clock::Clock, limits::Limits, pb, store::PostgresOptions, token::Secret};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

async fn start(limits: Limits) -> TestServer {
    TestServer::start_with(move |c: &mut Config| c.limits = limits).await
}

/// `tokend_connections` and `tokend_connections_refused_total`, scraped.
async fn connections(server: &TestServer) -> (f64, f64) {
    let (_, body) = scrape(server, "/metrics").await;
    (value(&body, "tokend_connections"), value(&body, "tokend_connections_refused_total"))
}

/// Polls until `check` holds, for at most `limit`.
async fn eventually<F: Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// How long until the server closes `conn` (reads EOF or an error), at most
/// `limit`; `None` if it stays open.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {} // the server's SETTINGS and the like
        }
    }
}

/// An HTTP/2 connection of our own (the `h2` crate), so a test knows
/// whether the server kept *this* connection; tonic's channels reconnect.
async fn h2_connect(addr: std::net::SocketAddr) -> (SendRequest<Bytes>, H2Connection) {
    h2_over(TcpStream::connect(addr).await.unwrap()).await
}

/// The task driving an `h2` client connection.
type H2Connection = tokio::task::JoinHandle<Result<(), h2::Error>>;

/// HTTP/2 over a connection already made (from a chosen address, say).
async fn h2_over(tcp: TcpStream) -> (SendRequest<Bytes>, H2Connection) {
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

/// `grpc.health.v1.Health/Check` on `send`'s connection: the gRPC status.
async fn health_check(send: &SendRequest<Bytes>) -> Result<String, h2::Error> {
    unary(send, "/grpc.health.v1.Health/Check", &[], &[]).await
}

/// A unary gRPC call on `send`'s connection, with `headers` added: the
/// gRPC status, from the trailers or a trailers-only response.
async fn unary(
    send: &SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> Result<String, h2::Error> {
    let mut request = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut ready = send.clone().ready().await?;
    let (response, mut body) = ready.send_request(request.body(()).unwrap(), false)?;
    // Uncompressed, then the length.
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    body.send_data(Bytes::from(framed), true)?;
    let response = response.await?;
    let status = |headers: &http::HeaderMap| headers.get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    if let Some(code) = status(response.headers()) {
        return Ok(code);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    Ok(body.trailers().await?.as_ref().and_then(status).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_speak_are_closed_at_the_handshake_timeout_and_free_their_places() {
    let timeout = Duration::from_secs(1);
    let server = start(Limits { handshake_timeout: timeout, ..Limits::default() }).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    assert!(eventually(Duration::from_secs(2), || async { connections(&server).await.0 == 50.0 }).await);
    let opened = Instant::now();
    for conn in &mut idle {
        let limit = (timeout + Duration::from_secs(1)).saturating_sub(opened.elapsed());
        assert!(closed_within(conn, limit).await.is_some(), "an idle connection outlived the handshake timeout + 1 s");
    }
    // The server's side is gone too: every place under the cap is free.
    assert!(eventually(Duration::from_secs(1), || async { connections(&server).await.0 == 0.0 }).await);
    // …and a well-behaved client is served as before.
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, "tk_nonsense", &[]).await), pb::VerifyResult::Malformed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_headers_connection_is_closed_but_one_that_sent_a_request_may_idle() {
    let timeout = Duration::from_secs(1);
    let server = start(Limits { handshake_timeout: timeout, keepalive_interval: None, ..Limits::default() }).await;
    // Preface and SETTINGS, then never a request.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(&tokend::loadgen::client_start()).await.unwrap();
    // A sibling that makes one call and then sits idle, well past the timeout.
    let (sibling, connection) = h2_connect(server.addr).await;
    assert_eq!(health_check(&sibling).await.unwrap(), "0");

    let closed = closed_within(&mut slow, timeout + Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the slow-headers connection was not closed");
    tokio::time::sleep(timeout * 2).await;
    assert!(!connection.is_finished(), "the sibling's connection was closed");
    assert_eq!(health_check(&sibling).await.expect("the same connection still serves"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_closes_connections_past_it_at_once_keeps_serving_the_others_and_recovers() {
    let server = start(Limits { max_connections: 3, ..Limits::default() }).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (send, task) = h2_connect(server.addr).await;
        assert_eq!(health_check(&send).await.unwrap(), "0");
        held.push((send, task));
    }
    // admin's channel + two = 3: the fourth is closed at once.
    assert_eq!(connections(&server).await, (3.0, 0.0));
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let closed = closed_within(&mut refused, Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the connection past the cap was not closed at once");
    assert_eq!(connections(&server).await, (3.0, 1.0));
    // Existing connections are still served.
    for (send, _) in &held {
        assert_eq!(health_check(send).await.unwrap(), "0");
    }
    issue(&mut admin, "still", "team", &[]).await;
    // One goes; its place is free for a new connection.
    let (send, task) = held.pop().unwrap();
    drop(send);
    task.abort();
    assert!(eventually(Duration::from_secs(2), || async { connections(&server).await.0 == 2.0 }).await);
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &token, &[]).await), pb::VerifyResult::Ok);
    assert_eq!(connections(&server).await, (3.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_drops_a_peer_that_stops_answering_and_keeps_a_live_idle_one() {
    let (interval, timeout) = (Duration::from_millis(300), Duration::from_millis(300));
    let server =
        start(Limits { keepalive_interval: Some(interval), keepalive_timeout: timeout, ..Limits::default() }).await;
    let proxy = Proxy::start(server.addr).await;
    let (through_proxy, _cut) = h2_connect(proxy.addr).await;
    assert_eq!(health_check(&through_proxy).await.unwrap(), "0");
    let (live, live_connection) = h2_connect(server.addr).await;
    assert_eq!(health_check(&live).await.unwrap(), "0");
    assert_eq!(connections(&server).await.0, 2.0);

    // The proxy goes silent: no FIN, no RST, pings unanswered.
    proxy.forward(false);
    let dropped =
        eventually(interval + timeout + Duration::from_secs(2), || async { connections(&server).await.0 == 1.0 }).await;
    assert!(dropped, "the silent peer was not dropped by keepalive");
    // The live connection answered every ping and is still the same one.
    tokio::time::sleep(interval * 3).await;
    assert!(!live_connection.is_finished());
    assert_eq!(health_check(&live).await.expect("the idle live connection is kept"), "0");
    assert_eq!(connections(&server).await.0, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_is_announced_in_settings() {
    let server = start(Limits { max_concurrent_streams: 7, ..Limits::default() }).await;
    let (send, _connection) = h2_connect(server.addr).await;
    // The server's SETTINGS have arrived once a call has completed.
    assert_eq!(health_check(&send).await.unwrap(), "0");
    assert_eq!(send.current_max_send_streams(), 7);
    let default = start(Limits::default()).await;
    let (send, _connection) = h2_connect(default.addr).await;
    assert_eq!(health_check(&send).await.unwrap(), "0");
    assert_eq!(send.current_max_send_streams(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_metadata_is_refused_without_affecting_other_clients() {
    let server = start(Limits { max_header_bytes: 4096, ..Limits::default() }).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut other = server.verifier().await;
    let mut client = server.verifier().await;
    let request = |padding: usize| {
        let mut request = tonic::Request::new(pb::VerifyRequest {
            token: token.clone(),
            required_scopes: vec![],
            ..Default::default()
        });
        request.metadata_mut().insert("x-padding", "a".repeat(padding).parse().unwrap());
        request
    };
    // Under the limit: served.
    let fits = client.verify(request(3000)).await.expect("3 KB of metadata fits in 4 KiB");
    assert!(fits.into_inner().valid);
    // Over it, repeatedly: refused, while another connection verifies.
    for _ in 0..20 {
        let refused = client.verify(request(6000)).await.expect_err("6 KB of metadata over a 4 KiB limit was served");
        // HTTP 431 from the HTTP/2 layer, before any handler: gRPC clients
        // report it as UNKNOWN naming the HTTP status.
        assert_eq!(refused.code(), Code::Unknown, "{refused:?}");
        assert!(refused.message().contains("431"), "{refused:?}");
        assert_eq!(result(&verify(&mut other, &token, &[]).await), pb::VerifyResult::Ok);
    }
    // The refused client itself is served again with normal metadata.
    assert!(client.verify(request(10)).await.expect("served again").into_inner().valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_gets_goaway_and_other_clients_keep_verifying() {
    let server = start(Limits::default()).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut other = server.verifier().await;
    for round in 0..5 {
        let mut attacker = TcpStream::connect(server.addr).await.unwrap();
        let mut flood = tokend::loadgen::client_start();
        flood.extend(tokend::loadgen::rapid_reset_burst(1, 2_000));
        // The server may close while the flood is still being written.
        let _ = attacker.write_all(&flood).await;
        let answer = tokend::loadgen::read_until_goaway(&mut attacker, Duration::from_secs(5)).await;
        assert_eq!(answer, Some(tokend::loadgen::ENHANCE_YOUR_CALM), "round {round}: no GOAWAY ENHANCE_YOUR_CALM");
        assert!(closed_within(&mut attacker, Duration::from_secs(2)).await.is_some(), "the abuser stayed connected");
        assert_eq!(result(&verify(&mut other, &token, &[]).await), pb::VerifyResult::Ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_get_a_deadline_and_are_shed_past_the_inflight_bound_while_verify_is_untouched() {
    // A database that goes silent makes admin writes hang for real.
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", pg.port).parse().unwrap()).await;
    let via_proxy = url.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.addr.port()));
    let admin_secret = Secret::generate("tk");
    let mut config = Config::new("unused-with-postgres");
    config.postgres = Some(PostgresOptions { timeout: Duration::from_secs(30), ..PostgresOptions::new(&via_proxy) });
    config.clock = Clock::manual(START);
    config.bootstrap_token = Some(admin_secret.clone());
    let admin_timeout = Duration::from_secs(1);
    config.limits = Limits { admin_timeout, max_admin_inflight: 2, ..Limits::default() };
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_in(dir, config, admin_secret.expose().to_owned()).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut v = server.verifier().await;

    proxy.forward(false);
    // The proxy finishes a read already under way (≤ 20 ms).
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server's deadline.
    let started = Instant::now();
    let late = admin.issue(issue_request("late", "team", &[])).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(took >= admin_timeout && took < admin_timeout * 2, "answered after {took:?}");
    // The client's grpc-timeout, when sooner, wins with the same code. (A
    // raw call: tonic's client would give up on its own first.)
    let (raw, _connection) = h2_connect(server.addr).await;
    let bearer = format!("Bearer {}", admin_secret.expose());
    let headers = [("authorization", bearer.as_str()), ("grpc-timeout", "200m")];
    let message = prost::Message::encode_to_vec(&issue_request("hurried", "team", &[]));
    let started = Instant::now();
    let code = unary(&raw, "/tokend.v1.TokenService/Issue", &headers, &message).await.unwrap();
    assert_eq!(code, "4", "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_millis(800), "the client's deadline was not honoured");

    // Two calls hang in flight; the third is refused at once.
    let hanging: Vec<_> = (0..2)
        .map(|i| {
            let mut admin = admin.clone();
            tokio::spawn(async move { admin.issue(issue_request(&format!("hang-{i}"), "team", &[])).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let shed = admin.get(pb::GetRequest { id: "tok_00000000000000000000000000".into() }).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(started.elapsed() < Duration::from_millis(300), "the refusal was not immediate");
    // Verify is never shed.
    for _ in 0..100 {
        assert_eq!(result(&verify(&mut v, &token, &[]).await), pb::VerifyResult::Ok);
    }
    for call in hanging {
        assert_eq!(call.await.unwrap().unwrap_err().code(), Code::DeadlineExceeded);
    }
    let (_, body) = scrape(&server, "/metrics").await;
    assert_eq!(value(&body, r#"tokend_admin_requests_total{rpc="Issue",code="DEADLINE_EXCEEDED"}"#), 4.0);
    assert_eq!(value(&body, r#"tokend_admin_requests_total{rpc="Get",code="RESOURCE_EXHAUSTED"}"#), 1.0);

    // The database answers again: so does the admin plane, its places freed.
    proxy.forward(true);
    let back = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { admin.issue(issue_request("back", "team", &[])).await.is_ok() }
    })
    .await;
    assert!(back, "the admin plane did not recover");
}

/// Open descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_releases_the_descriptors_of_idle_connections_and_logs_the_cap_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut process =
        common::process::Process::serve(dir.path(), &["--handshake-timeout", "3s", "--max-connections", "200"]);
    let addr: std::net::SocketAddr = process.addr().parse().unwrap();
    let pid = process.child.id();
    let before = descriptors(pid);
    let mut idle = Vec::new();
    let opened = Instant::now();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // 200 held, 100 closed at once. (Waited for rather than slept on: a
    // busy machine may take a while to accept them all, well within the
    // handshake timeout.)
    let settled = eventually(Duration::from_secs(2), || async { (200..210).contains(&(descriptors(pid) - before)) });
    assert!(settled.await, "{} descriptors held for 200 admitted connections", descriptors(pid) - before);
    assert!(opened.elapsed() < Duration::from_secs(3), "counted before the handshake timeout");
    // Past the timeout every one is closed, and the descriptors are back.
    let released = eventually(Duration::from_secs(6), || async { descriptors(pid) <= before + 2 }).await;
    assert!(released, "{} descriptors still open, {before} before", descriptors(pid));
    for conn in &mut idle {
        assert!(closed_within(conn, Duration::from_millis(100)).await.is_some());
    }
    process.terminate();
    let log = process.log();
    let warnings = log.lines().filter(|l| l.contains("connection limit reached")).count();
    // The first refusal is reported at once, the rest no sooner than 10 s later.
    assert_eq!(warnings, 1, "one rate-limited warning for 100 refusals:\n{log}");
    assert!(log.contains("limit=200"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_flooding_is_cooled_down_and_its_neighbours_are_not() {
    use tokend::loadgen::{ATTACKER, client_start, connect_from, rapid_reset_burst, read_until_goaway};
    let cooldown = Duration::from_secs(3);
    let server = start(Limits { abuse_cooldown: cooldown, ..Limits::default() }).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut flood = client_start();
    flood.extend(rapid_reset_burst(1, 1_000));
    // A connection from the attacker made before the floods keeps being served.
    let (early, _connection) = h2_over(connect_from(ATTACKER, server.addr).await.unwrap()).await;
    assert_eq!(health_check(&early).await.unwrap(), "0");
    for strike in 0..tokend::conn::abuse::STRIKES {
        let mut attacker = connect_from(ATTACKER, server.addr).await.unwrap();
        let _ = attacker.write_all(&flood).await;
        let answer = read_until_goaway(&mut attacker, Duration::from_secs(5)).await;
        assert_eq!(answer, Some(tokend::loadgen::ENHANCE_YOUR_CALM), "strike {strike}");
    }
    // The strike is recorded just after the GOAWAY's bytes are written: the
    // attacker can read them a moment before.
    let server_ref = &server;
    let struck = eventually(Duration::from_secs(2), || async move {
        value(&scrape(server_ref, "/metrics").await.1, "tokend_connections_abusive_total")
            == f64::from(tokend::conn::abuse::STRIKES)
    })
    .await;
    assert!(struck, "every GOAWAY ENHANCE_YOUR_CALM was a strike");
    let cooling_since = Instant::now();
    // Now the kernel drops the attacker's SYNs: its connect does not complete.
    let attempt = tokio::time::timeout(Duration::from_secs(1), connect_from(ATTACKER, server.addr)).await;
    assert!(attempt.is_err(), "a connection from the cooled-down peer completed: {attempt:?}");
    assert_eq!(health_check(&early).await.expect("its open connection is still served"), "0");
    // Another peer connects and verifies as before.
    let mut v = server.verifier().await;
    assert_eq!(result(&verify(&mut v, &token, &[]).await), pb::VerifyResult::Ok);
    let (_, body) = scrape(&server, "/metrics").await;
    assert_eq!(value(&body, "tokend_connections_abusive_total"), f64::from(tokend::conn::abuse::STRIKES));
    // After the cooldown the peer is let in again.
    tokio::time::sleep((cooldown + Duration::from_millis(200)).saturating_sub(cooling_since.elapsed())).await;
    let tcp = tokio::time::timeout(Duration::from_secs(1), connect_from(ATTACKER, server.addr))
        .await
        .expect("the peer is let in after its cooldown")
        .unwrap();
    let (again, _connection) = h2_over(tcp).await;
    assert_eq!(health_check(&again).await.unwrap(), "0");

    // With the cooldown off, the same floods are answered, never refused.
    let lenient = start(Limits { abuse_cooldown: Duration::ZERO, ..Limits::default() }).await;
    for _ in 0..tokend::conn::abuse::STRIKES + 2 {
        let mut attacker = connect_from(ATTACKER, lenient.addr).await.unwrap();
        let _ = attacker.write_all(&flood).await;
        let answer = read_until_goaway(&mut attacker, Duration::from_secs(5)).await;
        assert_eq!(answer, Some(tokend::loadgen::ENHANCE_YOUR_CALM));
    }
}

/// One HTTP/2 frame on stream `stream`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_header_block_is_answered_goaway_enhance_your_calm() {
    let server = start(Limits::default()).await;
    let mut admin = server.admin().await;
    let token = issue(&mut admin, "t", "team", &[]).await.secret;
    let mut v = server.verifier().await;
    // :method POST, :scheme http, :path, then a 64 KiB literal header value
    // (HPACK integers past 127 continue in 7-bit groups).
    let mut block = vec![0x83, 0x86, 0x04, 31];
    block.extend_from_slice(b"/tokend.v1.VerifyService/Verify");
    block.extend_from_slice(&[0x00, 5]);
    block.extend_from_slice(b"x-pad");
    let mut len = 64 * 1024 - 127;
    block.push(0x7f);
    while len >= 128 {
        block.push((len % 128) as u8 | 0x80);
        len /= 128;
    }
    block.push(len as u8);
    block.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut bytes = tokend::loadgen::client_start();
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 }; // HEADERS, then CONTINUATION
        let flags = if i + 1 == pieces.len() { 0x4 } else { 0 }; // END_HEADERS on the last
        bytes.extend(frame(kind, flags, 1, piece));
    }
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let _ = conn.write_all(&bytes).await;
    let answer = tokend::loadgen::read_until_goaway(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(answer, Some(tokend::loadgen::ENHANCE_YOUR_CALM));
    assert_eq!(result(&verify(&mut v, &token, &[]).await), pb::VerifyResult::Ok);
}
