use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};

use super::recording::{Recorder, take_utf8};
use super::*;

fn grant(session: &str) -> Grant {
    Grant {
        operator_id: "op-1".into(),
        operator_name: "alice".into(),
        session_id: session.into(),
    }
}

#[test]
fn a_ticket_opens_its_session_once() {
    let tickets = Tickets::new(Duration::from_secs(30));
    let now = Instant::now();
    let t = tickets.issue(grant("s1"), now).unwrap();
    assert_eq!(t.len(), 64, "256 bits in hex");
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(t, tickets.issue(grant("s1"), now).unwrap());
    assert_eq!(tickets.redeem(&t, "s1", now), Ok(grant("s1")));
    assert_eq!(tickets.redeem(&t, "s1", now), Err(TicketError::Unknown));
}

#[test]
fn expired_foreign_and_forged_tickets_are_refused_and_used_up() {
    let tickets = Tickets::new(Duration::from_secs(30));
    let now = Instant::now();
    let t = tickets.issue(grant("s1"), now).unwrap();
    assert_eq!(
        tickets.redeem(&t, "s1", now + Duration::from_secs(31)),
        Err(TicketError::Expired)
    );
    let t = tickets.issue(grant("s1"), now).unwrap();
    assert_eq!(
        tickets.redeem(&t, "s2", now),
        Err(TicketError::WrongSession)
    );
    assert_eq!(tickets.redeem(&t, "s1", now), Err(TicketError::Unknown));
    let t = tickets.issue(grant("s1"), now).unwrap();
    let mut forged = t.clone().into_bytes();
    forged[0] = if forged[0] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "", "zz", &t[..63]] {
        assert_eq!(tickets.redeem(bad, "s1", now), Err(TicketError::Unknown));
    }
    assert_eq!(tickets.redeem(&t, "s1", now), Ok(grant("s1")));
}

#[test]
fn expired_tickets_are_forgotten_when_new_ones_are_issued() {
    let tickets = Tickets::new(Duration::from_millis(10));
    let now = Instant::now();
    for _ in 0..5 {
        tickets.issue(grant("s1"), now).unwrap();
    }
    tickets
        .issue(grant("s1"), now + Duration::from_secs(1))
        .unwrap();
    assert_eq!(tickets.inner.len(), 1);
}

#[test]
fn only_the_relays_own_origin_or_none_may_open_a_terminal() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("relay.example:8443"));
    assert!(origin_allowed(&h), "non-browser clients send no Origin");
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://relay.example:8443"),
    );
    assert!(origin_allowed(&h));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(!origin_allowed(&h));
    h.insert(header::ORIGIN, HeaderValue::from_static("null"));
    assert!(!origin_allowed(&h));
}

#[test]
fn split_characters_wait_for_their_last_byte() {
    let mut carry = Vec::new();
    let euro = "€".as_bytes();
    assert_eq!(take_utf8(&mut carry, &[b'a', euro[0]]), "a");
    assert_eq!(take_utf8(&mut carry, &euro[1..2]), "");
    assert_eq!(take_utf8(&mut carry, &[euro[2], b'b']), "€b");
    assert_eq!(take_utf8(&mut carry, &[0xff, b'c']), "\u{fffd}c");
    assert!(carry.is_empty());
}

#[tokio::test]
async fn recordings_are_asciicast_v2_with_input_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    for record_input in [false, true] {
        let name = format!("{record_input}.cast");
        let mut r = Recorder::create(
            dir.path(),
            &name,
            "t".into(),
            record_input,
            1_700_000_000_000,
        )
        .await
        .unwrap();
        r.resize(120, 40).await.unwrap();
        r.input(b"echo hi\r").await.unwrap();
        r.output(b"hi\r\n").await.unwrap();
        r.finish().await.unwrap();
        let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(
            (header["width"].clone(), header["height"].clone()),
            (120.into(), 40.into())
        );
        assert_eq!(header["timestamp"], 1_700_000_000);
        let events: Vec<serde_json::Value> =
            lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e[1].as_str().unwrap()).collect();
        if record_input {
            assert_eq!(kinds, ["r", "i", "o"]);
        } else {
            assert_eq!(kinds, ["r", "o"]);
        }
        assert_eq!(events[0][2], "120x40");
        assert_eq!(events.last().unwrap()[2], "hi\r\n");
        assert!(events.iter().all(|e| e[0].as_f64().unwrap() >= 0.0));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        Recorder::create(dir.path(), "true.cast", "t".into(), false, 0)
            .await
            .is_err(),
        "an existing recording is never overwritten"
    );
}
