//! `apply`'s plan: what it takes to make a tasks file true, found with
//! reads and validate_only calls only, so a bad entry stops the apply
//! before anything changes. Equality is the server's `spec_fingerprint`
//! (header values included, though they read back redacted); the changed
//! paths come from comparing the specs leaf by leaf ([`super::diff`]),
//! with one more validate_only call to catch a changed header value that
//! the redacted specs cannot show.

use std::collections::{HashMap, HashSet};

use recur::{
    client::Client,
    pb::v1::{self as pb, action::Kind},
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{control, diff, errors::CliError, list, spec_file::Entry};

/// Path that holds the header values (redacted when read).
const HEADERS: &str = "action.http.headers";

/// One change the plan makes.
pub enum Change {
    /// Register a task the server does not have.
    Create {
        /// The file's entry.
        entry: Entry,
    },
    /// Update a task whose spec differs.
    Update {
        /// The file's entry.
        entry: Entry,
        /// The update mask: the changed paths, or `*` when they could not
        /// be told apart (the whole spec is replaced).
        paths: Vec<&'static str>,
    },
    /// Delete a task that has ended (CANCELLED or COMPLETED) and whose
    /// spec differs from the file's, then register the file's: an ended
    /// task cannot be updated, and the file says it should run (like
    /// Terraform's "must be replaced"). Its result history goes with it.
    Replace {
        /// The file's entry.
        entry: Entry,
        /// Its state, for the plan line.
        state: &'static str,
    },
    /// Cancel (when live) and delete a task the file no longer has.
    Delete {
        /// The task.
        task_id: String,
        /// ACTIVE or PAUSED, so it is cancelled first.
        live: bool,
    },
}

impl Change {
    /// The plan line: `+ id`, `~ id (paths)`, `- id`.
    pub fn line(&self) -> String {
        match self {
            Change::Create { entry } => format!("+ {}", entry.task_id),
            Change::Update { entry, paths } if paths == &["*"] => format!(
                "~ {} (*: the whole spec; the changed fields could not be told apart)",
                entry.task_id
            ),
            Change::Update { entry, paths } => {
                format!("~ {} ({})", entry.task_id, paths.join(", "))
            }
            Change::Replace { entry, state } => format!(
                "-/+ {} (it is {state}: deleted and registered again from the file)",
                entry.task_id
            ),
            Change::Delete { task_id, .. } => format!("- {task_id}"),
        }
    }
}

/// The changes, in file order then pruned tasks in id order, and how many
/// entries need none.
pub struct Plan {
    /// What to do.
    pub changes: Vec<Change>,
    /// Entries already true on the server.
    pub unchanged: usize,
}

/// Counts of a plan or of what was applied.
#[derive(Default)]
pub struct Counts {
    /// Tasks created.
    pub created: usize,
    /// Tasks updated.
    pub updated: usize,
    /// Ended tasks deleted and registered again.
    pub replaced: usize,
    /// Tasks deleted.
    pub deleted: usize,
}

impl Counts {
    /// Counts one change.
    pub fn add(&mut self, change: &Change) {
        match change {
            Change::Create { .. } => self.created += 1,
            Change::Update { .. } => self.updated += 1,
            Change::Replace { .. } => self.replaced += 1,
            Change::Delete { .. } => self.deleted += 1,
        }
    }

    /// `1 created, 1 updated, 1 deleted` (with `verbs` "to create", ...
    /// for a plan); replacements only when there are some.
    pub fn describe(&self, verbs: [&str; 4]) -> String {
        let [create, update, replace, delete] = verbs;
        let replaced = if self.replaced > 0 {
            format!("{} {replace}, ", self.replaced)
        } else {
            String::new()
        };
        format!(
            "{} {create}, {} {update}, {replaced}{} {delete}",
            self.created, self.updated, self.deleted
        )
    }
}

impl Plan {
    /// `plan: 1 to create, 1 to update, 1 to delete, 3 unchanged`.
    pub fn summary(&self) -> String {
        let mut counts = Counts::default();
        self.changes.iter().for_each(|c| counts.add(c));
        format!(
            "plan: {}, {} unchanged",
            counts.describe(["to create", "to update", "to replace", "to delete"]),
            self.unchanged
        )
    }
}

/// Plans `entries` of `file` against the server; with `prune`, tasks under
/// that selector that the file lacks are deleted.
pub async fn make(
    client: &mut Client,
    file: &str,
    entries: Vec<Entry>,
    prune: Option<&HashMap<String, String>>,
) -> Result<Plan, CliError> {
    let names: HashSet<String> = entries.iter().map(|e| e.task_id.clone()).collect();
    let mut plan = Plan {
        changes: Vec::new(),
        unchanged: 0,
    };
    for entry in entries {
        let context = format!("{file}: {}", entry.name());
        let about = |status| CliError::about(context.clone(), status);
        match entry_change(client, entry).await {
            Ok(Some(change)) => plan.changes.push(change),
            Ok(None) => plan.unchanged += 1,
            Err(status) => return Err(about(status)),
        }
    }
    if let Some(selector) = prune {
        let present = list::all(client, pb::TaskState::Unspecified, selector.clone()).await?;
        for task in present {
            if !names.contains(&task.task_id) {
                plan.changes.push(Change::Delete {
                    live: control::is_live_state(task.state),
                    task_id: task.task_id,
                });
            }
        }
    }
    Ok(plan)
}

/// What one entry needs, None when nothing.
async fn entry_change(client: &mut Client, entry: Entry) -> Result<Option<Change>, tonic::Status> {
    let read = client
        .get_task(pb::GetTaskRequest {
            task_id: entry.task_id.clone(),
            next_run_count: 0,
        })
        .await;
    let stored = match read {
        Ok(task) => task.into_inner(),
        Err(status) if status.code() == Code::NotFound => {
            // Checked now, so a bad entry fails the apply before any change.
            register(client, &entry.task_id, &entry, true).await?;
            return Ok(Some(Change::Create { entry }));
        }
        Err(status) => return Err(status),
    };
    if let Some(state) = ended(stored.state) {
        // UpdateTask refuses an ended task; a registration of the same id
        // answers with the task when the spec is identical (header values
        // included) and ALREADY_EXISTS when it is not.
        let same = register(client, &entry.task_id, &entry, true).await;
        return match same {
            Ok(_) => Ok(None),
            Err(status) if status.code() == Code::AlreadyExists => {
                // The replacement is checked now, under a generated id:
                // the old task must not be deleted for a spec the server
                // would then refuse.
                register(client, "", &entry, true).await?;
                Ok(Some(Change::Replace { entry, state }))
            }
            Err(status) => Err(status),
        };
    }
    // The file is the truth: the whole spec, no mask.
    let candidate = update(client, &entry, &[], true).await?;
    if candidate.spec_fingerprint == stored.spec_fingerprint {
        return Ok(None);
    }
    let paths = changed_paths(client, &entry, &stored, &candidate).await?;
    Ok(Some(Change::Update { entry, paths }))
}

/// The state's name when it is CANCELLED or COMPLETED.
fn ended(state: i32) -> Option<&'static str> {
    match pb::TaskState::try_from(state) {
        Ok(pb::TaskState::Cancelled) => Some("CANCELLED"),
        Ok(pb::TaskState::Completed) => Some("COMPLETED"),
        _ => None,
    }
}

/// The mask that turns the stored spec into the file's: the leaves that
/// differ, plus the headers when only their (redacted) values differ; `*`
/// when even that does not reproduce the whole-spec candidate.
async fn changed_paths(
    client: &mut Client,
    entry: &Entry,
    stored: &pb::Task,
    candidate: &pb::Task,
) -> Result<Vec<&'static str>, tonic::Status> {
    let target = &candidate.spec_fingerprint;
    let empty = pb::TaskSpec::default();
    let mut paths = diff::changed_paths(
        stored.spec.as_ref().unwrap_or(&empty),
        candidate.spec.as_ref().unwrap_or(&empty),
    );
    let http = matches!(
        entry.spec.action.as_ref().and_then(|a| a.kind.as_ref()),
        Some(Kind::Http(_))
    );
    let headers_covered = paths.iter().any(|p| *p == HEADERS || *p == "action");
    // The fingerprint the mask in `paths` gives, once asked.
    let mut found = None;
    if http && !headers_covered {
        // Only a changed header value can hide from the comparison; an
        // empty diff with a different fingerprint means just that.
        if !paths.is_empty() {
            found = Some(masked_fingerprint(client, entry, &paths).await?);
        }
        if found.as_ref() != Some(&Some(target.clone())) {
            paths.push(HEADERS);
            diff::sort(&mut paths);
            found = None;
        }
    }
    if paths.is_empty() {
        return Ok(vec!["*"]);
    }
    // The mask must reproduce the file's spec exactly, else replace it all.
    let found = match found {
        Some(found) => found,
        None => masked_fingerprint(client, entry, &paths).await?,
    };
    if found.as_ref() == Some(target) {
        Ok(paths)
    } else {
        Ok(vec!["*"])
    }
}

/// The fingerprint a masked update of the file's spec would give; None
/// when the server refuses the mask as incomplete (moving the URL to
/// another host without resending the headers), which the caller treats
/// as a mismatch.
async fn masked_fingerprint(
    client: &mut Client,
    entry: &Entry,
    paths: &[&'static str],
) -> Result<Option<String>, tonic::Status> {
    match update(client, entry, paths, true).await {
        Ok(task) => Ok(Some(task.spec_fingerprint)),
        Err(status) if refuses_mask(&status) => Ok(None),
        Err(status) => Err(status),
    }
}

/// INVALID_ARGUMENT about `update_mask` itself.
fn refuses_mask(status: &tonic::Status) -> bool {
    status.code() == Code::InvalidArgument
        && status
            .get_error_details()
            .bad_request()
            .is_some_and(|b| b.field_violations.iter().any(|v| v.field == "update_mask"))
}

/// RegisterTask of the entry's spec under `task_id` (empty: one the
/// server generates).
pub async fn register(
    client: &mut Client,
    task_id: &str,
    entry: &Entry,
    validate_only: bool,
) -> Result<pb::Task, tonic::Status> {
    Ok(client
        .register_task(pb::RegisterTaskRequest {
            task_id: task_id.to_string(),
            spec: Some(entry.spec.clone()),
            request_id: String::new(),
            validate_only,
        })
        .await?
        .into_inner())
}

/// UpdateTask with the entry's spec and `paths` as the mask (none: the
/// whole spec).
pub async fn update(
    client: &mut Client,
    entry: &Entry,
    paths: &[&'static str],
    validate_only: bool,
) -> Result<pb::Task, tonic::Status> {
    let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    });
    Ok(client
        .update_task(pb::UpdateTaskRequest {
            task_id: entry.task_id.clone(),
            spec: Some(entry.spec.clone()),
            update_mask,
            validate_only,
        })
        .await?
        .into_inner())
}
