//! One tunnel connection: accept relay streams from the first moment, send the manifest, and
//! end every task of the connection with it (REFERENCE B-5, B-26).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::task::JoinSet;

use crate::services::ServiceCatalogue;
use crate::transport::{Incoming, MuxEnd, MuxHandle};

use super::manifest;
use super::streams::{self, StreamContext};

/// What outlives a connection: the catalogue (with injected services) and the settings.
pub(crate) struct Shared {
    pub catalogue: Arc<Mutex<ServiceCatalogue>>,
    pub target_tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub manifest_interval: Duration,
    pub terminal: Arc<super::terminal::TerminalSettings>,
    pub diagnostics: Arc<super::diagnostics::DiagnosticsConfig>,
    pub diagnostics_cache: Arc<super::diagnostics::Cache>,
    pub diagnostics_hooks: Arc<super::diagnostics::Hooks>,
    pub service_source: Option<manifest::Source>,
    pub on_event: Option<super::EventHandler>,
    pub users: Option<Arc<super::users::SupportUsers>>,
}

/// Serves a connection until it ends; every task it started is gone when this returns (or
/// when this future is dropped).
pub(crate) async fn serve(mux: &MuxHandle, mut incoming: Incoming, shared: &Shared) -> MuxEnd {
    let mut tasks = JoinSet::new();
    let mut source = shared.service_source.clone();
    if let Some(source) = &mut source {
        super::lock(&shared.catalogue).set_discovered(source.current());
    }
    let publisher = manifest::spawn(
        &mut tasks,
        mux.clone(),
        shared.catalogue.clone(),
        shared.manifest_interval,
    );
    if let Some(source) = source {
        manifest::follow(
            &mut tasks,
            source,
            shared.catalogue.clone(),
            publisher.clone(),
        );
    }
    // The health report goes out on its own task: collecting never delays accepting streams.
    super::diagnostics::spawn(
        &mut tasks,
        mux.clone(),
        shared.diagnostics.clone(),
        shared.diagnostics_cache.clone(),
        shared.diagnostics_hooks.clone(),
    );
    // So does the users report (sent once provisioning, started by `run`, has finished).
    if let Some(users) = &shared.users {
        super::users::spawn(&mut tasks, mux.clone(), users.clone());
    }
    let ctx = Arc::new(StreamContext {
        catalogue: shared.catalogue.clone(),
        target_tls: shared.target_tls.clone(),
        connect_timeout: shared.connect_timeout,
        terminal: shared.terminal.clone(),
        publisher: publisher.clone(),
        on_event: shared.on_event.clone(),
    });
    // Streams the relay opens are served by this loop while the first manifest goes out.
    let mut first_manifest = publisher.request();
    let mut manifest_sent = false;
    let end = loop {
        tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => {
                    tasks.spawn(streams::handle(stream, ctx.clone()));
                }
                None => break mux.closed().await,
            },
            sent = &mut first_manifest, if !manifest_sent => {
                manifest_sent = true;
                if let Ok(Err(e)) | Err(e) = sent.map_err(|_| manifest::PublishError::Gone) {
                    tracing::warn!("closing the connection: the manifest could not be sent: {e}");
                    mux.close(None);
                    break mux.closed().await;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a stream task panicked: {e}");
                }
            }
            end = mux.closed() => break end,
        }
    };
    tasks.shutdown().await;
    end
}
