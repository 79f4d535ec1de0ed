//! `ztmesh bench attest`: one result line per evidence type with a parseable ratio, the
//! signature-set sizes it states, type selection, and a clear refusal of unknown types.
//! Nothing here judges speed: the numbers only have to be finite and positive.

use std::process::{Command, Output};

/// Every evidence type the benchmark measures by default, with the size of its signature set:
/// dev and tpm2 one signature each; tdx and sgx the nine ECDSA P-256 signatures dcap-qvl
/// verifies (quote, QE report, two certificates below the root on the PCK path, the TCB
/// signing certificate, root CA CRL, PCK CRL, TCB info, QE identity); sev-snp the three
/// RSA-PSS certificate signatures of the ARK/ASK/VCEK chain plus the report signature.
const TYPES: [(&str, u32); 5] = [
    ("dev", 1),
    ("tpm2", 1),
    ("tdx", 9),
    ("sgx", 9),
    ("sev-snp", 4),
];

fn ztmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ztmesh"))
        .args(args)
        .output()
        .expect("run ztmesh")
}

fn stdout_of_success(args: &[&str]) -> String {
    let out = ztmesh(args);
    let stdout = String::from_utf8(out.stdout).expect("utf8 stdout");
    assert!(
        out.status.success(),
        "ztmesh {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A result line of `bench attest`: the evidence type, its set size and its ratio.
struct ResultLine {
    evidence_type: String,
    signatures: u32,
    ratio: f64,
}

/// The result lines of `out`: those naming a rate in verifications/s. Each must end in
/// `ratio <number>`.
fn result_lines(out: &str) -> Vec<ResultLine> {
    out.lines()
        .filter(|line| line.contains("verifications/s"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.len() > 3, "short result line: {line}");
            assert_eq!(words[words.len() - 2], "ratio", "{line}");
            let ratio: f64 = words[words.len() - 1]
                .parse()
                .unwrap_or_else(|_| panic!("the last word is not a number: {line}"));
            // "... signature sets/s of <count> signature(s) ..."
            let signatures = words
                .iter()
                .position(|word| *word == "of")
                .and_then(|index| words.get(index + 1))
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("no signature count in: {line}"));
            ResultLine {
                evidence_type: words[0].to_owned(),
                signatures,
                ratio,
            }
        })
        .collect()
}

#[test]
fn every_evidence_type_gets_a_finite_positive_ratio_and_its_signature_count() {
    let out = stdout_of_success(&["bench", "attest", "--seconds", "0.05"]);
    let lines = result_lines(&out);
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line.evidence_type.as_str())
        .collect();
    assert_eq!(
        types,
        TYPES.map(|(name, _)| name),
        "one result line per type, in order:\n{out}"
    );
    for (line, (name, signatures)) in lines.iter().zip(TYPES) {
        assert!(
            line.ratio.is_finite() && line.ratio > 0.0,
            "{name}: ratio {} in:\n{out}",
            line.ratio
        );
        assert_eq!(line.signatures, signatures, "{name} in:\n{out}");
    }
    assert!(
        !out.contains("not identified"),
        "every recorded DCAP signature is named:\n{out}"
    );
}

#[test]
fn types_select_and_order_the_measured_evidence() {
    let out = stdout_of_success(&[
        "bench",
        "attest",
        "--seconds",
        "0.01",
        "--rounds",
        "1",
        "--types",
        "tpm2,dev,tpm2",
    ]);
    let types: Vec<String> = result_lines(&out)
        .into_iter()
        .map(|line| line.evidence_type)
        .collect();
    assert_eq!(types, ["tpm2", "dev"], "{out}");
}

#[test]
fn an_unknown_evidence_type_is_refused_with_the_known_ones() {
    let out = ztmesh(&["bench", "attest", "--types", "bogus"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown evidence type \"bogus\"")
            && ["dev", "tpm2", "tdx", "sgx", "sev-snp"]
                .iter()
                .all(|name| stderr.contains(name)),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing is measured");
}

#[test]
fn a_non_positive_duration_is_refused() {
    for seconds in ["0", "-1", "nan", "soon"] {
        let out = ztmesh(&["bench", "attest", "--seconds", seconds]);
        assert!(!out.status.success(), "--seconds {seconds}");
    }
}
