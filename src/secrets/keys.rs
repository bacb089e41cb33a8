//! Header values encrypted at rest (`--secret-key-file`): AES-256-GCM with
//! a random 96-bit nonce per value, the header name as associated data,
//! and the key's id in the envelope, so keys can be rotated: the first key
//! given encrypts, every key given decrypts.
//!
//! Envelope, a string so it fits the spec's header map:
//! `enc:v1:<key id, 8 hex>:<hex of nonce, ciphertext and tag>`.

use std::{collections::HashMap, fmt, path::Path, sync::Arc};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey},
    digest::{SHA256, digest},
};

use crate::pb::v1 as pb;

/// Marks an encrypted value, with the envelope's version.
const ENVELOPE: &str = "enc:v1:";

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Why keys cannot be used or a value cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file is unreadable or not a key.
    #[error("--secret-key-file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored value cannot be decrypted; it is never guessed at.
    #[error("the value of header {header:?} cannot be decrypted: {reason}")]
    Open {
        /// The header.
        header: String,
        /// Why (unknown key id, tampered, no keys given).
        reason: String,
    },
    /// The system's random source failed.
    #[error("encrypting failed: {0}")]
    Seal(String),
}

struct Key {
    id: String,
    key: RandomizedNonceKey,
}

/// The keys in force; the first encrypts.
#[derive(Clone)]
pub struct SecretKeys {
    current: Arc<Key>,
    by_id: Arc<HashMap<String, Arc<Key>>>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current.id)
            .field("known", &self.by_id.len())
            .finish()
    }
}

/// A key's id: the first 4 bytes of its SHA-256, so nothing needs to be
/// stored beside the key and the id reveals nothing about it.
fn key_id(bytes: &[u8]) -> String {
    crate::hex::encode(&digest(&SHA256, bytes).as_ref()[..4])
}

impl SecretKeys {
    /// Reads key files, the current key first. A file holds the 32 bytes
    /// themselves, or 64 hex digits.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Option<SecretKeys>, KeyError> {
        let mut keys = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let error = |reason: &str| KeyError::File {
                path: path.display().to_string(),
                reason: reason.to_string(),
            };
            let raw = std::fs::read(path).map_err(|e| error(&e.to_string()))?;
            let bytes = if raw.len() == KEY_LEN {
                raw
            } else {
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|t| crate::hex::decode(t.trim()))
                    .filter(|b| b.len() == KEY_LEN)
                    .ok_or_else(|| error("must hold 32 bytes, or 64 hex digits"))?
            };
            keys.push(bytes);
        }
        SecretKeys::from_bytes(&keys)
    }

    /// Keys from their bytes, the current one first; `None` for no keys.
    pub fn from_bytes(keys: &[Vec<u8>]) -> Result<Option<SecretKeys>, KeyError> {
        let mut by_id = HashMap::new();
        let mut current = None;
        for bytes in keys {
            let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::File {
                path: String::new(),
                reason: "not an AES-256 key".into(),
            })?;
            let key = Arc::new(Key {
                id: key_id(bytes),
                key,
            });
            current.get_or_insert_with(|| key.clone());
            by_id.insert(key.id.clone(), key);
        }
        Ok(current.map(|current| SecretKeys {
            current,
            by_id: Arc::new(by_id),
        }))
    }

    /// A fresh random key, as `recur secret-key new` writes it.
    pub fn new_key() -> Result<[u8; KEY_LEN], KeyError> {
        let mut key = [0_u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| KeyError::Seal("no randomness".into()))?;
        Ok(key)
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn aad(header: &str) -> String {
        format!("recur.v1 header {header}")
    }

    /// `value` of `header` encrypted with the current key.
    pub fn seal(&self, header: &str, value: &str) -> Result<String, KeyError> {
        let mut data = value.as_bytes().to_vec();
        let nonce = self
            .current
            .key
            .seal_in_place_append_tag(Aad::from(Self::aad(header).as_bytes()), &mut data)
            .map_err(|_| KeyError::Seal("AES-GCM refused".into()))?;
        let mut envelope = Vec::with_capacity(NONCE_LEN + data.len());
        envelope.extend_from_slice(nonce.as_ref());
        envelope.extend_from_slice(&data);
        Ok(format!(
            "{ENVELOPE}{}:{}",
            self.current.id,
            crate::hex::encode(&envelope)
        ))
    }

    /// Whether `value` is an envelope.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(ENVELOPE)
    }

    /// The plain value of an envelope made by [`SecretKeys::seal`].
    pub fn open(keys: Option<&SecretKeys>, header: &str, value: &str) -> Result<String, KeyError> {
        let fail = |reason: String| KeyError::Open {
            header: header.to_string(),
            reason,
        };
        let rest = value
            .strip_prefix(ENVELOPE)
            .ok_or_else(|| fail("not an envelope".into()))?;
        let (id, body) = rest
            .split_once(':')
            .ok_or_else(|| fail("malformed envelope".into()))?;
        let keys = keys.ok_or_else(|| {
            fail(format!(
                "encrypted with key {id}; start with --secret-key-file"
            ))
        })?;
        let key = keys.by_id.get(id).ok_or_else(|| {
            fail(format!(
                "encrypted with key {id}, which is not among the keys given"
            ))
        })?;
        let body = crate::hex::decode(body).ok_or_else(|| fail("malformed envelope".into()))?;
        if body.len() < NONCE_LEN {
            return Err(fail("malformed envelope".into()));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| fail("malformed envelope".into()))?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(Self::aad(header).as_bytes()), &mut sealed)
            .map_err(|_| fail("it was altered, or belongs to another header".into()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail("not text".into()))
    }

    /// Encrypts every header value of an HTTP action in `spec`.
    pub fn seal_spec(&self, spec: &mut pb::TaskSpec) -> Result<(), KeyError> {
        if let Some(pb::action::Kind::Http(http)) =
            spec.action.as_mut().and_then(|a| a.kind.as_mut())
        {
            for (name, value) in http.headers.iter_mut() {
                *value = self.seal(name, value)?;
            }
        }
        Ok(())
    }

    /// Decrypts every encrypted header value of an HTTP action in `spec`;
    /// values stored before encryption was turned on pass as they are.
    pub fn open_spec(keys: Option<&SecretKeys>, spec: &mut pb::TaskSpec) -> Result<(), KeyError> {
        if let Some(pb::action::Kind::Http(http)) =
            spec.action.as_mut().and_then(|a| a.kind.as_mut())
        {
            for (name, value) in http.headers.iter_mut() {
                if SecretKeys::is_sealed(value) {
                    *value = SecretKeys::open(keys, name, value)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[[u8; 32]]) -> SecretKeys {
        let bytes: Vec<Vec<u8>> = list.iter().map(|k| k.to_vec()).collect();
        SecretKeys::from_bytes(&bytes).expect("keys").expect("some")
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_only_and_hides_the_value() {
        let (a, b) = ([1_u8; 32], [2_u8; 32]);
        let current = keys(&[a]);
        let sealed = current
            .seal("authorization", "Bearer hunter2")
            .expect("seal");
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            current
                .seal("authorization", "Bearer hunter2")
                .expect("seal")
        );
        assert_eq!(
            SecretKeys::open(Some(&current), "authorization", &sealed).expect("open"),
            "Bearer hunter2"
        );
        // Rotated: b encrypts, a still decrypts.
        let rotated = keys(&[b, a]);
        assert_eq!(
            SecretKeys::open(Some(&rotated), "authorization", &sealed).expect("open"),
            "Bearer hunter2"
        );
        assert!(
            rotated
                .seal("x", "y")
                .expect("seal")
                .contains(rotated.current_id())
        );
        // Without the key, under another header, or altered: refused.
        let error = SecretKeys::open(Some(&keys(&[b])), "authorization", &sealed)
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains(current.current_id()), "{error}");
        assert!(SecretKeys::open(None, "authorization", &sealed).is_err());
        assert!(SecretKeys::open(Some(&current), "x-api-key", &sealed).is_err());
        let mut altered = sealed.clone();
        let last = altered.pop().expect("char");
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(SecretKeys::open(Some(&current), "authorization", &altered).is_err());
    }

    #[test]
    fn key_files_hold_raw_bytes_or_hex() {
        let dir = tempfile::tempdir().expect("dir");
        let raw = dir.path().join("raw.key");
        let text = dir.path().join("hex.key");
        let bad = dir.path().join("bad.key");
        std::fs::write(&raw, [7_u8; 32]).expect("write");
        std::fs::write(&text, format!("{}\n", crate::hex::encode(&[7_u8; 32]))).expect("write");
        std::fs::write(&bad, "short").expect("write");
        let a = SecretKeys::load(&[&raw]).expect("raw").expect("some");
        let b = SecretKeys::load(&[&text]).expect("hex").expect("some");
        assert_eq!(a.current_id(), b.current_id());
        let error = SecretKeys::load(&[&bad]).expect_err("bad").to_string();
        assert!(error.contains("32 bytes"), "{error}");
    }
}
