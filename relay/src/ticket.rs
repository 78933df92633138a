//! One-time tickets, for the web terminal and for logging in to a service origin: 256 random
//! bits (64 hex digits), a lifetime, used once (gone after any attempt, right or wrong), kept in
//! memory as their SHA-256 and compared in constant time. A relay restart voids them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Most tickets of one kind outstanding at once (each lives seconds; this only bounds memory).
pub const MAX_OUTSTANDING: usize = 10_000;

/// Why a ticket was not issued or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, malformed or already used.
    Unknown,
    /// Older than the lifetime.
    Expired,
    /// [`MAX_OUTSTANDING`] tickets are live.
    Full,
    /// No randomness.
    Random,
}

struct Entry<G> {
    secret: [u8; 32],
    grant: G,
    expires: Instant,
}

/// Outstanding tickets, each granting a `G`.
pub struct OneTime<G> {
    ttl: Duration,
    by_hash: Mutex<HashMap<[u8; 32], Entry<G>>>,
}

impl<G> OneTime<G> {
    /// Tickets that live `ttl`.
    pub fn new(ttl: Duration) -> OneTime<G> {
        OneTime {
            ttl,
            by_hash: Mutex::default(),
        }
    }

    /// A new ticket for `grant`, valid from `now` for the lifetime.
    pub fn issue(&self, grant: G, now: Instant) -> Result<String, Refusal> {
        let secret: [u8; 32] = crate::crypto::random_bytes().map_err(|_| Refusal::Random)?;
        let mut map = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, t| t.expires > now);
        if map.len() >= MAX_OUTSTANDING {
            return Err(Refusal::Full);
        }
        map.insert(
            Sha256::digest(secret).into(),
            Entry {
                secret,
                grant,
                expires: now + self.ttl,
            },
        );
        Ok(hex::encode(secret))
    }

    /// Uses up `ticket` at `now`: its grant, if it is known and has not expired.
    pub fn redeem(&self, ticket: &str, now: Instant) -> Result<G, Refusal> {
        let mut presented = [0u8; 32];
        hex::decode_to_slice(ticket, &mut presented).map_err(|_| Refusal::Unknown)?;
        let hash: [u8; 32] = Sha256::digest(presented).into();
        let found = self
            .by_hash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash)
            .ok_or(Refusal::Unknown)?;
        if !bool::from(found.secret.ct_eq(&presented)) {
            return Err(Refusal::Unknown);
        }
        if now >= found.expires {
            return Err(Refusal::Expired);
        }
        Ok(found.grant)
    }

    /// Tickets held now (expired ones included until the next issue).
    pub fn len(&self) -> usize {
        self.by_hash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
