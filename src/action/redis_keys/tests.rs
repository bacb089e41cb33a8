//! Key finding on replies captured from Redis 7.0 (`COMMAND INFO` for a
//! selection of commands, over RESP2 and RESP3; see the fixtures).

use super::*;

/// `COMMAND INFO get set mset ... nosuchcommand` from Redis 7.0.15, RESP2.
pub(crate) const RESP2: &[u8] = include_bytes!("command_info.resp2");
/// `COMMAND INFO get xread object sort nosuchcommand` after `HELLO 3`.
const RESP3: &[u8] = include_bytes!("command_info.resp3");

/// Parses a captured reply. Line ends are made CRLF again, whatever a
/// checkout did to them: no string in these replies holds a line break.
pub(crate) fn table(raw: &[u8]) -> CommandTable {
    let text = String::from_utf8(raw.to_vec()).unwrap().replace('\r', "");
    let reply = redis::parse_redis_value(text.replace('\n', "\r\n").as_bytes()).unwrap();
    CommandTable::from_reply(&reply).unwrap()
}

fn args(line: &str) -> Vec<String> {
    line.split(' ').map(str::to_string).collect()
}

/// The key positions of `line`, or why there are none to be had.
fn keys(table: &CommandTable, line: &str) -> Result<Vec<usize>, KeysError> {
    let args = args(line);
    let command = table.resolve(&args)?;
    Ok(command.keys(&args)?.into_iter().map(|k| k.index).collect())
}

fn unknowable(table: &CommandTable, line: &str) -> (Unknowable, Option<usize>) {
    match keys(table, line) {
        Err(KeysError::Unknowable { why, arg, .. }) => (why, arg),
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn reads_every_entry_of_a_real_reply() {
    let table = table(RESP2);
    // 44 names asked for; Redis answered nil for the one it does not know.
    assert_eq!(table.len(), 43);
    assert!(matches!(
        table.resolve(&args("nosuchcommand x")),
        Err(KeysError::UnknownCommand { .. })
    ));
}

#[test]
fn finds_keys_by_index_range_and_step() {
    let table = table(RESP2);
    assert_eq!(keys(&table, "SET app:x 1").unwrap(), [1]);
    assert_eq!(keys(&table, "set app:x 1 GET").unwrap(), [1]);
    assert_eq!(keys(&table, "INCR app:x").unwrap(), [1]);
    assert_eq!(keys(&table, "MGET a b c").unwrap(), [1, 2, 3]);
    assert_eq!(keys(&table, "DEL a b").unwrap(), [1, 2]);
    assert_eq!(keys(&table, "MSET a 1 b 2").unwrap(), [1, 3]);
    assert_eq!(keys(&table, "RENAME a b").unwrap(), [1, 2]);
    assert_eq!(keys(&table, "HSET h f v f2 v2").unwrap(), [1]);
}

#[test]
fn finds_keys_after_keywords() {
    let table = table(RESP2);
    assert_eq!(
        keys(&table, "XREAD COUNT 2 STREAMS s1 s2 0 0").unwrap(),
        [4, 5]
    );
    assert_eq!(
        keys(&table, "XREADGROUP GROUP g c streams s 0").unwrap(),
        [5]
    );
    assert_eq!(
        keys(&table, "GEORADIUS g 0 0 1 km STORE dst").unwrap(),
        [1, 7]
    );
    assert_eq!(
        keys(&table, "GEORADIUS g 0 0 1 km STOREDIST d1 STORE d2").unwrap(),
        [1, 9, 7]
    );
    // An optional keyword that is absent names no key.
    assert_eq!(keys(&table, "GEORADIUS g 0 0 1 km").unwrap(), [1]);
}

#[test]
fn finds_keys_from_a_key_count() {
    let table = table(RESP2);
    assert_eq!(
        keys(&table, "ZUNIONSTORE dst 2 a b WEIGHTS 1 2").unwrap(),
        [1, 3, 4]
    );
    assert_eq!(keys(&table, "LMPOP 2 a b LEFT").unwrap(), [2, 3]);
    assert_eq!(keys(&table, "EVAL s 1 k a").unwrap(), [3]);
    assert_eq!(
        unknowable(&table, "LMPOP x a LEFT"),
        (Unknowable::BadKeyCount, None)
    );
    assert_eq!(
        unknowable(&table, "LMPOP -1 a LEFT"),
        (Unknowable::BadKeyCount, None)
    );
    // More keys claimed than there are arguments.
    assert_eq!(
        unknowable(&table, "LMPOP 5 a LEFT"),
        (Unknowable::OutOfRange, None)
    );
}

#[test]
fn finds_keys_of_subcommands() {
    let table = table(RESP2);
    assert_eq!(keys(&table, "OBJECT ENCODING k").unwrap(), [2]);
    assert_eq!(keys(&table, "object encoding k").unwrap(), [2]);
    assert_eq!(keys(&table, "MEMORY USAGE k SAMPLES 5").unwrap(), [2]);
    assert_eq!(keys(&table, "XINFO STREAM s").unwrap(), [2]);
    assert_eq!(keys(&table, "XGROUP CREATE s g $").unwrap(), [2]);
    let object = args("OBJECT");
    assert!(matches!(
        table.resolve(&object),
        Err(KeysError::MissingSubcommand { .. })
    ));
    let err = table.resolve(&args("OBJECT NOPE k")).unwrap_err();
    assert!(matches!(err, KeysError::UnknownSubcommand { .. }), "{err}");
    assert_eq!(err.arg(), Some(1));
    assert_eq!(
        table.resolve(&args("config get x")).unwrap().display(),
        "CONFIG GET"
    );
}

#[test]
fn sort_has_its_keys_unless_patterns_name_them() {
    let table = table(RESP2);
    assert_eq!(keys(&table, "SORT l").unwrap(), [1]);
    assert_eq!(keys(&table, "SORT l DESC ALPHA").unwrap(), [1]);
    assert_eq!(
        keys(&table, "SORT l LIMIT 0 10 STORE d1 store d2").unwrap(),
        [1, 8]
    );
    assert_eq!(keys(&table, "SORT_RO l LIMIT 0 10").unwrap(), [1]);
    assert_eq!(
        unknowable(&table, "SORT l BY w_*"),
        (Unknowable::Pattern, Some(2))
    );
    assert_eq!(
        unknowable(&table, "SORT_RO l LIMIT 0 5 get #"),
        (Unknowable::Pattern, Some(5))
    );
}

#[test]
fn keyspace_commands_without_key_specs_are_unknowable() {
    let table = table(RESP2);
    for line in [
        "KEYS *",
        "SCAN 0",
        "SCAN 0 MATCH app:*",
        "RANDOMKEY",
        "DBSIZE",
        "FLUSHDB",
        "SWAPDB 0 1",
        "LOLWUT",
    ] {
        assert_eq!(
            unknowable(&table, line),
            (Unknowable::NoKeySpecs, None),
            "{line}"
        );
    }
    // Commands that touch no data name no keys and need none.
    for line in ["PING", "ECHO hi", "INFO", "INFO memory", "PUBSUB CHANNELS"] {
        assert_eq!(keys(&table, line).unwrap(), Vec::<usize>::new(), "{line}");
    }
}

#[test]
fn incomplete_specs_are_unknowable() {
    let table = table(RESP2);
    assert_eq!(
        unknowable(&table, "MIGRATE host 6379 \"\" 0 5000 KEYS a b"),
        (Unknowable::Incomplete, None)
    );
}

#[test]
fn channels_are_found_and_marked() {
    let table = table(RESP2);
    for line in ["PUBLISH app:c hello", "SPUBLISH app:c hello"] {
        let args = args(line);
        let found = table.resolve(&args).unwrap().keys(&args).unwrap();
        assert_eq!(
            found,
            [KeyArg {
                index: 1,
                channel: true
            }],
            "{line}"
        );
    }
}

#[test]
fn arity_is_checked_as_redis_does() {
    let table = table(RESP2);
    for line in ["GET", "GET a b", "SET a", "XREAD STREAMS s"] {
        assert!(
            matches!(keys(&table, line), Err(KeysError::Arity { .. })),
            "{line}"
        );
    }
}

#[test]
fn categories_are_read_without_the_at() {
    let table = table(RESP2);
    let category = |line: &str, c: &str| table.resolve(&args(line)).unwrap().in_category(c);
    assert!(category("FLUSHDB", "keyspace"));
    assert!(category("EVAL s 0", "scripting"));
    assert!(category("FUNCTION LIST", "scripting"));
    assert!(category("CONFIG GET x", "admin"));
    assert!(category("LASTSAVE", "admin"));
    assert!(!category("GET k", "admin"));
}

#[test]
fn resp3_replies_read_the_same() {
    let resp2 = table(RESP2);
    let resp3 = table(RESP3);
    assert_eq!(resp3.len(), 4);
    for line in [
        "GET k",
        "XREAD COUNT 1 STREAMS a b 0 0",
        "OBJECT FREQ k",
        "SORT l STORE d",
    ] {
        assert_eq!(keys(&resp3, line), keys(&resp2, line), "{line}");
    }
    assert_eq!(
        unknowable(&resp3, "SORT l BY x"),
        (Unknowable::Pattern, Some(2))
    );
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// An entry as Redis 7 shapes it, with `specs` as its key specs.
fn entry(name: &str, arity: i64, categories: &[&str], specs: Vec<Value>) -> Value {
    Value::Array(vec![
        bulk(name),
        Value::Int(arity),
        Value::Array(vec![]),
        Value::Int(1),
        Value::Int(1),
        Value::Int(1),
        Value::Array(categories.iter().map(|c| bulk(c)).collect()),
        Value::Array(vec![]),
        Value::Array(specs),
        Value::Array(vec![]),
    ])
}

#[test]
fn a_spec_of_a_kind_unknown_here_refuses_rather_than_guesses() {
    let spec = Value::Array(vec![
        bulk("flags"),
        Value::Array(vec![bulk("RW")]),
        bulk("begin_search"),
        Value::Array(vec![
            bulk("type"),
            bulk("index"),
            bulk("spec"),
            Value::Array(vec![bulk("index"), Value::Int(1)]),
        ]),
        bulk("find_keys"),
        Value::Array(vec![
            bulk("type"),
            bulk("someday"),
            bulk("spec"),
            Value::Array(vec![]),
        ]),
    ]);
    let reply = Value::Array(vec![entry("future", -2, &["@write"], vec![spec])]);
    let table = CommandTable::from_reply(&reply).unwrap();
    assert_eq!(
        unknowable(&table, "FUTURE k"),
        (Unknowable::Incomplete, None)
    );
}

#[test]
fn replies_without_key_specs_or_entries_are_errors() {
    // Redis 6 entries stop after the categories.
    let short = Value::Array(vec![Value::Array(vec![
        bulk("get"),
        Value::Int(2),
        Value::Array(vec![]),
        Value::Int(1),
        Value::Int(1),
        Value::Int(1),
        Value::Array(vec![]),
    ])]);
    assert_eq!(
        CommandTable::from_reply(&short).unwrap_err(),
        CommandInfoError::NoKeySpecs {
            command: "get".into()
        }
    );
    assert!(matches!(
        CommandTable::from_reply(&Value::Int(3)),
        Err(CommandInfoError::Malformed { .. })
    ));
    assert!(matches!(
        CommandTable::from_reply(&Value::Array(vec![Value::Int(3)])),
        Err(CommandInfoError::Malformed { .. })
    ));
}
