//! A CA and node processes on loopback: real `ztmesh ca serve` and `ztmesh run` children with
//! real TLS sockets and SQLite files in one temporary directory, for `ztmesh bench mesh`.
//!
//! Every child is started with `kill_on_drop`, so dropping the [`LocalMesh`] (also on an early
//! error) ends them all; nothing here may outlive the run or listen beyond 127.0.0.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;
use ztmesh_ca::ca_service::{self, CaDir};
use ztmesh_node::ca_client::{self, CaClient, EnrollOptions};
use ztmesh_node::node_client::{LocalApiClient, NodeApiClient};
use ztmesh_node::node_dir::{BoundAddrs, NodeDir};
use ztmesh_pki::keyfile::Protection;
use ztmesh_runtime::api_types::{PeersResponse, RevokeRequest, TokenRequest};

/// How long a child may take to bind its listeners (key files are decrypted with argon2 first,
/// and many children may be doing so at once on a small machine).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(90);

/// Lines of a dead child's log quoted in the error.
const LOG_TAIL_LINES: usize = 20;

/// The CA process and the node processes of one local mesh, with what it takes to reach them.
pub struct LocalMesh {
    started: Instant,
    root: PathBuf,
    passphrase: Zeroizing<String>,
    /// Running children; `kill_on_drop` makes dropping them the cleanup.
    children: Vec<ChildProcess>,
    ca_url: String,
    ca_fingerprint: String,
    admin: CaClient,
    admin_token: Zeroizing<String>,
    /// Declared last so that it is removed after the children are gone (fields drop in order).
    _temp: tempfile::TempDir,
}

/// One child process and where its stderr goes.
struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A node enrolled in the mesh (its process may or may not be running).
#[derive(Debug, Clone)]
pub struct EnrolledNode {
    /// Process name, also the data directory's name.
    pub name: String,
    /// Its data directory.
    pub dir: NodeDir,
    /// Its NodeId.
    pub node_id: String,
}

/// Clients of one running node: its mesh API (as the node itself, for `peers`) and its local
/// application API (anomalies, bundles, events).
pub struct NodeClients {
    /// `GET /v1/mesh/peers`, `GET /v1/status`.
    pub api: NodeApiClient,
    /// The local application API.
    pub app: Arc<LocalApiClient>,
}

impl LocalMesh {
    /// Creates a CA in a fresh temporary directory and starts `ztmesh ca serve` with
    /// `ca_serve_args` added; returns once it listens.
    pub async fn start_ca(
        prefix: &str,
        trust_domain: &str,
        ca_serve_args: &[&str],
    ) -> Result<Self> {
        let temp = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let root = temp.path().to_owned();
        let mut secret = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let passphrase = Zeroizing::new(hex::encode(secret));
        let ca_dir = CaDir(root.join("ca"));
        let report = ca_service::init_ca(
            &ca_dir,
            trust_domain.parse().map_err(|e| anyhow!("{e}"))?,
            &Protection::Passphrase(passphrase.as_bytes()),
            Duration::from_secs(86_400),
        )?;
        let ca_dir_text = ca_dir.0.display().to_string();
        let mut args = vec![
            "ca",
            "serve",
            "--data-dir",
            &ca_dir_text,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(ca_serve_args);
        let children = vec![spawn_child(
            "ca",
            &args,
            &passphrase,
            ca_dir.0.join("serve.log"),
        )?];
        let ca_addr = wait_for("the CA to listen", LISTEN_TIMEOUT, || async {
            std::fs::read_to_string(ca_dir.addr_file()).ok()
        })
        .await?;
        let ca_url = format!("https://{}", ca_addr.trim());
        let ca_der = NodeDir::read_cert(&ca_dir.ca_cert())?;
        let admin_token = Zeroizing::new(
            std::fs::read_to_string(ca_dir.admin_token())?
                .trim()
                .to_owned(),
        );
        let admin = CaClient::new(&ca_url, &ca_der, None)?;
        Ok(LocalMesh {
            started: Instant::now(),
            root,
            passphrase,
            children,
            ca_url,
            ca_fingerprint: report.fingerprint,
            admin,
            admin_token,
            _temp: temp,
        })
    }

    /// Time since the CA began to answer.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints a progress line stamped with the time since start.
    pub fn step(&self, text: &str) {
        out!("[{:>6.1}s] {text}", self.elapsed().as_secs_f64());
    }

    /// Enrolls `names.len()` nodes, `parallel` at a time (each enrollment seals two keys with
    /// argon2, which is what takes the time).
    pub async fn enroll(&self, names: &[String], parallel: usize) -> Result<Vec<EnrolledNode>> {
        let mut enrolled = Vec::with_capacity(names.len());
        for batch in names.chunks(parallel.max(1)) {
            let mut tasks = tokio::task::JoinSet::new();
            for name in batch {
                let (admin, token) = (self.admin.clone(), self.admin_token.clone());
                let (ca_url, fingerprint) = (self.ca_url.clone(), self.ca_fingerprint.clone());
                let passphrase = self.passphrase.clone();
                let dir = NodeDir(self.root.join(name));
                let name = name.clone();
                tasks.spawn(async move {
                    let request = TokenRequest {
                        ttl_sec: Some(600),
                        node_id: None,
                    };
                    let token = admin.create_token(&token, &request).await?.token;
                    let outcome = ca_client::enroll(
                        &dir,
                        EnrollOptions {
                            ca_url: &ca_url,
                            ca_fingerprint: &fingerprint,
                            token: &token,
                            protection: Protection::Passphrase(passphrase.as_bytes()),
                            listen: ([127, 0, 0, 1], 0).into(),
                            api_listen: ([127, 0, 0, 1], 0).into(),
                        },
                    )
                    .await
                    .with_context(|| format!("enrolling {name}"))?;
                    anyhow::Ok(EnrolledNode {
                        name,
                        dir,
                        node_id: outcome.config.node_id.to_string(),
                    })
                });
            }
            while let Some(done) = tasks.join_next().await {
                enrolled.push(done??);
            }
        }
        // Batches finish in any order; keep the caller's.
        enrolled.sort_by_key(|node| names.iter().position(|n| *n == node.name));
        Ok(enrolled)
    }

    /// Starts `ztmesh run` for `node` with `extra_args`, logging to `<dir>/<log_name>`.
    pub fn start_node(
        &mut self,
        node: &EnrolledNode,
        extra_args: &[&str],
        log_name: &str,
    ) -> Result<()> {
        let dir = node.dir.0.display().to_string();
        let mut args = vec!["run", "--data-dir", &dir];
        args.extend_from_slice(extra_args);
        let child = spawn_child(
            &node.name,
            &args,
            &self.passphrase,
            node.dir.0.join(log_name),
        )?;
        self.children.push(child);
        Ok(())
    }

    /// Waits until a freshly started `node` has written its bound addresses.
    pub async fn wait_listening(&mut self, node: &EnrolledNode) -> Result<BoundAddrs> {
        let addr_file = node.dir.addr_file();
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let addrs = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str::<BoundAddrs>(&text).ok());
            if let Some(addrs) = addrs {
                return Ok(addrs);
            }
            self.check_children()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {}s waiting for {} to listen",
                    LISTEN_TIMEOUT.as_secs(),
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Builds the clients of a running node. Opening the mesh API client decrypts the node's
    /// TLS key (argon2), so it runs on the blocking pool.
    pub async fn clients(&self, node: &EnrolledNode) -> Result<NodeClients> {
        let dir = node.dir.clone();
        let passphrase = self.passphrase.clone();
        let api = tokio::task::spawn_blocking(move || {
            NodeApiClient::from_dir(&dir, &Protection::Passphrase(passphrase.as_bytes()))
        })
        .await??;
        Ok(NodeClients {
            api,
            app: Arc::new(LocalApiClient::from_dir(&node.dir)?),
        })
    }

    /// Stops a child with SIGKILL and forgets it; unknown names are ignored.
    pub async fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|c| c.name == name) {
            let mut process = self.children.remove(i);
            let _ = process.child.kill().await;
        }
    }

    /// Fails if a child exited on its own, quoting the end of its log (the directory holding
    /// the log is removed with the mesh).
    pub fn check_children(&mut self) -> Result<()> {
        for process in &mut self.children {
            if let Ok(Some(status)) = process.child.try_wait() {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                bail!(
                    "{} exited unexpectedly ({status}); its log ends:\n{tail}",
                    process.name
                );
            }
        }
        Ok(())
    }

    /// Revokes every certificate of `node_id` through the CA's admin API.
    pub async fn revoke(&self, node_id: &str) -> Result<()> {
        self.admin
            .revoke(
                &self.admin_token,
                &RevokeRequest {
                    serial: None,
                    node_id: Some(node_id.to_owned()),
                    reason: Some(ztmesh_pki::RevocationReason::KeyCompromise),
                },
            )
            .await?;
        Ok(())
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        // `kill_on_drop` would do it too; killing first means no child writes into the
        // temporary directory while it is being removed.
        for process in &mut self.children {
            let _ = process.child.start_kill();
        }
    }
}

/// Number of links `peers` reports up.
pub fn connected_links(peers: &PeersResponse) -> usize {
    peers.peers.iter().filter(|p| p.connected).count()
}

/// Whether `peers` shows a link to `node_id` up.
pub fn is_connected_to(peers: &PeersResponse, node_id: &str) -> bool {
    peers
        .peers
        .iter()
        .any(|p| p.node_id == node_id && p.connected)
}

fn spawn_child(name: &str, args: &[&str], passphrase: &str, log: PathBuf) -> Result<ChildProcess> {
    let exe = std::env::current_exe().context("locating the ztmesh binary")?;
    let log_file = ztmesh_runtime::private_files::create_private_log(&log)
        .with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .env("ZTMESH_PASSPHRASE", passphrase)
        .env("ZTMESH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(ChildProcess {
        name: name.to_owned(),
        child,
        log,
    })
}

/// Calls `probe` every 50 ms until it returns a value; fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
