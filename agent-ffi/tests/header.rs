//! The committed header is what cbindgen generates from the sources (needs `cbindgen` on PATH:
//! `cargo install cbindgen --locked`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn committed_header_matches_the_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("tether_agent.h");
    let out = Command::new(root.join("scripts/gen-header"))
        .arg(&fresh)
        .output()
        .expect("run scripts/gen-header (is cbindgen installed?)");
    assert!(
        out.status.success(),
        "scripts/gen-header failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(root.join("agent-ffi/include/tether_agent.h")).unwrap();
    let fresh = std::fs::read_to_string(fresh).unwrap();
    assert!(
        committed == fresh,
        "agent-ffi/include/tether_agent.h is stale: run scripts/gen-header"
    );
}
