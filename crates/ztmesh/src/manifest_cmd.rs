//! `ztmesh manifest`: release manifests, the signed reference values nodes check binaries and
//! measurements against (DESIGN.md §3). `keygen` creates the release key, `sign` cuts a
//! manifest, `verify` checks one offline against the pinned release public key, `self-hash`
//! prints the SHA-256 this executable reports about itself.
//!
//! The release key signs what every node will trust: keep its file offline, on the machine that
//! cuts releases, never on a node or the CA host. Nodes only ever need the public key.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use ztmesh_attest::manifest::{
    parse_release_key, release_key_id, Manifest, ManifestError, SignedManifest, MAX_MANIFEST_LEN,
};
use ztmesh_attest::{EvidenceType, ReferenceValues};
use ztmesh_pki::keyfile::{self, KdfParams};
use ztmesh_runtime::timefmt::{now, parse_duration, parse_rfc3339, rfc3339};

use crate::PassphraseArgs;

/// Largest file accepted where a release public key is expected.
const MAX_KEY_TEXT: u64 = 4096;

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Create a release signing key (encrypted unless --insecure-plaintext-key) and print its
    /// public key, the value nodes pin. Keep the key file offline.
    Keygen(KeygenArgs),
    /// Sign a release manifest: version, allowed binary hashes, allowed measurements, expiry.
    // `--version` names the release here, so clap's own version flag must give way.
    #[command(disable_version_flag = true)]
    Sign(SignArgs),
    /// Verify a manifest against the release public key and print it; with --binary, say
    /// whether that file is allowed. Exit 0 only when valid (and allowed).
    Verify(VerifyArgs),
    /// Print the SHA-256 of this executable: the hash a node reports about itself.
    SelfHash,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the release key (refused if the file exists).
    #[arg(long, value_name = "KEYFILE")]
    out: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The release key file written by `ztmesh manifest keygen`.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// Release version (at most 64 bytes).
    #[arg(long = "version", value_name = "VERSION")]
    release_version: String,
    /// A binary of the release; its SHA-256 is allowed (repeatable).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    binary: Vec<PathBuf>,
    /// An allowed binary SHA-256, in hex (repeatable).
    #[arg(long, value_name = "HEX", num_args = 1..)]
    binary_sha256: Vec<String>,
    /// An allowed measurement, PLATFORM:NAME=HEX, e.g. tdx:mrtd=ab12... (repeatable; several
    /// values for one name allow any of them). Platforms: tpm2, tdx, sgx, sev-snp, dev.
    #[arg(long, value_name = "PLATFORM:NAME=HEX", num_args = 1..)]
    measurement: Vec<String>,
    /// Last moment the manifest is valid: an RFC 3339 time, or a duration from now (90d).
    #[arg(long, value_name = "RFC3339|DURATION")]
    not_after: String,
    /// Where to write the signed manifest (COSE_Sign1).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The pinned release public key: 64 hex characters, or a file holding them.
    #[arg(long, value_name = "PUBKEY")]
    release_key: String,
    /// The signed manifest.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// Check whether this file's SHA-256 is allowed by the manifest.
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// Verify as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: ManifestCommand) -> Result<()> {
    match command {
        ManifestCommand::Keygen(args) => keygen(args),
        ManifestCommand::Sign(args) => sign(args),
        ManifestCommand::Verify(args) => verify(args),
        ManifestCommand::SelfHash => {
            let exe = std::env::current_exe().context("locating this executable")?;
            out!("{}", hex::encode(sha256_file(&exe)?));
            Ok(())
        }
    }
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let secret = crate::new_key_passphrase(&args.passphrase)?;
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| anyhow!("encoding the release key: {e}"))?;
    let sealed = keyfile::seal(
        der.as_bytes(),
        &crate::protection(&secret),
        KdfParams::DEFAULT,
        &mut rand::rngs::OsRng,
    )?;
    write_new_private_file(&args.out, sealed.as_bytes())?;
    let public = signing.verifying_key();
    out!("{}", hex::encode(public.as_bytes()));
    eprintln!(
        "release key written to {} (key id {}); keep it offline. Pin the public key above in \
         every node's configuration.",
        args.out.display(),
        hex::encode(release_key_id(&public))
    );
    Ok(())
}

/// Creates `path` with owner-only permissions; an existing file is never overwritten, since it
/// may be the only copy of a release key.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn load_signing_key(path: &Path, passphrase: &PassphraseArgs) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading release key {}", path.display()))?;
    let secret = crate::passphrase(passphrase)?;
    let der = keyfile::open(
        &text,
        &crate::protection(&secret),
        passphrase.insecure_plaintext_key,
    )
    .with_context(|| format!("release key {}", path.display()))?;
    SigningKey::from_pkcs8_der(&der)
        .map_err(|e| anyhow!("release key {}: not an Ed25519 key: {e}", path.display()))
}

fn sign(args: SignArgs) -> Result<()> {
    let issued_at = now().as_unix_secs();
    let not_after = parse_not_after(&args.not_after, issued_at)?;
    if not_after <= issued_at {
        bail!("--not-after {} is not in the future", args.not_after);
    }
    let mut binaries = BTreeSet::new();
    for path in &args.binary {
        binaries.insert(sha256_file(path)?);
    }
    for text in &args.binary_sha256 {
        binaries.insert(parse_sha256(text).with_context(|| format!("--binary-sha256 {text}"))?);
    }
    if binaries.is_empty() {
        bail!("a manifest needs at least one --binary or --binary-sha256");
    }
    let mut measurements: BTreeMap<EvidenceType, ReferenceValues> = BTreeMap::new();
    for text in &args.measurement {
        let (platform, name, value) =
            parse_measurement(text).with_context(|| format!("--measurement {text}"))?;
        measurements
            .entry(platform)
            .or_default()
            .0
            .entry(name)
            .or_default()
            .insert(value);
    }
    let manifest = Manifest::new(
        args.release_version,
        issued_at,
        not_after,
        binaries,
        measurements,
    )?;
    let signing = load_signing_key(&args.key, &args.passphrase)?;
    let signed = manifest.sign(&signing)?;
    std::fs::write(&args.out, signed.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    out!(
        "signed manifest {} written to {} (sha256 {})",
        manifest.version(),
        args.out.display(),
        hex::encode(Sha256::digest(signed.as_bytes()))
    );
    Ok(())
}

fn parse_not_after(text: &str, now_secs: u64) -> Result<u64> {
    if let Some(at) = parse_rfc3339(text) {
        return Ok(at.as_unix_secs());
    }
    let duration = parse_duration(text)
        .map_err(|_| anyhow!("--not-after: {text:?} is neither an RFC 3339 time nor a duration"))?;
    Ok(now_secs.saturating_add(duration.as_secs()))
}

fn parse_sha256(text: &str) -> Result<[u8; 32]> {
    hex::decode(text.trim())
        .map_err(|e| anyhow!("not hex: {e}"))?
        .try_into()
        .map_err(|_| anyhow!("a SHA-256 is 32 bytes (64 hex characters)"))
}

fn parse_measurement(text: &str) -> Result<(EvidenceType, String, String)> {
    let (platform, rest) = text
        .split_once(':')
        .ok_or_else(|| anyhow!("expected PLATFORM:NAME=HEX"))?;
    let (name, value) = rest
        .split_once('=')
        .ok_or_else(|| anyhow!("expected PLATFORM:NAME=HEX"))?;
    let platform: EvidenceType = platform.parse().map_err(|e| anyhow!("{e}"))?;
    // Verifiers report lowercase hex; accept either case from the operator.
    Ok((platform, name.to_owned(), value.trim().to_ascii_lowercase()))
}

/// SHA-256 of a file, streamed (binaries can be large).
fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().into())
}

fn read_release_key(text: &str) -> Result<VerifyingKey> {
    if let Ok(key) = parse_release_key(text) {
        return Ok(key);
    }
    let path = Path::new(text);
    if !path.exists() {
        bail!("--release-key: neither 64 hex characters nor an existing file: {text:?}");
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_KEY_TEXT {
        bail!(
            "--release-key: {} is {size} bytes, not a public key",
            path.display()
        );
    }
    let contents =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_release_key(&contents).with_context(|| format!("--release-key {}", path.display()))
}

fn read_manifest(path: &Path) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading manifest {}", path.display()))?
        .len();
    if size > MAX_MANIFEST_LEN as u64 {
        bail!(
            "manifest {} is {size} bytes; at most {MAX_MANIFEST_LEN}",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))
}

fn verify(args: VerifyArgs) -> Result<()> {
    let release_key = read_release_key(&args.release_key)?;
    let bytes = read_manifest(&args.manifest)?;
    let at = match &args.at {
        Some(text) => parse_rfc3339(text)
            .ok_or_else(|| anyhow!("--at: not an RFC 3339 time: {text:?}"))?
            .as_unix_secs(),
        None => now().as_unix_secs(),
    };
    let manifest = match SignedManifest::open(&bytes, &release_key, at) {
        Ok(manifest) => manifest,
        Err(error) => return refused(&args, &error),
    };
    let binary = args
        .binary
        .as_ref()
        .map(|path| sha256_file(path).map(|hash| (path, hash)))
        .transpose()?;
    let allowed = binary.map(|(_, hash)| manifest.allows_binary(&hash));
    if args.json {
        let mut report = serde_json::json!({
            "valid": true,
            "manifest_sha256": hex::encode(Sha256::digest(&bytes)),
            "manifest": manifest_json(&manifest),
        });
        if let (Some((path, hash)), Some(allowed)) = (binary, allowed) {
            report["binary"] = serde_json::json!({
                "path": path.display().to_string(),
                "sha256": hex::encode(hash),
                "allowed": allowed,
            });
        }
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_manifest(&manifest, &bytes);
        if let (Some((path, hash)), Some(allowed)) = (binary, allowed) {
            let verdict = if allowed { "allowed" } else { "NOT allowed" };
            out!(
                "binary {} sha256 {}: {verdict}",
                path.display(),
                hex::encode(hash)
            );
        }
    }
    match (binary, allowed) {
        (Some((path, _)), Some(false)) => bail!(
            "binary {} is not allowed by manifest {}",
            path.display(),
            manifest.version()
        ),
        _ => Ok(()),
    }
}

fn refused(args: &VerifyArgs, error: &ManifestError) -> Result<()> {
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "valid": false, "reason": error.reason(), "message": error.to_string()
            }))?
        );
    }
    bail!(
        "manifest {} refused ({}): {error}",
        args.manifest.display(),
        error.reason()
    )
}

fn time_text(secs: u64) -> String {
    rfc3339(ztmesh_core::Timestamp::from_unix_secs(secs))
}

fn manifest_json(manifest: &Manifest) -> serde_json::Value {
    let measurements: BTreeMap<&str, &ReferenceValues> = manifest
        .measurements()
        .iter()
        .map(|(platform, reference)| (platform.as_str(), reference))
        .collect();
    serde_json::json!({
        "version": manifest.version(),
        "issued_at": time_text(manifest.issued_at()),
        "not_after": time_text(manifest.not_after()),
        "binaries": manifest.binaries().iter().map(hex::encode).collect::<Vec<_>>(),
        "measurements": measurements,
    })
}

fn print_manifest(manifest: &Manifest, bytes: &[u8]) {
    out!("valid release manifest {}", manifest.version());
    out!("  sha256      {}", hex::encode(Sha256::digest(bytes)));
    out!("  issued at   {}", time_text(manifest.issued_at()));
    out!("  not after   {}", time_text(manifest.not_after()));
    out!("  binaries    {}", manifest.binaries().len());
    for hash in manifest.binaries() {
        out!("    {}", hex::encode(hash));
    }
    for (platform, reference) in manifest.measurements() {
        for (name, values) in &reference.0 {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            out!("  {}:{name}  {}", platform.as_str(), values.join(", "));
        }
    }
}
