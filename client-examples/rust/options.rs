//! The example's command line. The connection options carry the same names
//! in every recur client (the grpcurl walkthrough, this one, later clients
//! and the CLI), from a flag or else its environment variable:
//!
//! | flag       | variable       | meaning                                              |
//! |------------|----------------|------------------------------------------------------|
//! | `--server` | `RECUR_SERVER` | `host:port` or `http://…` plaintext, `https://…` TLS |
//! | `--token`  | `RECUR_TOKEN`  | sent as `authorization: Bearer <token>`              |
//! | `--ca`     | `RECUR_CA`     | CA certificate (PEM) that signed the server's        |
//! | `--cert`   | `RECUR_CERT`   | client certificate (PEM) for mTLS                    |
//! | `--key`    | `RECUR_KEY`    | its private key (PEM)                                |
//!
//! An empty variable counts as unset, as in the shell script.

use std::{env::VarError, path::PathBuf};

use recur::client::{Connection, SettingsError};

/// Where `recur serve` listens by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// A local web server the task calls; anything answering 2xx makes the
/// triggered run SUCCEEDED, anything else shows how a failure is reported.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8080/";

/// What `--help` prints, and what follows a usage error.
pub const USAGE: &str = "\
usage: client [--server ADDR] [--token TOKEN] [--ca FILE] [--cert FILE --key FILE]
              [--target URL] [SERVER] [TARGET_URL]

  --server ADDR  RECUR_SERVER  host:port or http://host:port: plaintext;
                               https://host:port: TLS (default http://127.0.0.1:50051)
  --token TOKEN  RECUR_TOKEN   bearer token, sent as `authorization: Bearer TOKEN`
  --ca FILE      RECUR_CA      CA certificate (PEM) that signed the server's certificate
  --cert FILE    RECUR_CERT    client certificate (PEM) for mTLS, with --key
  --key FILE     RECUR_KEY     its private key (PEM)
  --target URL                 URL the task GETs (default http://127.0.0.1:8080/)

A flag wins over its variable. SERVER and TARGET_URL may also come as
arguments, as before the flags existed.
";

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A flag or argument is wrong.
    #[error("{0}")]
    Arguments(String),
    /// The connection settings do not fit together.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the walkthrough.
    Run(Options),
    /// Print [`USAGE`] and stop.
    Help,
}

/// Everything the walkthrough needs.
#[derive(Debug)]
pub struct Options {
    /// How to reach the server.
    pub connection: Connection,
    /// The URL the example task GETs.
    pub target: String,
}

/// Values given as flags or arguments, before the environment fills gaps.
#[derive(Default)]
struct Given {
    server: Option<String>,
    token: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    target: Option<String>,
}

impl Given {
    /// The slot of a flag, or None for an unknown one.
    fn slot(&mut self, flag: &str) -> Option<&mut Option<String>> {
        Some(match flag {
            "--server" => &mut self.server,
            "--token" => &mut self.token,
            "--ca" => &mut self.ca,
            "--cert" => &mut self.cert,
            "--key" => &mut self.key,
            "--target" => &mut self.target,
            _ => return None,
        })
    }
}

/// Reads `args` (without the program name), filling unset connection
/// options from `env` (`std::env::var` in the binary, a map in tests).
pub fn parse<I>(
    args: I,
    env: impl Fn(&str) -> Result<String, VarError>,
) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = String>,
{
    let wrong = |reason: String| Err(UsageError::Arguments(reason));
    let mut given = Given::default();
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        if !arg.starts_with('-') {
            positional.push(arg);
            continue;
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let Some(slot) = given.slot(&flag) else {
            return wrong(format!("unknown option {flag}"));
        };
        let value = match value.or_else(|| args.next()) {
            Some(value) if !value.is_empty() => value,
            _ => return wrong(format!("{flag} needs a value")),
        };
        if slot.replace(value).is_some() {
            return wrong(format!("{flag} is given twice"));
        }
    }
    let mut positional = positional.into_iter();
    if let Some(server) = positional.next()
        && given.server.replace(server).is_some()
    {
        return wrong("the server is given both as --server and as an argument".into());
    }
    if let Some(target) = positional.next()
        && given.target.replace(target).is_some()
    {
        return wrong("the target is given both as --target and as an argument".into());
    }
    if let Some(extra) = positional.next() {
        return wrong(format!("unexpected argument {extra:?}"));
    }

    let from_env = |name: &str| match env(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => {
            Err(UsageError::Arguments(format!("{name} is not valid UTF-8")))
        }
    };
    let pick = |flag: Option<String>, name: &str| match flag {
        Some(value) => Ok(Some(value)),
        None => from_env(name),
    };
    let server = pick(given.server, "RECUR_SERVER")?.unwrap_or_else(|| DEFAULT_SERVER.into());
    let token = pick(given.token, "RECUR_TOKEN")?;
    let path = |flag, name| pick(flag, name).map(|p| p.map(PathBuf::from));
    let connection = Connection::new(
        &server,
        token.as_deref(),
        path(given.ca, "RECUR_CA")?,
        path(given.cert, "RECUR_CERT")?,
        path(given.key, "RECUR_KEY")?,
    )?;
    Ok(Parsed::Run(Options {
        connection,
        target: given.target.unwrap_or_else(|| DEFAULT_TARGET.into()),
    }))
}
