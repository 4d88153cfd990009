//! How many connections a node holds, and of whom: the door of the RPC port.
//!
//! A connection first waits in the handshake room ([`Gate::enter`]): at most
//! [`MAX_HANDSHAKING`] at once, each for at most
//! [`super::HANDSHAKE_TIMEOUT`]. When the room is full, the connection that
//! has waited longest is closed to make room: a flood of sockets that
//! connect and send nothing cannot keep a real caller out, because a real
//! caller finishes its handshake in a round trip while the flood's sockets
//! are pushed out oldest first.
//!
//! Once its handshake shows who it is ([`Gate::admit`]), a member takes one
//! of [`MAX_PEER_CONNECTIONS`] places and a client one of
//! [`MAX_CLIENT_CONNECTIONS`], of which one address may hold at most
//! [`MAX_CLIENT_CONNECTIONS_PER_ADDRESS`]: clients can never take the
//! members' room, and one client host cannot take everybody's.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::Caller;

/// Connections in their handshake at once.
pub const MAX_HANDSHAKING: usize = 256;
/// Connections from members of the ring (a ring of up to 1,024 members, a
/// connection or two each).
pub const MAX_PEER_CONNECTIONS: usize = 2048;
/// Connections from clients.
pub const MAX_CLIENT_CONNECTIONS: usize = 4096;
/// Client connections from one address.
pub const MAX_CLIENT_CONNECTIONS_PER_ADDRESS: usize = 1024;

/// Client connections held by each address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The node's door.
pub struct Gate {
    handshaking: Mutex<Room>,
    peers: Arc<Semaphore>,
    clients: Arc<Semaphore>,
    per_address: PerAddress,
}

#[derive(Default)]
struct Room {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A place in the handshake room; dropping it leaves the room.
pub struct Waiting<'a> {
    gate: &'a Gate,
    id: u64,
    /// Resolves when the connection is pushed out to make room.
    pub pushed_out: oneshot::Receiver<()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut room = self
            .gate
            .handshaking
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        room.waiting.remove(&self.id);
    }
}

/// A connection's place once admitted; dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    address: Option<(IpAddr, PerAddress)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((ip, counts)) = &self.address {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(MAX_PEER_CONNECTIONS, MAX_CLIENT_CONNECTIONS)
    }
}

impl Gate {
    /// A door with these many places for members and for clients.
    pub fn new(peers: usize, clients: usize) -> Gate {
        Gate {
            handshaking: Mutex::new(Room::default()),
            peers: Arc::new(Semaphore::new(peers)),
            clients: Arc::new(Semaphore::new(clients)),
            per_address: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A new connection enters the handshake room, pushing out the one that
    /// has waited longest if the room is full.
    pub fn enter(&self) -> Waiting<'_> {
        let (tx, rx) = oneshot::channel();
        let mut room = self.handshaking.lock().unwrap_or_else(|p| p.into_inner());
        while room.waiting.len() >= MAX_HANDSHAKING {
            // Dropping its sender wakes the oldest, which closes.
            room.waiting.pop_first();
        }
        let id = room.next;
        room.next += 1;
        room.waiting.insert(id, tx);
        Waiting {
            gate: self,
            id,
            pushed_out: rx,
        }
    }

    /// Connections in their handshake now.
    pub fn handshaking(&self) -> usize {
        self.handshaking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .len()
    }

    /// A place for `caller`, who connected from `ip`, or why there is none.
    pub fn admit(&self, caller: &Caller, ip: IpAddr) -> Result<Admission, String> {
        match caller {
            Caller::Peer => {
                let permit = self.peers.clone().try_acquire_owned().map_err(|_| {
                    format!("this node holds {MAX_PEER_CONNECTIONS} connections from members")
                })?;
                Ok(Admission {
                    _permit: permit,
                    address: None,
                })
            }
            Caller::Client(_) => {
                let permit = self.clients.clone().try_acquire_owned().map_err(|_| {
                    format!(
                        "this node holds {MAX_CLIENT_CONNECTIONS} client connections; try again later"
                    )
                })?;
                let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
                let n = counts.entry(ip).or_insert(0);
                if *n >= MAX_CLIENT_CONNECTIONS_PER_ADDRESS {
                    return Err(format!(
                        "{ip} holds {MAX_CLIENT_CONNECTIONS_PER_ADDRESS} client connections to this \
                         node, the most one address may"
                    ));
                }
                *n += 1;
                Ok(Admission {
                    _permit: permit,
                    address: Some((ip, self.per_address.clone())),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_room_pushes_out_the_oldest() {
        let gate = Gate::default();
        let mut first = gate.enter();
        let rest: Vec<_> = (1..MAX_HANDSHAKING).map(|_| gate.enter()).collect();
        assert_eq!(gate.handshaking(), MAX_HANDSHAKING);
        assert!(first
            .pushed_out
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        let newest = gate.enter();
        assert_eq!(gate.handshaking(), MAX_HANDSHAKING);
        assert_eq!(
            first.pushed_out.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "the oldest was not pushed out"
        );
        drop(newest);
        drop(rest);
        drop(first);
        assert_eq!(gate.handshaking(), 0);
    }

    #[test]
    fn clients_never_take_the_members_room_and_one_address_is_capped() {
        let gate = Gate::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let client = Caller::Client(None);
        let c1 = gate.admit(&client, a).unwrap();
        let _c2 = gate.admit(&client, a).unwrap();
        let _c3 = gate.admit(&client, b).unwrap();
        assert!(gate
            .admit(&client, b)
            .unwrap_err()
            .contains("client connections"));
        let _p1 = gate.admit(&Caller::Peer, a).unwrap();
        let _p2 = gate.admit(&Caller::Peer, a).unwrap();
        assert!(gate.admit(&Caller::Peer, a).is_err());
        drop(c1);
        assert!(gate.admit(&client, b).is_ok());
    }

    #[test]
    fn per_address_counts_are_returned() {
        let gate = Gate::new(1, 10_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let client = Caller::Client(None);
        let held: Vec<_> = (0..MAX_CLIENT_CONNECTIONS_PER_ADDRESS)
            .map(|_| gate.admit(&client, a).unwrap())
            .collect();
        let e = gate.admit(&client, a).unwrap_err();
        assert!(e.contains("the most one address may"), "{e}");
        drop(held);
        assert!(gate.per_address.lock().unwrap().is_empty());
        assert!(gate.admit(&client, a).is_ok());
    }
}
