//! Web terminal end to end: real relay, real agent, the device's real shell on a PTY.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::harness::{Agent, DEADLINE, Relay, admin, device_server, eventually};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A ticket for session `id`, asked with `token`; the HTTP status and body.
async fn ask_ticket(relay: &Relay, id: &str, token: &str) -> (u16, Value) {
    let r = relay
        .http
        .post(format!(
            "{}/api/v1/sessions/{id}/terminal-ticket",
            relay.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn ticket(relay: &Relay, id: &str, token: &str) -> String {
    let (status, body) = ask_ticket(relay, id, token).await;
    assert_eq!(status, 200, "ticket: {body}");
    body["ticket"].as_str().unwrap().to_owned()
}

pub(crate) async fn connect(
    relay: &Relay,
    id: &str,
    ticket: &str,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let url = format!(
        "ws://{}/api/v1/sessions/{id}/terminal?ticket={ticket}",
        relay.addr
    );
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn status_of(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn send_resize(ws: &mut Ws, cols: u16, rows: u16) {
    let mut msg = vec![1u8];
    msg.extend_from_slice(format!("{{\"cols\":{cols},\"rows\":{rows}}}").as_bytes());
    ws.send(Message::binary(msg)).await.unwrap();
}

async fn type_line(ws: &mut Ws, line: &str) {
    let mut msg = vec![0u8];
    msg.extend_from_slice(line.as_bytes());
    msg.push(b'\r');
    ws.send(Message::binary(msg)).await.unwrap();
}

/// What the terminal showed: the data, the type-3 texts, and whether it closed.
#[derive(Default, Debug)]
struct Screen {
    output: String,
    errors: Vec<String>,
    closed: bool,
}

/// Reads until `done(screen)` or the socket closes; panics after `deadline`.
async fn read_until(
    ws: &mut Ws,
    screen: &mut Screen,
    deadline: Duration,
    done: impl Fn(&Screen) -> bool,
) {
    let end = Instant::now() + deadline;
    while !done(screen) && !screen.closed {
        let left = end.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; the terminal showed {screen:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) => match b.first() {
                Some(0) => screen.output.push_str(&String::from_utf8_lossy(&b[1..])),
                Some(3) => screen
                    .errors
                    .push(String::from_utf8_lossy(&b[1..]).into_owned()),
                _ => panic!("unexpected frame {b:?}"),
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => screen.closed = true,
            Some(Ok(_)) => {}
        }
    }
}

/// Live (not zombie) processes in the process group or session `leader`.
fn processes_of(leader: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
            f[0] != "Z" && (f[2] == leader.to_string() || f[3] == leader.to_string())
        })
        .collect()
}

pub(crate) async fn setup(relay_flags: &[&str], agent_flags: &[&str]) -> (Relay, Agent, String) {
    let relay = Relay::start(relay_flags).await;
    let device = device_server().await;
    let agent = Agent::start(
        &relay,
        &relay.secret,
        &format!("demo={device}"),
        agent_flags,
    );
    let id = relay.active_session_with("demo").await;
    (relay, agent, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_shell_answers_resizes_is_recorded_and_leaves_no_process_behind() {
    let recordings = tempfile::tempdir().unwrap();
    let dir = recordings.path().to_str().unwrap().to_owned();
    let (relay, _agent, id) = setup(
        &["--terminal-ticket-ttl", "1s", "--recordings-dir", &dir],
        &[],
    )
    .await;
    let session = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["terminal_available"], true, "{session}");
    let t = ticket(&relay, &id, &relay.token).await;
    let foreign = connect(&relay, &id, &t, Some("https://evil.example")).await;
    assert_eq!(status_of(&foreign.unwrap_err()), 403, "foreign Origin");
    let mut ws = connect(&relay, &id, &t, None).await.expect("terminal");
    let mut screen = Screen::default();
    send_resize(&mut ws, 120, 40).await;
    type_line(&mut ws, "echo MARK$((6*7))").await;
    read_until(&mut ws, &mut screen, DEADLINE, |s| {
        s.output.contains("MARK42")
    })
    .await;
    type_line(&mut ws, "stty size").await;
    read_until(&mut ws, &mut screen, DEADLINE, |s| {
        s.output.contains("40 120")
    })
    .await;
    type_line(&mut ws, "sleep 1000 & echo PID$$").await;
    read_until(&mut ws, &mut screen, DEADLINE, |s| {
        s.output
            .split("PID")
            .skip(1)
            .any(|p| p.starts_with(|c: char| c.is_ascii_digit()))
    })
    .await;
    let pid: i32 = screen
        .output
        .split("PID")
        .skip(1)
        .find_map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap();
    assert!(
        processes_of(pid).len() >= 2,
        "shell and its background sleep"
    );

    // the ticket was used: a second socket is refused
    assert_eq!(
        status_of(&connect(&relay, &id, &t, None).await.unwrap_err()),
        401
    );
    // an expired ticket is refused
    let late = ticket(&relay, &id, &relay.token).await;
    let issued = Instant::now();
    eventually("the 1 s ticket lifetime to pass", DEADLINE, || async {
        (issued.elapsed() > Duration::from_millis(1200)).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&connect(&relay, &id, &late, None).await.unwrap_err()),
        401
    );

    type_line(&mut ws, "exit").await;
    read_until(&mut ws, &mut screen, DEADLINE, |_| false).await;
    assert!(screen.closed);
    eventually(
        "every process of the shell's session to be gone",
        DEADLINE,
        || async { processes_of(pid).is_empty().then_some(()) },
    )
    .await;

    // the recording
    let list = eventually("the recording to be finished", DEADLINE, || async {
        let v = relay
            .get_json(&format!("/api/v1/sessions/{id}/recordings"))
            .await;
        let list = v["recordings"].as_array().cloned().unwrap_or_default();
        (list.len() == 1 && !list[0]["ended_at"].is_null()).then_some(list)
    })
    .await;
    assert_eq!(list[0]["operator"], "alice");
    assert_eq!(list[0]["input_recorded"], false);
    let r = relay.get(list[0]["download"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let cast = r.text().await.unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 120);
    assert_eq!(header["height"], 40);
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let replayed: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(replayed.contains("MARK42"), "{replayed}");
    assert!(replayed.contains("40 120"));
    assert!(events.iter().any(|e| e[1] == "r" && e[2] == "120x40"));
    assert!(
        !events.iter().any(|e| e[1] == "i"),
        "input is not recorded by default"
    );

    let audit = relay.get_json("/api/v1/audit?limit=100").await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for action in ["terminal_open", "terminal_close", "recording_download"] {
        assert!(actions.contains(&action), "{action} not audited: {audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_terminal_closes_with_a_message() {
    let recordings = tempfile::tempdir().unwrap();
    let dir = recordings.path().to_str().unwrap().to_owned();
    let (relay, _agent, id) = setup(
        &["--terminal-idle-timeout", "2s", "--recordings-dir", &dir],
        &[],
    )
    .await;
    let t = ticket(&relay, &id, &relay.token).await;
    let mut ws = connect(&relay, &id, &t, None).await.expect("terminal");
    send_resize(&mut ws, 80, 24).await;
    let mut screen = Screen::default();
    let opened = Instant::now();
    read_until(&mut ws, &mut screen, DEADLINE, |s| !s.errors.is_empty()).await;
    assert_eq!(screen.errors, ["session closed due to inactivity"]);
    assert!(opened.elapsed() >= Duration::from_secs(2));
    read_until(&mut ws, &mut screen, DEADLINE, |_| false).await;
    assert!(screen.closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_operator_ends_the_live_terminal_at_once() {
    let recordings = tempfile::tempdir().unwrap();
    let dir = recordings.path().to_str().unwrap().to_owned();
    let (relay, _agent, id) = setup(&["--recordings-dir", &dir], &[]).await;
    admin(
        &relay.database,
        &["operator", "create", "bob", "--role", "operator", "--json"],
    );
    let bob = admin(&relay.database, &["token", "create", "bob", "--json"]);
    let bob = bob["token"].as_str().unwrap();
    let t = ticket(&relay, &id, bob).await;
    let mut ws = connect(&relay, &id, &t, None).await.expect("terminal");
    send_resize(&mut ws, 80, 24).await;
    type_line(&mut ws, "echo READY$((1+1))").await;
    let mut screen = Screen::default();
    read_until(&mut ws, &mut screen, DEADLINE, |s| {
        s.output.contains("READY2")
    })
    .await;
    admin(&relay.database, &["operator", "disable", "bob"]);
    let disabled = Instant::now();
    read_until(&mut ws, &mut screen, Duration::from_secs(5), |s| s.closed).await;
    assert!(
        disabled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        disabled.elapsed()
    );
    assert_eq!(
        screen.errors,
        ["terminal closed: the operator was disabled"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_terminal_is_known_before_anyone_asks() {
    let recordings = tempfile::tempdir().unwrap();
    let dir = recordings.path().to_str().unwrap().to_owned();
    let (relay, _agent, id) = setup(&["--recordings-dir", &dir], &["--no-terminal"]).await;
    let session = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["terminal_available"], false, "{session}");
    let (status, body) = ask_ticket(&relay, &id, &relay.token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "terminal_disabled");
}
