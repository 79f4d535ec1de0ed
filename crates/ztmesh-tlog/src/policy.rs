//! C2SP tlog-policy (the Sigsum policy grammar): which logs to trust, which witnesses exist, and
//! which combination of witness cosignatures makes a checkpoint acceptable.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> <k|any|all> <member>...
//! quorum <name|none>
//! ```
//!
//! Items are separated by ASCII spaces and tabs; blank lines and `#` comment lines are ignored.
//! A group or quorum may only name witnesses and groups defined on earlier lines, which is what
//! rules out cycles: a reference to a name defined later (or to the group being defined) is
//! reported as [`PolicyParseErrorKind::ForwardReference`]. Every parse error carries its line.
//!
//! Divergences from the spec text, all on the strict side:
//! * Log vkeys must be Ed25519 note keys (type 0x01) and witness vkeys Ed25519 cosignature/v1
//!   keys (type 0x04); other signature types (ML-DSA-44 among them) are refused.
//! * The policy must be UTF-8 (the spec treats non-ASCII bytes as opaque, so any UTF-8 policy
//!   means the same here); names are compared byte for byte, as the spec asks.
//! * Sigsum's older form with bare hex public keys is not accepted: keys are vkeys.
//! * A numeric threshold is plain decimal without leading zeroes.
//! * At most [`MAX_ENTRIES`] logs, witnesses and groups each (the spec recommends supporting at
//!   least 32).
//!
//! [`Policy::evaluate`] answers whether a set of witness names satisfies the quorum (a name given
//! twice counts once); [`Policy::verify_checkpoint`] does the whole job on a cosigned checkpoint
//! note: a valid log signature, valid cosignatures, quorum met.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::cosignature::{CosignatureError, CosignatureVerifier};
use crate::key::KeyError;
use crate::note::{Note, NoteError, Verifier};

/// Largest policy text accepted, in bytes.
pub const MAX_POLICY_LEN: usize = 256 * 1024;

/// Most logs, witnesses and groups (each) in one policy.
pub const MAX_ENTRIES: usize = 256;

/// The predefined quorum name meaning "no cosignature needed".
pub const NONE: &str = "none";

/// What is wrong with a policy line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyParseErrorKind {
    /// The policy is over [`MAX_POLICY_LEN`] bytes.
    #[error("policy exceeds {MAX_POLICY_LEN} bytes")]
    TooLarge,
    /// The policy is not UTF-8.
    #[error("policy is not UTF-8")]
    NotUtf8,
    /// A control character other than tab and newline (or DEL).
    #[error("control character (only tab and newline are allowed)")]
    ForbiddenCharacter,
    /// The line starts with a word that is not `log`, `witness`, `group` or `quorum`.
    #[error("unknown keyword {0:?}")]
    UnknownKeyword(String),
    /// The line has too few or too many items for its keyword.
    #[error("wrong number of items for `{0}`")]
    WrongItemCount(&'static str),
    /// A vkey is malformed or of the wrong type.
    #[error("bad key: {0}")]
    BadKey(KeyError),
    /// Two logs, or two witnesses, wrap the same public key.
    #[error("duplicate public key (already defined on line {first_line})")]
    DuplicateKey {
        /// Line of the first definition.
        first_line: usize,
    },
    /// A witness or group name is defined twice (they share one namespace).
    #[error("name {name:?} is already defined on line {first_line}")]
    DuplicateName {
        /// The name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// `none` cannot be defined or used as a group member.
    #[error("the name `none` is reserved for `quorum none`")]
    ReservedName,
    /// A name that is defined nowhere in the policy.
    #[error("unknown name {0:?}")]
    UnknownName(String),
    /// A name used before the line defining it (this is how a cycle shows up).
    #[error("{name:?} is used before its definition on line {defined_on} (or in a cycle)")]
    ForwardReference {
        /// The name.
        name: String,
        /// Line that defines it.
        defined_on: usize,
    },
    /// A group lists the same member twice.
    #[error("member {0:?} is listed twice")]
    DuplicateMember(String),
    /// The threshold is not `any`, `all` or a decimal number.
    #[error("threshold {0:?} is not `any`, `all` or a decimal number")]
    BadThreshold(String),
    /// A numeric threshold of 0.
    #[error("threshold must be at least 1")]
    ZeroThreshold,
    /// A numeric threshold above the number of members.
    #[error("threshold {threshold} is above the {members} members")]
    ThresholdAboveMembers {
        /// The threshold.
        threshold: usize,
        /// Number of members.
        members: usize,
    },
    /// A second `quorum` line.
    #[error("second quorum line (first on line {first_line})")]
    DuplicateQuorum {
        /// Line of the first quorum.
        first_line: usize,
    },
    /// No `quorum` line at all.
    #[error("the policy has no quorum line")]
    MissingQuorum,
    /// More than [`MAX_ENTRIES`] logs, witnesses or groups.
    #[error("more than {MAX_ENTRIES} {0}")]
    TooManyEntries(&'static str),
}

/// A policy that could not be parsed: where and why. A local (configuration) fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {kind}")]
pub struct PolicyParseError {
    /// 1-based line number; 0 for faults of the whole text (size, encoding, no quorum line).
    pub line: usize,
    /// What is wrong.
    pub kind: PolicyParseErrorKind,
}

/// Why a cosigned checkpoint does not satisfy a policy. Faults of whoever supplied the note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The note text is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    NotACheckpoint(CheckpointError),
    /// No log in the policy has the checkpoint's origin as its key name.
    #[error("no log in the policy for origin {0:?}")]
    UnknownLog(String),
    /// The log signature is missing or invalid.
    #[error("log signature: {0}")]
    LogSignature(NoteError),
    /// A line from a policy witness's key does not verify.
    #[error("cosignature of witness {witness:?}: {error}")]
    BadCosignature {
        /// Policy name of the witness.
        witness: String,
        /// What failed.
        error: CosignatureError,
    },
    /// The valid cosignatures do not meet the quorum.
    #[error("quorum not met (valid cosignatures from: {cosigners:?})")]
    QuorumNotMet {
        /// Policy names of the witnesses that validly cosigned.
        cosigners: BTreeSet<String>,
    },
}

/// A log trusted by the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLog {
    /// The log key; its name is the log's origin.
    pub verifier: Verifier,
    /// Optional URL (opaque here).
    pub url: Option<String>,
}

/// A witness known to the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWitness {
    /// Name within the policy (not necessarily the key name).
    pub name: String,
    /// The cosigning key.
    pub verifier: CosignatureVerifier,
    /// Optional URL (opaque here).
    pub url: Option<String>,
}

/// A member of a group: an index into the witnesses or into the (earlier) groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

/// `threshold` of `members` must be satisfied.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    name: String,
    threshold: usize,
    members: Vec<Member>,
}

/// What the quorum line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quorum {
    None,
    Member(Member),
}

/// A parsed policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    /// In definition order, so every member group comes before the groups containing it.
    groups: Vec<Group>,
    quorum: Quorum,
}

/// A checkpoint that satisfies the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVerified {
    /// The checkpoint, now trusted.
    pub checkpoint: Checkpoint,
    /// Policy names of the witnesses that validly cosigned, with their latest timestamps.
    pub cosigners: BTreeMap<String, u64>,
}

/// Where a witness or group name was defined, and as what.
struct Definition {
    line: usize,
    member: Member,
}

fn err(line: usize, kind: PolicyParseErrorKind) -> PolicyParseError {
    PolicyParseError { line, kind }
}

impl Policy {
    /// Parses a policy from bytes (the length is checked before decoding).
    pub fn parse_bytes(text: &[u8]) -> Result<Self, PolicyParseError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(err(0, PolicyParseErrorKind::TooLarge));
        }
        let text = std::str::from_utf8(text).map_err(|_| err(0, PolicyParseErrorKind::NotUtf8))?;
        Policy::parse(text)
    }

    /// Parses a policy.
    pub fn parse(text: &str) -> Result<Self, PolicyParseError> {
        use PolicyParseErrorKind as K;
        if text.len() > MAX_POLICY_LEN {
            return Err(err(0, K::TooLarge));
        }
        let lines: Vec<Vec<&str>> = text
            .split('\n')
            .map(|line| {
                line.split([' ', '\t'])
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .collect();

        // First pass: where each name is defined, so that a reference to a later line can be
        // told apart from a name that does not exist (a forward reference is how a cycle looks).
        let mut defined_on: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, items) in lines.iter().enumerate() {
            if let ["witness" | "group", name, ..] = items.as_slice() {
                defined_on.entry(name).or_insert(i + 1);
            }
        }

        let mut logs: Vec<(usize, PolicyLog)> = Vec::new();
        let mut witnesses: Vec<(usize, PolicyWitness)> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut names: BTreeMap<String, Definition> = BTreeMap::new();
        let mut quorum: Option<(usize, Quorum)> = None;

        for (i, (raw, items)) in text.split('\n').zip(&lines).enumerate() {
            let line = i + 1;
            if raw.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(err(line, K::ForbiddenCharacter));
            }
            let Some((&keyword, args)) = items.split_first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            let resolve = |name: &str| -> Result<Member, PolicyParseError> {
                if name == NONE {
                    return Err(err(line, K::ReservedName));
                }
                if let Some(definition) = names.get(name) {
                    return Ok(definition.member);
                }
                match defined_on.get(name) {
                    Some(&defined_on) => Err(err(
                        line,
                        K::ForwardReference {
                            name: name.to_owned(),
                            defined_on,
                        },
                    )),
                    None => Err(err(line, K::UnknownName(name.to_owned()))),
                }
            };
            match keyword {
                "log" => {
                    let (vkey, url) = match args {
                        [vkey] => (vkey, None),
                        [vkey, url] => (vkey, Some((*url).to_owned())),
                        _ => return Err(err(line, K::WrongItemCount("log"))),
                    };
                    let verifier = Verifier::parse(vkey).map_err(|e| err(line, K::BadKey(e)))?;
                    if let Some((first_line, _)) = logs
                        .iter()
                        .find(|(_, l)| l.verifier.public_key() == verifier.public_key())
                    {
                        return Err(err(
                            line,
                            K::DuplicateKey {
                                first_line: *first_line,
                            },
                        ));
                    }
                    if logs.len() >= MAX_ENTRIES {
                        return Err(err(line, K::TooManyEntries("logs")));
                    }
                    logs.push((line, PolicyLog { verifier, url }));
                }
                "witness" => {
                    let (name, vkey, url) = match args {
                        [name, vkey] => (*name, vkey, None),
                        [name, vkey, url] => (*name, vkey, Some((*url).to_owned())),
                        _ => return Err(err(line, K::WrongItemCount("witness"))),
                    };
                    check_new_name(name, line, &names)?;
                    let verifier =
                        CosignatureVerifier::parse(vkey).map_err(|e| err(line, K::BadKey(e)))?;
                    if let Some((first_line, _)) = witnesses
                        .iter()
                        .find(|(_, w)| w.verifier.public_key() == verifier.public_key())
                    {
                        return Err(err(
                            line,
                            K::DuplicateKey {
                                first_line: *first_line,
                            },
                        ));
                    }
                    if witnesses.len() >= MAX_ENTRIES {
                        return Err(err(line, K::TooManyEntries("witnesses")));
                    }
                    names.insert(
                        name.to_owned(),
                        Definition {
                            line,
                            member: Member::Witness(witnesses.len()),
                        },
                    );
                    witnesses.push((
                        line,
                        PolicyWitness {
                            name: name.to_owned(),
                            verifier,
                            url,
                        },
                    ));
                }
                "group" => {
                    let [name, threshold, members @ ..] = args else {
                        return Err(err(line, K::WrongItemCount("group")));
                    };
                    if members.is_empty() {
                        return Err(err(line, K::WrongItemCount("group")));
                    }
                    check_new_name(name, line, &names)?;
                    let mut resolved = Vec::with_capacity(members.len());
                    for member in members {
                        let m = resolve(member)?;
                        if resolved.contains(&m) {
                            return Err(err(line, K::DuplicateMember((*member).to_owned())));
                        }
                        resolved.push(m);
                    }
                    let threshold = match *threshold {
                        "any" => 1,
                        "all" => resolved.len(),
                        k => {
                            let k = parse_threshold(k)
                                .ok_or_else(|| err(line, K::BadThreshold(k.to_owned())))?;
                            if k == 0 {
                                return Err(err(line, K::ZeroThreshold));
                            }
                            if k > resolved.len() {
                                return Err(err(
                                    line,
                                    K::ThresholdAboveMembers {
                                        threshold: k,
                                        members: resolved.len(),
                                    },
                                ));
                            }
                            k
                        }
                    };
                    if groups.len() >= MAX_ENTRIES {
                        return Err(err(line, K::TooManyEntries("groups")));
                    }
                    names.insert(
                        (*name).to_owned(),
                        Definition {
                            line,
                            member: Member::Group(groups.len()),
                        },
                    );
                    groups.push(Group {
                        name: (*name).to_owned(),
                        threshold,
                        members: resolved,
                    });
                }
                "quorum" => {
                    let [name] = args else {
                        return Err(err(line, K::WrongItemCount("quorum")));
                    };
                    if let Some((first_line, _)) = quorum {
                        return Err(err(line, K::DuplicateQuorum { first_line }));
                    }
                    let q = if *name == NONE {
                        Quorum::None
                    } else {
                        Quorum::Member(resolve(name)?)
                    };
                    quorum = Some((line, q));
                }
                other => return Err(err(line, K::UnknownKeyword(other.to_owned()))),
            }
        }
        let Some((_, quorum)) = quorum else {
            return Err(err(0, K::MissingQuorum));
        };
        Ok(Policy {
            logs: logs.into_iter().map(|(_, l)| l).collect(),
            witnesses: witnesses.into_iter().map(|(_, w)| w).collect(),
            groups,
            quorum,
        })
    }

    /// The trusted logs.
    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    /// The known witnesses.
    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// Whether the witnesses named in `cosigners` (policy names; unknown names are ignored, a
    /// name given twice counts once) satisfy the quorum.
    pub fn evaluate<'a>(&self, cosigners: impl IntoIterator<Item = &'a str>) -> bool {
        let present: BTreeSet<&str> = cosigners.into_iter().collect();
        let witnessed: Vec<bool> = self
            .witnesses
            .iter()
            .map(|w| present.contains(w.name.as_str()))
            .collect();
        // Groups only contain earlier groups, so one pass in definition order settles them all.
        let mut satisfied: Vec<bool> = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let count = group
                .members
                .iter()
                .filter(|member| match **member {
                    Member::Witness(i) => witnessed.get(i).copied().unwrap_or(false),
                    Member::Group(i) => satisfied.get(i).copied().unwrap_or(false),
                })
                .count();
            satisfied.push(count >= group.threshold);
        }
        match self.quorum {
            Quorum::None => true,
            Quorum::Member(Member::Witness(i)) => witnessed.get(i).copied().unwrap_or(false),
            Quorum::Member(Member::Group(i)) => satisfied.get(i).copied().unwrap_or(false),
        }
    }

    /// Checks a cosigned checkpoint note against the policy: the text is a checkpoint, a policy
    /// log whose key name is the origin signed it, every line from a policy witness's key
    /// verifies, and the witnesses that cosigned meet the quorum.
    ///
    /// A bad line from a known witness key refuses the whole note, as the signed-note spec
    /// recommends for known keys. Timestamps are returned, not judged: callers refuse ones in
    /// their future if they wish.
    pub fn verify_checkpoint(&self, note: &Note) -> Result<PolicyVerified, PolicyError> {
        let checkpoint = Checkpoint::parse(note.text()).map_err(PolicyError::NotACheckpoint)?;
        let log_keys: Vec<Verifier> = self
            .logs
            .iter()
            .filter(|log| log.verifier.name() == checkpoint.origin())
            .map(|log| log.verifier.clone())
            .collect();
        if log_keys.is_empty() {
            return Err(PolicyError::UnknownLog(checkpoint.origin().to_owned()));
        }
        note.verify(&log_keys).map_err(PolicyError::LogSignature)?;
        let mut cosigners = BTreeMap::new();
        for witness in &self.witnesses {
            match witness.verifier.verify_note(note) {
                Ok(Some(timestamp)) => {
                    cosigners.insert(witness.name.clone(), timestamp);
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(PolicyError::BadCosignature {
                        witness: witness.name.clone(),
                        error,
                    })
                }
            }
        }
        if !self.evaluate(cosigners.keys().map(String::as_str)) {
            return Err(PolicyError::QuorumNotMet {
                cosigners: cosigners.into_keys().collect(),
            });
        }
        Ok(PolicyVerified {
            checkpoint,
            cosigners,
        })
    }
}

fn check_new_name(
    name: &str,
    line: usize,
    names: &BTreeMap<String, Definition>,
) -> Result<(), PolicyParseError> {
    if name == NONE {
        return Err(err(line, PolicyParseErrorKind::ReservedName));
    }
    if let Some(first) = names.get(name) {
        return Err(err(
            line,
            PolicyParseErrorKind::DuplicateName {
                name: name.to_owned(),
                first_line: first.line,
            },
        ));
    }
    Ok(())
}

fn parse_threshold(text: &str) -> Option<usize> {
    if text.is_empty()
        || text.len() > 10
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for Policy {
    /// A canonical policy text that parses back to the same policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |u: &Option<String>| u.as_ref().map(|u| format!(" {u}")).unwrap_or_default();
        for log in &self.logs {
            writeln!(f, "log {}{}", log.verifier, url(&log.url))?;
        }
        for witness in &self.witnesses {
            writeln!(
                f,
                "witness {} {}{}",
                witness.name,
                witness.verifier,
                url(&witness.url)
            )?;
        }
        let member_name = |m: &Member| match *m {
            Member::Witness(i) => self.witnesses.get(i).map_or("?", |w| w.name.as_str()),
            Member::Group(i) => self.groups.get(i).map_or("?", |g| g.name.as_str()),
        };
        for group in &self.groups {
            write!(f, "group {} {}", group.name, group.threshold)?;
            for member in &group.members {
                write!(f, " {}", member_name(member))?;
            }
            writeln!(f)?;
        }
        match &self.quorum {
            Quorum::None => writeln!(f, "quorum {NONE}"),
            Quorum::Member(m) => writeln!(f, "quorum {}", member_name(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::CosignatureSigner;
    use crate::merkle::MerkleTree;
    use crate::note::Signer;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use PolicyParseErrorKind as K;

    fn witness_key(seed: u8) -> CosignatureSigner {
        CosignatureSigner::new(
            &format!("w{seed}.example"),
            SigningKey::from_bytes(&[seed; 32]),
        )
        .unwrap()
    }

    fn log_key() -> Signer {
        Signer::new("ztmesh.example/log", SigningKey::from_bytes(&[100; 32])).unwrap()
    }

    fn parse_err(text: &str) -> PolicyParseError {
        Policy::parse(text).unwrap_err()
    }

    fn two_of_three() -> String {
        format!(
            "# three witnesses, two needed\n\
             log {} https://log.example\n\
             \n\
             witness A {}\n\
             witness B {} https://b.example/\n\
             \twitness\tC   {}  \n\
             group G 2 A B C\n\
             quorum G\n",
            log_key().vkey(),
            witness_key(1).vkey(),
            witness_key(2).vkey(),
            witness_key(3).vkey(),
        )
    }

    #[test]
    fn two_of_three_met_and_not_met() {
        let policy = Policy::parse(&two_of_three()).unwrap();
        assert_eq!(policy.logs().len(), 1);
        assert_eq!(policy.logs()[0].url.as_deref(), Some("https://log.example"));
        assert_eq!(policy.witnesses().len(), 3);
        assert!(!policy.evaluate([]));
        assert!(!policy.evaluate(["A"]));
        assert!(policy.evaluate(["A", "C"]));
        assert!(policy.evaluate(["A", "B", "C"]));
        // Double cosignatures count once, unknown names not at all.
        assert!(!policy.evaluate(["A", "A"]));
        assert!(!policy.evaluate(["A", "X", "none", "G"]));
        // The canonical text parses to the same policy.
        assert_eq!(Policy::parse(&policy.to_string()).unwrap(), policy);
    }

    #[test]
    fn nested_groups_and_keywords() {
        let w: Vec<String> = (1..=6).map(|i| witness_key(i).vkey()).collect();
        let text = format!(
            "witness X1 {}\nwitness X2 {}\nwitness X3 {}\ngroup X-witnesses 2 X1 X2 X3\n\
             witness Y1 {}\nwitness Y2 {}\nwitness Y3 {}\ngroup Y-witnesses any Y1 Y2 Y3\n\
             group X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n",
            w[0], w[1], w[2], w[3], w[4], w[5]
        );
        let policy = Policy::parse(&text).unwrap();
        assert!(policy.logs().is_empty());
        assert!(policy.evaluate(["X1", "X3", "Y2"]));
        assert!(!policy.evaluate(["X1", "X3"]));
        assert!(!policy.evaluate(["X1", "Y1", "Y2", "Y3"]));
        assert!(!policy.evaluate(["X1", "X1", "Y1"]));
        assert_eq!(Policy::parse(&policy.to_string()).unwrap(), policy);

        // A quorum naming a single witness, and `quorum none`.
        let single = Policy::parse(&format!("witness A {}\nquorum A", w[0])).unwrap();
        assert!(single.evaluate(["A"]));
        assert!(!single.evaluate(["B"]));
        let none = Policy::parse("quorum none\n").unwrap();
        assert!(none.evaluate([]));
    }

    #[test]
    fn every_parse_error() {
        let a = witness_key(1).vkey();
        let b = witness_key(2).vkey();
        let log = log_key().vkey();
        let cases: Vec<(String, usize, K)> = vec![
            ("".into(), 0, K::MissingQuorum),
            ("# nothing\n".into(), 0, K::MissingQuorum),
            (format!("witness A {a}\n"), 0, K::MissingQuorum),
            (
                "quorum none\nquorum none\n".into(),
                2,
                K::DuplicateQuorum { first_line: 1 },
            ),
            ("quorum\n".into(), 1, K::WrongItemCount("quorum")),
            ("quorum a b\n".into(), 1, K::WrongItemCount("quorum")),
            ("quorum X\n".into(), 1, K::UnknownName("X".into())),
            (
                "Quorum none\n".into(),
                1,
                K::UnknownKeyword("Quorum".into()),
            ),
            (
                "witnesses A x\n".into(),
                1,
                K::UnknownKeyword("witnesses".into()),
            ),
            ("quorum none\r\n".into(), 1, K::ForbiddenCharacter),
            ("quorum none\n\u{7f}\n".into(), 2, K::ForbiddenCharacter),
            ("log\nquorum none\n".into(), 1, K::WrongItemCount("log")),
            (
                format!("log {log} u extra\nquorum none\n"),
                1,
                K::WrongItemCount("log"),
            ),
            (
                "log not-a-key\nquorum none\n".into(),
                1,
                K::BadKey(KeyError::Malformed),
            ),
            (
                format!("log {a}\nquorum none\n"),
                1,
                K::BadKey(KeyError::WrongType {
                    found: 4,
                    expected: 1,
                }),
            ),
            (
                format!("witness A {log}\nquorum none\n"),
                1,
                K::BadKey(KeyError::WrongType {
                    found: 1,
                    expected: 4,
                }),
            ),
            (
                format!(
                    "log {log}\nlog {}\nquorum none\n",
                    log.replacen("ztmesh.example/log", "other", 1)
                ),
                2,
                // Same public key under another name: the key ID no longer matches first.
                K::BadKey(KeyError::KeyIdMismatch {
                    found: log_key().key_id(),
                    expected: Signer::new("other", SigningKey::from_bytes(&[100; 32]))
                        .unwrap()
                        .key_id(),
                }),
            ),
            (
                format!(
                    "log {log}\nlog {}\nquorum none\n",
                    Signer::new("other", SigningKey::from_bytes(&[100; 32]))
                        .unwrap()
                        .vkey()
                ),
                2,
                K::DuplicateKey { first_line: 1 },
            ),
            (
                format!(
                    "witness A {a}\nwitness B {}\nquorum A\n",
                    CosignatureSigner::new("x", SigningKey::from_bytes(&[1; 32]))
                        .unwrap()
                        .vkey()
                ),
                2,
                K::DuplicateKey { first_line: 1 },
            ),
            (
                "witness A\nquorum none\n".into(),
                1,
                K::WrongItemCount("witness"),
            ),
            (
                format!("witness A {a} u x\nquorum none\n"),
                1,
                K::WrongItemCount("witness"),
            ),
            (
                format!("witness A {a}\nwitness A {b}\nquorum A\n"),
                2,
                K::DuplicateName {
                    name: "A".into(),
                    first_line: 1,
                },
            ),
            (
                format!("witness A {a}\ngroup A any A\nquorum A\n"),
                2,
                K::DuplicateName {
                    name: "A".into(),
                    first_line: 1,
                },
            ),
            (
                format!("witness none {a}\nquorum none\n"),
                1,
                K::ReservedName,
            ),
            (
                format!("witness A {a}\ngroup none any A\nquorum none\n"),
                2,
                K::ReservedName,
            ),
            (
                format!("witness A {a}\ngroup G any A none\nquorum G\n"),
                2,
                K::ReservedName,
            ),
            (
                format!("witness A {a}\ngroup G\nquorum none\n"),
                2,
                K::WrongItemCount("group"),
            ),
            (
                format!("witness A {a}\ngroup G 1\nquorum none\n"),
                2,
                K::WrongItemCount("group"),
            ),
            (
                format!("witness A {a}\ngroup G any A Z\nquorum G\n"),
                2,
                K::UnknownName("Z".into()),
            ),
            (
                format!("witness A {a}\ngroup G any A A\nquorum G\n"),
                2,
                K::DuplicateMember("A".into()),
            ),
            (
                format!("witness A {a}\ngroup G 0 A\nquorum G\n"),
                2,
                K::ZeroThreshold,
            ),
            (
                format!("witness A {a}\nwitness B {b}\ngroup G 3 A B\nquorum G\n"),
                3,
                K::ThresholdAboveMembers {
                    threshold: 3,
                    members: 2,
                },
            ),
            (
                format!("witness A {a}\ngroup G 01 A\nquorum G\n"),
                2,
                K::BadThreshold("01".into()),
            ),
            (
                format!("witness A {a}\ngroup G -1 A\nquorum G\n"),
                2,
                K::BadThreshold("-1".into()),
            ),
            (
                format!("witness A {a}\ngroup G most A\nquorum G\n"),
                2,
                K::BadThreshold("most".into()),
            ),
            (
                format!("witness A {a}\ngroup G 99999999999 A\nquorum G\n"),
                2,
                K::BadThreshold("99999999999".into()),
            ),
            // Cycles: a group naming itself, and two groups naming each other.
            (
                format!("witness A {a}\ngroup G any A G\nquorum G\n"),
                2,
                K::ForwardReference {
                    name: "G".into(),
                    defined_on: 2,
                },
            ),
            (
                format!("witness A {a}\ngroup G any A H\ngroup H any A G\nquorum G\n"),
                2,
                K::ForwardReference {
                    name: "H".into(),
                    defined_on: 3,
                },
            ),
            (
                format!("quorum A\nwitness A {a}\n"),
                1,
                K::ForwardReference {
                    name: "A".into(),
                    defined_on: 2,
                },
            ),
        ];
        for (text, line, kind) in cases {
            assert_eq!(
                parse_err(&text),
                PolicyParseError { line, kind },
                "{text:?}"
            );
        }
        assert_eq!(
            Policy::parse_bytes(b"quorum none\n\xff\n")
                .unwrap_err()
                .kind,
            K::NotUtf8
        );
        let huge = "#".repeat(MAX_POLICY_LEN + 1);
        assert_eq!(Policy::parse(&huge).unwrap_err().kind, K::TooLarge);
        assert_eq!(
            Policy::parse_bytes(huge.as_bytes()).unwrap_err().kind,
            K::TooLarge
        );
        assert_eq!(
            parse_err("quorum none\nlog x").to_string(),
            "policy line 2: bad key: malformed key text"
        );
    }

    #[test]
    fn entry_limits_are_enforced() {
        let mut text = String::new();
        for i in 0..=MAX_ENTRIES {
            // Distinct keys: two bytes of the seed count the witnesses.
            let mut seed = [0u8; 32];
            seed[0] = (i % 256) as u8;
            seed[1] = (i / 256) as u8;
            let key = CosignatureSigner::new("w", SigningKey::from_bytes(&seed)).unwrap();
            text.push_str(&format!("witness W{i} {}\n", key.vkey()));
        }
        text.push_str("quorum none\n");
        assert_eq!(
            parse_err(&text),
            PolicyParseError {
                line: MAX_ENTRIES + 1,
                kind: K::TooManyEntries("witnesses")
            }
        );
    }

    fn cosigned_note(witnesses: &[&CosignatureSigner]) -> Note {
        let mut tree = MerkleTree::new();
        tree.append(b"enroll node-1");
        let checkpoint = Checkpoint::new("ztmesh.example/log", 1, tree.root()).unwrap();
        let mut note = Note::sign(&checkpoint.to_string(), &[&log_key()]).unwrap();
        for (i, w) in witnesses.iter().enumerate() {
            note.add_signature(w.cosign(note.text(), 1_700_000_000 + i as u64).unwrap())
                .unwrap();
        }
        note
    }

    #[test]
    fn verify_checkpoint_end_to_end() {
        let policy = Policy::parse(&two_of_three()).unwrap();
        let (a, b, c) = (witness_key(1), witness_key(2), witness_key(3));

        let ok = policy.verify_checkpoint(&cosigned_note(&[&a, &c])).unwrap();
        assert_eq!(ok.checkpoint.size(), 1);
        assert_eq!(
            ok.cosigners,
            BTreeMap::from([
                ("A".to_owned(), 1_700_000_000),
                ("C".to_owned(), 1_700_000_001)
            ])
        );

        // One witness cosigning twice is still one witness.
        let err = policy
            .verify_checkpoint(&cosigned_note(&[&b, &b]))
            .unwrap_err();
        assert_eq!(
            err,
            PolicyError::QuorumNotMet {
                cosigners: BTreeSet::from(["B".to_owned()])
            }
        );

        // Cosignatures from a key outside the policy do not count.
        let outsider = witness_key(9);
        assert!(matches!(
            policy.verify_checkpoint(&cosigned_note(&[&a, &outsider])),
            Err(PolicyError::QuorumNotMet { .. })
        ));

        // A forged line under a policy witness's key refuses the note.
        let mut forged = cosigned_note(&[&a, &c]);
        let good = b.cosign(forged.text(), 5).unwrap();
        let mut bytes = good.signature().to_vec();
        bytes[10] ^= 1;
        forged
            .add_signature(
                crate::note::NoteSignature::new(good.name(), good.key_id(), bytes).unwrap(),
            )
            .unwrap();
        assert!(matches!(
            policy.verify_checkpoint(&forged),
            Err(PolicyError::BadCosignature { ref witness, .. }) if witness == "B"
        ));

        // A checkpoint from an origin the policy has no log for.
        let stranger = Signer::new("elsewhere", SigningKey::from_bytes(&[5; 32])).unwrap();
        let checkpoint = Checkpoint::new("elsewhere", 0, crate::merkle::empty_root()).unwrap();
        let note = Note::sign(&checkpoint.to_string(), &[&stranger]).unwrap();
        assert_eq!(
            policy.verify_checkpoint(&note),
            Err(PolicyError::UnknownLog("elsewhere".into()))
        );

        // The right origin but not the policy's log key.
        let impostor = Signer::new("ztmesh.example/log", SigningKey::from_bytes(&[6; 32])).unwrap();
        let note = Note::sign(cosigned_note(&[]).text(), &[&impostor]).unwrap();
        assert_eq!(
            policy.verify_checkpoint(&note),
            Err(PolicyError::LogSignature(NoteError::NoTrustedSignature))
        );

        // Not a checkpoint at all.
        let note = Note::sign("hello\n", &[&log_key()]).unwrap();
        assert!(matches!(
            policy.verify_checkpoint(&note),
            Err(PolicyError::NotACheckpoint(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Policy::parse_bytes(&bytes);
        }

        #[test]
        fn policy_shaped_garbage_never_panics(
            lines in proptest::collection::vec(
                "(log|witness|group|quorum|#)?[ \t]{0,2}[A-Za-z0-9 \t]{0,12}( (any|all|[0-9]))?( [A-C]){0,4}",
                0..8,
            ),
        ) {
            let text = lines.join("\n");
            if let Ok(policy) = Policy::parse(&text) {
                let _ = policy.evaluate(["A", "B", "C"]);
                prop_assert_eq!(Policy::parse(&policy.to_string()).unwrap(), policy);
            }
        }

        #[test]
        fn random_groups_evaluate_like_a_direct_count(
            threshold in 1usize..=4, present in proptest::collection::vec(any::<bool>(), 4),
            repeats in 1usize..3,
        ) {
            let keys: Vec<String> = (1..=4).map(|i| witness_key(i).vkey()).collect();
            let text = format!(
                "witness A {}\nwitness B {}\nwitness C {}\nwitness D {}\ngroup G {threshold} A B C D\nquorum G\n",
                keys[0], keys[1], keys[2], keys[3]
            );
            let policy = Policy::parse(&text).unwrap();
            let names: Vec<&str> = ["A", "B", "C", "D"]
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(n, _)| *n)
                .collect();
            let repeated: Vec<&str> = names.iter().copied().cycle().take(names.len() * repeats).collect();
            let count = present.iter().filter(|p| **p).count();
            prop_assert_eq!(policy.evaluate(repeated), count >= threshold);
        }
    }
}
