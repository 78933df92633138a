//! Session lifecycle (PROTOCOL section 6): grace after a tunnel drops, closing (sticky when an
//! operator does it), expiry, systems disabled while connected, and reconciliation after a
//! relay restart so no session stays `active` without a tunnel (reference B-14, B-15, B-21).

use std::sync::Arc;
use std::time::Duration;

use crate::store::{AuditEntry, CloseReason, Store, StoreError};
use crate::tunnel::{Registry, TunnelKey};

/// Owns the session state transitions that are not a handshake.
pub struct Sessions {
    store: Store,
    tunnels: Arc<Registry>,
    grace: Duration,
}

impl Sessions {
    /// Sessions over a store and the tunnel registry.
    pub fn new(store: Store, tunnels: Arc<Registry>, grace: Duration) -> Self {
        Sessions {
            store,
            tunnels,
            grace,
        }
    }

    /// Close a session: the row, then the tunnel with code 4000 (the agent stops). An operator's
    /// close is sticky: the same system/node is not reopened until support is re-enabled.
    /// Returns whether the session was open.
    pub async fn close(
        &self,
        session_id: &str,
        reason: CloseReason,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let session =
            self.store
                .get_session(session_id)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "session",
                    key: session_id.to_owned(),
                })?;
        let changed = self.store.close_session(session_id, reason).await?;
        if reason == CloseReason::Operator {
            self.store
                .block_reopen(&session.system_id, session.node_id.as_deref())
                .await?;
        }
        if let Some(tunnel) = self.tunnels.remove_session(session_id) {
            match reason {
                CloseReason::SystemDisabled | CloseReason::Replaced => tunnel.disconnect(),
                _ => tunnel.close_session_closed(),
            }
        }
        if changed {
            tracing::info!(session = %session_id, ?reason, %actor, "session closed");
            let entry = AuditEntry {
                actor: actor.to_owned(),
                action: "session_close".into(),
                system_id: Some(session.system_id.clone()),
                session_id: Some(session_id.to_owned()),
                detail: Some(serde_json::json!({ "reason": reason })),
                ..AuditEntry::default()
            };
            if let Err(e) = self.store.audit(entry).await {
                tracing::error!(error = %e, "cannot write audit record");
            }
        }
        Ok(changed)
    }

    /// The tunnel of `session_id` dropped: keep the session for the grace period, then close it
    /// unless a tunnel for the same system/node came back.
    pub fn start_grace(self: &Arc<Self>, key: TunnelKey, session_id: String) {
        let generation = self.tunnels.begin_grace(&key);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            if !this.tunnels.end_grace(&key, generation) {
                return;
            }
            match this
                .close(&session_id, CloseReason::Disconnect, "relay")
                .await
            {
                Ok(true) => {
                    tracing::info!(session = %session_id, "grace period over: session closed")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(session = %session_id, error = %e, "cannot close session after grace")
                }
            }
        });
    }

    /// After a restart no tunnel is connected: every open session goes through grace.
    pub async fn reconcile(self: &Arc<Self>) -> Result<usize, StoreError> {
        let open = self.store.open_sessions().await?;
        let n = open.len();
        for s in open {
            let key = TunnelKey {
                system_id: s.system_id,
                node_id: s.node_id,
            };
            self.start_grace(key, s.id);
        }
        Ok(n)
    }

    /// Expire due sessions and cut tunnels of systems that were disabled or deleted.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        for id in self.store.expire_due_sessions(Store::now()).await? {
            tracing::info!(session = %id, "session expired");
            if let Some(t) = self.tunnels.remove_session(&id) {
                t.close_session_closed();
            }
            let entry = AuditEntry {
                actor: "relay".into(),
                action: "session_expired".into(),
                session_id: Some(id),
                ..AuditEntry::default()
            };
            if let Err(e) = self.store.audit(entry).await {
                tracing::error!(error = %e, "cannot write audit record");
            }
        }
        let enabled: std::collections::HashSet<String> = self
            .store
            .list_systems()
            .await?
            .into_iter()
            .filter(|s| s.support_enabled)
            .map(|s| s.id)
            .collect();
        for t in self.tunnels.all() {
            if !enabled.contains(t.system_id()) {
                let id = t.session_id().to_owned();
                tracing::info!(session = %id, "support disabled for the system: tunnel cut");
                match self.close(&id, CloseReason::SystemDisabled, "relay").await {
                    Ok(_) => {}
                    // the system (and its sessions) was deleted
                    Err(StoreError::NotFound { .. }) => {
                        if let Some(t) = self.tunnels.remove_session(&id) {
                            t.disconnect();
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Run [`Sessions::sweep`] every `interval` until the process ends.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.sweep().await {
                    tracing::error!(error = %e, "session sweep failed");
                }
            }
        });
    }
}
