use super::*;
use crate::types::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

fn tokens(line: &str) -> Result<Vec<String>> {
    let mut lexer = Lexer::new(line);
    let mut out = Vec::new();
    while let Some(t) = lexer.next_token()? {
        out.push(t.text);
    }
    Ok(out)
}

fn err(line: &str) -> String {
    match parse(line) {
        Ok(c) => panic!("{line:?} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn vv(s: &str) -> VersionVector {
    VersionVector::parse_context(s).unwrap()
}

fn put(key: &str, context: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        context: vv(context),
        value: Value::from(value.to_string()),
        w: None,
        ttl_ms: None,
    }
}

#[test]
fn tokens_split_on_spaces_and_tabs() {
    assert_eq!(tokens("  a  b\tc ").unwrap(), ["a", "b", "c"]);
    assert_eq!(tokens("").unwrap(), Vec::<String>::new());
    assert_eq!(tokens("   ").unwrap(), Vec::<String>::new());
}

#[test]
fn quoted_tokens_hold_spaces_and_escapes() {
    assert_eq!(tokens(r#""a b" c"#).unwrap(), ["a b", "c"]);
    assert_eq!(tokens(r#""say \"hi\"""#).unwrap(), [r#"say "hi""#]);
    assert_eq!(tokens(r#""back\\slash""#).unwrap(), [r"back\slash"]);
    assert_eq!(tokens(r#""C:\dir""#).unwrap(), [r"C:\dir"]);
    assert_eq!(tokens(r#""""#).unwrap(), [""]);
    assert_eq!(tokens(r#""é ü""#).unwrap(), ["é ü"]);
}

#[test]
fn quotes_inside_other_tokens_are_literal() {
    assert_eq!(
        tokens(r#"{"127.0.0.1:13337":2} x"y"#).unwrap(),
        [r#"{"127.0.0.1:13337":2}"#, r#"x"y"#]
    );
}

#[test]
fn bad_quoting_is_an_error() {
    assert!(tokens(r#""open"#)
        .unwrap_err()
        .to_string()
        .contains("unterminated quote"));
    assert!(tokens(r#""ends with backslash\""#)
        .unwrap_err()
        .to_string()
        .contains("unterminated quote"));
    assert!(tokens(r#""a"b"#)
        .unwrap_err()
        .to_string()
        .contains("after a closing quote"));
}

#[test]
fn put_takes_the_rest_of_the_line_verbatim() {
    assert_eq!(
        parse("put k {} hello   world").unwrap(),
        put("k", "{}", "hello   world")
    );
    assert_eq!(
        parse("put k {}    he said \"hi\"  ").unwrap(),
        put("k", "{}", "he said \"hi\"  ")
    );
    assert_eq!(
        parse("put k {\"127.0.0.1:13337\":2,\"127.0.0.1:13338\":1} v").unwrap(),
        put("k", r#"{"127.0.0.1:13338":1,"127.0.0.1:13337":2}"#, "v")
    );
}

#[test]
fn put_takes_one_quoted_value() {
    assert_eq!(
        parse(r#"put "a key" {} "  padded \"v\"  ""#).unwrap(),
        put("a key", "{}", r#"  padded "v"  "#)
    );
    assert_eq!(parse(r#"put k {} """#).unwrap(), put("k", "{}", ""));
    assert_eq!(parse("put k {} \"x\"   ").unwrap(), put("k", "{}", "x"));
}

#[test]
fn put_errors() {
    assert_eq!(
        err("put"),
        "usage: put [--w N] [--ttl DURATION] KEY CONTEXT VALUE"
    );
    assert_eq!(
        err("put k"),
        "usage: put [--w N] [--ttl DURATION] KEY CONTEXT VALUE"
    );
    assert!(err("put k {}").starts_with("usage: put KEY CONTEXT VALUE (VALUE is missing"));
    assert!(err("put k {}   ").starts_with("usage: put KEY CONTEXT VALUE (VALUE is missing"));
    assert!(err(r#"put k {} "a" b"#).starts_with("text after the quoted VALUE"));
    assert!(err(r#"put k {} "a"#).starts_with("unterminated quote"));
    assert!(err("put k nope v").starts_with("bad context:"));
    assert!(err(r#"put k {"x":1} v"#).starts_with("bad context:"));
    assert_eq!(err(r#"put "" {} v"#), "empty key");
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(err(&format!("put {long_key} {{}} v")).starts_with("key too large"));
    let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
    assert!(err(&format!("put k {{}} {long_value}")).starts_with("value too large"));
}

#[test]
fn a_context_may_hold_spaces() {
    assert_eq!(
        parse(r#"put k {"127.0.0.1:13337": 2, "127.0.0.1:13338": 1} hello world"#).unwrap(),
        put(
            "k",
            r#"{"127.0.0.1:13337":2,"127.0.0.1:13338":1}"#,
            "hello world"
        )
    );
    assert_eq!(
        parse(r#"delete k { "127.0.0.1:13337" : 3 }"#).unwrap(),
        Command::Delete {
            key: "k".into(),
            context: vv(r#"{"127.0.0.1:13337":3}"#)
        }
    );
    // A brace inside a quoted name does not end the context.
    assert_eq!(
        parse(r#"put k {"a}b:1": 1} v"#).unwrap(),
        put("k", r#"{"a}b:1":1}"#, "v")
    );
    assert!(err(r#"put k {"127.0.0.1:13337": 2 v"#).contains("no closing '}'"));
    assert!(err(r#"put k {"127.0.0.1:13337":2}v"#).contains("put a space"));
}

#[test]
fn other_commands_parse() {
    assert_eq!(
        parse("get k").unwrap(),
        Command::Get {
            key: "k".into(),
            r: None
        }
    );
    assert_eq!(
        parse("get -v k").unwrap(),
        Command::GetVerbose {
            key: "k".into(),
            r: None
        }
    );
    assert_eq!(
        parse("get --verbose k").unwrap(),
        Command::GetVerbose {
            key: "k".into(),
            r: None
        }
    );
    assert_eq!(
        parse("get -v").unwrap(),
        Command::Get {
            key: "-v".into(),
            r: None
        }
    );
    assert_eq!(
        parse(r#"get "-v" k"#).unwrap_err().to_string(),
        "usage: get [-v] [--r N] KEY"
    );
    assert_eq!(
        parse(r#"get "a b""#).unwrap(),
        Command::Get {
            key: "a b".into(),
            r: None
        }
    );
    assert_eq!(
        parse(r#"delete k {"127.0.0.1:13337":1}"#).unwrap(),
        Command::Delete {
            key: "k".into(),
            context: vv(r#"{"127.0.0.1:13337":1}"#)
        }
    );
    assert_eq!(
        parse("add-node 127.0.0.1:13338").unwrap(),
        Command::AddNode {
            node: "127.0.0.1:13338".parse().unwrap()
        }
    );
    assert_eq!(
        parse("  remove-node   h:1  ").unwrap(),
        Command::RemoveNode {
            node: "h:1".parse().unwrap()
        }
    );
    assert_eq!(parse("status").unwrap(), Command::Status);
    assert_eq!(parse("abort-change").unwrap(), Command::AbortChange);
    assert_eq!(parse("ABORT-CHANGE").unwrap(), Command::AbortChange);
    assert_eq!(
        parse("locate k").unwrap(),
        Command::Locate { key: "k".into() }
    );
    assert_eq!(
        parse(r#"locate "a b""#).unwrap(),
        Command::Locate { key: "a b".into() }
    );
    assert_eq!(parse("help").unwrap(), Command::Help { topic: None });
    assert_eq!(
        parse("help put").unwrap(),
        Command::Help {
            topic: Some("put".into())
        }
    );
    assert_eq!(parse("quit").unwrap(), Command::Quit);
    assert_eq!(parse("exit").unwrap(), Command::Quit);
}

#[test]
fn usage_errors_name_the_usage() {
    for (line, want) in [
        ("get", "usage: get [-v] [--r N] KEY"),
        ("get a b", "usage: get [-v] [--r N] KEY"),
        ("delete", "usage: delete KEY CONTEXT"),
        ("delete k", "usage: delete KEY CONTEXT"),
        ("delete k {} x", "usage: delete KEY CONTEXT"),
        ("add-node", "usage: add-node HOST:PORT"),
        ("add-node a:1 b:2", "usage: add-node HOST:PORT"),
        ("remove-node", "usage: remove-node HOST:PORT"),
        ("remove-node a:1 b:2", "usage: remove-node HOST:PORT"),
        ("status now", "usage: status"),
        ("abort-change now", "usage: abort-change"),
        ("locate", "usage: locate KEY"),
        ("LOCATE", "usage: locate KEY"),
        ("locate a b", "usage: locate KEY"),
        ("help put get", "usage: help [COMMAND]"),
        ("quit now", "usage: quit"),
        ("exit now", "usage: exit"),
    ] {
        assert_eq!(err(line), want, "{line:?}");
    }
}

#[test]
fn unknown_and_malformed_commands() {
    assert_eq!(err("foo"), r#"unknown command "foo"; type help"#);
    assert_eq!(err("FOO k"), r#"unknown command "FOO"; type help"#);
    assert_eq!(err("help foo"), r#"unknown command "foo"; type help"#);
    assert_eq!(err("help Foo"), r#"unknown command "Foo"; type help"#);
    assert_eq!(err(r#"locate """#), "empty key");
    assert_eq!(err(""), "empty command; type help");
    assert!(err("add-node nohost").starts_with("bad node address"));
    assert!(err("add-node h:0").starts_with("bad node address"));
    assert!(err("delete k [1]").starts_with("bad context:"));
}

#[test]
fn wait_settled_takes_an_optional_number_of_seconds() {
    assert_eq!(
        parse("wait-settled").unwrap(),
        Command::WaitSettled {
            secs: DEFAULT_WAIT_SECS
        }
    );
    assert_eq!(
        parse("WAIT-SETTLED 5").unwrap(),
        Command::WaitSettled { secs: 5 }
    );
    for bad in ["wait-settled 0", "wait-settled x", "wait-settled 99999999"] {
        assert!(
            err(bad).starts_with("wait-settled: SECONDS must be"),
            "{bad}"
        );
    }
    assert_eq!(err("wait-settled 5 6"), "usage: wait-settled [SECONDS]");
}

#[test]
fn command_names_are_case_insensitive_and_the_rest_is_not() {
    assert_eq!(
        parse("LOCATE k").unwrap(),
        Command::Locate { key: "k".into() }
    );
    assert_eq!(
        parse("locate K").unwrap(),
        Command::Locate { key: "K".into() }
    );
    assert_eq!(
        parse("GET Key").unwrap(),
        Command::Get {
            key: "Key".into(),
            r: None
        }
    );
    assert_eq!(parse("Put K {} Hello").unwrap(), put("K", "{}", "Hello"));
    assert_eq!(
        parse(r#"DELETE k {"127.0.0.1:13337":1}"#).unwrap(),
        Command::Delete {
            key: "k".into(),
            context: vv(r#"{"127.0.0.1:13337":1}"#)
        }
    );
    assert_eq!(
        parse("Add-Node h:1").unwrap(),
        Command::AddNode {
            node: "h:1".parse().unwrap()
        }
    );
    assert_eq!(
        parse("REMOVE-NODE h:1").unwrap(),
        Command::RemoveNode {
            node: "h:1".parse().unwrap()
        }
    );
    assert_eq!(parse("Status").unwrap(), Command::Status);
    assert_eq!(
        parse("HELP Locate").unwrap(),
        Command::Help {
            topic: Some("locate".into())
        }
    );
    assert_eq!(parse("QUIT").unwrap(), Command::Quit);
    assert_eq!(parse("Exit").unwrap(), Command::Quit);
    assert_eq!(err("GET"), "usage: get [-v] [--r N] KEY");
}

#[test]
fn blank_and_comment_lines() {
    assert!(is_blank_or_comment(""));
    assert!(is_blank_or_comment("   \t"));
    assert!(is_blank_or_comment("# a comment"));
    assert!(is_blank_or_comment("  # indented"));
    assert!(!is_blank_or_comment("get k # not a comment"));
}

#[test]
fn only_data_and_membership_commands_need_the_node() {
    assert!(parse("get k").unwrap().needs_node());
    assert!(parse("status").unwrap().needs_node());
    assert!(parse("locate k").unwrap().needs_node());
    assert!(!parse("help").unwrap().needs_node());
    assert!(!parse("quit").unwrap().needs_node());
}

#[test]
fn per_request_r_and_w_come_before_the_key() {
    assert_eq!(
        parse("get --r 1 k").unwrap(),
        Command::Get {
            key: "k".into(),
            r: Some(1)
        }
    );
    assert_eq!(
        parse("get -v --r 3 k").unwrap(),
        Command::GetVerbose {
            key: "k".into(),
            r: Some(3)
        }
    );
    // The last token is always the key.
    assert_eq!(
        parse("get --r").unwrap(),
        Command::Get {
            key: "--r".into(),
            r: None
        }
    );
    assert_eq!(
        parse("put --w 1 k {} v w").unwrap(),
        Command::Put {
            key: "k".into(),
            context: vv("{}"),
            value: Value::from("v w".to_string()),
            w: Some(1),
            ttl_ms: None
        }
    );
    // Quoted, it is a key.
    assert_eq!(parse("put \"--w\" {} v").unwrap(), put("--w", "{}", "v"));
    for bad in [
        "get --r 0 k",
        "get --r x k",
        "put --w 0 k {} v",
        "put --w -1 k {} v",
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("whole number from 1 to N"), "{bad}: {e}");
    }
}

#[test]
fn scan_takes_a_prefix_and_options_in_any_order() {
    assert_eq!(
        parse("scan").unwrap(),
        Command::Scan {
            prefix: String::new(),
            after: None,
            limit: DEFAULT_SCAN_LIMIT,
            consistent: false
        }
    );
    assert_eq!(
        parse("SCAN --limit 5 user: --after user:7 --consistent").unwrap(),
        Command::Scan {
            prefix: "user:".into(),
            after: Some("user:7".into()),
            limit: 5,
            consistent: true
        }
    );
    assert_eq!(
        parse("scan \"--limit\"").unwrap(),
        Command::Scan {
            prefix: "--limit".into(),
            after: None,
            limit: DEFAULT_SCAN_LIMIT,
            consistent: false
        }
    );
    for bad in [
        "scan --limit 0",
        "scan --limit 10001",
        "scan --limit",
        "scan a b",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn put_takes_a_ttl_with_its_unit() {
    assert_eq!(
        parse("put --ttl 30s --w 2 k {} v").unwrap(),
        Command::Put {
            key: "k".into(),
            context: vv("{}"),
            value: Value::from("v".to_string()),
            w: Some(2),
            ttl_ms: Some(30_000)
        }
    );
    let e = parse("put --ttl 0s k {} v").unwrap_err().to_string();
    assert!(e.contains("bad duration"), "{e}");
    let e = parse("put --ttl soon k {} v").unwrap_err().to_string();
    assert!(e.contains("bad duration"), "{e}");
}
