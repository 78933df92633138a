//! Short-lived answers to the two lookups every operator request makes (the bearer token's
//! operator and the session), so a busy proxy does not queue on the database.
//!
//! Correctness rests on two rules. Every [`Store`](super::Store) method that changes a cached
//! fact removes it here in the same process (operators: every token entry; sessions: the
//! session, or every session for bulk changes), so this relay's own changes take effect at
//! once. Changes made by another process (the `tether-relay operator|system …` commands, a second
//! relay on the same PostgreSQL) are seen after at most [`TTL`]. Only positive answers are
//! kept: an unknown token or a closed session is asked of the database every time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Operator, SessionStatus};

/// How long an answer is trusted: the longest a change made by another process goes unseen.
pub const TTL: Duration = Duration::from_secs(1);
/// Most entries per map; a full map first drops expired entries, then everything.
pub const MAX_ENTRIES: usize = 4096;

/// What an operator request needs of a session (small and cheap to clone, unlike
/// [`Session`](super::Session) with its services and diagnostics documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBrief {
    /// The session id.
    pub id: String,
    /// Its system.
    pub system_id: String,
    /// The system's name.
    pub system_name: String,
    /// Its status when it was read.
    pub status: SessionStatus,
}

/// A map whose entries expire [`TTL`] after they were written.
///
/// A lookup that missed reads the database and then [`insert`](TtlMap::insert)s what it read,
/// with the [`epoch`](TtlMap::epoch) it saw before reading: if anything was removed in between,
/// the answer may predate that change and is not kept.
#[derive(Debug)]
pub(super) struct TtlMap<V> {
    map: Mutex<Inner<V>>,
    ttl: Duration,
}

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<String, (Instant, V)>,
    /// Bumped by every removal.
    epoch: u64,
}

impl<V: Clone> TtlMap<V> {
    pub(super) fn new(ttl: Duration) -> Self {
        TtlMap {
            map: Mutex::new(Inner {
                entries: HashMap::new(),
                epoch: 0,
            }),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // Entries are plain values; a panic elsewhere cannot leave the map half-updated.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key` if it was written less than the TTL ago.
    pub(super) fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.lock();
        let (at, value) = map.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| value.clone())
    }

    /// The epoch to pass to [`insert`](TtlMap::insert), taken before reading the database.
    pub(super) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Keep `value`, read at `now` after [`epoch`](TtlMap::epoch) returned `epoch`, unless
    /// something was removed since.
    pub(super) fn insert(&self, key: String, value: V, now: Instant, epoch: u64) {
        let mut map = self.lock();
        if map.epoch != epoch {
            return;
        }
        let entries = &mut map.entries;
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now, value));
    }

    pub(super) fn remove<Q>(&self, key: &Q)
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.lock();
        map.epoch = map.epoch.wrapping_add(1);
        map.entries.remove(key);
    }

    pub(super) fn clear(&self) {
        let mut map = self.lock();
        map.epoch = map.epoch.wrapping_add(1);
        map.entries.clear();
    }
}

/// The caches of one store handle (shared by its clones).
#[derive(Debug)]
pub(super) struct Caches {
    /// Token hash → its enabled operator.
    pub tokens: TtlMap<Operator>,
    /// Session id → the session, while open.
    pub sessions: TtlMap<SessionBrief>,
}

impl Caches {
    pub(super) fn new(ttl: Duration) -> Self {
        Caches {
            tokens: TtlMap::new(ttl),
            sessions: TtlMap::new(ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let m = TtlMap::new(Duration::from_secs(1));
        let t0 = Instant::now();
        m.insert("a".into(), 1, t0, m.epoch());
        assert_eq!(m.get("a", t0 + Duration::from_millis(999)), Some(1));
        assert_eq!(m.get("a", t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_full_map_drops_expired_entries_then_everything() {
        let m = TtlMap::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES {
            m.insert(format!("k{i}"), i, t0, m.epoch());
        }
        let later = t0 + Duration::from_millis(10);
        m.insert("new".into(), 0, later, m.epoch());
        // nothing had expired: the map started over with only the new entry
        assert_eq!(m.get("k0", later), None);
        assert_eq!(m.get("new", later), Some(0));
        assert!(m.lock().entries.len() <= MAX_ENTRIES);
    }

    #[test]
    fn remove_and_clear_forget_entries() {
        let m = TtlMap::new(Duration::from_secs(60));
        let t0 = Instant::now();
        m.insert("a".into(), 1, t0, m.epoch());
        m.insert("b".into(), 2, t0, m.epoch());
        m.remove("a");
        assert_eq!(m.get("a", t0), None);
        assert_eq!(m.get("b", t0), Some(2));
        m.clear();
        assert_eq!(m.get("b", t0), None);
    }

    #[test]
    fn an_answer_read_before_a_removal_is_not_kept() {
        let m = TtlMap::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let seen = m.epoch();
        // the database is read here; meanwhile the session is closed and forgotten
        m.remove("a");
        m.insert("a".into(), 1, t0, seen);
        assert_eq!(m.get("a", t0), None);
        m.insert("a".into(), 1, t0, m.epoch());
        assert_eq!(m.get("a", t0), Some(1));
    }
}
