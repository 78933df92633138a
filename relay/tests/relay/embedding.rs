//! The C embedding example (examples/c) against a real relay: it links libtether_agent.a
//! (build it first: `cargo build -p tether-agent-ffi`), publishes its own service and adds its
//! own diagnostics check; the operator API shows both and the proxy reaches the service. The
//! same run passes under Valgrind (no errors, no leaks) and as an AddressSanitizer build.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{DEADLINE, Relay, device_server, eventually};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Builds the plain and the ASan example once per test run, into target/examples-c.
fn build() -> &'static PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let lib_dir = crate::harness::relay_bin().parent().unwrap().to_owned();
        let lib = lib_dir.join("libtether_agent.a");
        assert!(
            lib.exists(),
            "{} is missing: build it first (cargo build -p tether-agent-ffi)",
            lib.display()
        );
        let out = lib_dir.join("examples-c");
        std::fs::create_dir_all(&out).unwrap();
        let made = Command::new("make")
            .arg("-C")
            .arg(root().join("examples/c"))
            .arg(format!("OUT={}", out.display()))
            .arg(format!("LIBDIR={}", lib_dir.display()))
            .args(["all", "asan"])
            .output()
            .expect("run make");
        assert!(
            made.status.success(),
            "make failed: {}{}",
            String::from_utf8_lossy(&made.stdout),
            String::from_utf8_lossy(&made.stderr)
        );
        out
    })
}

struct Firmware {
    child: Child,
    log: PathBuf,
}

impl Firmware {
    fn start(relay: &Relay, program: &[&str], env: &[(&str, &str)]) -> Firmware {
        let log = relay.dir.path().join("firmware.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program[0])
            .args(&program[1..])
            .args([&relay.tunnel_url(), &relay.key, &relay.secret])
            .envs(env.iter().copied())
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("http_proxy")
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the firmware example");
        Firmware { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Closes stdin (the example's stop signal) and waits for the exit status.
    async fn stop(mut self, deadline: Duration) -> (bool, String) {
        drop(self.child.stdin.take());
        let child = &mut self.child;
        let status = eventually("the firmware example to exit", deadline, || {
            let r = child.try_wait().ok().flatten();
            async move { r }
        })
        .await;
        (status.success(), self.output())
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the example under test does besides the common part.
#[derive(Clone, Copy, Default)]
struct Expect {
    /// It forwards the library's log lines (`firmware: log ...`).
    log_lines: bool,
    /// It runs with the terminal on (`FIRMWARE_TERMINAL=1`): open one and see the event.
    terminal: bool,
}

/// Runs the example as `program` and checks what an operator sees.
/// Returns the example's output.
async fn operator_sees_the_firmware(
    program: &[&str],
    env: &[(&str, &str)],
    slow: u32,
    expect: Expect,
) -> String {
    let relay = Relay::start(&[]).await;
    let mut firmware = Firmware::start(&relay, program, env);
    let id = relay
        .active_session_within("firmware-ui", DEADLINE * slow)
        .await;
    let detail = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(
        detail["services"]["firmware-ui"]["label"], "Firmware web UI",
        "{detail}"
    );
    let shown = eventually(
        "the firmware's diagnostics check",
        DEADLINE * slow,
        || async {
            let v = relay
                .get_json(&format!("/api/v1/sessions/{id}/diagnostics"))
                .await;
            let plugins = v["diagnostics"]["plugins"].as_array()?.clone();
            plugins.into_iter().find(|p| p["id"] == "firmware")
        },
    )
    .await;
    assert_eq!(shown["name"], "Firmware", "{shown}");
    assert_eq!(shown["status"], "ok", "{shown}");
    assert_eq!(shown["summary"], "firmware web UI is serving", "{shown}");
    assert_eq!(shown["checks"][0]["name"], "web-ui", "{shown}");
    let r = relay
        .get(&format!("/api/v1/sessions/{id}/proxy/firmware-ui/"))
        .await;
    assert!(r.status().is_success(), "proxy: {}", r.status());
    assert_eq!(r.text().await.unwrap(), "hello from the firmware\n");
    let out = firmware.output();
    assert!(out.contains("firmware: event connected"), "{out}");
    assert!(out.contains("event service opened: firmware-ui"), "{out}");
    if expect.log_lines {
        assert!(out.contains("firmware: log "), "{out}");
    }

    // An operator adds a service: the host hears of the applied command.
    let device = device_server().await;
    let added = relay
        .http
        .post(format!("{}/api/v1/sessions/{id}/services", relay.base))
        .bearer_auth(&relay.token)
        .json(&serde_json::json!({"services": {"lan-device": {"target": device.to_string()}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
    eventually("the command-applied event", DEADLINE * slow, || {
        let out = firmware.output();
        async move {
            out.contains("firmware: event command applied")
                .then_some(())
        }
    })
    .await;

    if expect.terminal {
        let ticket = crate::terminal::ticket(&relay, &id, &relay.token).await;
        let ws = crate::terminal::connect(&relay, &id, &ticket, None)
            .await
            .expect("terminal websocket");
        eventually("the terminal-opened event", DEADLINE * slow, || {
            let out = firmware.output();
            async move {
                out.contains("firmware: event terminal opened")
                    .then_some(())
            }
        })
        .await;
        drop(ws);
    }
    // a refresh request goes through the library while connected
    firmware
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"refresh\n")
        .unwrap();
    let (ok, out) = firmware.stop(DEADLINE * slow).await;
    assert!(ok, "the firmware example failed:\n{out}");
    assert!(out.contains("firmware: event stopped"), "{out}");
    assert!(out.contains("firmware: exit 0"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_publishes_its_service_and_check() {
    let program = build().join("firmware");
    let expect = Expect {
        log_lines: true,
        terminal: true,
    };
    operator_sees_the_firmware(
        &[program.to_str().unwrap()],
        &[("FIRMWARE_TERMINAL", "1")],
        1,
        expect,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_example_discovers_its_service_and_adds_its_check() {
    let program = crate::harness::relay_bin().with_file_name("tether-sdk-example");
    assert!(
        program.exists(),
        "{} is missing: build it first (cargo build --workspace)",
        program.display()
    );
    operator_sees_the_firmware(&[program.to_str().unwrap()], &[], 1, Expect::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_is_clean_under_valgrind() {
    let program = build().join("firmware");
    // No suppressions: the library frees everything, its runtime's threads included.
    let out = operator_sees_the_firmware(
        &[
            "valgrind",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=1",
            program.to_str().unwrap(),
        ],
        &[],
        4,
        Expect {
            log_lines: true,
            terminal: false,
        },
    )
    .await;
    assert!(out.contains("ERROR SUMMARY: 0 errors"), "{out}");
    // "still reachable" blocks are process-wide statics (tracing's callsite registry and the
    // like), reachable at exit by design; every other kind must be zero.
    for kind in ["definitely lost", "indirectly lost", "possibly lost"] {
        assert!(
            out.contains(&format!("{kind}: 0 bytes in 0 blocks")),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_is_clean_under_address_sanitizer() {
    let program = build().join("firmware-asan");
    operator_sees_the_firmware(
        &[program.to_str().unwrap()],
        &[
            ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"),
            ("FIRMWARE_TERMINAL", "1"),
        ],
        2,
        Expect {
            log_lines: true,
            terminal: true,
        },
    )
    .await;
}
