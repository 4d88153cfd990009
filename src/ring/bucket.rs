//! Buckets: namespaces of keys with settings of their own.
//!
//! A bucket has its own N/W/R, a storage kind (`disk` or `memory`), an
//! optional quota and an optional default TTL. The buckets are a field of
//! [`RingState`] ([`Buckets`]), so they are created, changed and dropped the
//! way members are: the leader commits the next epoch, and every node learns
//! them with the ring. The bucket `default` is not in the table: it is every
//! key written without a bucket, with the ring's N/W/R, stored as before.
//!
//! # How a bucket's key is stored
//!
//! A key `k` of a bucket with id `i` lives in the ring under the key
//! `"\0" i "\0" k` ([`crate::types::bucket_key`]), and everything below the
//! request path (placement, storage, hints, transfers, anti-entropy, the
//! reaper) works on that key. Its position on the ring is the hash of those
//! bytes, so the same name in two buckets lands in two places. A user's key
//! may not begin with `"\0"`, so the two spaces never meet.
//!
//! The id, not the name, is in the key: ids are never reused, so a bucket
//! dropped and created again under the same name starts empty, however late
//! a node purges what the dropped one left.
//!
//! # N per key
//!
//! [`Ring::n_of`] gives each key the N of its bucket, and every preference
//! list, pending owner and fallback is computed from it, so everything that
//! asks the ring where a key lives (coordinators, clients, handoff, a ring
//! change's transfer and clean-up, the reaper, anti-entropy's key-by-key
//! comparison) follows the bucket's N. A bucket's N is fixed when it is
//! created: changing it would move every key, which is a ring change of its
//! own; create a new bucket and copy instead (as Riak asks for an `n_val`).
//!
//! # Dropping a bucket
//!
//! `bucket drop` removes the bucket from the ring. From the epoch that drops
//! it, every node refuses to store a key of it (a replica write, a hint, a
//! transfer or an exchange carrying one is refused for good), and each node
//! removes the keys it holds of it in the background. Nothing can bring them
//! back: the id is never given again.

use super::*;

/// The name of the bucket of every key written without one.
pub const DEFAULT_BUCKET: &str = "default";
/// The most buckets a ring holds (every node keeps the table in memory and
/// in every ring record).
pub const MAX_BUCKETS: usize = 1024;
/// The longest bucket name, in bytes.
pub const MAX_BUCKET_NAME: usize = 64;

/// Where a bucket keeps its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// On disk, flushed before a write is acknowledged (as `--fsync` says).
    Disk,
    /// Acknowledged without waiting for the disk, and forgotten when a node
    /// restarts: each node drops its copies of such keys when it opens its
    /// store, and refills them from its peers (a full restart loses them).
    Memory,
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageKind::Disk => "disk",
            StorageKind::Memory => "memory",
        })
    }
}

/// One bucket's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The id its keys are stored under; never reused.
    pub id: u32,
    pub n: usize,
    pub w: usize,
    pub r: usize,
    pub storage: StorageKind,
    /// The most bytes its keys may take (one copy of each), if limited.
    pub quota: Option<u64>,
    /// The TTL of a put that gives none, in milliseconds.
    pub ttl_ms: Option<u64>,
}

impl Bucket {
    /// Its N/W/R.
    pub fn replication(&self) -> Replication {
        Replication {
            n: self.n,
            w: self.w,
            r: self.r,
        }
    }
}

/// The buckets of a ring, by name, and the id the next one gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets {
    pub by_name: BTreeMap<String, Bucket>,
    /// Ids below it were given (some perhaps to buckets since dropped).
    pub next_id: u32,
}

impl Buckets {
    /// The bucket with id `id`, if it exists.
    pub fn by_id(&self, id: u32) -> Option<(&str, &Bucket)> {
        self.by_name
            .iter()
            .find(|(_, b)| b.id == id)
            .map(|(n, b)| (n.as_str(), b))
    }

    /// True if `id` was given to a bucket that no longer exists.
    pub fn dropped(&self, id: u32) -> bool {
        id < self.next_id && self.by_id(id).is_none()
    }
}

/// What `bucket create` asks for; unset fields take their defaults
/// ([`BucketSpec::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    pub n: Option<usize>,
    pub w: Option<usize>,
    pub r: Option<usize>,
    pub storage: Option<StorageKind>,
    pub quota: Option<u64>,
    pub ttl_ms: Option<u64>,
}

impl BucketSpec {
    /// Parses `n=3 w=2 r=2 storage=memory quota=100MB ttl=7d` (any order, any subset).
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BucketSpec> {
        let mut spec = BucketSpec::default();
        for word in words {
            let (name, value) = word.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "bad bucket setting {word:?}: write NAME=VALUE, one of n=, w=, r=, \
                     storage=disk|memory, quota=SIZE, ttl=DURATION"
                ))
            })?;
            let count = || {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| {
                        Error::invalid(format!("bad {name}={value}: a whole number from 1"))
                    })
            };
            match name.to_ascii_lowercase().as_str() {
                "n" => spec.n = Some(count()?),
                "w" => spec.w = Some(count()?),
                "r" => spec.r = Some(count()?),
                "storage" => {
                    spec.storage = Some(match value.to_ascii_lowercase().as_str() {
                        "disk" => StorageKind::Disk,
                        "memory" => StorageKind::Memory,
                        _ => {
                            return Err(Error::invalid(format!(
                                "bad storage={value}: disk or memory"
                            )))
                        }
                    })
                }
                "quota" => spec.quota = Some(parse_size(value)?),
                "ttl" => spec.ttl_ms = Some(crate::types::parse_duration(value)?),
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown bucket setting {name:?}: n, w, r, storage, quota or ttl"
                    )))
                }
            }
        }
        Ok(spec)
    }

    /// The settings of a new bucket: N from the spec or the ring's, W and R
    /// from the spec, else the ring's when N is the ring's, else a majority
    /// of N; disk storage; no quota; no TTL. `members` is the smallest
    /// membership the ring has now (during a change, the smaller side), the
    /// most N can be.
    pub fn resolve(&self, ring: Replication, members: usize, id: u32) -> Result<Bucket> {
        let n = self.n.unwrap_or(ring.n.min(members.max(1)));
        if n > members {
            return Err(Error::invalid(format!(
                "n={n} is more than the ring's {members} members"
            )));
        }
        let majority = n / 2 + 1;
        let (w, r) = if self.n.is_none() || n == ring.n {
            (ring.w.min(n), ring.r.min(n))
        } else {
            (majority, majority)
        };
        let bucket = Bucket {
            id,
            n,
            w: self.w.unwrap_or(w),
            r: self.r.unwrap_or(r),
            storage: self.storage.unwrap_or(StorageKind::Disk),
            quota: self.quota,
            ttl_ms: self.ttl_ms,
        };
        check_bucket(&bucket)?;
        Ok(bucket)
    }

    /// `old` with the settings this spec names changed: W, R, quota and TTL
    /// may change; N and the storage kind are fixed at creation.
    pub fn change(&self, old: &Bucket) -> Result<Bucket> {
        if self.n.is_some_and(|n| n != old.n) {
            return Err(Error::invalid(format!(
                "a bucket's n cannot change (it is {}): that would move every key; create a \
                 new bucket and copy the keys",
                old.n
            )));
        }
        if self.storage.is_some_and(|s| s != old.storage) {
            return Err(Error::invalid(format!(
                "a bucket's storage cannot change (it is {})",
                old.storage
            )));
        }
        let bucket = Bucket {
            w: self.w.unwrap_or(old.w),
            r: self.r.unwrap_or(old.r),
            quota: self.quota.or(old.quota),
            ttl_ms: self.ttl_ms.or(old.ttl_ms),
            ..old.clone()
        };
        check_bucket(&bucket)?;
        Ok(bucket)
    }
}

/// Checks `1 <= W, R <= N` and the TTL's bound.
fn check_bucket(b: &Bucket) -> Result<()> {
    if b.w == 0 || b.w > b.n {
        return Err(Error::invalid(format!(
            "w={} is out of range: 1 to n ({})",
            b.w, b.n
        )));
    }
    if b.r == 0 || b.r > b.n {
        return Err(Error::invalid(format!(
            "r={} is out of range: 1 to n ({})",
            b.r, b.n
        )));
    }
    if b.ttl_ms.is_some_and(|t| t > crate::types::MAX_TTL_MS) {
        return Err(Error::invalid("ttl is above the limit of 10 years"));
    }
    Ok(())
}

/// Checks a bucket name: 1 to [`MAX_BUCKET_NAME`] bytes of letters, digits,
/// `-`, `_` and `.`.
pub fn check_bucket_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_BUCKET_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::invalid(format!(
            "bad bucket name {name:?}: 1 to {MAX_BUCKET_NAME} letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

/// A size as people write it: `100MB`, `64KiB`, `2G`, `512` (bytes). Decimal
/// units are powers of 1000, `Ki`/`Mi`/`Gi`/`Ti` of 1024; the `B` is optional.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("bad size {text:?}: e.g. 512KB, 100MB, 2GiB"));
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(bad()),
    }
}

impl RingState {
    /// The next epoch with `buckets` as its bucket table.
    pub fn with_buckets(&self, buckets: Buckets) -> Result<RingState> {
        if buckets.by_name.len() > MAX_BUCKETS {
            return Err(Error::invalid(format!(
                "a ring holds at most {MAX_BUCKETS} buckets"
            )));
        }
        let mut next = self.next_epoch()?;
        next.buckets = buckets;
        next.validate()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Replication {
        Replication { n: 3, w: 2, r: 2 }
    }

    #[test]
    fn specs_parse_and_resolve() {
        let spec = BucketSpec::parse(["n=5", "storage=memory", "quota=100MB", "ttl=7d"]).unwrap();
        let b = spec.resolve(ring(), 5, 1).unwrap();
        assert_eq!((b.n, b.w, b.r), (5, 3, 3), "a majority of N by default");
        assert_eq!(b.storage, StorageKind::Memory);
        assert_eq!(b.quota, Some(100_000_000));
        assert_eq!(b.ttl_ms, Some(7 * 86_400_000));
        let b = BucketSpec::parse([])
            .unwrap()
            .resolve(ring(), 5, 2)
            .unwrap();
        assert_eq!(
            b.replication(),
            ring(),
            "the ring's N/W/R when none is given"
        );
        let b = BucketSpec::parse(["n=1"])
            .unwrap()
            .resolve(ring(), 5, 3)
            .unwrap();
        assert_eq!((b.n, b.w, b.r), (1, 1, 1));
        let e = BucketSpec::parse(["n=6"])
            .unwrap()
            .resolve(ring(), 5, 4)
            .unwrap_err();
        assert!(
            e.to_string().contains("more than the ring's 5 members"),
            "{e}"
        );
        let e = BucketSpec::parse(["n=2", "w=3"])
            .unwrap()
            .resolve(ring(), 5, 4)
            .unwrap_err();
        assert!(e.to_string().contains("w=3 is out of range"), "{e}");
        for bad in [
            "n",
            "n=0",
            "x=1",
            "storage=tape",
            "quota=5XB",
            "ttl=-1",
            "quota=0",
        ] {
            assert!(BucketSpec::parse([bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_change_keeps_n_and_storage() {
        let old = BucketSpec::parse(["n=3"])
            .unwrap()
            .resolve(ring(), 5, 1)
            .unwrap();
        let new = BucketSpec::parse(["w=3", "quota=1KiB"])
            .unwrap()
            .change(&old)
            .unwrap();
        assert_eq!(
            (new.id, new.n, new.w, new.r, new.quota),
            (1, 3, 3, 2, Some(1024))
        );
        assert!(BucketSpec::parse(["n=5"]).unwrap().change(&old).is_err());
        assert!(BucketSpec::parse(["storage=memory"])
            .unwrap()
            .change(&old)
            .is_err());
    }

    #[test]
    fn names_and_sizes() {
        for good in ["a", "logs-2026", "x.y_z"] {
            check_bucket_name(good).unwrap();
        }
        for bad in ["", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(check_bucket_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("2g").unwrap(), 2_000_000_000);
        assert!(parse_size("99999999999TB").is_err());
    }

    /// Five members (ring N = 3) with buckets `one` (id 0, N = 1) and `all`
    /// (id 1, N = 5).
    fn five_with_buckets() -> RingState {
        let nodes: Vec<NodeId> = (0..5)
            .map(|i| NodeId::new("127.0.0.1", 13337 + i).unwrap())
            .collect();
        let mut state = RingState::bootstrap(nodes[0].clone(), ring());
        state.members = nodes;
        for (name, n) in [("one", "n=1"), ("all", "n=5")] {
            let b = BucketSpec::parse([n])
                .unwrap()
                .resolve(ring(), 5, state.buckets.next_id)
                .unwrap();
            state.buckets.next_id += 1;
            state.buckets.by_name.insert(name.into(), b);
        }
        state.validate().unwrap();
        state
    }

    #[test]
    fn every_placement_takes_n_from_the_keys_bucket() {
        use crate::types::bucket_key;
        let state = five_with_buckets();
        let ring = Ring::new(state.clone());
        assert_eq!(ring.max_n(), 5);
        for i in 0..200 {
            let k = format!("k{i}");
            for (key, n) in [
                (k.clone(), 3),
                (bucket_key(0, &k), 1),
                (bucket_key(1, &k), 5),
            ] {
                let p = ring.placement(key.as_bytes());
                assert_eq!(ring.preference_list(key.as_bytes()).len(), n, "{key:?}");
                assert_eq!(p.replicas.len(), n, "{key:?}");
                assert_eq!(p.fallbacks.len(), 5 - n, "{key:?}");
                assert_eq!(ring.replication_of(key.as_bytes()).n, n);
            }
        }
        // Every member shares keys with every other (the N = 5 bucket).
        let me = &state.members[0];
        assert_eq!(ring.neighbours(me).len(), 4);
        assert!((ring.share_n(me, 5) - 1.0).abs() < 1e-9);
        // A sixth member: each key's owners after the change follow its N.
        let next = state
            .begin_add(NodeId::new("127.0.0.1", 13400).unwrap(), None, 0)
            .unwrap();
        let moving = Ring::new(next);
        for i in 0..200 {
            let k = format!("k{i}");
            for (key, n) in [(bucket_key(0, &k), 1), (bucket_key(1, &k), 5)] {
                assert_eq!(moving.owners_after(key.as_bytes()).len(), n);
                assert!(moving.pending_owners(key.as_bytes()).len() <= 1);
            }
        }
        // Keys of buckets the ring does not have.
        assert!(ring.bucket_of_key(&bucket_key(0, "x")).unwrap().is_some());
        assert!(ring.bucket_of_key("x").unwrap().is_none());
        let e = ring.bucket_of_key(&bucket_key(7, "x")).unwrap_err();
        assert!(matches!(e, Error::NoSuchBucket { .. }), "{e}");
        assert_eq!(ring.n_of(bucket_key(7, "x").as_bytes()), 3);
        assert!(matches!(
            ring.address("nosuch", "k"),
            Err(Error::NoSuchBucket { .. })
        ));
        assert_eq!(ring.address("one", "k").unwrap(), bucket_key(0, "k"));
        assert!(
            ring.address("default", "\0x").is_err(),
            "a user key may not start with NUL"
        );
    }

    #[test]
    fn bucket_keys_split_back() {
        use crate::types::{bucket_key, split_bucket_key, user_key};
        let k = bucket_key(7, "a/b");
        assert_eq!(split_bucket_key(&k), Some((7, "a/b")));
        assert_eq!(user_key(&k), "a/b");
        assert_eq!(split_bucket_key("plain"), None);
        assert_eq!(split_bucket_key("\0x\0k"), None);
        assert_eq!(user_key("plain"), "plain");
    }
}
