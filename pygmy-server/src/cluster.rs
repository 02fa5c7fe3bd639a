//! [`Cluster`]: many nodes of one topology in one process (the all-in-one
//! mode of `pygmy-server`, and the tests' harness).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use pygmy_core::topology::{ConfigError, Topology};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::node::{bind, probe_client, public_tls, run_node, NodeError};

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

/// Many nodes of one topology, running in this process.
pub struct Cluster {
    topology: Topology,
    running: HashMap<String, Running>,
}

impl Cluster {
    /// Binds every node's address first (a port 0 becomes a free port,
    /// written back into the topology, so that the nodes find each other),
    /// then starts them all.
    pub async fn start(mut topology: Topology) -> Result<Cluster, NodeError> {
        crate::node::resolve_token_off_runtime(&mut topology).await?;
        let mut listeners = Vec::new();
        for node in &mut topology.nodes {
            let listener = bind(node.addr).await?;
            node.addr = listener.local_addr().map_err(|source| NodeError::Bind {
                addr: node.addr,
                source,
            })?;
            listeners.push((node.name.clone(), listener));
        }
        let mut cluster = Cluster {
            topology,
            running: HashMap::new(),
        };
        for (name, listener) in listeners {
            cluster.spawn(&name, listener);
        }
        Ok(cluster)
    }

    fn spawn(&mut self, name: &str, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let topology = self.topology.clone();
        let node = name.to_owned();
        let span = tracing::info_span!("node", node = %name);
        let task = tokio::spawn(
            async move {
                let result = run_node(&topology, &node, listener, async {
                    let _ = stopped.await;
                })
                .await;
                if let Err(err) = &result {
                    tracing::error!(%err, "node failed");
                }
                result
            }
            .instrument(span),
        );
        self.running.insert(name.to_owned(), Running { stop, task });
    }

    /// The topology, with the addresses actually bound.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// `http://addr` of node `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        self.topology.node(name).map(|n| self.topology.url(n))
    }

    /// Waits until every running node answers `/ready` with 200, at most
    /// `timeout` (backends first: a frontend is ready once it reaches them).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let topology = self.topology.clone();
        let tls = tokio::task::spawn_blocking(move || public_tls(&topology))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for name in self.running.keys() {
            let url = self.url(name).ok_or_else(|| format!("no node {name}"))?;
            let client = probe_client(&url, tls.clone()).map_err(|e| e.to_string())?;
            loop {
                if client.ready().await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("{name} is not ready after {timeout:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Stops node `name` gracefully (it finishes the requests under way,
    /// then closes every connection; its peers then find it refusing
    /// connections) and waits until it has stopped.
    pub async fn stop_node(&mut self, name: &str) -> Result<(), NodeError> {
        match self.running.remove(name) {
            Some(running) => stop(name, running).await,
            None => Ok(()),
        }
    }

    /// Starts node `name` again on its address, over its data.
    pub async fn restart_node(&mut self, name: &str) -> Result<(), NodeError> {
        self.stop_node(name).await?;
        let addr = self
            .topology
            .node(name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_owned()))?
            .addr;
        let listener = bind(addr).await?;
        self.spawn(name, listener);
        Ok(())
    }

    /// Runs until `signal` completes, or until a node fails (a store that
    /// cannot be opened, say), then stops every node.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        let mut signal = std::pin::pin!(signal);
        loop {
            let failed = self
                .running
                .iter()
                .find(|(_, running)| running.task.is_finished())
                .map(|(name, _)| name.clone());
            if let Some(name) = failed {
                let running = self.running.remove(&name);
                let result = match running {
                    Some(running) => stop(&name, running).await,
                    None => Ok(()),
                };
                let _ = self.shutdown().await;
                return match result {
                    Ok(()) => Err(NodeError::Stopped(name)),
                    Err(err) => Err(err),
                };
            }
            tokio::select! {
                () = &mut signal => return self.shutdown().await,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Stops every node; the first error of any node, if one failed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let mut first = Ok(());
        for (name, running) in self.running.drain() {
            let result = stop(&name, running).await;
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

async fn stop(name: &str, running: Running) -> Result<(), NodeError> {
    let _ = running.stop.send(());
    match running.task.await {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(node = %name, %err, "node task panicked");
            Ok(())
        }
    }
}
