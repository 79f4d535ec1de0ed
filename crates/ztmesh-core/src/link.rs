//! What travels on a mesh link: length-prefixed frames (u32 big-endian length, hard cap) that
//! each carry one CBOR-encoded [`LinkMessage`].
//!
//! [`FrameDecoder`] is a sans-IO reassembler: feed it whatever bytes the socket produced and pull
//! complete frames out. It checks the announced length against [`MAX_FRAME_LEN`] before
//! buffering the body, so a peer cannot make it allocate more than the cap. Malformed input is a
//! typed [`FrameError`], never a panic.

use serde::{Deserialize, Serialize};

use crate::{NodeId, Timestamp};

/// Largest frame body accepted or produced on a link, in bytes.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Most peers carried in one [`LinkMessage::PeerList`]; a longer list is malformed.
pub const MAX_PEERS_PER_LIST: usize = 256;

/// Longest address text in a [`PeerAdvert`].
pub const MAX_ADDR_LEN: usize = 128;

/// Length of the nonce in a [`LinkMessage::TeeChallenge`].
pub const TEE_NONCE_LEN: usize = 32;

/// Largest attestation evidence carried in a [`LinkMessage::TeeResponse`].
pub const MAX_TEE_EVIDENCE_LEN: usize = 128 * 1024;

/// Longest evidence type name in a [`LinkMessage::TeeResponse`].
pub const MAX_TEE_TYPE_LEN: usize = 16;

/// Why bytes from a link were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced a frame over the cap.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The frame body is not a well-formed message.
    #[error("malformed link message: {0}")]
    Malformed(String),
    /// An outgoing message could not be encoded (a local fault).
    #[error("cannot encode link message: {0}")]
    Encode(String),
}

/// A peer advertised in a peer list: who, and where it accepts mesh links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// The peer's identifier.
    pub node_id: NodeId,
    /// `host:port` of its mesh listener.
    pub addr: String,
}

/// One message on a mesh link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LinkMessage {
    /// First message each side sends: where it listens for links.
    Hello {
        /// Protocol version spoken by the sender.
        version: u32,
        /// `host:port` of the sender's mesh listener, if it has one.
        listen_addr: Option<String>,
    },
    /// Liveness probe, sent on every link at a fixed interval; `seq` increases by one per link.
    Heartbeat {
        /// Per-link sequence number, starting at 1.
        seq: u64,
        /// Sender's clock when sent.
        sent_at: Timestamp,
    },
    /// Asks the other side for its known peers.
    PeerListRequest,
    /// Known peers (only peers reached over authenticated links are ever listed).
    PeerList {
        /// At most [`MAX_PEERS_PER_LIST`] entries.
        peers: Vec<PeerAdvert>,
    },
    /// The sender rotated its certificate: here is the new one (DER). The receiver verifies it
    /// exactly as at handshake and requires the same NodeId, so a link outlives a rotation.
    CertificateUpdate {
        /// DER of the sender's new certificate.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
    /// A gossip frame (signed message, digest or want list), encoded and parsed by the gossip
    /// core; the link only carries the bytes.
    Gossip {
        /// The gossip core's own encoding.
        #[serde(with = "serde_bytes")]
        frame: Vec<u8>,
    },
    /// A delay-tolerant networking frame (a BPv7 bundle or a hop acknowledgement), encoded and
    /// parsed by the DTN core.
    Bundle {
        /// The DTN core's own encoding.
        #[serde(with = "serde_bytes")]
        frame: Vec<u8>,
    },
    /// Asks the other side to attest: its evidence must carry report data =
    /// hash(`nonce` ‖ the responder's TLS certificate public key), binding it to this link.
    TeeChallenge {
        /// Fresh random bytes, [`TEE_NONCE_LEN`] long.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// The answer to a [`LinkMessage::TeeChallenge`].
    TeeResponse {
        /// The challenge's nonce, echoed.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// Evidence type (`tpm2`, `tdx`, `sgx`, `sev-snp`, `dev`), or `none` when the responder
        /// has no attester (then `evidence` is empty).
        evidence_type: String,
        /// The evidence, in the format of its type.
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
        /// SHA-256 of the responder's own executable.
        #[serde(with = "serde_bytes")]
        binary_sha256: Vec<u8>,
    },
}

impl LinkMessage {
    /// Checks bounds that the type system does not carry.
    fn validate(&self) -> Result<(), FrameError> {
        match self {
            LinkMessage::Hello {
                listen_addr: Some(addr),
                ..
            } if addr.len() > MAX_ADDR_LEN => {
                Err(FrameError::Malformed("listen address too long".into()))
            }
            LinkMessage::TeeChallenge { nonce } if nonce.len() != TEE_NONCE_LEN => Err(
                FrameError::Malformed(format!("challenge nonce must be {TEE_NONCE_LEN} bytes")),
            ),
            LinkMessage::TeeResponse {
                nonce,
                evidence_type,
                evidence,
                binary_sha256,
            } => {
                if nonce.len() != TEE_NONCE_LEN {
                    return Err(FrameError::Malformed(format!(
                        "response nonce must be {TEE_NONCE_LEN} bytes"
                    )));
                }
                if evidence_type.is_empty()
                    || evidence_type.len() > MAX_TEE_TYPE_LEN
                    || !evidence_type
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(FrameError::Malformed("bad evidence type".into()));
                }
                if evidence.len() > MAX_TEE_EVIDENCE_LEN {
                    return Err(FrameError::Malformed(format!(
                        "evidence of {} bytes exceeds {MAX_TEE_EVIDENCE_LEN}",
                        evidence.len()
                    )));
                }
                if binary_sha256.len() != 32 {
                    return Err(FrameError::Malformed("binary hash must be 32 bytes".into()));
                }
                Ok(())
            }
            LinkMessage::PeerList { peers } => {
                if peers.len() > MAX_PEERS_PER_LIST {
                    return Err(FrameError::Malformed(format!(
                        "peer list of {} entries exceeds {MAX_PEERS_PER_LIST}",
                        peers.len()
                    )));
                }
                if peers.iter().any(|p| p.addr.len() > MAX_ADDR_LEN) {
                    return Err(FrameError::Malformed("peer address too long".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Encodes the message as one complete frame (length prefix included).
    pub fn to_frame(&self) -> Result<Vec<u8>, FrameError> {
        self.validate()?;
        let mut body = Vec::new();
        ciborium::into_writer(self, &mut body).map_err(|e| FrameError::Encode(e.to_string()))?;
        if body.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let len =
            u32::try_from(body.len()).map_err(|_| FrameError::Encode("frame length".into()))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }

    /// Decodes one frame body (without the length prefix).
    pub fn from_body(body: &[u8]) -> Result<Self, FrameError> {
        if body.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let message: LinkMessage =
            ciborium::from_reader(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        message.validate()?;
        Ok(message)
    }
}

/// Reassembles frames from a byte stream. Sans-IO: [`FrameDecoder::push`] bytes in,
/// [`FrameDecoder::next_message`] messages out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the link. Call [`FrameDecoder::next_message`] until it returns
    /// `Ok(None)` before pushing more, so the buffer never holds more than one frame plus one read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete frame body, if one is buffered. An error poisons the link: the caller
    /// must close it, since the stream position is no longer trustworthy.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(prefix) = self.buffer.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buffer[4..4 + len].to_vec();
        self.buffer.drain(..4 + len);
        Ok(Some(body))
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<LinkMessage>, FrameError> {
        match self.next_frame()? {
            Some(body) => LinkMessage::from_body(&body).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<LinkMessage> {
        vec![
            LinkMessage::Hello {
                version: 1,
                listen_addr: Some("127.0.0.1:4000".into()),
            },
            LinkMessage::Heartbeat {
                seq: 7,
                sent_at: Timestamp::from_unix_millis(1234),
            },
            LinkMessage::PeerListRequest,
            LinkMessage::PeerList {
                peers: vec![PeerAdvert {
                    node_id: NodeId::from_spki_der(b"x"),
                    addr: "127.0.0.1:1".into(),
                }],
            },
            LinkMessage::CertificateUpdate {
                certificate: vec![0x30, 0x82, 1, 2],
            },
            LinkMessage::TeeChallenge {
                nonce: vec![7; TEE_NONCE_LEN],
            },
            LinkMessage::TeeResponse {
                nonce: vec![7; TEE_NONCE_LEN],
                evidence_type: "sev-snp".into(),
                evidence: vec![1, 2, 3],
                binary_sha256: vec![9; 32],
            },
        ]
    }

    fn tee_response(nonce: usize, kind: &str, evidence: usize, hash: usize) -> LinkMessage {
        LinkMessage::TeeResponse {
            nonce: vec![0; nonce],
            evidence_type: kind.into(),
            evidence: vec![0; evidence],
            binary_sha256: vec![0; hash],
        }
    }

    #[test]
    fn attestation_messages_out_of_bounds_are_malformed_both_ways() {
        let bad = [
            LinkMessage::TeeChallenge { nonce: vec![0; 31] },
            LinkMessage::TeeChallenge { nonce: vec![0; 33] },
            tee_response(31, "dev", 1, 32),
            tee_response(32, "", 1, 32),
            tee_response(32, "Dev", 1, 32),
            tee_response(32, "a-very-long-evidence-type", 1, 32),
            tee_response(32, "dev", MAX_TEE_EVIDENCE_LEN + 1, 32),
            tee_response(32, "dev", 1, 31),
        ];
        for message in bad {
            assert!(
                matches!(message.to_frame(), Err(FrameError::Malformed(_))),
                "{message:?}"
            );
            let mut body = Vec::new();
            ciborium::into_writer(&message, &mut body).unwrap();
            assert!(
                matches!(LinkMessage::from_body(&body), Err(FrameError::Malformed(_))),
                "{message:?}"
            );
        }
        assert!(tee_response(32, "none", 0, 32).to_frame().is_ok());
        assert!(tee_response(32, "dev", MAX_TEE_EVIDENCE_LEN, 32)
            .to_frame()
            .is_ok());
    }

    #[test]
    fn messages_round_trip_through_split_frames() {
        let mut stream = Vec::new();
        for m in samples() {
            stream.extend(m.to_frame().unwrap());
        }
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        // One byte at a time: the worst split a socket can produce.
        for b in &stream {
            decoder.push(std::slice::from_ref(b));
            while let Some(m) = decoder.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, samples());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_buffering_the_body() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn peer_list_over_the_bound_is_malformed_both_ways() {
        let peers = vec![
            PeerAdvert {
                node_id: NodeId::from_spki_der(b"x"),
                addr: "a:1".into(),
            };
            MAX_PEERS_PER_LIST + 1
        ];
        let message = LinkMessage::PeerList { peers };
        assert!(matches!(message.to_frame(), Err(FrameError::Malformed(_))));
        let mut body = Vec::new();
        ciborium::into_writer(&message, &mut body).unwrap();
        assert!(matches!(
            LinkMessage::from_body(&body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_message_type_is_malformed() {
        let mut body = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![("type".into(), "launch_missiles".into())]),
            &mut body,
        )
        .unwrap();
        assert!(matches!(
            LinkMessage::from_body(&body),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_yields_typed_errors_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes);
            // Drain until the decoder needs more bytes or reports an error.
            for _ in 0..bytes.len() + 1 {
                match decoder.next_message() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(decoder.buffered() <= bytes.len());
        }

        #[test]
        fn garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = LinkMessage::from_body(&body);
        }
    }
}
