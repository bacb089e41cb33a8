//! Task files: reading one (a path, or `-` for stdin), a single TaskSpec
//! for `register -f`, and the `tasks:` list `apply -f` makes true. YAML is
//! read into a JSON value (YAML is a superset of JSON, so JSON files read
//! the same way), then each spec goes through the proto3 JSON mapping.
//! Every mistake is a usage error naming the file and the entry.

use std::{collections::HashMap, io::Read};

use recur::pb::v1 as pb;
use serde_json::Value;

use super::{errors::CliError, proto_json};

/// One `{task_id, spec}` entry of a tasks file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place in the file, for messages (`tasks[2]`).
    pub index: usize,
    /// The task it describes.
    pub task_id: String,
    /// What the task should be.
    pub spec: pb::TaskSpec,
}

impl Entry {
    /// `tasks[2] (fetch-prices)`: how messages name the entry.
    pub fn name(&self) -> String {
        format!("tasks[{}] ({})", self.index, self.task_id)
    }
}

/// A file's text and the name messages use for it (`stdin` for `-`).
pub struct Source {
    /// The path as given, or `stdin`.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// Reads `path`, or stdin for `-`.
pub fn read(path: &str) -> Result<Source, CliError> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(Source {
            name: "stdin".into(),
            text,
        });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))?;
    Ok(Source {
        name: path.to_string(),
        text,
    })
}

/// The YAML or JSON document of a file, as a JSON value.
fn document(source: &Source) -> Result<Value, CliError> {
    serde_saphyr::from_str::<Value>(&source.text)
        .map_err(|e| CliError::Usage(format!("{}: not YAML or JSON: {e}", source.name)))
}

/// A file holding one TaskSpec in the JSON mapping (`register -f`).
pub fn spec(source: &Source) -> Result<pb::TaskSpec, CliError> {
    let value = document(source)?;
    proto_json::spec_from_value(value).map_err(|e| in_file(&source.name, e))
}

/// A tasks file: a top-level `tasks:` list of `{task_id, spec}` entries
/// (`taskId` also accepted), ids unique.
pub fn tasks(source: &Source) -> Result<Vec<Entry>, CliError> {
    let file = &source.name;
    let value = document(source)?;
    let Value::Object(mut top) = value else {
        return Err(CliError::Usage(format!(
            "{file}: expected a mapping with a `tasks:` list at the top"
        )));
    };
    if let Some(other) = top.keys().find(|k| *k != "tasks") {
        return Err(CliError::Usage(format!(
            "{file}: unknown top-level key {other:?} (a tasks file has only `tasks:`)"
        )));
    }
    let list = match top.remove("tasks") {
        Some(Value::Array(list)) => list,
        Some(Value::Null) => Vec::new(),
        Some(_) => return Err(CliError::Usage(format!("{file}: `tasks` must be a list"))),
        None => return Err(CliError::Usage(format!("{file}: no `tasks:` list"))),
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, item) in list.into_iter().enumerate() {
        let entry = entry(file, index, item)?;
        if let Some(first) = seen.insert(entry.task_id.clone(), index) {
            return Err(CliError::Usage(format!(
                "{file}: {}: task_id {:?} is also tasks[{first}]",
                entry.name(),
                entry.task_id
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// One entry of a tasks file.
fn entry(file: &str, index: usize, item: Value) -> Result<Entry, CliError> {
    let at = format!("{file}: tasks[{index}]");
    let Value::Object(fields) = item else {
        return Err(CliError::Usage(format!(
            "{at}: expected a mapping with task_id and spec"
        )));
    };
    let mut task_id = None;
    let mut spec = None;
    for (key, value) in fields {
        match key.as_str() {
            "task_id" | "taskId" => {
                if task_id.is_some() {
                    return Err(CliError::Usage(format!(
                        "{at}: task_id is given twice (task_id and taskId)"
                    )));
                }
                let Value::String(id) = value else {
                    return Err(CliError::Usage(format!("{at}: task_id must be a string")));
                };
                task_id = Some(id);
            }
            "spec" => spec = Some(value),
            other => {
                return Err(CliError::Usage(format!(
                    "{at}: unknown key {other:?} (an entry has task_id and spec)"
                )));
            }
        }
    }
    let task_id = match task_id {
        Some(id) if !id.is_empty() => id,
        _ => return Err(CliError::Usage(format!("{at}: task_id is required"))),
    };
    let at = format!("{at} ({task_id})");
    let Some(spec) = spec else {
        return Err(CliError::Usage(format!("{at}: spec is required")));
    };
    let spec = proto_json::spec_from_value(spec).map_err(|e| in_file(&format!("{at}.spec"), e))?;
    Ok(Entry {
        index,
        task_id,
        spec,
    })
}

/// Prefixes a spec's mapping error with where it came from; other errors
/// pass unchanged.
fn in_file(at: &str, error: CliError) -> CliError {
    match error {
        CliError::Usage(message) => CliError::Usage(format!("{at}: {message}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Entry>, CliError> {
        tasks(&Source {
            name: "t.yaml".into(),
            text: text.into(),
        })
    }

    #[test]
    fn entries_and_their_mistakes() {
        let ok = parse(
            "tasks:\n  - task_id: a\n    spec: {schedule: {every: 60s}}\n  - taskId: b\n    spec: {}\n",
        );
        let ok = ok.map_err(|e| e.to_string());
        assert_eq!(
            ok.map(|v| v.iter().map(|e| e.task_id.clone()).collect::<Vec<_>>()),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        let err = |text: &str| match parse(text) {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => e.to_string(),
        };
        assert!(err("tasks:\n  - spec: {}\n").starts_with("t.yaml: tasks[0]: task_id is required"));
        assert!(
            err("tasks:\n  - {task_id: a, spec: {}}\n  - {task_id: a, spec: {}}\n")
                .contains("tasks[1] (a): task_id \"a\" is also tasks[0]")
        );
        assert!(err("tasks:\n  - {task_id: a, spec: {}, x: 1}\n").contains("unknown key \"x\""));
        assert!(
            err("tasks:\n  - {task_id: a, spec: {schedule: {every: x}}}\n")
                .starts_with("t.yaml: tasks[0] (a).spec: ")
        );
    }
}
