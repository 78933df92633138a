use std::prelude::rust_2024::*;
use std::vec;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn svc(target: &str) -> ServiceInfo {
    ServiceInfo {
        target: target.into(),
        label: target.into(),
        ..ServiceInfo::default()
    }
}

/// An adapter whose answers the test scripts, one per round (the last one repeats).
struct Scripted {
    name: &'static str,
    answers: Mutex<Vec<Result<Services, String>>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, answers: Vec<Result<Services, String>>) -> Self {
        Scripted {
            name,
            answers: Mutex::new(answers),
            calls: AtomicUsize::new(0),
        }
    }
}

impl Discover for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let answers = self.answers.lock().unwrap();
        let answer = answers
            .get(n)
            .or_else(|| answers.last())
            .cloned()
            .unwrap_or(Ok(Services::new()));
        Box::pin(async move {
            answer.map_err(|message| DiscoveryError::Command {
                command: "scripted".into(),
                message,
            })
        })
    }
}

fn map(entries: &[(&str, &str)]) -> Services {
    entries
        .iter()
        .map(|(n, t)| ((*n).to_owned(), svc(t)))
        .collect()
}

#[tokio::test]
async fn later_adapters_overwrite_earlier_ones_and_excluded_names_go() {
    let first = Scripted::new(
        "first",
        vec![Ok(map(&[("a", "1.1.1.1:1"), ("b", "1.1.1.1:2")]))],
    );
    let second = Scripted::new(
        "second",
        vec![Ok(map(&[("b", "2.2.2.2:2"), ("x-janus", "2.2.2.2:3")]))],
    );
    let exclude = ExcludeSet::parse("*-janus").unwrap();
    let mut d = Discovery::new(vec![Box::new(first), Box::new(second)], exclude);
    let (found, rounds) = d.round().await;
    assert_eq!(found, map(&[("a", "1.1.1.1:1"), ("b", "2.2.2.2:2")]));
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[1].result.as_ref().ok(), Some(&2));
    assert_eq!(d.adapter_names(), vec!["first", "second"]);
}

#[tokio::test]
async fn a_failing_adapter_keeps_its_previous_result_and_an_empty_one_clears_it() {
    let adapter = Scripted::new(
        "flaky",
        vec![
            Ok(map(&[("a", "1.1.1.1:1")])),
            Err("redis went away".into()),
            Ok(Services::new()),
        ],
    );
    let mut d = Discovery::new(vec![Box::new(adapter)], ExcludeSet::default());
    assert_eq!(d.round().await.0, map(&[("a", "1.1.1.1:1")]));
    let (kept, rounds) = d.round().await;
    assert_eq!(
        kept,
        map(&[("a", "1.1.1.1:1")]),
        "a failure keeps the last list"
    );
    let err = rounds[0].result.as_ref().unwrap_err();
    assert!(err.contains("redis went away"), "{err}");
    assert!(d.round().await.0.is_empty(), "an empty answer is published");
}

#[tokio::test(start_paused = true)]
async fn spawn_publishes_the_first_round_then_only_changes() {
    let adapter = Scripted::new(
        "changing",
        vec![
            Ok(map(&[("a", "1.1.1.1:1")])),
            Ok(map(&[("a", "1.1.1.1:1")])),
            Ok(map(&[("a", "1.1.1.1:1"), ("b", "1.1.1.1:2")])),
            Ok(Services::new()),
        ],
    );
    let d = Discovery::new(vec![Box::new(adapter)], ExcludeSet::default());
    let mut rx = d.spawn(Duration::from_secs(60)).await;
    assert_eq!(*rx.borrow_and_update(), map(&[("a", "1.1.1.1:1")]));
    // Round 2 finds the same list: nothing is published; round 3 adds "b".
    rx.changed().await.unwrap();
    assert_eq!(
        *rx.borrow_and_update(),
        map(&[("a", "1.1.1.1:1"), ("b", "1.1.1.1:2")])
    );
    let at = tokio::time::Instant::now();
    rx.changed().await.unwrap();
    assert!(rx.borrow_and_update().is_empty());
    assert_eq!(
        at.elapsed(),
        Duration::from_secs(60),
        "one interval per round"
    );
}

#[test]
fn the_toml_form_fills_defaults_and_names_the_bad_service() {
    let path = Path::new("/etc/tether/services.toml");
    let text = r#"
# packaged default
[services.cluster-admin]
target = "127.0.0.1:9090"
tls = true

[services.phone]
target = "192.168.1.100:443"
host = "phone.lan"
tls = true
label = "Desk phone"
path = "/admin"
"#;
    let services = StaticFile::parse(path, text).unwrap();
    assert_eq!(services.len(), 2);
    let admin = &services["cluster-admin"];
    assert_eq!(admin.target, "127.0.0.1:9090");
    assert!(admin.tls);
    assert_eq!(
        admin.label, "cluster-admin",
        "the label defaults to the name"
    );
    let phone = &services["phone"];
    assert_eq!(phone.host, "phone.lan");
    assert_eq!(phone.path, "/admin");
    assert_eq!(phone.label, "Desk phone");

    let bad_target = "[services.web]\ntarget = \"no-port\"\n";
    let e = StaticFile::parse(path, bad_target).unwrap_err().to_string();
    assert!(
        e.contains("/etc/tether/services.toml") && e.contains("\"web\""),
        "{e}"
    );
    assert!(e.contains("no port"), "{e}");

    let unknown = "[services.web]\ntarget = \"127.0.0.1:80\"\ntsl = true\n";
    let e = StaticFile::parse(path, unknown).unwrap_err().to_string();
    assert!(e.contains("tsl"), "{e}");

    let bad_name = "[services.\"bad name\"]\ntarget = \"127.0.0.1:80\"\n";
    let e = StaticFile::parse(path, bad_name).unwrap_err().to_string();
    assert!(e.contains("bad name"), "{e}");
}

#[tokio::test]
async fn the_static_file_is_read_again_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.toml");
    std::fs::write(&file, "[services.a]\ntarget = \"127.0.0.1:1\"\n").unwrap();
    let mut d = Discovery::new(
        vec![Box::new(StaticFile::new(&file))],
        ExcludeSet::default(),
    );
    assert_eq!(d.round().await.0.keys().collect::<Vec<_>>(), vec!["a"]);
    std::fs::write(&file, "[services.b]\ntarget = \"127.0.0.1:2\"\n").unwrap();
    assert_eq!(d.round().await.0.keys().collect::<Vec<_>>(), vec!["b"]);
    std::fs::remove_file(&file).unwrap();
    let (kept, rounds) = d.round().await;
    assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["b"]);
    assert!(
        rounds[0]
            .result
            .as_ref()
            .unwrap_err()
            .contains("cannot read")
    );
}

#[tokio::test]
async fn detection_needs_the_node_file_and_redis_for_ns8() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        root: dir.path().to_owned(),
    };
    let answers = |ok: bool| Some(move || async move { ok });
    assert_eq!(detect(&paths, answers(true)).await, Platform::None);
    std::fs::create_dir_all(paths.file("/etc")).unwrap();
    std::fs::write(paths.file("/etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\n").unwrap();
    assert_eq!(detect(&paths, answers(true)).await, Platform::OpenWrt);
    std::fs::create_dir_all(paths.file("/www-ns")).unwrap();
    std::fs::write(paths.file("/www-ns/index.html"), "<html>").unwrap();
    assert_eq!(detect(&paths, answers(true)).await, Platform::NethSecurity);
    let env = paths.file(NS8_NODE_ENV);
    std::fs::create_dir_all(env.parent().unwrap()).unwrap();
    std::fs::write(&env, "NODE_ID=1\n").unwrap();
    assert_eq!(
        detect(&paths, answers(false)).await,
        Platform::NethSecurity,
        "a node file without Redis is not NethServer 8"
    );
    assert_eq!(detect(&paths, answers(true)).await, Platform::Ns8);
}
