use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

const WHAT: &str = "the agent did not answer CONNECT in time";

fn pair(timeout: Duration) -> (ConnectStream<DuplexStream>, Outcome, DuplexStream) {
    let (relay, agent) = duplex(64 * 1024);
    let (stream, outcome) = ConnectStream::new(relay, Instant::now() + timeout, WHAT);
    (stream, outcome, agent)
}

#[tokio::test]
async fn request_goes_out_before_ok_and_the_reply_line_is_never_seen() {
    let (mut s, outcome, mut agent) = pair(Duration::from_secs(5));
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut req = [0u8; 18];
    agent.read_exact(&mut req).await.unwrap();
    assert_eq!(&req, b"GET / HTTP/1.1\r\n\r\n");
    // the reply and the first response bytes arrive in one chunk
    agent.write_all(b"OK\nHTTP/1.1 200 OK\r\n").await.unwrap();
    agent.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"HTTP/1.1 200 OK\r\n");
    assert!(outcome.take().is_none());
}

#[tokio::test]
async fn a_refusal_fails_the_stream_and_says_why() {
    let (mut s, outcome, mut agent) = pair(Duration::from_secs(5));
    agent
        .write_all(b"ERROR failed to connect to 10.0.0.1:80: refused\nHTTP/1.1 200 OK\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(s.read(&mut buf).await.is_err());
    match outcome.take() {
        Some(TunnelError::Agent(text)) => {
            assert_eq!(text, "failed to connect to 10.0.0.1:80: refused")
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    assert!(s.write_all(b"more").await.is_err());
}

#[tokio::test]
async fn a_refusal_is_noticed_by_a_writer_blocked_on_the_window() {
    let (relay, mut agent) = duplex(64);
    let (mut s, outcome) = ConnectStream::new(relay, Instant::now() + Duration::from_secs(5), WHAT);
    agent
        .write_all(b"ERROR service not found: web\n")
        .await
        .unwrap();
    // the agent never reads: the write can only end through the reply
    let body = vec![b'x'; 4096];
    assert!(s.write_all(&body).await.is_err());
    assert!(matches!(outcome.take(), Some(TunnelError::Agent(_))));
}

#[tokio::test(start_paused = true)]
async fn no_reply_within_the_connect_timeout_is_a_timeout() {
    let (mut s, outcome, _agent) = pair(Duration::from_secs(10));
    let mut buf = [0u8; 8];
    assert!(s.read(&mut buf).await.is_err());
    assert!(matches!(outcome.take(), Some(TunnelError::Timeout(w)) if w == WHAT));
}

#[tokio::test]
async fn an_end_or_garbage_instead_of_a_reply_fails() {
    let (mut s, outcome, mut agent) = pair(Duration::from_secs(5));
    agent.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    assert!(s.read(&mut buf).await.is_err());
    assert!(matches!(outcome.take(), Some(TunnelError::Io(_))));

    let (mut s, outcome, mut agent) = pair(Duration::from_secs(5));
    agent.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
    assert!(s.read(&mut buf).await.is_err());
    assert!(matches!(outcome.take(), Some(TunnelError::Io(_))));

    let (mut s, outcome, mut agent) = pair(Duration::from_secs(5));
    agent.write_all(&vec![b'O'; MAX_LINE + 1]).await.unwrap();
    assert!(s.read(&mut buf).await.is_err());
    assert!(matches!(outcome.take(), Some(TunnelError::Io(_))));
}

#[tokio::test]
async fn accepted_waits_for_ok_and_keeps_what_follows() {
    let (mut s, _outcome, mut agent) = pair(Duration::from_secs(5));
    agent.write_all(b"OK\nhello").await.unwrap();
    s.accepted().await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");

    let (mut s, _outcome, mut agent) = pair(Duration::from_secs(5));
    agent.write_all(b"ERROR terminal disabled\n").await.unwrap();
    assert!(matches!(s.accepted().await, Err(TunnelError::Agent(t)) if t == "terminal disabled"));
}
