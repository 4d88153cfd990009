use super::*;
use crate::error::ReplicaFailure;
use crate::rpc::AeStats;
use crate::rpc::SenderStatus;
use crate::types::Replication;

fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn vv(s: &str) -> VersionVector {
    VersionVector::parse_context(s).unwrap()
}

fn write(context: &str, values: &[&str], hinted: usize) -> WriteReply {
    WriteReply {
        key: "k".into(),
        context: vv(context),
        values: values
            .iter()
            .map(|v| Value::copy_from_slice(v.as_bytes()))
            .collect(),
        coordinator: id("127.0.0.1:13337"),
        acks: vec![id("127.0.0.1:13337"), id("127.0.0.1:13338")],
        hinted,
    }
}

fn read(key: &str, values: &[&[u8]], context: &str) -> ReadReply {
    ReadReply {
        key: key.into(),
        values: values.iter().map(|v| Value::copy_from_slice(v)).collect(),
        media_types: vec![None; values.len()],
        context: vv(context),
        replicas: vec![id("127.0.0.1:13337")],
    }
}

fn status() -> StatusReply {
    StatusReply {
        node: id("127.0.0.1:13338"),
        leader: id("127.0.0.1:13337"),
        term: 2,
        epoch: 7,
        replication: Replication { n: 3, w: 2, r: 2 },
        fsync: "batch".into(),
        nodes: vec![
            MemberStatus {
                id: id("127.0.0.1:13337"),
                state: NodeState::Alive,
                keys: Some(120),
                tombstones: Some(3),
                hints: Some(0),
                epoch: Some(7),
                anti_entropy: Some(AeStats {
                    exchanges: 12,
                    keys_repaired: 40,
                    last_exchange: Some(crate::rpc::LastExchange {
                        peer: id("127.0.0.1:13339"),
                        at_unix_ms: 1_700_000_000_000,
                        ago_ms: 1200,
                        keys_repaired: 2,
                    }),
                    tombstones_removed: 5,
                }),
                restoring: Some(false),
                share: 0.6,
                hints_by_target: Some([(id("10.0.0.2:13338"), 4)].into_iter().collect()),
                uptime_ms: Some(754_000),
                version: Some("0.1.0".into()),
                role: Some("leader".into()),
            },
            MemberStatus {
                id: id("10.0.0.2:13338"),
                state: NodeState::Down,
                keys: None,
                tombstones: None,
                hints: None,
                epoch: None,
                anti_entropy: None,
                restoring: None,
                share: 0.4,
                hints_by_target: None,
                uptime_ms: None,
                version: None,
                role: None,
            },
        ],
        transition: None,
        member: true,
        removed_at_epoch: None,
        refused: Vec::new(),
        secure: true,
    }
}

fn sender(node: &str, state: &str, to_move: u64, moved: u64, bytes: u64) -> SenderStatus {
    SenderStatus {
        node: id(node),
        state: state.into(),
        keys_to_move: to_move,
        keys_moved: moved,
        bytes_moved: bytes,
    }
}

/// `status` while 127.0.0.1:13342 joins, asked of a node outside the ring.
fn status_moving() -> StatusReply {
    StatusReply {
        epoch: 8,
        member: false,
        transition: Some(TransitionStatus {
            epoch: 8,
            joining: vec![id("127.0.0.1:13342")],
            leaving: vec![],
            keys_to_move: 4000,
            keys_moved: 1200,
            bytes_moved: 1_258_291,
            elapsed_ms: 1500,
            keys_per_sec: 800,
            eta_s: Some(3),
            senders: vec![
                sender("127.0.0.1:13337", "sending", 4000, 1200, 1_258_291),
                sender("10.0.0.2:13338", "unreachable", 0, 0, 0),
            ],
        }),
        ..status()
    }
}

fn locate() -> LocateReply {
    LocateReply {
        key: "k".into(),
        epoch: 7,
        replicas: vec![id("127.0.0.1:13338"), id("127.0.0.1:13341")],
        pending: vec![],
        fallbacks: vec![id("127.0.0.1:13337")],
        states: [
            (id("127.0.0.1:13337"), NodeState::Suspect),
            (id("127.0.0.1:13338"), NodeState::Alive),
            (id("127.0.0.1:13341"), NodeState::Down),
        ]
        .into_iter()
        .collect(),
    }
}

#[test]
fn put_and_delete_json() {
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":1}"#, &["v"], 0), false).to_json(),
        r#"{"ok":true,"key":"k","context":{"127.0.0.1:13337":1},"values":["v"],"coordinator":"127.0.0.1:13337","acks":["127.0.0.1:13337","127.0.0.1:13338"],"hinted":0}"#
    );
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &[], 1), true).to_json(),
        r#"{"ok":true,"key":"k","context":{"127.0.0.1:13337":2},"values":[],"coordinator":"127.0.0.1:13337","acks":["127.0.0.1:13337","127.0.0.1:13338"],"hinted":1}"#
    );
}

#[test]
fn get_json() {
    assert_eq!(
        Outcome::Get(read(
            "k",
            &[b"v1", b"v2"],
            r#"{"127.0.0.1:13337":1,"127.0.0.1:13338":1}"#
        ))
        .to_json(),
        r#"{"ok":true,"key":"k","values":["v1","v2"],"context":{"127.0.0.1:13337":1,"127.0.0.1:13338":1},"replicas":["127.0.0.1:13337"]}"#
    );
    assert_eq!(
        Outcome::Get(read("missing", &[], "{}")).to_json(),
        r#"{"ok":true,"key":"missing","values":[],"context":{},"replicas":["127.0.0.1:13337"]}"#
    );
}

#[test]
fn json_escapes_and_decodes_lossily() {
    assert_eq!(
        Outcome::Get(read("a \"b\"", &[b"line\nbreak\t\\", b"\xffok"], "{}")).to_json(),
        r#"{"ok":true,"key":"a \"b\"","values":["line\nbreak\t\\","\ufffdok"],"context":{},"replicas":["127.0.0.1:13337"]}"#
            .replace(r"\ufffd", "\u{fffd}")
    );
}

#[test]
fn error_json() {
    let e = Error::WriteQuorum {
        needed: 2,
        acked: 1,
        failures: vec![ReplicaFailure {
            node: id("127.0.0.1:13338"),
            reason: "connection refused".into(),
        }],
    };
    assert_eq!(
        Outcome::Error(e).to_json(),
        r#"{"ok":false,"error":"write quorum not reached: 1 of 2 acks (127.0.0.1:13338: connection refused); the write may still have been stored on the nodes that acked it and be read later"}"#
    );
    assert_eq!(
        Outcome::Error(Error::invalid(r#"unknown command "foo"; type help"#)).to_json(),
        r#"{"ok":false,"error":"unknown command \"foo\"; type help"}"#
    );
}

#[test]
fn membership_json() {
    let reply = MembershipReply {
        epoch: 7,
        members: vec![id("127.0.0.1:13337"), id("127.0.0.1:13338")],
        joining: vec![id("127.0.0.1:13338")],
        leaving: vec![],
        unreached: vec![],
    };
    assert_eq!(
        Outcome::Membership(reply).to_json(),
        concat!(
            r#"{"ok":true,"epoch":7,"members":["127.0.0.1:13337","127.0.0.1:13338"],"#,
            r#""joining":["127.0.0.1:13338"],"leaving":[],"unreached":[]}"#
        )
    );
    let reply = MembershipReply {
        epoch: 9,
        members: vec![id("127.0.0.1:13337")],
        joining: vec![],
        leaving: vec![id("127.0.0.1:13338")],
        unreached: vec![id("127.0.0.1:13338")],
    };
    assert_eq!(
        Outcome::Membership(reply).to_json(),
        concat!(
            r#"{"ok":true,"epoch":9,"members":["127.0.0.1:13337"],"joining":[],"#,
            r#""leaving":["127.0.0.1:13338"],"unreached":["127.0.0.1:13338"]}"#
        )
    );
}

#[test]
fn status_json() {
    assert_eq!(
        Outcome::Status(status()).to_json(),
        concat!(
            r#"{"ok":true,"leader":"127.0.0.1:13337","term":2,"epoch":7,"qsize":3,"write_n":2,"read_n":2,"#,
            r#""nodes":[{"id":"127.0.0.1:13337","state":"alive","keys":120,"tombstones":3,"hints":0,"epoch":7,"#,
            r#""anti_entropy":{"exchanges":12,"keys_repaired":40,"last_exchange":{"peer":"127.0.0.1:13339","at_unix_ms":1700000000000,"ago_ms":1200,"keys_repaired":2},"tombstones_removed":5},"restoring":false,"share":0.6,"hints_by_target":{"10.0.0.2:13338":4},"uptime_ms":754000,"version":"0.1.0","role":"leader"},"#,
            r#"{"id":"10.0.0.2:13338","state":"down","keys":null,"tombstones":null,"hints":null,"epoch":null,"anti_entropy":null,"restoring":null,"share":0.4,"hints_by_target":null,"uptime_ms":null,"version":null,"role":null}],"#,
            r#""node":"127.0.0.1:13338","fsync":"batch","transition":null,"member":true,"secure":true}"#
        )
    );
}

#[test]
fn status_json_with_a_transition() {
    assert_eq!(
        Outcome::Status(status_moving()).to_json(),
        concat!(
            r#"{"ok":true,"leader":"127.0.0.1:13337","term":2,"epoch":8,"qsize":3,"write_n":2,"read_n":2,"#,
            r#""nodes":[{"id":"127.0.0.1:13337","state":"alive","keys":120,"tombstones":3,"hints":0,"epoch":7,"#,
            r#""anti_entropy":{"exchanges":12,"keys_repaired":40,"last_exchange":{"peer":"127.0.0.1:13339","at_unix_ms":1700000000000,"ago_ms":1200,"keys_repaired":2},"tombstones_removed":5},"restoring":false,"share":0.6,"hints_by_target":{"10.0.0.2:13338":4},"uptime_ms":754000,"version":"0.1.0","role":"leader"},"#,
            r#"{"id":"10.0.0.2:13338","state":"down","keys":null,"tombstones":null,"hints":null,"epoch":null,"anti_entropy":null,"restoring":null,"share":0.4,"hints_by_target":null,"uptime_ms":null,"version":null,"role":null}],"#,
            r#""node":"127.0.0.1:13338","fsync":"batch","#,
            r#""transition":{"epoch":8,"joining":["127.0.0.1:13342"],"leaving":[],"#,
            r#""keys_to_move":4000,"keys_moved":1200,"bytes_moved":1258291,"elapsed_ms":1500,"#,
            r#""keys_per_sec":800,"eta_s":3,"senders":["#,
            r#"{"node":"127.0.0.1:13337","state":"sending","keys_to_move":4000,"keys_moved":1200,"bytes_moved":1258291},"#,
            r#"{"node":"10.0.0.2:13338","state":"unreachable","keys_to_move":0,"keys_moved":0,"bytes_moved":0}]},"#,
            r#""member":false,"secure":true}"#
        )
    );
    let mut early = status_moving();
    if let Some(t) = early.transition.as_mut() {
        t.eta_s = None;
        t.senders.clear();
    }
    let json = Outcome::Status(early).to_json();
    assert!(json.contains(r#""eta_s":null,"senders":[]}"#), "{json}");
}

#[test]
fn locate_json() {
    assert_eq!(
        Outcome::Locate(locate()).to_json(),
        concat!(
            r#"{"ok":true,"key":"k","epoch":7,"replicas":["127.0.0.1:13338","127.0.0.1:13341"],"#,
            r#""pending":[],"fallbacks":["127.0.0.1:13337"],"#,
            r#""states":{"127.0.0.1:13337":"suspect","127.0.0.1:13338":"alive","127.0.0.1:13341":"down"}}"#
        )
    );
    let moving = LocateReply {
        key: "a \"b\"".into(),
        pending: vec![id("127.0.0.1:13342")],
        states: [(id("127.0.0.1:13342"), NodeState::Alive)]
            .into_iter()
            .collect(),
        replicas: vec![],
        fallbacks: vec![],
        ..locate()
    };
    assert_eq!(
        Outcome::Locate(moving).to_json(),
        concat!(
            r#"{"ok":true,"key":"a \"b\"","epoch":7,"replicas":[],"#,
            r#""pending":["127.0.0.1:13342"],"fallbacks":[],"states":{"127.0.0.1:13342":"alive"}}"#
        )
    );
}

#[test]
fn help_json_is_one_line() {
    let json = Outcome::Help(help_text(None)).to_json();
    assert!(
        json.starts_with(r#"{"ok":true,"help":"commands:\n"#),
        "{json}"
    );
    assert!(!json.contains('\n'));
}

#[test]
fn human_write_and_read() {
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":1}"#, &["v"], 0), false).to_human(),
        "ok\ncontext: {\"127.0.0.1:13337\":1}"
    );
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &["a", "b"], 0), false).to_human(),
        "ok\n2 siblings now (concurrent writes this context had not seen stay beside yours):\n\
         a\nb\ncontext: {\"127.0.0.1:13337\":2}"
    );
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &[], 1), true).to_human(),
        "deleted (1 of 2 acks from stand-ins holding a hint)\ncontext: {\"127.0.0.1:13337\":2}"
    );
    assert_eq!(
        Outcome::write(write(r#"{"127.0.0.1:13337":3}"#, &["x"], 0), true).to_human(),
        "deleted\n1 version now (concurrent writes this context had not seen stay beside the delete):\n\
         x\ncontext: {\"127.0.0.1:13337\":3}"
    );
    assert_eq!(
        Outcome::Get(read("k", &[b"hello   world"], r#"{"127.0.0.1:13337":1}"#)).to_human(),
        "hello   world\ncontext: {\"127.0.0.1:13337\":1}"
    );
    assert_eq!(
        Outcome::Get(read("k", &[b"v1", b"v2"], r#"{"a:1":1,"b:1":1}"#)).to_human(),
        "2 siblings:\nv1\nv2\ncontext: {\"a:1\":1,\"b:1\":1}"
    );
    assert_eq!(
        Outcome::Get(read("k", &[], "{}")).to_human(),
        "(not found)\ncontext: {}"
    );
    let mut traced = read("k", &[b"v"], r#"{"a:1":1}"#);
    traced.replicas = vec![id("127.0.0.1:13337"), id("127.0.0.1:13339")];
    assert_eq!(
        Outcome::GetVerbose(traced.clone()).to_human(),
        "v\ncontext: {\"a:1\":1}\nanswered by: 127.0.0.1:13337, 127.0.0.1:13339"
    );
    assert_eq!(
        Outcome::GetVerbose(traced.clone()).to_json(),
        Outcome::Get(traced).to_json()
    );
    // The empty value is shown, as "" (and stays "" in JSON).
    let empty = read("k", &[b"", b"x"], r#"{"a:1":2}"#);
    assert_eq!(
        Outcome::Get(empty.clone()).to_human(),
        "2 siblings:\n\"\"\nx\ncontext: {\"a:1\":2}"
    );
    assert!(Outcome::Get(empty)
        .to_json()
        .contains(r#""values":["","x"]"#));
    assert_eq!(
        Outcome::Get(read("k", &[], r#"{"a:1":3}"#)).to_human(),
        "(deleted)\ncontext: {\"a:1\":3}"
    );
    assert_eq!(
        Outcome::Error(Error::NotLeader {
            leader: id("127.0.0.1:13337")
        })
        .to_human(),
        "error: not the leader: the leader is 127.0.0.1:13337"
    );
}

#[test]
fn human_status_is_a_table() {
    assert_eq!(
        Outcome::Status(status()).to_human(),
        "node:   127.0.0.1:13338 (fsync batch)\n\
         leader: 127.0.0.1:13337 (term 2)\n\
         epoch:  7\n\
         N/W/R:  3/2/2\n\
         \n\
         ID               STATE  KEYS  TOMBSTONES  HINTS  EPOCH  REPAIRED  LAST ANTI-ENTROPY               SHARE  UP           VERSION\n\
         127.0.0.1:13337  alive  120   3           0      7      40        1.2 s ago with 127.0.0.1:13339  60%    12 min 34 s  0.1.0\n\
         10.0.0.2:13338   down   -     -           -      -      -         -                               40%    -            -\n\
         \n\
         hints: 127.0.0.1:13337 holds 4 for 10.0.0.2:13338\n\
         ring settled"
    );
}

#[test]
fn human_status_shows_a_running_change() {
    assert_eq!(
        Outcome::Status(status_moving()).to_human(),
        "node:   127.0.0.1:13338 (fsync batch)\n\
         leader: 127.0.0.1:13337 (term 2)\n\
         epoch:  8\n\
         N/W/R:  3/2/2\n\
         \n\
         ID               STATE  KEYS  TOMBSTONES  HINTS  EPOCH  REPAIRED  LAST ANTI-ENTROPY               SHARE  UP           VERSION\n\
         127.0.0.1:13337  alive  120   3           0      7      40        1.2 s ago with 127.0.0.1:13339  60%    12 min 34 s  0.1.0\n\
         10.0.0.2:13338   down   -     -           -      -      -         -                               40%    -            -\n\
         \n\
         hints: 127.0.0.1:13337 holds 4 for 10.0.0.2:13338\n\
         this node (127.0.0.1:13338) is not a member of the ring\n\
         ring change in progress (epoch 8): adding 127.0.0.1:13342\n  \
         moved 1200 of 4000 keys (30%), 1.2 MiB, 800 keys/s, about 3 s left\n  \
         127.0.0.1:13337  sending      1200/4000 keys\n  \
         10.0.0.2:13338   unreachable  0/0 keys"
    );
    // No estimate yet, nothing to move, a removal: no eta, 100%.
    let mut removing = status_moving();
    removing.member = true;
    if let Some(t) = removing.transition.as_mut() {
        t.joining = vec![];
        t.leaving = vec![id("10.0.0.2:13338")];
        t.keys_to_move = 0;
        t.keys_moved = 0;
        t.bytes_moved = 0;
        t.keys_per_sec = 0;
        t.eta_s = None;
        t.senders = vec![sender("127.0.0.1:13337", "done", 0, 0, 0)];
    }
    let text = Outcome::Status(removing).to_human();
    let tail: Vec<&str> = text.lines().skip(8).collect();
    assert_eq!(
        tail,
        [
            "",
            "hints: 127.0.0.1:13337 holds 4 for 10.0.0.2:13338",
            "ring change in progress (epoch 8): removing 10.0.0.2:13338",
            "  moved 0 of 0 keys (100%), 0 B, 0 keys/s",
            "  127.0.0.1:13337  done  0/0 keys",
        ]
    );
}

#[test]
fn human_locate() {
    assert_eq!(
        Outcome::Locate(locate()).to_human(),
        "replicas:  127.0.0.1:13338 (alive), 127.0.0.1:13341 (down)\n\
         pending:   -\n\
         fallbacks: 127.0.0.1:13337 (suspect)\n\
         epoch 7"
    );
    let moving = LocateReply {
        pending: vec![id("127.0.0.1:13342")],
        fallbacks: vec![],
        ..locate()
    };
    assert_eq!(
        Outcome::Locate(moving).to_human(),
        "replicas:  127.0.0.1:13338 (alive), 127.0.0.1:13341 (down)\n\
         pending:   127.0.0.1:13342 (unknown)\n\
         fallbacks: -\n\
         epoch 7"
    );
}

#[test]
fn progress_numbers_for_people() {
    assert_eq!(percent(0, 0), 100);
    assert_eq!(percent(1200, 4000), 30);
    assert_eq!(percent(3999, 4000), 99);
    assert_eq!(percent(5, 4), 100);
    assert_eq!(percent(u64::MAX, u64::MAX), 100);
    assert_eq!(bytes_human(0), "0 B");
    assert_eq!(bytes_human(1023), "1023 B");
    assert_eq!(bytes_human(1024), "1.0 KiB");
    assert_eq!(bytes_human(1_258_291), "1.2 MiB");
    assert_eq!(bytes_human(1024 * 1024 - 1), "1.0 MiB");
    assert_eq!(bytes_human(5 * 1024 * 1024 * 1024), "5.0 GiB");
    assert_eq!(bytes_human(u64::MAX), "16.0 EiB");
    assert_eq!(duration_human(0), "0 s");
    assert_eq!(duration_human(59), "59 s");
    assert_eq!(duration_human(125), "2 min 5 s");
    assert_eq!(duration_human(7800), "2 h 10 min");
}

#[test]
fn human_membership() {
    let reply = MembershipReply {
        epoch: 3,
        members: vec![id("a:1"), id("b:1")],
        joining: vec![id("b:1")],
        leaving: vec![],
        unreached: vec![id("b:1")],
    };
    assert_eq!(
        Outcome::Membership(reply).to_human(),
        "ring change started (epoch 3): adding b:1\n\
         members when it settles: a:1, b:1\n\
         data is moving in the background; 'status' shows the progress\n\
         not reached yet (they learn the ring when they return): b:1"
    );
    let reply = MembershipReply {
        epoch: 4,
        members: vec![id("a:1")],
        joining: vec![],
        leaving: vec![id("b:1")],
        unreached: vec![],
    };
    assert_eq!(
        Outcome::Membership(reply).to_human(),
        "ring change started (epoch 4): removing b:1\n\
         members when it settles: a:1\n\
         data is moving in the background; 'status' shows the progress"
    );
}

#[test]
fn help_for_one_command() {
    assert_eq!(
        help_text(Some("get")),
        "usage: get [-v] [--r N] KEY\n  every current version (sibling) of KEY and their merged \
         context; -v also names the replicas that answered; --r N waits for N answers instead of \
         the ring's R"
    );
    assert_eq!(
        help_text(Some("locate")),
        "usage: locate KEY\n  the key's preference list in order, the nodes a ring change is \
         moving it to, the fallbacks next in line, and each one's state"
    );
    assert!(help_text(None).contains("\n  locate KEY  "));
}

#[test]
fn settled_renders_for_scripts_and_people() {
    assert_eq!(
        Outcome::Settled(9).to_json(),
        r#"{"ok":true,"settled":true,"epoch":9}"#
    );
    assert_eq!(Outcome::Settled(9).to_human(), "ring settled (epoch 9)");
}
