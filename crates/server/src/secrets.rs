//! Random ids and API token secrets, and how token secrets are hashed for storage.

use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use sha2::Sha256;

/// The prefix of every token secret, so secret scanners and people can recognise one.
pub const TOKEN_PREFIX: &str = "bst_";

/// `len` random lowercase letters and digits: URL-safe ids.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A new bearer token: the prefix and 40 random alphanumerics (about 238 bits).
pub fn new_token_secret() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
    )
}

/// The shortest `SECRET_KEY` accepted: 32 bytes, HMAC-SHA256's own output size.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// Refuses a `SECRET_KEY` too short to key the token hashes, saying how to make one.
pub fn check_secret_key(key: &str) -> Result<(), String> {
    if key.len() >= MIN_SECRET_KEY_BYTES {
        return Ok(());
    }
    Err(format!(
        "SECRET_KEY is {} bytes long: it must be at least {MIN_SECRET_KEY_BYTES}; make a random \
         one with `openssl rand -hex 32`, and keep it (a new key invalidates every token)",
        key.len()
    ))
}

/// What the key check is an HMAC of. Never a token secret: those start with [`TOKEN_PREFIX`].
const KEY_CHECK_TEXT: &str = "buildstate key check 1";

/// Hashes token secrets with HMAC-SHA256 keyed by `SECRET_KEY`: a stolen database alone does
/// not let anyone check guesses. Changing the key invalidates every token.
#[derive(Clone)]
pub struct TokenHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher { key: <redacted> }")
    }
}

impl TokenHasher {
    pub fn new(secret_key: &str) -> Self {
        TokenHasher {
            key: secret_key.as_bytes().to_vec(),
        }
    }

    /// The key's check: the HMAC of a fixed text, stored so that a command run with another
    /// key can tell (the key itself is never stored, and cannot be found from the check).
    pub fn key_check(&self) -> String {
        self.hash(KEY_CHECK_TEXT)
    }

    /// The stored form of a token secret (hex).
    pub fn hash(&self, secret: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed_per_key() {
        let one = new_token_secret();
        let two = new_token_secret();
        assert!(one.starts_with(TOKEN_PREFIX) && one.len() == TOKEN_PREFIX.len() + 40);
        assert_ne!(one, two);
        let hasher = TokenHasher::new("key-a");
        assert_eq!(hasher.hash(&one), hasher.hash(&one));
        assert_ne!(hasher.hash(&one), TokenHasher::new("key-b").hash(&one));
        assert!(!hasher.hash(&one).contains(&one));
        assert!(!format!("{hasher:?}").contains("key-a"));
    }

    #[test]
    fn a_secret_key_needs_32_bytes_and_its_check_tells_keys_apart() {
        assert!(check_secret_key(&"k".repeat(32)).is_ok());
        let short = check_secret_key("change-me").expect_err("too short");
        assert!(
            short.contains("9 bytes") && short.contains("openssl rand -hex 32"),
            "{short}"
        );
        let (a, b) = (TokenHasher::new("key-a"), TokenHasher::new("key-b"));
        assert_eq!(a.key_check(), TokenHasher::new("key-a").key_check());
        assert_ne!(a.key_check(), b.key_check());
    }

    #[test]
    fn ids_are_url_safe() {
        let id = random_id(20);
        assert_eq!(id.len(), 20);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
