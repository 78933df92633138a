//! The crash-recovery state file: every account the agent is creating or has created, written
//! before the command that creates it, so that a crash at any point leaves a trace the next
//! start deletes. It holds names only, never a password.

use std::prelude::rust_2024::*;

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the state file lives unless configured otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/run/tether-users.json";
/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 1024 * 1024;

/// Something the agent creates on the device and must delete.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Account {
    /// An NS8 cluster administrator (`cluster/add-user`).
    Ns8ClusterAdmin {
        /// User name.
        user: String,
    },
    /// An NS8 user of a domain, created in the domain's provider module.
    Ns8DomainUser {
        /// Provider module id (`samba1`, `openldap2`).
        module: String,
        /// Domain name.
        domain: String,
        /// User name.
        user: String,
    },
    /// A NethSecurity local user with the admin role.
    NethsecurityAdmin {
        /// User name.
        user: String,
    },
}

impl Account {
    /// The user name.
    pub fn user(&self) -> &str {
        match self {
            Account::Ns8ClusterAdmin { user }
            | Account::Ns8DomainUser { user, .. }
            | Account::NethsecurityAdmin { user } => user,
        }
    }
}

/// One account of the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The account.
    pub account: Account,
    /// False while its creation is under way (or failed half-way).
    pub created: bool,
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Accounts in creation order.
    pub entries: Vec<Entry>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            entries: Vec::new(),
        }
    }
}

/// Why the state file could not be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read the support users state file {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Writing (or removing) failed.
    #[error("cannot write the support users state file {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The content is not a state file.
    #[error("the support users state file {path} is not valid")]
    Invalid {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A state file of another format version.
    #[error("the support users state file {path} has version {version}, expected {STATE_VERSION}")]
    Version { path: String, version: u32 },
    /// A state file over [`MAX_STATE_BYTES`].
    #[error("the support users state file {path} is larger than {MAX_STATE_BYTES} bytes")]
    TooLarge { path: String },
}

/// The state file at one path.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile { path }
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// The recorded state, `None` when there is no file.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let read = |source| StateError::Read {
            path: self.shown(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge { path: self.shown() });
        }
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let invalid = |source| StateError::Invalid {
            path: self.shown(),
            source,
        };
        let Version { version } = serde_json::from_slice(&bytes).map_err(invalid)?;
        if version != STATE_VERSION {
            return Err(StateError::Version {
                path: self.shown(),
                version,
            });
        }
        serde_json::from_slice(&bytes).map(Some).map_err(invalid)
    }

    /// Records `state` atomically; an empty state removes the file.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        if state.entries.is_empty() {
            return self.remove();
        }
        let mut json = serde_json::to_vec_pretty(state).map_err(|source| StateError::Invalid {
            path: self.shown(),
            source,
        })?;
        json.push(b'\n');
        write_atomic(&self.path, &json).map_err(|source| StateError::Write {
            path: self.shown(),
            source,
        })
    }

    /// Removes the file (absent is fine).
    pub fn remove(&self) -> Result<(), StateError> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StateError::Write {
                path: self.shown(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` through a 0600 temporary file in the same directory (created 0700
/// when missing), fsynced, renamed over `path`, and the directory fsynced: after a crash the
/// file holds either the old or the new content.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temporary file left by a crash is replaced, never reused with its old mode.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The state of one provisioning run: every change goes to the file before the step it
/// announces. The file is small and on tmpfs, so it is written inline.
pub(crate) struct Ledger<'a> {
    file: &'a StateFile,
    state: State,
}

impl<'a> Ledger<'a> {
    /// Starts from what the file already records (accounts a failed cleanup left behind stay
    /// recorded).
    pub fn open(file: &'a StateFile) -> Result<Self, StateError> {
        let state = file.load()?.unwrap_or_default();
        Ok(Ledger { file, state })
    }

    /// Records that `account` is about to be created; the caller must not create it on error.
    pub fn intend(&mut self, account: &Account) -> Result<(), StateError> {
        if !self.state.entries.iter().any(|e| &e.account == account) {
            self.state.entries.push(Entry {
                account: account.clone(),
                created: false,
            });
        }
        self.save()
    }

    /// Records that `account` exists.
    pub fn created(&mut self, account: &Account) {
        for entry in &mut self.state.entries {
            if &entry.account == account {
                entry.created = true;
            }
        }
        if let Err(e) = self.save() {
            // The entry is recorded already; only its flag is stale.
            tracing::warn!("{}", super::describe(&e));
        }
    }

    /// Records that `account` is gone.
    pub fn forget(&mut self, account: &Account) {
        self.state.entries.retain(|e| &e.account != account);
        if let Err(e) = self.save() {
            tracing::warn!("{}", super::describe(&e));
        }
    }

    fn save(&self) -> Result<(), StateError> {
        self.file.save(&self.state)
    }
}
