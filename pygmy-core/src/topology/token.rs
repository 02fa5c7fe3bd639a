//! The cluster token: where each node finds it ([`Topology::resolve_token`]:
//! `PYGMY_TOKEN`, the topology, or the token file), and the token file a
//! loopback cluster writes at its first start, once for all its nodes even
//! when they start at the same moment.

use std::path::{Path, PathBuf};

use super::{ConfigError, Topology};

/// Where a node's cluster token came from ([`Topology::resolve_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token` in the topology.
    Topology,
    /// The environment (`PYGMY_TOKEN`).
    Environment,
    /// The token file, written at an earlier start.
    File(PathBuf),
    /// The token file, written now: this is the cluster's first start.
    Generated(PathBuf),
}

/// The environment variable that sets the cluster token (over the
/// topology's).
pub const TOKEN_ENV: &str = "PYGMY_TOKEN";

/// The token in `path`, if the file exists.
fn read_token(path: &Path) -> Result<Option<String>, ConfigError> {
    refuse_if_shared(path)?;
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(ConfigError::TokenFile {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        }),
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::TokenFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Refuses a token file that users other than its owner may read (on
/// Unix: any permission bit for group or others): the token grants every
/// internal write, and a file anyone can read gives it to anyone. A file
/// that does not exist is left to the caller.
fn refuse_if_shared(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::TokenFile {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        if mode & 0o077 != 0 {
            return Err(ConfigError::TokenFile {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "group or others may read it (mode {:o}): the token grants every \
                         internal write; make it the owner's only (chmod 600)",
                        mode & 0o777
                    ),
                ),
            });
        }
    }
    Ok(())
}

/// Writes a new random token to `path`, unless another node of the cluster
/// wrote one first: the token is written whole to a draft file of its own,
/// then linked to `path`, which fails if `path` exists; the loser reads
/// the winner's. Answers the token in `path`.
fn write_new_token(path: &Path) -> Result<String, ConfigError> {
    use std::io::Write;
    let failed = |source| ConfigError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    // 244 random bits, as 64 hex digits.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let draft = path.with_extension(format!("new-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&draft).and_then(|mut file| {
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&draft, path));
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => Ok(token),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_token(path)?
            .ok_or_else(|| failed(std::io::Error::from(std::io::ErrorKind::NotFound))),
        Err(err) => Err(failed(err)),
    }
}

impl Topology {
    /// Where a generated cluster token is kept.
    pub fn token_file(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join("cluster.token"))
    }

    /// Sets [`Topology::token`] to the cluster token every node uses, and
    /// says where it came from: `from_env` (the value of `PYGMY_TOKEN`, if
    /// set and not blank), else the topology's `token`, else the token
    /// file. With none of them, a topology whose nodes all listen on
    /// loopback gets a new random token, written to the token file (mode
    /// 0600) for the other nodes and the operator's tools; one with a
    /// non-loopback address is refused, since its nodes on other hosts
    /// could not share a generated token. With `generate` false (a client
    /// tool), a missing token is `Ok(None)`.
    pub fn resolve_token(
        &mut self,
        from_env: Option<String>,
        generate: bool,
    ) -> Result<Option<TokenSource>, ConfigError> {
        if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
            self.token = Some(token.trim().to_owned());
            return Ok(Some(TokenSource::Environment));
        }
        if self.token.is_some() {
            return Ok(Some(TokenSource::Topology));
        }
        let path = self.token_file();
        if let Some(token) = read_token(&path)? {
            self.token = Some(token);
            return Ok(Some(TokenSource::File(path)));
        }
        if !generate {
            return Ok(None);
        }
        if let Some(node) = self.nodes.iter().find(|n| !n.addr.ip().is_loopback()) {
            return Err(ConfigError::NoToken(format!(
                "{} ({})",
                node.name, node.addr
            )));
        }
        let token = write_new_token(&path)?;
        self.token = Some(token);
        Ok(Some(TokenSource::Generated(path)))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn local_in(dir: &Path) -> Topology {
        let mut topology = Topology::default_local();
        topology.token_file = Some(dir.join("data").join("cluster.token"));
        topology
    }

    #[test]
    fn a_token_is_generated_at_first_start_and_kept_for_every_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut client = local_in(dir.path());
        assert_eq!(client.resolve_token(None, false).expect("resolve"), None);
        let mut first = local_in(dir.path());
        let source = first.resolve_token(None, true).expect("generate");
        assert!(
            matches!(source, Some(TokenSource::Generated(_))),
            "{source:?}"
        );
        let token = first.token.clone().expect("a token");
        assert_eq!(token.len(), 64);
        let mut second = local_in(dir.path());
        let source = second.resolve_token(None, true).expect("read");
        assert!(matches!(source, Some(TokenSource::File(_))), "{source:?}");
        assert_eq!(second.token.as_deref(), Some(token.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(first.token_file())
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut set = local_in(dir.path());
        set.token = Some("from-the-file".into());
        set.resolve_token(Some("from-env".into()), true)
            .expect("env");
        assert_eq!(set.token.as_deref(), Some("from-env"));
        set.resolve_token(Some("  ".into()), true)
            .expect("blank env");
        assert_eq!(set.token.as_deref(), Some("from-env"));
    }

    /// A token file group or others may read is refused, with what to do;
    /// the owner's alone is read.
    #[cfg(unix)]
    #[test]
    fn a_token_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut topology = local_in(dir.path());
        let path = topology.token_file();
        std::fs::create_dir_all(path.parent().expect("a dir")).expect("mkdir");
        std::fs::write(&path, "a-token\n").expect("write");
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let refused = topology.resolve_token(None, true);
            assert!(
                matches!(&refused, Err(ConfigError::TokenFile { source, .. })
                    if source.kind() == std::io::ErrorKind::PermissionDenied
                        && source.to_string().contains("chmod 600")),
                "mode {mode:o}: {refused:?}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        topology
            .resolve_token(None, true)
            .expect("the owner's alone");
        assert_eq!(topology.token.as_deref(), Some("a-token"));
    }

    #[test]
    fn nodes_racing_at_first_start_agree_on_one_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.token");
        let tokens: Vec<String> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| write_new_token(&path).expect("token")))
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("join"))
                .collect()
        });
        assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    }

    #[test]
    fn a_cluster_beyond_loopback_needs_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut open = local_in(dir.path());
        open.nodes[1].addr = SocketAddr::from(([0, 0, 0, 0], 8011));
        let refused = open.resolve_token(None, true);
        assert!(
            matches!(refused, Err(ConfigError::NoToken(ref node)) if node.contains("catalog-a"))
        );
        assert!(!open.token_file().exists());
        open.resolve_token(Some("shared".into()), true)
            .expect("env token");
        assert_eq!(open.token.as_deref(), Some("shared"));
    }
}
