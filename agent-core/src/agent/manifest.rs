//! Publishing the service manifest on a connection: on connect, after every change, and once
//! more at the reference relay's 10 s mark when an update came too early for it (REFERENCE B-7).

use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::document::{self, ServiceInfo};
use crate::services::ServiceCatalogue;
use crate::transport::{MuxError, MuxHandle};

use super::lock;

/// Why a manifest could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cannot open the manifest stream: {0}")]
    Open(#[from] MuxError),
    #[error("cannot write the manifest: {0}")]
    Write(String),
    #[error("the connection ended")]
    Gone,
}

/// When the manifests that a reference relay would accept went out.
///
/// The reference relay accepts a manifest when the last one it accepted is at least the
/// interval old, and drops it silently otherwise. After a send that such a relay would drop,
/// one more send is due when the interval has passed since the last accepted one; several
/// early sends share that one follow-up.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    interval: Duration,
    last_accepted: Option<Instant>,
    follow_up: Option<Instant>,
}

/// Margin added to the follow-up so transport jitter cannot bring it under the interval.
const FOLLOW_UP_MARGIN: Duration = Duration::from_millis(250);

impl Schedule {
    pub fn new(interval: Duration) -> Self {
        Schedule {
            interval,
            last_accepted: None,
            follow_up: None,
        }
    }

    /// A manifest went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        match self.last_accepted {
            Some(last) if now.duration_since(last) < self.interval => {
                if self.follow_up.is_none() {
                    self.follow_up = Some(last + self.interval + FOLLOW_UP_MARGIN);
                }
            }
            _ => {
                self.last_accepted = Some(now);
                self.follow_up = None;
            }
        }
    }

    /// When the next follow-up send is due.
    pub fn follow_up(&self) -> Option<Instant> {
        self.follow_up
    }
}

type Request = oneshot::Sender<Result<(), PublishError>>;

/// Asks the connection's manifest task for a send.
#[derive(Clone)]
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Request>,
}

impl Publisher {
    /// Sends the current manifest; resolves once it was written and the stream shut down.
    pub async fn publish(&self) -> Result<(), PublishError> {
        self.request().await.unwrap_or(Err(PublishError::Gone))
    }

    /// Queues a send; the receiver resolves when it is done.
    pub fn request(&self) -> oneshot::Receiver<Result<(), PublishError>> {
        let (tx, rx) = oneshot::channel();
        // If the task is gone the receiver resolves with an error at once.
        let _ = self.tx.send(tx);
        rx
    }
}

/// Starts the manifest task of one connection in `tasks`.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    mux: MuxHandle,
    catalogue: Arc<Mutex<ServiceCatalogue>>,
    interval: Duration,
) -> Publisher {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    tasks.spawn(async move {
        let mut schedule = Schedule::new(interval);
        loop {
            let follow_up = schedule.follow_up();
            let mut waiting: Vec<Request> = vec![];
            tokio::select! {
                request = rx.recv() => match request {
                    Some(r) => waiting.push(r),
                    None => return,
                },
                () = sleep_until(follow_up), if follow_up.is_some() => {
                    tracing::debug!("re-sending the manifest for relays that drop early updates");
                }
            }
            // Every request queued before the catalogue is read is answered by this send.
            while let Ok(r) = rx.try_recv() {
                waiting.push(r);
            }
            let result = send(&mux, &catalogue).await;
            match &result {
                Ok(()) => schedule.sent(Instant::now()),
                Err(e) => tracing::warn!("manifest not sent: {e}"),
            }
            for r in waiting {
                let _ = r.send(result.clone());
            }
        }
    });
    Publisher { tx }
}

/// The host's own services ([`super::AgentConfig::service_source`]) merged with the static ones.
#[derive(Clone)]
pub(crate) struct Source {
    rx: tokio::sync::watch::Receiver<BTreeMap<String, ServiceInfo>>,
    base: BTreeMap<String, ServiceInfo>,
    exclude: crate::exclude::ExcludeSet,
}

impl Source {
    pub fn new(
        rx: tokio::sync::watch::Receiver<BTreeMap<String, ServiceInfo>>,
        config: &super::AgentConfig,
    ) -> Self {
        Source {
            rx,
            base: super::published_static(config),
            exclude: config.exclude.clone(),
        }
    }

    /// The services to publish now; marks the host's current list as seen.
    pub fn current(&mut self) -> BTreeMap<String, ServiceInfo> {
        let mut services = self.base.clone();
        for (name, info) in self.rx.borrow_and_update().iter() {
            if !self.exclude.is_excluded(name) && !services.contains_key(name) {
                services.insert(name.clone(), info.clone());
            }
        }
        services
    }
}

/// Starts the task of one connection that re-publishes the manifest whenever the host's
/// service list changes.
pub(crate) fn follow(
    tasks: &mut JoinSet<()>,
    mut source: Source,
    catalogue: Arc<Mutex<ServiceCatalogue>>,
    publisher: Publisher,
) {
    tasks.spawn(async move {
        while source.rx.changed().await.is_ok() {
            let services = source.current();
            let changed = lock(&catalogue).set_discovered(services);
            if changed && let Err(e) = publisher.publish().await {
                tracing::warn!("manifest with the host's services not sent: {e}");
            }
        }
    });
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One manifest stream: the JSON line, then FIN.
async fn send(mux: &MuxHandle, catalogue: &Mutex<ServiceCatalogue>) -> Result<(), PublishError> {
    let (line, count) = {
        let catalogue = lock(catalogue);
        let manifest = catalogue.manifest();
        (document::to_json_line(&manifest), manifest.services.len())
    };
    let mut stream = mux.open().await?;
    let written = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    written
        .await
        .map_err(|e| PublishError::Write(e.to_string()))?;
    tracing::info!(services = count, "manifest sent");
    Ok(())
}
