#![cfg_attr(not(feature = "pty"), allow(unused_imports))]

use std::string::String;
use std::{format, vec};

use super::*;
use crate::wire::TerminalFrame;

#[test]
fn syslog_lines_name_the_agent_and_flatten_control_characters() {
    assert_eq!(
        syslog_line(42, "terminal opened by alice\nforged line\u{1b}[2J"),
        "<85>tether-agent[42]: terminal opened by alice forged line [2J"
    );
}

#[test]
fn terminal_events_reach_a_syslog_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    send_syslog(&path, "terminal session opened by alice").unwrap();
    let mut buf = [0u8; 512];
    let n = server.recv(&mut buf).unwrap();
    let got = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(got.starts_with("<85>tether-agent["), "{got}");
    assert!(
        got.ends_with("]: terminal session opened by alice"),
        "{got}"
    );
    assert!(send_syslog(&dir.path().join("missing"), "x").is_err());
}

#[test]
fn frames_are_reassembled_across_reads_and_oversized_ones_refused() {
    let mut wire = data_frame(b"ls\r");
    TerminalFrame::Resize {
        cols: 120,
        rows: 40,
    }
    .encode(&mut wire);
    let (a, b) = wire.split_at(6);
    let mut frames = Frames::new(a.to_vec());
    assert_eq!(frames.next().unwrap(), None);
    frames.push(b);
    assert_eq!(
        frames.next().unwrap(),
        Some(TerminalFrame::Data(b"ls\r".to_vec()))
    );
    assert_eq!(
        frames.next().unwrap(),
        Some(TerminalFrame::Resize {
            cols: 120,
            rows: 40
        })
    );
    assert_eq!(frames.next().unwrap(), None);
    let too_big = u32::try_from(crate::wire::MAX_TERMINAL_FRAME_AGENT + 1).unwrap();
    let mut frames = Frames::new(too_big.to_be_bytes().to_vec());
    assert!(frames.next().is_err());
}

#[cfg(feature = "pty")]
#[tokio::test]
async fn a_disabled_terminal_answers_an_error_the_relay_recognises() {
    let (agent_side, mut relay_side) = tokio::io::duplex(1024);
    let settings = TerminalSettings {
        enabled: false,
        user: None,
    };
    serve(agent_side, vec![], Some("alice".into()), &settings).await;
    let mut reply = String::new();
    use tokio::io::AsyncReadExt;
    relay_side.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, format!("ERROR {DISABLED_REPLY}\n"));
}

#[cfg(feature = "pty")]
mod pty_tests {
    use std::path::{Path, PathBuf};
    use std::string::String;
    use std::time::Duration;
    use std::vec;
    use std::vec::Vec;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::pty::{self, Stat, Target};
    use super::super::*;
    use crate::wire::TerminalFrame;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (my (odd) cmd) S 1 1230 1229 34816 1230 4194560 ...";
        assert_eq!(
            pty::parse_stat(stat),
            Some(Stat {
                state: 'S',
                pgrp: 1230,
                session: 1229
            })
        );
        assert_eq!(pty::parse_stat("garbage"), None);
    }

    #[test]
    fn the_environment_keeps_no_agent_secret() {
        let target = Target {
            name: "support".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/support"),
            shell: PathBuf::from("/bin/bash"),
            switch: true,
        };
        let agent_env = [
            ("SYSTEM_KEY", "TTH-1"),
            ("SYSTEM_SECRET", "tth_secret"),
            ("SUPPORT_URL", "wss://relay"),
            ("HTTPS_PROXY", "http://user:pw@proxy:3128"),
            ("REDIS_PASSWORD", "pw"),
            ("TETHER_RELAY_PIN", "abc"),
            ("HOME", "/root"),
            ("PATH", "/usr/bin:/bin"),
            ("LC_ALL", "C.UTF-8"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let env: Vec<(String, String)> = target
            .environment(agent_env)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for secret in [
            "SYSTEM_KEY",
            "SYSTEM_SECRET",
            "SUPPORT_URL",
            "HTTPS_PROXY",
            "REDIS_PASSWORD",
            "TETHER_RELAY_PIN",
        ] {
            assert_eq!(get(secret), None, "{secret} leaked");
        }
        assert_eq!(get("TERM"), Some("xterm-256color"));
        assert_eq!(get("HOME"), Some("/home/support"));
        assert_eq!(get("USER"), Some("support"));
        assert_eq!(get("LOGNAME"), Some("support"));
        assert_eq!(get("SHELL"), Some("/bin/bash"));
        assert_eq!(get("PATH"), Some("/usr/bin:/bin"));
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
        assert_eq!(target.login_arg0(), "-bash");
    }

    #[test]
    fn a_nologin_shell_falls_back_to_a_real_one() {
        let exists = |p: &Path| p == Path::new("/bin/sh") || p == Path::new("/usr/bin/zsh");
        assert_eq!(
            pty::choose_shell_for_test(Path::new("/usr/bin/zsh"), exists).unwrap(),
            PathBuf::from("/usr/bin/zsh")
        );
        assert_eq!(
            pty::choose_shell_for_test(Path::new("/usr/sbin/nologin"), exists).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(pty::choose_shell_for_test(Path::new(""), |_| false).is_err());
    }

    #[test]
    fn unknown_users_are_refused() {
        let err = Target::resolve(Some("no-such-user-tether-test")).unwrap_err();
        assert!(err.to_string().contains("unknown user"), "{err}");
        let own = Target::resolve(None).unwrap();
        assert!(!own.switch);
    }

    /// Reads frames from `relay` until `pred` holds for the collected output.
    async fn output_until(
        relay: &mut tokio::io::DuplexStream,
        buf: &mut Vec<u8>,
        out: &mut String,
        pred: impl Fn(&str) -> bool,
    ) {
        let mut chunk = vec![0u8; 4096];
        tokio::time::timeout(Duration::from_secs(20), async {
            while !pred(out) {
                while let Some((frame, used)) = TerminalFrame::decode(buf, 1 << 20).unwrap() {
                    buf.drain(..used);
                    if let TerminalFrame::Data(d) = frame {
                        out.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                if pred(out) {
                    break;
                }
                let n = relay.read(&mut chunk).await.unwrap();
                assert!(n > 0, "terminal ended early; output so far: {out}");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out; output so far: {out}"));
    }

    #[tokio::test]
    async fn a_shell_runs_resizes_and_its_whole_session_dies_with_the_stream() {
        let (agent_side, mut relay) = tokio::io::duplex(64 * 1024);
        let settings = TerminalSettings::default();
        let task = tokio::spawn(async move {
            serve(agent_side, vec![], Some("alice".into()), &settings).await;
        });
        let mut reply = [0u8; 3];
        relay.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"OK\n");
        let mut wire = vec![];
        TerminalFrame::Resize {
            cols: 120,
            rows: 40,
        }
        .encode(&mut wire);
        wire.extend(data_frame(
            b"stty size; echo PID$$; sleep 1000 & echo MARK$((6*7))\n",
        ));
        relay.write_all(&wire).await.unwrap();
        let (mut buf, mut out) = (vec![], String::new());
        output_until(&mut relay, &mut buf, &mut out, |o| o.contains("MARK42")).await;
        assert!(out.contains("40 120"), "{out}");
        let pid: i32 = out
            .split("PID")
            .skip(1)
            .find_map(|s| {
                s.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no pid in {out}"));
        assert!(!pty::session_members(pid).is_empty());
        drop(relay);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        // SIGKILL is delivered asynchronously: a killed process may still be listed for a
        // moment on a busy machine, so wait (bounded) for the session to empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = pty::session_members(pid);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "processes of the shell's session still alive: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
