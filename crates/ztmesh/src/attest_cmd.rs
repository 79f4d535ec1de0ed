//! `ztmesh attest verify`: checks one piece of evidence offline, for operators debugging a node.
//! Exit code 0 only when the evidence verifies.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use ztmesh_attest::{AttestError, EvidenceType, Expectations, ReferenceValues, Verdict};
use ztmesh_runtime::timefmt::{now, parse_rfc3339};

/// Largest file read for evidence or collateral (the verifiers have tighter limits of their own).
const MAX_FILE: u64 = 4 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum AttestCommand {
    /// Verify evidence: prints the verdict, the reason when refused, and the measured values.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Evidence type: tpm2, tdx, sgx, sev-snp or dev.
    #[arg(long = "type", value_name = "TYPE")]
    evidence_type: String,
    /// The evidence file (binary; a file of hex text is decoded).
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    /// What the evidence is checked against: tdx/sgx the DCAP collateral (JSON), sev-snp the
    /// VCEK certificate (DER or PEM), tpm2 the attestation key (PEM), dev the dev TEE public
    /// key (32 bytes, hex).
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// The report data the evidence must carry (hex): the challenge binding.
    #[arg(long, value_name = "HEX")]
    nonce: Option<String>,
    /// Verify as of this time (RFC 3339) instead of now: collateral and certificates have
    /// validity windows.
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Accept dev (simulated) evidence.
    #[arg(long)]
    allow_dev: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {what} {}", path.display()))?
        .len();
    if size > MAX_FILE {
        bail!(
            "{what} {} is {size} bytes; at most {MAX_FILE}",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    // A hex dump (as many tools write them) is decoded; anything else is taken as binary.
    let text = std::str::from_utf8(&bytes).ok().map(|t| {
        t.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
    });
    if let Some(text) = text {
        if !text.is_empty() && text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return hex::decode(&text).map_err(|e| anyhow!("{what}: {e}"));
        }
    }
    Ok(bytes)
}

pub async fn run(command: AttestCommand) -> Result<()> {
    let AttestCommand::Verify(args) = command;
    let evidence_type: EvidenceType = args
        .evidence_type
        .parse()
        .map_err(|e: AttestError| anyhow!("--type: {e}"))?;
    let evidence = read(&args.evidence, "evidence")?;
    let collateral = args
        .collateral
        .as_ref()
        .map(|path| read(path, "collateral"))
        .transpose()?;
    let at = match &args.at {
        Some(text) => {
            parse_rfc3339(text).ok_or_else(|| anyhow!("--at: not an RFC 3339 time: {text:?}"))?
        }
        None => now(),
    };
    let expectations = Expectations {
        report_data: args
            .nonce
            .as_deref()
            .map(|n| hex::decode(n).map_err(|e| anyhow!("--nonce: {e}")))
            .transpose()?,
        reference: ReferenceValues::default(),
        max_age: None,
        allow_dev: args.allow_dev,
    };
    let secs = at.as_unix_secs();
    let need = |what: &str| {
        collateral.clone().ok_or_else(|| {
            anyhow!(
                "--collateral is required for {}: {what}",
                evidence_type.as_str()
            )
        })
    };
    let result: Result<Verdict, AttestError> = match evidence_type {
        EvidenceType::Tdx => {
            ztmesh_attest::dcap::verify_tdx(&evidence, collateral.as_deref(), &expectations, secs)
        }
        EvidenceType::Sgx => {
            ztmesh_attest::dcap::verify_sgx(&evidence, collateral.as_deref(), &expectations, secs)
        }
        EvidenceType::SevSnp => ztmesh_attest::sev::verify_snp(
            &evidence,
            &need("the VCEK certificate")?,
            &expectations,
            secs,
        ),
        EvidenceType::Tpm2 => {
            let pem = need("the attestation key (PEM)")?;
            let pem = String::from_utf8(pem)
                .map_err(|_| anyhow!("--collateral: the attestation key must be PEM text"))?;
            let ak = ztmesh_attest::tpm2::AttestationKey::from_pem(&pem)
                .map_err(|e| anyhow!("--collateral: {e}"))?;
            ztmesh_attest::tpm2::verify(&evidence, &ak, &expectations)
        }
        EvidenceType::Dev => {
            let key = need("the dev TEE public key")?;
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| anyhow!("--collateral: the dev key is 32 bytes (hex)"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|e| anyhow!("--collateral: {e}"))?;
            if args.allow_dev {
                eprintln!("warning: dev evidence comes from a simulated TEE and proves nothing about hardware");
            }
            ztmesh_attest::dev::verify(&evidence, &key, &expectations, secs)
        }
        _ => bail!("unsupported evidence type"),
    };
    match result {
        Ok(verdict) => {
            if args.json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"verified": true, "verdict": verdict})
                    )?
                );
            } else {
                out!("verified: {} evidence", verdict.evidence_type.as_str());
                if let Some(status) = &verdict.tcb_status {
                    out!("  tcb status   {status}");
                }
                if !verdict.advisories.is_empty() {
                    out!("  advisories   {}", verdict.advisories.join(", "));
                }
                out!("  report data  {}", verdict.report_data);
                for (name, value) in &verdict.measurements {
                    out!("  {name:<12} {value}");
                }
            }
            Ok(())
        }
        Err(error) => {
            if args.json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "verified": false, "reason": error.reason(), "message": error.to_string()
                    }))?
                );
            }
            bail!("refused ({}): {error}", error.reason())
        }
    }
}
