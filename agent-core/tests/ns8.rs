//! The NethServer 8 adapter against the real Redis of this machine (one database number per
//! test, emptied before and after) loaded with a two-node cluster, and a fake `api-cli` that
//! prints recorded `list-routes` output and records how it was called.
//!
//! Redis is `127.0.0.1:6379` unless `TETHER_TEST_REDIS` says otherwise; without it these
//! tests fail in CI (`CI=true`) and are skipped, with the reason printed, elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_core::agent::discovery::ns8::{Cluster, Ns8, Ns8Config};
use agent_core::agent::discovery::{Discover, DiscoveryError, Services};
use agent_core::document::ServiceInfo;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ns8");
/// Set in every database a test fills, so a database holding anything else is never emptied.
const MARKER: &str = "tether-test/ns8";

/// One Redis database of this test binary, emptied when dropped.
struct TestDb {
    client: redis::Client,
    addr: String,
    db: i64,
}

impl TestDb {
    /// Database `db`, empty; `None` (after printing why) when Redis is not there outside CI.
    fn open(db: i64) -> Option<TestDb> {
        let addr = std::env::var("TETHER_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
        let client = redis::Client::open(format!("redis://{addr}/{db}")).unwrap();
        let mut conn = match client.get_connection_with_timeout(Duration::from_secs(5)) {
            Ok(conn) => conn,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("Redis at {addr} is required in CI: {e}")
            }
            Err(e) => {
                eprintln!("skipped: no Redis at {addr} ({e}); set TETHER_TEST_REDIS=host:port");
                return None;
            }
        };
        let size: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        let ours: bool = redis::cmd("EXISTS").arg(MARKER).query(&mut conn).unwrap();
        assert!(
            size == 0 || ours,
            "Redis database {db} at {addr} holds {size} keys this test did not write; refusing to empty it"
        );
        redis::cmd("FLUSHDB").query::<()>(&mut conn).unwrap();
        redis::cmd("SET")
            .arg(MARKER)
            .arg("1")
            .query::<()>(&mut conn)
            .unwrap();
        Some(TestDb { client, addr, db })
    }

    /// Runs each command of a fixture (`{"commands": [["SET", "k", "v"], ...]}`).
    fn load(&self, fixture: &str) {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(fixture)).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for command in doc["commands"].as_array().unwrap() {
            let words: Vec<&str> = command
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            self.run(&words);
        }
    }

    /// Runs one Redis command.
    fn run(&self, words: &[&str]) {
        let mut conn = self.client.get_connection().unwrap();
        let mut cmd = redis::cmd(words[0]);
        for w in &words[1..] {
            cmd.arg(*w);
        }
        cmd.query::<redis::Value>(&mut conn).unwrap();
    }

    /// An adapter on this database with the given node environment file and `api-cli`.
    fn config(&self, env_file: &Path, api_cli: &Path) -> Ns8Config {
        Ns8Config {
            redis_addr: self.addr.clone(),
            redis_db: Some(self.db),
            node_env_file: env_file.to_owned(),
            api_cli: api_cli.to_owned(),
            ..Ns8Config::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.client.get_connection() {
            let _ = redis::cmd("FLUSHDB").query::<()>(&mut conn);
        }
    }
}

/// A directory with the fake `api-cli` (mode 0755), the recorded routes and a node
/// environment file naming `local`.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(local: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        for file in ["api-cli", "traefik1.json", "traefik2.json"] {
            std::fs::copy(Path::new(FIXTURES).join(file), dir.path().join(file)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("api-cli"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("environment"),
            format!("NODE_ID={local}\nNODE_NAME=node{local}\n"),
        )
        .unwrap();
        Fake { dir }
    }

    fn api_cli(&self) -> PathBuf {
        self.dir.path().join("api-cli")
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("environment")
    }

    /// `PATH` with this directory first.
    fn search_path(&self) -> OsString {
        let mut dirs = vec![self.dir.path().to_owned()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }

    /// The argument lists api-cli was called with, in order.
    fn calls(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.dir.path().join("argv.log")).unwrap_or_default();
        let mut calls = vec![];
        let mut call = vec![];
        for line in log.lines() {
            if line == "--end--" {
                calls.push(std::mem::take(&mut call));
            } else {
                call.push(line.to_owned());
            }
        }
        calls
    }
}

fn list_routes_call(traefik: &str) -> Vec<String> {
    vec![
        "run".to_owned(),
        format!("module/{traefik}/list-routes"),
        "--data".to_owned(),
        r#"{"expand_list": true}"#.to_owned(),
    ]
}

#[allow(clippy::too_many_arguments)]
fn service(
    target: &str,
    host: &str,
    tls: bool,
    label: &str,
    path: &str,
    path_prefix: &str,
    module_id: &str,
    node_id: &str,
) -> ServiceInfo {
    ServiceInfo {
        target: target.to_owned(),
        host: host.to_owned(),
        tls,
        label: label.to_owned(),
        path: path.to_owned(),
        path_prefix: path_prefix.to_owned(),
        module_id: module_id.to_owned(),
        node_id: node_id.to_owned(),
    }
}

/// Compares name by name first, so a failure names the service that differs.
fn assert_services(found: &Services, expected: &BTreeMap<String, ServiceInfo>) {
    for (name, info) in expected {
        assert_eq!(found.get(name), Some(info), "service {name}");
    }
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(found, expected);
}

/// What the leader (node 1) publishes: its own routes dialed directly, node 2's through
/// node 2's Traefik on the VPN; node 2's `cluster-admin` loses to node 1's.
fn expected_from_leader() -> BTreeMap<String, ServiceInfo> {
    BTreeMap::from([
        (
            "cluster-admin".to_owned(),
            service(
                "127.0.0.1:9311",
                "",
                false,
                "",
                "/cluster-admin",
                "/cluster-admin",
                "",
                "1",
            ),
        ),
        (
            "nethvoice103-ui".to_owned(),
            service(
                "127.0.0.1:20107",
                "voice.example.org",
                false,
                "Centralino",
                "",
                "",
                "nethvoice103",
                "1",
            ),
        ),
        (
            "metrics1_grafana".to_owned(),
            service(
                "127.0.0.1:3000",
                "",
                false,
                "",
                "/grafana",
                "/grafana",
                "metrics1",
                "1",
            ),
        ),
        (
            "loki1".to_owned(),
            service("127.0.0.1:20009", "", false, "", "/loki", "", "loki1", "1"),
        ),
        (
            "webtop1".to_owned(),
            service(
                "127.0.0.1:20013",
                "webtop.example.org",
                true,
                "Webtop",
                "",
                "",
                "webtop1",
                "1",
            ),
        ),
        (
            "nextcloud2".to_owned(),
            service(
                "10.5.4.2:443",
                "cloud.example.org",
                true,
                "Nextcloud",
                "",
                "",
                "nextcloud2",
                "2",
            ),
        ),
        (
            "roundcubemail2".to_owned(),
            service(
                "10.5.4.2:443",
                "mail.example.org",
                true,
                "",
                "/webmail",
                "",
                "roundcubemail2",
                "2",
            ),
        ),
    ])
}

/// What node 2 publishes: the leader's routes through node 1's Traefik (visited first, so
/// its `cluster-admin` wins), its own dialed directly.
fn expected_from_worker() -> BTreeMap<String, ServiceInfo> {
    BTreeMap::from([
        (
            "cluster-admin".to_owned(),
            service("10.5.4.1:443", "", true, "", "/cluster-admin", "", "", "1"),
        ),
        (
            "nethvoice103-ui".to_owned(),
            service(
                "10.5.4.1:443",
                "voice.example.org",
                true,
                "Centralino",
                "",
                "",
                "nethvoice103",
                "1",
            ),
        ),
        (
            "metrics1_grafana".to_owned(),
            service(
                "10.5.4.1:443",
                "",
                true,
                "",
                "/grafana",
                "",
                "metrics1",
                "1",
            ),
        ),
        (
            "loki1".to_owned(),
            service("10.5.4.1:443", "", true, "", "/loki", "", "loki1", "1"),
        ),
        (
            "webtop1".to_owned(),
            service(
                "10.5.4.1:443",
                "webtop.example.org",
                true,
                "Webtop",
                "",
                "",
                "webtop1",
                "1",
            ),
        ),
        (
            "nextcloud2".to_owned(),
            service(
                "127.0.0.1:20021",
                "cloud.example.org",
                false,
                "Nextcloud",
                "",
                "",
                "nextcloud2",
                "2",
            ),
        ),
        (
            "roundcubemail2".to_owned(),
            service(
                "127.0.0.1:20032",
                "mail.example.org",
                false,
                "",
                "/webmail",
                "",
                "roundcubemail2",
                "2",
            ),
        ),
    ])
}

#[tokio::test]
async fn leader_publishes_the_two_node_cluster() {
    let Some(db) = TestDb::open(11) else { return };
    db.load("cluster.json");
    let fake = Fake::new("1");
    let ns8 = Ns8::new(db.config(&fake.env_file(), &fake.api_cli()));

    assert!(ns8.ping().await);
    let cluster = ns8.cluster().await.unwrap();
    assert_eq!(
        cluster,
        Cluster {
            leader: Some("1".into()),
            local: Some("1".into()),
            nodes: vec!["1".into(), "2".into()],
        }
    );
    assert!(cluster.is_leader());
    assert!(ns8.is_leader().await.unwrap());

    assert_eq!(ns8.name(), "ns8");
    let found = ns8.discover().await.unwrap();
    assert_services(&found, &expected_from_leader());
    assert_eq!(
        fake.calls(),
        vec![list_routes_call("traefik1"), list_routes_call("traefik2")]
    );
}

#[tokio::test]
async fn worker_publishes_the_two_node_cluster_finding_api_cli_on_path() {
    let Some(db) = TestDb::open(12) else { return };
    db.load("cluster.json");
    let fake = Fake::new("2");
    let mut config = db.config(&fake.env_file(), Path::new("api-cli"));
    config.search_path = Some(fake.search_path());
    // The URL form of the address, with the database in the URL.
    config.redis_addr = format!("redis://{}/{}", db.addr, db.db);
    config.redis_db = None;
    let ns8 = Ns8::new(config);

    let cluster = ns8.cluster().await.unwrap();
    assert_eq!(cluster.leader.as_deref(), Some("1"));
    assert_eq!(cluster.local.as_deref(), Some("2"));
    assert!(!cluster.is_leader());

    let found = ns8.discover().await.unwrap();
    assert_services(&found, &expected_from_worker());
    // Leader first, then the local node.
    assert_eq!(
        fake.calls(),
        vec![list_routes_call("traefik1"), list_routes_call("traefik2")]
    );
}

#[tokio::test]
async fn a_failing_node_is_left_out_and_every_node_failing_is_an_error() {
    let Some(db) = TestDb::open(13) else { return };
    let fake = Fake::new("1");
    let ns8 = Ns8::new(db.config(&fake.env_file(), &fake.api_cli()));

    // Redis without NethServer 8 keys: nothing to publish, and no api-cli call.
    assert_eq!(ns8.discover().await.unwrap(), Services::new());
    assert_eq!(ns8.cluster().await.unwrap().nodes, Vec::<String>::new());
    assert!(fake.calls().is_empty());

    db.load("cluster.json");
    // Node 3's Traefik cannot be reached; node 4 has no VPN address.
    db.run(&["SET", "node/3/default_instance/traefik", "broken3"]);
    db.run(&["HSET", "node/3/vpn", "ip_address", "10.5.4.3"]);
    db.run(&["SET", "node/4/default_instance/traefik", "traefik4"]);
    let found = ns8.discover().await.unwrap();
    assert_services(&found, &expected_from_leader());
    assert_eq!(
        fake.calls(),
        vec![
            list_routes_call("traefik1"),
            list_routes_call("traefik2"),
            list_routes_call("broken3"),
        ]
    );

    // Only the broken node left: its failure, with what api-cli said, is the round's error.
    db.run(&[
        "DEL",
        "node/1/default_instance/traefik",
        "node/2/default_instance/traefik",
    ]);
    db.run(&["DEL", "node/4/default_instance/traefik"]);
    let err = ns8.discover().await.unwrap_err();
    assert!(matches!(err, DiscoveryError::Command { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("run module/broken3/list-routes` failed: exit status: 1: Task module/broken3/list-routes failed: Error reaching traefik daemon"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hanging_api_cli_times_out_and_is_killed() {
    let fake = Fake::new("1");
    let mut config = Ns8Config::new("127.0.0.1:1");
    config.api_cli = fake.api_cli();
    config.command_timeout = Duration::from_millis(300);
    let ns8 = Ns8::new(config);

    let started = Instant::now();
    let err = ns8.list_routes("hang1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        DiscoveryError::Timeout { what, timeout } => {
            assert!(
                what.ends_with("api-cli run module/hang1/list-routes"),
                "{what}"
            );
            assert_eq!(*timeout, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        err.to_string().ends_with("did not finish within 300ms"),
        "{err}"
    );
    // The process was killed and reaped before list_routes returned.
    let pid = std::fs::read_to_string(fake.dir.path().join("hang.pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "api-cli {} is still running",
        pid.trim()
    );
    assert_eq!(fake.calls(), vec![list_routes_call("hang1")]);
}

#[tokio::test]
async fn api_cli_failures_name_what_went_wrong() {
    let fake = Fake::new("1");
    let mut config = Ns8Config::new("127.0.0.1:1");
    config.api_cli = fake.dir.path().join("missing-api-cli");
    let ns8 = Ns8::new(config.clone());
    let err = ns8.list_routes("traefik1").await.unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");

    config.api_cli = fake.api_cli();
    let ns8 = Ns8::new(config);
    std::fs::write(fake.dir.path().join("traefik7.json"), "routes: none").unwrap();
    let err = ns8.list_routes("traefik7").await.unwrap_err();
    assert!(matches!(err, DiscoveryError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("run module/traefik7/list-routes`: route list is not a json array"),
        "{err}"
    );
    let err = ns8.list_routes("../x").await.unwrap_err();
    assert!(err.to_string().contains("is not a module id"), "{err}");
    let routes = ns8.list_routes("traefik2").await.unwrap();
    assert_eq!(routes.len(), 3);
}

#[tokio::test]
async fn ping_is_false_on_a_closed_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = Ns8Config::new(format!("127.0.0.1:{port}"));
    config.redis_timeout = Duration::from_secs(2);
    let ns8 = Ns8::new(config);
    let started = Instant::now();
    assert!(!ns8.ping().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = ns8.discover().await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("redis at 127.0.0.1:{port}: cannot connect")),
        "{err}"
    );
}
