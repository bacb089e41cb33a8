//! Who may call what: the caller's identity, scopes and namespace, the
//! access file they come from, the table of which scope each RPC needs, and
//! the tower layer in front of every service that checks them. Handlers
//! read the [`Caller`] the layer put in the request's extensions; nothing
//! below the API knows about callers.

pub mod file;
pub mod layer;
pub mod methods;
pub mod quota;
pub mod token;

use std::sync::{Arc, RwLock};

pub use file::{AccessFile, AccessFileError, Entry};

/// A right a caller may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GetTask, ListTasks, StreamResults (and reflection, by default).
    Read,
    /// RegisterTask, UpdateTask, PauseTask, ResumeTask, TriggerTask,
    /// CancelTask, DeleteTask.
    Write,
    /// Everything, including what is added later for operators.
    Admin,
}

impl Scope {
    /// The name used in the access file and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a name as the access file spells it.
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// The scopes one caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: the caller when authentication is off.
    pub const ALL: Scopes = Scopes(0b111);

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }

    /// These scopes plus `scope`.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | Self::bit(scope))
    }

    /// Whether `scope` itself is among these (admin does not imply it).
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    /// Whether a call needing `needed` is allowed: admin allows everything.
    pub fn allow(self, needed: Scope) -> bool {
        self.0 & (Self::bit(needed) | Self::bit(Scope::Admin)) != 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

/// Who is calling, as the access layer established it. Present in every
/// request's extensions once the layer let it through.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name or the certificate's subject: shown in audit
    /// events and errors, never the token itself.
    pub name: Arc<str>,
    /// What the caller may do.
    pub scopes: Scopes,
    /// The task-id prefix the caller is confined to; `None` for all tasks.
    pub namespace: Option<Arc<str>>,
}

impl Caller {
    /// The caller when authentication is off (loopback, or `--insecure`):
    /// every scope, every task.
    pub fn anonymous() -> Caller {
        // One shared name: this is every call's caller when authentication
        // is off, and a clone is a reference count, not an allocation.
        static NAME: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("anonymous"));
        Caller {
            name: NAME.clone(),
            scopes: Scopes::ALL,
            namespace: None,
        }
    }

    /// Whether `task_id` is in the caller's namespace.
    pub fn sees(&self, task_id: &str) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| task_id.starts_with(ns))
    }
}

/// The access file in force, swapped whole when the file reloads; readers
/// take a reference for one call and never hold the lock across anything.
#[derive(Debug, Clone, Default)]
pub struct AccessHandle(Arc<RwLock<Option<Arc<AccessFile>>>>);

impl AccessHandle {
    /// A handle holding `file`.
    pub fn new(file: Option<AccessFile>) -> AccessHandle {
        AccessHandle(Arc::new(RwLock::new(file.map(Arc::new))))
    }

    /// The file in force now.
    pub fn current(&self) -> Option<Arc<AccessFile>> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            // A writer cannot panic between taking the lock and storing an
            // Arc, so poisoning leaves a whole value behind.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `file` in force for every call from now on.
    pub fn replace(&self, file: AccessFile) {
        let file = Some(Arc::new(file));
        match self.0.write() {
            Ok(mut guard) => *guard = file,
            Err(poisoned) => *poisoned.into_inner() = file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_and_the_others_only_themselves() {
        let admin: Scopes = [Scope::Admin].into_iter().collect();
        let read: Scopes = [Scope::Read].into_iter().collect();
        let write: Scopes = [Scope::Write].into_iter().collect();
        for scope in [Scope::Read, Scope::Write, Scope::Admin] {
            assert!(admin.allow(scope));
        }
        assert!(read.allow(Scope::Read));
        assert!(!read.allow(Scope::Write));
        assert!(!read.allow(Scope::Admin));
        assert!(write.allow(Scope::Write));
        assert!(!write.allow(Scope::Read));
        assert!(!Scopes::default().allow(Scope::Read));
    }

    #[test]
    fn a_namespace_is_a_prefix_of_the_task_id() {
        let caller = Caller {
            name: Arc::from("t"),
            scopes: Scopes::ALL,
            namespace: Some(Arc::from("team-a.")),
        };
        assert!(caller.sees("team-a.fetch"));
        assert!(!caller.sees("team-b.fetch"));
        assert!(!caller.sees("team-a"));
        assert!(Caller::anonymous().sees("anything"));
    }
}
