//! The runner against real executables written to a temporary directory, and the plugins
//! shipped in `plugins/` run through it with fake commands on `PATH`.

use std::os::unix::fs::PermissionsExt as _;

use super::system::{Filesystem, judge, real_filesystems};
use super::*;

fn write_plugin(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn config(dir: &Path, plugin_timeout: Duration, total_timeout: Duration) -> DiagnosticsConfig {
    DiagnosticsConfig {
        dir: Some(dir.to_owned()),
        plugin_timeout,
        total_timeout,
        ..DiagnosticsConfig::default()
    }
}

fn plugin<'a>(c: &'a Collection, id: &str) -> &'a PluginReport {
    c.report
        .plugins
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| std::panic!("no plugin {id} in {:#?}", c.report))
}

fn run_of<'a>(c: &'a Collection, id: &str) -> &'a PluginRun {
    c.runs.iter().find(|r| r.report.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sleeping_plugins_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        write_plugin(
            dir.path(),
            &format!("p{i}.sh"),
            "sleep 1; echo 'slept | t=1s'",
            0o755,
        );
    }
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(10),
        Duration::from_secs(30),
    ))
    .await;
    assert_eq!(c.runs.len(), 10);
    let last_start = c.runs.iter().map(|r| r.started_at).max().unwrap();
    let first_end = c.runs.iter().map(|r| r.finished_at).min().unwrap();
    for r in &c.runs {
        assert_eq!(r.report.status, Status::Ok, "{:?}", r.report);
        let took = r.finished_at.duration_since(r.started_at).unwrap();
        assert!(took >= Duration::from_secs(1), "{took:?}");
    }
    // Every plugin had started before any finished: they ran together.
    assert!(last_start < first_end, "{last_start:?} !< {first_end:?}");
    assert_eq!(plugin(&c, "p3").summary.as_deref(), Some("slept"));
}

#[tokio::test]
async fn a_grandchild_holding_stdout_does_not_hang_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(
        dir.path(),
        "bg.sh",
        "(sleep 60 &)\necho 'started | x=1'",
        0o755,
    );
    let started = Instant::now();
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(20),
        Duration::from_secs(30),
    ))
    .await;
    let run = run_of(&c, "bg");
    assert_eq!(run.report.status, Status::Ok, "{:?}", run.report);
    assert_eq!(run.report.summary.as_deref(), Some("started"));
    let took = run.finished_at.duration_since(run.started_at).unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_grandchild_that_leaves_the_group_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    if std::process::Command::new("setsid")
        .arg("--version")
        .output()
        .is_err()
    {
        return;
    }
    write_plugin(dir.path(), "away.sh", "setsid sleep 60 &\necho 'ok'", 0o755);
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(20),
        Duration::from_secs(30),
    ))
    .await;
    let run = run_of(&c, "away");
    assert_eq!(run.report.status, Status::Ok, "{:?}", run.report);
    let took = run.finished_at.duration_since(run.started_at).unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn ten_mib_of_output_is_capped_drained_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(
        dir.path(),
        "chatty.sh",
        "echo 'lots of output'\nhead -c 10485760 /dev/zero | tr '\\0' x\nexit 1",
        0o755,
    );
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(20),
        Duration::from_secs(30),
    ))
    .await;
    let run = run_of(&c, "chatty");
    assert!(!run.timed_out);
    assert_eq!(run.exit_code, Some(1));
    assert_eq!(
        run.stdout_bytes,
        10 * 1024 * 1024 + "lots of output\n".len() as u64
    );
    assert_eq!(run.report.status, Status::Warning);
    assert_eq!(run.report.summary.as_deref(), Some("lots of output"));
}

#[tokio::test]
async fn exit_3_is_unknown_and_stderr_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path(), "unk", "echo 'cannot tell' >&2; exit 3", 0o755);
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .await;
    let run = run_of(&c, "unk");
    assert_eq!(run.report.status, Status::Unknown);
    assert_eq!(run.stderr.trim(), "cannot tell");
    assert_eq!(run.report.summary.as_deref(), Some("cannot tell"));
    assert!(c.report.overall_status >= Status::Unknown);
}

#[tokio::test]
async fn unsafe_entries_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let open = write_plugin(dir.path(), "open.sh", "echo hi", 0o777);
    write_plugin(dir.path(), "group.sh", "echo hi", 0o775);
    write_plugin(dir.path(), "noexec.sh", "echo hi", 0o644);
    std::os::unix::fs::symlink(&open, dir.path().join("link.sh")).unwrap();
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    write_plugin(dir.path(), "fine.sh", "echo hi", 0o700);
    let (run, skipped) = discover(dir.path());
    assert_eq!(run, [dir.path().join("fine.sh")]);
    let reason = |name: &str| {
        skipped
            .iter()
            .find(|s| s.path == dir.path().join(name))
            .map(|s| s.reason.clone())
            .unwrap()
    };
    assert!(reason("open.sh").contains("writable by group or others"));
    assert!(reason("group.sh").contains("writable by group or others"));
    assert!(reason("noexec.sh").contains("not executable"));
    assert!(reason("link.sh").contains("symbolic link"));
    assert!(reason("subdir").contains("not a regular file"));
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .await;
    let ids: Vec<_> = c.report.plugins.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["system", "fine"]);
    assert_eq!(c.skipped.len(), 5);
}

#[tokio::test]
async fn a_plugin_that_never_exits_is_a_timeout_and_the_report_still_comes() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(
        dir.path(),
        "hang.sh",
        "echo 'partial | x=1'\nexec sleep 600",
        0o755,
    );
    write_plugin(dir.path(), "quick.sh", "echo fine", 0o755);
    let started = Instant::now();
    let c = collect(&config(
        dir.path(),
        Duration::from_millis(500),
        Duration::from_secs(5),
    ))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let hang = plugin(&c, "hang");
    assert_eq!(hang.status, Status::Timeout);
    assert!(hang.summary.as_deref().unwrap().contains("plugin timeout"));
    assert_eq!(plugin(&c, "quick").status, Status::Ok);
    assert!(c.report.overall_status >= Status::Timeout);
}

#[tokio::test]
async fn the_total_deadline_sends_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(dir.path(), "slow.sh", "sleep 600", 0o755);
    write_plugin(dir.path(), "quick.sh", "echo fine", 0o755);
    let started = Instant::now();
    let c = collect(&config(
        dir.path(),
        Duration::from_secs(60),
        Duration::from_millis(800),
    ))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let slow = plugin(&c, "slow");
    assert_eq!(slow.status, Status::Timeout);
    assert!(slow.summary.as_deref().unwrap().contains("total timeout"));
    assert_eq!(plugin(&c, "quick").summary.as_deref(), Some("fine"));
}

#[tokio::test]
async fn plugins_get_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    write_plugin(
        dir.path(),
        "env.sh",
        "printf '{\"summary\":\"%s\"}' \"$(env | grep -v '^PWD=' | sort | tr '\\n' ' ')\"",
        0o755,
    );
    let mut cfg = config(dir.path(), Duration::from_secs(5), Duration::from_secs(10));
    cfg.context = vec![("TETHER_NODE_ID".into(), "7".into())];
    let c = collect(&cfg).await;
    let summary = plugin(&c, "env").summary.clone().unwrap();
    let names: Vec<&str> = summary
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    // Only PATH and TETHER_* (plus what the shell itself sets).
    for name in &names {
        assert!(
            *name == "PATH"
                || name.starts_with("TETHER_")
                || ["SHLVL", "_", "OLDPWD"].contains(name),
            "{summary}"
        );
    }
    for want in [
        format!("PATH={PLUGIN_PATH}"),
        "TETHER_NODE_ID=7".into(),
        "TETHER_PLUGIN_ID=env".into(),
        "TETHER_PLUGIN_TIMEOUT=5".into(),
    ] {
        assert!(summary.contains(&want), "{want} not in {summary}");
    }
}

#[tokio::test]
async fn the_system_plugin_reports_every_check() {
    let c = collect(&DiagnosticsConfig {
        dir: None,
        ..DiagnosticsConfig::default()
    })
    .await;
    let system = plugin(&c, "system");
    let names: Vec<_> = system.checks.iter().map(|c| c.name.as_str()).collect();
    for want in ["os", "load_average", "ram_usage", "uptime"] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("disk_usage:")),
        "{names:?}"
    );
    assert_eq!(c.report.overall_status, system.status);
}

#[test]
fn system_thresholds_parse_and_judge() {
    let t = Thresholds::parse("ram=80:90, load=2:4").unwrap();
    assert_eq!((t.ram_warning, t.ram_critical), (80.0, 90.0));
    assert_eq!((t.load_warning, t.load_critical), (2.0, 4.0));
    assert_eq!(t.disk_warning, 85.0);
    assert!(Thresholds::parse("ram=95:85").is_err());
    assert!(Thresholds::parse("cpu=1:2").is_err());
    assert_eq!(judge(85.0, 85.0, 95.0), Status::Ok);
    assert_eq!(judge(85.1, 85.0, 95.0), Status::Warning);
    assert_eq!(judge(95.1, 85.0, 95.0), Status::Critical);
}

#[test]
fn pseudo_filesystems_and_bind_mounts_are_left_out() {
    let fs = |mount: &str, device: &str, fs_type: &str, total: u64| Filesystem {
        mount: mount.into(),
        device: device.into(),
        fs_type: fs_type.into(),
        total,
        available: total / 2,
    };
    let kept = real_filesystems(vec![
        fs("/", "/dev/sda1", "ext4", 100),
        fs("/etc/hosts", "/dev/sda1", "ext4", 100),
        fs("/var", "/dev/sdb1", "xfs", 200),
        fs("/proc", "proc", "proc", 0),
        fs("/run", "tmpfs", "tmpfs", 50),
    ]);
    let mounts: Vec<_> = kept.iter().map(|f| f.mount.as_str()).collect();
    assert_eq!(mounts, ["/", "/var"]);
}

/// The shipped shell plugins, run through the runner with fake commands first on `PATH`.
mod shipped {
    use super::*;

    fn plugins_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
    }

    /// A temp dir with the plugin copied in (mode 0755) and a `bin/` of fake commands.
    fn setup(plugin: &str, fakes: &[(&str, &str)]) -> (tempfile::TempDir, DiagnosticsConfig) {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::create_dir(&bin).unwrap();
        let body = std::fs::read_to_string(plugins_dir().join(plugin)).unwrap();
        let path = plugins.join(plugin);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, script) in fakes {
            write_plugin(&bin, name, script, 0o755);
        }
        let mut cfg = config(&plugins, Duration::from_secs(10), Duration::from_secs(20));
        cfg.path = format!("{}:{PLUGIN_PATH}", bin.display());
        (dir, cfg)
    }

    async fn report_of(plugin: &str, fakes: &[(&str, &str)]) -> PluginReport {
        let (_dir, cfg) = setup(plugin, fakes);
        let c = collect(&cfg).await;
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        c.report.plugins.into_iter().nth(1).unwrap()
    }

    #[tokio::test]
    async fn systemd_units_failed_and_inactive() {
        let fake = r#"
case "$1 $2" in
  "--failed --no-legend") echo "  broken.service loaded failed failed Broken thing" ;;
  "is-active sshd.service") echo active ;;
  "is-active nginx.service") echo inactive; exit 3 ;;
esac"#;
        let (dir, mut cfg) = setup("systemd-units.sh", &[("systemctl", fake)]);
        let units = dir.path().join("units");
        std::fs::write(&units, "sshd.service\nnginx.service\n").unwrap();
        cfg.context.push((
            "TETHER_SYSTEMD_UNITS_FILE".into(),
            units.display().to_string(),
        ));
        let c = collect(&cfg).await;
        let r = &c.report.plugins[1];
        assert_eq!(r.id, "systemd-units");
        assert_eq!(r.status, Status::Critical, "{r:?}");
        let find = |n: &str| r.checks.iter().find(|c| c.name == n).unwrap().status;
        assert_eq!(find("broken.service"), Status::Critical);
        assert_eq!(find("sshd.service"), Status::Ok);
        assert_eq!(find("nginx.service"), Status::Critical);

        let healthy = "case \"$1\" in --failed) ;; is-active) echo active ;; esac";
        let r = report_of("systemd-units.sh", &[("systemctl", healthy)]).await;
        assert_eq!(r.status, Status::Ok, "{r:?}");
    }

    #[tokio::test]
    async fn inodes_judged_per_filesystem() {
        let fake = r#"cat <<'EOF'
Filesystem      Inodes  IUsed   IFree IUse% Mounted on
/dev/sda1      1000000 500000  500000   50% /
/dev/sdb1      1000000 910000   90000   91% /var
/dev/sdc1      1000000 990000   10000   99% /srv
tmpfs            10000     10    9990    1% /run
EOF"#;
        let r = report_of("inodes.sh", &[("df", fake)]).await;
        assert_eq!(r.status, Status::Critical, "{r:?}");
        let find = |n: &str| r.checks.iter().find(|c| c.name == n).map(|c| c.status);
        assert_eq!(find("/"), Some(Status::Ok));
        assert_eq!(find("/var"), Some(Status::Warning));
        assert_eq!(find("/srv"), Some(Status::Critical));
        assert_eq!(find("/run"), None);
        assert!(r.summary.unwrap().starts_with("INODES CRITICAL"));
    }

    #[tokio::test]
    async fn tls_certificate_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let soon = dir.path().join("soon.pem");
        let later = dir.path().join("later.pem");
        std::fs::write(&soon, "x").unwrap();
        std::fs::write(&later, "x").unwrap();
        // A fake openssl: "soon" expires in 5 days, "later" in a year.
        let fake = r#"
for a in "$@"; do case "$a" in *soon*) f=soon ;; *later*) f=later ;; esac; done
case "$*" in
  *-checkend\ 0*) exit 0 ;;
  *-checkend*) n=$(echo "$*" | sed 's/.*-checkend \([0-9]*\).*/\1/'); if [ "$f" = soon ] && [ "$n" -gt 432000 ]; then echo "will expire"; exit 1; fi; echo "will not expire"; exit 0 ;;
  *-enddate*) echo "notAfter=Jan  1 00:00:00 2030 GMT" ;;
esac"#;
        let (tmp, mut cfg) = setup("tls-expiry.sh", &[("openssl", fake)]);
        let list = tmp.path().join("certs");
        std::fs::write(&list, format!("{}\n{}\n", soon.display(), later.display())).unwrap();
        cfg.context
            .push(("TETHER_TLS_CERTS_FILE".into(), list.display().to_string()));
        let c = collect(&cfg).await;
        let r = &c.report.plugins[1];
        assert_eq!(r.id, "tls-expiry");
        assert_eq!(r.status, Status::Critical, "{r:?}");
        let find = |n: &Path| {
            r.checks
                .iter()
                .find(|c| c.name == n.display().to_string())
                .unwrap()
                .status
        };
        assert_eq!(find(&soon), Status::Critical);
        assert_eq!(find(&later), Status::Ok);
    }
}
