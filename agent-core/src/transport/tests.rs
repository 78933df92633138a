use std::format;
use std::prelude::rust_2024::*;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A WebSocket connection over loopback: (client side, server side), both with [`ws_config`].
async fn ws_pair() -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config()))
            .await
            .unwrap()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/api/tunnel"),
        tcp,
        Some(ws_config()),
    )
    .await
    .unwrap();
    (ws, server.await.unwrap())
}

async fn pair() -> ((MuxHandle, Incoming), (MuxHandle, Incoming)) {
    let (client, server) = ws_pair().await;
    (
        spawn_mux(client, Mode::Client, None),
        spawn_mux(server, Mode::Server, Some(Keepalive::default())),
    )
}

#[tokio::test]
async fn streams_flow_both_ways_with_half_close() {
    let ((client, mut client_in), (server, mut server_in)) = pair().await;

    // agent-opened stream: write, FIN, read the peer's answer after our FIN
    let mut s = client.open().await.unwrap();
    s.write_all(b"hello relay").await.unwrap();
    s.shutdown().await.unwrap();
    let mut peer = server_in.recv().await.unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello relay");
    peer.write_all(b"answer after fin").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"answer after fin");

    // relay-opened stream carrying more than one window (256 KiB) of data
    let mut r = server.open().await.unwrap();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        r.write_all(&data).await.unwrap();
        r.shutdown().await.unwrap();
    });
    let mut a = client_in.recv().await.unwrap();
    let mut got = Vec::new();
    a.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

#[tokio::test]
async fn close_code_4000_reaches_the_peer() {
    let ((client, _client_in), (server, _server_in)) = pair().await;
    server.close(Some((CLOSE_SESSION_CLOSED, CLOSE_SESSION_CLOSED_REASON)));
    let end = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .unwrap();
    assert!(end.is_session_closed(), "{end:?}");
    assert_eq!(end.close_reason, "session_closed");
    tokio::time::timeout(Duration::from_secs(10), server.closed())
        .await
        .unwrap();
    assert!(client.open().await.is_err());
}

#[tokio::test]
async fn dropping_the_peer_ends_the_connection_without_a_close_code() {
    let ((client, _client_in), (server, server_in)) = pair().await;
    client.close(None);
    drop(server_in);
    let end = tokio::time::timeout(Duration::from_secs(10), server.closed())
        .await
        .unwrap();
    assert_eq!(end.close_code.filter(|c| *c == CLOSE_SESSION_CLOSED), None);
}

#[tokio::test]
async fn read_ahead_delivers_every_byte_and_holds_no_buffer_when_dry() {
    let (mut writer, reader) = tokio::io::duplex(256 * 1024);
    let mut reader = ReadAhead::new(reader);
    // a small exchange goes straight through
    writer.write_all(b"ping").await.unwrap();
    let mut small = [0u8; 4096];
    let n = reader.read(&mut small).await.unwrap();
    assert_eq!(&small[..n], b"ping");
    assert!(!reader.is_buffering());
    // a transfer is read ahead, in order, in 4 KiB reads like tungstenite's
    let sent: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    writer.write_all(&sent).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < sent.len() {
        let n = reader.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == sent);
    // dry: the chunk is given back once a read finds nothing after a small fill
    writer.write_all(b"tail").await.unwrap();
    let n = reader.read(&mut chunk).await.unwrap();
    assert_eq!(&chunk[..n], b"tail");
    let pending = std::future::poll_fn(|cx| {
        let mut rb = tokio::io::ReadBuf::new(&mut chunk);
        let polled = tokio::io::AsyncRead::poll_read(Pin::new(&mut reader), cx, &mut rb);
        Poll::Ready(polled.is_pending())
    })
    .await;
    assert!(pending);
    assert!(!reader.is_buffering());
    drop(writer);
    assert_eq!(reader.read(&mut chunk).await.unwrap(), 0);
}

#[tokio::test]
async fn frames_queued_together_share_one_websocket_message() {
    let (ws, mut raw) = ws_pair().await;
    let (client, _incoming) = spawn_mux(ws, Mode::Client, None);

    // One data frame per stream, all queued before the driver runs again.
    const STREAMS: usize = 32;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(client.open().await.unwrap());
    }
    for s in &mut streams {
        s.write_all(b"x").await.unwrap();
    }

    let (mut buf, mut data_frames, mut messages) = (Vec::new(), 0, 0);
    while data_frames < STREAMS {
        match raw.next().await.unwrap().unwrap() {
            Message::Binary(b) => {
                messages += 1;
                buf.extend_from_slice(&b);
            }
            other => std::panic!("unexpected message {other:?}"),
        }
        // yamux header: version, type, flags (2), stream id (4), length (4); data frames
        // (type 0) carry `length` bytes of body.
        while buf.len() >= 12 {
            let body = match buf[1] {
                0 => u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize,
                _ => 0,
            };
            if buf.len() < 12 + body {
                break;
            }
            if buf[1] == 0 {
                data_frames += 1;
            }
            buf.drain(..12 + body);
        }
    }
    assert!(
        messages <= 2,
        "{STREAMS} frames queued together took {messages} WebSocket messages"
    );
}
