//! Redis actions: one command on the managed pool (or a connection of
//! their own), its reply rendered as JSON. Which commands a task may run
//! is decided here, at registration and again before each attempt.
//!
//! The keys a command touches are found from Redis's own key
//! specifications ([`super::redis_keys`]): no key may be under recur's own
//! prefix, and with `--redis-action-prefix` every key must be under that
//! one. A command whose keys cannot be known is refused. This check gives
//! early, clear errors; the real boundary is the Redis ACL user the
//! actions connect as (`--redis-action-url`), which refuses what it was
//! not granted whatever this check thinks.

use std::sync::Arc;

use bytes::Bytes;
use redis::{self, Value};
use serde_json::{Map, Value as Json};

use super::{
    Failure, Output,
    redis_keys::{CommandInfoError, CommandTable, KeysError},
};
use crate::{
    redis_pool::{ConnectionError, RedisPool},
    task::RedisAction,
};

/// Commands refused at registration: administrative ones, ones that change
/// the state of a pooled connection other tasks share, ones that block a
/// multiplexed connection, and scripts (which could run any of those).
/// With Redis's key specifications at hand, the ACL categories `@admin`
/// and `@scripting` are refused as well, which covers what this list
/// misses in newer Redis versions.
pub const REFUSED_COMMANDS: &[&str] = &[
    // administration
    "ACL",
    "BGREWRITEAOF",
    "BGSAVE",
    "CLUSTER",
    "CONFIG",
    "DEBUG",
    "FAILOVER",
    "FLUSHALL",
    "FLUSHDB",
    "MIGRATE",
    "MODULE",
    "MONITOR",
    "PSYNC",
    "REPLICAOF",
    "SAVE",
    "SHUTDOWN",
    "SLAVEOF",
    "SYNC",
    "SWAPDB",
    // connection state
    "AUTH",
    "CLIENT",
    "HELLO",
    "QUIT",
    "RESET",
    "SELECT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    // blocking
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "WAIT",
    "WAITAOF",
    // scripts
    "EVAL",
    "EVALSHA",
    "EVAL_RO",
    "EVALSHA_RO",
    "FCALL",
    "FCALL_RO",
    "FUNCTION",
    "SCRIPT",
];

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No command name.
    #[error("must name a command")]
    NoCommand,
    /// On the refused list, or in a refused ACL category.
    #[error("command {command} is not allowed ({why})")]
    Refused {
        /// The command.
        command: String,
        /// Which rule refused it.
        why: &'static str,
    },
    /// XREAD or XREADGROUP with BLOCK, which would hold a shared
    /// multiplexed connection.
    #[error("{command} with BLOCK is not allowed")]
    Blocking {
        /// The command.
        command: String,
        /// Where BLOCK is.
        arg: usize,
    },
    /// Its keys could not be found.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// A key (or channel) under recur's own prefix.
    #[error("{what} {key:?} is under the server's own prefix {prefix:?}")]
    OwnPrefix {
        /// "key" or "channel".
        what: &'static str,
        /// The key.
        key: String,
        /// recur's prefix.
        prefix: String,
        /// Where the key is.
        arg: usize,
    },
    /// A key (or channel) outside `--redis-action-prefix`.
    #[error("{what} {key:?} is outside the Redis action prefix {prefix:?}")]
    OutsidePrefix {
        /// "key" or "channel".
        what: &'static str,
        /// The key.
        key: String,
        /// The action prefix.
        prefix: String,
        /// Where the key is.
        arg: usize,
    },
    /// Without key specifications (Redis before 7): an argument, key or
    /// not, under recur's own prefix.
    #[error("arguments under the server's prefix {prefix:?} are not allowed")]
    OwnPrefixArgument {
        /// recur's prefix.
        prefix: String,
        /// Where the argument is.
        arg: usize,
    },
}

impl CommandError {
    /// The argument the error is about, if one is: clients see it in the
    /// field path (`spec.action.redis.args[i]`).
    pub fn arg(&self) -> Option<usize> {
        match self {
            CommandError::NoCommand => None,
            CommandError::Refused { .. } => Some(0),
            CommandError::Keys(e) => e.arg(),
            CommandError::Blocking { arg, .. }
            | CommandError::OwnPrefix { arg, .. }
            | CommandError::OutsidePrefix { arg, .. }
            | CommandError::OwnPrefixArgument { arg, .. } => Some(*arg),
        }
    }
}

/// What the check knows about the commands, and so how far it goes.
#[derive(Debug, Clone, Copy)]
pub enum KeyCheck<'a> {
    /// Only the shape of the command: named, not refused, not blocking.
    /// For a server without Redis (whose Redis actions are refused
    /// anyway), and for specs read back from the store, which must stay
    /// readable after the rules tightened (their runs are checked in full).
    Shape,
    /// No key specifications (Redis before 7): any argument under recur's
    /// prefix is refused, key or not.
    Arguments,
    /// Keys found from the key specifications in `commands`.
    Keys {
        /// The commands the Redis serves.
        commands: &'a CommandTable,
        /// Every key must start with this, when set.
        action_prefix: Option<&'a str>,
    },
}

/// Checks a command. `own_prefix` is recur's key prefix, which no key may
/// start with. Errors name the argument they are about, if one.
pub fn check_command(
    args: &[String],
    check: KeyCheck<'_>,
    own_prefix: &str,
) -> Result<(), CommandError> {
    let Some(name) = args.first().filter(|name| !name.trim().is_empty()) else {
        return Err(CommandError::NoCommand);
    };
    let upper = name.to_ascii_uppercase();
    if REFUSED_COMMANDS.contains(&upper.as_str()) {
        return Err(CommandError::Refused {
            command: upper,
            why: "administration, connection state, blocking or scripts",
        });
    }
    if matches!(upper.as_str(), "XREAD" | "XREADGROUP")
        && let Some(arg) = args.iter().position(|a| a.eq_ignore_ascii_case("BLOCK"))
    {
        return Err(CommandError::Blocking {
            command: upper,
            arg,
        });
    }
    let (commands, action_prefix) = match check {
        KeyCheck::Shape => return Ok(()),
        KeyCheck::Arguments => {
            if own_prefix.is_empty() {
                return Ok(());
            }
            return match args.iter().skip(1).position(|a| a.starts_with(own_prefix)) {
                Some(i) => Err(CommandError::OwnPrefixArgument {
                    prefix: own_prefix.to_string(),
                    arg: i + 1,
                }),
                None => Ok(()),
            };
        }
        KeyCheck::Keys {
            commands,
            action_prefix,
        } => (commands, action_prefix.filter(|p| !p.is_empty())),
    };
    let command = commands.resolve(args)?;
    for (category, why) in [("admin", "administration"), ("scripting", "scripts")] {
        if command.in_category(category) {
            return Err(CommandError::Refused {
                command: command.display().to_string(),
                why,
            });
        }
    }
    for key in command.keys(args)? {
        let value = &args[key.index];
        let what = if key.channel { "channel" } else { "key" };
        if !own_prefix.is_empty() && value.starts_with(own_prefix) {
            return Err(CommandError::OwnPrefix {
                what,
                key: value.clone(),
                prefix: own_prefix.to_string(),
                arg: key.index,
            });
        }
        if let Some(prefix) = action_prefix
            && !value.starts_with(prefix)
        {
            return Err(CommandError::OutsidePrefix {
                what,
                key: value.clone(),
                prefix: prefix.to_string(),
                arg: key.index,
            });
        }
    }
    Ok(())
}

/// Why Redis actions could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisActionsError {
    /// `COMMAND INFO` failed, and `--redis-action-prefix` needs it.
    #[error(
        "--redis-action-prefix needs Redis's key specifications, and COMMAND INFO failed: {reason} (grant the action user +command|info)"
    )]
    CommandInfo {
        /// Redis's answer.
        reason: String,
    },
    /// The Redis gives no key specifications, and `--redis-action-prefix`
    /// needs them.
    #[error("--redis-action-prefix needs Redis's key specifications (Redis 7 or later): {0}")]
    NoKeySpecs(#[from] CommandInfoError),
}

/// How Redis actions are confined, from [`crate::Config`].
#[derive(Debug, Clone, Default)]
pub struct RedisActionSettings {
    /// Every key must start with this (`--redis-action-prefix`).
    pub action_prefix: Option<String>,
    /// recur's own prefix (`--key-prefix`): no key may start with it.
    pub own_prefix: String,
}

/// Runs Redis actions: the connection they use and what they may touch.
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisActions {
    /// The server's pool, or the actions' own (`--redis-action-url`).
    pool: RedisPool,
    /// The commands that Redis serves, read once at start; None when it
    /// gives no key specifications and no action prefix asks for them,
    /// and then arguments are checked bluntly ([`KeyCheck::Arguments`]).
    commands: Option<Arc<CommandTable>>,
    /// Every key must start with this, when set.
    action_prefix: Option<String>,
    /// recur's own prefix, checked again before each attempt.
    own_prefix: String,
}

impl std::fmt::Debug for RedisActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisActions")
            .field("commands", &self.commands.as_ref().map(|c| c.len()))
            .field("action_prefix", &self.action_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisActions {
    /// Reads the commands' key specifications (`COMMAND INFO`) from the
    /// Redis behind `pool`, once. Without them (Redis before 7, or a user
    /// not granted `+command|info`), an action prefix cannot be enforced:
    /// that is an error; with no action prefix, the blunt argument check
    /// of earlier versions applies, with a warning.
    pub async fn open(
        pool: RedisPool,
        settings: RedisActionSettings,
    ) -> Result<RedisActions, RedisActionsError> {
        let action_prefix = settings.action_prefix.filter(|p| !p.is_empty());
        let commands = match command_table(&pool).await {
            Ok(table) => Some(Arc::new(table)),
            Err(e) if action_prefix.is_some() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "redis actions: no key specifications; refusing every argument under the server's prefix instead");
                None
            }
        };
        Ok(RedisActions {
            pool,
            commands,
            action_prefix,
            own_prefix: settings.own_prefix,
        })
    }

    /// What the check knows.
    pub fn key_check(&self) -> KeyCheck<'_> {
        match &self.commands {
            Some(commands) => KeyCheck::Keys {
                commands,
                action_prefix: self.action_prefix.as_deref(),
            },
            None => KeyCheck::Arguments,
        }
    }

    /// One attempt. The command is checked again first: a task stored
    /// before the rules tightened is read back unchecked (so it stays
    /// readable and deletable), and is refused here, as its run's error.
    pub async fn run(&self, action: &RedisAction, cap: usize) -> Result<Output, Failure> {
        check_command(&action.args, self.key_check(), &self.own_prefix)
            .map_err(|e| Failure::new(format!("command refused: {e}")))?;
        // The check refuses an empty command.
        let Some((name, args)) = action.args.split_first() else {
            return Err(Failure::new("empty Redis command"));
        };
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| Failure::new(format!("redis unavailable: {e}")))?;
        let mut cmd = redis::cmd(name);
        for arg in args {
            cmd.arg(arg);
        }
        let reply: Value = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| Failure::new(format!("redis error: {}", as_redis_says(&e))))?;
        let json = to_json(reply).map_err(Failure::new)?;
        // Serializing a serde_json::Value to a Vec cannot fail.
        let text = serde_json::to_vec(&json).unwrap_or_default();
        let truncated = text.len() > cap;
        let mut body = Bytes::from(text);
        body.truncate(cap);
        Ok(Output {
            body,
            truncated,
            http_status: 0,
        })
    }
}

/// An error as Redis wrote it (`NOPERM this user has no permissions ...`):
/// redis-rs would show its own name for the code (`NoPerm: ...`), which
/// is not what Redis's documentation and logs call it.
fn as_redis_says(error: &redis::RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => error.to_string(),
    }
}

/// Every command with its key specifications, as the Redis behind `pool`
/// describes them.
async fn command_table(pool: &RedisPool) -> Result<CommandTable, RedisActionsError> {
    let failed = |reason: String| RedisActionsError::CommandInfo { reason };
    let mut conn = pool
        .get()
        .await
        .map_err(|e: ConnectionError| failed(e.to_string()))?;
    // COMMAND INFO without names lists every command (Redis 7), and is
    // what an ACL user is granted with +command|info.
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let table = CommandTable::from_reply(&reply)?;
    if table.is_empty() {
        return Err(failed(
            "no commands listed (Redis before 7 needs names)".into(),
        ));
    }
    Ok(table)
}

/// Renders a reply as JSON. Binary strings that are not UTF-8 become
/// `{"hex": "..."}` so nothing is lost; an error reply fails the attempt.
pub fn to_json(value: Value) -> Result<Json, String> {
    Ok(match value {
        Value::Nil => Json::Null,
        Value::Int(i) => Json::from(i),
        Value::BulkString(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Json::String(s),
            Err(e) => {
                let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                Json::Object(Map::from_iter([("hex".to_string(), Json::String(hex))]))
            }
        },
        Value::Array(items) | Value::Set(items) => {
            Json::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::SimpleString(s) => Json::String(s),
        Value::Okay => Json::String("OK".into()),
        Value::Map(pairs) => {
            let mut object = Map::new();
            for (k, v) in pairs {
                let key = match to_json(k)? {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, to_json(v)?);
            }
            Json::Object(object)
        }
        Value::Attribute { data, .. } => to_json(*data)?,
        Value::Double(d) => {
            serde_json::Number::from_f64(d).map_or(Json::String(d.to_string()), Json::Number)
        }
        Value::Boolean(b) => Json::Bool(b),
        Value::VerbatimString { text, .. } => Json::String(text),
        Value::Push { data, .. } => {
            Json::Array(data.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::ServerError(e) => return Err(format!("redis error: {e:?}")),
        other => Json::String(format!("{other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The commands of a real Redis 7.
    fn captured() -> CommandTable {
        crate::action::redis_keys::tests::table(crate::action::redis_keys::tests::RESP2)
    }

    #[test]
    fn refuses_by_shape_whatever_is_known() {
        for check in [KeyCheck::Shape, KeyCheck::Arguments] {
            assert_eq!(
                check_command(&args(&[]), check, "recur:"),
                Err(CommandError::NoCommand)
            );
            assert_eq!(
                check_command(&args(&[" "]), check, "recur:"),
                Err(CommandError::NoCommand)
            );
            let flush = check_command(&args(&["flushall"]), check, "recur:").unwrap_err();
            assert!(flush.to_string().contains("FLUSHALL"), "{flush}");
            assert_eq!(flush.arg(), Some(0));
            let block = args(&["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"]);
            assert_eq!(
                check_command(&block, check, "recur:").unwrap_err().arg(),
                Some(3)
            );
        }
        // Read back from the store: only the shape.
        assert!(check_command(&args(&["SET", "recur:x", "1"]), KeyCheck::Shape, "recur:").is_ok());
    }

    #[test]
    fn without_key_specs_every_argument_is_checked() {
        let check = KeyCheck::Arguments;
        assert!(check_command(&args(&["INCR", "hits"]), check, "recur:").is_ok());
        let err = check_command(&args(&["SET", "k", "recur:v"]), check, "recur:").unwrap_err();
        assert_eq!(err.arg(), Some(2));
        assert!(check_command(&args(&["KEYS", "*"]), check, "").is_ok());
    }

    fn keys(
        table: &CommandTable,
        prefix: Option<&'static str>,
    ) -> impl Fn(&str) -> Result<(), CommandError> {
        move |line: &str| {
            let check = KeyCheck::Keys {
                commands: table,
                action_prefix: prefix,
            };
            check_command(&args(&line.split(' ').collect::<Vec<_>>()), check, "recur:")
        }
    }

    #[test]
    fn keys_are_confined_to_the_action_prefix() {
        let table = captured();
        let check = keys(&table, Some("app:"));
        for ok in [
            "SET app:x 1",
            "MSET app:a 1 app:b recur:not-a-key",
            "ZUNIONSTORE app:d 2 app:a app:b",
            "XREAD COUNT 1 STREAMS app:s 0",
            "SORT app:l LIMIT 0 5 STORE app:sorted",
            "OBJECT ENCODING app:x",
            "PUBLISH app:news hello",
            "PING",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let outside = check("SET other 1").unwrap_err();
        assert_eq!(outside.arg(), Some(1));
        assert_eq!(
            outside.to_string(),
            r#"key "other" is outside the Redis action prefix "app:""#
        );
        assert_eq!(check("MSET app:a 1 b 2").unwrap_err().arg(), Some(3));
        assert_eq!(
            check("SORT app:l STORE elsewhere").unwrap_err().arg(),
            Some(3)
        );
        assert_eq!(
            check("ZUNIONSTORE app:d 2 app:a b").unwrap_err().arg(),
            Some(4)
        );
        let channel = check("PUBLISH news hi").unwrap_err();
        assert!(channel.to_string().starts_with("channel"), "{channel}");
        // recur's own prefix is refused before the action prefix is looked at.
        let own = check("SET recur:tasks 1").unwrap_err();
        assert!(
            matches!(own, CommandError::OwnPrefix { arg: 1, .. }),
            "{own}"
        );
    }

    #[test]
    fn own_keys_are_refused_without_an_action_prefix() {
        let table = captured();
        let check = keys(&table, None);
        assert_eq!(check("SET anything 1"), Ok(()));
        // A value that looks like our key is only a value.
        assert_eq!(check("SET anything recur:x"), Ok(()));
        assert_eq!(check("DEL a recur:tasks").unwrap_err().arg(), Some(2));
        assert_eq!(
            check("PUBLISH recur:{meta}:changes x").unwrap_err().arg(),
            Some(1)
        );
    }

    #[test]
    fn commands_whose_keys_cannot_be_known_are_refused() {
        let table = captured();
        for prefix in [Some("app:"), None] {
            let check = keys(&table, prefix);
            for line in ["KEYS *", "SCAN 0", "RANDOMKEY", "DBSIZE"] {
                let err = check(line).unwrap_err();
                assert!(err.to_string().contains("cannot be known"), "{line}: {err}");
            }
            let sort = check("SORT app:l BY w_*").unwrap_err();
            assert_eq!(sort.arg(), Some(2), "{sort}");
            assert!(check("SORT_RO app:l GET #").is_err());
            assert!(check("MIGRATE h 1 app:k 0 10").is_err());
        }
    }

    #[test]
    fn administration_and_scripts_are_refused_by_category() {
        let table = captured();
        let check = keys(&table, Some("app:"));
        // Not on the list, but Redis files them under @admin.
        assert!(
            check("LASTSAVE")
                .unwrap_err()
                .to_string()
                .contains("administration")
        );
        // On the list too; the list answers first.
        assert!(check("EVAL return 1 app:k").is_err());
        let err = check("NOSUCHCOMMAND app:x").unwrap_err();
        assert_eq!(err.arg(), Some(0));
        assert!(err.to_string().contains("unknown command"), "{err}");
        assert_eq!(check("GET").unwrap_err().arg(), None);
    }

    #[test]
    fn renders_replies_as_json() {
        let reply = Value::Array(vec![
            Value::Int(3),
            Value::Nil,
            Value::BulkString(b"hi".to_vec()),
            Value::BulkString(vec![0xff, 0x00]),
        ]);
        assert_eq!(
            to_json(reply).unwrap(),
            serde_json::json!([3, null, "hi", {"hex": "ff00"}])
        );
        assert!(to_json(Value::Okay).unwrap() == "OK");
    }
}
