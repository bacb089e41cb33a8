//! Which arguments of a Redis command are keys, read from Redis's own key
//! specifications (`COMMAND INFO`, Redis 7 and later). Pure: the reply is
//! parsed once into a [`CommandTable`], and finding a command's keys is a
//! sync lookup. Deciding what a Redis action may touch is `redis.rs`'s;
//! this module only says where the keys are, or that they cannot be known.
//!
//! The search mirrors Redis's `getKeysUsingKeySpecs` (db.c), which its ACL
//! check uses too, so the keys found here are the keys an ACL user's key
//! patterns are checked against.

use std::collections::HashMap;

use redis::Value;

/// Why a `COMMAND INFO` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandInfoError {
    /// The reply is not a list of command entries.
    #[error("COMMAND INFO reply is malformed: {what}")]
    Malformed {
        /// What was wrong with it.
        what: String,
    },
    /// An entry has no key specifications: a Redis older than 7.
    #[error("COMMAND INFO gives no key specifications for {command} (Redis 7 or later has them)")]
    NoKeySpecs {
        /// The command whose entry is short.
        command: String,
    },
}

/// Why a command's keys could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// Redis does not know the command (a typo, or a module not loaded
    /// when the server started).
    #[error("unknown command {command}")]
    UnknownCommand {
        /// The command as given.
        command: String,
    },
    /// A container command (OBJECT, XINFO, ...) given without a subcommand.
    #[error("{command} needs a subcommand")]
    MissingSubcommand {
        /// The container.
        command: String,
    },
    /// A subcommand the container does not have.
    #[error("unknown subcommand {command} {subcommand}")]
    UnknownSubcommand {
        /// The container.
        command: String,
        /// The subcommand as given.
        subcommand: String,
    },
    /// Redis would refuse the argument count.
    #[error("wrong number of arguments for {command}")]
    Arity {
        /// The command.
        command: String,
    },
    /// The command touches keys that its arguments do not name.
    #[error("the keys {command} touches cannot be known from its arguments: {why}")]
    Unknowable {
        /// The command.
        command: String,
        /// Why not.
        why: Unknowable,
        /// The argument that makes it so, when one does.
        arg: Option<usize>,
    },
}

impl KeysError {
    /// The argument the error is about, if one is: clients see it in the
    /// field path (`args[i]`).
    pub fn arg(&self) -> Option<usize> {
        match self {
            KeysError::UnknownCommand { .. } => Some(0),
            KeysError::UnknownSubcommand { .. } => Some(1),
            KeysError::Unknowable { arg, .. } => *arg,
            KeysError::MissingSubcommand { .. } | KeysError::Arity { .. } => None,
        }
    }
}

/// Why a command's keys cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unknowable {
    /// It reads or writes the keyspace but has no key specifications
    /// (KEYS, SCAN, RANDOMKEY, DBSIZE, ...).
    #[error("it reads or writes the keyspace without naming keys")]
    NoKeySpecs,
    /// A key specification Redis marks incomplete or of an unknown kind.
    #[error("its key specifications are incomplete")]
    Incomplete,
    /// SORT's BY and GET name keys by a pattern over the sorted values.
    #[error("BY and GET name keys by pattern")]
    Pattern,
    /// The argument that gives the number of keys is not a number.
    #[error("the number of keys is not a non-negative integer")]
    BadKeyCount,
    /// The key specifications point outside the arguments (Redis would
    /// refuse the command as a syntax error).
    #[error("the keys it names do not fit its arguments")]
    OutOfRange,
}

/// One argument that names a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyArg {
    /// Its position in the arguments, the command name being 0.
    pub index: usize,
    /// A pub/sub channel rather than a key (SPUBLISH's shard channel,
    /// which Redis marks NOT_KEY, and PUBLISH's channel): confined the
    /// same way, since recur's own change notices go out on a channel
    /// under its prefix.
    pub channel: bool,
}

/// Every command a Redis serves, by lowercase name, as `COMMAND INFO`
/// described it when the server started.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    /// Top-level commands by lowercase name.
    commands: HashMap<String, Command>,
}

/// One command or subcommand.
#[derive(Debug, Clone)]
pub struct Command {
    /// As users write it, for messages: `SET`, `OBJECT ENCODING`.
    display: String,
    /// Redis's arity: exactly this many arguments (command name included)
    /// when positive, at least its absolute value when negative.
    arity: i64,
    /// ACL categories without the `@`: `keyspace`, `read`, `admin`, ...
    categories: Vec<String>,
    /// Where its keys are.
    specs: Vec<KeySpec>,
    /// Subcommands by lowercase name (`encoding` for `object|encoding`).
    subcommands: HashMap<String, Command>,
}

/// One key specification: where to start looking, then which arguments
/// from there are keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySpec {
    /// Where the keys begin.
    begin: BeginSearch,
    /// Which arguments from there are keys.
    find: FindKeys,
    /// Redis says the spec may miss keys (MIGRATE's KEYS).
    incomplete: bool,
    /// The "key" is a shard channel, not a key.
    not_key: bool,
}

/// `begin_search` of a key specification.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BeginSearch {
    /// Keys begin at this argument.
    Index(i64),
    /// Keys begin after this keyword, searched from `start_from`
    /// (backwards from the end when negative).
    Keyword {
        /// Matched case-insensitively, as Redis does.
        keyword: String,
        /// First argument searched; negative counts from the end.
        start_from: i64,
    },
    /// A kind this code does not know, or Redis's own "unknown".
    Unknown,
}

/// `find_keys` of a key specification.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FindKeys {
    /// Keys from the beginning to `last_key` (relative; negative counts
    /// from the end, or divides the rest by `limit`), every `key_step`.
    Range {
        /// Last key relative to the first; negative counts from the end.
        last_key: i64,
        /// Distance between keys (2 for key-value pairs).
        key_step: i64,
        /// With `last_key` -1: only 1/limit of the remaining arguments.
        limit: i64,
    },
    /// The argument at `key_num_index` (relative) says how many keys
    /// follow from `first_key` (relative), every `key_step`.
    KeyNum {
        /// Where the count is, relative to the beginning.
        key_num_index: i64,
        /// Where the first key is, relative to the beginning.
        first_key: i64,
        /// Distance between keys.
        key_step: i64,
    },
    /// A kind this code does not know, or Redis's own "unknown".
    Unknown,
}

impl CommandTable {
    /// Reads the reply of `COMMAND INFO` (or `COMMAND`), RESP2 or RESP3.
    /// Entries of commands Redis does not know (nil) are skipped.
    pub fn from_reply(reply: &Value) -> Result<CommandTable, CommandInfoError> {
        let entries = list(reply).ok_or_else(|| malformed("not a list of commands"))?;
        let mut commands = HashMap::new();
        for entry in entries {
            if matches!(entry, Value::Nil) {
                continue;
            }
            let (name, command) = Command::from_entry(entry)?;
            commands.insert(name, command);
        }
        Ok(CommandTable { commands })
    }

    /// How many top-level commands it knows.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether it knows no command at all.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The command (or subcommand) `args` run. `args` must not be empty.
    pub fn resolve(&self, args: &[String]) -> Result<&Command, KeysError> {
        let name = args.first().map(String::as_str).unwrap_or_default();
        let Some(command) = self.commands.get(&name.to_ascii_lowercase()) else {
            return Err(KeysError::UnknownCommand {
                command: name.to_string(),
            });
        };
        if command.subcommands.is_empty() {
            return Ok(command);
        }
        let Some(sub) = args.get(1) else {
            return Err(KeysError::MissingSubcommand {
                command: command.display.clone(),
            });
        };
        command
            .subcommands
            .get(&sub.to_ascii_lowercase())
            .ok_or_else(|| KeysError::UnknownSubcommand {
                command: command.display.clone(),
                subcommand: sub.clone(),
            })
    }
}

impl Command {
    /// Parses one entry: `[name, arity, flags, first, last, step,
    /// categories, tips, key specs, subcommands]`.
    fn from_entry(entry: &Value) -> Result<(String, Command), CommandInfoError> {
        let fields = list(entry).ok_or_else(|| malformed("a command entry is not a list"))?;
        let name = fields
            .first()
            .and_then(text)
            .ok_or_else(|| malformed("a command entry has no name"))?
            .to_ascii_lowercase();
        if fields.len() < 10 {
            return Err(CommandInfoError::NoKeySpecs { command: name });
        }
        let arity = int(&fields[1]).ok_or_else(|| malformed(format!("{name} has no arity")))?;
        let categories = list(&fields[6])
            .unwrap_or_default()
            .iter()
            .filter_map(text)
            .map(|c| c.trim_start_matches('@').to_ascii_lowercase())
            .collect();
        let specs = list(&fields[8])
            .unwrap_or_default()
            .iter()
            .map(KeySpec::from_value)
            .collect();
        let mut subcommands = HashMap::new();
        for sub in list(&fields[9]).unwrap_or_default() {
            let (full, command) = Command::from_entry(sub)?;
            // Subcommands are named `container|sub`.
            let short = full.rsplit('|').next().unwrap_or(&full).to_string();
            subcommands.insert(short, command);
        }
        let display = name.to_ascii_uppercase().replace('|', " ");
        Ok((
            name,
            Command {
                display,
                arity,
                categories,
                specs,
                subcommands,
            },
        ))
    }

    /// The command as users write it, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Whether it is in the ACL category `category` (without the `@`).
    pub fn in_category(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == category)
    }

    /// The arguments of `args` that name keys (or channels), or why they
    /// cannot be known. `args` are the whole command, as resolved to this
    /// command by [`CommandTable::resolve`].
    pub fn keys(&self, args: &[String]) -> Result<Vec<KeyArg>, KeysError> {
        let argc = args.len() as i64;
        if (self.arity > 0 && argc != self.arity) || argc < -self.arity {
            return Err(KeysError::Arity {
                command: self.display.clone(),
            });
        }
        let unknowable = |why, arg| KeysError::Unknowable {
            command: self.display.clone(),
            why,
            arg,
        };
        // Redis finds SORT's keys with code of its own (sortGetKeys): its
        // specs for STORE and for BY/GET are "unknown".
        if matches!(self.display.as_str(), "SORT" | "SORT_RO") {
            return sort_keys(args).map_err(|(why, arg)| unknowable(why, Some(arg)));
        }
        // PUBLISH has no key specs at all; its channel is confined like
        // SPUBLISH's, which Redis describes with a NOT_KEY spec.
        if self.display == "PUBLISH" {
            return Ok(vec![KeyArg {
                index: 1,
                channel: true,
            }]);
        }
        if self.specs.is_empty() {
            let touches_data = ["keyspace", "read", "write"]
                .iter()
                .any(|c| self.in_category(c));
            if touches_data {
                return Err(unknowable(Unknowable::NoKeySpecs, None));
            }
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        for spec in &self.specs {
            if spec.incomplete {
                return Err(unknowable(Unknowable::Incomplete, None));
            }
            let found = spec
                .keys(args, self.arity)
                .map_err(|why| unknowable(why, None))?;
            keys.extend(found.into_iter().map(|index| KeyArg {
                index,
                channel: spec.not_key,
            }));
        }
        Ok(keys)
    }
}

impl KeySpec {
    /// Parses a key specification; parts it does not understand become
    /// [`BeginSearch::Unknown`] or [`FindKeys::Unknown`], which refuse the
    /// command rather than guess its keys.
    fn from_value(value: &Value) -> KeySpec {
        let fields = map(value).unwrap_or_default();
        let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let flags: Vec<String> = get("flags")
            .and_then(list)
            .unwrap_or_default()
            .iter()
            .filter_map(text)
            .map(|f| f.to_ascii_lowercase())
            .collect();
        let (begin_type, begin) = get("begin_search").map(typed).unwrap_or_default();
        let begin = match begin_type.as_str() {
            "index" => field_int(&begin, "index").map(BeginSearch::Index),
            "keyword" => match (
                field_text(&begin, "keyword"),
                field_int(&begin, "startfrom"),
            ) {
                (Some(keyword), Some(start_from)) => Some(BeginSearch::Keyword {
                    keyword,
                    start_from,
                }),
                _ => None,
            },
            _ => None,
        }
        .unwrap_or(BeginSearch::Unknown);
        let (find_type, find) = get("find_keys").map(typed).unwrap_or_default();
        let find = match find_type.as_str() {
            "range" => match (
                field_int(&find, "lastkey"),
                field_int(&find, "keystep"),
                field_int(&find, "limit"),
            ) {
                (Some(last_key), Some(key_step), Some(limit)) => Some(FindKeys::Range {
                    last_key,
                    key_step,
                    limit,
                }),
                _ => None,
            },
            "keynum" => match (
                field_int(&find, "keynumidx"),
                field_int(&find, "firstkey"),
                field_int(&find, "keystep"),
            ) {
                (Some(key_num_index), Some(first_key), Some(key_step)) => Some(FindKeys::KeyNum {
                    key_num_index,
                    first_key,
                    key_step,
                }),
                _ => None,
            },
            _ => None,
        }
        .unwrap_or(FindKeys::Unknown);
        KeySpec {
            begin,
            find,
            incomplete: flags.iter().any(|f| f == "incomplete"),
            not_key: flags.iter().any(|f| f == "not_key"),
        }
    }

    /// The key positions this spec finds in `args`, as Redis's
    /// `getKeysUsingKeySpecs` does.
    fn keys(&self, args: &[String], arity: i64) -> Result<Vec<usize>, Unknowable> {
        let argc = args.len() as i64;
        let first = match &self.begin {
            BeginSearch::Index(index) => *index,
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let (start, end) = if *start_from > 0 {
                    (*start_from, argc - 1)
                } else {
                    (argc + start_from, 0)
                };
                let step = if start <= end { 1 } else { -1 };
                let mut i = start;
                let mut found = None;
                while i != end && (1..argc).contains(&i) {
                    if args[i as usize].eq_ignore_ascii_case(keyword) {
                        found = Some(i + 1);
                        break;
                    }
                    i += step;
                }
                // An optional keyword (GEORADIUS's STORE) that is absent
                // names no keys.
                let Some(first) = found else {
                    return Ok(Vec::new());
                };
                first
            }
            BeginSearch::Unknown => return Err(Unknowable::Incomplete),
        };
        let (first, last, step) = match &self.find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let last = if *last_key >= 0 {
                    first + last_key
                } else if *limit == 0 {
                    argc + last_key
                } else {
                    let rest = (argc - first)
                        .checked_div(*limit)
                        .ok_or(Unknowable::Incomplete)?;
                    first + rest + last_key
                };
                (first, last, *key_step)
            }
            FindKeys::KeyNum {
                key_num_index,
                first_key,
                key_step,
            } => {
                if *key_num_index >= argc - first {
                    // Redis: a command of variable arity given too few
                    // arguments names no keys here, and fails by itself.
                    if arity < 0 {
                        return Ok(Vec::new());
                    }
                    return Err(Unknowable::OutOfRange);
                }
                let count: i64 = usize::try_from(first + key_num_index)
                    .ok()
                    .and_then(|i| args.get(i))
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 0)
                    .ok_or(Unknowable::BadKeyCount)?;
                let first = first + first_key;
                (first, first + count - 1, *key_step)
            }
            FindKeys::Unknown => return Err(Unknowable::Incomplete),
        };
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return Err(Unknowable::OutOfRange);
        }
        // In range: 1 <= first <= last < argc, so the casts are exact.
        Ok((first..=last)
            .step_by(step as usize)
            .map(|i| i as usize)
            .collect())
    }
}

/// SORT's and SORT_RO's keys: the sorted key and STORE's destination (the
/// last one, as SORT uses). BY and GET name keys through a pattern
/// applied to the sorted values, which no argument tells: refused, naming
/// the BY or GET argument.
fn sort_keys(args: &[String]) -> Result<Vec<KeyArg>, (Unknowable, usize)> {
    let key = |index| KeyArg {
        index,
        channel: false,
    };
    let mut keys = vec![key(1)];
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        if arg.eq_ignore_ascii_case("BY") || arg.eq_ignore_ascii_case("GET") {
            return Err((Unknowable::Pattern, i));
        }
        if arg.eq_ignore_ascii_case("LIMIT") {
            i += 2;
        } else if arg.eq_ignore_ascii_case("STORE") && i + 1 < args.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    keys.extend(store.map(key));
    Ok(keys)
}

fn malformed(what: impl Into<String>) -> CommandInfoError {
    CommandInfoError::Malformed { what: what.into() }
}

/// A list: an array, or a RESP3 set.
fn list(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// A map: a RESP3 map, or a RESP2 array of alternating keys and values.
fn map(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(k, v)| text(k).map(|k| (k.to_ascii_lowercase(), v)))
                .collect(),
        ),
        Value::Array(items) => Some(
            items
                .chunks_exact(2)
                .filter_map(|pair| text(&pair[0]).map(|k| (k.to_ascii_lowercase(), &pair[1])))
                .collect(),
        ),
        _ => None,
    }
}

/// `{type, spec}` of a begin search or find keys, as the type and the
/// spec's fields.
fn typed(value: &Value) -> (String, Vec<(String, &Value)>) {
    let fields = map(value).unwrap_or_default();
    let kind = fields
        .iter()
        .find(|(k, _)| k == "type")
        .and_then(|(_, v)| text(v))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let spec = fields
        .iter()
        .find(|(k, _)| k == "spec")
        .and_then(|(_, v)| map(v))
        .unwrap_or_default();
    (kind, spec)
}

fn field_int(fields: &[(String, &Value)], key: &str) -> Option<i64> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| int(v))
}

fn field_text(fields: &[(String, &Value)], key: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| text(v))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
pub(super) mod tests;
