//! Bearer tokens: how one is made and how it is stored (its SHA-256, never
//! the token).

use std::fmt::Write;

use aws_lc_rs::digest::{SHA256, digest as sha};

/// Prefix of every token `recur token new` makes, so a leaked one is easy
/// to recognise in a scanner or a log.
pub const TOKEN_PREFIX: &str = "recur_";

/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed")]
pub struct RandomError;

/// A fresh random token.
pub fn new_token() -> Result<String, RandomError> {
    let mut bytes = [0_u8; TOKEN_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(format!("{TOKEN_PREFIX}{}", crate::hex::encode(&bytes)))
}

/// The SHA-256 of `token`, as the access file stores it.
pub fn digest(token: &str) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(sha(&SHA256, token.as_bytes()).as_ref());
    out
}

/// The SHA-256 of `token` in lowercase hex, for the access file.
pub fn digest_hex(token: &str) -> String {
    crate::hex::encode(&digest(token))
}

/// The access-file entry for a token, as `recur token new` prints it.
pub fn yaml_entry(name: &str, scopes: &[&str], namespace: Option<&str>, token: &str) -> String {
    let mut entry = format!(
        "  - name: {}\n    sha256: {}\n    scopes: [{}]\n",
        quote(name),
        digest_hex(token),
        scopes.join(", ")
    );
    if let Some(ns) = namespace {
        let _ = writeln!(entry, "    namespace: {}", quote(ns));
    }
    entry
}

/// A YAML double-quoted string: safe whatever the name holds.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256() {
        // SHA-256("test"), the value in the example.
        assert_eq!(
            digest_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn new_tokens_differ_and_their_entry_lets_them_in() {
        let a = new_token().expect("random");
        let b = new_token().expect("random");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        let yaml = format!(
            "tokens:\n{}",
            yaml_entry("ci: main", &["read", "write"], Some("team-a."), &a)
        );
        let access = crate::access::AccessFile::parse(&yaml).expect("entry parses");
        let entry = access.by_token(&a).expect("token accepted");
        assert_eq!(&*entry.name, "ci: main");
        assert_eq!(entry.namespace.as_deref(), Some("team-a."));
        assert!(access.by_token(&b).is_none());
    }
}
