//! The checker: judges a recorded history of client operations against the
//! values every key reads as once the ring has healed and converged. Pure, so
//! its own tests below feed it histories that break each rule.
//!
//! Every write writes a value no other write writes, so a value names the
//! write that made it. A write's `saw` is what the read before it returned:
//! the write's context covers exactly those values (a blind put saw nothing).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A write of `value` (None: a delete) made with the context of a read
    /// that returned `saw`.
    Write {
        value: Option<String>,
        saw: Vec<String>,
    },
    Read,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Acknowledged (a read: with the values it returned).
    Ok(Vec<String>),
    /// A write whose outcome is unknown: it may or may not have applied.
    Unknown(String),
    /// Surely not applied (the read before a write failed).
    NotSent(String),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub node: String,
    pub kind: Kind,
    /// None while in flight.
    pub outcome: Option<Outcome>,
}

impl Op {
    fn acked(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Ok(_)))
    }

    /// A write that may have applied (acknowledged or unknown).
    fn may_have_applied(&self) -> bool {
        matches!(self.kind, Kind::Write { .. })
            && matches!(
                self.outcome,
                Some(Outcome::Ok(_)) | Some(Outcome::Unknown(_))
            )
    }

    fn saw(&self, v: &str) -> bool {
        matches!(&self.kind, Kind::Write { saw, .. } if saw.iter().any(|s| s == v))
    }
}

/// Every rule the history breaks, given what each key reads as at the end.
///
/// - An acknowledged write's value is read back, unless a write of the key
///   that may have applied saw it (it superseded it).
/// - A value an acknowledged write (or delete) saw is never read back.
/// - Every value read (during the run or at the end) was written to that
///   key, and no value read back beside another was seen by that other's
///   write (siblings are concurrent writes, so they never outnumber them).
pub fn violations(ops: &[Op], finals: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let written: BTreeMap<&str, &Op> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            Kind::Write { value: Some(v), .. } => Some((v.as_str(), op)),
            _ => None,
        })
        .collect();
    let superseded_maybe = |key: &str, v: &str| {
        ops.iter()
            .any(|o| o.key == key && o.may_have_applied() && o.saw(v))
    };
    let superseded_surely = |key: &str, v: &str| {
        ops.iter()
            .enumerate()
            .find(|(_, o)| o.key == key && o.acked() && o.saw(v))
            .map(|(i, _)| i)
    };
    let was_written_to = |key: &str, v: &str| written.get(v).is_some_and(|w| w.key == key);
    let empty = Vec::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let finals = finals.get(&op.key).unwrap_or(&empty);
        match (&op.kind, &op.outcome) {
            (Kind::Write { value: Some(v), .. }, Some(Outcome::Ok(_)))
                if !finals.contains(v) && !superseded_maybe(&op.key, v) =>
            {
                errors.push(format!(
                    "acknowledged op {i} (write {v} to {} via {}) is lost: {} reads {finals:?}",
                    op.key, op.node, op.key
                ));
            }
            (Kind::Read, Some(Outcome::Ok(values))) => {
                for v in values.iter().filter(|v| !was_written_to(&op.key, v)) {
                    errors.push(format!(
                        "op {i} read {v} from {}, never written there",
                        op.key
                    ));
                }
            }
            _ => {}
        }
    }
    for (key, values) in finals {
        for v in values {
            if !was_written_to(key, v) {
                errors.push(format!("{key} reads {v} at the end, never written there"));
            }
            if let Some(j) = superseded_surely(key, v) {
                errors.push(format!(
                    "{key} reads {v} again, though acknowledged op {j} saw and superseded it"
                ));
            }
            for other in values.iter().filter(|o| *o != v) {
                if written.get(other.as_str()).is_some_and(|w| w.saw(v)) {
                    errors.push(format!(
                        "{key} reads {v} beside {other}, whose write saw {v}: not concurrent"
                    ));
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: &str, saw: &[&str], outcome: Outcome) -> Op {
        Op {
            key: key.into(),
            node: "n1".into(),
            kind: Kind::Write {
                value: Some(value.into()),
                saw: saw.iter().map(|s| s.to_string()).collect(),
            },
            outcome: Some(outcome),
        }
    }

    fn delete(key: &str, saw: &[&str], outcome: Outcome) -> Op {
        Op {
            key: key.into(),
            node: "n1".into(),
            kind: Kind::Write {
                value: None,
                saw: saw.iter().map(|s| s.to_string()).collect(),
            },
            outcome: Some(outcome),
        }
    }

    fn read(key: &str, values: &[&str]) -> Op {
        Op {
            key: key.into(),
            node: "n2".into(),
            kind: Kind::Read,
            outcome: Some(Outcome::Ok(values.iter().map(|s| s.to_string()).collect())),
        }
    }

    fn ok() -> Outcome {
        Outcome::Ok(vec![])
    }

    fn finals(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let ops = [
            write("k", "v1", &[], ok()),
            write("k", "v2", &["v1"], ok()),
            write("k", "v3", &[], ok()),
            read("k", &["v2", "v3"]),
            write("j", "v4", &[], Outcome::Unknown("timed out".into())),
        ];
        let v = violations(&ops, &finals(&[("k", &["v2", "v3"]), ("j", &[])]));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let ops = [write("k", "v1", &[], ok()), write("k", "v2", &[], ok())];
        let v = violations(&ops, &finals(&[("k", &["v2"])]));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("v1") && v[0].contains("lost"), "{v:?}");
    }

    #[test]
    fn a_write_superseded_by_one_that_may_have_applied_is_not_lost() {
        let ops = [
            write("k", "v1", &[], ok()),
            delete("k", &["v1"], Outcome::Unknown("timed out".into())),
        ];
        assert!(violations(&ops, &finals(&[("k", &[])])).is_empty());
        // A write that surely never left does not supersede anything.
        let ops = [
            write("k", "v1", &[], ok()),
            delete("k", &["v1"], Outcome::NotSent("read failed".into())),
        ];
        assert_eq!(violations(&ops, &finals(&[("k", &[])])).len(), 1);
    }

    #[test]
    fn a_deleted_value_that_comes_back_is_caught() {
        let ops = [write("k", "v1", &[], ok()), delete("k", &["v1"], ok())];
        let v = violations(&ops, &finals(&[("k", &["v1"])]));
        assert!(v.iter().any(|e| e.contains("again")), "{v:?}");
    }

    #[test]
    fn siblings_that_are_not_concurrent_are_caught() {
        let ops = [
            write("k", "v1", &[], ok()),
            write("k", "v2", &["v1"], Outcome::Unknown("timed out".into())),
        ];
        let v = violations(&ops, &finals(&[("k", &["v1", "v2"])]));
        assert!(v.iter().any(|e| e.contains("not concurrent")), "{v:?}");
    }

    #[test]
    fn values_never_written_are_caught() {
        let ops = [write("k", "v1", &[], ok()), read("k", &["v1", "v9"])];
        let v = violations(&ops, &finals(&[("k", &["v1"]), ("j", &["v1"])]));
        assert_eq!(v.len(), 2, "{v:?}");
    }
}
