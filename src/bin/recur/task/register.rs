//! `recur task register ID`: a spec from a file and/or flags that set its
//! common fields, sent as RegisterTask (or checked with validate_only).

use std::time::Duration;

use clap::{Args, ValueEnum};
use recur::{
    client::Client,
    pb::v1::{self as pb, action::Kind, schedule::Cadence},
};

use super::{
    duration,
    errors::{CliError, exit},
    get::{self, DetailFormat},
    selector, spec_file,
};

/// `register --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  recur task register fetch-prices --every 60s --http https://api.example.com/prices \\
      --header 'Accept: application/json' --label team=pricing
  recur task register nightly --cron '0 3 * * *' --time-zone Europe/Berlin --redis INCR nightly:runs
  recur task register fetch-prices -f spec.yaml --every 5m --dry-run";

/// `recur task register`.
#[derive(Args)]
pub struct RegisterArgs {
    /// Id of the new task: [A-Za-z0-9._-], up to 128 characters.
    id: String,
    /// A TaskSpec file, YAML or JSON in the proto3 JSON mapping (`-` reads
    /// stdin). The flags below override its fields.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<String>,
    /// The spec's fields as flags.
    #[command(flatten)]
    spec: SpecFlags,
    /// Only validate on the server (validate_only) and print the task that
    /// would be created; nothing is stored.
    #[arg(long)]
    dry_run: bool,
    /// Output format of the registered task.
    #[arg(short, long, value_enum, default_value_t = DetailFormat::Human)]
    output: DetailFormat,
}

/// The common fields of a TaskSpec as flags.
#[derive(Args)]
struct SpecFlags {
    /// Run at this fixed interval, e.g. 60s, 1m30s, 2h.
    #[arg(long, value_parser = duration::parse, conflicts_with = "cron", value_name = "DURATION")]
    every: Option<Duration>,
    /// Run on this cron expression (5 fields, or 6 with seconds first).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// IANA time zone the cron expression is read in (default UTC).
    #[arg(long, value_name = "TZ")]
    time_zone: Option<String>,
    /// Upper bound of a random delay added to each slot, e.g. 5s.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    jitter: Option<Duration>,
    /// Complete the task after this many scheduled runs.
    #[arg(long, value_name = "N")]
    max_runs: Option<u64>,
    /// Call this URL (an HTTP action).
    #[arg(long, value_name = "URL", conflicts_with_all = ["redis", "custom"])]
    http: Option<String>,
    /// HTTP method of the HTTP action (default GET).
    #[arg(long)]
    method: Option<String>,
    /// A request header, 'Name: value' (repeatable). Its value is a secret:
    /// the server never shows it again.
    #[arg(long, value_name = "'NAME: VALUE'", value_parser = header)]
    header: Vec<(String, String)>,
    /// A header whose value the server reads from its secrets,
    /// 'Name=SECRET_NAME' (repeatable).
    #[arg(long, value_name = "NAME=SECRET", value_parser = selector::label)]
    secret_header: Vec<(String, String)>,
    /// Request body of the HTTP action.
    #[arg(long)]
    body: Option<String>,
    /// Run this Redis command, as its arguments: `--redis INCR hits` (put
    /// it last; it takes every word after it).
    #[arg(long, num_args = 1.., value_name = "ARG", conflicts_with = "custom")]
    redis: Option<Vec<String>>,
    /// Run the handler the embedding program registered under KIND.
    #[arg(long, value_name = "KIND")]
    custom: Option<String>,
    /// Input of the custom handler (text).
    #[arg(long)]
    payload: Option<String>,
    /// A label, key=value (repeatable; added to the file's labels).
    #[arg(long, value_name = "KEY=VALUE", value_parser = selector::label)]
    label: Vec<(String, String)>,
    /// Bound of each attempt, e.g. 30s.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// What happens when a slot comes while a run is in flight.
    #[arg(long, value_enum)]
    overlap: Option<Overlap>,
    /// Attempts per run, the first included (retries of failed attempts).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
}

/// OverlapPolicy, as a flag value.
#[derive(Clone, Copy, ValueEnum)]
enum Overlap {
    /// Do not start the new run; count the slot as skipped (default).
    Skip,
    /// Start the new run alongside the running one.
    Allow,
    /// Cancel the running run, then start the new one.
    CancelRunning,
    /// Keep one pending run, started when the current one finishes.
    BufferOne,
}

impl From<Overlap> for pb::OverlapPolicy {
    fn from(overlap: Overlap) -> pb::OverlapPolicy {
        match overlap {
            Overlap::Skip => pb::OverlapPolicy::Skip,
            Overlap::Allow => pb::OverlapPolicy::Allow,
            Overlap::CancelRunning => pb::OverlapPolicy::CancelRunning,
            Overlap::BufferOne => pb::OverlapPolicy::BufferOne,
        }
    }
}

/// Parses `Name: value` (clap value parser for `--header`).
fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{text:?} is not 'Name: value'")),
    }
}

impl RegisterArgs {
    /// The spec to send: the file's (if any) with the flags over it.
    pub fn spec(&self) -> Result<pb::TaskSpec, CliError> {
        let mut spec = match &self.file {
            Some(path) => spec_file::spec(&spec_file::read(path)?)?,
            None => pb::TaskSpec::default(),
        };
        self.spec.apply(&mut spec)?;
        Ok(spec)
    }

    /// Registers (or, with --dry-run, validates) and prints the task.
    pub async fn run(self, client: &mut Client, spec: pb::TaskSpec) -> Result<u8, CliError> {
        let task = client
            .register_task(pb::RegisterTaskRequest {
                task_id: self.id.clone(),
                spec: Some(spec),
                request_id: String::new(),
                validate_only: self.dry_run,
            })
            .await?
            .into_inner();
        get::print(&task, self.output)?;
        if self.dry_run {
            eprintln!("(dry run: {} was not created)", self.id);
        }
        Ok(exit::SUCCESS)
    }
}

impl SpecFlags {
    /// Sets the fields the flags name, over what the file gave.
    fn apply(&self, spec: &mut pb::TaskSpec) -> Result<(), CliError> {
        let schedule = spec.schedule.get_or_insert_default();
        if let Some(every) = self.every {
            schedule.cadence = Some(Cadence::Every(duration::to_proto(every)));
        }
        if let Some(cron) = &self.cron {
            schedule.cadence = Some(Cadence::Cron(cron.clone()));
        }
        if let Some(zone) = &self.time_zone {
            schedule.time_zone = zone.clone();
        }
        if let Some(jitter) = self.jitter {
            schedule.jitter = Some(duration::to_proto(jitter));
        }
        if let Some(max_runs) = self.max_runs {
            schedule.max_runs = max_runs;
        }
        self.apply_action(spec)?;
        spec.labels.extend(self.label.iter().cloned());
        if let Some(timeout) = self.timeout {
            spec.timeout = Some(duration::to_proto(timeout));
        }
        if let Some(overlap) = self.overlap {
            spec.overlap = pb::OverlapPolicy::from(overlap) as i32;
        }
        if let Some(attempts) = self.max_attempts {
            spec.retry.get_or_insert_default().max_attempts = attempts;
        }
        Ok(())
    }

    /// The action flags: a kind flag replaces the file's action of another
    /// kind; the detail flags need an action of their kind.
    fn apply_action(&self, spec: &mut pb::TaskSpec) -> Result<(), CliError> {
        let action = spec.action.get_or_insert_default();
        if let Some(url) = &self.http {
            match &mut action.kind {
                Some(Kind::Http(http)) => http.url = url.clone(),
                _ => {
                    action.kind = Some(Kind::Http(pb::HttpAction {
                        url: url.clone(),
                        ..Default::default()
                    }))
                }
            }
        }
        if let Some(args) = &self.redis {
            action.kind = Some(Kind::Redis(pb::RedisAction { args: args.clone() }));
        }
        if let Some(kind) = &self.custom {
            match &mut action.kind {
                Some(Kind::Custom(custom)) => custom.kind = kind.clone(),
                _ => {
                    action.kind = Some(Kind::Custom(pb::CustomAction {
                        kind: kind.clone(),
                        payload: Vec::new(),
                    }))
                }
            }
        }
        let http_flags = self.method.is_some()
            || !self.header.is_empty()
            || !self.secret_header.is_empty()
            || self.body.is_some();
        if http_flags {
            let Some(Kind::Http(http)) = &mut action.kind else {
                return Err(CliError::Usage(
                    "--method, --header, --secret-header and --body need an HTTP action: \
                     give --http URL or a file with action.http"
                        .into(),
                ));
            };
            if let Some(method) = &self.method {
                http.method = method.clone();
            }
            http.headers.extend(self.header.iter().cloned());
            http.secret_headers
                .extend(self.secret_header.iter().cloned());
            if let Some(body) = &self.body {
                http.body = body.clone().into_bytes();
            }
        }
        if let Some(payload) = &self.payload {
            let Some(Kind::Custom(custom)) = &mut action.kind else {
                return Err(CliError::Usage(
                    "--payload needs a custom action: give --custom KIND or a file with action.custom"
                        .into(),
                ));
            };
            custom.payload = payload.clone().into_bytes();
        }
        if action.kind.is_none() {
            // Leave the action unset so the server names the missing field.
            spec.action = None;
        }
        Ok(())
    }
}
