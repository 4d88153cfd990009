//! The membership state the leader owns and commits to every member
//! ([`RingState`]): the epoch, the members, the running change, identities and
//! incarnations, and how nodes left; and the transitions between states
//! (`begin_add`, `begin_remove`, `settle`, `abort`, `readmit`), each a pure
//! function from one epoch's state to the next. The module documentation of
//! [`crate::ring`] says what each guarantees.

use super::*;

/// The membership state the leader owns and commits to every member.
///
/// Persisted and sent as is (serde); check it with [`RingState::validate`]
/// after decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// The version of the membership: each change makes the next epoch. A node
    /// adopts a state only if its epoch is newer than the one it has.
    pub epoch: u64,
    /// The node that owns the ring and makes every change.
    pub leader: NodeId,
    /// Every member, sorted and without duplicates: the ring that owns the
    /// data now (during a transition, the ring before the change).
    pub members: Vec<NodeId>,
    /// N/W/R: the leader's values are the cluster's.
    pub replication: Replication,
    /// Tokens (virtual nodes) per member.
    pub tokens_per_node: u32,
    /// The identity of each node of the current and target rings: the UUID
    /// created with its data directory. A node missing here (a ring made
    /// before identities existed) is not checked.
    #[serde(default)]
    pub identities: BTreeMap<NodeId, Uuid>,
    /// The ring change in progress, if any.
    #[serde(default)]
    pub transition: Option<Transition>,
    /// For every address ever admitted (members and former members): the last
    /// identity admitted there and its incarnation. Never shrinks: an address
    /// that comes back with a new data directory gets the next incarnation, so
    /// it writes under an actor no replica has seen ([`RingState::actor`]).
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    /// Nodes that were in the ring (or joining it) and are no longer: how each
    /// one went, so that it knows what to do with its data when it learns it
    /// ([`Departure`]). An entry goes when its address is added again.
    #[serde(default)]
    pub departed: BTreeMap<NodeId, Departure>,
    /// The users of a ring with a cluster secret, by name: each one's role
    /// and the SHA-256 of its token (see [`crate::security`]). Kept last:
    /// a ring encoded before users existed ([`RingStateV4`]) then ends where
    /// this field would begin.
    #[serde(default)]
    pub users: BTreeMap<String, crate::types::User>,
    /// The buckets (see [`super::bucket`]). Kept last: a ring encoded before
    /// buckets existed ([`RingStateV5`]) ends where this field would begin.
    #[serde(default)]
    pub buckets: super::Buckets,
}

/// How a node left the ring, as the leader recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// The epoch that ended its part in the ring.
    pub epoch: u64,
    /// The data directory (identity) that departed; None when the ring never
    /// knew it.
    pub identity: Option<Uuid>,
    pub kind: DepartureKind,
}

/// Why a node is no longer in the ring; it decides what the node may do with
/// what it still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepartureKind {
    /// It left through a settled change after reporting its transfer done:
    /// every key it held is on the owners, so it may drop its copies.
    Left,
    /// The change settled without its report (it was down or stalled): it may
    /// hold versions the ring has since deleted and removed. It must never
    /// hand anything off; its data directory must be deleted before the node
    /// is added again.
    Removed,
    /// Its join was aborted: it only ever held copies of what the members
    /// hold (the acknowledged writes are on W of the old owners), so it may
    /// drop them.
    Aborted,
}

impl DepartureKind {
    /// `left`, `removed`, `aborted`.
    pub fn name(self) -> &'static str {
        match self {
            DepartureKind::Left => "left",
            DepartureKind::Removed => "removed",
            DepartureKind::Aborted => "aborted",
        }
    }
}

/// One data directory's turn at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The identity (data directory UUID) admitted.
    pub identity: Uuid,
    /// 0 for the first identity ever admitted at the address, then 1, 2, ...
    pub number: u32,
}

/// The actor name of incarnation `number` of `node`: the address itself for the
/// first, `HOST~I:PORT` after (`127.0.0.1~1:13338`). The name only appears in
/// dots and contexts, never as an address to connect to.
pub fn actor_name(node: &NodeId, number: u32) -> NodeId {
    if number == 0 {
        return node.clone();
    }
    NodeId::new(&format!("{}~{number}", node.host()), node.port()).unwrap_or_else(|_| node.clone())
}

/// A ring change in progress: the membership the ring moves to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The members once the change settles, sorted and without duplicates.
    pub target: Vec<NodeId>,
    /// When the leader started the change (milliseconds since the Unix epoch,
    /// the leader's clock; shown to operators, never used for decisions).
    pub started_ms: u64,
}

impl RingState {
    /// A one-node ring led by `leader`, epoch 1, with
    /// [`DEFAULT_TOKENS_PER_NODE`] tokens per node.
    pub fn bootstrap(leader: NodeId, replication: Replication) -> RingState {
        RingState {
            epoch: 1,
            members: vec![leader.clone()],
            leader,
            replication,
            tokens_per_node: DEFAULT_TOKENS_PER_NODE,
            identities: BTreeMap::new(),
            transition: None,
            incarnations: BTreeMap::new(),
            departed: BTreeMap::new(),
            users: BTreeMap::new(),
            buckets: Default::default(),
        }
    }

    /// The next epoch with `users` as the ring's users.
    pub fn with_users(&self, users: BTreeMap<String, crate::types::User>) -> Result<RingState> {
        if users.len() > crate::types::MAX_USERS {
            return Err(membership(format!(
                "a ring holds at most {} users",
                crate::types::MAX_USERS
            )));
        }
        let mut next = self.next_epoch()?;
        next.users = users;
        next.validate()?;
        Ok(next)
    }

    /// The epoch that removed the node at `node` with identity `uuid` while it
    /// was away ([`DepartureKind::Removed`]), if it is in neither ring now.
    pub fn removed_at(&self, node: &NodeId, uuid: Uuid) -> Option<u64> {
        if self.members.binary_search(node).is_ok() || self.target().binary_search(node).is_ok() {
            return None;
        }
        self.departure(node, uuid)
            .filter(|d| d.kind == DepartureKind::Removed)
            .map(|d| d.epoch)
    }

    /// How the node at `node` with identity `uuid` left the ring, if the ring
    /// recorded its departure for that data directory (a departure recorded
    /// without an identity, from a ring that never learned it, applies to
    /// any: the node then keeps what it holds if it was removed while away;
    /// `add-node` cannot tell it from a wiped one and lets it in).
    pub fn departure(&self, node: &NodeId, uuid: Uuid) -> Option<Departure> {
        let d = self.departed.get(node)?;
        match d.identity {
            Some(id) if id != uuid => None,
            _ => Some(*d),
        }
    }

    /// The actor under which the node at `node` with identity `uuid` issues
    /// dots, or None when it must not issue any: another identity was admitted
    /// at that address (this process is a stranger there, or a node that lost
    /// its data directory and has not been readmitted yet).
    ///
    /// An address the ring never admitted an identity at (a node not yet
    /// added, or a ring from before identities) writes under its address.
    pub fn actor(&self, node: &NodeId, uuid: Uuid) -> Option<NodeId> {
        match (self.incarnations.get(node), self.identities.get(node)) {
            (Some(inc), _) if inc.identity == uuid => Some(actor_name(node, inc.number)),
            (Some(_), _) => None,
            (None, Some(id)) if *id != uuid => None,
            (None, _) => Some(node.clone()),
        }
    }

    /// Records that `uuid` is admitted at `node`: a new identity there is the
    /// next incarnation.
    fn admit(&mut self, node: &NodeId, uuid: Uuid) {
        let number = match self.incarnations.get(node) {
            None => 0,
            Some(inc) if inc.identity == uuid => inc.number,
            Some(inc) => inc.number.saturating_add(1),
        };
        self.identities.insert(node.clone(), uuid);
        self.incarnations.insert(
            node.clone(),
            Incarnation {
                identity: uuid,
                number,
            },
        );
    }

    /// The next epoch's state in which the node `node` (a member, or a node a
    /// running change adds) is known by the new identity `uuid`: it lost its
    /// data directory and came back empty under the same address. It gets the
    /// next incarnation (a new actor, so none of its new dots can collide with
    /// one its old data directory issued) and refills from its peers: by
    /// anti-entropy as a member, and, while a change runs, by every holder
    /// sending its moving keys again (the new epoch restarts each node's
    /// transfer), so a change whose node was wiped still settles.
    ///
    /// Fails with [`Error::Membership`] if `node` is in neither ring, already
    /// has that identity, or `uuid` is another node's.
    pub fn readmit(&self, node: &NodeId, uuid: Uuid) -> Result<RingState> {
        if self.all_nodes().binary_search(node).is_err() {
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        match self.address_of(&uuid) {
            Some(at) if at == node => {
                return Err(membership(format!("{node} already has identity {uuid}")))
            }
            Some(other) => {
                return Err(membership(format!(
                    "cannot readmit {node}: identity {uuid} is the member {other}'s"
                )))
            }
            None => {}
        }
        let mut next = self.next_epoch()?;
        next.admit(node, uuid);
        Ok(next)
    }

    /// The next epoch with `leader` as the ring's leader (the node the ring's
    /// Raft group elected; see [`crate::consensus`]). It must be a member the
    /// running change keeps.
    pub fn with_leader(&self, leader: NodeId, identity: Uuid) -> Result<RingState> {
        if self.members.binary_search(&leader).is_err()
            || self.target().binary_search(&leader).is_err()
        {
            return Err(membership(format!(
                "{leader} cannot lead the ring of epoch {}: it is not a member the ring keeps",
                self.epoch
            )));
        }
        let mut next = self.next_epoch()?;
        next.record_identity(&leader, identity);
        next.leader = leader;
        next.validate()?;
        Ok(next)
    }

    /// Records `identity` for `node` if the ring knows none for it (the
    /// founder of a ring was not recorded before the ring had consensus, and
    /// a leader elected later must know every voter's identity to keep it).
    pub fn record_identity(&mut self, node: &NodeId, identity: Uuid) {
        if !self.identities.contains_key(node) {
            self.admit(node, identity);
        }
    }

    /// The next epoch with `identity` recorded for `node`, which the ring
    /// knows no identity for (a founder from before the ring had consensus).
    pub fn with_identity(&self, node: &NodeId, identity: Uuid) -> Result<RingState> {
        let mut next = self.next_epoch()?;
        next.record_identity(node, identity);
        next.validate()?;
        Ok(next)
    }

    /// The members once the running change settles (`members` when none runs).
    pub fn target(&self) -> &[NodeId] {
        match &self.transition {
            Some(t) => &t.target,
            None => &self.members,
        }
    }

    /// Nodes the running change adds (empty when none runs).
    pub fn joining(&self) -> Vec<NodeId> {
        let current = &self.members;
        self.target()
            .iter()
            .filter(|n| current.binary_search(n).is_err())
            .cloned()
            .collect()
    }

    /// Nodes the running change removes (empty when none runs).
    pub fn leaving(&self) -> Vec<NodeId> {
        let target = self.target();
        self.members
            .iter()
            .filter(|n| target.binary_search(n).is_err())
            .cloned()
            .collect()
    }

    /// Every node of the current and the target ring, sorted.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.members.iter().chain(self.target()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// True when `actor` is a name this ring ever let a node write under: an
    /// address it admitted (a member, a node of the running change, the
    /// leader, or a former member it keeps an incarnation for) or one of that
    /// address's incarnations up to the last (`HOST~I:PORT`).
    ///
    /// A ring from before incarnations (format 2 and older) forgot the members
    /// removed back then, so a false here is not proof: callers also accept an
    /// actor the stored copy of the key already names.
    pub fn knows_actor(&self, actor: &NodeId) -> bool {
        let (address, number) = match actor.host().rsplit_once('~') {
            Some((host, n)) => match (NodeId::new(host, actor.port()), n.parse::<u32>()) {
                (Ok(address), Ok(n)) if n > 0 => (address, n),
                _ => return false,
            },
            None => (actor.clone(), 0),
        };
        if let Some(inc) = self.incarnations.get(&address) {
            return number <= inc.number;
        }
        number == 0
            && (self.leader == address
                || self.members.binary_search(&address).is_ok()
                || self.target().binary_search(&address).is_ok())
    }

    /// The address a node with this identity is known under, if any.
    pub fn address_of(&self, uuid: &Uuid) -> Option<&NodeId> {
        self.identities
            .iter()
            .find_map(|(node, id)| (id == uuid).then_some(node))
    }

    /// Describes the running change for people: `adding 127.0.0.1:13342`.
    pub fn describe_change(&self) -> String {
        let mut parts = Vec::new();
        let joining = self.joining();
        let leaving = self.leaving();
        if !joining.is_empty() {
            parts.push(format!("adding {}", join_ids(&joining)));
        }
        if !leaving.is_empty() {
            parts.push(format!("removing {}", join_ids(&leaving)));
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        }
    }

    /// Refuses while a change runs, naming it.
    pub fn refuse_while_changing(&self) -> Result<()> {
        match &self.transition {
            Some(_) => Err(membership(format!(
                "a ring change is already running (epoch {}: {}); wait until it settles \
                 (status shows its progress)",
                self.epoch,
                self.describe_change()
            ))),
            None => Ok(()),
        }
    }

    /// The next epoch's state starting a change that adds `node` (with the
    /// identity `uuid`, when known). `now_ms` is the leader's clock.
    ///
    /// Fails with [`Error::Membership`] if a change is running, `node` is
    /// already a member, another member has the same identity (one process
    /// under two addresses), or the ring is full.
    pub fn begin_add(&self, node: NodeId, uuid: Option<Uuid>, now_ms: u64) -> Result<RingState> {
        self.refuse_while_changing()?;
        let at = match self.members.binary_search(&node) {
            Ok(_) => {
                return Err(membership(format!(
                    "{node} is already a member of the ring (epoch {})",
                    self.epoch
                )))
            }
            Err(at) => at,
        };
        if let Some(uuid) = uuid {
            if let Some(other) = self.address_of(&uuid) {
                return Err(membership(format!(
                    "cannot add {node}: it is the node already in the ring as {other} \
                     (same node identity {uuid}); one process cannot be two replicas"
                )));
            }
            if let Some(d) = self.departed.get(&node) {
                if d.kind == DepartureKind::Removed && d.identity == Some(uuid) {
                    return Err(membership(format!(
                        "cannot add {node}: it was removed from the ring at epoch {} while it \
                         was away, and it still runs on that data directory, which may hold \
                         versions the ring has deleted since; stop it, delete its data \
                         directory and start it again, then add it",
                        d.epoch
                    )));
                }
            }
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(membership(format!(
                "cannot add {node}: the ring already has {} members, the limit is {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        let mut next = self.next_epoch()?;
        let mut target = self.members.clone();
        target.insert(at, node.clone());
        if let Some(uuid) = uuid {
            next.admit(&node, uuid);
        }
        next.departed.remove(&node);
        next.transition = Some(Transition {
            target,
            started_ms: now_ms,
        });
        Ok(next)
    }

    /// The next epoch's state starting a change that removes `node`.
    ///
    /// While a change runs, removing a node that change adds aborts its join
    /// (the whole change when it was the only thing the change did), and
    /// removing a member that stays in the target takes it out of the target
    /// too (a node of the change that is dead for good then no longer blocks
    /// it: as a leaving node, its silence is tolerated). Either way the new
    /// epoch restarts every node's transfer against the new target.
    ///
    /// Fails with [`Error::Membership`] if `node` is in neither ring, is
    /// already leaving, is the leader (the leader owns the ring and cannot
    /// hand itself out of it), or if fewer members than W or R would be left
    /// (every write or read would then fail).
    pub fn begin_remove(&self, node: &NodeId, now_ms: u64) -> Result<RingState> {
        if self.transition.is_some() && self.members.binary_search(node).is_err() {
            if self.target().binary_search(node).is_ok() {
                return self.abort_join(node);
            }
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        if self.members.binary_search(node).is_err() {
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        if *node == self.leader {
            return Err(membership(format!(
                "cannot remove the leader {node}: the leader owns the ring and must stay a member"
            )));
        }
        let Ok(at) = self.target().binary_search(node) else {
            return Err(membership(format!(
                "{node} is already leaving in the running change (epoch {}: {})",
                self.epoch,
                self.describe_change()
            )));
        };
        let left = self.target().len().saturating_sub(1);
        let need = self.replication.w.max(self.replication.r);
        if left < need {
            return Err(membership(format!(
                "cannot remove {node}: {left} member(s) would be left, fewer than the {need} \
                 that every write (W = {}) and read (R = {}) needs",
                self.replication.w, self.replication.r
            )));
        }
        let mut next = self.next_epoch()?;
        let mut target = self.target().to_vec();
        target.remove(at);
        let started_ms = self.transition.as_ref().map_or(now_ms, |t| t.started_ms);
        next.transition = Some(Transition { target, started_ms });
        Ok(next)
    }

    /// The next epoch's state in which the node `node`, which the running
    /// change adds, no longer joins: recorded as [`DepartureKind::Aborted`].
    /// When the change did nothing else it ends ([`RingState::abort`]).
    fn abort_join(&self, node: &NodeId) -> Result<RingState> {
        let mut target = self.target().to_vec();
        target.retain(|n| n != node);
        if target == self.members {
            return self.abort();
        }
        let mut next = self.next_epoch()?;
        next.depart(node, DepartureKind::Aborted);
        next.identities.remove(node);
        if let Some(t) = next.transition.as_mut() {
            t.target = target;
        }
        Ok(next)
    }

    /// The next epoch's state ending the running change without completing
    /// it: the ring keeps the members it had before the change (`members`,
    /// which a change never alters until it settles), nodes it was adding are
    /// recorded as [`DepartureKind::Aborted`], and nodes it was removing stay.
    ///
    /// Nothing acknowledged is lost by going back: while the change ran,
    /// every write was acknowledged only with W acks among the key's owners
    /// before the change, and those owners are the owners again. What the
    /// joining nodes received is a copy; what the staying members received as
    /// new owners is handed back by their clean-up of this epoch.
    ///
    /// Fails with [`Error::Membership`] when no change runs.
    pub fn abort(&self) -> Result<RingState> {
        if self.transition.is_none() {
            return Err(membership(format!(
                "no ring change is running (epoch {})",
                self.epoch
            )));
        }
        let joining = self.joining();
        let mut next = self.next_epoch()?;
        for node in &joining {
            next.depart(node, DepartureKind::Aborted);
        }
        next.transition = None;
        let members = next.members.clone();
        next.identities
            .retain(|node, _| members.binary_search(node).is_ok());
        Ok(next)
    }

    /// Records that `node` left this epoch, with the identity the ring knew.
    fn depart(&mut self, node: &NodeId, kind: DepartureKind) {
        let departure = Departure {
            epoch: self.epoch,
            identity: self.identities.get(node).copied(),
            kind,
        };
        self.departed.insert(node.clone(), departure);
    }

    /// The next epoch's state ending the running change: the target becomes
    /// the ring, identities of nodes that left are forgotten, and each node
    /// that left is recorded as [`DepartureKind::Left`], or as
    /// [`DepartureKind::Removed`] when it is in `unreported` (the leader
    /// settled without its report that its transfer was done).
    ///
    /// Fails with [`Error::Membership`] when no change runs.
    pub fn settle(&self, unreported: &[NodeId]) -> Result<RingState> {
        let Some(transition) = &self.transition else {
            return Err(membership(format!(
                "no ring change is running (epoch {})",
                self.epoch
            )));
        };
        let leaving = self.leaving();
        let mut next = self.next_epoch()?;
        for node in &leaving {
            let kind = if unreported.contains(node) {
                DepartureKind::Removed
            } else {
                DepartureKind::Left
            };
            next.depart(node, kind);
        }
        next.members = transition.target.clone();
        next.transition = None;
        next.identities
            .retain(|node, _| transition.target.binary_search(node).is_ok());
        Ok(next)
    }

    /// The next epoch's state with `node` added at once, with no transition
    /// (a ring that holds no data yet, and tests of placement).
    pub fn with_member(&self, node: NodeId) -> Result<RingState> {
        let mut next = self.begin_add(node, None, 0)?.settle(&[])?;
        next.epoch = self.epoch.saturating_add(1);
        Ok(next)
    }

    /// The next epoch's state with `node` removed at once, with no transition.
    pub fn without_member(&self, node: &NodeId) -> Result<RingState> {
        let mut next = self.begin_remove(node, 0)?.settle(&[])?;
        next.epoch = self.epoch.saturating_add(1);
        if let Some(d) = next.departed.get_mut(node) {
            d.epoch = next.epoch;
        }
        Ok(next)
    }

    /// Checks the invariants of a state decoded from disk or received from a
    /// peer: epoch at least 1, members sorted and unique and at most
    /// [`MAX_MEMBERS`], every identity a well-formed `HOST:PORT`, the leader a
    /// member, `tokens_per_node` in
    /// `1..=`[`MAX_TOKENS_PER_NODE`], replication valid; a transition's target
    /// likewise, keeping the leader and differing from the members; node
    /// identities only for nodes of either ring, and never one UUID twice.
    ///
    /// Fails with [`Error::InvalidInput`] naming the first broken invariant.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            Error::invalid(format!("invalid ring state (epoch {}): {why}", self.epoch))
        };
        if self.epoch == 0 {
            return Err(bad("epoch 0 is never committed".into()));
        }
        check_members(&self.members).map_err(bad)?;
        // NodeId's serde form is a bare string: a decoded id has not been
        // through its parser yet.
        for id in self.members.iter().chain([&self.leader]) {
            if let Err(e) = id.as_str().parse::<NodeId>() {
                return Err(bad(e.to_string()));
            }
        }
        if self.members.binary_search(&self.leader).is_err() {
            return Err(bad(format!("the leader {} is not a member", self.leader)));
        }
        if let Some(t) = &self.transition {
            check_members(&t.target).map_err(|why| bad(format!("transition target: {why}")))?;
            for id in &t.target {
                if let Err(e) = id.as_str().parse::<NodeId>() {
                    return Err(bad(e.to_string()));
                }
            }
            if t.target.binary_search(&self.leader).is_err() {
                return Err(bad(format!(
                    "the transition removes the leader {}",
                    self.leader
                )));
            }
            if t.target == self.members {
                return Err(bad("the transition changes nothing".into()));
            }
        }
        let all = self.all_nodes();
        let mut uuids = std::collections::BTreeSet::new();
        for (node, uuid) in &self.identities {
            if all.binary_search(node).is_err() {
                return Err(bad(format!("identity for {node}, which is not a member")));
            }
            if !uuids.insert(uuid) {
                return Err(bad(format!("identity {uuid} is given to two nodes")));
            }
        }
        if let Some(node) = self.departed.keys().find(|n| all.binary_search(n).is_ok()) {
            return Err(bad(format!(
                "{node} is recorded as departed but is in the ring"
            )));
        }
        if !(1..=MAX_TOKENS_PER_NODE).contains(&self.tokens_per_node) {
            return Err(bad(format!(
                "tokens_per_node is {}, it must be between 1 and {MAX_TOKENS_PER_NODE}",
                self.tokens_per_node
            )));
        }
        for (name, b) in &self.buckets.by_name {
            super::check_bucket_name(name).map_err(|e| bad(e.to_string()))?;
            if b.id >= self.buckets.next_id {
                return Err(bad(format!("bucket {name} has id {}, not yet given", b.id)));
            }
            if b.n == 0 || b.w == 0 || b.r == 0 || b.w > b.n || b.r > b.n {
                return Err(bad(format!(
                    "bucket {name}: n={} w={} r={} is not 1 <= w, r <= n",
                    b.n, b.w, b.r
                )));
            }
        }
        if self.buckets.by_name.len() > super::MAX_BUCKETS {
            return Err(bad("too many buckets".into()));
        }
        self.replication
            .validate()
            .map_err(|e| bad(format!("replication: {e}")))
    }

    /// A copy with the epoch advanced by one.
    pub(super) fn next_epoch(&self) -> Result<RingState> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or_else(|| membership("the ring epoch cannot advance past u64::MAX".into()))?;
        Ok(RingState {
            epoch,
            ..self.clone()
        })
    }
}

/// Checks that a member list is sorted, unique and within [`MAX_MEMBERS`].
fn check_members(members: &[NodeId]) -> std::result::Result<(), String> {
    if members.len() > MAX_MEMBERS {
        return Err(format!(
            "{} members, the limit is {MAX_MEMBERS}",
            members.len()
        ));
    }
    if members.is_empty() {
        return Err("no members".into());
    }
    for pair in members.windows(2) {
        if let [a, b] = pair {
            if a == b {
                return Err(format!("member {a} is listed twice"));
            }
            if a > b {
                return Err(format!("members are not sorted ({a} before {b})"));
            }
        }
    }
    Ok(())
}

fn membership(reason: String) -> Error {
    Error::Membership { reason }
}

/// `a b c`, for messages.
fn join_ids(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
