//! NethSecurity and OpenWrt adapters: the appliance's own web UI, found in its web server's
//! configuration.
//!
//! * [`NethSecurity`] (REFERENCE 3.3.3) publishes `nethsecurity-ui`, nginx's listener for the
//!   NethSecurity UI. Where it looks, in order: `/etc/nginx/conf.d/ns-ui.conf` (the extra UI
//!   instance, port 9090 by default); then, when `conf.d/00ns.locations` is enabled, the UCI
//!   servers of `/etc/config/nginx` that include `conf.d/*.locations` (the `_lan` server on
//!   443; the reference assumed 443 here); then every other `conf.d/*.conf`, in name order.
//! * [`OpenWrt`] publishes `luci`, uhttpd's listener from `/etc/config/uhttpd`.
//!
//! TLS listeners win over plain ones; see [`nginx::web_ui_target`] for the rest of the choice.
//! A file that cannot be parsed fails the round (so the previous result is kept) when it
//! decides the answer; a broken unrelated `conf.d` file is logged and skipped.

use std::boxed::Box;
use std::format;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use super::{Discover, DiscoverFuture, DiscoveryError, Paths, Services};
use crate::discovery::nginx::{self, Listen};
use crate::discovery::uci;
use crate::document::ServiceInfo;

/// nginx's drop-in directory on OpenWrt.
pub const NGINX_CONF_DIR: &str = "/etc/nginx/conf.d";
/// The file the `ns-ui` package writes for the extra UI instance.
pub const NS_UI_CONF: &str = "ns-ui.conf";
/// The NethSecurity UI locations; renamed to `.disabled` when the UI is off on 443.
pub const NS_UI_LOCATIONS: &str = "/etc/nginx/conf.d/00ns.locations";
/// OpenWrt's UCI configuration of nginx (its servers become `/etc/nginx/uci.conf`).
pub const NGINX_UCI: &str = "/etc/config/nginx";
/// uhttpd's UCI configuration.
pub const UHTTPD_UCI: &str = "/etc/config/uhttpd";
/// Where the kernel keeps the host name.
pub const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
/// The NethSecurity UI's service name.
pub const NETHSECURITY_SERVICE: &str = "nethsecurity-ui";
/// LuCI's service name.
pub const LUCI_SERVICE: &str = "luci";

/// The NethSecurity web UI behind nginx.
#[derive(Debug, Clone)]
pub struct NethSecurity {
    /// Where the appliance's files are.
    pub paths: Paths,
    /// The label; `None` reads the host name (fallback `NethSecurity`).
    pub hostname: Option<String>,
}

impl NethSecurity {
    /// The adapter for the files under `paths`, labelled with the host name.
    pub fn new(paths: Paths) -> Self {
        NethSecurity {
            paths,
            hostname: None,
        }
    }

    /// The UI's `(target, tls)` and the file it came from, or `None` (logged) when nginx
    /// has no listener for it.
    async fn find_ui(&self) -> Result<Option<(String, bool, PathBuf)>, DiscoveryError> {
        let dir = self.paths.file(NGINX_CONF_DIR);
        let mut others: Vec<Listen> = Vec::new();
        let mut sources: Vec<PathBuf> = Vec::new();
        let mut failure = None;
        let mut ns_ui_seen = false;
        for path in conf_files(&dir).await? {
            let Some(text) = read_optional(&path).await? else {
                continue;
            };
            let is_ns_ui = path.file_name().is_some_and(|n| n == NS_UI_CONF);
            match nginx::listens(&text) {
                Ok(listens) if is_ns_ui => {
                    ns_ui_seen = true;
                    if let Some((target, tls)) = nginx::web_ui_target(&listens) {
                        return Ok(Some((target, tls, path)));
                    }
                }
                Ok(listens) => {
                    sources.extend(listens.iter().map(|_| path.clone()));
                    others.extend(listens);
                }
                Err(e) if is_ns_ui => return Err(invalid(&path, e)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "skipping nginx configuration: {e}");
                    failure.get_or_insert(invalid(&path, e));
                }
            }
        }
        if let Some((target, tls, path)) = self.uci_lan_target().await? {
            return Ok(Some((target, tls, path)));
        }
        if let Some(chosen) = nginx::web_ui_listen(&others) {
            let source = others
                .iter()
                .position(|l| std::ptr::eq(l, chosen))
                .and_then(|i| sources.get(i).cloned())
                .unwrap_or(dir);
            return Ok(Some((chosen.dial_target(), chosen.ssl(), source)));
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        tracing::info!(
            dir = %dir.display(),
            ns_ui_conf = ns_ui_seen,
            "no nginx listener for the NethSecurity UI: nothing to publish"
        );
        Ok(None)
    }

    /// The UCI nginx servers that serve `conf.d/*.locations`, when the UI locations are
    /// enabled and nginx reads its UCI configuration (`nginx.global.uci_enable`).
    async fn uci_lan_target(&self) -> Result<Option<(String, bool, PathBuf)>, DiscoveryError> {
        if !is_file(&self.paths.file(NS_UI_LOCATIONS)).await {
            return Ok(None);
        }
        let path = self.paths.file(NGINX_UCI);
        let Some(text) = read_optional(&path).await? else {
            return Ok(None);
        };
        let sections = uci::parse(&text).map_err(|e| invalid(&path, e))?;
        let disabled = |v: &str| matches!(v, "0" | "false" | "no" | "off" | "disabled");
        if sections
            .iter()
            .filter(|s| s.kind == "main")
            .any(|s| s.option("uci_enable").is_some_and(disabled))
        {
            return Ok(None);
        }
        let mut listens = Vec::new();
        let serves_locations = |s: &&uci::Section| {
            s.kind == "server" && s.list("include").iter().any(|i| i.ends_with(".locations"))
        };
        for section in sections.iter().filter(serves_locations) {
            for value in section.list("listen") {
                let listen = nginx::parse_listen(value.split_whitespace(), section.line)
                    .map_err(|e| invalid(&path, e))?;
                listens.extend(listen);
            }
        }
        Ok(nginx::web_ui_target(&listens).map(|(target, tls)| (target, tls, path)))
    }
}

impl Discover for NethSecurity {
    fn name(&self) -> &str {
        "nethsecurity"
    }

    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(async move {
            let mut services = Services::new();
            let Some((target, tls, source)) = self.find_ui().await? else {
                return Ok(services);
            };
            check_target(&source, &target)?;
            let label = hostname(&self.paths, self.hostname.as_deref())
                .await
                .unwrap_or_else(|| String::from("NethSecurity"));
            tracing::debug!(%target, tls, file = %source.display(), "NethSecurity UI");
            services.insert(
                String::from(NETHSECURITY_SERVICE),
                ServiceInfo {
                    target,
                    // The reference presents this Host upstream; nginx's `_lan` server
                    // answers any name.
                    host: String::from("127.0.0.1"),
                    tls,
                    label,
                    path: String::from("/"),
                    ..ServiceInfo::default()
                },
            );
            Ok(services)
        })
    }
}

/// LuCI behind uhttpd (plain OpenWrt).
#[derive(Debug, Clone)]
pub struct OpenWrt {
    /// Where the appliance's files are.
    pub paths: Paths,
    /// The host name in the label; `None` reads it.
    pub hostname: Option<String>,
}

impl OpenWrt {
    /// The adapter for the files under `paths`, labelled with the host name.
    pub fn new(paths: Paths) -> Self {
        OpenWrt {
            paths,
            hostname: None,
        }
    }
}

impl Discover for OpenWrt {
    fn name(&self) -> &str {
        "openwrt"
    }

    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(async move {
            let mut services = Services::new();
            let path = self.paths.file(UHTTPD_UCI);
            let Some(text) = read_optional(&path).await? else {
                tracing::debug!(file = %path.display(), "no uhttpd configuration: no LuCI");
                return Ok(services);
            };
            let sections = uci::parse(&text).map_err(|e| invalid(&path, e))?;
            let target = uci::luci_target(&sections).map_err(|e| invalid(&path, e))?;
            let Some((target, tls)) = target else {
                tracing::info!(
                    file = %path.display(),
                    "no uhttpd listen_https or listen_http: LuCI not published"
                );
                return Ok(services);
            };
            check_target(&path, &target)?;
            let label = match hostname(&self.paths, self.hostname.as_deref()).await {
                Some(host) => format!("LuCI ({host})"),
                None => String::from("LuCI"),
            };
            services.insert(
                String::from(LUCI_SERVICE),
                ServiceInfo {
                    target,
                    tls,
                    label,
                    // uhttpd's `/` redirects to `/cgi-bin/luci/`. A deeper `path` would make
                    // the relay prepend it to every request outside it (REFERENCE 2.10 step
                    // 5), breaking `/luci-static/` and `/ubus`.
                    path: String::from("/"),
                    ..ServiceInfo::default()
                },
            );
            Ok(services)
        })
    }
}

/// The `*.conf` files of `dir` (following symlinks), in name order.
async fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, DiscoveryError> {
    let read_error = |source| DiscoveryError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(read_error)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(read_error)? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "conf") && is_file(&path).await {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// A file's text, `None` when it does not exist (`ns-ui` rewrites and removes its file).
async fn read_optional(path: &Path) -> Result<Option<String>, DiscoveryError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DiscoveryError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn invalid(path: &Path, e: impl ToString) -> DiscoveryError {
    DiscoveryError::Invalid {
        what: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A target the manifest accepts (an nginx host name could be anything).
fn check_target(source: &Path, target: &str) -> Result<(), DiscoveryError> {
    crate::policy::validate_target_syntax(target)
        .map_err(|e| invalid(source, format!("listen target {target:?}: {e}")))
}

/// The configured name, else the kernel's (under the root, so tests can supply it), else
/// the system's.
async fn hostname(paths: &Paths, configured: Option<&str>) -> Option<String> {
    if let Some(name) = configured.map(str::trim).filter(|n| !n.is_empty()) {
        return Some(String::from(name));
    }
    if let Ok(text) = tokio::fs::read_to_string(paths.file(HOSTNAME_FILE)).await
        && !text.trim().is_empty()
    {
        return Some(String::from(text.trim()));
    }
    sysinfo::System::host_name().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::discovery::{Platform, detect};
    use std::future::Ready;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// A copy of a fixture root in a temporary directory, to vary.
    fn copy_fixture(name: &str) -> tempfile::TempDir {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy(&fixture(name), dir.path());
        dir
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn nethsecurity(root: &Path) -> NethSecurity {
        NethSecurity {
            paths: Paths {
                root: root.to_path_buf(),
            },
            hostname: Some(String::from("fw1.example.org")),
        }
    }

    fn openwrt(root: &Path) -> OpenWrt {
        OpenWrt {
            paths: Paths {
                root: root.to_path_buf(),
            },
            hostname: Some(String::from("router")),
        }
    }

    /// The only service published, by name.
    async fn only(adapter: &dyn Discover) -> (String, ServiceInfo) {
        let services = adapter.discover().await.unwrap();
        assert_eq!(services.len(), 1, "{services:?}");
        services.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn publishes_the_nethsecurity_ui_from_ns_ui_conf() {
        let (name, info) = only(&nethsecurity(&fixture("nethsecurity"))).await;
        assert_eq!(name, "nethsecurity-ui");
        assert_eq!(
            info,
            ServiceInfo {
                target: String::from("127.0.0.1:9090"),
                host: String::from("127.0.0.1"),
                tls: true,
                label: String::from("fw1.example.org"),
                path: String::from("/"),
                ..ServiceInfo::default()
            }
        );
    }

    #[tokio::test]
    async fn prefers_ns_ui_conf_over_other_files() {
        let root = copy_fixture("nethsecurity");
        write(
            root.path(),
            "etc/nginx/conf.d/00-other.conf",
            "server { listen 8443 ssl; }",
        );
        let (_, info) = only(&nethsecurity(root.path())).await;
        assert_eq!(info.target, "127.0.0.1:9090");
    }

    #[tokio::test]
    async fn falls_back_to_the_uci_lan_server_without_ns_ui_conf() {
        let root = copy_fixture("nethsecurity");
        std::fs::remove_file(root.path().join("etc/nginx/conf.d/ns-ui.conf")).unwrap();
        write(
            root.path(),
            "etc/nginx/conf.d/zz-other.conf",
            "server { listen 8443 ssl; }",
        );
        let (_, info) = only(&nethsecurity(root.path())).await;
        assert_eq!((info.target.as_str(), info.tls), ("127.0.0.1:443", true));
    }

    #[tokio::test]
    async fn uses_other_conf_files_when_the_ui_is_off_on_443() {
        let root = copy_fixture("nethsecurity");
        let conf_d = root.path().join("etc/nginx/conf.d");
        std::fs::remove_file(conf_d.join("ns-ui.conf")).unwrap();
        std::fs::rename(
            conf_d.join("00ns.locations"),
            conf_d.join("00ns.locations.disabled"),
        )
        .unwrap();
        write(
            root.path(),
            "etc/nginx/conf.d/a.conf",
            "server { listen 8080; }",
        );
        write(
            root.path(),
            "etc/nginx/conf.d/b.conf",
            "server { listen [::]:8443 ssl; }",
        );
        let (_, info) = only(&nethsecurity(root.path())).await;
        assert_eq!((info.target.as_str(), info.tls), ("[::1]:8443", true));
    }

    #[tokio::test]
    async fn publishes_nothing_without_a_listener() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "etc/nginx/conf.d/ns-ui.conf",
            "# listen 9090 ssl;\n",
        );
        let services = nethsecurity(root.path()).discover().await.unwrap();
        assert!(services.is_empty(), "{services:?}");
    }

    #[tokio::test]
    async fn fails_when_the_conf_dir_is_unreadable() {
        let root = tempfile::tempdir().unwrap();
        let err = nethsecurity(root.path()).discover().await.unwrap_err();
        assert!(matches!(err, DiscoveryError::Read { .. }), "{err}");
    }

    #[tokio::test]
    async fn fails_on_a_malformed_ns_ui_conf_naming_file_and_line() {
        let root = copy_fixture("nethsecurity");
        write(
            root.path(),
            "etc/nginx/conf.d/ns-ui.conf",
            "server {\n\tlisten 90900 ssl;\n}\n",
        );
        let err = nethsecurity(root.path()).discover().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DiscoveryError::Invalid { .. }), "{text}");
        assert!(
            text.contains("ns-ui.conf") && text.contains("line 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn skips_a_malformed_unrelated_file() {
        let root = copy_fixture("nethsecurity");
        write(
            root.path(),
            "etc/nginx/conf.d/broken.conf",
            "server { listen 80;",
        );
        let (_, info) = only(&nethsecurity(root.path())).await;
        assert_eq!(info.target, "127.0.0.1:9090");
    }

    #[tokio::test]
    async fn fails_when_only_a_malformed_file_could_answer() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "etc/nginx/conf.d/broken.conf",
            "server { listen 'x; }",
        );
        let err = nethsecurity(root.path()).discover().await.unwrap_err();
        assert!(err.to_string().contains("broken.conf"), "{err}");
    }

    #[tokio::test]
    async fn labels_with_the_kernel_host_name() {
        let root = copy_fixture("nethsecurity");
        write(root.path(), "proc/sys/kernel/hostname", "gw-milano\n");
        let adapter = NethSecurity::new(Paths {
            root: root.path().to_path_buf(),
        });
        let (_, info) = only(&adapter).await;
        assert_eq!(info.label, "gw-milano");
        let adapter = OpenWrt::new(Paths {
            root: root.path().to_path_buf(),
        });
        write(
            root.path(),
            "etc/config/uhttpd",
            "config uhttpd main\n list listen_http 80\n",
        );
        let (_, info) = only(&adapter).await;
        assert_eq!(info.label, "LuCI (gw-milano)");
    }

    #[tokio::test]
    async fn publishes_luci_from_uhttpd() {
        let (name, info) = only(&openwrt(&fixture("openwrt"))).await;
        assert_eq!(name, "luci");
        assert_eq!(
            info,
            ServiceInfo {
                target: String::from("127.0.0.1:443"),
                tls: true,
                label: String::from("LuCI (router)"),
                path: String::from("/"),
                ..ServiceInfo::default()
            }
        );
    }

    #[tokio::test]
    async fn publishes_plain_http_luci_without_https() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "etc/config/uhttpd",
            "config uhttpd 'main'\n\tlist listen_http '0.0.0.0:8080'\n\tlist listen_http '[::]:8080'\n",
        );
        let (_, info) = only(&openwrt(root.path())).await;
        assert_eq!((info.target.as_str(), info.tls), ("127.0.0.1:8080", false));
    }

    #[tokio::test]
    async fn publishes_nothing_without_uhttpd() {
        let root = tempfile::tempdir().unwrap();
        assert!(openwrt(root.path()).discover().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn fails_on_a_malformed_uhttpd_config() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "etc/config/uhttpd",
            "config uhttpd main\n\tlist listen_https '0.0.0.0:443\n",
        );
        let err = openwrt(root.path()).discover().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DiscoveryError::Invalid { .. }), "{text}");
        assert!(text.contains("uhttpd") && text.contains("line 2"), "{text}");
    }

    #[tokio::test]
    async fn fixtures_are_detected_as_their_platform() {
        let paths = |name| Paths {
            root: fixture(name),
        };
        let no_ns8 = None::<fn() -> Ready<bool>>;
        assert_eq!(
            detect(&paths("nethsecurity"), no_ns8).await,
            Platform::NethSecurity
        );
        assert_eq!(detect(&paths("openwrt"), no_ns8).await, Platform::OpenWrt);
    }
}
