//! The network the real nodes run on: one network namespace per node
//! (`dyn-chaos-N`, address 10.213.0.1N/24, loopback up), each joined by a veth
//! pair to a bridge in a namespace of its own (`dyn-chaos-net`), and a veth
//! pair from the root namespace into that bridge (10.213.0.254) for the test's
//! clients. The bridge lives outside the root namespace so the root's firewall
//! (a `FORWARD DROP` policy, with bridged traffic passed through iptables)
//! never sees the nodes' traffic.
//!
//! A partition is a rule in the receiving node's namespace that drops every
//! packet from the peer's address on input: packets vanish (a sender sees no
//! refusal, only silence), and the test's own address is never cut. A rule on
//! output would make the sender's `connect` fail at once with EPERM, which is
//! a refusal, not a partition.
//!
//! Everything here is undone by [`clean`], which every run calls before it
//! starts (an earlier run may have crashed) and [`Net`]'s `Drop` calls after.

use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

pub const NODES: usize = 5;
pub const PORT: u16 = 13337;
pub const HTTP_PORT: u16 = 13338;

const NET_NS: &str = "dyn-chaos-net";
const HOST_LINK: &str = "dyn-chaos-h";
const HOST_ADDR: &str = "10.213.0.254/24";

/// Node `i`'s namespace.
pub fn ns(i: usize) -> String {
    format!("dyn-chaos-{i}")
}

/// Node `i`'s address.
pub fn addr(i: usize) -> String {
    format!("10.213.0.{}", 10 + i)
}

/// Runs `args` and returns its stdout, or what it said on failure.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `args` inside node `i`'s namespace.
fn run_in(i: usize, args: &[&str]) -> Result<String, String> {
    let ns = ns(i);
    let mut all = vec!["ip", "netns", "exec", ns.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

/// Why the test cannot run here, if it cannot: it needs root, `ip`, and
/// iptables or nft.
pub fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        return Some("not root (network namespaces and firewall rules need root)".into());
    }
    if run(&["ip", "-V"]).is_err() {
        return Some("ip (iproute2) is not installed".into());
    }
    if run(&["iptables", "--version"]).is_err() && run(&["nft", "--version"]).is_err() {
        return Some("neither iptables nor nft is installed".into());
    }
    None
}

/// One chaos run at a time on this machine (the namespaces' names are
/// fixed): an abstract Unix socket, which the kernel releases when the
/// process dies however it dies.
pub struct Lock {
    _socket: UnixListener,
}

impl Lock {
    pub fn take(limit: Duration) -> Result<Lock, String> {
        use std::os::linux::net::SocketAddrExt;
        let name = std::os::unix::net::SocketAddr::from_abstract_name(b"dynamo-chaos-lock")
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut said = false;
        loop {
            match UnixListener::bind_addr(&name) {
                Ok(socket) => return Ok(Lock { _socket: socket }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if !said {
                        super::say("chaos: another chaos run holds the lock; waiting for it");
                        said = true;
                    }
                    if start.elapsed() > limit {
                        return Err(format!("another chaos run held the lock for {limit:?}"));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(format!("the chaos lock: {e}")),
            }
        }
    }
}

/// How partitions are made: iptables, or nft where iptables does not work.
#[derive(Clone, Copy, Debug)]
pub enum Firewall {
    Iptables,
    Nft,
}

/// What went wrong building the network: `Skip` when namespaces cannot be
/// made here at all, `Fail` for anything after that.
pub enum SetupError {
    Skip(String),
    Fail(String),
}

/// The namespaces, the bridge and the links; removed on drop.
pub struct Net {
    pub firewall: Firewall,
}

impl Net {
    pub fn build() -> Result<Net, SetupError> {
        clean();
        run(&["ip", "netns", "add", NET_NS])
            .map_err(|e| SetupError::Skip(format!("ip netns add failed: {e}")))?;
        // From here on a failure leaves things behind: the drop removes them.
        let mut net = Net {
            firewall: Firewall::Iptables,
        };
        net.links().map_err(SetupError::Fail)?;
        net.firewall = net.choose_firewall().map_err(SetupError::Skip)?;
        Ok(net)
    }

    fn links(&self) -> Result<(), String> {
        let n = ["ip", "-n", NET_NS];
        run(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
        run(&[&n[..], &["link", "add", "br0", "type", "bridge"]].concat())?;
        run(&[&n[..], &["link", "set", "br0", "up"]].concat())?;
        run(&[
            "ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", "ph", "netns", NET_NS,
        ])?;
        run(&["ip", "addr", "add", HOST_ADDR, "dev", HOST_LINK])?;
        run(&["ip", "link", "set", HOST_LINK, "up"])?;
        run(&[&n[..], &["link", "set", "ph", "master", "br0", "up"]].concat())?;
        for i in 0..NODES {
            let (ns, port, cidr) = (ns(i), format!("p{i}"), format!("{}/24", addr(i)));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                &n[..],
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            ]
            .concat())?;
            run(&[&n[..], &["link", "set", &port, "master", "br0", "up"]].concat())?;
            run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// iptables if it works inside a namespace, else nft (with a table of
    /// our own in each node's namespace).
    fn choose_firewall(&self) -> Result<Firewall, String> {
        let a = match run_in(0, &["iptables", "-w", "-S", "INPUT"]) {
            Ok(_) => return Ok(Firewall::Iptables),
            Err(a) => a,
        };
        (0..NODES)
            .try_for_each(|i| {
                run_in(i, &["nft", "add", "table", "inet", "chaos"])?;
                run_in(
                    i,
                    &[
                        "nft",
                        "add chain inet chaos input { type filter hook input priority 0 ; policy accept ; }",
                    ],
                )
                .map(drop)
            })
            .map(|()| Firewall::Nft)
            .map_err(|b| format!("neither iptables nor nft works in a namespace ({a}; {b})"))
    }

    /// Drops at node `to` every packet from node `from`.
    pub fn cut(&self, to: usize, from: usize) -> Result<(), String> {
        let from = addr(from);
        match self.firewall {
            Firewall::Iptables => run_in(
                to,
                &["iptables", "-w", "-A", "INPUT", "-s", &from, "-j", "DROP"],
            ),
            Firewall::Nft => run_in(
                to,
                &[
                    "nft", "add", "rule", "inet", "chaos", "input", "ip", "saddr", &from, "drop",
                ],
            ),
        }
        .map(drop)
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..NODES {
            match self.firewall {
                Firewall::Iptables => run_in(i, &["iptables", "-w", "-F", "INPUT"]),
                Firewall::Nft => run_in(i, &["nft", "flush", "chain", "inet", "chaos", "input"]),
            }?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        clean();
    }
}

/// Removes whatever a run left: the processes still in our namespaces
/// (killed by their ids), the namespaces with their rules and links, the
/// root namespace's end of the host link.
pub fn clean() {
    let existing = run(&["ip", "netns", "list"]).unwrap_or_default();
    let ours: Vec<String> = (0..NODES)
        .map(ns)
        .chain([NET_NS.to_string()])
        .filter(|name| {
            existing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str()))
        })
        .collect();
    for name in &ours {
        let pids = run(&["ip", "netns", "pids", name]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = run(&["kill", "-9", pid]);
        }
    }
    for name in &ours {
        let _ = run(&["ip", "netns", "del", name]);
    }
    // The host link goes with its peer's namespace, a moment later.
    let start = Instant::now();
    while run(&["ip", "link", "show", HOST_LINK]).is_ok() {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = run(&["ip", "link", "del", HOST_LINK]);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
