//! Scans of a node's own replica in stored order (segment, then key), a page
//! at a time, resumed from the raw stored key of the last record read (a key
//! that is not UTF-8 is reported, never rebuilt from lossy text).

use super::*;

impl Storage {
    /// Up to `limit` keys of this node's own replica after `after` (from the start
    /// when `None`; the `last` of the previous page), in stored order, with their
    /// objects. A record that does not decode is returned in `corrupt` instead
    /// (the caller logs it), never silently lost.
    pub fn scan(&self, after: Option<&ScanCursor>, limit: usize) -> Result<Scan> {
        let raw = self.scan_raw(after, limit, |_| Some(()))?;
        let mut out = Scan {
            items: Vec::with_capacity(raw.items.len()),
            corrupt: raw.corrupt,
            last: raw.last,
            more: raw.more,
        };
        for (key, bytes, ()) in raw.items {
            match Stored::decode(key, bytes) {
                Ok(stored) => out.items.push(stored),
                Err(e) => out.corrupt.push(e.to_string()),
            }
        }
        Ok(out)
    }

    /// Up to `limit` keys of this node's own replica after `after`, in stored
    /// order: the stored bytes, undecoded (a transfer decodes only what it
    /// sends), of the keys for which `keep` returns something, with what it
    /// returned. Keys that are not UTF-8 go to `corrupt`; the scan moves past
    /// them all the same (its cursor is the raw stored key).
    pub fn scan_raw<T>(
        &self,
        after: Option<&ScanCursor>,
        limit: usize,
        mut keep: impl FnMut(&str) -> Option<T>,
    ) -> Result<RawScan<T>> {
        let range = match after {
            Some(at) => self.values.range::<&[u8], _>((
                std::ops::Bound::Excluded(at.0.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => self.values.iter(),
        };
        let mut out = RawScan {
            items: Vec::new(),
            corrupt: Vec::new(),
            last: None,
            more: false,
        };
        for (read, item) in range.enumerate() {
            if read >= limit {
                out.more = true;
                break;
            }
            let (stored, raw) = item?;
            let k = split_stored_key(&stored).map_or(&stored[..], |(_, k)| k);
            match std::str::from_utf8(k) {
                Ok(key) => {
                    if let Some(kept) = keep(key) {
                        out.items.push((key.to_string(), raw, kept));
                    }
                }
                Err(_) => out
                    .corrupt
                    .push(format!("key {:?} is not UTF-8", String::from_utf8_lossy(k))),
            }
            out.last = Some(ScanCursor(stored.to_vec()));
        }
        Ok(out)
    }
}

/// A position in a scan of this node's replica: the raw stored key (segment,
/// then the key's bytes) of the last record read, exact whether or not the key
/// is UTF-8, so paging never skips a record or reads one twice.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanCursor(pub(super) Vec<u8>);

impl ScanCursor {
    /// The position of `key`: a scan after it starts with the next key.
    pub fn at(key: &str) -> ScanCursor {
        ScanCursor(stored_key(key))
    }

    /// True if `key` is at or before this position in stored order.
    pub fn covers(&self, key: &str) -> bool {
        let seg = segment_of(key).to_be_bytes();
        seg.iter().chain(key.as_bytes()).cmp(self.0.iter()) != std::cmp::Ordering::Greater
    }
}

impl std::fmt::Debug for ScanCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanCursor({:?})", self.to_string())
    }
}

/// The key at the position, for people (lossy when it is not UTF-8).
impl std::fmt::Display for ScanCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = split_stored_key(&self.0).map_or(&self.0[..], |(_, k)| k);
        write!(f, "{}", String::from_utf8_lossy(k))
    }
}

/// One page of [`Storage::scan_raw`].
#[derive(Debug)]
pub struct RawScan<T> {
    /// The kept keys with their stored bytes and what `keep` returned, in key order.
    pub items: Vec<(Key, sled::IVec, T)>,
    /// Keys that are not UTF-8, described for the log.
    pub corrupt: Vec<String>,
    /// Where the next page starts: just after the last record read.
    pub last: Option<ScanCursor>,
    /// True if the scan stopped at `limit` (more keys follow).
    pub more: bool,
}

/// One page of [`Storage::scan`].
#[derive(Debug, Default)]
pub struct Scan {
    /// The keys that decoded, in key order.
    pub items: Vec<Stored>,
    /// Records that did not decode, described for the log.
    pub corrupt: Vec<String>,
    /// Where the next page starts: just after the last record read (decoded
    /// or not).
    pub last: Option<ScanCursor>,
    /// True if the scan stopped at `limit` (more keys follow).
    pub more: bool,
}

/// One stored key as a scan returns it.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The key.
    pub key: Key,
    /// Its object (shared: a transfer sends it as is).
    pub object: Arc<Object>,
    /// The stored bytes, so a later drop can check nothing changed.
    pub raw: sled::IVec,
}

impl Stored {
    /// Decodes a record read by [`Storage::scan_raw`].
    pub fn decode(key: Key, raw: sled::IVec) -> Result<Stored> {
        match decode::<Object>(&raw, "objects") {
            Ok(object) => Ok(Stored {
                key,
                object: Arc::new(object),
                raw,
            }),
            Err(e) => Err(Error::storage(format!("key {key:?}: {e}"))),
        }
    }
}
