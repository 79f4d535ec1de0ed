//! `ztmesh demo`: a real local mesh — a CA and N node processes on loopback with real TLS
//! sockets and SQLite files in a temporary directory — that shows enrollment, the mesh
//! forming, trust tiers earned by link attestation (with a simulated TEE) and a governance vote,
//! a revocation refused by every other node, and certificate rotation without a gap.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::local_mesh::wait_for;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use sha2::Digest;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use zeroize::Zeroizing;
use ztmesh_ca::ca_service::{self, CaDir};
use ztmesh_node::ca_client::{self, CaClient, EnrollOptions};
use ztmesh_node::local_api::{PublishAnomalyRequest, SendBundleRequest};
use ztmesh_node::node_client::{LocalApiClient, NodeApiClient};
use ztmesh_node::node_dir::{BoundAddrs, NodeDir};
use ztmesh_pki::keyfile::Protection;
use ztmesh_runtime::api_types::{PeersResponse, RevokeRequest, StatusResponse, TokenRequest};
use ztmesh_runtime::private_files;
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

/// Options of `ztmesh demo` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes (3..=16).
    pub nodes: u32,
    /// Keep the mesh running at the end and print commands to inspect it (Ctrl-C stops it).
    pub keep: bool,
    /// Directory to use instead of a fresh temporary one (must not exist yet).
    pub dir: Option<PathBuf>,
}

/// Witnesses of the membership log.
const WITNESSES: usize = 3;

/// Certificate lifetime used by the demo: the shortest allowed, so a rotation happens within it.
/// Long enough that rotation (at 2/3 of the lifetime, counted from the back-dated notBefore)
/// comes after the steps before it, short enough to watch it happen.
const DEMO_CERT_LIFETIME: &str = "90s";

/// One passphrase per key owner (the CA, each witness, each node), as in a real mesh where
/// each machine's operator keeps its own: derived from a fresh random secret and the owner's
/// name, so that the demo can print the one an owner needs and nothing else.
#[derive(Clone)]
struct DemoPassphrases {
    secret: Zeroizing<[u8; 32]>,
}

impl DemoPassphrases {
    fn generate() -> DemoPassphrases {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, secret.as_mut());
        DemoPassphrases { secret }
    }

    /// The passphrase of `owner`'s keys: 32 hex digits.
    fn of(&self, owner: &str) -> Zeroizing<String> {
        let mut hash = sha2::Sha256::new();
        hash.update(b"ztmesh demo passphrase\0");
        hash.update(self.secret.as_ref());
        hash.update(owner.as_bytes());
        Zeroizing::new(hex::encode(&hash.finalize()[..16]))
    }

    fn bytes_of(&self, owner: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.of(owner).as_bytes().to_vec())
    }
}

struct Demo {
    started: Instant,
    root: PathBuf,
    passphrases: DemoPassphrases,
    children: Vec<(String, Child)>,
}

impl Demo {
    fn step(&self, text: &str) {
        out!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn spawn(&mut self, name: &str, args: &[&str], log: &Path) -> Result<()> {
        let exe = std::env::current_exe().context("locating the ztmesh binary")?;
        self.spawn_exe(&exe, name, args, log)
    }

    /// Like [`Demo::spawn`], running the executable `exe`.
    fn spawn_exe(&mut self, exe: &Path, name: &str, args: &[&str], log: &Path) -> Result<()> {
        let log_file = private_files::create_private_log(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .args(args)
            .env("ZTMESH_PASSPHRASE", self.passphrases.of(name).as_str())
            .env("ZTMESH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Runs a `ztmesh` command for the keys of `owner` to completion; fails with its stderr.
    async fn run_to_end(&self, owner: &str, args: &[&str]) -> Result<()> {
        let exe = std::env::current_exe().context("locating the ztmesh binary")?;
        let output = Command::new(exe)
            .args(args)
            .env("ZTMESH_PASSPHRASE", self.passphrases.of(owner).as_str())
            .stdin(Stdio::null())
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "ztmesh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops a child (SIGKILL) and forgets it.
    async fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill().await;
        }
    }

    /// Fails early if a child died (its log says why).
    fn check_children(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{name} exited unexpectedly ({status}); see its log under {}",
                    self.root.display()
                );
            }
        }
        Ok(())
    }
}

struct DemoNode {
    name: String,
    dir: NodeDir,
    node_id: String,
    api: Option<NodeApiClient>,
    addrs: Option<BoundAddrs>,
}

impl DemoNode {
    async fn peers(&self) -> Option<PeersResponse> {
        self.api.as_ref()?.peers().await.ok()
    }
    async fn status(&self) -> Option<StatusResponse> {
        self.api.as_ref()?.status().await.ok()
    }
}

fn connected(peers: &PeersResponse) -> usize {
    peers.peers.iter().filter(|p| p.connected).count()
}

/// Runs the demo.
pub async fn run(args: DemoOptions) -> Result<()> {
    crate::check_bounds("nodes", args.nodes, 3..=16)?;
    let (root, _temp) = match &args.dir {
        Some(dir) => {
            if dir.exists() {
                bail!("{} already exists; give a new directory", dir.display());
            }
            private_files::create_private_dir(dir)?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("ztmesh-demo-").tempdir()?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let mut demo = Demo {
        started: Instant::now(),
        root: root.clone(),
        passphrases: DemoPassphrases::generate(),
        children: Vec::new(),
    };
    let n = args.nodes as usize;
    out!(
        "ztmesh demo: a CA and {n} nodes on loopback, state in {}",
        root.display()
    );

    // 1. CA
    let ca_dir = CaDir(root.join("ca"));
    let ca_pass = demo.passphrases.bytes_of("ca");
    let report = ca_service::init_ca(
        &ca_dir,
        "demo.ztmesh.test".parse().map_err(|e| anyhow!("{e}"))?,
        &Protection::Passphrase(&ca_pass),
        Duration::from_secs(86_400),
    )?;
    demo.step(&format!(
        "CA created (Ed25519 root, trust domain demo.ztmesh.test, fingerprint {}…)",
        &report.fingerprint[..16]
    ));
    // Three witnesses of the membership log; the CA needs two of them to cosign.
    let log_vkey = std::fs::read_to_string(ca_dir.0.join("log.vkey"))?
        .trim()
        .to_owned();
    let mut witnesses = Vec::new();
    for i in 1..=WITNESSES {
        let dir = root.join(format!("witness-{i}"));
        let dir_text = dir.display().to_string();
        let name = format!("witness-{i}");
        demo.run_to_end(
            &name,
            &["witness", "init", "--data-dir", &dir_text, "--name", &name],
        )
        .await?;
        demo.run_to_end(
            &name,
            &[
                "witness",
                "add-log",
                "--data-dir",
                &dir_text,
                "--vkey",
                &log_vkey,
            ],
        )
        .await?;
        demo.spawn(
            &name,
            &["witness", "serve", "--data-dir", &dir_text],
            &dir.join("serve.log"),
        )?;
        let addr = wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(30),
            || async { std::fs::read_to_string(dir.join("witness.addr")).ok() },
        )
        .await?;
        let vkey = std::fs::read_to_string(dir.join("witness.vkey"))?
            .trim()
            .to_owned();
        witnesses.push((name, vkey, format!("http://{}", addr.trim())));
    }
    let mut policy_text = format!("log {log_vkey}\n");
    for (name, vkey, url) in &witnesses {
        policy_text.push_str(&format!("witness {name} {vkey} {url}\n"));
    }
    policy_text.push_str(&format!(
        "group two-of-three 2 {}\nquorum two-of-three\n",
        witnesses
            .iter()
            .map(|w| w.0.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let policy_path = root.join("log-policy.txt");
    std::fs::write(&policy_path, &policy_text)?;
    let policy = ztmesh_tlog::Policy::parse(&policy_text).map_err(|e| anyhow!("{e}"))?;
    demo.step(&format!(
        "{WITNESSES} witnesses of the membership log started; quorum policy: 2 of 3"
    ));

    // Attestation and reference values: a release key signs a manifest allowing this binary;
    // every node pins the release key, answers challenges with a simulated TEE and accepts
    // simulated evidence toward Tier 1 (demo only: a real mesh uses TPM/TDX/SGX/SEV-SNP).
    let exe = std::env::current_exe().context("locating the ztmesh binary")?;
    let own_hash: [u8; 32] = sha2::Sha256::digest(std::fs::read(&exe)?).into();
    let release_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let now_secs = ztmesh_runtime::timefmt::now().as_unix_secs();
    let manifest = ztmesh_attest::manifest::Manifest::new(
        "demo-1",
        now_secs,
        now_secs + 86_400,
        [own_hash].into_iter().collect(),
        [(
            ztmesh_attest::EvidenceType::Dev,
            ztmesh_attest::ReferenceValues(
                [(
                    "measurement".to_owned(),
                    [hex::encode(own_hash)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
        )]
        .into_iter()
        .collect(),
    )?
    .sign(&release_key)?;
    // Each node's simulated TEE has a key of its own, as each hardware TEE does: a node that
    // reads another's key file cannot answer in its name, and one key's leak is one node's.
    let tee_seeds: Vec<Zeroizing<[u8; 32]>> = (0..args.nodes)
        .map(|_| {
            let mut seed = Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
            seed
        })
        .collect();
    let tee_publics: Vec<String> = tee_seeds
        .iter()
        .map(|seed| {
            hex::encode(
                ed25519_dalek::SigningKey::from_bytes(seed)
                    .verifying_key()
                    .as_bytes(),
            )
        })
        .collect();
    // The CA checks the same evidence before it issues attestation tokens.
    let manifest_path = root.join("manifest.cose");
    std::fs::write(&manifest_path, manifest.as_bytes())?;
    let manifest_arg = manifest_path.display().to_string();
    let release_public_hex = hex::encode(release_key.verifying_key().as_bytes());
    let ca_dir_text = ca_dir.0.display().to_string();
    let policy_text_arg = policy_path.display().to_string();
    let mut ca_args = vec![
        "ca",
        "serve",
        "--data-dir",
        &ca_dir_text,
        "--listen",
        "127.0.0.1:0",
        "--cert-lifetime",
        DEMO_CERT_LIFETIME,
        // One node hears of a revocation from the CA; gossip tells the others.
        "--revocation-push",
        "1",
        "--log-policy",
        &policy_text_arg,
        // Attestation tokens: dev evidence (demo only) checked against the manifest.
        "--allow-dev-attestation",
        "--release-key",
        &release_public_hex,
        "--manifest",
        &manifest_arg,
    ];
    for public in &tee_publics {
        ca_args.extend(["--dev-tee-key", public.as_str()]);
    }
    demo.spawn("ca", &ca_args, &ca_dir.0.join("serve.log"))?;
    let ca_addr = wait_for("the CA to listen", Duration::from_secs(30), || async {
        std::fs::read_to_string(ca_dir.addr_file()).ok()
    })
    .await?;
    let ca_url = format!("https://{}", ca_addr.trim());
    demo.step(&format!(
        "CA serving its HTTPS API on {ca_url} (node certificates live {DEMO_CERT_LIFETIME})"
    ));
    let ca_der = NodeDir::read_cert(&ca_dir.ca_cert())?;
    let admin = std::fs::read_to_string(ca_dir.admin_token())?;
    let admin_client = CaClient::new(&ca_url, &ca_der, None)?;

    // 2. Enrollment
    let passphrases = demo.passphrases.clone();
    let enroll = |dir: NodeDir, token: String| {
        let ca_url = ca_url.clone();
        let fingerprint = report.fingerprint.clone();
        let owner = dir.0.file_name().unwrap_or_default().to_string_lossy();
        let pass = passphrases.bytes_of(&owner);
        async move {
            ca_client::enroll(
                &dir,
                EnrollOptions {
                    ca_url: &ca_url,
                    ca_fingerprint: &fingerprint,
                    token: &token,
                    protection: Protection::Passphrase(&pass),
                    listen: ([127, 0, 0, 1], 0).into(),
                    api_listen: ([127, 0, 0, 1], 0).into(),
                },
            )
            .await
        }
    };
    let mint = |ttl: u64| {
        let request = TokenRequest {
            ttl_sec: Some(ttl),
            node_id: None,
        };
        let (client, admin) = (admin_client.clone(), admin.clone());
        async move { client.create_token(&admin, &request).await }
    };
    let mut nodes = Vec::new();
    for i in 1..=n {
        let token = mint(600).await?;
        let dir = NodeDir(root.join(format!("node-{i}")));
        let outcome = enroll(dir.clone(), token.token).await?;
        let node_id = outcome.config.node_id.to_string();
        demo.step(&format!(
            "node-{i} enrolled with a one-time token: {node_id} (serial {}…)",
            &outcome.serial[..12]
        ));
        nodes.push(DemoNode {
            name: format!("node-{i}"),
            dir,
            node_id,
            api: None,
            addrs: None,
        });
    }
    // Tokens are single-use: show it.
    let reused = mint(60).await?.token;
    let first = enroll(NodeDir(root.join("probe")), reused.clone()).await;
    let second = enroll(NodeDir(root.join("probe-2")), reused).await;
    match (first, second) {
        (Ok(_), Err(error)) => demo.step(&format!("a token used twice is refused: {error}")),
        (a, b) => bail!(
            "token reuse check failed: first {:?}, second {:?}",
            a.err().map(|e| e.to_string()),
            b.err().map(|e| e.to_string())
        ),
    }

    for (node, tee_seed) in nodes.iter().zip(&tee_seeds) {
        std::fs::write(node.dir.0.join("manifest.cose"), manifest.as_bytes())?;
        private_files::write_private_file(
            &node.dir.0.join("dev-tee.key"),
            hex::encode(**tee_seed).as_bytes(),
        )?;
        let mut config = node.dir.read_config()?;
        config.health_interval_ms = 100;
        config.attestation = ztmesh_node::attestation::AttestationConfig {
            attester: ztmesh_node::attestation::Attester::Dev,
            dev_tee_key_file: Some("dev-tee.key".into()),
            dev_tee_public_keys: tee_publics.clone(),
            release_key: Some(hex::encode(release_key.verifying_key().as_bytes())),
            manifest: Some("manifest.cose".into()),
            reattest_secs: 1,
            ..Default::default()
        };
        node.dir.write_config(&config)?;
    }
    demo.step(&format!(
        "release manifest demo-1 signed by a release key pinned in every node.toml: allows binary sha256 {}…",
        &hex::encode(own_hash)[..16]
    ));
    demo.step("attestation: every node answers link challenges with a DEV (SIMULATED) TEE of its own key and accepts the others' toward tier 1 — demo only, not hardware");
    // The last node runs the same program with one byte appended: it behaves the same, but its
    // hash (and the measurement its TEE reports) is not in the manifest.
    let foreign = root.join("ztmesh-unlisted");
    let mut bytes = std::fs::read(&exe)?;
    bytes.push(0);
    std::fs::write(&foreign, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755))?;
    }
    demo.step(&format!(
        "{} will run {} (one byte appended: its sha256 is not in the manifest)",
        nodes[n - 1].name,
        foreign.display()
    ));

    // 3. Nodes
    for (i, node) in nodes.iter().enumerate() {
        let dir = node.dir.0.display().to_string();
        let program = if i == n - 1 {
            foreign.clone()
        } else {
            exe.clone()
        };
        demo.spawn_exe(
            &program,
            &node.name,
            &["run", "--data-dir", &dir],
            &node.dir.0.join("run.log"),
        )?;
    }
    for node in &mut nodes {
        let addr_file = node.dir.addr_file();
        let addrs: BoundAddrs = wait_for(
            &format!("{} to listen", node.name),
            Duration::from_secs(30),
            || async {
                std::fs::read_to_string(&addr_file)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
            },
        )
        .await?;
        node.api = Some(NodeApiClient::from_dir(
            &node.dir,
            &Protection::Passphrase(&demo.passphrases.bytes_of(&node.name)),
        )?);
        node.addrs = Some(addrs);
    }
    demo.step(&format!(
        "{n} node daemons started (mutual TLS 1.3, ALPN ztmesh/1)"
    ));

    // 4. The mesh forms
    let want = n * (n - 1);
    let mut last_reported = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        demo.check_children()?;
        let mut total = 0;
        for node in &nodes {
            total += node.peers().await.map(|p| connected(&p)).unwrap_or(0);
        }
        if total != last_reported {
            demo.step(&format!(
                "links up: {total}/{want} (each node counts its own)"
            ));
            last_reported = total;
        }
        if total == want {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the mesh did not form within 40s; logs are in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    demo.step("full mesh: every node has an authenticated link to every other node");

    // The membership log: every enrollment is an entry; witnesses cosign its checkpoints.
    let ca_https =
        ztmesh_node::ca_client::http_client(ztmesh_runtime::tls::ca_client_config(&ca_der, None)?)?;
    let enrolled = n as u64;
    let verified = wait_for(
        "a checkpoint of the membership log cosigned by 2 of 3 witnesses",
        Duration::from_secs(30),
        || async {
            let text = ca_https
                .get(format!("{ca_url}/v1/log/checkpoint"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let note = ztmesh_tlog::Note::parse(&text).ok()?;
            let verified = policy.verify_checkpoint(&note).ok()?;
            (verified.checkpoint.size() >= enrolled).then_some((text, verified))
        },
    )
    .await?;
    let (checkpoint_text, verified) = verified;
    let size = verified.checkpoint.size();
    // An auditor's check: the entries hash to the cosigned root.
    #[derive(serde::Deserialize)]
    struct Entries {
        entries: Vec<EntryLeaf>,
    }
    #[derive(serde::Deserialize)]
    struct EntryLeaf {
        leaf: String,
    }
    let entries: Entries = ca_https
        .get(format!("{ca_url}/v1/log/entries?start=0&count={size}"))
        .send()
        .await?
        .json()
        .await?;
    let mut tree = ztmesh_tlog::MerkleTree::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in &entries.entries {
        let leaf = base64::engine::general_purpose::STANDARD.decode(&entry.leaf)?;
        let kind = serde_json::from_slice::<serde_json::Value>(&leaf)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *kinds.entry(kind).or_default() += 1;
        tree.append(&leaf);
    }
    if tree.size() != size || tree.root() != verified.checkpoint.root() {
        bail!("the membership log entries do not hash to the cosigned checkpoint");
    }
    demo.step(&format!(
        "membership log: {size} entries ({}); checkpoint cosigned by {} — policy met, entries hash to its root",
        kinds
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", "),
        verified.cosigners.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    let _ = checkpoint_text;
    // A witness refuses to cosign history rolled back to an earlier size, even signed by the
    // log key itself.
    let keys = ca_service::load_ca_keys(&ca_dir, &Protection::Passphrase(&ca_pass), false)?;
    let old_size = size - 1;
    let rolled_back = ztmesh_tlog::Checkpoint::new(
        verified.checkpoint.origin(),
        old_size,
        tree.root_at(old_size)?,
    )?;
    let rolled_back_note = ztmesh_tlog::Note::sign(&rolled_back.to_string(), &[&keys.log])?;
    let request = ztmesh_tlog::AddCheckpointRequest::new(size, Vec::new(), rolled_back_note)?;
    // Witnesses speak plain HTTP (requests and answers are signed); the client is the same.
    let answer = ca_https
        .post(format!("{}/add-checkpoint", witnesses[0].2))
        .body(request.to_body())
        .send()
        .await?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if status.is_success() {
        bail!("{} cosigned a rolled-back checkpoint", witnesses[0].0);
    }
    demo.step(&format!(
        "{} refuses a checkpoint rolled back to size {old_size} (signed by the log key): HTTP {} {}",
        witnesses[0].0,
        status.as_u16(),
        body.trim()
    ));
    wait_for(
        "every node to accept the cosigned checkpoint",
        Duration::from_secs(30),
        || async {
            for node in &nodes {
                let status = node.status().await?;
                if status.log.size? < size {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    demo.step(&format!(
        "all {n} nodes checked it against the policy pinned at enrollment and accepted size {size}"
    ));

    // 5. Signed gossip: an anomaly signature published on one node reaches all.
    let apps: Vec<LocalApiClient> = nodes
        .iter()
        .map(|node| LocalApiClient::from_dir(&node.dir))
        .collect::<Result<_, _>>()?;
    let published_at = Instant::now();
    let anomaly = apps[0]
        .publish_anomaly(&PublishAnomalyRequest {
            event_sha256: hex::encode(sha2::Sha256::digest(
                b"demo: ssh brute force from 203.0.113.7",
            )),
            indicator: "ssh_bruteforce".into(),
            risk_score: 85,
            rule_id: Some("demo-rule-1".into()),
            metadata: [("port".to_owned(), "22".to_owned())].into(),
            ttl_sec: Some(600),
        })
        .await?;
    demo.step(&format!(
        "node-1 published an anomaly signature (COSE_Sign1 by its identity key): {}…",
        &anomaly.id[..16]
    ));
    wait_for(
        "the anomaly signature to reach every node",
        Duration::from_secs(30),
        || async {
            for app in &apps {
                let list = app.anomalies().await.ok()?;
                if !list.anomalies.iter().any(|a| a.id == anomaly.id) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    demo.step(&format!(
        "all {n} nodes verified and hold it after {} ms (pushed to gossip_fanout peers, anti-entropy for the rest)",
        published_at.elapsed().as_millis()
    ));

    // Trust tiers, earned on the live links.
    tiers_and_governance(&demo, &nodes, &apps, &tee_seeds, (&ca_https, &ca_url)).await?;

    // 6. Delay-tolerant bundle to a node that is offline.
    let offline = 1;
    demo.stop(&nodes[offline].name).await;
    demo.step(&format!(
        "{} goes offline (process killed)",
        nodes[offline].name
    ));
    wait_for(
        "node-1 to notice the node is gone",
        Duration::from_secs(30),
        || async {
            let peers = nodes[0].peers().await?;
            (!peers
                .peers
                .iter()
                .any(|p| p.node_id == nodes[offline].node_id && p.connected))
            .then_some(())
        },
    )
    .await?;
    let payload: Vec<u8> = b"field report 7: valve 3 pressure nominal\n".repeat(2000);
    let sent = apps[0]
        .send_bundle(&SendBundleRequest {
            destination: nodes[offline].node_id.clone(),
            ttl_sec: 600,
            payload: base64::engine::general_purpose::STANDARD.encode(&payload),
            service: Some("reports".into()),
        })
        .await?;
    let queued = apps[0]
        .bundles(true)
        .await?
        .queued
        .unwrap_or_default()
        .len();
    demo.step(&format!(
        "node-1 sent a {} KiB bundle to {}: 201 after it was on disk, {queued} piece(s) queued (BPv7, fragmented)",
        payload.len() / 1024,
        nodes[offline].name
    ));
    let back_at = Instant::now();
    let dir_text = nodes[offline].dir.0.display().to_string();
    let _ = std::fs::remove_file(nodes[offline].dir.addr_file());
    demo.spawn(
        &nodes[offline].name.clone(),
        &["run", "--data-dir", &dir_text],
        &nodes[offline].dir.0.join("run-2.log"),
    )?;
    wait_for("the node to come back", Duration::from_secs(30), || async {
        nodes[offline].dir.addr_file().exists().then_some(())
    })
    .await?;
    let returned = LocalApiClient::from_dir(&nodes[offline].dir)?;
    nodes[offline].api = Some(NodeApiClient::from_dir(
        &nodes[offline].dir,
        &Protection::Passphrase(&demo.passphrases.bytes_of(&nodes[offline].name)),
    )?);
    demo.step(&format!("{} is back online", nodes[offline].name));
    wait_for(
        "the bundle to be delivered",
        Duration::from_secs(60),
        || async {
            let list = returned.bundles(false).await.ok()?;
            list.delivered
                .iter()
                .any(|b| b.bundle_id == sent.bundle_id)
                .then_some(())
        },
    )
    .await?;
    let content = returned.bundle(&sent.bundle_id).await?;
    let received = base64::engine::general_purpose::STANDARD
        .decode(content.payload.as_bytes())
        .context("bundle payload")?;
    if received != payload {
        bail!("the delivered bundle differs from the one sent");
    }
    demo.step(&format!(
        "delivered to {} {} ms after it came back, byte for byte, exactly once",
        nodes[offline].name,
        back_at.elapsed().as_millis()
    ));
    wait_for("the mesh to re-form", Duration::from_secs(40), || async {
        for node in &nodes {
            if connected(&node.peers().await?) != n - 1 {
                return None;
            }
        }
        Some(())
    })
    .await?;

    let mut links_before = std::collections::HashMap::new();
    for node in &nodes[..n - 1] {
        if node.status().await.is_some_and(|s| s.rotations > 0) {
            bail!(
                "{} rotated before the rotation step could watch it (a very slow run); logs are in {}",
                node.name,
                root.display()
            );
        }
        if let Some(peers) = node.peers().await {
            for p in peers.peers.iter().filter(|p| p.connected) {
                links_before.insert((node.node_id.clone(), p.node_id.clone()), p.link_id);
            }
        }
    }

    // 5. Revocation
    let victim = &nodes[n - 1];
    let survivors = &nodes[..n - 1];
    let revoked_at = Instant::now();
    admin_client
        .revoke(
            &admin,
            &RevokeRequest {
                serial: None,
                node_id: Some(victim.node_id.clone()),
                reason: Some(ztmesh_pki::RevocationReason::KeyCompromise),
            },
        )
        .await?;
    demo.step(&format!(
        "revoked {} ({}): the CA signed a new CRL and a revocation record, and pushed the record to one node",
        victim.name, victim.node_id
    ));
    wait_for(
        "every node to drop the revoked node",
        Duration::from_secs(20),
        || async {
            for node in survivors {
                let peers = node.peers().await?;
                if peers
                    .peers
                    .iter()
                    .any(|p| p.node_id == victim.node_id && p.connected)
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    demo.step(&format!(
        "gossip carried it on: all {} other nodes closed their links to {} within {} ms",
        n - 1,
        victim.name,
        revoked_at.elapsed().as_millis()
    ));
    let refusal = handshake_as(
        &victim.dir,
        &demo.passphrases.bytes_of(&victim.name),
        survivors[0].addrs.as_ref().map(|a| a.mesh),
    )
    .await;
    match refusal {
        Err(reason) => demo.step(&format!(
            "{} tries to reconnect to {}: refused ({reason})",
            victim.name, survivors[0].name
        )),
        Ok(()) => bail!("the revoked node was able to open a link"),
    }

    // 6. Rotation
    demo.step(&format!(
        "waiting for automatic rotation at 2/3 of the {DEMO_CERT_LIFETIME} certificate lifetime…"
    ));
    let mut serials_before = Vec::new();
    for node in survivors {
        serials_before.push(
            node.status()
                .await
                .map(|s| s.certificate_serial)
                .unwrap_or_default(),
        );
    }
    wait_for(
        "every node to rotate its certificate",
        Duration::from_secs(90),
        || async {
            for node in survivors {
                if node.status().await?.rotations < 1 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    let mut kept = 0;
    let mut total_links = 0;
    let mut gaps = 0;
    for (i, node) in survivors.iter().enumerate() {
        let status = node
            .status()
            .await
            .ok_or_else(|| anyhow!("{} stopped answering", node.name))?;
        demo.step(&format!(
            "{} rotated: serial {}… → {}…",
            node.name,
            &serials_before[i][..12.min(serials_before[i].len())],
            &status.certificate_serial[..12]
        ));
        if let Some(peers) = node.peers().await {
            for p in peers.peers.iter().filter(|p| p.connected) {
                total_links += 1;
                gaps += p.heartbeat_gaps;
                if links_before.get(&(node.node_id.clone(), p.node_id.clone())) == Some(&p.link_id)
                {
                    kept += 1;
                }
            }
        }
    }
    if total_links != (n - 1) * (n - 2) || kept != total_links || gaps != 0 {
        bail!("links did not survive rotation: {kept}/{total_links} links kept, {gaps} heartbeats lost");
    }
    demo.step(&format!("after rotation: {kept}/{total_links} links are the same TLS sessions as before, 0 heartbeats lost"));

    out!();
    out!("Summary");
    out!("  CA             {ca_url}");
    out!("  nodes          {n} enrolled, {} active, 1 revoked", n - 1);
    out!("  mesh           full mesh of mutual TLS 1.3 links formed");
    out!("  log            membership log cosigned by 2 of 3 witnesses; a rollback refused");
    out!("  gossip         an anomaly signature reached every node");
    out!("  tiers          tier 1 earned by link attestation (dev = SIMULATED TEE), manifest binary and 100 health checks; the unlisted binary held at tier 2; a failing TEE demoted after 3 failures");
    out!("  governance     gossip_fanout 3 -> 2 by a majority of tier 1 votes, applied live everywhere");
    out!("  bundles        a bundle sent to an offline node was delivered when it returned");
    out!(
        "  revocation     {} refused by all peers (signed record spread by gossip)",
        victim.name
    );
    out!("  rotation       every active node rotated with no gap; links stayed up");
    out!(
        "  elapsed        {:.1}s",
        demo.started.elapsed().as_secs_f64()
    );

    if args.keep {
        let (keep_root, _) = match _temp {
            Some(t) => (t.keep(), ()),
            None => (root.clone(), ()),
        };
        out!();
        out!("The mesh keeps running (Ctrl-C stops it). Inspect it with the commands below.");
        out!("Every key owner (the CA, each witness, each node) has its own passphrase, as each");
        out!("machine's operator would in a real mesh; never share one between them.");
        let node_1 = demo.passphrases.of("node-1");
        out!(
            "  ZTMESH_PASSPHRASE={} ztmesh status --data-dir {}",
            node_1.as_str(),
            keep_root.join("node-1").display()
        );
        out!(
            "  ZTMESH_PASSPHRASE={} ztmesh peers  --data-dir {} --json",
            node_1.as_str(),
            keep_root.join("node-1").display()
        );
        out!(
            "  ztmesh token create --ca-dir {}",
            keep_root.join("ca").display()
        );
        out!(
            "  openssl verify -CAfile {} {}",
            keep_root.join("ca/ca.pem").display(),
            keep_root.join("node-1/node.pem").display()
        );
        out!(
            "  openssl crl -in {} -noout -text",
            keep_root.join("ca/crl.pem").display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    for (_, child) in &mut demo.children {
        let _ = child.start_kill();
    }
    Ok(())
}

/// `peer` as `observer` lists it.
async fn view_of(
    observer: &DemoNode,
    peer: &DemoNode,
) -> Option<ztmesh_runtime::api_types::PeerInfo> {
    observer
        .peers()
        .await?
        .peers
        .into_iter()
        .find(|p| p.node_id == peer.node_id)
}

/// Tier 1 earned by attestation + manifest binary + 100 health checks, the unlisted binary held
/// at Tier 2, a governance vote changing gossip_fanout everywhere, and a node whose TEE starts
/// failing demoted after three failed verifications.
async fn tiers_and_governance(
    demo: &Demo,
    nodes: &[DemoNode],
    apps: &[LocalApiClient],
    tee_seeds: &[Zeroizing<[u8; 32]>],
    (ca_https, ca_url): (&reqwest::Client, &str),
) -> Result<()> {
    let n = nodes.len();
    let (first, unlisted) = (&nodes[0], &nodes[n - 1]);
    let listed = &nodes[..n - 1];
    demo.step("waiting for tier 1: verified attestation + manifest binary + ≥ 90% uptime over ≥ 100 health checks (100 ms apart here)…");
    wait_for(
        "every listed node to see the others at tier 1",
        Duration::from_secs(90),
        || async {
            for observer in nodes {
                for peer in listed {
                    if peer.node_id != observer.node_id
                        && view_of(observer, peer).await?.tier != "tier 1"
                    {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await?;
    let peers = first.peers().await.ok_or_else(|| anyhow!("node-1 API"))?;
    for peer in &peers.peers {
        let name = nodes
            .iter()
            .find(|d| d.node_id == peer.node_id)
            .map_or("?", |d| d.name.as_str());
        demo.step(&format!(
            "node-1 sees {name}: {} — {} (last attestation {})",
            peer.tier.to_uppercase(),
            peer.tier_reason,
            peer.last_attestation.as_deref().unwrap_or("none")
        ));
    }
    let view = view_of(first, unlisted)
        .await
        .ok_or_else(|| anyhow!("node-1 does not list {}", unlisted.name))?;
    if view.tier != "tier 2" {
        bail!(
            "{} should be held at tier 2, is {}",
            unlisted.name,
            view.tier
        );
    }
    demo.step(&format!(
        "{} is held at TIER 2: binary {}",
        unlisted.name,
        view.binary.as_deref().unwrap_or("unknown")
    ));

    // Attestation tokens: the CA verified the same evidence and vouches for the listed
    // binaries; proposals and votes count only with a token.
    let refused = wait_for(
        "the listed nodes to hold attestation tokens",
        Duration::from_secs(60),
        || async {
            for node in listed {
                if !node.status().await?.trust.token.held {
                    return None;
                }
            }
            unlisted.status().await?.trust.token.last_error
        },
    )
    .await?;
    demo.step(&format!(
        "the CA verified each listed node's DEV (SIMULATED) evidence against the manifest and issued attestation tokens; proposals and votes count only with one. {}'s request was refused: {}",
        unlisted.name,
        refused
    ));

    // Governance: node-1 proposes gossip_fanout = 2; the Tier 1 nodes vote.
    let electorate = listed.len();
    let id = apps[0].propose("gossip_fanout", 2, Some(300)).await?.id;
    demo.step(&format!(
        "node-1 proposes gossip_fanout = 2 (signed gossip, proposal {}…); electorate: {electorate} tier 1 nodes",
        &id[..16]
    ));
    wait_for(
        "every node to hold the proposal",
        Duration::from_secs(20),
        || async {
            for app in apps {
                if app.proposals().await.ok()?.proposals.is_empty() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    apps[n - 1].vote(&id, true).await?;
    let needed = electorate / 2 + 1;
    for (i, app) in apps[..needed].iter().enumerate() {
        let before = apps[0].proposals().await?.parameters["gossip_fanout"];
        app.vote(&id, true).await?;
        demo.step(&format!(
            "{} votes approve ({}/{electorate}; more than half needed), fan-out in force on node-1 before: {before}",
            nodes[i].name,
            i + 1
        ));
    }
    wait_for(
        "gossip_fanout = 2 on every node",
        Duration::from_secs(20),
        || async {
            for app in apps {
                if app.proposals().await.ok()?.parameters.get("gossip_fanout") != Some(&2) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    let refusals = first
        .status()
        .await
        .and_then(|s| s.trust.gate_refusals.get("governance").copied())
        .unwrap_or(0);
    demo.step(&format!(
        "majority reached: gossip_fanout = 2 applied live on all {n} nodes and saved in state.db; {}'s tier 2 vote was refused by the tier gate ({refusals} governance refusal(s) on node-1)",
        unlisted.name
    ));

    // Members report the decision and their tier changes to the CA's membership log.
    let events = wait_for(
        "the decision in the membership log",
        Duration::from_secs(30),
        || async {
            let answer: ztmesh_ca::membership_log::LogEntriesResponse = ca_https
                .get(format!("{ca_url}/v1/log/entries?start=0&count=1000"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let events: Vec<ztmesh_ca::membership_log::EventEntry> = answer
                .entries
                .iter()
                .filter_map(|e| ztmesh_ca::membership_log::decode_leaf(&e.leaf))
                .filter_map(|leaf| ztmesh_ca::membership_log::EventEntry::from_leaf(&leaf).ok())
                .collect();
            events
                .iter()
                .any(|e| {
                    matches!(e, ztmesh_ca::membership_log::EventEntry::GovernanceDecision { param, value: 2, .. } if param == "gossip_fanout")
                })
                .then_some(events)
        },
    )
    .await?;
    let count = |kind: &str| events.iter().filter(|e| e.kind() == kind).count();
    demo.step(&format!(
        "membership log now records {} governance decision (gossip_fanout = 2, once however many nodes report it), {} tier change(s) reported by members and {} release manifest",
        count("governance_decision"),
        count("tier_change"),
        count("manifest")
    ));

    // A TEE that starts failing: node-2's simulated TEE key is swapped.
    let failing = &nodes[1];
    let key_path = failing.dir.0.join("dev-tee.key");
    private_files::write_private_file(&key_path, hex::encode([0x42u8; 32]).as_bytes())?;
    demo.step(&format!(
        "{}'s TEE key is replaced: its evidence no longer verifies (re-attestation every second)",
        failing.name
    ));
    let demoted = wait_for(
        "node-1 to demote node-2 after 3 failed verifications",
        Duration::from_secs(30),
        || async {
            let view = view_of(first, failing).await?;
            (view.tier == "tier 2" && view.attestation_failures >= 3).then_some(view)
        },
    )
    .await?;
    demo.step(&format!(
        "node-1 warned at 1 failure and demoted {} to TIER 2 at 3: {}",
        failing.name, demoted.tier_reason
    ));
    private_files::write_private_file(&key_path, hex::encode(*tee_seeds[1]).as_bytes())?;
    wait_for("node-2 back at tier 1", Duration::from_secs(30), || async {
        (view_of(first, failing).await?.tier == "tier 1").then_some(())
    })
    .await?;
    demo.step(&format!(
        "{}'s TEE key restored: the next verification succeeds and it is TIER 1 again",
        failing.name
    ));
    Ok(())
}

/// Opens a mesh link to `target` with the node in `dir` and waits for the peer's verdict.
async fn handshake_as(
    dir: &NodeDir,
    passphrase: &[u8],
    target: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let target = target.ok_or("no target address")?;
    let config = dir.read_config().map_err(|e| e.to_string())?;
    let (key, cert) = dir
        .read_tls(&Protection::Passphrase(passphrase), false)
        .map_err(|e| e.to_string())?;
    let ca = NodeDir::read_cert(&dir.ca_cert()).map_err(|e| e.to_string())?;
    let trust = Arc::new(MeshTrust::new(ca, config.trust_domain));
    let current = Arc::new(
        CurrentCertificate::new(vec![cert], &key.to_pkcs8_der()).map_err(|e| e.to_string())?,
    );
    let client =
        ztmesh_runtime::tls::mesh_client_config(trust, current).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls_pki_types::ServerName::try_from("mesh.ztmesh.invalid").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // In TLS 1.3 the server judges the client certificate after the client has finished, so the
    // verdict arrives as the first read: data (accepted) or an alert (refused).
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut byte)).await {
        Ok(Ok(0)) => Err("connection closed by the peer".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_owner_of_the_demo_has_its_own_passphrase() {
        let passphrases = DemoPassphrases::generate();
        let owners = ["ca", "witness-1", "witness-2", "node-1", "node-2"];
        let all: std::collections::BTreeSet<String> = owners
            .iter()
            .map(|owner| passphrases.of(owner).to_string())
            .collect();
        assert_eq!(all.len(), owners.len());
        // Stable for one owner (the demo asks again when it restarts a node) and long enough
        // for the rule every key passphrase follows.
        assert_eq!(*passphrases.of("node-1"), *passphrases.of("node-1"));
        assert!(ztmesh_pki::keyfile::check_new_passphrase(passphrases.of("ca").as_bytes()).is_ok());
        assert_ne!(*DemoPassphrases::generate().of("ca"), *passphrases.of("ca"));
    }
}
