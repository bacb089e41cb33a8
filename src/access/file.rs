//! The access file (`--auth-tokens`): bearer tokens by SHA-256 digest and
//! mTLS certificate subjects, each with scopes and an optional namespace.
//! The format is fixed so operators and tools can write it:
//!
//! ```yaml
//! tokens:
//!   - name: ci                 # shown in audit events and errors, never the token
//!     sha256: 9f86d0…          # hex SHA-256 of the token string
//!     scopes: [read, write]
//!     namespace: team-a.       # optional: the task-id prefix this token is confined to
//! subjects:                    # mTLS: certificate subject (RFC 4514) -> the same fields
//!   - subject: "CN=deployer,O=acme"
//!     scopes: [admin]
//! ```
//!
//! Unknown keys are refused rather than ignored: a misspelt `namespace`
//! would otherwise hand a tenant every task.

use std::{collections::HashSet, path::Path, sync::Arc};

use subtle::ConstantTimeEq;

use super::{Caller, Scope, Scopes};

/// Why an access file cannot be used. The file in force stays in force.
#[derive(Debug, thiserror::Error)]
#[error("access file {path}: {reason}")]
pub struct AccessFileError {
    /// The file.
    pub path: String,
    /// What is wrong, with the entry or line where there is one.
    pub reason: String,
}

/// One identity's rights.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The token's name, or the certificate subject.
    pub name: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
    /// The task-id prefix it is confined to.
    pub namespace: Option<Arc<str>>,
}

impl Entry {
    /// The caller this entry makes.
    pub fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            scopes: self.scopes,
            namespace: self.namespace.clone(),
        }
    }
}

/// A parsed, checked access file.
#[derive(Debug, Clone, Default)]
pub struct AccessFile {
    /// Tokens with their digests, in file order.
    tokens: Vec<([u8; 32], Entry)>,
    /// Certificate subjects, in file order.
    subjects: Vec<(String, Entry)>,
    /// Quotas per namespace.
    quotas: super::quota::Quotas,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    subjects: Vec<RawSubject>,
    #[serde(default)]
    quotas: super::quota::RawQuotas,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    subject: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    namespace: Option<String>,
}

impl AccessFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<AccessFile, AccessFileError> {
        let error = |reason: String| AccessFileError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        AccessFile::parse(&text).map_err(error)
    }

    /// Parses and checks the file's text; the error says which entry.
    pub fn parse(text: &str) -> Result<AccessFile, String> {
        let raw: Raw = if text.trim().is_empty() {
            Raw {
                tokens: Vec::new(),
                subjects: Vec::new(),
                quotas: Default::default(),
            }
        } else {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?
        };
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut tokens = Vec::with_capacity(raw.tokens.len());
        for (i, token) in raw.tokens.into_iter().enumerate() {
            let at = |reason: String| format!("tokens[{i}]: {reason}");
            if token.name.is_empty() {
                return Err(at("name must not be empty".into()));
            }
            if !names.insert(token.name.clone()) {
                return Err(at(format!("name {:?} is used twice", token.name)));
            }
            let digest = parse_digest(&token.sha256).map_err(|r| at(format!("sha256 {r}")))?;
            if !digests.insert(digest) {
                return Err(at("the same sha256 as an earlier token".into()));
            }
            let entry = entry(token.name, &token.scopes, token.namespace).map_err(at)?;
            tokens.push((digest, entry));
        }
        let mut subjects = Vec::with_capacity(raw.subjects.len());
        let mut seen = HashSet::new();
        for (i, subject) in raw.subjects.into_iter().enumerate() {
            let at = |reason: String| format!("subjects[{i}]: {reason}");
            if subject.subject.is_empty() {
                return Err(at("subject must not be empty".into()));
            }
            if !seen.insert(subject.subject.clone()) {
                return Err(at(format!("subject {:?} is listed twice", subject.subject)));
            }
            let e =
                entry(subject.subject.clone(), &subject.scopes, subject.namespace).map_err(at)?;
            subjects.push((subject.subject, e));
        }
        let quotas = raw.quotas.check()?;
        Ok(AccessFile {
            tokens,
            subjects,
            quotas,
        })
    }

    /// The entry of the token `presented`. Every stored digest is compared
    /// in constant time and the loop never stops early, so the time taken
    /// says nothing about which digest, or how much of one, matched.
    pub fn by_token(&self, presented: &str) -> Option<&Entry> {
        let digest = super::token::digest(presented);
        let mut found = None;
        for (stored, entry) in &self.tokens {
            // Fixed-length arrays: `ct_eq` on slices returns early when the
            // lengths differ, never here.
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The entry of the certificate subject `subject` (RFC 4514).
    pub fn by_subject(&self, subject: &str) -> Option<&Entry> {
        self.subjects
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, e)| e)
    }

    /// The quotas binding `namespace`.
    pub fn quota(&self, namespace: &str) -> super::quota::Quota {
        self.quotas.of(namespace)
    }

    /// How many tokens and subjects it holds, for the reload log.
    pub fn counts(&self) -> (usize, usize) {
        (self.tokens.len(), self.subjects.len())
    }
}

fn entry(name: String, scopes: &[Scope], namespace: Option<String>) -> Result<Entry, String> {
    if scopes.is_empty() {
        return Err("scopes must name at least one of read, write, admin".into());
    }
    let namespace = match namespace {
        None => None,
        Some(ns) => {
            check_namespace(&ns).map_err(|r| format!("namespace {ns:?}: {r}"))?;
            Some(Arc::from(ns))
        }
    };
    Ok(Entry {
        name: Arc::from(name),
        scopes: scopes.iter().copied().collect(),
        namespace,
    })
}

/// Room left in a task id after a namespace for a generated id (`t-` and
/// 32 hex digits).
const GENERATED_ID_LEN: usize = 34;

/// A namespace is a task-id prefix ending in a separator (`.`, `-` or
/// `_`), so `team-a.` never covers `team-ab.x`, and short enough that ids
/// generated under it are still ids.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    crate::task::TaskId::parse(ns)?;
    if !ns.ends_with(['.', '-', '_']) {
        return Err("must end with \".\", \"-\" or \"_\" (such as team-a.)".into());
    }
    let max = crate::task::MAX_TASK_ID_LEN - GENERATED_ID_LEN;
    if ns.len() > max {
        return Err(format!("longer than {max} characters"));
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 {
        return Err(format!(
            "must be 64 hex digits (a SHA-256), got {} characters",
            hex.len()
        ));
    }
    crate::hex::decode(hex)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "must be hex digits only".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::token;

    fn file(text: &str) -> AccessFile {
        AccessFile::parse(text).expect("valid")
    }

    #[test]
    fn the_documented_format_parses() {
        let text = format!(
            "tokens:\n  - name: ci\n    sha256: {}\n    scopes: [read, write]\n    namespace: team-a.\n\
             subjects:\n  - subject: \"CN=deployer,O=acme\"\n    scopes: [admin]\n",
            token::digest_hex("s3cret")
        );
        let access = file(&text);
        let ci = access.by_token("s3cret").expect("ci");
        assert_eq!(&*ci.name, "ci");
        assert!(ci.scopes.allow(Scope::Write) && !ci.scopes.allow(Scope::Admin));
        assert_eq!(ci.namespace.as_deref(), Some("team-a."));
        assert!(access.by_token("s3cret ").is_none());
        assert!(access.by_token("").is_none());
        let deployer = access.by_subject("CN=deployer,O=acme").expect("subject");
        assert!(deployer.scopes.allow(Scope::Admin));
        assert!(access.by_subject("CN=deployer").is_none());
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry() {
        let d = token::digest_hex("x");
        let cases = [
            (
                format!(
                    "tokens:\n  - name: a\n    sha256: {d}\n    scopes: [read]\n    namespce: a.\n"
                ),
                "namespce",
            ),
            (
                "tokens:\n  - name: a\n    sha256: abc\n    scopes: [read]\n".to_string(),
                "tokens[0]: sha256 must be 64 hex digits",
            ),
            (
                format!("tokens:\n  - name: a\n    sha256: {d}\n    scopes: [root]\n"),
                "root",
            ),
            (
                format!("tokens:\n  - name: a\n    sha256: {d}\n    scopes: []\n"),
                "tokens[0]: scopes must name at least one",
            ),
            (
                format!(
                    "tokens:\n  - name: a\n    sha256: {d}\n    scopes: [read]\n  - name: a\n    sha256: {}\n    scopes: [read]\n",
                    token::digest_hex("y")
                ),
                "tokens[1]: name \"a\" is used twice",
            ),
            (
                format!(
                    "tokens:\n  - name: a\n    sha256: {d}\n    scopes: [read]\n    namespace: \"a b\"\n"
                ),
                "tokens[0]: namespace \"a b\"",
            ),
            (
                "subjects:\n  - subject: \"\"\n    scopes: [read]\n".to_string(),
                "subjects[0]: subject must not be empty",
            ),
        ];
        for (text, expected) in cases {
            let error = AccessFile::parse(&text).expect_err(&text);
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn an_empty_file_lets_nobody_in() {
        let access = file("");
        assert!(access.by_token("").is_none());
        assert_eq!(access.counts(), (0, 0));
    }
}
