//! `recur task ...`: the operator's command line over the public API.
//! This module owns the clap tree (the connection flags every subcommand
//! shares, the subcommands) and the dispatch; each subcommand's module
//! owns its flags and what it prints; [`errors`] alone picks exit codes.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use recur::client::{Client, Connection};

mod apply;
mod control;
mod diff;
mod duration;
mod errors;
mod get;
mod list;
mod output;
mod plan;
mod proto_json;
mod register;
mod selector;
mod spec_file;
mod table;
mod watch;

use errors::CliError;

/// The exit codes, shown by `recur task --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  server or connection error (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, DATA_LOSS, ...),
     or a local failure (stdout unwritable)
  2  usage error: bad flags, an unreadable or invalid task file, INVALID_ARGUMENT,
     OUT_OF_RANGE
  3  not found (NOT_FOUND)
  4  refused by the server (ALREADY_EXISTS, FAILED_PRECONDITION, PERMISSION_DENIED,
     UNAUTHENTICATED, RESOURCE_EXHAUSTED, ABORTED)
With several task ids, the worst failure's code: 1 before 4 before 3 before 2.

Examples:
  recur task register fetch-prices --every 60s --http https://api.example.com/prices
  recur task list --selector team=pricing
  recur task apply -f tasks.yaml --dry-run";

/// `recur task` and its global connection flags.
#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct TaskArgs {
    /// Where the server is and how to reach it.
    #[command(flatten)]
    connection: ConnectionFlags,
    /// What to do.
    #[command(subcommand)]
    command: TaskCommand,
}

/// How to reach the server; global, so they may follow the subcommand.
#[derive(Args)]
struct ConnectionFlags {
    /// Server address: host:port (plaintext), http://host:port, or
    /// https://host:port (TLS).
    #[arg(
        long,
        env = "RECUR_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Bearer token (from `recur token new`) sent with every call.
    #[arg(long, env = "RECUR_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate (https).
    #[arg(long, env = "RECUR_CA", global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --key.
    #[arg(long, env = "RECUR_CERT", global = true)]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "RECUR_KEY", global = true)]
    key: Option<PathBuf>,
}

impl ConnectionFlags {
    /// Checks the flags and connects.
    async fn connect(&self) -> Result<Client, CliError> {
        let connection = Connection::new(
            &self.server,
            self.token.as_deref(),
            self.ca.clone(),
            self.cert.clone(),
            self.key.clone(),
        )?;
        Ok(connection.connect().await?)
    }
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Register a task from a spec file and/or flags.
    #[command(after_help = register::EXAMPLES)]
    Register(Box<register::RegisterArgs>),
    /// Show one task in detail.
    #[command(after_help = get::EXAMPLES)]
    Get(get::GetArgs),
    /// List tasks as a table (or JSON/YAML).
    #[command(after_help = list::EXAMPLES)]
    List(list::ListArgs),
    /// Pause tasks: no scheduled run starts until resumed.
    #[command(after_help = control::PAUSE_EXAMPLES)]
    Pause(control::ReasonArgs),
    /// Resume paused tasks from their next future slot.
    #[command(after_help = control::RESUME_EXAMPLES)]
    Resume(control::IdsArgs),
    /// Run tasks once now; prints each run's number.
    #[command(after_help = control::TRIGGER_EXAMPLES)]
    Trigger(control::IdsArgs),
    /// Cancel tasks for good (state CANCELLED).
    #[command(after_help = control::CANCEL_EXAMPLES)]
    Cancel(control::ReasonArgs),
    /// Delete cancelled or completed tasks (--cancel: cancel live ones first).
    #[command(after_help = control::DELETE_EXAMPLES)]
    Delete(control::DeleteArgs),
    /// Follow results as runs finish, one line each; resumes after a
    /// disconnect.
    #[command(after_help = watch::EXAMPLES)]
    Watch(watch::WatchArgs),
    /// Make a file of tasks true on the server: create, update, prune.
    #[command(after_help = apply::EXAMPLES)]
    Apply(apply::ApplyArgs),
}

/// Runs one `recur task` subcommand: connects, runs it, and turns its
/// outcome into the exit code (errors are reported where they happen when
/// a command goes on past them, else here).
pub async fn run(args: TaskArgs) -> ExitCode {
    let code = match execute(args).await {
        Ok(code) => code,
        Err(error) => {
            error.report();
            error.exit_code()
        }
    };
    errors::to_exit_code(code)
}

/// The subcommand's own exit code (non-zero when it went on past
/// failures it already reported), or the error that stopped it. Files and
/// flags are checked before connecting: a bad file is a usage error
/// whether or not the server is up.
async fn execute(args: TaskArgs) -> Result<u8, CliError> {
    let connection = &args.connection;
    match args.command {
        TaskCommand::Register(register) => {
            let spec = register.spec()?;
            register.run(&mut connection.connect().await?, spec).await
        }
        TaskCommand::Apply(apply) => {
            let entries = apply.read()?;
            apply.run(&mut connection.connect().await?, entries).await
        }
        TaskCommand::Get(get) => get.run(&mut connection.connect().await?).await,
        TaskCommand::List(list) => list.run(&mut connection.connect().await?).await,
        TaskCommand::Watch(watch) => watch.run(&mut connection.connect().await?).await,
        TaskCommand::Pause(ids) => Ok(control::pause(&mut connection.connect().await?, ids).await),
        TaskCommand::Resume(ids) => {
            Ok(control::resume(&mut connection.connect().await?, ids).await)
        }
        TaskCommand::Trigger(ids) => {
            Ok(control::trigger(&mut connection.connect().await?, ids).await)
        }
        TaskCommand::Cancel(ids) => {
            Ok(control::cancel(&mut connection.connect().await?, ids).await)
        }
        TaskCommand::Delete(ids) => {
            Ok(control::delete(&mut connection.connect().await?, ids).await)
        }
    }
}
