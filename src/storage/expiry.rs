//! Keys that die by expiry, and when.
//!
//! A version written with a TTL carries its expiry ([`Content::Expiring`]).
//! Once every version of a key is a tombstone or has expired, the key is dead
//! like a deleted one, and the tombstone reaper removes it the same way, on
//! the same proof ([`crate::antientropy::reaper`]). The reaper finds deleted
//! keys in the grave set, which writes keep up to date; a key that dies by
//! expiry becomes one without any write, so the store keeps, beside the graves,
//! the instants at which keys will die (`expiring`, built by the walk at open
//! and added to by every write of such a key), and [`Storage::promote_expired`]
//! moves the keys whose instant has passed into the graves before the reaper
//! walks them. An entry may be stale (the key was written again without a TTL):
//! the reaper's own check reads the record and skips a key that is not dead,
//! and [`Storage::grave_digest`] takes it out of the graves then.

use super::*;

impl Storage {
    /// Notes that the key stored at `stored` dies at `at` (ms since the Unix epoch).
    pub(super) fn note_expiry(&self, at: u64, stored: &[u8]) {
        self.expiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((at, stored.to_vec()));
    }

    /// Moves every key whose death instant is at or before `now` into the
    /// graves; returns how many. Called by the reaper before it walks them.
    pub fn promote_expired(&self, now: u64) -> usize {
        let due: Vec<(u64, Vec<u8>)> = {
            let mut expiring = self.expiring.lock().unwrap_or_else(|p| p.into_inner());
            let later = expiring.split_off(&(now.saturating_add(1), Vec::new()));
            std::mem::replace(&mut *expiring, later)
                .into_iter()
                .collect()
        };
        for (_, stored) in &due {
            self.graves(stored).insert(stored.clone());
        }
        due.len()
    }

    /// Keys waiting for their death instant (for tests and `status`).
    pub fn expiring_count(&self) -> usize {
        self.expiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_died_by_expiry_joins_the_graves_and_is_reaped() {
        let s = Storage::open(None, FsyncMode::Never).unwrap();
        let me: NodeId = "127.0.0.1:1".parse().unwrap();
        let content = Content::Value(crate::types::Value::from("v".to_string())).expiring(1_000);
        s.coordinate("k", &me, &VersionVector::new(), content, None)
            .unwrap();
        assert_eq!(s.expiring_count(), 1);
        assert_eq!(s.promote_expired(999), 0, "not due yet");
        assert_eq!(
            s.grave_digest("k", 999).unwrap(),
            None,
            "alive before its instant"
        );
        assert_eq!(s.promote_expired(1_000), 1);
        assert_eq!(s.tombstone_keys(None, 10), ["k"]);
        let digest = s
            .grave_digest("k", 1_000)
            .unwrap()
            .expect("dead at its instant");
        assert!(s.reap(&me, "k", digest).unwrap());
        assert_eq!(s.key_count(), 0);
        assert_eq!(
            s.tombstone_count(),
            0,
            "an expired key was never counted as a tombstone"
        );
        assert!(s.tombstone_keys(None, 10).is_empty());
        // A key written again without a TTL leaves the graves at its next check.
        let content = Content::Value(crate::types::Value::from("v".to_string())).expiring(5);
        s.coordinate("j", &me, &VersionVector::new(), content, None)
            .unwrap();
        let seen = s.get("j").unwrap().context().clone();
        s.coordinate(
            "j",
            &me,
            &seen,
            Content::Value(crate::types::Value::from("w".to_string())),
            None,
        )
        .unwrap();
        s.promote_expired(10);
        assert_eq!(s.tombstone_keys(None, 10), ["j"]);
        assert_eq!(s.grave_digest("j", 10).unwrap(), None);
        assert!(s.tombstone_keys(None, 10).is_empty());
    }
}
