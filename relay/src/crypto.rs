//! Secrets of the relay: how they are generated, hashed, verified and encrypted at rest.
//!
//! * system credentials: key `TTH-XXXX-…` (public) and secret `tth_<20 hex>.<40 hex>`, stored
//!   only as `hex(salt):hex(sha256(salt || secret))` and checked in constant time;
//! * operator passwords: argon2id PHC strings;
//! * API tokens: `tta_<64 hex>`, stored as their SHA-256 (they carry 256 bits of entropy);
//! * users reports: ChaCha20-Poly1305 under the relay's [`DataKey`], one random nonce per value.
//!
//! Everything secret travels in a [`Secret`], which never prints its content.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Length of the data key in bytes.
pub const DATA_KEY_LEN: usize = 32;
/// Length of the ChaCha20-Poly1305 nonce stored in front of every ciphertext.
const NONCE_LEN: usize = 12;
/// Length of the random salt of a stored system secret.
const SECRET_SALT_LEN: usize = 16;
/// Length of generated operator passwords, in characters.
pub const PASSWORD_LEN: usize = 20;
/// Prefix of system keys.
pub const SYSTEM_KEY_PREFIX: &str = "TTH-";
/// Prefix of system secrets.
pub const SYSTEM_SECRET_PREFIX: &str = "tth_";
/// Prefix of operator API tokens.
pub const TOKEN_PREFIX: &str = "tta_";

/// What went wrong with a key, a random source or a ciphertext.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The data key file could not be read or created.
    #[error("data key file {}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The data key is not 64 hexadecimal characters.
    #[error("data key{} is not 64 hexadecimal characters", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    BadKey { origin: Option<PathBuf> },
    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed")]
    Random(#[source] rand::rand_core::OsError),
    /// A stored ciphertext is not valid base64 or too short.
    #[error("stored ciphertext is malformed")]
    Malformed,
    /// Authentication of a stored ciphertext failed (wrong data key or tampered row).
    #[error("stored ciphertext does not decrypt under the data key (wrong key or tampered data)")]
    Decrypt,
    /// Encryption failed (cannot happen with in-memory buffers, kept for completeness).
    #[error("encryption failed")]
    Encrypt,
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}

/// Secrets (system secrets, passwords, tokens) are redacted in `Debug` and `Display`.
pub use agent_core::secret::Secret;

/// The 32-byte key that encrypts secrets at rest (users reports).
#[derive(Clone)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// Parses 64 hexadecimal characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<DataKey, CryptoError> {
        parse_key(text).ok_or(CryptoError::BadKey { origin: None })
    }

    /// A 32-byte key for `purpose`, derived from this one (HMAC-SHA256), so that other uses
    /// never see the data key itself.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = hmac_sha256(&self.0);
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// A fresh random key.
    pub fn generate() -> Result<DataKey, CryptoError> {
        Ok(DataKey(random_bytes()?))
    }

    /// Reads the key from `path`, or creates the file (mode 0600) with a new random key.
    pub fn load_or_create(path: &Path) -> Result<DataKey, CryptoError> {
        let io_err = |source| CryptoError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return parse_key(&text).ok_or_else(|| CryptoError::BadKey {
                    origin: Some(path.to_path_buf()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let key = DataKey::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                writeln!(file, "{}", hex::encode(key.0)).map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                Ok(key)
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io_err)?;
                parse_key(&text).ok_or_else(|| CryptoError::BadKey {
                    origin: Some(path.to_path_buf()),
                })
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Encrypts `plaintext` bound to `aad`; returns base64(nonce || ciphertext).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(BASE64.encode(out))
    }

    /// Reverses [`DataKey::encrypt`]; fails unless the same key and `aad` are used.
    pub fn decrypt(&self, encoded: &str, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let raw = BASE64
            .decode(encoded.trim())
            .map_err(|_| CryptoError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| CryptoError::Decrypt)
    }
}

fn parse_key(text: &str) -> Option<DataKey> {
    let text = text.trim();
    if text.len() != 2 * DATA_KEY_LEN {
        return None;
    }
    let mut key = [0u8; DATA_KEY_LEN];
    hex::decode_to_slice(text, &mut key).ok()?;
    Some(DataKey(key))
}

/// `N` bytes from the operating system's random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    OsRng
        .try_fill_bytes(&mut buf)
        .map_err(CryptoError::Random)?;
    Ok(buf)
}

/// A new system key: `TTH-` and six groups of four uppercase hex digits.
pub fn generate_system_key() -> Result<String, CryptoError> {
    let bytes: [u8; 12] = random_bytes()?;
    let groups: Vec<String> = bytes.chunks(2).map(hex::encode_upper).collect();
    Ok(format!("{SYSTEM_KEY_PREFIX}{}", groups.join("-")))
}

/// A new system secret: `tth_` + 20 lowercase hex + `.` + 40 lowercase hex.
pub fn generate_system_secret() -> Result<Secret, CryptoError> {
    let public: [u8; 10] = random_bytes()?;
    let private: [u8; 20] = random_bytes()?;
    Ok(Secret::new(format!(
        "{SYSTEM_SECRET_PREFIX}{}.{}",
        hex::encode(public),
        hex::encode(private)
    )))
}

/// The stored form of a system secret: `hex(salt):hex(sha256(salt || secret))`.
pub fn hash_system_secret(secret: &str) -> Result<String, CryptoError> {
    let salt: [u8; SECRET_SALT_LEN] = random_bytes()?;
    Ok(format!(
        "{}:{}",
        hex::encode(salt),
        hex::encode(salted_sha256(&salt, secret))
    ))
}

/// Checks `secret` against a stored `hex(salt):hex(hash)` in constant time. A malformed stored
/// value verifies nothing but costs the same hash work.
pub fn verify_system_secret(stored: &str, secret: &str) -> bool {
    let parsed = stored.split_once(':').and_then(|(salt, hash)| {
        let salt = hex::decode(salt).ok()?;
        let hash = hex::decode(hash).ok()?;
        Some((salt, hash))
    });
    match parsed {
        Some((salt, hash)) => bool::from(salted_sha256(&salt, secret)[..].ct_eq(&hash)),
        None => {
            let _ = salted_sha256(&[0u8; SECRET_SALT_LEN], secret);
            false
        }
    }
}

/// Spends the same work as [`verify_system_secret`] for a key that does not exist, so response
/// times do not tell which keys exist.
pub fn burn_system_secret_check(secret: &str) {
    let dummy = [0u8; 32];
    let _ = bool::from(salted_sha256(&[0u8; SECRET_SALT_LEN], secret)[..].ct_eq(&dummy));
}

fn salted_sha256(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// A new operator password: 20 characters from `[A-Za-z0-9]`.
pub fn generate_password() -> Result<Secret, CryptoError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // Largest multiple of the alphabet size that fits a byte: rejecting the rest keeps the
    // distribution uniform.
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(PASSWORD_LEN);
    while out.len() < PASSWORD_LEN {
        let batch: [u8; 32] = random_bytes()?;
        for b in batch {
            if b < LIMIT && out.len() < PASSWORD_LEN {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(Secret::new(out))
}

/// argon2id PHC string of `password` (default parameters of the argon2 crate). CPU-heavy: call
/// from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt: [u8; SECRET_SALT_LEN] = random_bytes()?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| CryptoError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

/// Checks `password` against an argon2 PHC string. CPU-heavy: call from a blocking thread.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// HMAC-SHA256 under a 32-byte key.
pub fn hmac_sha256(key: &[u8; 32]) -> hmac::Hmac<Sha256> {
    // HMAC pads a key shorter than SHA-256's 64-byte block with zeros; padding it here gives
    // the same MAC through the infallible constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <hmac::Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into())
}

/// A new API token: `tta_` + 64 lowercase hex.
pub fn generate_token() -> Result<Secret, CryptoError> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(Secret::new(format!("{TOKEN_PREFIX}{}", hex::encode(bytes))))
}

/// The stored form of an API token: lowercase hex SHA-256. Tokens have 256 random bits, so a
/// salt would add nothing.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_content() {
        let s = Secret::new("tth_abc.def");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "tth_abc.def");
        let k = DataKey::from_hex(&"ab".repeat(32)).unwrap();
        assert!(!format!("{k:?}").contains("ab"));
    }

    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let key = generate_system_key().unwrap();
        let groups: Vec<&str> = key.strip_prefix("TTH-").unwrap().split('-').collect();
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }));
        let secret = generate_system_secret().unwrap();
        let (public, private) = secret
            .expose()
            .strip_prefix("tth_")
            .unwrap()
            .split_once('.')
            .unwrap();
        assert_eq!((public.len(), private.len()), (20, 40));
        let lower_hex = |s: &str| s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        assert!(lower_hex(public) && lower_hex(private));
        let pw = generate_password().unwrap();
        assert_eq!(pw.expose().len(), PASSWORD_LEN);
        assert!(pw.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        let token = generate_token().unwrap();
        assert_eq!(token.expose().len(), 4 + 64);
    }

    #[test]
    fn system_secret_hash_verifies_only_the_right_secret() {
        let stored = hash_system_secret("tth_x.y").unwrap();
        assert!(verify_system_secret(&stored, "tth_x.y"));
        assert!(!verify_system_secret(&stored, "tth_x.z"));
        assert!(!verify_system_secret("garbage", "tth_x.y"));
        // Same secret, different salt: different stored value.
        assert_ne!(stored, hash_system_secret("tth_x.y").unwrap());
    }

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let phc = hash_password("hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&phc, "hunter2"));
        assert!(!verify_password(&phc, "hunter3"));
        assert!(!verify_password("not a phc", "hunter2"));
    }

    #[test]
    fn ciphertext_round_trips_and_is_bound_to_key_and_aad() {
        let key = DataKey::generate().unwrap();
        let sealed = key.encrypt(b"password=s3cret", b"session-1").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            key.decrypt(&sealed, b"session-1").unwrap(),
            b"password=s3cret"
        );
        assert!(matches!(
            key.decrypt(&sealed, b"session-2"),
            Err(CryptoError::Decrypt)
        ));
        let other = DataKey::generate().unwrap();
        assert!(matches!(
            other.decrypt(&sealed, b"session-1"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            key.decrypt("!!", b"session-1"),
            Err(CryptoError::Malformed)
        ));
        // A fresh nonce per call.
        assert_ne!(
            sealed,
            key.encrypt(b"password=s3cret", b"session-1").unwrap()
        );
    }

    #[test]
    fn data_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        let first = DataKey::load_or_create(&path).unwrap();
        let second = DataKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, second.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        let err = DataKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("data.key"), "{err}");
    }
}
