//! `user add`, `user list`, `user remove`: the ring's users are part of the
//! ring state (see [`crate::security`]), so a change to them is a ring
//! commit like any other: made by the leader, through the ring's Raft group,
//! then pushed to every member. Any node takes the command from an admin
//! and passes it on to the leader.

use std::collections::BTreeMap;

use super::*;
use crate::rpc::{UserEntry, UserReply};
use crate::security::{check_user_name, new_token, TokenDigest};
use crate::types::{Role, User};

impl Membership {
    /// `user add NAME ROLE`: a new user with a new token, which only the
    /// answer carries. `forward`: pass it on to the leader if this node is
    /// not it (a client's request; a member's is never passed on twice).
    pub async fn user_add(&self, name: String, role: Role, forward: bool) -> Result<UserReply> {
        let current = match self.users_at(&name, forward)? {
            Ok(ring) => ring,
            Err(leader) => {
                return self
                    .at_leader(&leader, |c, ctx| async move {
                        c.user_add(ctx, name, role).await
                    })
                    .await
            }
        };
        let token = new_token();
        let (epoch, ()) = self
            .commit_users(current, |users| {
                if users.contains_key(&name) {
                    return Err(Error::invalid(format!(
                        "user {name} exists; remove it first, or add the new credential under \
                         another name (to rotate: add, switch the client over, then remove the \
                         old one)"
                    )));
                }
                let digest = TokenDigest::of(&token).to_hex();
                users.insert(
                    name.clone(),
                    User {
                        role,
                        token_sha256: digest,
                    },
                );
                Ok(())
            })
            .await?;
        tracing::info!(user = %name, %role, epoch, "user added");
        Ok(UserReply {
            user: name,
            role,
            token: Some(token),
            epoch,
        })
    }

    /// `user remove NAME`: its token stops working as each node learns the
    /// ring that no longer has it.
    pub async fn user_remove(&self, name: String, forward: bool) -> Result<UserReply> {
        let current = match self.users_at(&name, forward)? {
            Ok(ring) => ring,
            Err(leader) => {
                return self
                    .at_leader(
                        &leader,
                        |c, ctx| async move { c.user_remove(ctx, name).await },
                    )
                    .await
            }
        };
        let (epoch, role) = self
            .commit_users(current, |users| match users.remove(&name) {
                Some(removed) => Ok(removed.role),
                None => Err(Error::invalid(format!("no user {name}"))),
            })
            .await?;
        tracing::info!(user = %name, epoch, "user removed");
        Ok(UserReply {
            user: name,
            role,
            token: None,
            epoch,
        })
    }

    /// Where a change to user `name` is made: `Ok`, here, on the ring this
    /// node leads; `Err`, at the leader it names, when this node is not it
    /// and may pass the command on (`forward`).
    fn users_at(
        &self,
        name: &str,
        forward: bool,
    ) -> Result<std::result::Result<RingState, NodeId>> {
        check_user_name(name)?;
        self.check_secure()?;
        match self.leader_ring() {
            Ok(ring) => Ok(Ok(ring)),
            Err(Error::NotLeader { leader }) if forward && leader != self.me => Ok(Err(leader)),
            Err(e) => Err(e),
        }
    }

    /// Commits the next epoch of the ring this node leads with its users as
    /// `edit` leaves them, one change at a time: the epoch committed and what
    /// `edit` answered.
    async fn commit_users<R>(
        &self,
        current: RingState,
        edit: impl FnOnce(&mut BTreeMap<String, User>) -> Result<R>,
    ) -> Result<(u64, R)> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring().unwrap_or(current);
        let mut users = current.users.clone();
        let answer = edit(&mut users)?;
        let next = current.with_users(users)?;
        let epoch = next.epoch;
        self.commit(current.epoch, next, Vec::new()).await?;
        Ok((epoch, answer))
    }

    /// `user list`: the users of the ring this node has.
    pub fn user_list(&self) -> Result<Vec<UserEntry>> {
        self.check_secure()?;
        let ring = self.ring.get().ok_or_else(|| Error::NoRing {
            leader: self.leader(),
        })?;
        Ok(ring
            .state()
            .users
            .iter()
            .map(|(name, u)| UserEntry {
                user: name.clone(),
                role: u.role,
            })
            .collect())
    }

    fn check_secure(&self) -> Result<()> {
        if self.secure {
            Ok(())
        } else {
            Err(Error::invalid(
                "this ring runs --insecure: it checks no tokens, so users would protect nothing; \
                 start its nodes with --cluster-secret-file to have users",
            ))
        }
    }

    /// Makes a users call at the leader.
    async fn at_leader<T, F, Fut>(&self, leader: &NodeId, f: F) -> Result<T>
    where
        F: FnOnce(crate::rpc::NodeClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Result<T>, tarpc::client::RpcError>>,
    {
        self.peers
            .call(leader, MEMBERSHIP_TIMEOUT, f)
            .await
            .map_err(|e| e.into_error(leader))
    }
}
