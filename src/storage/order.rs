//! The keys of this node's replica in key order, for `scan`.
//!
//! The `objects` tree is ordered by segment (a hash), which is what anti-entropy
//! and ring changes want and what a listing does not: a scan in key order over it
//! would have to merge 65,536 segment ranges. So the store keeps a second tree,
//! `key_order`, holding each stored key's bytes (and nothing else) in key order.
//!
//! # Invariant
//!
//! Every key of `objects` has an entry in `key_order`. The converse may fail
//! for a moment: an entry whose record is gone (a crash between removing the
//! record and its entry) is skipped by [`Storage::list`], which reads each
//! record anyway. The entry is written only when a record is created (a write
//! to a key this node already holds costs nothing more) and removed after the
//! record goes. A crash between the record's insert and its entry's would break
//! the invariant, so the walk at open, which reads every record already,
//! re-adds any entry that is missing ([`Storage::open`]); the invariant holds
//! again before the node serves anything.

use std::ops::Bound;

use super::*;

/// One page of [`Storage::list`].
#[derive(Debug, Default)]
pub struct Listing {
    /// The kept keys with their objects, in key order.
    pub items: Vec<(Key, Object)>,
    /// Set when the walk stopped before the end of the range (the page was
    /// full or the budget was spent): the last key it examined. Every key of
    /// the range up to it was examined; none after it was.
    pub resume: Option<Key>,
}

impl Storage {
    /// Records `key` in the key-order tree (called when its record is created).
    pub(super) fn order_insert(&self, key: &str) -> Result<()> {
        self.order.insert(key.as_bytes(), &[])?;
        Ok(())
    }

    /// Removes `key` from the key-order tree (called after its record went).
    pub(super) fn order_remove(&self, key: &str) -> Result<()> {
        self.order.remove(key.as_bytes())?;
        Ok(())
    }

    /// Up to `limit` keys of this node's replica that start with `prefix`,
    /// come after `after` (strictly) and for which `keep` is true, in key
    /// order, with their objects; `graves` says whether keys whose every
    /// version is a tombstone are kept too. At most `budget` keys are examined
    /// (kept or not), so a page over mostly deleted or foreign keys still
    /// answers in bounded time; [`Listing::resume`] says where it stopped.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        budget: usize,
        graves: bool,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Listing> {
        let from: Bound<&[u8]> = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        // A listing of the default bucket starts past every other bucket's
        // keys, which begin with NUL and sort first.
        let from = match from {
            Bound::Included(b) | Bound::Excluded(b)
                if b < b"\x01".as_slice() && !prefix.starts_with('\0') =>
            {
                Bound::Included(b"\x01".as_slice())
            }
            other => other,
        };
        let mut out = Listing::default();
        let entries = self.order.range::<&[u8], _>((from, Bound::Unbounded));
        for (examined, entry) in entries.enumerate() {
            let (k, _) = entry?;
            if !k.starts_with(prefix.as_bytes()) {
                out.resume = None; // past the prefix: the range is done
                return Ok(out);
            }
            if examined >= budget.max(1) || out.items.len() >= limit {
                return Ok(out);
            }
            // Not UTF-8 cannot happen (keys are strings); skip it if the disk says otherwise.
            let Ok(key) = std::str::from_utf8(&k) else {
                continue;
            };
            out.resume = Some(key.to_string());
            if !keep(key) {
                continue;
            }
            let Some(raw) = self.values.get(stored_key(key))? else {
                continue; // an entry whose record went (see the module essay)
            };
            let object = match decode::<Object>(&raw, "objects") {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(%key, error = %e, "a listed key's record does not decode; left out");
                    continue;
                }
            };
            if !graves && object.is_deleted() {
                continue;
            }
            out.items.push((key.to_string(), object));
        }
        // The walk reached the end of the tree: nothing is left to resume.
        out.resume = None;
        Ok(out)
    }

    /// Adds the key-order entry of every record that lacks one (the walk at
    /// open calls it per record; see the module essay). Returns true if it
    /// added one.
    pub(super) fn order_repair(order: &sled::Tree, key: &[u8]) -> Result<bool> {
        if order.contains_key(key)? {
            return Ok(false);
        }
        order.insert(key, &[])?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FsyncMode;
    use crate::types::Value;

    fn me() -> NodeId {
        "127.0.0.1:1".parse().unwrap()
    }

    fn put(s: &Storage, key: &str) {
        let content = Content::Value(Value::from(key.to_string()));
        s.coordinate(key, &me(), &VersionVector::new(), content, None)
            .unwrap();
    }

    fn keys(l: &Listing) -> Vec<&str> {
        l.items.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn keys_come_in_key_order_by_prefix_after_and_limit() {
        let s = Storage::open(None, FsyncMode::Never).unwrap();
        for k in ["b", "a/2", "a/1", "c", "a/10", "ab"] {
            put(&s, k);
        }
        let all = s.list("", None, 100, 1000, false, |_| true).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/10", "a/2", "ab", "b", "c"]);
        assert_eq!(all.resume, None);
        let a = s.list("a/", None, 100, 1000, false, |_| true).unwrap();
        assert_eq!(keys(&a), ["a/1", "a/10", "a/2"]);
        assert_eq!(a.resume, None, "the prefix ended");
        let page = s.list("", Some("a/10"), 2, 1000, false, |_| true).unwrap();
        assert_eq!(keys(&page), ["a/2", "ab"]);
        assert_eq!(page.resume.as_deref(), Some("ab"));
        // `after` before the prefix starts at the prefix.
        let b = s.list("b", Some("a"), 10, 1000, false, |_| true).unwrap();
        assert_eq!(keys(&b), ["b"]);
        // The filter decides, and the budget bounds what is examined.
        let odd = s.list("", None, 100, 1000, false, |k| k != "ab").unwrap();
        assert_eq!(keys(&odd), ["a/1", "a/10", "a/2", "b", "c"]);
        let short = s.list("", None, 100, 2, false, |_| true).unwrap();
        assert_eq!(keys(&short), ["a/1", "a/10"]);
        assert_eq!(short.resume.as_deref(), Some("a/10"));
    }

    #[test]
    fn deleted_keys_are_listed_only_when_asked_and_removed_keys_never() {
        let s = Storage::open(None, FsyncMode::Never).unwrap();
        put(&s, "live");
        put(&s, "gone");
        let seen = s.get("gone").unwrap().context().clone();
        s.coordinate("gone", &me(), &seen, Content::Tombstone, None)
            .unwrap();
        assert_eq!(
            keys(&s.list("", None, 10, 100, false, |_| true).unwrap()),
            ["live"]
        );
        assert_eq!(
            keys(&s.list("", None, 10, 100, true, |_| true).unwrap()),
            ["gone", "live"]
        );
        let digest = s.grave_digest("gone", 0).unwrap().unwrap();
        assert!(s.reap(&me(), "gone", digest).unwrap());
        assert_eq!(
            keys(&s.list("", None, 10, 100, true, |_| true).unwrap()),
            ["live"]
        );
        assert!(
            !s.order.contains_key(b"gone").unwrap(),
            "its entry went with it"
        );
    }

    #[test]
    fn a_missing_entry_is_added_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(Some(dir.path()), FsyncMode::Always).unwrap();
            put(&s, "k1");
            put(&s, "k2");
            // As a crash between the record's insert and its entry's leaves it.
            s.order.remove(b"k2").unwrap();
            s.flush().unwrap();
            assert_eq!(
                keys(&s.list("", None, 10, 100, false, |_| true).unwrap()),
                ["k1"]
            );
        }
        let s = loop {
            // sled's flusher may still hold the directory's lock for a moment.
            match Storage::open(Some(dir.path()), FsyncMode::Always) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        assert_eq!(
            keys(&s.list("", None, 10, 100, false, |_| true).unwrap()),
            ["k1", "k2"]
        );
    }
}
