//! The decision half of a C2SP tlog-witness: should this `add-checkpoint` request be cosigned?
//!
//! The witness server owns storage and the clock; this module owns the rules. One request goes
//! through three steps, in this order:
//!
//! 1. [`AddCheckpointRequest::parse`] turns the untrusted body (`old <size>` line, up to 63 proof
//!    lines, a blank line, the signed checkpoint) into typed values, or a 400.
//! 2. The server looks up the trusted log keys for [`AddCheckpointRequest::origin`] and the head
//!    it last cosigned for that origin, then calls [`check_add_checkpoint`] (or
//!    [`AddCheckpointRequest::check`]). It answers 404 unknown log, 403 bad or missing log
//!    signature, 400 old size above the checkpoint size, 409 old size not the known size, 422 bad
//!    proof, or returns an [`AcceptedCheckpoint`].
//! 3. The server must then store [`AcceptedCheckpoint::new_head`] with a compare-and-swap
//!    against [`AcceptedCheckpoint::previous_size`] (insert-if-absent when it had no head) and
//!    report the outcome to [`AcceptedCheckpoint::after_swap`]. If another request moved the head
//!    in between, that yields [`WitnessError::ConflictKnownSize`] with the size now stored, and
//!    nothing is cosigned; only a [`StoredCheckpoint`] can [`StoredCheckpoint::cosign`]. Checking
//!    and storing in one atomic step is what keeps two racing requests from rolling the head
//!    back.
//!
//! [`WitnessError::http_status`] is the one place where decisions become HTTP statuses.

use std::fmt;

use crate::checkpoint::{parse_decimal_u64, Checkpoint, CheckpointError, TreeHead};
use crate::cosignature::CosignatureSigner;
use crate::merkle::{empty_root, verify_consistency, Hash, ProofError};
use crate::note::{Note, NoteError, NoteSignature, SignError, Verifier, MAX_NOTE_LEN};

/// Most consistency proof lines a request may carry (the spec's client limit).
pub const MAX_PROOF_LINES: usize = 63;

/// Largest request body accepted: a maximal note plus the old-size and proof lines.
pub const MAX_REQUEST_LEN: usize = MAX_NOTE_LEN + 4096;

/// Content type of a 409 response body (the known size and a newline).
pub const TLOG_SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// What is wrong with the shape of an `add-checkpoint` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedRequest {
    /// The body is over [`MAX_REQUEST_LEN`] bytes.
    #[error("request body exceeds {MAX_REQUEST_LEN} bytes")]
    TooLarge,
    /// The body is not UTF-8.
    #[error("request body is not UTF-8")]
    NotUtf8,
    /// No blank line between the proof and the checkpoint.
    #[error("no blank line before the checkpoint")]
    MissingBlankLine,
    /// The first line is not `old <decimal size>`.
    #[error("first line is not `old <size>`")]
    BadOldSizeLine,
    /// A proof line is not the base64 of a 32-byte hash.
    #[error("proof line {line} is not a base64 hash")]
    BadProofLine {
        /// 1-based line number in the body.
        line: usize,
    },
    /// More than [`MAX_PROOF_LINES`] proof lines.
    #[error("more than {MAX_PROOF_LINES} proof lines")]
    TooManyProofLines,
    /// The checkpoint is not a well-formed signed note.
    #[error("checkpoint note: {0}")]
    Note(NoteError),
    /// The note text is not a checkpoint.
    #[error("checkpoint body: {0}")]
    Checkpoint(CheckpointError),
}

/// Why an `add-checkpoint` request is refused. Every variant is the requester's fault; the
/// witness decides, and [`WitnessError::http_status`] says what to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The body is not an `add-checkpoint` request (400).
    #[error("malformed request: {0}")]
    Malformed(#[from] MalformedRequest),
    /// The witness has no keys for this origin (404).
    #[error("unknown log {origin:?}")]
    UnknownLog {
        /// The checkpoint's origin line.
        origin: String,
    },
    /// No valid signature from a trusted log key, or a trusted key's line does not verify (403).
    #[error("checkpoint signature: {0}")]
    BadSignature(NoteError),
    /// The old size is above the checkpoint size: the request asks for a rollback (400).
    #[error("old size {old_size} is above the checkpoint size {checkpoint_size}")]
    Rollback {
        /// The request's old size.
        old_size: u64,
        /// The checkpoint's size.
        checkpoint_size: u64,
    },
    /// The old size is not the size the witness last cosigned (409); the response body is that
    /// size ([`WitnessError::conflict_body`]).
    #[error("old size does not match the known size {0}")]
    ConflictKnownSize(u64),
    /// A size-0 checkpoint whose root is not the empty-tree hash (422).
    #[error("a checkpoint of size 0 must carry the empty-tree root")]
    NonEmptyRootForEmptyTree,
    /// A consistency proof was sent from old size 0, where none is allowed (422).
    #[error("no consistency proof may be sent from old size 0")]
    ProofFromEmptyTree,
    /// The consistency proof does not verify (422).
    #[error("bad consistency proof: {0}")]
    BadProof(ProofError),
    /// Same size as the known head but another root: the log signed a fork (422). Keep the note:
    /// it is evidence of log misbehaviour.
    #[error("checkpoint of size {size} has another root than the cosigned one: a fork")]
    Fork {
        /// The size both heads share.
        size: u64,
    },
}

impl WitnessError {
    /// The HTTP status C2SP tlog-witness prescribes for this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            WitnessError::Malformed(_) | WitnessError::Rollback { .. } => 400,
            WitnessError::BadSignature(_) => 403,
            WitnessError::UnknownLog { .. } => 404,
            WitnessError::ConflictKnownSize(_) => 409,
            WitnessError::NonEmptyRootForEmptyTree
            | WitnessError::ProofFromEmptyTree
            | WitnessError::BadProof(_)
            | WitnessError::Fork { .. } => 422,
        }
    }

    /// For a 409: the response body (the known size in decimal and a newline), to be sent with
    /// content type [`TLOG_SIZE_CONTENT_TYPE`].
    pub fn conflict_body(&self) -> Option<String> {
        match self {
            WitnessError::ConflictKnownSize(size) => Some(format!("{size}\n")),
            _ => None,
        }
    }
}

/// A parsed `add-checkpoint` body. The checkpoint is not trusted yet.
#[derive(Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    old_size: u64,
    proof: Vec<Hash>,
    note: Note,
    /// Parsed from `note`'s text; trusted only after the note verifies.
    checkpoint: Checkpoint,
}

impl fmt::Debug for AddCheckpointRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddCheckpointRequest")
            .field("old_size", &self.old_size)
            .field("proof", &self.proof)
            .field("checkpoint", &self.checkpoint)
            .finish()
    }
}

impl AddCheckpointRequest {
    /// A request as a log sends it (the inverse of [`AddCheckpointRequest::parse`]).
    pub fn new(old_size: u64, proof: Vec<Hash>, note: Note) -> Result<Self, WitnessError> {
        if proof.len() > MAX_PROOF_LINES {
            return Err(MalformedRequest::TooManyProofLines.into());
        }
        let checkpoint = Checkpoint::parse(note.text()).map_err(MalformedRequest::Checkpoint)?;
        Ok(AddCheckpointRequest {
            old_size,
            proof,
            note,
            checkpoint,
        })
    }

    /// Parses an untrusted request body.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessError> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(MalformedRequest::TooLarge.into());
        }
        let body = std::str::from_utf8(body).map_err(|_| MalformedRequest::NotUtf8)?;
        // The head (old size and proof lines) holds no blank line, so the first one ends it.
        let (head, note_text) = body
            .split_once("\n\n")
            .ok_or(MalformedRequest::MissingBlankLine)?;
        let mut lines = head.split('\n');
        let old_size = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .and_then(parse_decimal_u64)
            .ok_or(MalformedRequest::BadOldSizeLine)?;
        let mut proof = Vec::new();
        for (i, line) in lines.enumerate() {
            if i >= MAX_PROOF_LINES {
                return Err(MalformedRequest::TooManyProofLines.into());
            }
            let hash = Hash::from_base64(line)
                .map_err(|_| MalformedRequest::BadProofLine { line: i + 2 })?;
            proof.push(hash);
        }
        let note = Note::parse(note_text).map_err(MalformedRequest::Note)?;
        let checkpoint = Checkpoint::parse(note.text()).map_err(MalformedRequest::Checkpoint)?;
        Ok(AddCheckpointRequest {
            old_size,
            proof,
            note,
            checkpoint,
        })
    }

    /// The body text, as sent on the wire.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&hash.to_base64());
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note.to_string());
        body
    }

    /// The checkpoint's origin line (unverified: use it only to look up keys and state).
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }

    /// The size the requester believes the witness last cosigned.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// The consistency proof from the old size to the checkpoint size.
    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }

    /// The submitted note.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// Decides on this request; see [`check_add_checkpoint`].
    pub fn check(
        &self,
        known: Option<TreeHead>,
        log_verifiers: &[Verifier],
    ) -> Result<AcceptedCheckpoint, WitnessError> {
        decide(
            known,
            self.old_size,
            &self.proof,
            &self.note,
            &self.checkpoint,
            log_verifiers,
        )
    }
}

/// Decides whether to cosign a checkpoint, following C2SP tlog-witness `add-checkpoint`.
///
/// * `known`: the head last cosigned for this origin, `None` if never (treated as size 0).
/// * `old_size`, `proof`: from the request.
/// * `note_text`: the signed checkpoint note, with its signature lines.
/// * `log_verifiers`: the keys trusted for the note's origin; empty means the log is unknown.
///
/// Checks run in the spec's order: 400 malformed, 404 unknown log, 403 signature, 400 rollback,
/// 409 old size, 422 empty-tree root, proof and same-size root.
pub fn check_add_checkpoint(
    known: Option<TreeHead>,
    old_size: u64,
    proof: &[Hash],
    note_text: &str,
    log_verifiers: &[Verifier],
) -> Result<AcceptedCheckpoint, WitnessError> {
    if proof.len() > MAX_PROOF_LINES {
        return Err(MalformedRequest::TooManyProofLines.into());
    }
    let note = Note::parse(note_text).map_err(MalformedRequest::Note)?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(MalformedRequest::Checkpoint)?;
    decide(known, old_size, proof, &note, &checkpoint, log_verifiers)
}

fn decide(
    known: Option<TreeHead>,
    old_size: u64,
    proof: &[Hash],
    note: &Note,
    checkpoint: &Checkpoint,
    log_verifiers: &[Verifier],
) -> Result<AcceptedCheckpoint, WitnessError> {
    if log_verifiers.is_empty() {
        return Err(WitnessError::UnknownLog {
            origin: checkpoint.origin().to_owned(),
        });
    }
    note.verify(log_verifiers)
        .map_err(WitnessError::BadSignature)?;

    let new = checkpoint.tree_head();
    if old_size > new.size {
        return Err(WitnessError::Rollback {
            old_size,
            checkpoint_size: new.size,
        });
    }
    let known = known.unwrap_or_else(TreeHead::empty);
    if old_size != known.size {
        return Err(WitnessError::ConflictKnownSize(known.size));
    }
    if new.size == 0 && new.root != empty_root() {
        return Err(WitnessError::NonEmptyRootForEmptyTree);
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree: nothing to prove, and nothing may be sent.
        if !proof.is_empty() {
            return Err(WitnessError::ProofFromEmptyTree);
        }
    } else if old_size == new.size {
        if new.root != known.root {
            return Err(WitnessError::Fork { size: new.size });
        }
        if !proof.is_empty() {
            return Err(WitnessError::BadProof(ProofError::WrongLength));
        }
    } else {
        verify_consistency(old_size, new.size, proof, &known.root, &new.root)
            .map_err(WitnessError::BadProof)?;
    }
    Ok(AcceptedCheckpoint {
        previous_size: old_size,
        checkpoint: checkpoint.clone(),
        note: note.clone(),
    })
}

/// A checkpoint that passed every check. It becomes cosignable only through
/// [`AcceptedCheckpoint::after_swap`], once its head is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedCheckpoint {
    previous_size: u64,
    checkpoint: Checkpoint,
    note: Note,
}

impl AcceptedCheckpoint {
    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }

    /// The size the stored head must still have for the compare-and-swap to succeed (0 and
    /// "no head yet" both mean the witness never cosigned above size 0).
    pub fn previous_size(&self) -> u64 {
        self.previous_size
    }

    /// The head to store.
    pub fn new_head(&self) -> TreeHead {
        self.checkpoint.tree_head()
    }

    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The submitted note, its log signature verified (kept for serving the latest checkpoint
    /// and as evidence).
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// Takes in what the store answered to the compare-and-swap of [`Self::new_head`] against
    /// [`Self::previous_size`]. Only a swap that happened yields a checkpoint that can be
    /// cosigned; a lost race is the 409 the requester has to see.
    pub fn after_swap(self, outcome: SwapOutcome) -> Result<StoredCheckpoint, WitnessError> {
        match outcome {
            SwapOutcome::Swapped => Ok(StoredCheckpoint { accepted: self }),
            SwapOutcome::Conflict { stored_size } => {
                Err(WitnessError::ConflictKnownSize(stored_size))
            }
        }
    }
}

/// What the witness's store answered to the compare-and-swap of an accepted head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The stored size was still the previous size; the new head is now durably stored.
    Swapped,
    /// Another request moved the head first.
    Conflict {
        /// The size stored now.
        stored_size: u64,
    },
}

/// A checkpoint whose head the witness has durably stored: the only state that can be cosigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    accepted: AcceptedCheckpoint,
}

impl StoredCheckpoint {
    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.accepted.checkpoint
    }

    /// The submitted note, its log signature verified.
    pub fn note(&self) -> &Note {
        &self.accepted.note
    }

    /// The 200 response body: one cosignature line per witness key, each ending in a newline.
    /// `time_secs` is the witness's clock in POSIX seconds and must not be 0.
    pub fn cosign(
        &self,
        signers: &[&CosignatureSigner],
        time_secs: u64,
    ) -> Result<String, SignError> {
        if signers.is_empty() {
            return Err(SignError::NoSigners);
        }
        let mut body = String::new();
        for signer in signers {
            let line = signer.cosign(self.accepted.note.text(), time_secs)?;
            body.push_str(&line.to_string());
            body.push('\n');
        }
        Ok(body)
    }
}

/// For a log: reads a 200 `add-checkpoint` response (signature lines, each ending in a newline).
/// The lines still have to be verified against the witness keys the log trusts.
pub fn parse_cosignature_response(body: &str) -> Result<Vec<NoteSignature>, NoteError> {
    if body.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge { len: body.len() });
    }
    let lines = body
        .strip_suffix('\n')
        .ok_or(NoteError::MissingFinalNewline)?;
    lines
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            if i >= crate::note::MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            NoteSignature::parse_line(line)
                .map_err(|_| NoteError::MalformedSignatureLine { line: i + 1 })
        })
        .collect()
}

/// For a log: reads a 409 body (`<size>\n`) into the size the witness knows.
pub fn parse_conflict_body(body: &str) -> Option<u64> {
    body.strip_suffix('\n').and_then(parse_decimal_u64)
}

/// The `<origin hash>` path segment of the monitoring endpoint
/// (`GET <monitoring prefix>/<origin hash>/checkpoint`): lowercase hex of SHA-256(origin).
pub fn origin_hash(origin: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(origin.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encodes a hash list the way proof lines are written (one base64 hash per line).
pub fn proof_lines(proof: &[Hash]) -> String {
    proof.iter().map(|hash| format!("{hash}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MerkleTree;
    use crate::note::Signer;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    const ORIGIN: &str = "ztmesh.example/membership";

    struct Log {
        signer: Signer,
        tree: MerkleTree,
    }

    impl Log {
        fn new() -> Self {
            Log {
                signer: Signer::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).unwrap(),
                tree: MerkleTree::new(),
            }
        }

        fn grow(&mut self, n: u64) {
            for _ in 0..n {
                let i = self.tree.size();
                self.tree.append(format!("event {i}").as_bytes());
            }
        }

        fn note_at(&self, size: u64) -> Note {
            let checkpoint =
                Checkpoint::new(ORIGIN, size, self.tree.root_at(size).unwrap()).unwrap();
            Note::sign(&checkpoint.to_string(), &[&self.signer]).unwrap()
        }

        fn request(&self, old: u64, new: u64) -> AddCheckpointRequest {
            let proof = self.tree.consistency_proof(old, new).unwrap();
            AddCheckpointRequest::new(old, proof, self.note_at(new)).unwrap()
        }

        fn keys(&self) -> Vec<Verifier> {
            vec![self.signer.verifier()]
        }
    }

    fn head(log: &Log, size: u64) -> Option<TreeHead> {
        Some(TreeHead {
            size,
            root: log.tree.root_at(size).unwrap(),
        })
    }

    #[test]
    fn first_checkpoint_from_old_zero_is_accepted() {
        let mut log = Log::new();
        log.grow(5);
        let accepted = log.request(0, 5).check(None, &log.keys()).unwrap();
        assert_eq!(accepted.previous_size(), 0);
        assert_eq!(accepted.new_head(), head(&log, 5).unwrap());
        assert_eq!(accepted.origin(), ORIGIN);

        // Cosigned lines verify against the checkpoint.
        let witness =
            CosignatureSigner::new("w.example/1", SigningKey::from_bytes(&[9; 32])).unwrap();
        let stored = accepted.clone().after_swap(SwapOutcome::Swapped).unwrap();
        assert_eq!(stored.checkpoint(), accepted.checkpoint());
        let body = stored.cosign(&[&witness], 1_700_000_000).unwrap();
        let lines = parse_cosignature_response(&body).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            witness.verifier().verify(accepted.note().text(), &lines[0]),
            Ok(1_700_000_000)
        );
        assert_eq!(stored.cosign(&[], 1), Err(SignError::NoSigners));
        assert_eq!(
            stored.cosign(&[&witness], 0),
            Err(SignError::TimestampOutOfRange(0))
        );
    }

    #[test]
    fn empty_tree_checkpoint() {
        let log = Log::new();
        let accepted = log.request(0, 0).check(None, &log.keys()).unwrap();
        assert_eq!(accepted.new_head(), TreeHead::empty());
        // A size-0 checkpoint with any other root is refused.
        let bad = Checkpoint::new(ORIGIN, 0, crate::merkle::leaf_hash(b"x")).unwrap();
        let note = Note::sign(&bad.to_string(), &[&log.signer]).unwrap();
        let err = check_add_checkpoint(None, 0, &[], &note.to_string(), &log.keys()).unwrap_err();
        assert_eq!(err, WitnessError::NonEmptyRootForEmptyTree);
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn consistent_successor_is_accepted() {
        let mut log = Log::new();
        log.grow(7);
        log.grow(13);
        let accepted = log
            .request(7, 20)
            .check(head(&log, 7), &log.keys())
            .unwrap();
        assert_eq!(accepted.previous_size(), 7);
        assert_eq!(accepted.new_head().size, 20);
        // Re-submitting the same head is accepted too (nothing moves).
        let same = log
            .request(20, 20)
            .check(head(&log, 20), &log.keys())
            .unwrap();
        assert_eq!(same.new_head(), head(&log, 20).unwrap());
    }

    #[test]
    fn same_size_other_root_is_a_fork() {
        let mut log = Log::new();
        log.grow(4);
        let mut forked = Log::new();
        forked.tree.append(b"something else");
        forked.grow(3);
        let err = forked
            .request(4, 4)
            .check(head(&log, 4), &log.keys())
            .unwrap_err();
        assert_eq!(err, WitnessError::Fork { size: 4 });
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn forked_successor_fails_the_proof() {
        let mut log = Log::new();
        log.grow(4);
        let mut forked = Log::new();
        forked.tree.append(b"something else");
        forked.grow(9);
        let err = forked
            .request(4, 10)
            .check(head(&log, 4), &log.keys())
            .unwrap_err();
        assert!(matches!(err, WitnessError::BadProof(_)), "{err:?}");
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn stale_old_size_is_409_with_known_size() {
        let mut log = Log::new();
        log.grow(30);
        let err = log
            .request(10, 30)
            .check(head(&log, 20), &log.keys())
            .unwrap_err();
        assert_eq!(err, WitnessError::ConflictKnownSize(20));
        assert_eq!(err.http_status(), 409);
        assert_eq!(err.conflict_body().as_deref(), Some("20\n"));
        assert_eq!(parse_conflict_body("20\n"), Some(20));
        assert_eq!(parse_conflict_body("020\n"), None);
        // A client with no state asks with old 0 and learns the size.
        let err = log
            .request(0, 30)
            .check(head(&log, 20), &log.keys())
            .unwrap_err();
        assert_eq!(err, WitnessError::ConflictKnownSize(20));
        // Claiming a head the witness never saw is a conflict with 0.
        let err = log.request(10, 30).check(None, &log.keys()).unwrap_err();
        assert_eq!(err, WitnessError::ConflictKnownSize(0));
        assert_eq!(WitnessError::Fork { size: 1 }.conflict_body(), None);
    }

    #[test]
    fn bad_proof_is_422() {
        let mut log = Log::new();
        log.grow(10);
        let mut request = log.request(3, 10);
        request.proof[0] = crate::merkle::leaf_hash(b"tampered");
        let err = request.check(head(&log, 3), &log.keys()).unwrap_err();
        assert!(matches!(err, WitnessError::BadProof(_)));
        assert_eq!(err.http_status(), 422);
        // A proof sent from old size 0.
        let mut request = log.request(0, 10);
        request.proof = vec![crate::merkle::leaf_hash(b"x")];
        let err = request.check(None, &log.keys()).unwrap_err();
        assert_eq!(err, WitnessError::ProofFromEmptyTree);
        assert_eq!(err.http_status(), 422);
        // A non-empty proof between equal sizes.
        let mut request = log.request(10, 10);
        request.proof = vec![crate::merkle::leaf_hash(b"x")];
        let err = request.check(head(&log, 10), &log.keys()).unwrap_err();
        assert_eq!(err, WitnessError::BadProof(ProofError::WrongLength));
    }

    #[test]
    fn rollback_is_400() {
        let mut log = Log::new();
        log.grow(10);
        let request = AddCheckpointRequest::new(10, vec![], log.note_at(5)).unwrap();
        let err = request.check(head(&log, 10), &log.keys()).unwrap_err();
        assert_eq!(
            err,
            WitnessError::Rollback {
                old_size: 10,
                checkpoint_size: 5
            }
        );
        assert_eq!(err.http_status(), 400);
        // Honest old size, smaller checkpoint: also refused, as a conflict.
        let request = log.request(5, 5);
        let err = request.check(head(&log, 10), &log.keys()).unwrap_err();
        assert_eq!(err, WitnessError::ConflictKnownSize(10));
    }

    #[test]
    fn unknown_log_and_bad_signatures() {
        let mut log = Log::new();
        log.grow(3);
        let request = log.request(0, 3);
        let err = request.check(None, &[]).unwrap_err();
        assert_eq!(
            err,
            WitnessError::UnknownLog {
                origin: ORIGIN.into()
            }
        );
        assert_eq!(err.http_status(), 404);

        // Signed by a key the witness does not trust for this origin.
        let other = Signer::new(ORIGIN, SigningKey::from_bytes(&[2; 32])).unwrap();
        let err = request.check(None, &[other.verifier()]).unwrap_err();
        assert_eq!(
            err,
            WitnessError::BadSignature(NoteError::NoTrustedSignature)
        );
        assert_eq!(err.http_status(), 403);

        // A trusted key's line that does not verify.
        let body = request.to_body().replace(
            &request.note().signatures()[0].to_string(),
            &NoteSignature::new(ORIGIN, log.signer.key_id(), vec![0; 64])
                .unwrap()
                .to_string(),
        );
        let tampered = AddCheckpointRequest::parse(body.as_bytes()).unwrap();
        let err = tampered.check(None, &log.keys()).unwrap_err();
        assert!(matches!(
            err,
            WitnessError::BadSignature(NoteError::InvalidSignature { .. })
        ));
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn request_body_round_trips() {
        let mut log = Log::new();
        log.grow(21);
        let request = log.request(8, 21);
        let body = request.to_body();
        assert!(body.starts_with("old 8\n"));
        let parsed = AddCheckpointRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.to_body(), body);
        assert_eq!(parsed.origin(), ORIGIN);
        assert_eq!(parsed.old_size(), 8);
        assert_eq!(
            proof_lines(parsed.proof()),
            body[6..body.find("\n\n").unwrap() + 1]
        );
        // The free function agrees with the method.
        let known = head(&log, 8);
        assert_eq!(
            check_add_checkpoint(
                known,
                8,
                parsed.proof(),
                &parsed.note().to_string(),
                &log.keys()
            ),
            parsed.check(known, &log.keys())
        );
    }

    #[test]
    fn spec_example_body_parses() {
        let body = "old 20852014\n\
            PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
            jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
            5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
            /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
            \n\
            example.com/behind-the-sofa\n\
            20852163\n\
            CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
            \n\
            \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
            \u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";
        let request = AddCheckpointRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(request.old_size(), 20852014);
        assert_eq!(request.proof().len(), 4);
        assert_eq!(request.origin(), "example.com/behind-the-sofa");
        assert_eq!(request.note().signatures().len(), 2);
        assert_eq!(request.to_body(), body);
    }

    #[test]
    fn malformed_bodies_are_400() {
        let mut log = Log::new();
        log.grow(3);
        let note = log.note_at(3).to_string();
        let hash = log.tree.root().to_base64();
        let cases: Vec<(Vec<u8>, MalformedRequest)> = vec![
            (
                format!("old 0\n{note}").into_bytes(),
                MalformedRequest::BadProofLine { line: 2 },
            ),
            (b"old 0\n".to_vec(), MalformedRequest::MissingBlankLine),
            (
                format!("old 00\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("old -1\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("old  1\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("Old 1\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("old 1 \n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("old 18446744073709551616\n\n{note}").into_bytes(),
                MalformedRequest::BadOldSizeLine,
            ),
            (
                format!("old 1\n{hash}\nAAAA\n\n{note}").into_bytes(),
                MalformedRequest::BadProofLine { line: 3 },
            ),
            (
                format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(64)).into_bytes(),
                MalformedRequest::TooManyProofLines,
            ),
            (
                format!("old 1\n\n{}", log.tree.root()).into_bytes(),
                MalformedRequest::Note(NoteError::NoSignatureBlock),
            ),
            (b"old 1\n\n\xff".to_vec(), MalformedRequest::NotUtf8),
            (vec![b'a'; MAX_REQUEST_LEN + 1], MalformedRequest::TooLarge),
        ];
        for (body, want) in cases {
            let err = AddCheckpointRequest::parse(&body).unwrap_err();
            assert_eq!(
                err,
                WitnessError::Malformed(want),
                "{:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
            assert_eq!(err.http_status(), 400);
        }
        // 63 proof lines are allowed by the format (the proof itself may still be wrong).
        let body = format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(63));
        assert_eq!(
            AddCheckpointRequest::parse(body.as_bytes())
                .unwrap()
                .proof()
                .len(),
            63
        );
        // A verified note whose text is not a checkpoint.
        let not_checkpoint = Note::sign("hello\n", &[&log.signer]).unwrap();
        let err = AddCheckpointRequest::parse(format!("old 0\n\n{not_checkpoint}").as_bytes())
            .unwrap_err();
        assert!(matches!(
            err,
            WitnessError::Malformed(MalformedRequest::Checkpoint(_))
        ));
        assert!(matches!(
            check_add_checkpoint(None, 0, &[], &not_checkpoint.to_string(), &log.keys()),
            Err(WitnessError::Malformed(MalformedRequest::Checkpoint(_)))
        ));
    }

    #[test]
    fn origin_hash_is_lowercase_hex_sha256() {
        // SHA-256("abc"), the FIPS 180-2 example.
        assert_eq!(
            origin_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn response_parsing() {
        assert!(parse_cosignature_response("").is_err());
        assert!(parse_cosignature_response("\u{2014} a AAAAAAA=").is_err());
        assert_eq!(
            parse_cosignature_response("\u{2014} a AAAAAAA=\n")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_cosignature_response("\u{2014} a AAAAAAA=\nx\n"),
            Err(NoteError::MalformedSignatureLine { line: 2 })
        );
    }

    /// A model of the witness server on top of the decision: its stored head only moves through
    /// a compare-and-swap on the previous size. Whatever sequence of requests arrives, the head
    /// never shrinks and never changes root at a fixed size.
    #[test]
    fn compare_and_swap_race_cannot_roll_back() {
        let mut log = Log::new();
        log.grow(20);
        let mut stored: Option<TreeHead> = head(&log, 5);
        // Two requests checked against the same stored head (size 5) …
        let a = log.request(5, 10).check(stored, &log.keys()).unwrap();
        let b = log.request(5, 20).check(stored, &log.keys()).unwrap();
        // … B commits first, then A's swap must fail: A is answered 409 with 20, never cosigned.
        let cas = |stored: &mut Option<TreeHead>, accepted: AcceptedCheckpoint| {
            let current = stored.map_or(0, |h| h.size);
            let outcome = if current == accepted.previous_size() {
                *stored = Some(accepted.new_head());
                SwapOutcome::Swapped
            } else {
                SwapOutcome::Conflict {
                    stored_size: current,
                }
            };
            accepted.after_swap(outcome)
        };
        assert!(cas(&mut stored, b).is_ok());
        assert_eq!(
            cas(&mut stored, a),
            Err(WitnessError::ConflictKnownSize(20))
        );
        assert_eq!(stored, head(&log, 20));
    }

    proptest! {
        #[test]
        fn garbage_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = AddCheckpointRequest::parse(&bytes);
        }

        #[test]
        fn body_shaped_garbage_never_panics(
            old in "old [0-9]{0,21}",
            proof in proptest::collection::vec("[A-Za-z0-9+/=]{0,46}", 0..4),
            note in "[a-z0-9/\n]{0,30}(\n\n\u{2014} [a-z]{1,5} [A-Za-z0-9+/=]{0,20}\n)?",
        ) {
            let body = format!("{old}\n{}\n{note}", proof.iter().map(|l| format!("{l}\n")).collect::<String>());
            if let Ok(request) = AddCheckpointRequest::parse(body.as_bytes()) {
                let _ = request.check(None, &[]);
            }
        }

        /// Random sequences of honest and dishonest requests against a witness that stores with
        /// compare-and-swap: the stored head only ever grows along the honest log.
        #[test]
        fn stored_head_never_rolls_back_or_forks(
            steps in proptest::collection::vec((0u64..40, 0u64..40, any::<bool>()), 1..30),
        ) {
            let mut log = Log::new();
            log.grow(40);
            let mut forked = Log::new();
            forked.tree.append(b"fork");
            forked.grow(39);
            let mut stored: Option<TreeHead> = None;
            // Which tree the witness committed to with its first non-empty head.
            let mut branch: Option<bool> = None;
            for (old, new, honest) in steps {
                let source = if honest { &log } else { &forked };
                let proof = source.tree.consistency_proof(old.min(new), new).unwrap();
                let request = AddCheckpointRequest::new(old, proof, source.note_at(new)).unwrap();
                if let Ok(accepted) = request.check(stored, &log.keys()) {
                    let current = stored.map_or(0, |h| h.size);
                    prop_assert_eq!(current, accepted.previous_size());
                    let next = accepted.new_head();
                    prop_assert!(next.size >= current);
                    if next.size > 0 {
                        let committed = *branch.get_or_insert(honest);
                        let tree = if committed { &log.tree } else { &forked.tree };
                        prop_assert_eq!(next.root, tree.root_at(next.size).unwrap());
                    }
                    stored = Some(next);
                }
            }
        }
    }
}
