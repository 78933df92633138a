//! Names, passwords, the state file and the command runner. The provisioners against shims
//! are in the `users` integration test.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::command::error_text;
use super::state::StateFile;
use super::*;
use crate::document::{Credential, DomainUser};

#[test]
fn usernames_follow_the_reference() {
    assert_eq!(username("NETH-2239-ABCD-7D37"), "support-neth-2239-7d37");
    assert_eq!(username("neth-2239-7d37"), "support-neth-2239-7d37");
    assert_eq!(username("NETH-2239"), "support-neth-2239");
    assert_eq!(username("SYSTEMKEY"), "support-systemkey");
    for short in ["abc", ""] {
        let name = username(short);
        let letters = name.strip_prefix("support-").unwrap();
        assert_eq!(letters.len(), 8, "{name}");
        assert!(letters.bytes().all(|b| b.is_ascii_lowercase()), "{name}");
    }
}

#[test]
fn passwords_have_every_class_and_differ() {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let p = password();
        assert_eq!(p.len(), PASSWORD_LEN);
        assert!(p.bytes().any(|b| b.is_ascii_lowercase()), "{p}");
        assert!(p.bytes().any(|b| b.is_ascii_uppercase()), "{p}");
        assert!(p.bytes().any(|b| b.is_ascii_digit()), "{p}");
        assert!(p.bytes().any(|b| b"!@#%^&*".contains(&b)), "{p}");
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!@#%^&*".contains(&b)),
            "{p}"
        );
        assert!(seen.insert(p));
    }
}

#[test]
fn password_hash_is_hex_sha256() {
    assert_eq!(
        password_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn error_text_masks_secrets_and_is_clipped() {
    let text = format!("bad password S3cr3t! for {}", "x".repeat(400));
    let shown = error_text(&text, &["S3cr3t!"]);
    assert!(!shown.contains("S3cr3t!"), "{shown}");
    assert!(shown.starts_with("bad password *** for xxx"), "{shown}");
    assert_eq!(shown.len(), MAX_ERROR_TEXT + 3, "{shown}");
    assert!(shown.ends_with("..."));
    assert_eq!(error_text("short", &[""]), "short");
}

fn entry(account: Account, created: bool) -> Entry {
    Entry { account, created }
}

#[test]
fn state_file_is_0600_in_a_0700_directory_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("run/tether/users.json");
    let file = StateFile::new(path.clone());
    assert_eq!(file.load().unwrap(), None);
    let state = State {
        entries: vec![
            entry(
                Account::Ns8ClusterAdmin {
                    user: "support-a".into(),
                },
                true,
            ),
            entry(
                Account::Ns8DomainUser {
                    module: "samba1".into(),
                    domain: "ad.example.org".into(),
                    user: "support-a".into(),
                },
                false,
            ),
        ],
        ..State::default()
    };
    file.save(&state).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(file.load().unwrap(), Some(state));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["users.json"], "no temporary file is left");
    file.save(&State::default()).unwrap();
    assert!(!path.exists(), "an empty state removes the file");
}

#[test]
fn state_file_replaces_a_stale_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("users.json");
    let stale = tmp.path().join(".users.json.tmp");
    std::fs::write(&stale, "garbage").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
    let file = StateFile::new(path.clone());
    let state = State {
        entries: vec![entry(
            Account::NethsecurityAdmin {
                user: "support-b".into(),
            },
            false,
        )],
        ..State::default()
    };
    file.save(&state).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!stale.exists());
    assert_eq!(file.load().unwrap(), Some(state));
}

#[test]
fn state_file_of_another_version_or_garbage_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("users.json");
    let file = StateFile::new(path.clone());
    std::fs::write(&path, r#"{"version":2,"entries":[]}"#).unwrap();
    assert!(matches!(
        file.load(),
        Err(StateError::Version { version: 2, .. })
    ));
    std::fs::write(&path, "not json").unwrap();
    assert!(matches!(file.load(), Err(StateError::Invalid { .. })));
}

#[test]
fn state_file_format_is_stable() {
    let state = State {
        entries: vec![entry(
            Account::Ns8DomainUser {
                module: "samba1".into(),
                domain: "ad.example.org".into(),
                user: "support-a".into(),
            },
            true,
        )],
        ..State::default()
    };
    assert_eq!(
        serde_json::to_string(&state).unwrap(),
        r#"{"version":1,"entries":[{"account":{"kind":"ns8_domain_user","module":"samba1","domain":"ad.example.org","user":"support-a"},"created":true}]}"#
    );
}

#[test]
fn fetched_credentials_are_merged_into_the_local_report() {
    let mut local = SessionUsers {
        session_id: "NETH-1".into(),
        platform: "ns8".into(),
        errors: vec![UserError {
            id: "x".into(),
            message: "y".into(),
        }],
        ..SessionUsers::default()
    };
    assert!(!has_credentials(&local));
    let fetched = SessionUsers {
        session_id: "other".into(),
        cluster_admin: Some(Credential {
            username: "support-neth-1".into(),
            password: "p".into(),
        }),
        domain_users: vec![DomainUser {
            domain: "d".into(),
            module: "samba1".into(),
            username: "support-neth-1".into(),
            password: "q".into(),
        }],
        ..SessionUsers::default()
    };
    merge(&mut local, fetched);
    assert!(has_credentials(&local));
    assert_eq!(local.session_id, "NETH-1");
    assert_eq!(local.errors.len(), 1);
    assert_eq!(local.domain_users.len(), 1);
    assert_eq!(
        local.cluster_admin.as_ref().map(|c| c.username.as_str()),
        Some("support-neth-1")
    );
}

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn runner_passes_stdin_and_returns_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let echo = script(tmp.path(), "echo", r#"printf '%s:' "$1"; cat"#);
    let runner = Runner {
        timeout: Duration::from_secs(10),
    };
    let out = runner
        .run("echo", &echo, &["arg"], b"{\"a\":1}", &[])
        .await
        .unwrap();
    assert_eq!(out, b"arg:{\"a\":1}");
}

#[tokio::test]
async fn runner_reports_failures_with_masked_clipped_output() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = script(
        tmp.path(),
        "fail",
        "cat >&2; printf ' %0300d' 0 >&2; exit 3",
    );
    let runner = Runner {
        timeout: Duration::from_secs(10),
    };
    let err = runner
        .run("cluster/add-user", &fail, &[], b"pw=hunter2", &["hunter2"])
        .await
        .unwrap_err();
    assert!(err.ran());
    let StepError::Failed { status, output, .. } = &err else {
        std::panic!("{err:?}");
    };
    assert_eq!(status, "exit status 3");
    assert!(output.starts_with("pw=*** 000"), "{output}");
    assert!(output.len() <= MAX_ERROR_TEXT + 3);
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn runner_kills_a_command_that_runs_too_long() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let hang = script(
        tmp.path(),
        "hang",
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    );
    let runner = Runner {
        timeout: Duration::from_millis(300),
    };
    let started = std::time::Instant::now();
    let err = runner.run("hang", &hang, &[], b"", &[]).await.unwrap_err();
    assert!(matches!(err, StepError::Timeout { .. }), "{err:?}");
    assert!(!err.ran());
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The killed process is reaped already: signalling it finds nothing.
    assert_eq!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
}

#[tokio::test]
async fn runner_caps_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let big = script(
        tmp.path(),
        "big",
        &format!("head -c {} /dev/zero", super::command::MAX_STDOUT * 2),
    );
    let runner = Runner {
        timeout: Duration::from_secs(10),
    };
    let out = runner.run("big", &big, &[], b"", &[]).await.unwrap();
    assert_eq!(out.len(), super::command::MAX_STDOUT);
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_that_keeps_the_account() {
    let runner = Runner {
        timeout: Duration::from_secs(10),
    };
    let err = runner
        .run("x", Path::new("/nonexistent/runagent"), &[], b"", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::Spawn { .. }), "{err:?}");
    assert!(!err.ran());
}
