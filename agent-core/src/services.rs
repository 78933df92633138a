//! The static-service syntax (REFERENCE 3.3.1), the agent's service catalogue and the
//! `COMMAND 1` rules that change it (PROTOCOL section 4, REFERENCE 3.4).

use alloc::collections::BTreeMap;
use alloc::string::String;

use crate::document::{Command, Manifest, ServiceInfo};
use crate::policy::{self, PolicyError};

/// Most services one `add_services` command may carry.
pub const MAX_SERVICES_PER_COMMAND: usize = 10;
/// Most services the agent publishes (the relay's manifest limit).
pub const MAX_SERVICES_TOTAL: usize = 500;
/// Longest `STATIC_SERVICES` specification.
pub const MAX_STATIC_SPEC: usize = 64 * 1024;

/// Why a command was refused. Display is exactly the text the agent sends after `ERROR `.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A `COMMAND` header with a version other than 1.
    #[error("unsupported command version {0:?}")]
    UnsupportedVersion(String),
    /// A payload over [`crate::document::MAX_COMMAND_BYTES`].
    #[error("invalid json: command of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A payload that is not a JSON command object.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// An `action` this agent does not know.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// `add_services` without services.
    #[error("no services provided")]
    NoServices,
    /// `add_services` with more than [`MAX_SERVICES_PER_COMMAND`] services.
    #[error("too many services: {0}, at most 10 per command")]
    TooManyServices(usize),
    /// A name outside the injected-name grammar.
    #[error("invalid service name {name:?}: {reason}")]
    InvalidServiceName { name: String, reason: PolicyError },
    /// A name a discovered service already has.
    #[error("invalid service name {0:?}: a discovered service already has this name")]
    NameTaken(String),
    /// A target the target policy refuses.
    #[error("target of {name:?} refused: {reason}")]
    TargetRefused { name: String, reason: PolicyError },
    /// An upstream `host` the relay would drop.
    #[error("host of {name:?} refused: {reason}")]
    HostRefused { name: String, reason: PolicyError },
    /// The catalogue would exceed [`MAX_SERVICES_TOTAL`].
    #[error("too many services in total: at most 500")]
    TooManyInTotal,
    /// `remove_services` without names.
    #[error("no service names provided")]
    NoServiceNames,
}

impl Command {
    /// The checks that need no catalogue: counts, names, target policy (syntax and literal IPs;
    /// resolving names is the runtime's job). The relay runs them before sending a command.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Command::AddServices { services } => {
                if services.is_empty() {
                    return Err(CommandError::NoServices);
                }
                if services.len() > MAX_SERVICES_PER_COMMAND {
                    return Err(CommandError::TooManyServices(services.len()));
                }
                for (name, info) in services {
                    let named = || String::from(name.as_str());
                    policy::validate_injected_name(name).map_err(|reason| {
                        CommandError::InvalidServiceName {
                            name: named(),
                            reason,
                        }
                    })?;
                    policy::check_target(&info.target).map_err(|reason| {
                        CommandError::TargetRefused {
                            name: named(),
                            reason,
                        }
                    })?;
                    policy::validate_upstream_host(&info.host).map_err(|reason| {
                        CommandError::HostRefused {
                            name: named(),
                            reason,
                        }
                    })?;
                }
                Ok(())
            }
            Command::RemoveServices { service_names } if service_names.is_empty() => {
                Err(CommandError::NoServiceNames)
            }
            Command::RemoveServices { .. } => Ok(()),
        }
    }
}

/// What was wrong with a static-services specification.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticServiceError {
    /// An entry without `=`.
    #[error("static service {entry:?} has no '=', expected name=host:port[:host=vhost][:tls]")]
    MissingEquals { entry: String },
    /// An entry whose name is not a valid service name.
    #[error("static service {entry:?} has an invalid name: {reason}")]
    BadName { entry: String, reason: PolicyError },
    /// An entry whose target is not `host:port`.
    #[error("static service {entry:?} has an invalid target: {reason}")]
    BadTarget { entry: String, reason: PolicyError },
    /// An entry whose `:host=` value the relay would refuse.
    #[error("static service {entry:?} has an invalid host: {reason}")]
    BadHost { entry: String, reason: PolicyError },
    /// The same name twice.
    #[error("static service {name:?} is defined twice")]
    Duplicate { name: String },
    /// More than [`MAX_SERVICES_TOTAL`] entries.
    #[error("too many static services: {count}, at most {max}")]
    TooMany { count: usize, max: usize },
    /// A specification longer than [`MAX_STATIC_SPEC`].
    #[error("static services specification of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
}

/// Parses `name=host:port[:host=vhost][:tls]`, comma separated (entries trimmed, empty ones
/// skipped); label = name. Names must pass [`policy::validate_connect_name`], targets
/// [`policy::validate_target_syntax`] (no address policy: the device's own configuration may
/// name any address), hosts [`policy::validate_upstream_host`]. A malformed entry is an error
/// naming it.
pub fn parse_static_services(
    spec: &str,
) -> Result<BTreeMap<String, ServiceInfo>, StaticServiceError> {
    if spec.len() > MAX_STATIC_SPEC {
        return Err(StaticServiceError::TooLong {
            len: spec.len(),
            max: MAX_STATIC_SPEC,
        });
    }
    let mut services = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let owned = || String::from(entry);
        let (name, rest) = entry
            .split_once('=')
            .ok_or_else(|| StaticServiceError::MissingEquals { entry: owned() })?;
        policy::validate_connect_name(name).map_err(|reason| StaticServiceError::BadName {
            entry: owned(),
            reason,
        })?;
        let (rest, tls) = match rest.strip_suffix(":tls") {
            Some(rest) => (rest, true),
            None => (rest, false),
        };
        let (target, host) = rest.split_once(":host=").unwrap_or((rest, ""));
        policy::validate_target_syntax(target).map_err(|reason| StaticServiceError::BadTarget {
            entry: owned(),
            reason,
        })?;
        policy::validate_upstream_host(host).map_err(|reason| StaticServiceError::BadHost {
            entry: owned(),
            reason,
        })?;
        let info = ServiceInfo {
            target: String::from(target),
            host: String::from(host),
            tls,
            label: String::from(name),
            ..ServiceInfo::default()
        };
        if services.insert(String::from(name), info).is_some() {
            return Err(StaticServiceError::Duplicate {
                name: String::from(name),
            });
        }
        if services.len() > MAX_SERVICES_TOTAL {
            return Err(StaticServiceError::TooMany {
                count: services.len(),
                max: MAX_SERVICES_TOTAL,
            });
        }
    }
    Ok(services)
}

/// The agent's services: discovered ones plus those injected by `add_services`.
///
/// A discovered service wins over an injected one of the same name (`add_services` refuses
/// such names). The published view holds at most [`MAX_SERVICES_TOTAL`] services: discovered
/// ones in name order first, then injected ones, so what is cut is deterministic.
#[derive(Debug, Clone, Default)]
pub struct ServiceCatalogue {
    discovered: BTreeMap<String, ServiceInfo>,
    injected: BTreeMap<String, ServiceInfo>,
    view: BTreeMap<String, ServiceInfo>,
}

impl ServiceCatalogue {
    /// A catalogue of discovered services and nothing injected.
    pub fn new(discovered: BTreeMap<String, ServiceInfo>) -> Self {
        let mut catalogue = ServiceCatalogue::default();
        catalogue.set_discovered(discovered);
        catalogue
    }

    /// Replaces the discovered services (an empty set is allowed); whether the published view
    /// changed.
    pub fn set_discovered(&mut self, discovered: BTreeMap<String, ServiceInfo>) -> bool {
        self.discovered = discovered;
        self.rebuild()
    }

    /// A published service by name.
    pub fn get(&self, name: &str) -> Option<&ServiceInfo> {
        self.view.get(name)
    }

    /// The published services.
    pub fn services(&self) -> &BTreeMap<String, ServiceInfo> {
        &self.view
    }

    /// The manifest to send: version 1 and the published view.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            version: 1,
            services: self.view.clone(),
        }
    }

    /// Whether `name` was injected by `add_services` (and not removed since).
    pub fn is_injected(&self, name: &str) -> bool {
        self.injected.contains_key(name)
    }

    /// Applies a command, all or nothing; Ok(whether the published view changed).
    ///
    /// `remove_services` removes only injected names and succeeds when none of them exist.
    pub fn apply(&mut self, command: &Command) -> Result<bool, CommandError> {
        command.validate()?;
        match command {
            Command::AddServices { services } => {
                if let Some(name) = services.keys().find(|n| self.discovered.contains_key(*n)) {
                    return Err(CommandError::NameTaken(name.clone()));
                }
                let new_names = services
                    .keys()
                    .filter(|n| !self.injected.contains_key(*n))
                    .count();
                let total = self.discovered.len() + self.injected.len() + new_names;
                if total > MAX_SERVICES_TOTAL {
                    return Err(CommandError::TooManyInTotal);
                }
                for (name, info) in services {
                    self.injected.insert(name.clone(), info.clone());
                }
            }
            Command::RemoveServices { service_names } => {
                for name in service_names {
                    self.injected.remove(name);
                }
            }
        }
        Ok(self.rebuild())
    }

    /// Recomputes the published view; whether it changed.
    fn rebuild(&mut self) -> bool {
        let injected = self
            .injected
            .iter()
            .filter(|(name, _)| !self.discovered.contains_key(*name));
        let view: BTreeMap<String, ServiceInfo> = self
            .discovered
            .iter()
            .chain(injected)
            .take(MAX_SERVICES_TOTAL)
            .map(|(name, info)| (name.clone(), info.clone()))
            .collect();
        let changed = view != self.view;
        self.view = view;
        changed
    }
}

#[cfg(test)]
mod tests;
