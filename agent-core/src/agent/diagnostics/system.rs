//! The built-in `system` plugin (REFERENCE 3.7, through sysinfo): OS, load against the CPU
//! count, RAM, every mounted real filesystem, uptime.

use std::format;
use std::prelude::rust_2024::*;

use std::collections::BTreeMap;

use serde_json::json;
use sysinfo::{CpuRefreshKind, Disks, System};

use crate::document::{Check, Details, PluginReport, Status};

/// Filesystem types that hold no user data (kernel views, memory, containers' plumbing).
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "pstore",
    "securityfs",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "squashfs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "overlayfs-meta",
    "iso9660",
];

/// Limits of the `system` plugin: above `warning` is a warning, above `critical` critical.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// RAM use, percent.
    pub ram_warning: f64,
    /// RAM use, percent.
    pub ram_critical: f64,
    /// Use of each filesystem, percent.
    pub disk_warning: f64,
    /// Use of each filesystem, percent.
    pub disk_critical: f64,
    /// 1-minute load per CPU.
    pub load_warning: f64,
    /// 1-minute load per CPU.
    pub load_critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            ram_warning: 85.0,
            ram_critical: 95.0,
            disk_warning: 85.0,
            disk_critical: 95.0,
            load_warning: 1.0,
            load_critical: 2.0,
        }
    }
}

impl Thresholds {
    /// Parses `ram=85:95,disk=85:95,load=1:2` (any subset) over the defaults.
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("invalid threshold {item:?}, expected e.g. ram=85:95");
            let (key, range) = item.split_once('=').ok_or_else(bad)?;
            let (w, c) = range.split_once(':').ok_or_else(bad)?;
            let w: f64 = w.trim().parse().map_err(|_| bad())?;
            let c: f64 = c.trim().parse().map_err(|_| bad())?;
            if !(w.is_finite() && c.is_finite() && w >= 0.0 && w <= c) {
                return Err(format!(
                    "{item:?}: the warning limit must be 0 or more and at most the critical one"
                ));
            }
            match key.trim() {
                "ram" => (t.ram_warning, t.ram_critical) = (w, c),
                "disk" => (t.disk_warning, t.disk_critical) = (w, c),
                "load" => (t.load_warning, t.load_critical) = (w, c),
                other => {
                    return Err(format!(
                        "unknown threshold {other:?}, expected ram, disk or load"
                    ));
                }
            }
        }
        Ok(t)
    }
}

/// Above `critical` is critical, above `warning` a warning.
pub(super) fn judge(value: f64, warning: f64, critical: f64) -> Status {
    if value > critical {
        Status::Critical
    } else if value > warning {
        Status::Warning
    } else {
        Status::Ok
    }
}

fn check(name: &str, status: Status, value: String, details: serde_json::Value) -> Check {
    Check {
        name: name.to_owned(),
        status,
        value: Some(value),
        details: Some(Details(details)),
    }
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

/// A filesystem worth reporting.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Filesystem {
    pub mount: String,
    pub device: String,
    pub fs_type: String,
    pub total: u64,
    pub available: u64,
}

/// Drops pseudo filesystems and empty ones, and bind mounts of one device (the shortest mount
/// point stays).
pub(super) fn real_filesystems(all: Vec<Filesystem>) -> Vec<Filesystem> {
    let mut by_device: BTreeMap<(String, u64), Filesystem> = BTreeMap::new();
    for fs in all {
        if fs.total == 0 || PSEUDO_FILESYSTEMS.contains(&fs.fs_type.as_str()) {
            continue;
        }
        let key = (fs.device.clone(), fs.total);
        match by_device.get(&key) {
            Some(kept) if kept.mount.len() <= fs.mount.len() => {}
            _ => {
                by_device.insert(key, fs);
            }
        }
    }
    let mut out: Vec<Filesystem> = by_device.into_values().collect();
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    out
}

/// The `system` plugin's report.
pub(super) fn collect(t: &Thresholds) -> PluginReport {
    let os = match (System::name(), System::os_version()) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        (Some(name), None) => name,
        _ => "unknown".to_owned(),
    };
    let mut sys = System::new();
    sys.refresh_cpu_list(CpuRefreshKind::nothing());
    sys.refresh_memory();
    let cpus = sys.cpus().len().max(1);
    let load = System::load_average();
    let per_cpu = load.one / cpus as f64;
    let load_status = judge(per_cpu, t.load_warning, t.load_critical);
    let ram_total = sys.total_memory();
    let ram_available = sys.available_memory();
    let ram_pct = percent(ram_total.saturating_sub(ram_available), ram_total);
    let ram_status = judge(ram_pct, t.ram_warning, t.ram_critical);
    let disks = Disks::new_with_refreshed_list();
    let filesystems = real_filesystems(
        disks
            .list()
            .iter()
            .map(|d| Filesystem {
                mount: d.mount_point().to_string_lossy().into_owned(),
                device: d.name().to_string_lossy().into_owned(),
                fs_type: d.file_system().to_string_lossy().into_owned(),
                total: d.total_space(),
                available: d.available_space(),
            })
            .collect(),
    );
    let uptime = System::uptime();

    let mut checks = vec![
        check(
            "os",
            Status::Ok,
            os.clone(),
            json!({ "name": System::name(), "version": System::os_version(), "kernel": System::kernel_version() }),
        ),
        check(
            "load_average",
            load_status,
            format!("{:.2} {:.2} {:.2}", load.one, load.five, load.fifteen),
            json!({ "load_1m": load.one, "load_5m": load.five, "load_15m": load.fifteen, "cpu_count": cpus }),
        ),
        check(
            "ram_usage",
            ram_status,
            format!("{ram_pct:.1}%"),
            json!({ "total_bytes": ram_total, "available_bytes": ram_available, "used_pct": ram_pct }),
        ),
    ];
    let mut worst_disk: Option<(f64, String)> = None;
    let mut disk_statuses = Vec::new();
    for fs in &filesystems {
        let pct = percent(fs.total.saturating_sub(fs.available), fs.total);
        let status = judge(pct, t.disk_warning, t.disk_critical);
        disk_statuses.push(status);
        if worst_disk.as_ref().is_none_or(|(p, _)| pct > *p) {
            worst_disk = Some((pct, fs.mount.clone()));
        }
        checks.push(check(
            &format!("disk_usage:{}", fs.mount),
            status,
            format!("{pct:.1}%"),
            json!({ "mount_point": fs.mount, "device": fs.device, "filesystem": fs.fs_type, "total_bytes": fs.total, "available_bytes": fs.available, "used_pct": pct }),
        ));
    }
    let (days, hours, minutes) = (uptime / 86_400, uptime / 3600 % 24, uptime / 60 % 60);
    checks.push(check(
        "uptime",
        Status::Ok,
        format!("{days} days {hours} hours {minutes} minutes"),
        json!({ "days": days, "hours": hours, "minutes": minutes, "total_seconds": uptime }),
    ));
    let status = Status::worst(
        [load_status, ram_status]
            .into_iter()
            .chain(disk_statuses.iter().copied()),
    );
    let disks_text = match worst_disk {
        Some((pct, mount)) => format!(
            "{} filesystems, fullest {mount} at {pct:.0}%",
            filesystems.len()
        ),
        None => "no filesystems".to_owned(),
    };
    PluginReport {
        id: "system".to_owned(),
        name: "System".to_owned(),
        status,
        summary: Some(format!(
            "{os}; load {:.2} on {cpus} CPUs; RAM {ram_pct:.0}%; {disks_text}",
            load.one
        )),
        checks,
    }
}

/// The `system` entry when the plugin itself could not report.
pub(super) fn failed(status: Status, summary: &str) -> PluginReport {
    PluginReport {
        id: "system".to_owned(),
        name: "System".to_owned(),
        status,
        summary: Some(summary.to_owned()),
        checks: Vec::new(),
    }
}
