//! The RPC service of one connection: every call judged against the
//! caller's rights ([`Access::check`]), then handed to the node's parts.

use super::*;

/// The tarpc service implementation for one connection: a cheap handle on
/// the node's state, and who is calling (every call is judged by
/// [`Access::check`] before it runs).
#[derive(Clone)]
pub(super) struct Handler {
    pub(super) state: Arc<State>,
    pub(super) caller: Caller,
}

impl Handler {
    fn allow(&self, need: Need) -> Result<()> {
        self.state.access.check(&self.caller, need)
    }

    /// What a client may see of the ring: not the users' token digests.
    fn shown(&self, ring: Option<RingState>) -> Option<RingState> {
        match (&self.caller, ring) {
            (Caller::Client(_), Some(mut ring)) => {
                ring.users.clear();
                Some(ring)
            }
            (_, ring) => ring,
        }
    }
}

impl rpc::Node for Handler {
    async fn write(self, _: tarpc::context::Context, req: WriteRequest) -> Result<WriteReply> {
        self.allow(Need::write("put or delete"))?;
        if req.forwarded {
            // Counted once, where the client sent it.
            return self.state.coordinator.write(req).await;
        }
        let op = if req.content.value().is_some() {
            Op::Put
        } else {
            Op::Delete
        };
        let m = &self.state.metrics;
        m.time(op, self.state.coordinator.write(req)).await
    }

    async fn write_batch(
        self,
        ctx: tarpc::context::Context,
        writes: Vec<WriteRequest>,
    ) -> Result<Vec<Result<WriteReply>>> {
        self.allow(Need::write("put or delete"))?;
        crate::outbox::check_len(writes.len(), "writes")?;
        // Each write is coordinated (and counted in the metrics) as `write`
        // does it; they run at once and are answered in order. Each write's
        // future (about 9 KiB) is a heap block of its own: unboxed, `join_all`
        // would hold them all in one block of up to a few hundred KiB, which
        // the allocator takes fresh from the kernel (page faults) every time.
        let each = writes
            .into_iter()
            .map(|w| Box::pin(self.clone().write(ctx, w)));
        Ok(futures::future::join_all(each).await)
    }

    async fn read(self, _: tarpc::context::Context, key: Key) -> Result<ReadReply> {
        self.allow(Need::read("get"))?;
        let m = &self.state.metrics;
        m.time(Op::Get, self.state.coordinator.read(key)).await
    }

    async fn add_node(self, _: tarpc::context::Context, node: NodeId) -> Result<MembershipReply> {
        self.allow(Need::admin("change the ring"))?;
        let m = &self.state.metrics;
        m.time(Op::AddNode, self.state.membership.add_node(node))
            .await
    }

    async fn remove_node(
        self,
        _: tarpc::context::Context,
        node: NodeId,
    ) -> Result<MembershipReply> {
        self.allow(Need::admin("change the ring"))?;
        let m = &self.state.metrics;
        m.time(Op::RemoveNode, self.state.membership.remove_node(node))
            .await
    }

    async fn abort_change(self, _: tarpc::context::Context) -> Result<MembershipReply> {
        self.allow(Need::admin("change the ring"))?;
        let m = &self.state.metrics;
        m.time(Op::AbortChange, self.state.membership.abort_change())
            .await
    }

    async fn status(self, _: tarpc::context::Context) -> Result<StatusReply> {
        self.allow(Need::read("read the status"))?;
        let m = &self.state.metrics;
        m.time(Op::Status, self.state.membership.status()).await
    }

    async fn locate(self, _: tarpc::context::Context, key: Key) -> Result<LocateReply> {
        self.allow(Need::read("locate keys"))?;
        let m = &self.state.metrics;
        m.time(Op::Locate, self.state.membership.locate(key)).await
    }

    async fn replicate(
        self,
        ctx: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        key: Key,
        object: Arc<Object>,
        hint_for: Option<NodeId>,
    ) -> Result<()> {
        self.allow(Need::Member("replicate"))?;
        unexpired(&ctx)?;
        self.state
            .coordinator
            .replicate(to, epoch, key, &object, hint_for)
            .await
    }

    async fn replicate_batch(
        self,
        ctx: tarpc::context::Context,
        to: Addressee,
        writes: Vec<ReplicaWrite>,
    ) -> Result<Vec<Result<()>>> {
        self.allow(Need::Member("replicate_batch"))?;
        unexpired(&ctx)?;
        self.state.coordinator.replicate_batch(to, writes).await
    }

    async fn read_replica(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        key: Key,
    ) -> Result<Object> {
        self.allow(Need::read("get"))?;
        self.state.coordinator.read_replica(&to, &key)
    }

    async fn read_at(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        key: Key,
        count: bool,
    ) -> Result<Object> {
        self.allow(Need::read("get"))?;
        let read = async { self.state.coordinator.read_at(&to, epoch, &key) };
        if count {
            self.state.metrics.time(Op::Get, read).await
        } else {
            read.await
        }
    }

    async fn read_batch(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        reads: Vec<ReplicaRead>,
    ) -> Result<Vec<Result<Object>>> {
        self.allow(Need::read("get"))?;
        let started = tokio::time::Instant::now();
        let answers = self.state.coordinator.read_batch(&to, &reads)?;
        // Each read the client marked is a get of its own in the metrics.
        for (read, answer) in reads.iter().zip(&answers) {
            if read.count {
                let outcome = Outcome::of(answer);
                self.state
                    .metrics
                    .record(Op::Get, outcome, started.elapsed());
            }
        }
        Ok(answers)
    }

    async fn transfer(
        self,
        ctx: tarpc::context::Context,
        to: Addressee,
        items: Vec<(Key, Arc<Object>)>,
    ) -> Result<u64> {
        self.allow(Need::Member("transfer"))?;
        unexpired(&ctx)?;
        self.state.coordinator.transfer(to, items).await
    }

    async fn transfer_check(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        digests: Vec<(Key, u64)>,
    ) -> Result<Vec<u32>> {
        self.allow(Need::Member("transfer_check"))?;
        self.state.coordinator.transfer_check(to, digests).await
    }

    async fn ae_digests(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        from: NodeId,
        query: AeQuery,
    ) -> Result<AeAnswer> {
        self.allow(Need::Member("anti-entropy"))?;
        self.state.coordinator.check_addressee(&to)?;
        self.state.anti_entropy.answer(epoch, from, query).await
    }

    async fn ae_fetch(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        keys: Vec<Key>,
    ) -> Result<Vec<(Key, Arc<Object>)>> {
        self.allow(Need::Member("anti-entropy"))?;
        self.state.coordinator.check_addressee(&to)?;
        self.state.anti_entropy.fetch(epoch, keys).await
    }

    async fn tombstone_check(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        keys: Vec<Key>,
    ) -> Result<TombstoneCheck> {
        self.allow(Need::Member("tombstone_check"))?;
        self.state.coordinator.check_addressee(&to)?;
        self.state.reaper.check_here(epoch, keys).await
    }

    async fn reap(
        self,
        ctx: tarpc::context::Context,
        to: Addressee,
        epoch: u64,
        items: Vec<(Key, u64)>,
    ) -> Result<u64> {
        self.allow(Need::Member("reap"))?;
        unexpired(&ctx)?;
        self.state.coordinator.check_writer(&to)?;
        self.state.reaper.reap_here(epoch, items).await
    }

    async fn rejoin(
        self,
        _: tarpc::context::Context,
        node: NodeId,
        identity: uuid::Uuid,
    ) -> Result<u64> {
        self.allow(Need::Member("rejoin"))?;
        self.state.membership.rejoin(node, identity).await
    }

    async fn install_ring(self, _: tarpc::context::Context, ring: RingState) -> Result<u64> {
        self.allow(Need::Member("install_ring"))?;
        self.state.membership.learn(ring).await
    }

    async fn fetch_ring(self, _: tarpc::context::Context) -> Result<Option<RingState>> {
        self.allow(Need::read("read the ring"))?;
        Ok(self.shown(self.state.membership.current()))
    }

    async fn fetch_ring_newer(
        self,
        _: tarpc::context::Context,
        epoch: u64,
    ) -> Result<Option<RingState>> {
        self.allow(Need::read("read the ring"))?;
        Ok(self.shown(self.state.membership.current_if_newer(epoch)))
    }

    async fn info(self, _: tarpc::context::Context) -> Result<NodeInfo> {
        self.allow(Need::read("read the status"))?;
        Ok(self.state.membership.info())
    }

    async fn probe(self, _: tarpc::context::Context, probe: Probe) -> Result<ProbeAck> {
        self.allow(Need::Member("probe"))?;
        Ok(self.state.detector.answer(probe))
    }

    async fn raft_append(
        self,
        _: tarpc::context::Context,
        to: u128,
        req: openraft::raft::AppendEntriesRequest<RingRaft>,
    ) -> Result<RaftAnswer<openraft::raft::AppendEntriesResponse<u128>>> {
        self.allow(Need::Member("raft"))?;
        self.state.consensus.append(to, req).await
    }

    async fn raft_vote(
        self,
        _: tarpc::context::Context,
        to: u128,
        req: openraft::raft::VoteRequest<u128>,
    ) -> Result<RaftAnswer<openraft::raft::VoteResponse<u128>>> {
        self.allow(Need::Member("raft"))?;
        self.state.consensus.vote(to, req).await
    }

    async fn raft_snapshot(
        self,
        _: tarpc::context::Context,
        to: u128,
        req: openraft::raft::InstallSnapshotRequest<RingRaft>,
    ) -> Result<
        RaftAnswer<
            openraft::raft::InstallSnapshotResponse<u128>,
            openraft::error::InstallSnapshotError,
        >,
    > {
        self.allow(Need::Member("raft"))?;
        self.state.consensus.snapshot(to, req).await
    }

    async fn user_add(
        self,
        _: tarpc::context::Context,
        name: String,
        role: crate::types::Role,
    ) -> Result<crate::rpc::UserReply> {
        self.allow(Need::admin("manage users"))?;
        let forward = !matches!(self.caller, Caller::Peer);
        self.state.membership.user_add(name, role, forward).await
    }

    async fn user_list(self, _: tarpc::context::Context) -> Result<Vec<crate::rpc::UserEntry>> {
        self.allow(Need::admin("manage users"))?;
        self.state.membership.user_list()
    }

    async fn user_remove(
        self,
        _: tarpc::context::Context,
        name: String,
    ) -> Result<crate::rpc::UserReply> {
        self.allow(Need::admin("manage users"))?;
        let forward = !matches!(self.caller, Caller::Peer);
        self.state.membership.user_remove(name, forward).await
    }

    async fn scan(
        self,
        _: tarpc::context::Context,
        req: crate::rpc::ScanRequest,
    ) -> Result<crate::rpc::ScanReply> {
        self.allow(Need::read("list keys"))?;
        self.state.coordinator.scan(req).await
    }

    async fn scan_replica(
        self,
        _: tarpc::context::Context,
        to: Addressee,
        req: crate::rpc::ReplicaScan,
    ) -> Result<crate::rpc::ReplicaScanReply> {
        self.allow(Need::Member("scan"))?;
        self.state.coordinator.scan_replica(&to, req).await
    }

    async fn export(
        self,
        _: tarpc::context::Context,
        req: crate::rpc::ExportRequest,
    ) -> Result<crate::rpc::ExportPage> {
        self.allow(Need::read("back up"))?;
        self.state.coordinator.export(req).await
    }

    async fn restore_batch(
        self,
        _: tarpc::context::Context,
        items: Vec<(Key, crate::vclock::Object)>,
    ) -> Result<u64> {
        self.allow(Need::write("restore"))?;
        self.state.coordinator.restore_batch(items).await
    }

    async fn bucket_create(
        self,
        _: tarpc::context::Context,
        name: String,
        spec: crate::ring::BucketSpec,
    ) -> Result<crate::rpc::BucketReply> {
        self.allow(Need::admin("manage buckets"))?;
        self.state.membership.bucket_create(name, spec).await
    }

    async fn bucket_drop(
        self,
        _: tarpc::context::Context,
        name: String,
    ) -> Result<crate::rpc::BucketReply> {
        self.allow(Need::admin("manage buckets"))?;
        self.state.membership.bucket_drop(name).await
    }

    async fn bucket_list(self, _: tarpc::context::Context) -> Result<Vec<crate::rpc::BucketEntry>> {
        self.allow(Need::read("list buckets"))?;
        self.state.membership.bucket_list()
    }

    async fn read_with(
        self,
        _: tarpc::context::Context,
        key: Key,
        opts: Vec<crate::rpc::RequestOption>,
    ) -> Result<ReadReply> {
        self.allow(Need::read("get"))?;
        let r = crate::rpc::RequestOption::r(&opts);
        let m = &self.state.metrics;
        m.time(Op::Get, self.state.coordinator.read_with(key, r))
            .await
    }

    async fn write_with(
        self,
        _: tarpc::context::Context,
        req: WriteRequest,
        opts: Vec<crate::rpc::RequestOption>,
    ) -> Result<WriteReply> {
        self.allow(Need::write("put or delete"))?;
        if req.forwarded {
            return self.state.coordinator.write_with(req, opts).await;
        }
        let op = if req.content.value().is_some() {
            Op::Put
        } else {
            Op::Delete
        };
        let m = &self.state.metrics;
        m.time(op, self.state.coordinator.write_with(req, opts))
            .await
    }
}

/// Refuses a call that stores data once its deadline has passed: its sender
/// has given up on it (a request that waited in the sender's queues arrives
/// with what was left of its deadline), and a copy that lands later than its
/// sender's deadline could land after a tombstone's proof (see
/// [`crate::antientropy::reaper`]).
pub(super) fn unexpired(ctx: &tarpc::context::Context) -> Result<()> {
    if ctx.deadline <= tarpc::context::now() {
        return Err(Error::Timeout {
            what: "the call's deadline had passed when it was read".into(),
            millis: 0,
        });
    }
    Ok(())
}
