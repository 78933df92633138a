use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use alloc::string::ToString;

use super::*;

/// A line of exactly `len` bytes including its '\n'.
fn line_of(len: usize) -> Vec<u8> {
    let mut line = vec![b'a'; len - 1];
    line.push(b'\n');
    line
}

#[test]
fn accepts_header_of_1023_and_1024_bytes() {
    assert_eq!(find_line(&line_of(1023)), Ok(Some(1023)));
    assert_eq!(find_line(&line_of(1024)), Ok(Some(1024)));
}

#[test]
fn rejects_header_over_1024_bytes() {
    assert_eq!(find_line(&line_of(1025)), Err(WireError::LineTooLong));
    assert_eq!(find_line(&[b'a'; 1024]), Err(WireError::LineTooLong));
}

#[test]
fn waits_for_more_bytes_of_an_unterminated_line() {
    assert_eq!(find_line(b""), Ok(None));
    assert_eq!(find_line(b"CONNECT web"), Ok(None));
    assert_eq!(find_line(&[b'a'; 1023]), Ok(None));
}

#[test]
fn finds_only_the_first_line() {
    assert_eq!(find_line(b"OK\nraw bytes\n"), Ok(Some(3)));
}

#[test]
fn line_text_strips_newline_and_one_carriage_return() {
    assert_eq!(line_text(b"CONNECT web\n"), Ok("CONNECT web"));
    assert_eq!(line_text(b"CONNECT web\r\n"), Ok("CONNECT web"));
    assert_eq!(line_text(b"OK\r\r\n"), Ok("OK\r"));
    assert_eq!(line_text(b"partial"), Ok("partial"));
    assert_eq!(line_text(b"\xff\xfe\n"), Err(WireError::NotUtf8));
}

#[test]
fn parses_replies() {
    assert_eq!(Reply::parse("OK"), Ok(Reply::Ok));
    assert_eq!(Reply::parse("ERROR"), Ok(Reply::Error(String::new())));
    assert_eq!(
        Reply::parse("ERROR service not found: web"),
        Ok(Reply::Error("service not found: web".into()))
    );
    assert!(matches!(Reply::parse("OKAY"), Err(WireError::BadReply(_))));
    assert!(matches!(Reply::parse("ok"), Err(WireError::BadReply(_))));
    assert!(matches!(Reply::parse(""), Err(WireError::BadReply(_))));
}

#[test]
fn encodes_replies() {
    assert_eq!(Reply::Ok.encode(), b"OK\n");
    assert_eq!(Reply::Error("no".into()).encode(), b"ERROR no\n");
    assert_eq!(Reply::Error(String::new()).encode(), b"ERROR\n");
}

#[test]
fn reply_text_newlines_become_spaces() {
    let encoded = Reply::Error("a\nb\r\nc".into()).encode();
    assert_eq!(encoded, b"ERROR a b  c\n");
    let (n, text) = (find_line(&encoded), line_text(&encoded));
    assert_eq!(n, Ok(Some(encoded.len())));
    assert_eq!(
        Reply::parse(text.unwrap()),
        Ok(Reply::Error("a b  c".into()))
    );
}

#[test]
fn long_reply_is_cut_at_a_char_boundary_within_max_line() {
    let text: String = core::iter::repeat_n('é', 2000).collect();
    let encoded = Reply::Error(text).encode();
    assert!(encoded.len() <= MAX_LINE);
    assert!(encoded.len() >= MAX_LINE - 1);
    assert_eq!(find_line(&encoded), Ok(Some(encoded.len())));
    let parsed = Reply::parse(line_text(&encoded).unwrap()).unwrap();
    let Reply::Error(kept) = parsed else {
        panic!("expected an error reply")
    };
    assert!(kept.chars().all(|c| c == 'é'));

    let ascii = Reply::Error("x".repeat(5000)).encode();
    assert_eq!(ascii.len(), MAX_LINE);
}

#[test]
fn parses_relay_streams() {
    assert_eq!(
        RelayStream::parse("CONNECT web-ui.1_a"),
        Ok(RelayStream::Connect("web-ui.1_a".into()))
    );
    assert_eq!(
        RelayStream::parse("CONNECT terminal"),
        Ok(RelayStream::Terminal)
    );
    assert_eq!(RelayStream::parse("COMMAND 1"), Ok(RelayStream::Command));
}

#[test]
fn refuses_bad_relay_streams() {
    assert_eq!(
        RelayStream::parse("COMMAND 2"),
        Err(WireError::UnsupportedCommandVersion("2".into()))
    );
    assert_eq!(
        RelayStream::parse("CONNECT ../etc"),
        Err(WireError::BadServiceName("../etc".into()))
    );
    assert_eq!(
        RelayStream::parse("CONNECT "),
        Err(WireError::BadServiceName(String::new()))
    );
    assert_eq!(
        RelayStream::parse("CONNECT a b"),
        Err(WireError::BadServiceName("a b".into()))
    );
    assert_eq!(
        RelayStream::parse("HELLO"),
        Err(WireError::UnknownStream("HELLO".into()))
    );
    assert_eq!(
        RelayStream::parse("CONNECT"),
        Err(WireError::UnknownStream("CONNECT".into()))
    );
}

#[test]
fn relay_stream_headers_round_trip() {
    for stream in [
        RelayStream::Connect("web".into()),
        RelayStream::Terminal,
        RelayStream::TerminalFor("alice.ops-1".into()),
        RelayStream::Command,
    ] {
        let header = stream.header();
        assert!(header.ends_with('\n'));
        let n = find_line(header.as_bytes()).unwrap().unwrap();
        assert_eq!(n, header.len());
        let text = line_text(header.as_bytes()).unwrap();
        assert_eq!(RelayStream::parse(text), Ok(stream));
    }
    assert_eq!(RelayStream::Command.header(), "COMMAND 1\n");
    assert_eq!(RelayStream::Terminal.header(), "CONNECT terminal\n");
}

#[test]
fn error_text_of_bad_command_version_matches_the_reference() {
    let err = RelayStream::parse("COMMAND 7").unwrap_err();
    assert_eq!(err.to_string(), "unsupported command version \"7\"");
}

#[test]
fn classifies_agent_streams() {
    assert_eq!(
        AgentStream::classify(b"{\"version\":1}"),
        Ok(Some((AgentStream::Manifest, 0)))
    );
    assert_eq!(
        AgentStream::classify(b" \n{"),
        Ok(Some((AgentStream::Manifest, 0)))
    );
    assert_eq!(
        AgentStream::classify(b"DIAGNOSTICS 1\n{}"),
        Ok(Some((AgentStream::Diagnostics, 14)))
    );
    assert_eq!(
        AgentStream::classify(b"USERS 1\n{}"),
        Ok(Some((AgentStream::Users, 8)))
    );
    assert_eq!(
        AgentStream::classify(b"USERS_FETCH 1\n"),
        Ok(Some((AgentStream::UsersFetch, 14)))
    );
    // strings.Fields(TrimSpace(line)) in the reference tolerates extra blanks.
    assert_eq!(
        AgentStream::classify(b"USERS  1 \r\n"),
        Ok(Some((AgentStream::Users, 11)))
    );
}

#[test]
fn classify_waits_for_a_complete_header() {
    assert_eq!(AgentStream::classify(b""), Ok(None));
    assert_eq!(AgentStream::classify(b"U"), Ok(None));
    assert_eq!(AgentStream::classify(b"DIAGNOSTICS 1"), Ok(None));
}

#[test]
fn classify_refuses_unknown_headers() {
    for bad in [
        &b"USERS 2\n"[..],
        b"USERS\n",
        b"USERS 1 extra\n",
        b"DIAGNOSTICS\n",
        b"DIAG 1\n",
        b"CONNECT web\n",
        b"[1,2]",
    ] {
        assert!(
            matches!(AgentStream::classify(bad), Err(WireError::UnknownStream(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        AgentStream::classify(&[b'U'; 2000]),
        Err(WireError::LineTooLong)
    );
}

#[test]
fn agent_stream_headers_classify_as_themselves() {
    for kind in [
        AgentStream::Diagnostics,
        AgentStream::Users,
        AgentStream::UsersFetch,
    ] {
        let header = kind.header();
        assert_eq!(
            AgentStream::classify(header),
            Ok(Some((kind, header.len())))
        );
    }
    assert_eq!(AgentStream::Manifest.header(), b"");
}

fn all_frames() -> Vec<TerminalFrame> {
    vec![
        TerminalFrame::Data(b"ls -l\r".to_vec()),
        TerminalFrame::Data(Vec::new()),
        TerminalFrame::Data((0..=255).collect()),
        TerminalFrame::Resize { cols: 80, rows: 24 },
        TerminalFrame::Resize {
            cols: u16::MAX,
            rows: 1,
        },
        TerminalFrame::Error("session closed due to inactivity".into()),
    ]
}

#[test]
fn terminal_frames_round_trip_on_the_yamux_leg() {
    let mut stream = Vec::new();
    for frame in all_frames() {
        frame.encode(&mut stream);
    }
    let mut rest = stream.as_slice();
    let mut decoded = Vec::new();
    while let Some((frame, used)) = TerminalFrame::decode(rest, MAX_TERMINAL_FRAME_AGENT).unwrap() {
        decoded.push(frame);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(decoded, all_frames());
}

#[test]
fn terminal_frames_round_trip_on_the_browser_leg() {
    for frame in all_frames() {
        assert_eq!(TerminalFrame::from_message(&frame.to_message()), frame);
    }
}

#[test]
fn encodes_frames_as_the_reference_does() {
    let mut out = Vec::new();
    TerminalFrame::Data(b"hi".to_vec()).encode(&mut out);
    assert_eq!(out, [0, 0, 0, 3, 0, b'h', b'i']);
    assert_eq!(
        TerminalFrame::Resize { cols: 80, rows: 24 }.to_message(),
        b"\x01{\"cols\":80,\"rows\":24}"
    );
    let mut nothing = Vec::new();
    TerminalFrame::Ignored.encode(&mut nothing);
    assert!(nothing.is_empty());
    assert!(TerminalFrame::Ignored.to_message().is_empty());
}

#[test]
fn decode_waits_for_a_whole_frame() {
    let mut out = Vec::new();
    TerminalFrame::Data(b"hello".to_vec()).encode(&mut out);
    for cut in 0..out.len() {
        assert_eq!(
            TerminalFrame::decode(&out[..cut], MAX_TERMINAL_FRAME_RELAY),
            Ok(None)
        );
    }
    assert_eq!(
        TerminalFrame::decode(&out, MAX_TERMINAL_FRAME_RELAY),
        Ok(Some((TerminalFrame::Data(b"hello".to_vec()), out.len())))
    );
}

#[test]
fn ignores_empty_unknown_and_unusable_frames() {
    assert_eq!(
        TerminalFrame::decode(&[0, 0, 0, 0, 9], MAX_TERMINAL_FRAME_AGENT),
        Ok(Some((TerminalFrame::Ignored, 4)))
    );
    assert_eq!(
        TerminalFrame::decode(&[0, 0, 0, 2, 2, 7], MAX_TERMINAL_FRAME_AGENT),
        Ok(Some((TerminalFrame::Ignored, 6)))
    );
    for body in [
        &b"{\"cols\":0,\"rows\":24}"[..],
        b"{\"cols\":80,\"rows\":-1}",
        b"{\"cols\":70000,\"rows\":24}",
        b"{\"cols\":80}",
        b"{\"cols\":1.5,\"rows\":2}",
        b"not json",
    ] {
        let mut msg = vec![1];
        msg.extend_from_slice(body);
        assert_eq!(TerminalFrame::from_message(&msg), TerminalFrame::Ignored);
    }
    assert_eq!(TerminalFrame::from_message(b""), TerminalFrame::Ignored);
}

#[test]
fn resize_ignores_unknown_fields() {
    assert_eq!(
        TerminalFrame::from_message(b"\x01{\"rows\":24,\"cols\":80,\"x\":true}"),
        TerminalFrame::Resize { cols: 80, rows: 24 }
    );
}

#[test]
fn refuses_frames_over_the_limit_before_reading_them() {
    let relay_limit = u32::try_from(MAX_TERMINAL_FRAME_RELAY).unwrap();
    let over = (relay_limit + 1).to_be_bytes();
    assert_eq!(
        TerminalFrame::decode(&over, MAX_TERMINAL_FRAME_RELAY),
        Err(WireError::FrameTooLarge {
            len: MAX_TERMINAL_FRAME_RELAY + 1,
            max: MAX_TERMINAL_FRAME_RELAY
        })
    );
    // Exactly at the limit is fine (and incomplete here).
    assert_eq!(
        TerminalFrame::decode(&relay_limit.to_be_bytes(), MAX_TERMINAL_FRAME_RELAY),
        Ok(None)
    );
    assert!(matches!(
        TerminalFrame::decode(&[0xff; 8], MAX_TERMINAL_FRAME_AGENT),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn terminal_header_carries_a_v2_operator_name_and_refuses_odd_ones() {
    assert_eq!(
        RelayStream::parse("CONNECT terminal alice"),
        Ok(RelayStream::TerminalFor("alice".into()))
    );
    for bad in [
        "CONNECT terminal ",
        "CONNECT terminal a b",
        "CONNECT terminal al\u{e9}",
        "CONNECT terminal ;rm",
    ] {
        assert!(
            matches!(RelayStream::parse(bad), Err(WireError::BadServiceName(_))),
            "{bad:?}"
        );
    }
    let long = format!("CONNECT terminal {}", "a".repeat(MAX_OPERATOR_NAME + 1));
    assert!(RelayStream::parse(&long).is_err());
    let max = format!("CONNECT terminal {}", "a".repeat(MAX_OPERATOR_NAME));
    assert!(RelayStream::parse(&max).is_ok());
}
