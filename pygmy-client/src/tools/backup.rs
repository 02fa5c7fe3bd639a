//! `pygmy-client backup --service catalog|order FILE`: a consistent copy
//! of a running raft service, taken by one of its replicas after a read
//! index (`GET /backup`) and written to FILE as it comes, never whole in
//! memory. It lands in `FILE.partial` first and takes FILE's name only
//! once it is whole (it ends with its end line) and synced: a FILE is
//! always a backup that can be restored (`pygmy-server --restore`).

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use pygmy_core::api::routes::{CatalogRoute, OrderRoute};
use pygmy_core::topology::{Role, Topology};
use serde::Serialize;

use crate::error::ClientError;
use crate::http::ClientOptions;
use crate::nodes::InternalClient;

/// A backup taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taken {
    /// Where it is.
    pub path: PathBuf,
    /// The replica that wrote it.
    pub replica: String,
    /// The service.
    pub service: String,
    /// The last log entry it reflects.
    pub last_log_index: u64,
    /// Its size.
    pub bytes: u64,
}

/// Why a backup could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupFailed {
    /// No replica of the service could send one.
    #[error("no {service} replica could send a backup: {last}")]
    NoReplica {
        /// The service.
        service: Role,
        /// What the last one tried answered.
        last: ClientError,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// What arrived is not a whole backup.
    #[error("the backup {replica} sent is not whole: {reason}")]
    NotWhole {
        /// The replica that sent it.
        replica: String,
        /// What is wrong.
        reason: String,
    },
}

/// Takes a backup of shard `shard` of service `role` of `topology` (0 for
/// a service of one shard) into `path`: asks the shard's replicas in turn
/// until one sends a whole backup.
pub async fn backup(
    topology: &Topology,
    (role, shard): (Role, usize),
    options: &ClientOptions,
    path: &Path,
) -> Result<Taken, BackupFailed> {
    let partial = {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    };
    let write_failed = |source| BackupFailed::Write {
        path: partial.clone(),
        source,
    };
    let mut last = ClientError::InvalidUrl(format!("the topology has no {role} replica"));
    for (name, url) in topology.shard_urls(role, shard) {
        let replica = match InternalClient::new(&url, options) {
            Ok(replica) => replica,
            Err(err) => {
                last = err;
                continue;
            }
        };
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(write_failed)?;
        let sent = match role {
            Role::Order => replica.backup(&OrderRoute::Backup, &mut file).await,
            _ => replica.backup(&CatalogRoute::Backup, &mut file).await,
        };
        match sent {
            Ok(bytes) => {
                file.sync_all().await.map_err(write_failed)?;
                drop(file);
                let checked = partial.clone();
                let (service, index) = tokio::task::spawn_blocking(move || whole(&checked))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|whole| whole)
                    .map_err(|reason| BackupFailed::NotWhole {
                        replica: name.clone(),
                        reason,
                    })?;
                tokio::fs::rename(&partial, path)
                    .await
                    .map_err(write_failed)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if let Ok(dir) = tokio::fs::File::open(dir).await {
                        let _ = dir.sync_all().await;
                    }
                }
                return Ok(Taken {
                    path: path.to_path_buf(),
                    replica: name,
                    service,
                    last_log_index: index,
                    bytes,
                });
            }
            // One that cannot serve now (catching up, cut off): the next.
            Err(err) if err.is_replica_failure() => last = err,
            Err(err) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(BackupFailed::NoReplica {
                    service: role,
                    last: err,
                });
            }
        }
    }
    let _ = tokio::fs::remove_file(&partial).await;
    Err(BackupFailed::NoReplica {
        service: role,
        last,
    })
}

/// The service and last log index of the backup at `path`, if it is
/// whole: its first line names them, and its last line, the end line,
/// names the same index.
fn whole(path: &Path) -> Result<(String, u64), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut first = String::new();
    std::io::BufReader::new(&mut file)
        .take(1024 * 1024)
        .read_line(&mut first)
        .map_err(|e| e.to_string())?;
    let header: serde_json::Value =
        serde_json::from_str(first.trim_end()).map_err(|e| format!("its first line: {e}"))?;
    let service = header["service"].as_str().unwrap_or_default().to_owned();
    let index = header["last_log_id"]["index"]
        .as_u64()
        .ok_or("its first line names no last log index")?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let tail_len = len.min(256);
    file.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| e.to_string())?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).map_err(|e| e.to_string())?;
    let end = tail
        .strip_suffix('\n')
        .and_then(|t| t.rsplit('\n').next())
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .and_then(|line| line["backup_end"].as_u64());
    match end {
        Some(end) if end == index => Ok((service, index)),
        _ => Err("it has no end line: it was cut short".to_owned()),
    }
}
