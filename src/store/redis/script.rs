//! Calls of the store's Lua scripts, built in place.
//!
//! redis-rs' `ScriptInvocation` holds every key and argument in a `Vec` of
//! its own, then copies them all into a command when invoked. On the firing
//! and result paths a call carries a few values per task or result, and
//! that made it one of the Redis store's largest sources of allocations
//! (profiled: benches/README.md). A `Cmd` writes its arguments into one
//! buffer: keys go into one, arguments into another, and the call joins
//! them behind `EVALSHA <sha> <number of keys>`.

use redis::{Arg, Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, ToRedisArgs};

/// One call of `script` being built.
pub(super) struct ScriptCall<'a> {
    script: &'a Script,
    keys: Cmd,
    args: Cmd,
}

impl<'a> ScriptCall<'a> {
    pub(super) fn new(script: &'a Script) -> Self {
        ScriptCall {
            script,
            keys: Cmd::new(),
            args: Cmd::new(),
        }
    }

    /// Adds a key: `KEYS[i]` in the script, in the order added.
    pub(super) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.arg(key);
        self
    }

    /// Adds an argument: `ARGV[i]` in the script, in the order added.
    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.arg(arg);
        self
    }

    fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(self.keys.args_iter().len());
        for part in self.keys.args_iter().chain(self.args.args_iter()) {
            match part {
                Arg::Simple(bytes) => {
                    cmd.arg(bytes);
                }
                // Only `Cmd::cursor_arg` makes one, which no script call
                // uses; skipping it would shift every later argument.
                _ => debug_assert!(false, "a cursor argument in a script call"),
            }
        }
        cmd
    }

    /// Runs the script by its SHA; when Redis does not have it (NOSCRIPT:
    /// restarted, failed over, or flushed), loads it and runs it again, as
    /// redis-rs' own invocation does.
    pub(super) async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        let cmd = self.command();
        match cmd.query_async(con).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                cmd.query_async(con).await
            }
            reply => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_first_then_arguments_each_one_argument() {
        let script = Script::new("return 1");
        let mut call = ScriptCall::new(&script);
        call.arg("a1").key("k1").arg(7u64).key("k2").arg("");
        let sent: Vec<Vec<u8>> = call
            .command()
            .args_iter()
            .map(|part| match part {
                Arg::Simple(bytes) => bytes.to_vec(),
                _ => b"<not a plain argument>".to_vec(),
            })
            .collect();
        let want: Vec<&[u8]> = vec![
            b"EVALSHA",
            script.get_hash().as_bytes(),
            b"2",
            b"k1",
            b"k2",
            b"a1",
            b"7",
            b"",
        ];
        assert_eq!(sent, want);
    }
}
