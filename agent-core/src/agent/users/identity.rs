//! Support user names and passwords, as the reference makes them.

use std::format;
use std::prelude::rust_2024::*;

use rand::Rng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

/// Length of a generated password.
pub const PASSWORD_LEN: usize = 20;
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const SPECIAL: &[u8] = b"!@#%^&*";

/// The support user name for a system key (the reference `generateUsername`): the key in lower
/// case split on `-`; three parts or more give `support-<first>-<second>-<last>`, two give
/// `support-<first>-<second>`, one of at least 4 characters gives `support-<it>`; anything else
/// `support-<8 random letters>`. Deterministic for usual keys, so a restart finds the same name.
pub fn username(system_key: &str) -> String {
    let key = system_key.to_lowercase();
    let parts: Vec<&str> = key.split('-').collect();
    match parts.as_slice() {
        [first, second, .., last] => {
            format!("support-{first}-{second}-{last}")
        }
        [first, second] => format!("support-{first}-{second}"),
        [only] if only.len() >= 4 => format!("support-{only}"),
        _ => {
            let mut rng = rand::rng();
            let letters: String = (0..8).map(|_| char::from(pick(&mut rng, LOWER))).collect();
            format!("support-{letters}")
        }
    }
}

/// A fresh password of [`PASSWORD_LEN`] characters from `[a-zA-Z0-9!@#%^&*]` with at least one
/// of each class, from the operating system's random generator (the reference
/// `generatePassword`).
pub fn password() -> String {
    let mut rng = rand::rng();
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SPECIAL].concat();
    let mut chars: Vec<u8> = [LOWER, UPPER, DIGITS, SPECIAL]
        .iter()
        .map(|class| pick(&mut rng, class))
        .collect();
    while chars.len() < PASSWORD_LEN {
        chars.push(pick(&mut rng, &all));
    }
    chars.shuffle(&mut rng);
    chars.into_iter().map(char::from).collect()
}

fn pick(rng: &mut impl Rng, set: &[u8]) -> u8 {
    // Every set above is non-empty.
    set.get(rng.random_range(0..set.len()))
        .copied()
        .unwrap_or(b'x')
}

/// The NS8 `password_hash` of a cluster user: hex SHA-256 of the password.
pub fn password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}
