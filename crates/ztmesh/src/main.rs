//! `ztmesh`: the command line and daemon entry point. Thin by design: it parses arguments,
//! reads secrets from where the operator said, and calls the libraries.
#![forbid(unsafe_code)]

/// Prints a line to stdout. A closed pipe (`ztmesh peers | head`) ends the process quietly
/// with success instead of panicking, like other Unix tools.
macro_rules! out {
    () => { $crate::emit(String::new()) };
    ($($arg:tt)*) => { $crate::emit(format!($($arg)*)) };
}

mod app;
mod attest_cmd;
mod deny_cmd;
mod key_cmd;
mod lab_cmd;
mod log_cmd;
mod manifest_cmd;
mod tpm_cmd;
mod witness_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;
use ztmesh_ca::ca_service::{self, CaDir, CaServeOptions};
use ztmesh_node::ca_client::{self, CaClient, EnrollOptions};
use ztmesh_node::daemon::{self, RunOptions};
use ztmesh_node::node_client::NodeApiClient;
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::RevocationReason;
use ztmesh_runtime::api_types::{RevokeRequest, TokenRequest};
use ztmesh_runtime::timefmt::parse_duration;

/// ztmesh: a zero-trust overlay mesh.
#[derive(Parser, Debug)]
#[command(name = "ztmesh", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mesh certificate authority: create it, serve its API.
    #[command(subcommand)]
    Ca(CaCommand),
    /// One-time enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enroll a new node with a one-time token.
    Enroll(EnrollArgs),
    /// Run a node daemon.
    Run(RunArgs),
    /// Show a running node's status.
    Status(NodeQueryArgs),
    /// Show a running node's peers.
    Peers(NodeQueryArgs),
    /// Revoke a certificate or a whole node, mesh-wide.
    Revoke(RevokeArgs),
    /// This node's local deny-list: nodes and certificates it refuses, without the CA.
    #[command(subcommand)]
    Deny(deny_cmd::DenyCommand),
    /// Publish signed gossip through a running node (the node signs).
    #[command(subcommand)]
    Publish(app::PublishCommand),
    /// List the unexpired anomaly signatures a running node holds.
    Anomalies(app::AnomaliesArgs),
    /// Stream a running node's events: anomaly signatures, bundles, revocations.
    Watch(app::WatchArgs),
    /// Propose a governed parameter change (signed gossip; Tier 1 nodes vote).
    Propose(app::ProposeArgs),
    /// Vote on a proposal: approve or reject (only Tier 1 votes count).
    Vote(app::VoteArgs),
    /// List governance proposals and the parameters in force.
    Proposals(app::ProposalsArgs),
    /// Attestation evidence: verify offline (tpm2, tdx, sgx, sev-snp, dev).
    #[command(subcommand)]
    Attest(attest_cmd::AttestCommand),
    /// Delay-tolerant bundles: send, list, get.
    #[command(subcommand)]
    Bundle(app::BundleCommand),
    /// Transparency-log witness: cosign checkpoints of trusted logs (C2SP tlog-witness).
    #[command(subcommand)]
    Witness(witness_cmd::WitnessCommand),
    /// The CA's membership log: key, checkpoint, entries, offline verification.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Signed release manifests: release key, sign, verify, this executable's hash.
    #[command(subcommand)]
    Manifest(manifest_cmd::ManifestCommand),
    /// A node's TPM: its endorsement key for the CA's allow-list, its PCRs for the manifest.
    #[command(subcommand)]
    Tpm(tpm_cmd::TpmCommand),
    /// Key files: export one as an unencrypted PKCS#8 v1 PEM for OpenSSL.
    #[command(subcommand)]
    Key(key_cmd::KeyCommand),
    /// Start a CA and a few nodes on loopback and show enrollment, rotation and revocation.
    Demo(lab_cmd::DemoArgs),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(lab_cmd::BenchCommand),
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a CA: root key (encrypted), certificate (ca.pem), admin credential, state.
    Init(CaInitArgs),
    /// Serve the CA's HTTPS API (enroll, rotate, CRL, revoke, tokens).
    // Boxed: the serve options are many times the size of the other commands'.
    Serve(Box<CaServeArgs>),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a one-time enrollment token (printed once; the CA keeps only its hash).
    Create(TokenCreateArgs),
}

/// Where a secret key's passphrase comes from.
#[derive(Args, Debug, Clone)]
struct PassphraseArgs {
    /// File holding the key passphrase (first line). Otherwise ZTMESH_PASSPHRASE is used.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Store/read keys unencrypted. Only for throwaway test setups; refused for the CA.
    #[arg(long)]
    insecure_plaintext_key: bool,
    /// Seal new keys under a passphrase shorter than 12 characters. Only for throwaway test
    /// setups: a stolen key file is guessed offline.
    #[arg(long)]
    insecure_short_passphrase: bool,
}

#[derive(Args, Debug)]
struct CaInitArgs {
    /// SPIFFE trust domain of the mesh (e.g. prod.example.org).
    #[arg(long)]
    trust_domain: String,
    /// Directory for the CA's files.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Validity of the CA certificate (e.g. 3650d).
    #[arg(long, default_value = "3650d", value_parser = parse_duration)]
    validity: Duration,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Args, Debug)]
struct CaServeArgs {
    /// Directory created by `ztmesh ca init`.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Lifetime of issued node certificates (at least 60s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    cert_lifetime: Duration,
    /// How long after its certificate expired a node may still rotate by proving its identity
    /// key (its last certificate must be in the membership log and not revoked), so the mesh
    /// outlives a CA outage longer than a certificate lifetime. 0 = never after expiry.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    rotation_grace: Duration,
    /// Enrollment requests per minute per client address.
    #[arg(long, default_value_t = 120)]
    rate_limit_rpm: u32,
    /// Burst allowance of the enrollment rate limit.
    #[arg(long, default_value_t = 60)]
    rate_limit_burst: u32,
    /// Extra DNS name or IP for the CA's TLS certificate (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    server_names: Vec<String>,
    /// URL nodes use to reach this CA (default https://<listen address>).
    #[arg(long)]
    public_url: Option<String>,
    /// Push each revocation directly to this many random nodes and let gossip carry it to the
    /// rest (0 = push to every known node).
    #[arg(long, default_value_t = 0)]
    revocation_push: usize,
    /// tlog-policy of the membership log (log, witnesses with URLs, quorum): served to nodes
    /// at GET /v1/log/policy; its witnesses are sent every checkpoint to cosign.
    #[arg(long, value_name = "FILE")]
    log_policy: Option<PathBuf>,
    /// Refuse enrollment without attestation evidence (403 attestation_required). Without it,
    /// evidence is optional, but evidence that is sent must still verify.
    #[arg(long)]
    require_attestation: bool,
    /// Accept dev (simulated TEE) evidence signed by --dev-tee-key. For demos only: it proves
    /// nothing about hardware, and every dev enrollment is logged as a warning.
    #[arg(long, requires = "dev_tee_key")]
    allow_dev_attestation: bool,
    /// A dev TEE public key (Ed25519, 32 bytes hex) trusted with --allow-dev-attestation
    /// (repeatable: one per simulated device).
    #[arg(long, value_name = "HEX", requires = "allow_dev_attestation")]
    dev_tee_key: Vec<String>,
    /// A TPM attestation key (PEM public key) whose quotes this CA accepts (repeatable);
    /// tpm2 evidence signed by any other key is refused.
    #[arg(long = "tpm2-attestation-key", value_name = "FILE")]
    tpm2_attestation_keys: Vec<PathBuf>,
    /// A TPM endorsement key (TPM2B_PUBLIC, as `tpm2_createek -u` writes it) whose TPM may
    /// prove its attestation key at enrollment by credential activation (repeatable);
    /// POST /v1/enroll/tpm2/credential refuses every other EK.
    #[arg(long = "tpm2-endorsement-key", value_name = "FILE")]
    tpm2_endorsement_keys: Vec<PathBuf>,
    /// The release public key (Ed25519, hex or `ztmesh manifest keygen`'s vkey) that signs
    /// --manifest.
    #[arg(long, value_name = "KEY", requires = "manifest")]
    release_key: Option<String>,
    /// The signed release manifest attestation tokens vouch against (POST /v1/attest): a
    /// token is issued only for a listed binary with listed measurements. Without it the CA
    /// issues no tokens.
    #[arg(long, value_name = "FILE", requires = "release_key")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

/// How an admin command reaches the CA.
#[derive(Args, Debug)]
struct CaAccessArgs {
    /// A CA data directory on this machine: its ca.pem, admin.token and bound address are used.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// CA URL (default: the address in <ca-dir>/ca.addr).
    #[arg(long)]
    ca_url: Option<String>,
    /// CA certificate (default <ca-dir>/ca.pem).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Admin credential file (default <ca-dir>/admin.token).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TokenCreateArgs {
    #[command(flatten)]
    access: CaAccessArgs,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Reserve the token for one NodeId.
    #[arg(long)]
    node_id: Option<String>,
}

#[derive(Args, Debug)]
struct RevokeArgs {
    #[command(flatten)]
    access: CaAccessArgs,
    /// Serial (hex) of one certificate. With --node-id too: that node's certificate, revoked
    /// even if this CA's database never issued it (a rogue certificate signed with its key).
    #[arg(long, required_unless_present = "node_id")]
    serial: Option<String>,
    /// A node: all its certificates, and it may never enroll again (also a node this CA's
    /// database does not know). With --serial: only that certificate of the node.
    #[arg(long)]
    node_id: Option<String>,
    /// unspecified, key_compromise, cessation_of_operation or superseded.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    reason: RevocationReason,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// CA URL, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    ca_url: String,
    /// SHA-256 fingerprint of the CA certificate (as printed by `ztmesh ca init`).
    #[arg(long)]
    ca_fingerprint: String,
    /// The one-time token.
    #[arg(long)]
    token: String,
    /// Directory for the node's files.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Mesh listener address written to node.toml.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// API listener address written to node.toml.
    #[arg(long, default_value = "127.0.0.1:0")]
    api_listen: SocketAddr,
    /// Attach attestation evidence: dev (needs --dev-tee-key-file), tpm2 (needs --tpm, or
    /// --attestation-evidence), or tdx, sgx, sev-snp (need --attestation-evidence). Its report
    /// data must be report_data_binding(SHA-256(token), the CSR's TLS SubjectPublicKeyInfo
    /// DER); dev and --tpm evidence are generated with that binding.
    #[arg(long, value_name = "TYPE")]
    attestation_type: Option<String>,
    /// The node's TPM for --attestation-type tpm2, as a tpm2-tools TCTI (e.g.
    /// device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321). Enrollment persists the EK
    /// (0x81010001) and a fresh AK (0x81010002), proves the AK to the CA by credential
    /// activation, and writes the TPM into node.toml as the node's attester. The CA must allow
    /// the EK (`ztmesh tpm ek` writes it).
    #[arg(
        long,
        value_name = "TCTI",
        requires = "attestation_type",
        conflicts_with = "attestation_evidence"
    )]
    tpm: Option<String>,
    /// The simulated TEE's signing key (Ed25519 seed, 32 bytes hex) for --attestation-type dev.
    #[arg(long, value_name = "FILE", requires = "attestation_type")]
    dev_tee_key_file: Option<PathBuf>,
    /// Evidence produced by a real TEE (binary). It must already carry the enrollment binding
    /// over the TLS key this command generates, so it only verifies if produced for that key.
    #[arg(long, value_name = "FILE", requires = "attestation_type")]
    attestation_evidence: Option<PathBuf>,
    /// Collateral of the evidence: DCAP collateral JSON (tdx, sgx), VCEK certificate
    /// (sev-snp) or attestation key PEM (tpm2).
    #[arg(long, value_name = "FILE", requires = "attestation_evidence")]
    attestation_collateral: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Override the mesh listener of node.toml.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the API listener of node.toml.
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Args, Debug)]
struct NodeQueryArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

fn parse_reason(text: &str) -> Result<RevocationReason, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("unknown reason {text:?}: use unspecified, key_compromise, cessation_of_operation or superseded"))
}

/// Reads the passphrase: `--passphrase-file`, else ZTMESH_PASSPHRASE; `None` with
/// `--insecure-plaintext-key`.
fn passphrase(args: &PassphraseArgs) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if args.insecure_plaintext_key {
        return Ok(None);
    }
    let text = if let Some(path) = &args.passphrase_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading passphrase file {}", path.display()))?,
        );
        Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
    } else if let Ok(text) = std::env::var("ZTMESH_PASSPHRASE") {
        Zeroizing::new(text)
    } else {
        bail!("a key passphrase is required: pass --passphrase-file FILE or set ZTMESH_PASSPHRASE (or --insecure-plaintext-key for throwaway setups)");
    };
    if text.is_empty() {
        bail!("the key passphrase is empty");
    }
    Ok(Some(Zeroizing::new(text.as_bytes().to_vec())))
}

/// Like [`passphrase`], for a command that seals a new key: the passphrase must have at
/// least 12 characters unless `--insecure-short-passphrase` is given.
fn new_key_passphrase(args: &PassphraseArgs) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let secret = passphrase(args)?;
    if let (Some(text), false) = (&secret, args.insecure_short_passphrase) {
        ztmesh_pki::keyfile::check_new_passphrase(text).map_err(|e| {
            anyhow!("{e} to seal a new key; choose a longer one (--insecure-short-passphrase allows it for throwaway test setups)")
        })?;
    }
    Ok(secret)
}

fn protection(secret: &Option<Zeroizing<Vec<u8>>>) -> Protection<'_> {
    match secret {
        Some(p) => Protection::Passphrase(p),
        None => Protection::InsecurePlaintext,
    }
}

fn emit(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZTMESH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Ca(CaCommand::Init(args)) => ca_init(args),
        Command::Ca(CaCommand::Serve(args)) => ca_serve(*args).await,
        Command::Token(TokenCommand::Create(args)) => token_create(args).await,
        Command::Enroll(args) => enroll(args).await,
        Command::Run(args) => run(args).await,
        Command::Status(args) => status(args).await,
        Command::Peers(args) => peers(args).await,
        Command::Revoke(args) => revoke(args).await,
        Command::Deny(command) => deny_cmd::run(command).await,
        Command::Publish(command) => app::publish(command).await,
        Command::Watch(args) => app::watch(args).await,
        Command::Anomalies(args) => app::anomalies(args).await,
        Command::Propose(args) => app::propose(args).await,
        Command::Vote(args) => app::vote(args).await,
        Command::Proposals(args) => app::proposals(args).await,
        Command::Bundle(command) => app::bundle(command).await,
        Command::Attest(command) => attest_cmd::run(command).await,
        Command::Witness(command) => witness_cmd::run(command).await,
        Command::Log(command) => log_cmd::run(command).await,
        Command::Manifest(command) => manifest_cmd::run(command).await,
        Command::Tpm(command) => tpm_cmd::run(command).await,
        Command::Key(command) => key_cmd::run(command),
        Command::Demo(args) => lab_cmd::demo(args).await,
        Command::Bench(command) => lab_cmd::bench(command).await,
    }
}

fn ca_init(args: CaInitArgs) -> Result<()> {
    let trust_domain = args
        .trust_domain
        .parse()
        .map_err(|e| anyhow!("--trust-domain: {e}"))?;
    if args.passphrase.insecure_plaintext_key {
        // The CA root key signs every certificate and CRL of the mesh; a copy of an
        // unencrypted file is the whole mesh.
        bail!("--insecure-plaintext-key is refused for the CA root key: give a passphrase with --passphrase-file or ZTMESH_PASSPHRASE");
    }
    let secret = new_key_passphrase(&args.passphrase)?;
    let report = ca_service::init_ca(
        &CaDir(args.data_dir.clone()),
        trust_domain,
        &protection(&secret),
        args.validity,
    )?;
    out!("CA created in {}", args.data_dir.display());
    out!("  certificate:      {}", report.ca_cert_path.display());
    out!("  admin credential: {}", report.admin_token_path.display());
    out!("  fingerprint:      {}", report.fingerprint);
    out!(
        "Nodes enroll with: ztmesh enroll --ca-fingerprint {} ...",
        report.fingerprint
    );
    Ok(())
}

async fn ca_serve(args: CaServeArgs) -> Result<()> {
    let dir = CaDir(args.data_dir.clone());
    let secret = passphrase(&args.passphrase)?;
    let ca = ca_service::load_ca_keys(
        &dir,
        &protection(&secret),
        args.passphrase.insecure_plaintext_key,
    )?;
    let options = CaServeOptions {
        cert_lifetime: args.cert_lifetime,
        rate_limit_rpm: args.rate_limit_rpm,
        rate_limit_burst: args.rate_limit_burst,
        rotation_grace: args.rotation_grace,
        gossip_fanout: 3,
        server_names: args.server_names,
        public_url: args.public_url,
        revocation_push: args.revocation_push,
        log_policy: args.log_policy,
        attestation: attestation_policy(
            args.require_attestation,
            &args.dev_tee_key,
            &args.tpm2_attestation_keys,
        )?,
        manifest: release_manifest(args.release_key.as_deref(), args.manifest.as_deref())?,
        tpm2_endorsement_keys: tpm2_endorsement_keys(&args.tpm2_endorsement_keys)?,
    };
    let service = ca_service::CaService::bind(dir.clone(), ca, args.listen, options).await?;
    let addr = service.local_addr()?;
    ztmesh_runtime::private_files::write_private_file(
        &dir.addr_file(),
        addr.to_string().as_bytes(),
    )?;
    eprintln!("CA serving on https://{addr}");
    service.run(shutdown_signal()).await;
    Ok(())
}

/// Reads `--tpm2-endorsement-key` files: each must be an endorsement key's TPM2B_PUBLIC.
fn tpm2_endorsement_keys(
    paths: &[PathBuf],
) -> Result<Vec<ztmesh_attest::tpm2_credential::EndorsementKey>> {
    paths
        .iter()
        .map(|path| {
            let bytes = read_attestation_file(path, "--tpm2-endorsement-key")?;
            let key = ztmesh_attest::tpm2_credential::EndorsementKey::from_tpm2b_public(&bytes)
                .map_err(|e| {
                    anyhow!(
                        "--tpm2-endorsement-key {}: not an endorsement key's TPM2B_PUBLIC: {e}",
                        path.display()
                    )
                })?;
            eprintln!(
                "TPM endorsement key allowed: {} ({})",
                key.public_area().name().to_hex(),
                path.display()
            );
            Ok(key)
        })
        .collect()
}

/// Resolves how to reach the CA for admin commands: URL, CA certificate and admin credential.
fn ca_access(access: &CaAccessArgs) -> Result<(String, Vec<u8>, Zeroizing<String>)> {
    let dir = access.ca_dir.as_ref().map(|d| CaDir(d.clone()));
    let url = match (&access.ca_url, &dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => {
            let addr = std::fs::read_to_string(dir.addr_file()).with_context(|| {
                format!(
                    "{} (is `ztmesh ca serve` running? or pass --ca-url)",
                    dir.addr_file().display()
                )
            })?;
            format!("https://{}", addr.trim())
        }
        (None, None) => bail!("give --ca-url or --ca-dir"),
    };
    let cert_path = match (&access.ca_cert, &dir) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.ca_cert(),
        (None, None) => bail!("give --ca-cert or --ca-dir"),
    };
    let token_path = match (&access.admin_token_file, &dir) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.admin_token(),
        (None, None) => bail!("give --admin-token-file or --ca-dir"),
    };
    let cert = NodeDir::read_cert(&cert_path)?;
    let admin = Zeroizing::new(
        std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading admin credential {}", token_path.display()))?
            .trim()
            .to_owned(),
    );
    Ok((url, cert, admin))
}

async fn token_create(args: TokenCreateArgs) -> Result<()> {
    let (url, cert, admin) = ca_access(&args.access)?;
    let client = CaClient::new(&url, &cert, None)?;
    let answer = client
        .create_token(
            &admin,
            &TokenRequest {
                ttl_sec: Some(args.ttl.as_secs()),
                node_id: args.node_id,
            },
        )
        .await?;
    out!("{}", answer.token);
    eprintln!("expires {}", answer.expires_at);
    Ok(())
}

async fn revoke(args: RevokeArgs) -> Result<()> {
    let (url, cert, admin) = ca_access(&args.access)?;
    let client = CaClient::new(&url, &cert, None)?;
    let what = match (&args.serial, &args.node_id) {
        (Some(serial), Some(node)) => Some(format!("certificate {serial} of node {node}")),
        (Some(serial), None) => Some(format!("certificate {serial}")),
        (None, node) => node.as_ref().map(|n| format!("node {n}")),
    };
    client
        .revoke(
            &admin,
            &RevokeRequest {
                serial: args.serial,
                node_id: args.node_id,
                reason: Some(args.reason),
            },
        )
        .await?;
    out!("revoked {}", what.unwrap_or_default());
    Ok(())
}

async fn enroll(args: EnrollArgs) -> Result<()> {
    let secret = new_key_passphrase(&args.passphrase)?;
    let attestation = enroll_attestation(&args)?;
    let outcome = ca_client::enroll_attested(
        &NodeDir(args.data_dir.clone()),
        EnrollOptions {
            ca_url: &args.ca_url,
            ca_fingerprint: &args.ca_fingerprint,
            token: &args.token,
            protection: protection(&secret),
            listen: args.listen,
            api_listen: args.api_listen,
        },
        attestation.as_ref(),
    )
    .await?;
    out!("enrolled node {}", outcome.config.node_id);
    out!(
        "  certificate {} valid until {}",
        outcome.serial,
        outcome.valid_not_after
    );
    out!("  data dir    {}", args.data_dir.display());
    out!(
        "Start it with: ztmesh run --data-dir {}",
        args.data_dir.display()
    );
    Ok(())
}

/// Largest evidence, collateral or key file read for attestation.
const MAX_ATTESTATION_FILE: u64 = 4 * 1024 * 1024;

fn read_attestation_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    let mut bytes = Vec::new();
    // One byte over the cap tells "too large" apart from "exactly at the cap".
    file.take(MAX_ATTESTATION_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_ATTESTATION_FILE {
        bail!(
            "{what} {} is larger than {MAX_ATTESTATION_FILE} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

/// The `ca serve` attestation flags as a policy.
/// Opens `--manifest` under `--release-key`: the signature must verify and the manifest must
/// not have expired.
fn release_manifest(
    key: Option<&str>,
    path: Option<&std::path::Path>,
) -> Result<Option<ztmesh_ca::ca_attest::ReleaseManifest>> {
    let (Some(key), Some(path)) = (key, path) else {
        return Ok(None);
    };
    let key = ztmesh_attest::manifest::parse_release_key(key)
        .map_err(|e| anyhow!("--release-key: {e}"))?;
    let bytes = read_attestation_file(path, "--manifest")?;
    let manifest = ztmesh_attest::manifest::SignedManifest::open(
        &bytes,
        &key,
        ztmesh_runtime::timefmt::now().as_unix_secs(),
    )
    .map_err(|e| anyhow!("--manifest {}: {e}", path.display()))?;
    eprintln!(
        "attestation tokens vouch against release manifest {}",
        manifest.version()
    );
    Ok(Some(ztmesh_ca::ca_attest::ReleaseManifest {
        manifest,
        sha256: <sha2::Sha256 as sha2::Digest>::digest(&bytes).into(),
    }))
}

fn attestation_policy(
    required: bool,
    dev_tee_keys: &[String],
    tpm2_keys: &[PathBuf],
) -> Result<ztmesh_attest::policy::EnrollAttestationPolicy> {
    let dev_tee_keys = dev_tee_keys
        .iter()
        .map(|text| -> Result<ed25519_dalek::VerifyingKey> {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--dev-tee-key: expected 32 bytes of hex"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| anyhow!("--dev-tee-key: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let tpm2_attestation_keys = tpm2_keys
        .iter()
        .map(|path| {
            let pem = read_attestation_file(path, "--tpm2-attestation-key")?;
            let pem = String::from_utf8(pem)
                .map_err(|_| anyhow!("--tpm2-attestation-key {}: not PEM", path.display()))?;
            ztmesh_attest::tpm2::AttestationKey::from_pem(&pem)
                .map_err(|e| anyhow!("--tpm2-attestation-key {}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    if !dev_tee_keys.is_empty() {
        eprintln!(
            "warning: dev (simulated TEE) attestation is accepted; it proves nothing about hardware"
        );
    }
    Ok(ztmesh_attest::policy::EnrollAttestationPolicy {
        required,
        dev_tee_keys,
        tpm2_attestation_keys,
    })
}

/// The `enroll` attestation flags as evidence to attach.
fn enroll_attestation(args: &EnrollArgs) -> Result<Option<ca_client::EnrollAttestation>> {
    let Some(kind) = &args.attestation_type else {
        return Ok(None);
    };
    let evidence_type: ztmesh_attest::EvidenceType = kind
        .parse()
        .map_err(|e: ztmesh_attest::AttestError| anyhow!("--attestation-type: {e}"))?;
    if let Some(tcti) = &args.tpm {
        if evidence_type != ztmesh_attest::EvidenceType::Tpm2 {
            bail!("--tpm goes with --attestation-type tpm2, not {kind}");
        }
        let device = ztmesh_node::tpm_device::TpmDevice::new(tcti, &args.data_dir)
            .map_err(|e| anyhow!("--tpm: {e}"))?;
        return Ok(Some(ca_client::EnrollAttestation::Tpm2 { device }));
    }
    if evidence_type == ztmesh_attest::EvidenceType::Dev {
        let path = args
            .dev_tee_key_file
            .as_ref()
            .ok_or_else(|| anyhow!("--attestation-type dev needs --dev-tee-key-file"))?;
        let text = Zeroizing::new(read_attestation_file(path, "--dev-tee-key-file")?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            std::str::from_utf8(&text)
                .ok()
                .and_then(|t| hex::decode(t.trim()).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--dev-tee-key-file: expected 32 bytes of hex"))?,
        );
        // The simulated TEE "measures" the running binary, as a real one measures its image.
        let exe = std::env::current_exe().context("locating the ztmesh binary")?;
        let binary = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
        return Ok(Some(ca_client::EnrollAttestation::Dev {
            tee_key: Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)),
            measurement: <sha2::Sha256 as sha2::Digest>::digest(&binary).into(),
        }));
    }
    let path = args.attestation_evidence.as_ref().ok_or_else(|| {
        if evidence_type == ztmesh_attest::EvidenceType::Tpm2 {
            anyhow!("--attestation-type tpm2 needs --tpm TCTI (or --attestation-evidence)")
        } else {
            anyhow!("--attestation-type {kind} needs --attestation-evidence")
        }
    })?;
    let evidence = read_attestation_file(path, "--attestation-evidence")?;
    let collateral = args
        .attestation_collateral
        .as_deref()
        .map(|path| read_attestation_file(path, "--attestation-collateral"))
        .transpose()?;
    Ok(Some(ca_client::EnrollAttestation::Prepared {
        evidence_type,
        payload: ztmesh_attest::policy::AttestationPayload {
            evidence,
            collateral,
        },
    }))
}

async fn run(args: RunArgs) -> Result<()> {
    let secret = passphrase(&args.passphrase)?;
    daemon::run(
        RunOptions {
            dir: NodeDir(args.data_dir),
            passphrase: secret,
            listen: args.listen,
            api_listen: args.api_listen,
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

fn node_client(args: &NodeQueryArgs) -> Result<NodeApiClient> {
    let secret = passphrase(&args.passphrase)?;
    Ok(NodeApiClient::from_dir(
        &NodeDir(args.data_dir.clone()),
        &protection(&secret),
    )?)
}

async fn status(args: NodeQueryArgs) -> Result<()> {
    let client = node_client(&args)?;
    let status = client.status().await?;
    let peers = client.peers().await?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "status": status, "peers": peers.peers })
            )?
        );
        return Ok(());
    }
    out!("node          {}", status.node_id);
    out!("trust domain  {}", status.trust_domain);
    out!("mesh / api    {} / {}", status.mesh_addr, status.api_addr);
    out!(
        "certificate   {} (valid {} .. {}, renews {})",
        status.certificate_serial,
        status.certificate_not_before,
        status.certificate_not_after,
        status.renew_at
    );
    out!("rotations     {}", status.rotations);
    if status.failed_api_tokens > 0 {
        out!(
            "api.token     {} wrong tokens refused (see the log for their addresses)",
            status.failed_api_tokens
        );
    }
    out!(
        "CRL           number {} ({} revoked)",
        status
            .crl_number
            .map(|n| n.to_string())
            .unwrap_or("-".into()),
        status.revoked_serials
    );
    if status.self_revoked {
        out!("REVOKED       this node's certificate is revoked");
    }
    let expired = ztmesh_runtime::timefmt::parse_rfc3339(&status.certificate_not_after)
        .is_some_and(|not_after| not_after < ztmesh_runtime::timefmt::now());
    if expired && !status.self_revoked {
        out!("EXPIRED       this node's certificate has expired: peers refuse its links until it rotates (it keeps asking the CA, which allows it within its --rotation-grace)");
    }
    for node in &status.denied.nodes {
        out!("DENIED        node {node} (local deny-list)");
    }
    for serial in &status.denied.serials {
        out!("DENIED        certificate {serial} (local deny-list)");
    }
    let log = &status.log;
    if !log.policy {
        out!("log           not watched (no log policy was pinned at enrollment)");
    } else {
        match (log.size, &log.root) {
            (Some(size), Some(root)) => out!(
                "log           size {size}, root {root}, witnesses {}",
                if log.witnesses_met.is_empty() {
                    "-".to_owned()
                } else {
                    log.witnesses_met.join(", ")
                }
            ),
            _ => out!("log           no checkpoint accepted yet"),
        }
        out!(
            "log refusals  {} without quorum, {} stale",
            log.quorum_not_met,
            log.stale
        );
        out!(
            "log liveness  last quorum checkpoint {}, log_stall_secs {}, {} log_stalled alarm(s)",
            log.last_quorum_checkpoint.as_deref().unwrap_or("-"),
            log.log_stall_secs,
            log.log_stalled_alarms
        );
        out!(
            "log audit     {} entries verified, {} certificates checked ({} waiting), {} revocations checked",
            log.entries_verified,
            log.certificates_checked,
            log.certificates_pending,
            log.revocations_checked
        );
        if log.node_revocations_pending > 0 {
            out!(
                "revocations   {} by node id waiting for the log ({} held, not applied)",
                log.node_revocations_pending,
                log.node_revocations_held
            );
        }
    }
    if log.split_view {
        out!(
            "SPLIT VIEW    the membership log showed two histories ({} alarm(s)): {}; see `status --json`",
            log.split_view_alarms,
            log.split_view_reason.as_deref().unwrap_or("two valid checkpoints conflict")
        );
    }
    if log.log_stalled {
        out!(
            "LOG STALLED   since {} (alarm {}): {}; acknowledge with `ztmesh log ack --alarm log-stalled --alarms {}`",
            log.log_stalled_since.as_deref().unwrap_or("-"),
            log.log_stalled_alarms,
            log.log_stalled_reason.as_deref().unwrap_or("the witnessed log stopped moving"),
            log.log_stalled_alarms
        );
    }
    for finding in &log.unlogged {
        if finding.serial.is_empty() {
            // A revocation by node id (a CA-signed record) with no revoke_node entry.
            out!(
                "UNLOGGED      {} of node {} (learnt {}): a revocation by node id the membership log does not show",
                finding.kind,
                finding.node_id.as_deref().unwrap_or("-"),
                finding.issued
            );
            continue;
        }
        let (label, what) = match finding.kind.as_str() {
            "withheld_revocation" => ("WITHHELD    ", "revoked in the log, missing from the CRL"),
            "foreign_certificate" => ("FOREIGN CERT", "in this node's name, never held by it"),
            _ => ("UNLOGGED    ", "not in the membership log"),
        };
        out!(
            "{label}  {} serial {}{} ({} {}): {what}",
            finding.kind,
            finding.serial,
            finding
                .node_id
                .as_deref()
                .map(|node| format!(" of {node}"))
                .unwrap_or_default(),
            if finding.kind == "foreign_certificate" {
                "logged"
            } else {
                "issued"
            },
            finding.issued
        );
    }
    let trust = &status.trust;
    out!("tier          {} ({})", trust.tier, trust.tier_reason);
    out!(
        "binary        sha256 {} ({})",
        trust.binary_sha256,
        match (&trust.manifest_version, trust.binary_in_manifest) {
            (None, _) => "no signed manifest configured".to_owned(),
            (Some(v), true) => format!("listed in signed manifest {v}"),
            (Some(v), false) => format!("NOT listed in signed manifest {v}"),
        }
    );
    out!(
        "attestation   attester {}, {} verified, {} failed{}",
        trust.attester,
        trust.attestations_ok,
        trust.attestations_failed,
        if trust.dev_attestation_accepted {
            "; DEV (SIMULATED TEE) EVIDENCE COUNTS TOWARD TIER 1"
        } else {
            ""
        }
    );
    let token = &trust.token;
    out!(
        "token         {}; {} refused from others",
        match (token.held, &token.platform, &token.last_error) {
            (true, platform, _) => format!(
                "CA attestation token for {} issued {}",
                platform.as_deref().unwrap_or("?"),
                token.issued_at.as_deref().unwrap_or("?")
            ),
            (false, _, Some(error)) => format!("none ({error})"),
            (false, _, None) => "none".to_owned(),
        },
        token.refused_received
    );
    if !trust.gate_refusals.is_empty() {
        let refusals: Vec<String> = trust
            .gate_refusals
            .iter()
            .map(|(action, n)| format!("{action} {n}"))
            .collect();
        out!("gate refusals {}", refusals.join(", "));
    }
    if !trust.parameters.is_empty() {
        let params: Vec<String> = trust
            .parameters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        out!("parameters    {}", params.join(", "));
    }
    if let Some(witness) = &status.witness {
        out!(
            "witness       http://{}/add-checkpoint, {} cosigned, {} refused (not tier 1), vkey {}",
            witness.listen,
            witness.cosigned,
            witness.refused_not_tier1,
            witness.vkey
        );
    }
    out!(
        "peers         {} connected, {} known",
        status.peers_connected,
        status.peers_known
    );
    print_peers(&peers.peers);
    Ok(())
}

async fn peers(args: NodeQueryArgs) -> Result<()> {
    let client = node_client(&args)?;
    let peers = client.peers().await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&peers)?);
    } else {
        print_peers(&peers.peers);
    }
    Ok(())
}

fn print_peers(peers: &[ztmesh_runtime::api_types::PeerInfo]) {
    out!(
        "{:<34} {:<10} {:<22} {:<21} {:<9} {:<9} {:<34} WHY",
        "NODE",
        "STATE",
        "ADDRESS",
        "CERT EXPIRES",
        "HEALTH",
        "TIER",
        "LAST ATTESTATION",
    );
    for p in peers {
        out!(
            "{:<34} {:<10} {:<22} {:<21} {:<9} {:<9} {:<34} {}",
            p.node_id,
            if p.connected { "connected" } else { "down" },
            p.address.as_deref().unwrap_or("-"),
            p.certificate_expires.as_deref().unwrap_or("-"),
            if p.health.is_empty() { "-" } else { &p.health },
            p.tier,
            p.last_attestation.as_deref().unwrap_or("-"),
            p.tier_reason,
        );
    }
}
