//! The HTTP server every service answers through (`serve_http`), driven over raw TCP: a client
//! that never finishes its headers is cut off, a request that never finishes its body is
//! answered 408, a connection over the limit is closed unserved, and every request knows its
//! peer's address.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use smartflow_service::{serve_http, HttpLimits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A bound on waiting for the server, so that a broken limit fails the test instead of hanging
/// it; reached only then. No test measures how long anything took.
const PATIENCE: Duration = Duration::from_secs(60);
/// Long enough never to fire during a test that is not about it.
const NEVER_MS: u64 = 600_000;

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Self {
        let router =
            Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route(
                    "/peer",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        peer.ip().to_string()
                    }),
                )
                .route("/echo", post(|body: String| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve_http(listener, router, limits, stop.clone()));
        Self { addr, stop, served }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.served)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

fn limits(header_ms: u64, request_ms: u64, connections: usize) -> HttpLimits {
    HttpLimits {
        http_header_read_timeout_ms: header_ms,
        http_request_timeout_ms: request_ms,
        http_max_connections: connections,
    }
}

/// Sends `bytes` on `stream` and reads until the server closes it.
async fn send_and_read_to_end(stream: &mut TcpStream, bytes: &[u8]) -> String {
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads what the server sends first, without waiting for it to close the connection.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

const GET_OK: &[u8] = b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = Server::start(limits(200, NEVER_MS, 16)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let answer = send_and_read_to_end(&mut slow, b"GET /ok HTTP/1.1\r\nHost: t\r\n").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A client that sends its headers is served.
    let mut quick = TcpStream::connect(server.addr).await.unwrap();
    let answer = send_and_read_to_end(&mut quick, GET_OK).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_408() {
    let server = Server::start(limits(NEVER_MS, 200, 16)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let answer = read_answer(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A whole body is echoed.
    let mut quick = TcpStream::connect(server.addr).await.unwrap();
    let answer = send_and_read_to_end(
        &mut quick,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello"),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_is_closed_unserved() {
    let server = Server::start(limits(NEVER_MS, NEVER_MS, 1)).await;
    // The first connection is served and kept open (keep-alive), so it holds the one place.
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first
        .write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    let mut second = TcpStream::connect(server.addr).await.unwrap();
    let answer = send_and_read_to_end(&mut second, GET_OK).await;
    assert_eq!(answer, "", "a connection over the limit is not served");

    // Once the first goes, its place is free again.
    drop(first);
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut next = TcpStream::connect(server.addr).await.unwrap();
            if send_and_read_to_end(&mut next, GET_OK)
                .await
                .starts_with("HTTP/1.1 200 OK")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a connection is served again once the first closed");
    server.stop().await;
}

#[tokio::test]
async fn every_request_knows_its_peer() {
    let server = Server::start(HttpLimits::default()).await;
    let answer = reqwest::get(format!("http://{}/peer", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(answer, "127.0.0.1");
    server.stop().await;
}
