//! The end of a chaos run: heal everything, wait for the ring to settle and
//! converge, then read every key back and check the history.

use super::*;

impl State<'_> {
    /// Heals everything, resumes and restarts what is down, waits for every
    /// operation, then for the ring to settle and converge; returns the
    /// members.
    pub(super) fn end(&mut self) -> Result<Vec<usize>, Failure> {
        self.heal_links()?;
        self.resume_all()?;
        for h in std::mem::take(&mut self.crashed) {
            self.restart(h)?;
        }
        self.log("healed: waiting for the operations in flight".into());
        let limit = Instant::now() + Duration::from_secs(120);
        while !self.in_flight.is_empty() && Instant::now() < limit {
            self.wait(Duration::from_millis(100));
        }
        if !self.in_flight.is_empty() {
            return Err(self.fail("operations never answered after the heal".into()));
        }
        // Every change ends.
        let limit = Instant::now() + Duration::from_secs(180);
        let settled = loop {
            match self.rt.block_on(status(0)) {
                Ok(s) if s.transition.is_none() => break s,
                Ok(_) | Err(_) if Instant::now() > limit => {
                    return Err(self.fail("a ring change never ended after the heal".into()))
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let members: Vec<usize> = (0..NODES)
            .filter(|&i| settled.nodes.iter().any(|n| n.id == id(i)))
            .collect();
        let shown: Vec<String> = members.iter().map(|&i| name(i)).collect();
        self.log(format!(
            "settled at epoch {}: {}",
            settled.epoch,
            shown.join(" ")
        ));
        // The ring converges: every member on one epoch with no change
        // running, and anti-entropy quiet (no key repaired over two
        // intervals). The epoch may still move on after the heal (a leader
        // elected then commits a ring naming it): it is read again each
        // round, and must be the same in the rounds compared.
        let limit = Instant::now() + Duration::from_secs(180);
        let (mut last, mut same) = (None, 0);
        loop {
            let view = self.rt.block_on(async {
                let mut repaired = 0;
                let mut epoch = None;
                for &m in &members {
                    let s = status(m).await.map_err(|e| format!("{}: {e}", name(m)))?;
                    if s.transition.is_some() {
                        return Err(format!("a change runs at epoch {}", s.epoch));
                    }
                    let first = *epoch.get_or_insert(s.epoch);
                    if s.epoch != first {
                        return Err(format!(
                            "{} is on epoch {}, {} on {first}",
                            name(m),
                            s.epoch,
                            name(members[0])
                        ));
                    }
                    repaired += s
                        .nodes
                        .iter()
                        .find(|n| n.id == id(m))
                        .and_then(|n| n.anti_entropy.as_ref())
                        .map_or(0, |a| a.keys_repaired);
                }
                Ok::<_, String>((epoch, repaired))
            });
            match view {
                Ok(r) if last == Some(r) => {
                    same += 1;
                    if same == 2 {
                        self.log(format!(
                            "converged at epoch {}: {} keys repaired by anti-entropy",
                            r.0.unwrap_or(0),
                            r.1
                        ));
                        break;
                    }
                }
                Ok(r) => (last, same) = (Some(r), 0),
                Err(e) if Instant::now() > limit => {
                    return Err(self.fail(format!("the ring did not converge: {e}")))
                }
                Err(_) => (last, same) = (None, 0),
            }
            if Instant::now() > limit {
                return Err(self.fail("anti-entropy never went quiet".into()));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(members)
    }

    /// Reads every key through each member (a failed read is asked again: a
    /// read may be), then checks the history.
    pub(super) fn check(&mut self, members: &[usize]) -> Result<(), Failure> {
        let mut finals: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in 0..KEYS {
            let key = format!("k{k}");
            let mut seen: Option<Vec<String>> = None;
            for &m in members {
                let mut tries = 0;
                let v = loop {
                    let k = key.clone();
                    let r = self.rt.block_on(async move {
                        via_node(m).await?.get(k).await.map_err(|e| e.to_string())
                    });
                    match r {
                        Ok(r) => break values(&r),
                        Err(e) if tries >= 10 => {
                            return Err(
                                self.fail(format!("final read of {key} at {}: {e}", name(m)))
                            )
                        }
                        Err(e) => {
                            self.log(format!("final read of {key} at {}: {e}", name(m)));
                            tries += 1;
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                };
                self.log(format!("final {key} at {}: {v:?}", name(m)));
                match &seen {
                    None => seen = Some(v),
                    Some(s) if *s != v => {
                        return Err(self.fail(format!(
                            "replicas disagree at the end on {key}: {s:?} vs {v:?} at {}",
                            name(m)
                        )))
                    }
                    _ => {}
                }
            }
            finals.insert(key, seen.unwrap_or_default());
        }
        let violations = checker::violations(&self.ops, &finals);
        let Some(first) = violations.first() else {
            return Ok(());
        };
        let mut failure = self.fail(format!(
            "{first} ({} rule(s) broken in all)",
            violations.len()
        ));
        failure.detail = violations.iter().map(|v| format!("broken: {v}")).collect();
        // The key the first broken rule names (keys are k0, k1, ...).
        let key = first.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| {
            w.len() > 1 && w.starts_with('k') && w[1..].bytes().all(|b| b.is_ascii_digit())
        });
        if let Some(key) = key {
            failure.detail.extend(self.history(key));
        }
        for l in &failure.detail {
            let _ = writeln!(self.events, "{l}");
        }
        Err(failure)
    }
}
