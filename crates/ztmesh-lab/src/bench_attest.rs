//! `ztmesh bench attest`: how fast each evidence type verifies, as a ratio to the raw signature
//! verifications the evidence contains, both measured in the same run.
//!
//! For every evidence type the full side is the public verifier of `ztmesh-attest`
//! (`dev::verify`, `tpm2::verify`, `dcap::verify_tdx`, `dcap::verify_sgx`, `sev::verify_snp`)
//! with expectations that pass: the carried report data, one reference measurement, and for
//! `dev` a freshness window. The baseline side verifies only the signatures that verification
//! checks, each once, on the same bytes and with the same primitive crates, keys decoded
//! beforehand:
//!
//! - `dev`: one Ed25519 `verify_strict` (ed25519-dalek) over the signed payload;
//! - `tpm2`: the quote signature by the attestation key (p256 or rsa, whichever the fixture
//!   uses; the swtpm fixture's key is ECDSA P-256);
//! - `tdx`, `sgx`: every signature `dcap-qvl` verifies, recorded from `dcap-qvl` itself in this
//!   run (see [`record_dcap_signatures`]) and replayed through the same `ring` algorithm it
//!   calls: the quote by the attestation key, the QE report by the PCK key, the certificates on
//!   the paths to Intel's root, the root CA CRL and the PCK CRL, the TCB info and the QE
//!   identity;
//! - `sev-snp`: the report's ECDSA P-384 signature by the VCEK (p384), and the RSA-PSS/SHA-384
//!   certificate signatures the `sev` crate checks (rsa): the ARK's self-signature, the ASK by
//!   the ARK, the VCEK by the ASK.
//!
//! The evidence is the real sample evidence the verifiers are tested with
//! (`crates/ztmesh-attest/tests/fixtures`), compiled in; collateral that expires is verified at
//! a pinned time inside its validity window. The two sides alternate in short rounds (the
//! order flips every round) so drift on a shared machine hits both alike; the printed rates are
//! medians over rounds and the ratio is the median of the per-round ratios. The benchmark never
//! performs IO and never reads anything but the compiled-in fixtures.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use dcap_qvl::config::{Config, CryptoProvider};
use dcap_qvl::crypto::RingCrypto;
use dcap_qvl::QuoteCollateralV3;
use ed25519_dalek::{Signature as Ed25519Signature, SigningKey};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use rustls_pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};
use sha2::Sha384;
use x509_parser::prelude::{CertificateRevocationList, FromDer as _, X509Certificate};
use ztmesh_attest::tpm2::{AttestationKey, Tpm2Evidence, TpmSignature};
use ztmesh_attest::{dcap, dev, report_data_binding, sev, tpm2};
use ztmesh_attest::{AttestError, EvidenceType, Expectations, ReferenceValues, Verdict};

/// Options of `ztmesh bench attest` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct AttestOptions {
    /// Measured time per side (full verification, baseline) and evidence type, in seconds,
    /// split evenly into the rounds. Each round runs at least one operation per side.
    pub seconds: f64,
    /// Evidence types to measure (empty: all of [`BENCHED_TYPES`], in that order).
    pub types: Vec<EvidenceType>,
    /// Measured rounds per side, alternating with the other side, after one warm-up round of
    /// each.
    pub rounds: u32,
}

/// The evidence types this benchmark has sample evidence for, in the default order.
pub const BENCHED_TYPES: [EvidenceType; 5] = [
    EvidenceType::Dev,
    EvidenceType::Tpm2,
    EvidenceType::Tdx,
    EvidenceType::Sgx,
    EvidenceType::SevSnp,
];

/// One evidence type by name, refused unless this benchmark has sample evidence for it.
pub fn parse_evidence_type(text: &str) -> Result<EvidenceType, String> {
    let names = || {
        BENCHED_TYPES
            .iter()
            .map(|evidence_type| evidence_type.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.parse::<EvidenceType>()
        .ok()
        .filter(|evidence_type| BENCHED_TYPES.contains(evidence_type))
        .ok_or_else(|| {
            format!(
                "unknown evidence type {text:?}; expected one of {}",
                names()
            )
        })
}

/// `ztmesh bench attest`.
pub async fn run(args: AttestOptions) -> Result<()> {
    crate::check_bounds("seconds", args.seconds, 0.001..=600.0)?;
    crate::check_bounds("rounds", args.rounds, 1..=50)?;
    for evidence_type in &args.types {
        ensure!(
            BENCHED_TYPES.contains(evidence_type),
            "no sample evidence of type {} to measure",
            evidence_type.as_str()
        );
    }
    // Pure computation on one core; kept off the runtime's worker threads.
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: AttestOptions) -> Result<()> {
    let requested = if args.types.is_empty() {
        BENCHED_TYPES.to_vec()
    } else {
        args.types.clone()
    };
    let mut types: Vec<EvidenceType> = Vec::with_capacity(requested.len());
    for evidence_type in requested {
        if !types.contains(&evidence_type) {
            types.push(evidence_type);
        }
    }
    let per_round = Duration::from_secs_f64(args.seconds / f64::from(args.rounds));

    let mut workloads = Vec::with_capacity(types.len());
    for evidence_type in types {
        let workload = prepare(evidence_type)
            .with_context(|| format!("preparing the {} workload", evidence_type.as_str()))?;
        workloads.push(workload);
    }

    out!(
        "attestation evidence verification on one core: the verifier of each type against the \
         raw signature verifications its evidence contains (same bytes, same primitive crates)"
    );
    out!(
        "  {} alternating rounds of {:.3} s per side after a warm-up round of each; rates are \
         medians over the rounds, the ratio is the median of the per-round ratios",
        args.rounds,
        per_round.as_secs_f64()
    );
    out!("signature sets (the baseline verifies each signature once per set):");
    for workload in &workloads {
        out!(
            "  {}: {} {} — {}",
            workload.evidence_type.as_str(),
            workload.signatures.len(),
            plural(workload.signatures.len(), "signature"),
            workload.counted_how
        );
        for signature in &workload.signatures {
            out!("      {signature}");
        }
    }
    out!("results:");
    for workload in &mut workloads {
        let measured = measure(workload, per_round, args.rounds)?;
        let (lowest, highest) = measured.ratio_range;
        out!(
            "  {:<8} full {:>9.1} verifications/s  baseline {:>9.1} signature sets/s of \
             {:>2} {:<10}  rounds {lowest:.3}..{highest:.3}  ratio {:.3}",
            workload.evidence_type.as_str(),
            measured.full_rate,
            measured.baseline_rate,
            workload.signatures.len(),
            plural(workload.signatures.len(), "signature"),
            measured.ratio
        );
    }
    Ok(())
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

// ----- measuring -----

/// A verification that must succeed; the closures keep their inputs.
type Operation = Box<dyn FnMut() -> Result<()>>;

/// One evidence type, ready to measure.
struct Workload {
    evidence_type: EvidenceType,
    /// The full verification, through the crate's public verify function.
    full: Operation,
    /// The raw signature verifications the evidence contains, each once.
    baseline: Operation,
    /// What each signature of the baseline set is, one line each.
    signatures: Vec<String>,
    /// How the set was counted and with which primitive it is verified.
    counted_how: String,
}

/// The outcome of one evidence type's rounds.
struct Measured {
    full_rate: f64,
    baseline_rate: f64,
    ratio: f64,
    ratio_range: (f64, f64),
}

/// Runs `operation` until `budget` has passed (at least once); answers operations per second.
fn rate(operation: &mut Operation, budget: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut count: u32 = 0;
    loop {
        operation()?;
        count += 1;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok(f64::from(count) / elapsed.as_secs_f64().max(f64::MIN_POSITIVE));
        }
    }
}

fn measure(workload: &mut Workload, per_round: Duration, rounds: u32) -> Result<Measured> {
    rate(&mut workload.full, per_round)?;
    rate(&mut workload.baseline, per_round)?;
    let (mut full_rates, mut baseline_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Whichever side runs second in a round may run on a warmer or a busier machine; the
        // order flips every round so that neither side always has that place.
        let (full, baseline) = if round % 2 == 0 {
            let full = rate(&mut workload.full, per_round)?;
            (full, rate(&mut workload.baseline, per_round)?)
        } else {
            let baseline = rate(&mut workload.baseline, per_round)?;
            (rate(&mut workload.full, per_round)?, baseline)
        };
        full_rates.push(full);
        baseline_rates.push(baseline);
        ratios.push(full / baseline);
    }
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(0.0, f64::max);
    Ok(Measured {
        full_rate: median(&mut full_rates),
        baseline_rate: median(&mut baseline_rates),
        ratio: median(&mut ratios),
        ratio_range: (lowest, highest),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn prepare(evidence_type: EvidenceType) -> Result<Workload> {
    let workload = match evidence_type {
        EvidenceType::Dev => dev_workload()?,
        EvidenceType::Tpm2 => tpm2_workload()?,
        EvidenceType::Tdx => dcap_workload(EvidenceType::Tdx, TDX_QUOTE, TDX_COLLATERAL)?,
        EvidenceType::Sgx => dcap_workload(EvidenceType::Sgx, SGX_QUOTE, SGX_COLLATERAL)?,
        EvidenceType::SevSnp => sev_workload()?,
        other => bail!("no sample evidence for {}", other.as_str()),
    };
    check_once(workload)
}

/// Both sides must succeed before anything is timed: a benchmark of a failing path measures
/// nothing.
fn check_once(mut workload: Workload) -> Result<Workload> {
    (workload.full)().context("the full verification refuses the sample evidence")?;
    (workload.baseline)().context("a baseline signature does not verify")?;
    Ok(workload)
}

/// Expectations that the sample evidence meets: its carried report data (the challenge
/// binding a live verifier would compare) and one reference measurement.
fn passing_expectations(verdict: &Verdict, measurement: &str) -> Result<Expectations> {
    let value = verdict
        .measurements
        .get(measurement)
        .with_context(|| format!("the verdict has no {measurement}"))?;
    let mut reference = ReferenceValues::default();
    reference.0.insert(
        measurement.to_owned(),
        BTreeSet::from([value.to_lowercase()]),
    );
    Ok(Expectations {
        report_data: Some(hex::decode(&verdict.report_data)?),
        reference,
        ..Expectations::default()
    })
}

// ----- dev -----

/// 2025-07-01T00:00:00Z: inside the DCAP sample collateral's validity (issued 2025-06-19, next
/// update 2025-07-19) and the SEV-SNP sample VCEK's (2023-04-03 to 2030-04-03); `dev` evidence
/// is made for this time too.
const SAMPLE_NOW: u64 = 1_751_328_000;

fn dev_workload() -> Result<Workload> {
    // A fixed dev TEE key: the run is reproducible and signs nothing anyone trusts.
    let signing_key = SigningKey::from_bytes(&[0x5a; 32]);
    let key = signing_key.verifying_key();
    let measurement = [0x11; 32];
    let binding = report_data_binding(b"ztmesh bench attest nonce", b"bench tls spki");
    let evidence = dev::generate(&signing_key, &measurement, &binding, SAMPLE_NOW - 10);
    let mut reference = ReferenceValues::default();
    reference.0.insert(
        "measurement".into(),
        BTreeSet::from([hex::encode(measurement)]),
    );
    let expectations = Expectations {
        report_data: Some(binding.to_vec()),
        reference,
        max_age: Some(Duration::from_secs(60)),
        allow_dev: true,
    };

    let (signed, signature) = dev_signed_message(&evidence)?;
    let described = format!(
        "Ed25519 by the dev TEE key over the context and the {}-byte payload",
        signed.len() - dev::SIGNING_CONTEXT.len()
    );
    Ok(Workload {
        evidence_type: EvidenceType::Dev,
        full: Box::new(move || {
            let verdict = dev::verify(&evidence, &key, &expectations, SAMPLE_NOW)?;
            std::hint::black_box(verdict);
            Ok(())
        }),
        baseline: Box::new(move || {
            let signature = Ed25519Signature::from_bytes(&signature);
            key.verify_strict(std::hint::black_box(&signed), &signature)
                .map_err(|_| anyhow!("the dev signature does not verify"))
        }),
        signatures: vec![described],
        counted_how: "ed25519-dalek verify_strict, as dev::verify calls it".into(),
    })
}

/// The bytes the dev TEE signed (context ‖ payload, as carried) and the signature, taken from
/// the evidence's `[payload, signature]` CBOR envelope.
fn dev_signed_message(evidence: &[u8]) -> Result<(Vec<u8>, [u8; 64])> {
    let envelope: ciborium::Value = ciborium::de::from_reader(evidence)?;
    let items = envelope
        .into_array()
        .map_err(|_| anyhow!("dev evidence is not a CBOR array"))?;
    let [payload, signature] = <[ciborium::Value; 2]>::try_from(items)
        .map_err(|_| anyhow!("dev evidence is not [payload, signature]"))?;
    let payload = payload
        .into_bytes()
        .map_err(|_| anyhow!("dev payload is not a byte string"))?;
    let signature = signature
        .into_bytes()
        .map_err(|_| anyhow!("dev signature is not a byte string"))?;
    let signature =
        <[u8; 64]>::try_from(signature).map_err(|_| anyhow!("dev signature is not 64 bytes"))?;
    Ok(([dev::SIGNING_CONTEXT, &payload].concat(), signature))
}

// ----- tpm2 -----

const TPM2_QUOTED: &[u8] = include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2/quote.msg");
const TPM2_SIGNATURE: &[u8] = include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2/quote.sig");
const TPM2_AK_PEM: &str = include_str!("../../ztmesh-attest/tests/fixtures/tpm2/ak.pem");
const TPM2_PCR_VALUES: &[u8] = include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2/pcrs.bin");

fn tpm2_workload() -> Result<Workload> {
    let ak = AttestationKey::from_pem(TPM2_AK_PEM)?;
    let evidence = Tpm2Evidence::from_quote_outputs(
        TPM2_QUOTED,
        TPM2_SIGNATURE,
        &ak.to_spki_der(),
        TPM2_PCR_VALUES,
    )?
    .encode();
    let verdict = tpm2::verify(&evidence, &ak, &Expectations::default())?;
    let expectations = passing_expectations(&verdict, "pcr7")?;

    let (baseline, signature, counted_how): (Operation, &str, &str) =
        match (ak.clone(), TpmSignature::parse(TPM2_SIGNATURE)?) {
            (AttestationKey::EcdsaP256(key), TpmSignature::Ecdsa { r, s }) => (
                Box::new(move || {
                    let signature = p256::ecdsa::Signature::from_scalars(r, s)?;
                    key.verify(std::hint::black_box(TPM2_QUOTED), &signature)
                        .map_err(|_| anyhow!("the quote signature does not verify"))
                }),
                "ECDSA P-256/SHA-256",
                "p256 VerifyingKey::verify, as tpm2::verify calls it",
            ),
            (AttestationKey::Rsa(key), TpmSignature::RsaPkcs1v15(bytes)) => {
                let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
                (
                    Box::new(move || {
                        let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice())?;
                        key.verify(std::hint::black_box(TPM2_QUOTED), &signature)
                            .map_err(|_| anyhow!("the quote signature does not verify"))
                    }),
                    "RSASSA-PKCS1-v1_5/SHA-256",
                    "rsa pkcs1v15 VerifyingKey::verify, as tpm2::verify calls it",
                )
            }
            (AttestationKey::Rsa(key), TpmSignature::RsaPss(bytes)) => {
                let key = rsa::pss::VerifyingKey::<sha2::Sha256>::new(key);
                (
                    Box::new(move || {
                        let signature = rsa::pss::Signature::try_from(bytes.as_slice())?;
                        key.verify(std::hint::black_box(TPM2_QUOTED), &signature)
                            .map_err(|_| anyhow!("the quote signature does not verify"))
                    }),
                    "RSASSA-PSS/SHA-256",
                    "rsa pss VerifyingKey::verify, as tpm2::verify calls it",
                )
            }
            _ => bail!("the sample quote's signature scheme does not match its key"),
        };
    Ok(Workload {
        evidence_type: EvidenceType::Tpm2,
        full: Box::new(move || {
            let verdict = tpm2::verify(&evidence, &ak, &expectations)?;
            std::hint::black_box(verdict);
            Ok(())
        }),
        baseline,
        signatures: vec![format!(
            "{signature} by the attestation key over the {}-byte TPMS_ATTEST (swtpm quote)",
            TPM2_QUOTED.len()
        )],
        counted_how: counted_how.into(),
    })
}

// ----- tdx, sgx -----

const TDX_QUOTE: &[u8] = include_bytes!("../../ztmesh-attest/tests/fixtures/dcap/tdx_quote");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../ztmesh-attest/tests/fixtures/dcap/tdx_quote_collateral.json");
const SGX_QUOTE: &[u8] = include_bytes!("../../ztmesh-attest/tests/fixtures/dcap/sgx_quote");
const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../ztmesh-attest/tests/fixtures/dcap/sgx_quote_collateral.json");

fn dcap_workload(
    evidence_type: EvidenceType,
    quote: &'static [u8],
    collateral: &'static [u8],
) -> Result<Workload> {
    type Verify = fn(&[u8], Option<&[u8]>, &Expectations, u64) -> Result<Verdict, AttestError>;
    let (verify, measurement): (Verify, &str) = match evidence_type {
        EvidenceType::Tdx => (dcap::verify_tdx, "mrtd"),
        _ => (dcap::verify_sgx, "mrenclave"),
    };
    let verdict = verify(
        quote,
        Some(collateral),
        &Expectations::default(),
        SAMPLE_NOW,
    )?;
    let expectations = passing_expectations(&verdict, measurement)?;

    let parsed: QuoteCollateralV3 = serde_json::from_slice(collateral)?;
    let recorded = record_dcap_signatures(quote, &parsed, SAMPLE_NOW)?;
    let calls = recorded.len();
    ensure!(
        recorded.iter().all(|signature| signature.valid),
        "dcap-qvl checked a signature that does not verify"
    );
    // Each signature once: a signature the verifier checks twice is the verifier's cost, not
    // the evidence's.
    let mut distinct: Vec<RecordedSignature> = Vec::with_capacity(calls);
    for signature in recorded {
        if !distinct.contains(&signature) {
            distinct.push(signature);
        }
    }
    let names = DcapNames::new(quote, &parsed);
    let signatures = distinct
        .iter()
        .map(|signature| names.describe(signature))
        .collect();
    let algorithm = RingCrypto::sig_algo();
    Ok(Workload {
        evidence_type,
        full: Box::new(move || {
            let verdict = verify(quote, Some(collateral), &expectations, SAMPLE_NOW)?;
            std::hint::black_box(verdict);
            Ok(())
        }),
        baseline: Box::new(move || {
            for signature in &distinct {
                algorithm
                    .verify_signature(
                        &signature.public_key,
                        std::hint::black_box(&signature.message),
                        &signature.signature,
                    )
                    .map_err(|_| anyhow!("a recorded DCAP signature does not verify"))?;
            }
            Ok(())
        }),
        signatures,
        counted_how: format!(
            "ECDSA P-256/SHA-256, every signature dcap-qvl verified ({calls} verify calls) \
             recorded in this run, replayed through its ring algorithm (webpki ECDSA_P256_SHA256)"
        ),
    })
}

/// One signature verification `dcap-qvl` asked its algorithm for: public key (SEC1 point),
/// signed bytes and DER signature, exactly as passed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordedSignature {
    public_key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
    valid: bool,
}

/// What [`RecordingAlgorithm`] saw. `dcap-qvl` takes its crypto as associated functions of a
/// type (no instance to carry state), so the record has to be a static; only
/// [`record_dcap_signatures`] fills and drains it, under its lock.
static RECORDED: Mutex<Vec<RecordedSignature>> = Mutex::new(Vec::new());

/// Serializes recordings: one quote's signatures must not mix with another's.
static RECORDING: Mutex<()> = Mutex::new(());

/// `dcap-qvl`'s ring algorithm (what `RingConfig`, the configuration `ztmesh-attest` uses,
/// verifies with), noting every call.
#[derive(Debug)]
struct RecordingAlgorithm;

static RECORDING_ALGORITHM: RecordingAlgorithm = RecordingAlgorithm;

impl SignatureVerificationAlgorithm for RecordingAlgorithm {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let result = RingCrypto::sig_algo().verify_signature(public_key, message, signature);
        if let Ok(mut recorded) = RECORDED.lock() {
            recorded.push(RecordedSignature {
                public_key: public_key.to_vec(),
                message: message.to_vec(),
                signature: signature.to_vec(),
                valid: result.is_ok(),
            });
        }
        result
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        RingCrypto::sig_algo().public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        RingCrypto::sig_algo().signature_alg_id()
    }

    fn fips(&self) -> bool {
        RingCrypto::sig_algo().fips()
    }
}

struct RecordingCrypto;

impl CryptoProvider for RecordingCrypto {
    fn sig_algo() -> &'static dyn SignatureVerificationAlgorithm {
        &RECORDING_ALGORITHM
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        RingCrypto::sha256(data)
    }

    fn sha384(data: &[u8]) -> [u8; 48] {
        RingCrypto::sha384(data)
    }
}

/// `dcap_qvl::configs::RingConfig` with the recording algorithm in place of ring's.
struct RecordingConfig;

impl Config for RecordingConfig {
    type X509 = dcap_qvl::x509::X509CertBackend;
    type SigEncoder = dcap_qvl::signature::DerSigEncoder;
    type Crypto = RecordingCrypto;
}

/// Verifies `quote` the way `ztmesh_attest::dcap` does (Intel's production root, the same
/// checks) and answers every signature verification `dcap-qvl` performed, in order.
fn record_dcap_signatures(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now: u64,
) -> Result<Vec<RecordedSignature>> {
    let _only_one = RECORDING
        .lock()
        .map_err(|_| anyhow!("a recording panicked"))?;
    let take = || -> Result<Vec<RecordedSignature>> {
        Ok(std::mem::take(
            &mut *RECORDED
                .lock()
                .map_err(|_| anyhow!("a recording panicked"))?,
        ))
    };
    take()?;
    dcap_qvl::verify::QuoteVerifier::new_prod()
        .with_config::<RecordingConfig>()
        .verify(quote, collateral, now)
        .map_err(|error| anyhow!("dcap-qvl refuses the sample quote: {error:#}"))?;
    take()
}

/// Names for the signed objects of one quote and its collateral, to say what each recorded
/// signature covers.
struct DcapNames<'a> {
    quote: &'a [u8],
    collateral: &'a QuoteCollateralV3,
    /// Every certificate in the collateral's chains and the quote's certification data.
    certificates: Vec<Vec<u8>>,
}

impl<'a> DcapNames<'a> {
    fn new(quote: &'a [u8], collateral: &'a QuoteCollateralV3) -> Self {
        let mut certificates = Vec::new();
        for chain in [
            collateral.pck_crl_issuer_chain.as_bytes(),
            collateral.tcb_info_issuer_chain.as_bytes(),
            collateral.qe_identity_issuer_chain.as_bytes(),
            collateral
                .pck_certificate_chain
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
            quote,
        ] {
            for certificate in pem_certificates(chain) {
                if !certificates.contains(&certificate) {
                    certificates.push(certificate);
                }
            }
        }
        DcapNames {
            quote,
            collateral,
            certificates,
        }
    }

    fn describe(&self, signature: &RecordedSignature) -> String {
        let message = signature.message.as_slice();
        let by = |name: &str| format!("{name} ({} bytes)", message.len());
        if message == self.collateral.tcb_info.as_bytes() {
            return by("TCB info JSON, by the TCB signing key");
        }
        if message == self.collateral.qe_identity.as_bytes() {
            return by("QE identity JSON, by the TCB signing key");
        }
        if self.quote.starts_with(message) {
            return by("quote header and report body, by the attestation key");
        }
        for crl in [&self.collateral.root_ca_crl, &self.collateral.pck_crl] {
            if let Ok((_, parsed)) = CertificateRevocationList::from_der(crl) {
                if parsed.tbs_cert_list.as_ref() == message {
                    return by(&format!("CRL issued by {}", common_name(parsed.issuer())));
                }
            }
        }
        for certificate in &self.certificates {
            if let Ok((_, parsed)) = X509Certificate::from_der(certificate) {
                if parsed.tbs_certificate.as_ref() == message {
                    return by(&format!(
                        "certificate of {}, by {}",
                        common_name(parsed.subject()),
                        common_name(parsed.issuer())
                    ));
                }
            }
        }
        if message.len() == 384 && contains(self.quote, message) {
            return by("QE report, by the PCK key");
        }
        by("signed bytes not identified")
    }
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|common_name| common_name.as_str().ok())
        .map_or_else(|| name.to_string(), str::to_owned)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The DER of every `CERTIFICATE` PEM block in `bytes` (text or a quote with a PEM chain
/// inside); blocks that do not decode are skipped: this only names things.
fn pem_certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certificates = Vec::new();
    let mut rest = bytes;
    while let Some(start) = rest.windows(BEGIN.len()).position(|window| window == BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.windows(END.len()).position(|window| window == END) else {
            break;
        };
        let base64_text: Vec<u8> = body[..end]
            .iter()
            .copied()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(base64_text) {
            certificates.push(der);
        }
        rest = &body[end + END.len()..];
    }
    certificates
}

// ----- sev-snp -----

const SEV_REPORT_HEX: &str =
    include_str!("../../ztmesh-attest/tests/fixtures/sev/report_milan.hex");
const SEV_VCEK_MILAN: &[u8] =
    include_bytes!("../../ztmesh-attest/tests/fixtures/sev/vcek_milan.der");

/// The report signature covers bytes 0..0x2A0; R and S follow, 72 little-endian bytes each.
const SEV_SIGNED_LEN: usize = 0x2A0;

/// One RSA-PSS/SHA-384 certificate signature as the `sev` crate checks it.
struct CertificateSignature {
    key: rsa::pss::VerifyingKey<Sha384>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
}

fn sev_workload() -> Result<Workload> {
    let report = hex::decode(SEV_REPORT_HEX.trim())?;
    let verdict = sev::verify_snp(
        &report,
        SEV_VCEK_MILAN,
        &Expectations::default(),
        SAMPLE_NOW,
    )?;
    ensure!(
        verdict.measurements.get("product").map(String::as_str) == Some("milan"),
        "the sample report is not from a Milan processor"
    );
    let expectations = passing_expectations(&verdict, "measurement")?;

    // The ARK and ASK `sev::verify_snp` checks the VCEK against: the Milan pair built into the
    // `sev` crate (the first product tried, and the one that signs the sample VCEK).
    let ark = ::sev::certs::snp::builtin::milan::ark()?.to_der()?;
    let ask = ::sev::certs::snp::builtin::milan::ask()?.to_der()?;
    let mut certificate_signatures = Vec::new();
    let mut signatures = Vec::new();
    // The order of the `sev` crate's Chain::verify: the ARK self-signature, the ASK by the
    // ARK, the VCEK by the ASK.
    for (signer, signee) in [(&ark, &ark), (&ark, &ask), (&ask, &SEV_VCEK_MILAN.to_vec())] {
        let (_, signer) = X509Certificate::from_der(signer)?;
        let (_, signee) = X509Certificate::from_der(signee)?;
        let key = rsa::RsaPublicKey::from_public_key_der(signer.public_key().raw)?;
        signatures.push(format!(
            "RSA-PSS/SHA-384 ({} bits): certificate of {}, by {} ({} bytes)",
            rsa::traits::PublicKeyParts::size(&key) * 8,
            common_name(signee.subject()),
            common_name(signer.subject()),
            signee.tbs_certificate.as_ref().len()
        ));
        certificate_signatures.push(CertificateSignature {
            key: rsa::pss::VerifyingKey::<Sha384>::new(key),
            tbs: signee.tbs_certificate.as_ref().to_vec(),
            signature: signee.signature_value.data.to_vec(),
        });
    }
    let (_, vcek) = X509Certificate::from_der(SEV_VCEK_MILAN)?;
    let vcek_key =
        p384::ecdsa::VerifyingKey::from_sec1_bytes(&vcek.public_key().subject_public_key.data)?;
    let scalar = |offset: usize| -> [u8; 48] {
        let mut big_endian = [0u8; 48];
        for (target, source) in big_endian
            .iter_mut()
            .zip(report[offset..offset + 48].iter().rev())
        {
            *target = *source;
        }
        big_endian
    };
    let (r, s) = (scalar(SEV_SIGNED_LEN), scalar(SEV_SIGNED_LEN + 72));
    let signed_report = report[..SEV_SIGNED_LEN].to_vec();
    signatures.push(format!(
        "ECDSA P-384/SHA-384: the report's first {SEV_SIGNED_LEN} bytes, by the VCEK"
    ));

    Ok(Workload {
        evidence_type: EvidenceType::SevSnp,
        full: Box::new(move || {
            let verdict = sev::verify_snp(&report, SEV_VCEK_MILAN, &expectations, SAMPLE_NOW)?;
            std::hint::black_box(verdict);
            Ok(())
        }),
        baseline: Box::new(move || {
            for certificate in &certificate_signatures {
                let signature = rsa::pss::Signature::try_from(certificate.signature.as_slice())?;
                certificate
                    .key
                    .verify(std::hint::black_box(&certificate.tbs), &signature)
                    .map_err(|_| anyhow!("an AMD certificate signature does not verify"))?;
            }
            let signature = p384::ecdsa::Signature::from_scalars(r, s)?;
            vcek_key
                .verify(std::hint::black_box(&signed_report), &signature)
                .map_err(|_| anyhow!("the report signature does not verify"))
        }),
        signatures,
        counted_how: "the sev crate's chain check (rsa pss VerifyingKey<Sha384>) and \
                      sev::verify_snp's report check (p384 VerifyingKey::verify)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn pem_blocks_are_found_inside_other_bytes() {
        let der = b"certificate bytes".to_vec();
        let text = format!(
            "junk-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\0\0",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(pem_certificates(text.as_bytes()), vec![der]);
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----abc").is_empty());
    }

    #[test]
    fn evidence_types_outside_the_benched_set_are_refused_by_name() {
        assert_eq!(parse_evidence_type("sev-snp"), Ok(EvidenceType::SevSnp));
        let error = parse_evidence_type("bogus").unwrap_err();
        assert!(error.contains("bogus") && error.contains("tpm2"), "{error}");
    }
}
