//! The HTTP server over a real socket: its own limits, before any route runs
//! (connections held, heads and bodies refused by size, heads that take too
//! long, a bounded shutdown, the headers every answer carries).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Engine;
use orchestrator::api::limits::Limits;
use orchestrator::api::{Tokens, serve_within};
use skald_testkit::Backend;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    _engine: Engine,
}

async fn server(limits: Limits) -> Server {
    let engine = Engine::new(Backend::Sqlite, &[]).await;
    let app = engine.router(Tokens::none(), "test-1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_within(listener, app, stop.clone(), limits));
    Server { addr, stop, task, _engine: engine }
}

/// Send `request` on a new connection and read the answer until `within`
/// passes or the server closes: what came back.
async fn exchange(addr: SocketAddr, request: &str, within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let s = server(Limits::default()).await;
    for path in ["/v1/sagas", "/healthz", "/openapi.json", "/no/such/route"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = exchange(s.addr, &request, Duration::from_secs(5)).await.to_lowercase();
        for header in [
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: same-origin",
        ] {
            assert!(answer.contains(header), "{path}: no `{header}` in {answer}");
        }
        if answer.contains("content-type: application/json") {
            assert!(answer.contains("content-security-policy: default-src 'none'"), "{answer}");
        }
    }
    s.stop.cancel();
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let s = server(Limits::default()).await;
    // The headers promise 100 MB and nothing follows: the answer must not wait for it.
    let request = "POST /v1/definitions/validate HTTP/1.1\r\nHost: x\r\n\
                   Content-Type: application/yaml\r\nContent-Length: 100000000\r\n\r\n";
    let started = Instant::now();
    let answer = exchange(s.addr, request, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "a JSON error body: {answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered without the body");
    s.stop.cancel();
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let s = server(Limits { connections_max: 2, ..Limits::default() }).await;
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let idle_a = TcpStream::connect(s.addr).await.unwrap();
    let idle_b = TcpStream::connect(s.addr).await.unwrap();
    // Let the server accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = exchange(s.addr, health, Duration::from_millis(500)).await;
    assert!(waiting.is_empty(), "a third connection was served: {waiting}");
    drop(idle_a);
    let answer = exchange(s.addr, health, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle_b);
    s.stop.cancel();
}

/// A client that never finishes its request's headers (or body) holds its
/// connection open; a shutdown waits for it only as long as the grace.
async fn shutdown_with_a_stalled_client(grace: Duration, stalled: &[u8]) -> Duration {
    let s = server(Limits { shutdown_grace: grace, ..Limits::default() }).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(stalled).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    s.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("the server stopped within the grace")
        .unwrap();
    stopping.elapsed()
}

#[tokio::test]
async fn a_half_sent_request_cannot_hold_the_shutdown() {
    let grace = Duration::from_millis(300);
    let half_headers = b"POST /v1/definitions/validate HTTP/1.1\r\nHost: x\r\nContent-Le";
    let took = shutdown_with_a_stalled_client(grace, half_headers).await;
    assert!(took >= grace, "the server waited for the request first ({took:?})");
    let half_body = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"half";
    shutdown_with_a_stalled_client(grace, half_body).await;
}

/// A connection on which nothing moves for the idle timeout is closed — an
/// idle one, and one whose request stopped half-way — and frees its place
/// under the connection limit; a connection in use is not.
#[tokio::test]
async fn idle_and_stalled_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let idle = Duration::from_millis(400);
    let s = server(Limits { idle_timeout: idle, connections_max: 2, ..Limits::default() }).await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Le").await.unwrap();
    for stream in [&mut silent, &mut stalled] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection was not closed: {read:?}");
    }
    // Their places are free again: a new connection is served.
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = exchange(s.addr, health, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop.cancel();
}

#[tokio::test]
async fn a_head_that_trickles_in_is_closed() {
    // One byte every 100 ms keeps the idle timeout away for ever; the header
    // timeout bounds the whole head.
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let s = server(limits).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut closed = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            assert!(matches!(read, Ok(0) | Err(_)), "an answer to half a head: {read:?}");
            closed = true;
            break;
        }
    }
    assert!(closed, "a head trickling in for {:?} was not cut off", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "cut off late: {:?}", started.elapsed());
    s.stop.cancel();
}

#[tokio::test]
async fn heads_over_the_limits_get_json_errors() {
    use orchestrator::api::limits::{HEADER_BYTES_MAX, HEADERS_MAX, URI_BYTES_MAX};
    let s = server(Limits::default()).await;
    let long_target = format!("/v1/sagas?q={}", "a".repeat(URI_BYTES_MAX));
    let many = (0..=HEADERS_MAX).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let large = format!("X-Large: {}\r\n", "b".repeat(HEADER_BYTES_MAX));
    for (request, status, code) in [
        (
            format!("GET {long_target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            "414",
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many}\r\n"),
            "431",
            "headers_too_large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{large}\r\n"),
            "431",
            "headers_too_large",
        ),
    ] {
        let answer = exchange(s.addr, &request, Duration::from_secs(5)).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.to_lowercase().contains("content-type: application/json"), "{answer}");
        assert!(answer.contains(&format!("\"code\":\"{code}\"")), "{answer}");
    }
    s.stop.cancel();
}
