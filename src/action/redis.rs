//! Redis actions: one command on the managed pool, its reply rendered as
//! JSON. Which commands a task may run is decided here, at registration.

use bytes::Bytes;
use redis::{self, Value};
use serde_json::{Map, Value as Json};

use super::{Failure, Output};
use crate::{redis_pool::RedisPool, task::RedisAction};

/// Commands refused at registration: administrative ones, ones that change
/// the state of a pooled connection other tasks share, ones that block a
/// multiplexed connection, and scripts (which could run any of those).
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

/// Checks a command at registration. Any argument under the server's own
/// key prefix is refused: telling keys from values needs per-command key
/// specs, and refusing a value that merely looks like our key is the safe
/// side of that trade.
pub fn check_command(args: &[String], key_prefix: &str) -> Result<(), String> {
    let Some(name) = args.first() else {
        return Err("must name a command".into());
    };
    if name.trim().is_empty() {
        return Err("must name a command".into());
    }
    let upper = name.to_ascii_uppercase();
    if REFUSED_COMMANDS.contains(&upper.as_str()) {
        return Err(format!("command {upper} is not allowed"));
    }
    if matches!(upper.as_str(), "XREAD" | "XREADGROUP")
        && args.iter().any(|a| a.eq_ignore_ascii_case("BLOCK"))
    {
        return Err(format!("{upper} with BLOCK is not allowed"));
    }
    if !key_prefix.is_empty() && args[1..].iter().any(|a| a.starts_with(key_prefix)) {
        return Err(format!(
            "keys under the server's prefix {key_prefix:?} are not allowed"
        ));
    }
    Ok(())
}

/// One attempt.
pub async fn run(pool: &RedisPool, action: &RedisAction, cap: usize) -> Result<Output, Failure> {
    // Validation refuses an empty command; a spec built some other way
    // still fails the attempt rather than the run.
    let Some((name, args)) = action.args.split_first() else {
        return Err(Failure::new("empty Redis command"));
    };
    let mut conn = pool
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
        .map_err(|e| Failure::new(format!("redis error: {e}")))?;
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

    #[test]
    fn refuses_admin_and_own_keys() {
        assert!(check_command(&args(&["INCR", "hits"]), "recur:").is_ok());
        assert!(
            check_command(&args(&["flushall"]), "recur:")
                .unwrap_err()
                .contains("FLUSHALL")
        );
        assert!(check_command(&args(&["CONFIG", "SET", "x", "y"]), "recur:").is_err());
        assert!(check_command(&args(&["SET", "recur:task:x", "1"]), "recur:").is_err());
        assert!(
            check_command(
                &args(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
                "recur:"
            )
            .is_err()
        );
        assert!(check_command(&args(&[]), "recur:").is_err());
        assert!(check_command(&args(&[" "]), "recur:").is_err());
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
