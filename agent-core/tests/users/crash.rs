//! A real crash: a child process (this test binary, running the ignored `child_...` test)
//! provisions until a shim hangs on the second account, is killed with SIGKILL, and a fresh
//! instance deletes what the state file names.

use std::process::{Command, Stdio};

use agent_core::agent::users::{Ns8Role, Platform, SupportUsers};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::shims::{Shims, until};

const CHILD_DIR: &str = "TETHER_USERS_CRASH_DIR";
const CHILD_TEST: &str = "crash::child_provisions_until_killed";

/// Run only by the parent test (ignored otherwise, and a no-op without its directory).
#[tokio::test]
#[ignore = "started by a_crash_half_way_leaves_orphans_that_the_next_start_deletes"]
async fn child_provisions_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let shims = Shims::at(std::path::Path::new(&dir));
    let mut config = shims.config(Platform::Ns8(Ns8Role::Leader));
    config.command_timeout = std::time::Duration::from_secs(120);
    SupportUsers::new(config).provision("NETH-TEST-KEY").await;
    panic!("provisioning was expected to hang");
}

#[tokio::test]
async fn a_crash_half_way_leaves_orphans_that_the_next_start_deletes() {
    let shims = Shims::new();
    shims.hang("module/samba1/add-user");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR, &shims.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hung = shims.dir.join("hung.pid");
    until("the child to hang on the domain user", || hung.exists()).await;
    // SIGKILL: no destructor, no cleanup of any kind runs in the child.
    child.kill().unwrap();
    child.wait().unwrap();
    // The hanging shim is in a process group of its own and outlives the child.
    let shim: i32 = loop {
        if let Ok(pid) = std::fs::read_to_string(&hung).unwrap().trim().parse() {
            break pid;
        }
        tokio::task::yield_now().await;
    };
    let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);

    assert_eq!(
        shims.steps(),
        [
            "runagent cluster/remove-user",
            "runagent cluster/add-user",
            "runagent cluster/list-user-domains",
            "runagent module/samba1/remove-user",
            "runagent module/samba1/add-user",
        ]
    );
    let state = std::fs::read_to_string(shims.state_file()).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        recorded["entries"],
        serde_json::json!([
            {"account": {"kind": "ns8_cluster_admin", "user": "support-neth-test-key"}, "created": true},
            {"account": {"kind": "ns8_domain_user", "module": "samba1", "domain": "ad.example.org",
                         "user": "support-neth-test-key"}, "created": false},
        ]),
        "the domain user is recorded before its creation started"
    );

    shims.heal("module/samba1/add-user");
    shims.clear();
    let restarted = SupportUsers::new(shims.config(Platform::Ns8(Ns8Role::Leader)));
    let done = restarted.cleanup_orphans().await.unwrap();
    assert_eq!(done.deleted.len(), 2);
    assert_eq!(
        shims.steps(),
        [
            "runagent module/samba1/remove-user",
            "runagent cluster/remove-user",
        ]
    );
    assert!(
        shims
            .calls()
            .iter()
            .all(|c| c.data == serde_json::json!({"user": "support-neth-test-key"}))
    );
    assert!(!shims.state_file().exists());
}
