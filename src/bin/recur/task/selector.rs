//! Labels on the command line: `--label k=v` and label selectors
//! (`--selector team=pricing,env=prod`). ListTasks filters by label
//! equality only, so a selector with anything else (`!=`, `in (...)`, a
//! bare key) is refused here with a sentence rather than sent and matched
//! differently from what was meant.

use std::collections::HashMap;

/// Parses one `k=v` (clap value parser for `--label`).
pub fn label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// Parses `k=v,k=v` (clap value parser for `--selector`).
pub fn selector(text: &str) -> Result<HashMap<String, String>, String> {
    let mut labels = HashMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let unsupported = term.contains("!=")
            || term.contains("==")
            || term.starts_with('!')
            || term.contains(" in ")
            || term.contains(" notin ")
            || term.contains('(');
        if unsupported || !term.contains('=') {
            return Err(format!(
                "{term:?}: only label equality (key=value, comma-separated) is supported"
            ));
        }
        let (key, value) = label(term)?;
        if let Some(previous) = labels.insert(key.clone(), value.clone())
            && previous != value
        {
            return Err(format!(
                "{key:?} is given twice ({previous:?} and {value:?}); no task can match both"
            ));
        }
    }
    if labels.is_empty() {
        return Err("an empty selector selects every task; give key=value".into());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_only() {
        let s = selector("team=pricing, env=prod").unwrap_or_default();
        assert_eq!(s.get("team").map(String::as_str), Some("pricing"));
        assert_eq!(s.len(), 2);
        for bad in ["team!=x", "team in (a,b)", "team", "!team", "", "a=1,a=2"] {
            assert!(selector(bad).is_err(), "{bad}");
        }
    }
}
