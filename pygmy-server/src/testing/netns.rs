//! Network namespaces for fault tests: every node of a
//! [`ProcessCluster`](super::ProcessCluster) in a namespace of its own,
//! all on one bridge, so that the link between two nodes can be cut and
//! healed while both keep running.
//!
//! The layout: a hub namespace holds a bridge; each node's namespace has an
//! `eth0` on it with the address `10.a.b.(10 + i)`; the test process
//! reaches the bridge through one veth pair from its own namespace. A cut
//! is a blackhole route each way between two nodes: their packets to each
//! other are dropped, established connections stall, new ones fail.
//!
//! It needs root and iproute2's `ip`, as CI has; without them creating the
//! network fails, loudly (a fault test is never skipped).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A failure to set up or change the test network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `ip` could not be run at all.
    #[error("cannot run `ip {args}` (is iproute2 installed?): {source}")]
    Spawn {
        /// Its arguments.
        args: String,
        /// Why.
        source: std::io::Error,
    },
    /// `ip` ran and refused.
    #[error("`ip {args}` failed (fault tests need root): {stderr}")]
    Refused {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// A node name not in the network.
    #[error("no node {0} in the test network")]
    NoSuchNode(String),
}

/// The namespaces, links and addresses of one test cluster. Dropping it
/// deletes them all.
#[derive(Debug)]
pub struct Network {
    hub: String,
    host_link: String,
    /// Node name to (namespace, address).
    nodes: HashMap<String, (String, Ipv4Addr)>,
}

/// Tells apart the networks of one test process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`.
fn ip(args: &[&str]) -> Result<(), NetError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Refused {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

impl Network {
    /// Makes a namespace for each of `names` (at most 240), on one bridge
    /// that this process reaches.
    pub fn create(names: &[String]) -> Result<Network, NetError> {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:04x}{:x}", pid & 0xffff, n & 0xff);
        // 10.a.b.0/24, from the process and the count (10.0/16 avoided).
        let subnet = (100 + (pid % 100) as u8, (n % 250) as u8);
        let mut network = Network {
            hub: format!("pygmy-{tag}-hub"),
            host_link: format!("pyg{tag}"),
            nodes: HashMap::new(),
        };
        // From here on, a failure drops `network`, which removes what was
        // made.
        let hub = network.hub.clone();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let host_link = network.host_link.clone();
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"])?;
        let host_addr = format!("10.{}.{}.1/24", subnet.0, subnet.1);
        ip(&["addr", "add", &host_addr, "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let host = u8::try_from(10 + i).unwrap_or(250);
            let addr = Ipv4Addr::new(10, subnet.0, subnet.1, host);
            let namespace = format!("pygmy-{tag}-{name}");
            ip(&["netns", "add", &namespace])?;
            network
                .nodes
                .insert(name.clone(), (namespace.clone(), addr));
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &namespace,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    fn node(&self, name: &str) -> Result<&(String, Ipv4Addr), NetError> {
        self.nodes
            .get(name)
            .ok_or_else(|| NetError::NoSuchNode(name.to_owned()))
    }

    /// Node `name`'s address.
    pub fn addr(&self, name: &str) -> Result<Ipv4Addr, NetError> {
        Ok(self.node(name)?.1)
    }

    /// Node `name`'s namespace (to run it with `ip netns exec`).
    pub fn namespace(&self, name: &str) -> Result<&str, NetError> {
        Ok(&self.node(name)?.0)
    }

    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), NetError> {
        self.routes("add", a, b)
    }

    /// Heals a cut made by [`Network::cut`].
    pub fn heal(&self, a: &str, b: &str) -> Result<(), NetError> {
        self.routes("del", a, b)
    }

    fn routes(&self, verb: &str, a: &str, b: &str) -> Result<(), NetError> {
        let (ns_a, addr_a) = self.node(a)?;
        let (ns_b, addr_b) = self.node(b)?;
        ip(&[
            "-n",
            ns_a,
            "route",
            verb,
            "blackhole",
            &format!("{addr_b}/32"),
        ])?;
        ip(&[
            "-n",
            ns_b,
            "route",
            verb,
            "blackhole",
            &format!("{addr_a}/32"),
        ])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting the hub takes the host's end of its veth pair too, but
        // not at once: delete that explicitly.
        let _ = ip(&["link", "del", &self.host_link]);
        for (namespace, _) in self.nodes.values() {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}
