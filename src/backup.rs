//! `client backup FILE` and `client restore FILE`: everything a ring holds,
//! into a file and back.
//!
//! # The file format (version 2)
//!
//! Text, one JSON object per line (UTF-8, `\n` after each line):
//!
//! 1. A header: `{"format":"dynamo-backup","version":2,"created_at_ms":T,
//!    "node":"HOST:PORT","prefix":"","tombstones":false}`, with
//!    `"bucket":NAME` when the backup holds one bucket (`--bucket`). A reader
//!    refuses another `format` and a `version` it does not know; version 1
//!    (before buckets) is read as version 2 without buckets.
//! 2. One line per key, bucket by bucket (`default` first), in key order:
//!    `{"key":K,"context":{NODE:COUNTER,...},"siblings":[S,...]}`, with
//!    `"bucket":NAME` for a key of a bucket other than `default` (the key is
//!    as the user wrote it), each sibling `{"node":NODE,"counter":C, ...}` with
//!    either `"value":TEXT` (the value's bytes when they are UTF-8),
//!    `"value_hex":HEX` (when they are not) or `"tombstone":true`, and
//!    optionally `"media_type":TYPE` (given at an HTTP put) and
//!    `"expires_at":MS` (a TTL's instant, milliseconds since the Unix epoch).
//!    The context and the siblings' dots are the key's causal history: a
//!    restore merges them, so nothing newer is ever replaced.
//! 3. A trailer: `{"end":true,"keys":N,"sha256":HEX}`, where HEX is the
//!    SHA-256 of every byte of the file before the trailer. A file without it,
//!    with another count or another digest is refused before anything is
//!    written to the ring.
//!
//! # What a backup holds
//!
//! Every key's every version, read page by page (`export`) from R replicas of
//! every range and merged, so a key a write quorum acknowledged before the
//! backup began is in it even with one replica of its range down (the
//! argument of [`crate::coordinator::scan`]). Keys written during the backup
//! are in it or not depending on where the pages were. Deleted and expired keys
//! are left out unless `--tombstones` asks for them.
//!
//! # Restoring
//!
//! A restore reads the file twice: once to check the trailer (and that every
//! bucket it names exists in the target ring: a bucket is created there
//! first, with the settings wanted there), then to send
//! the objects, 256 at a time, to a node of the target ring, which merges each
//! into its key's replicas (see [`crate::coordinator::restore`]). A merge never
//! replaces a version the ring has replaced or that is newer, and restoring the
//! same file twice changes nothing. The target ring may have any size.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::coordinator::scan::MAX_SCAN_LIMIT;
use crate::error::{Error, Result};
use crate::rpc::{ExportRequest, ScanRequest};
use crate::types::{Key, NodeId, Value};
use crate::vclock::{Content, Dot, Object, Sibling, VersionVector};

/// The format name in the header.
pub const FORMAT: &str = "dynamo-backup";
/// The format version this build writes; it reads this one and version 1.
pub const VERSION: u32 = 2;
/// Objects a restore sends in one batch.
pub const RESTORE_BATCH: usize = 256;
/// Keys one backup page asks for.
const PAGE_KEYS: u32 = 1000;

/// The first line of a backup file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub created_at_ms: u64,
    pub node: String,
    pub prefix: String,
    pub tombstones: bool,
    /// The one bucket the backup holds (`--bucket`); absent: every bucket.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bucket: Option<String>,
}

/// The last line of a backup file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trailer {
    pub end: bool,
    pub keys: u64,
    pub sha256: String,
}

/// One key's line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The key's bucket; absent for `default`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bucket: Option<String>,
    pub key: Key,
    pub context: serde_json::Value,
    pub siblings: Vec<RecordSibling>,
}

/// One version of a key's line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordSibling {
    pub node: String,
    pub counter: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tombstone: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<u64>,
}

impl Record {
    /// The line of `key` holding `object`.
    pub fn of(key: &str, object: &Object) -> Result<Record> {
        let context = serde_json::from_str(&object.context().to_json())
            .map_err(|e| Error::internal(format!("a context is not JSON: {e}")))?;
        let siblings = object
            .siblings()
            .iter()
            .map(|s| {
                let mut out = RecordSibling {
                    node: s.dot.node.to_string(),
                    counter: s.dot.counter,
                    value: None,
                    value_hex: None,
                    tombstone: None,
                    media_type: s.content.media_type().map(str::to_string),
                    expires_at: s.content.expires_at(),
                };
                match s.content.value() {
                    None => out.tombstone = Some(true),
                    Some(v) => match std::str::from_utf8(v) {
                        Ok(text) => out.value = Some(text.to_string()),
                        Err(_) => out.value_hex = Some(crate::security::secret::hex(v)),
                    },
                }
                out
            })
            .collect();
        Ok(Record {
            bucket: None,
            key: key.to_string(),
            context,
            siblings,
        })
    }

    /// The object this line holds (checked as a peer's copy would be).
    pub fn object(&self) -> Result<Object> {
        crate::types::check_key(&self.key)?;
        let context = VersionVector::parse_context(&self.context.to_string())?;
        let mut siblings = Vec::with_capacity(self.siblings.len());
        for s in &self.siblings {
            let node: NodeId = s.node.parse()?;
            let value = match (&s.value, &s.value_hex, s.tombstone) {
                (Some(text), None, None) => Some(Value::from(text.clone())),
                (None, Some(hex), None) => Some(Value::from(unhex(hex)?)),
                (None, None, Some(true)) => None,
                _ => {
                    return Err(Error::invalid(format!(
                        "key {:?}: a version needs exactly one of value, value_hex and tombstone",
                        self.key
                    )))
                }
            };
            let content = match (value, &s.media_type) {
                (None, _) => Content::Tombstone,
                (Some(v), Some(t)) => Content::Typed {
                    value: v,
                    media_type: t.clone(),
                },
                (Some(v), None) => Content::Value(v),
            };
            let content = match s.expires_at {
                Some(at) => content.expiring(at),
                None => content,
            };
            siblings.push(Sibling {
                dot: Dot {
                    node,
                    counter: s.counter,
                },
                content,
            });
        }
        Ok(Object::from_parts(context, siblings))
    }
}

/// Bytes from lower-case or upper-case hex.
fn unhex(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::invalid("value_hex is not hex");
    if text.len() % 2 != 0 {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// What a backup or restore reports as it goes: keys and bytes so far.
pub trait Progress {
    /// The total expected, when known.
    fn total(&self, keys: u64);
    fn advance(&self, keys: u64, bytes: u64);
}

/// No progress shown (`--json`, or not a terminal).
pub struct Silent;

impl Progress for Silent {
    fn total(&self, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
}

/// A progress bar on the terminal (indicatif): keys, bytes, rate, time left.
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    pub fn new(what: &str) -> Bar {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} keys, {{msg}}, {{per_sec}}, {{eta}} left"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Bar(bar)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn total(&self, keys: u64) {
        self.0.set_length(keys);
    }
    fn advance(&self, keys: u64, bytes: u64) {
        self.0.inc(keys);
        self.0
            .set_message(format!("{}", indicatif::HumanBytes(bytes)));
    }
}

/// What a backup or restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub file: String,
    pub keys: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Summary {
    fn of(path: &Path, keys: u64, bytes: u64, started: Instant) -> Summary {
        Summary {
            ok: true,
            file: path.display().to_string(),
            keys,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Writes everything the ring holds (keys starting with `prefix`; of
/// `bucket` only, when given) to `path`.
pub async fn backup(
    client: &Client,
    path: &Path,
    bucket: Option<&str>,
    prefix: &str,
    tombstones: bool,
    progress: &dyn Progress,
) -> Result<Summary> {
    let started = Instant::now();
    let io = |e: std::io::Error| Error::invalid(format!("cannot write {}: {e}", path.display()));
    // The buckets to read, each with the prefix its keys are stored under.
    let names: Vec<String> = match bucket {
        Some(b) => vec![b.to_string()],
        None => client
            .bucket_list()
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect(),
    };
    let mut buckets: Vec<(Option<String>, String)> = Vec::with_capacity(names.len());
    for name in names {
        match client.bucket_prefix(&name).await? {
            Some(stored) => buckets.push((Some(name), stored)),
            None => buckets.push((None, String::new())),
        }
    }
    // Written next to the target and renamed at the end: a backup that fails
    // halfway never leaves a file that looks whole.
    let partial = path.with_extension("partial");
    let mut w = Lines {
        out: BufWriter::new(File::create(&partial).map_err(io)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    if let Ok(status) = client.status().await {
        let n = status.replication.n.max(1) as u64;
        progress.total(status.nodes.iter().filter_map(|m| m.keys).sum::<u64>() / n);
    }
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_at_ms: crate::runtime::now_ms(),
        node: client.node().to_string(),
        prefix: prefix.to_string(),
        tombstones,
        bucket: bucket.map(str::to_string),
    };
    w.line(&to_json(&header)?, true).map_err(io)?;
    let mut keys = 0u64;
    for (name, stored) in &buckets {
        let mut after: Option<Key> = None;
        loop {
            let page = client
                .export(ExportRequest {
                    scan: ScanRequest {
                        prefix: format!("{stored}{prefix}"),
                        after: after.clone(),
                        limit: PAGE_KEYS.min(MAX_SCAN_LIMIT),
                        consistent: true,
                    },
                    tombstones,
                })
                .await?;
            let before = w.bytes;
            for (key, object) in &page.items {
                let mut record =
                    Record::of(key.strip_prefix(stored.as_str()).unwrap_or(key), object)?;
                record.bucket = name.clone();
                w.line(&to_json(&record)?, true).map_err(io)?;
            }
            keys += page.items.len() as u64;
            progress.advance(page.items.len() as u64, w.bytes - before);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let trailer = Trailer {
        end: true,
        keys,
        sha256: crate::security::secret::hex(&w.hasher.clone().finalize()),
    };
    w.line(&to_json(&trailer)?, false).map_err(io)?;
    let bytes = w.bytes;
    let file = w.out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&partial, path).map_err(io)?;
    Ok(Summary::of(path, keys, bytes, started))
}

/// The lines of a backup being written, the digest of those before the
/// trailer, and the bytes written.
struct Lines {
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Lines {
    fn line(&mut self, text: &str, hash: bool) -> std::io::Result<()> {
        if hash {
            self.hasher.update(text.as_bytes());
            self.hasher.update(b"\n");
        }
        self.bytes += text.len() as u64 + 1;
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

/// Checks `path`'s header and trailer (format, version, key count, SHA-256);
/// returns the header, the number of keys and the buckets its keys are in
/// (`default` left out).
pub fn verify(path: &Path) -> Result<(Header, u64, BTreeSet<String>)> {
    let bad = |why: String| Error::invalid(format!("{}: {why}", path.display()));
    let file = File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut line = Vec::new();
    let mut read = |line: &mut Vec<u8>| {
        line.clear();
        reader
            .read_until(b'\n', line)
            .map_err(|e| bad(format!("cannot read it: {e}")))
    };
    read(&mut line)?;
    let header: Header = serde_json::from_slice(&line)
        .map_err(|_| bad("it is not a dynamo backup (no header)".into()))?;
    if header.format != FORMAT {
        return Err(bad(format!("format {:?} is not {FORMAT:?}", header.format)));
    }
    if !(1..=VERSION).contains(&header.version) {
        return Err(bad(format!(
            "backup format version {} cannot be read by this client (it reads versions 1 to \
             {VERSION})",
            header.version
        )));
    }
    hasher.update(&line);
    let mut records = 0u64;
    let mut buckets = BTreeSet::new();
    loop {
        if read(&mut line)? == 0 {
            return Err(bad(
                "it ends without its trailer: the file is cut short".into()
            ));
        }
        if !line.starts_with(b"{\"end\":") {
            hasher.update(&line);
            records += 1;
            if line.starts_with(b"{\"bucket\":") {
                #[derive(Deserialize)]
                struct InBucket {
                    bucket: Option<String>,
                }
                if let Ok(InBucket { bucket: Some(b) }) = serde_json::from_slice(&line) {
                    buckets.insert(b);
                }
            }
            continue;
        }
        let t: Trailer = serde_json::from_slice(&line)
            .map_err(|e| bad(format!("its trailer does not read: {e}")))?;
        let digest = crate::security::secret::hex(&hasher.finalize());
        if t.sha256 != digest {
            return Err(bad(format!(
                "checksum mismatch (the file says {}, its contents hash to {digest}): \
                 the file is damaged; nothing was restored",
                t.sha256
            )));
        }
        if t.keys != records {
            return Err(bad(format!(
                "the trailer counts {} keys, the file holds {records}",
                t.keys
            )));
        }
        if read(&mut line)? > 0 {
            return Err(bad("bytes follow its trailer".into()));
        }
        return Ok((header, records, buckets));
    }
}

/// Merges the objects of the backup at `path` into the ring `client` talks to.
pub async fn restore(client: &Client, path: &Path, progress: &dyn Progress) -> Result<Summary> {
    let started = Instant::now();
    let (_, total, names) = verify(path)?;
    // Every bucket the file names must exist here before anything is written.
    let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
    for name in names {
        match client.bucket_prefix(&name).await {
            Ok(Some(p)) => {
                prefixes.insert(name, p);
            }
            Ok(None) => {}
            Err(Error::NoSuchBucket { .. }) => {
                return Err(Error::invalid(format!(
                    "{}: it holds keys of bucket {name}, which this ring does not have; create \
                     it first (bucket create {name} ...) and restore again; nothing was restored",
                    path.display()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    progress.total(total);
    let bad = |why: String| Error::invalid(format!("{}: {why}", path.display()));
    let file = File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut lines = BufReader::new(file).lines().skip(1);
    let (mut keys, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<(Key, Object)> = Vec::with_capacity(RESTORE_BATCH);
    let mut batch_bytes = 0u64;
    for _ in 0..total {
        let line = lines
            .next()
            .ok_or_else(|| bad("it changed while it was read".into()))?
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        let record: Record =
            serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", keys + 2)))?;
        batch_bytes += line.len() as u64 + 1;
        let key = match record.bucket.as_ref().and_then(|b| prefixes.get(b)) {
            Some(p) => format!("{p}{}", record.key),
            None => record.key.clone(),
        };
        batch.push((key, record.object()?));
        if batch.len() >= RESTORE_BATCH {
            keys += send(client, &mut batch).await?;
            bytes += batch_bytes;
            progress.advance(RESTORE_BATCH as u64, batch_bytes);
            batch_bytes = 0;
        }
    }
    let last = batch.len() as u64;
    if !batch.is_empty() {
        keys += send(client, &mut batch).await?;
        bytes += batch_bytes;
        progress.advance(last, batch_bytes);
    }
    Ok(Summary::of(path, keys, bytes, started))
}

/// Sends one batch; answers how many keys the ring took.
async fn send(client: &Client, batch: &mut Vec<(Key, Object)>) -> Result<u64> {
    let items = std::mem::take(batch);
    let first = items.first().map(|(k, _)| k.clone()).unwrap_or_default();
    client.restore_batch(items).await.map_err(|e| {
        Error::invalid(format!(
            "restore stopped at the batch starting with key {first:?}: {e}; \
             what was restored stays, and restoring the file again is safe"
        ))
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("cannot encode a line: {e}")))
}

#[cfg(test)]
mod tests;
