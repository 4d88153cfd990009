//! The backup file's lines: every kind of version round-trips, and a file
//! is refused for a flipped byte, a missing trailer or another version.

use super::*;

fn node(port: u16) -> NodeId {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// An object with a text value, a binary typed value that expires, and a
/// tombstone, under a context that has seen more.
fn object() -> Object {
    let sib = |port, counter, content| Sibling {
        dot: Dot {
            node: node(port),
            counter,
        },
        content,
    };
    let context = VersionVector::parse_context(r#"{"127.0.0.1:1":5,"127.0.0.1:2":1}"#).unwrap();
    Object::from_parts(
        context,
        vec![
            sib(
                1,
                4,
                Content::Value(Value::from("text \"quoted\"\n".to_string())),
            ),
            sib(
                1,
                5,
                Content::Typed {
                    value: Value::from(vec![0u8, 255, 10]),
                    media_type: "application/octet-stream".into(),
                }
                .expiring(1234),
            ),
            sib(2, 1, Content::Tombstone),
        ],
    )
}

#[test]
fn every_kind_of_version_round_trips_through_a_line() {
    let o = object();
    let line = serde_json::to_string(&Record::of("k/1", &o).unwrap()).unwrap();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains(r#""value_hex":"00ff0a""#), "{line}");
    let back: Record = serde_json::from_str(&line).unwrap();
    assert_eq!(back.key, "k/1");
    assert_eq!(back.object().unwrap(), o);
}

#[test]
fn a_line_with_two_contents_or_bad_hex_is_refused() {
    let mut r = Record::of("k", &object()).unwrap();
    r.siblings[0].tombstone = Some(true);
    assert!(r
        .object()
        .unwrap_err()
        .to_string()
        .contains("exactly one of"));
    let mut r = Record::of("k", &object()).unwrap();
    r.siblings[1].value_hex = Some("0g".into());
    assert!(r.object().is_err());
}

/// A file of `n` records written as `backup` writes it.
fn file(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("b.dynamo");
    let mut text = String::new();
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_at_ms: 1,
        node: "127.0.0.1:1".into(),
        prefix: String::new(),
        tombstones: false,
        bucket: None,
    };
    text.push_str(&serde_json::to_string(&header).unwrap());
    text.push('\n');
    for i in 0..n {
        let mut record = Record::of(&format!("k{i}"), &object()).unwrap();
        // Every other key is in a bucket.
        record.bucket = (i % 2 == 1).then(|| "logs".to_string());
        let line = serde_json::to_string(&record);
        text.push_str(&line.unwrap());
        text.push('\n');
    }
    let digest = crate::security::secret::hex(&Sha256::digest(text.as_bytes()));
    let trailer = Trailer {
        end: true,
        keys: n as u64,
        sha256: digest,
    };
    text.push_str(&serde_json::to_string(&trailer).unwrap());
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_whole_file_verifies_and_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), 3);
    let (header, keys, buckets) = verify(&path).unwrap();
    assert_eq!((header.version, keys), (VERSION, 3));
    assert_eq!(buckets.into_iter().collect::<Vec<_>>(), ["logs"]);

    // One flipped byte in a record.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|b| *b == b'k').unwrap() + 200;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let e = verify(&path).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");

    // Cut short: no trailer.
    let path = file(dir.path(), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let cut: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, cut).unwrap();
    assert!(verify(&path).unwrap_err().to_string().contains("cut short"));

    // Another version.
    let path = file(dir.path(), 1);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("\"version\":{VERSION}"), "\"version\":9");
    std::fs::write(&path, text).unwrap();
    assert!(verify(&path).unwrap_err().to_string().contains("version 9"));

    // Not a backup at all.
    std::fs::write(&path, "hello\n").unwrap();
    assert!(verify(&path)
        .unwrap_err()
        .to_string()
        .contains("not a dynamo backup"));
}
