//! Which operators are with a session now, as the sessions page shows it: those with a live
//! terminal on it, and those whose browser went through one of its services (path proxy or
//! service origin) within [`WINDOW`]. Kept in memory by this relay process (a restart forgets
//! it; terminals end with the restart anyway), bounded by [`MAX_TRACKED`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A proxied request counts an operator as present for this long.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Most (session, operator) pairs tracked; past it the stale ones are dropped first.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
struct Seen {
    terminals: usize,
    last: Option<Instant>,
}

/// Operators present on sessions, by session id and operator name.
#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<(String, String), Seen>>,
}

impl Presence {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), Seen>) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `operator` went through a service of `session` at `now`.
    pub fn touch(&self, session: &str, operator: &str, now: Instant) {
        self.with(|seen| {
            if seen.len() >= MAX_TRACKED {
                seen.retain(|_, s| s.terminals > 0 || fresh(s.last, now));
            }
            seen.entry((session.to_owned(), operator.to_owned()))
                .or_default()
                .last = Some(now);
        });
    }

    /// `operator` has a terminal open on `session` until the guard drops.
    pub fn terminal(self: &Arc<Self>, session: &str, operator: &str) -> TerminalPresence {
        let key = (session.to_owned(), operator.to_owned());
        self.with(|seen| seen.entry(key.clone()).or_default().terminals += 1);
        TerminalPresence {
            presence: Arc::clone(self),
            key,
        }
    }

    /// The operators present on `session` at `now`, by name.
    pub fn of(&self, session: &str, now: Instant) -> Vec<String> {
        self.with(|seen| {
            seen.iter()
                .filter(|((s, _), v)| s == session && (v.terminals > 0 || fresh(v.last, now)))
                .map(|((_, name), _)| name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
    }
}

fn fresh(last: Option<Instant>, now: Instant) -> bool {
    last.is_some_and(|t| now.saturating_duration_since(t) < WINDOW)
}

/// A live terminal's mark on [`Presence`]; dropping it takes the mark away.
#[derive(Debug)]
pub struct TerminalPresence {
    presence: Arc<Presence>,
    key: (String, String),
}

impl Drop for TerminalPresence {
    fn drop(&mut self) {
        self.presence.with(|seen| {
            if let Some(s) = seen.get_mut(&self.key) {
                s.terminals = s.terminals.saturating_sub(1);
                if s.terminals == 0 && s.last.is_none() {
                    seen.remove(&self.key);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxied_request_counts_for_the_window_only() {
        let p = Presence::default();
        let t0 = Instant::now();
        p.touch("s1", "ada", t0);
        assert_eq!(p.of("s1", t0 + WINDOW - Duration::from_secs(1)), ["ada"]);
        assert!(p.of("s1", t0 + WINDOW).is_empty());
        assert!(p.of("s2", t0).is_empty(), "another session has nobody");
    }

    #[test]
    fn a_live_terminal_counts_until_it_closes() {
        let p = Arc::new(Presence::default());
        let t0 = Instant::now();
        let first = p.terminal("s1", "otto");
        let second = p.terminal("s1", "otto");
        p.touch("s1", "ada", t0);
        let later = t0 + WINDOW * 10;
        assert_eq!(p.of("s1", later), ["otto"], "ada's request is stale");
        assert_eq!(p.of("s1", t0), ["ada", "otto"], "by name, each once");
        drop(first);
        assert_eq!(p.of("s1", later), ["otto"], "one terminal is still open");
        drop(second);
        assert!(p.of("s1", later).is_empty());
    }

    #[test]
    fn stays_bounded_keeping_live_terminals() {
        let p = Arc::new(Presence::default());
        let t0 = Instant::now();
        let _live = p.terminal("s0", "otto");
        for i in 0..MAX_TRACKED {
            p.touch(&format!("s{i}"), "ada", t0);
        }
        p.touch("new", "ada", t0 + WINDOW);
        assert!(p.with(|seen| seen.len()) <= 2);
        assert_eq!(p.of("s0", t0 + WINDOW), ["otto"]);
        assert_eq!(p.of("new", t0 + WINDOW), ["ada"]);
    }
}
