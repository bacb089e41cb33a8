//! Named secrets: a header may name one (`secret_headers`) so that task
//! files kept in git carry no secret. Values come from `--secrets-file`
//! (reloaded when it changes) or, failing that, from the environment
//! variable `RECUR_SECRET_<NAME>`:
//!
//! ```yaml
//! PRICES_KEY: "k-123"          # callers without a namespace only
//! TEAM_A_TOKEN:                # also callers (and tasks) under team-a.
//!   value: "Bearer ..."
//!   namespaces: [team-a.]
//! ```
//!
//! A tenant may only name secrets given to its namespace: otherwise any
//! writer could send any secret to a URL of its choosing.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
};

/// Prefix of the environment variables holding secrets.
pub const ENV_PREFIX: &str = "RECUR_SECRET_";

/// Longest secret name.
const MAX_NAME: usize = 64;

/// Why a secrets file cannot be used. The file in force stays in force.
#[derive(Debug, thiserror::Error)]
#[error("secrets file {path}: {reason}")]
pub struct SecretsFileError {
    /// The file.
    pub path: String,
    /// What is wrong (never a value).
    pub reason: String,
}

/// Checks a secret name: `[A-Za-z0-9_]{1,64}`, so that it can also be an
/// environment variable's name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!("character {c:?} is not allowed (use [A-Za-z0-9_])"));
    }
    Ok(())
}

/// One secret of the file.
#[derive(Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// A bare value: for callers without a namespace.
    Plain(String),
    /// A value that callers and tasks under `namespaces` may use too.
    Scoped {
        /// The value.
        value: String,
        /// Namespaces (task-id prefixes) allowed to name it.
        namespaces: Vec<String>,
    },
}

/// Only the namespaces: the value never reaches a log or a panic message.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("namespaces", &self.namespaces())
            .finish_non_exhaustive()
    }
}

impl Secret {
    fn value(&self) -> &str {
        match self {
            Secret::Plain(value) | Secret::Scoped { value, .. } => value,
        }
    }

    fn namespaces(&self) -> &[String] {
        match self {
            Secret::Plain(_) => &[],
            Secret::Scoped { namespaces, .. } => namespaces,
        }
    }
}

/// The secrets in force: the file's, swapped whole on reload, then the
/// environment. Values never reach a log line or an error.
#[derive(Clone, Default)]
pub struct NamedSecrets(Arc<RwLock<Arc<HashMap<String, Secret>>>>);

impl std::fmt::Debug for NamedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NamedSecrets(..)")
    }
}

impl NamedSecrets {
    /// Reads `path` (a YAML map of name to value).
    pub fn load(path: &Path) -> Result<HashMap<String, Secret>, SecretsFileError> {
        let error = |reason: String| SecretsFileError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(HashMap::new());
        }
        // The parser's message may quote the offending line, which may be a
        // value: only its position is kept.
        let map: HashMap<String, Secret> = serde_saphyr::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default();
            error(format!(
                "not a YAML map of secret name to a value or {{value, namespaces}}{at}"
            ))
        })?;
        for (name, secret) in &map {
            check_name(name).map_err(|r| error(format!("secret name {name:?}: {r}")))?;
            for ns in secret.namespaces() {
                crate::access::file::check_namespace(ns)
                    .map_err(|r| error(format!("secret {name:?}: namespace {ns:?}: {r}")))?;
            }
        }
        Ok(map)
    }

    /// Puts `values` in force.
    pub fn replace(&self, values: HashMap<String, Secret>) {
        let values = Arc::new(values);
        match self.0.write() {
            Ok(mut guard) => *guard = values,
            Err(poisoned) => *poisoned.into_inner() = values,
        }
    }

    /// How many the file holds, for the reload log.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether the file holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<HashMap<String, Secret>> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The value of `name` for a run of `task_id`: the file's, else the
    /// environment's. A secret scoped to namespaces is only given to tasks
    /// under them.
    pub fn get(&self, name: &str, task_id: &str) -> Option<String> {
        if let Some(secret) = self.current().get(name) {
            let namespaces = secret.namespaces();
            if !namespaces.is_empty()
                && !namespaces.iter().any(|ns| task_id.starts_with(ns.as_str()))
            {
                return None;
            }
            return Some(secret.value().to_string());
        }
        std::env::var(format!("{ENV_PREFIX}{name}")).ok()
    }

    /// Whether a caller confined to `namespace` (`None`: not confined) may
    /// name `name` now. A confined caller may only name file secrets given
    /// to its namespace; an unconfined one any secret there is.
    pub fn allows(&self, name: &str, namespace: Option<&str>) -> bool {
        let current = self.current();
        match (current.get(name), namespace) {
            (Some(_), None) => true,
            (Some(secret), Some(ns)) => secret
                .namespaces()
                .iter()
                .any(|allowed| ns.starts_with(allowed.as_str())),
            (None, None) => std::env::var_os(format!("{ENV_PREFIX}{name}")).is_some(),
            (None, Some(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_can_be_environment_variables() {
        assert!(check_name("PRICES_API_KEY").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_file_comes_first_and_a_bad_one_names_no_value() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secrets.yaml");
        std::fs::write(
            &path,
            "API_KEY: from-file\nTEAM_A: {value: for-a, namespaces: [team-a.]}\n",
        )
        .expect("write");
        let secrets = NamedSecrets::default();
        secrets.replace(NamedSecrets::load(&path).expect("valid"));
        assert_eq!(secrets.get("API_KEY", "any").as_deref(), Some("from-file"));
        assert!(secrets.allows("API_KEY", None));
        assert!(
            !secrets.allows("API_KEY", Some("team-a.")),
            "not given to team-a."
        );
        assert!(secrets.allows("TEAM_A", Some("team-a.")));
        assert!(!secrets.allows("TEAM_A", Some("team-b.")));
        assert_eq!(secrets.get("TEAM_A", "team-a.x").as_deref(), Some("for-a"));
        assert_eq!(
            secrets.get("TEAM_A", "team-b.x"),
            None,
            "another namespace's task"
        );
        assert!(!secrets.allows("RECUR_TEST_SURELY_UNDEFINED", None));
        std::fs::write(&path, "API_KEY: [hunter2\n").expect("write");
        let error = NamedSecrets::load(&path).expect_err("broken").to_string();
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::write(&path, "bad-name: x\n").expect("write");
        let error = NamedSecrets::load(&path).expect_err("bad name").to_string();
        assert!(error.contains("\"bad-name\""), "{error}");
    }
}
