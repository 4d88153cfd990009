//! Hints: writes this node keeps for a replica it stood in for, under
//! `(u16 key length, key, target)`, merged into reads of the key and handed
//! off by [`crate::handoff`]; a record that does not decode is set aside in
//! `quarantine`.

use super::*;

impl Storage {
    /// Merges every hint this node keeps for `key` into `obj` (nothing to do, and
    /// no tree walk, while no hint is pending).
    pub(super) fn merge_hints_for(&self, key: &str, obj: &mut Object) -> Result<()> {
        if self.hint_count() == 0 {
            return Ok(());
        }
        for item in self.hints.scan_prefix(hint_prefix(key)?) {
            let (_, raw) = item?;
            // A record that does not decode is skipped here and set aside by the
            // next handoff round (`hints`): one rotten hint must not fail reads.
            if let Ok(hint) = decode::<Object>(&raw, "hints") {
                obj.merge(&hint);
            }
        }
        Ok(())
    }

    /// The hint stored under `hkey`, or an empty object; a record that does not
    /// decode is set aside first (a new write must not be refused because an old
    /// record rotted).
    pub(super) fn hint_or_new(&self, hkey: &[u8]) -> Result<Object> {
        match self.hints.get(hkey)? {
            Some(raw) => match decode(&raw, "hints") {
                Ok(obj) => Ok(obj),
                Err(_) => {
                    self.set_aside(hkey, &raw)?;
                    Ok(Object::new())
                }
            },
            None => Ok(Object::new()),
        }
    }

    /// Moves a hint record that does not decode into the `quarantine` tree.
    pub(super) fn set_aside(&self, hkey: &[u8], raw: &[u8]) -> Result<()> {
        self.quarantine.insert(hkey, raw)?;
        if self
            .hints
            .compare_and_swap(hkey, Some(raw), None as Option<&[u8]>)?
            .is_ok()
        {
            self.hint_records.fetch_sub(1, Ordering::Relaxed);
            if let Ok((_, target)) = split_hint_key(hkey) {
                self.count_hint(&target, false);
            }
        }
        Ok(())
    }

    pub(super) fn insert_hint(&self, target: &NodeId, hkey: Vec<u8>, obj: &Object) -> Result<()> {
        if self.hints.insert(hkey, encode(obj)?)?.is_none() {
            self.hint_records.fetch_add(1, Ordering::Relaxed);
            self.count_hint(target, true);
        }
        Ok(())
    }

    /// Counts a hint for `target` in (`added`) or out.
    pub(super) fn count_hint(&self, target: &NodeId, added: bool) {
        let mut t = self.hint_targets.lock().unwrap_or_else(|p| p.into_inner());
        if added {
            *t.entry(target.clone()).or_default() += 1;
        } else if let Some(n) = t.get_mut(target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(target);
            }
        }
    }

    /// Pending hints per target (targets with none left out).
    pub fn hints_by_target(&self) -> std::collections::BTreeMap<NodeId, u64> {
        self.hint_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True if this node keeps a hint for `key` (for any target).
    pub fn has_hint_for(&self, key: &str) -> Result<bool> {
        if self.hint_count() == 0 {
            return Ok(false);
        }
        Ok(self.hints.scan_prefix(hint_prefix(key)?).next().is_some())
    }

    /// Merges a write held for `target` (hinted handoff).
    pub fn merge_hint(&self, target: &NodeId, key: &str, incoming: &Object) -> Result<()> {
        if self.is_dropped(key) {
            return Ok(()); // a dropped bucket's key is never stored again
        }
        let _g = self.stripe(key);
        let hkey = hint_key(key, target)?;
        let mut obj = self.hint_or_new(&hkey)?;
        obj.merge(incoming);
        self.insert_hint(target, hkey, &obj)
    }

    /// Every pending hint, in key order. A record that does not decode (its key or
    /// its object) is moved to the `quarantine` tree and described in `corrupt`
    /// for the caller to log, once: the other hints are delivered as usual.
    pub fn hints(&self) -> Result<HintScan> {
        let mut out = HintScan::default();
        for item in self.hints.iter() {
            let (k, raw) = item?;
            let decoded = split_hint_key(&k).and_then(|(key, target)| {
                let object = decode::<Object>(&raw, "hints")?;
                Ok((key, target, object))
            });
            match decoded {
                Ok((key, target, object)) => out.hints.push(Hint {
                    target,
                    key,
                    object: Arc::new(object),
                    raw,
                }),
                Err(e) => {
                    self.set_aside(&k, &raw)?;
                    out.corrupt.push(format!(
                        "hint record {:?}: {e}; moved to the quarantine tree",
                        String::from_utf8_lossy(&k)
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Deletes a delivered hint unless it changed since it was read (a newer write
    /// merged into it must still be delivered). Returns true if deleted.
    pub fn remove_hint(&self, hint: &Hint) -> Result<bool> {
        let hkey = hint_key(&hint.key, &hint.target)?;
        let swapped = self
            .hints
            .compare_and_swap(hkey, Some(&hint.raw), None as Option<&[u8]>)?;
        if swapped.is_ok() {
            self.hint_records.fetch_sub(1, Ordering::Relaxed);
            self.count_hint(&hint.target, false);
        }
        Ok(swapped.is_ok())
    }
}

/// What [`Storage::hints`] found.
#[derive(Debug, Default)]
pub struct HintScan {
    /// The hints that decoded, in key order.
    pub hints: Vec<Hint>,
    /// Records that did not, described for the log (already set aside).
    pub corrupt: Vec<String>,
}

pub(super) fn hint_prefix(key: &str) -> Result<Vec<u8>> {
    let len = u16::try_from(key.len())
        .map_err(|_| Error::invalid(format!("key of {} bytes cannot be hinted", key.len())))?;
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    Ok(out)
}

pub(super) fn hint_key(key: &str, target: &NodeId) -> Result<Vec<u8>> {
    let mut out = hint_prefix(key)?;
    out.extend_from_slice(target.as_str().as_bytes());
    Ok(out)
}

pub(super) fn split_hint_key(raw: &[u8]) -> Result<(Key, NodeId)> {
    let bad = || Error::storage("corrupt hint key");
    let (len, rest) = raw.split_first_chunk::<2>().ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (key, target) = (
        rest.get(..len).ok_or_else(bad)?,
        rest.get(len..).ok_or_else(bad)?,
    );
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    let target = std::str::from_utf8(target)
        .map_err(|_| bad())?
        .parse()
        .map_err(|_| bad())?;
    Ok((key, target))
}
