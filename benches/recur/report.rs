//! The suite's output: one table on stdout (Markdown, so a run can be pasted
//! into benches/README.md), the project's targets marked met or missed, and
//! the same data with every detail as JSON.

use std::path::Path;

use serde_json::{Value, json};

use crate::{cli::Phase, firing::Firing, stats::Percentiles};

/// recur's firing figures at a size and phase, for the peers' ratios.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    /// Lateness p99, ms.
    pub p99: Option<f64>,
    /// Server CPU over the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Server peak RSS.
    pub peak_rss: Option<u64>,
}

/// One line of the table.
#[derive(Debug)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// recur, or the peer measured.
    pub subject: String,
    /// Size and variant, e.g. "10,000 herd".
    pub case: String,
    /// What the latency columns are.
    pub measure: String,
    /// Latency percentiles, when the row has them.
    pub latency: Option<Percentiles>,
    /// Fires or throughput.
    pub count: String,
    /// "missed / doubled", or empty.
    pub missed_doubled: String,
    /// CPU of the measured process over the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Peak RSS of the measured process.
    pub peak_rss: Option<u64>,
    /// RSS growth per task.
    pub bytes_per_task: Option<f64>,
    /// Anything that qualifies the numbers.
    pub notes: Vec<String>,
    /// Every detail, for the JSON file.
    pub json: Value,
}

/// One of the project's targets and whether this run met it.
#[derive(Debug)]
pub struct Target {
    /// What is asked, e.g. "firing 10,000 random: lateness p99 <= 2.5 ms".
    pub what: String,
    /// The measured value, when there is one.
    pub measured: Option<f64>,
    /// Unit of `measured`.
    pub unit: &'static str,
    /// Whether it was met (None: not measured).
    pub met: Option<bool>,
}

impl Target {
    /// A target met when `measured <= limit`.
    pub fn at_most(what: String, measured: Option<f64>, limit: f64, unit: &'static str) -> Target {
        Target {
            what,
            measured,
            unit,
            met: measured.map(|m| m <= limit),
        }
    }

    /// A target met when `measured >= limit`.
    pub fn at_least(what: String, measured: Option<f64>, limit: f64, unit: &'static str) -> Target {
        Target {
            what,
            measured,
            unit,
            met: measured.map(|m| m >= limit),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
    targets: Vec<Target>,
    references: Vec<(usize, Phase, Reference)>,
}

impl Report {
    /// Adds a row (and says so on stderr, so a long run shows progress).
    pub fn add(&mut self, row: Row) {
        eprintln!("  {}", row_line(&row));
        self.rows.push(row);
    }

    /// Records a target check.
    pub fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Keeps recur's figures at `tasks` and `phase` for the peers' ratios.
    pub fn set_reference(&mut self, tasks: usize, phase: Phase, firing: &Firing) {
        self.references.push((
            tasks,
            phase,
            Reference {
                p99: firing.lateness.map(|l| l.p99),
                cpu_percent: firing.cpu_percent,
                peak_rss: firing.peak_rss,
            },
        ));
    }

    /// recur's figures at `tasks` and `phase`, if measured in this run.
    pub fn reference(&self, tasks: usize, phase: Phase) -> Option<Reference> {
        self.references
            .iter()
            .find(|(t, p, _)| *t == tasks && *p == phase)
            .map(|(_, _, r)| *r)
    }

    /// Prints the table and the targets.
    pub fn print(&self) {
        println!(
            "| scenario | subject | case | measure | p50 ms | p99 ms | p99.9 ms | max ms | count | missed / doubled | CPU % of a core | peak RSS MiB | bytes/task | notes |"
        );
        println!(
            "| --- | --- | --- | --- | --: | --: | --: | --: | --- | --- | --: | --: | --: | --- |"
        );
        for row in &self.rows {
            println!("{}", row_line(row));
        }
        if !self.targets.is_empty() {
            println!();
            println!("| target | measured | met |");
            println!("| --- | --: | --- |");
            for t in &self.targets {
                let measured = t.measured.map_or_else(
                    || "not measured".to_string(),
                    |m| format!("{} {}", fmt_value(m), t.unit),
                );
                let met = match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "-",
                };
                println!("| {} | {measured} | {met} |", t.what);
            }
        }
    }

    /// Writes the rows and targets, with `meta` about the run, to `path`.
    pub fn write_json(&self, path: &Path, meta: Value) -> std::io::Result<()> {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "subject": r.subject,
                    "case": r.case,
                    "measure": r.measure,
                    "latency": r.latency.map(Percentiles::to_json),
                    "count": r.count,
                    "notes": r.notes,
                    "details": r.json,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(
                |t| json!({"target": t.what, "measured": t.measured, "unit": t.unit, "met": t.met}),
            )
            .collect();
        let doc = json!({"run": meta, "rows": rows, "targets": targets});
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
    }
}

fn row_line(r: &Row) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), fmt_ms);
    let l = r.latency;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.scenario,
        r.subject,
        r.case,
        r.measure,
        ms(l.map(|l| l.p50)),
        ms(l.map(|l| l.p99)),
        ms(l.map(|l| l.p999)),
        ms(l.map(|l| l.max)),
        r.count,
        if r.missed_doubled.is_empty() {
            "-"
        } else {
            &r.missed_doubled
        },
        r.cpu_percent
            .map_or_else(|| "-".to_string(), |c| format!("{c:.0}")),
        r.peak_rss.map_or_else(
            || "-".to_string(),
            |b| format!("{:.0}", b as f64 / (1024.0 * 1024.0))
        ),
        r.bytes_per_task
            .map_or_else(|| "-".to_string(), |b| format!("{b:.0}")),
        r.notes.join("; "),
    )
}

/// A target's measured value: enough digits to see which side of the
/// limit it is on (2.55 against 2.5).
fn fmt_value(v: f64) -> String {
    if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        fmt_count(v.round() as u64)
    }
}

/// Milliseconds with precision that suits their size.
fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        fmt_count(v.round() as u64)
    }
}

/// 12345 as "12,345".
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
