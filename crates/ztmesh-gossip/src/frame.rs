//! The gossip core's own frames, carried inside `LinkMessage::Gossip { frame }`.
//!
//! CBOR maps tagged by `type`:
//! - `{type: "message", cose: bstr, hops_left: uint}`: one signed message (push or pull answer);
//! - `{type: "digest", ids: [bstr32], reply: bool}`: ids the sender holds (anti-entropy);
//! - `{type: "want", ids: [bstr32]}`: ids the sender lacks and asks for.
//!
//! Decoding checks the length before parsing and the per-field bounds right after, and answers
//! anything else with a typed [`Refusal`].

use serde::{Deserialize, Serialize};

use crate::{cbor, GossipConfig, GossipError, MessageId, Refusal};

/// One gossip frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum GossipFrame {
    /// A signed message.
    Message {
        /// The COSE_Sign1 bytes, relayed unchanged.
        #[serde(with = "serde_bytes")]
        cose: Vec<u8>,
        /// Further relays allowed after the receiver (clamped to the signed hop limit).
        hops_left: u8,
    },
    /// Ids the sender holds; the receiver answers with a [`GossipFrame::Want`] for those it
    /// lacks and, unless `reply` is set, with its own digest.
    Digest {
        /// At most `digest_max_ids` ids of stored, unexpired messages.
        ids: Vec<MessageId>,
        /// Set on a digest sent in answer to a digest, so the exchange stops there.
        reply: bool,
    },
    /// Ids the sender lacks; the receiver sends those it holds.
    Want {
        /// At most `digest_max_ids` ids.
        ids: Vec<MessageId>,
    },
}

impl GossipFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>, GossipError> {
        cbor::encode(self).map_err(GossipError::Encode)
    }

    /// Decodes a frame received from a peer under `config`'s bounds.
    pub fn decode(bytes: &[u8], config: &GossipConfig) -> Result<Self, Refusal> {
        let max = config.max_frame_len();
        if bytes.len() > max {
            return Err(Refusal::FrameTooLarge {
                len: bytes.len(),
                max,
            });
        }
        let frame: GossipFrame = cbor::decode_exact(bytes).map_err(Refusal::MalformedFrame)?;
        match &frame {
            GossipFrame::Message { cose, .. } if cose.len() > config.max_message_len => {
                Err(Refusal::MessageTooLarge {
                    len: cose.len(),
                    max: config.max_message_len,
                })
            }
            GossipFrame::Digest { ids, .. } | GossipFrame::Want { ids }
                if ids.len() > config.digest_max_ids =>
            {
                Err(Refusal::TooManyIds {
                    count: ids.len(),
                    max: config.digest_max_ids,
                })
            }
            _ => Ok(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;
    use proptest::prelude::*;
    use ztmesh_core::link::{LinkMessage, MAX_FRAME_LEN};

    fn cbor(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn frames_round_trip() {
        let config = GossipConfig::default();
        for frame in [
            GossipFrame::Message {
                cose: vec![0xd2, 1, 2],
                hops_left: 4,
            },
            GossipFrame::Digest {
                ids: vec![MessageId([1; 32]), MessageId([2; 32])],
                reply: true,
            },
            GossipFrame::Want {
                ids: vec![MessageId([3; 32])],
            },
        ] {
            let bytes = frame.encode().unwrap();
            assert_eq!(GossipFrame::decode(&bytes, &config), Ok(frame));
        }
    }

    #[test]
    fn largest_frames_fit_in_a_link_frame() {
        let config = GossipConfig::default();
        let message = GossipFrame::Message {
            cose: vec![0; config.max_message_len],
            hops_left: 255,
        };
        let digest = GossipFrame::Digest {
            ids: vec![MessageId([0xff; 32]); config.digest_max_ids],
            reply: false,
        };
        for frame in [message, digest] {
            let bytes = frame.encode().unwrap();
            assert!(bytes.len() <= config.max_frame_len());
            assert!(GossipFrame::decode(&bytes, &config).is_ok());
            let link = LinkMessage::Gossip { frame: bytes }.to_frame().unwrap();
            assert!(link.len() - 4 <= MAX_FRAME_LEN);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_decoding() {
        let config = GossipConfig::default();
        let junk = vec![0xff; config.max_frame_len() + 1];
        assert!(matches!(
            GossipFrame::decode(&junk, &config),
            Err(Refusal::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn oversized_message_and_id_lists_are_refused() {
        let config = GossipConfig {
            digest_max_ids: 4,
            max_message_len: 2048,
            ..GossipConfig::default()
        };
        let message = GossipFrame::Message {
            cose: vec![0; 2049],
            hops_left: 0,
        };
        assert_eq!(
            GossipFrame::decode(&message.encode().unwrap(), &config),
            Err(Refusal::MessageTooLarge {
                len: 2049,
                max: 2048
            })
        );
        let ids = vec![MessageId([0; 32]); 5];
        for frame in [
            GossipFrame::Digest {
                ids: ids.clone(),
                reply: false,
            },
            GossipFrame::Want { ids },
        ] {
            assert_eq!(
                GossipFrame::decode(&frame.encode().unwrap(), &config),
                Err(Refusal::TooManyIds { count: 5, max: 4 })
            );
        }
    }

    #[test]
    fn unknown_types_fields_short_ids_and_trailing_bytes_are_malformed() {
        let config = GossipConfig::default();
        let cases = [
            Value::Map(vec![("type".into(), "gossip_everything".into())]),
            Value::Map(vec![
                ("type".into(), "want".into()),
                ("ids".into(), Value::Array(vec![])),
                ("extra".into(), 1.into()),
            ]),
            Value::Map(vec![
                ("type".into(), "want".into()),
                ("ids".into(), Value::Array(vec![Value::Bytes(vec![0; 31])])),
            ]),
            Value::Map(vec![
                ("type".into(), "message".into()),
                ("cose".into(), Value::Bytes(vec![1])),
                ("hops_left".into(), 256.into()),
            ]),
        ];
        for case in cases {
            assert!(
                matches!(
                    GossipFrame::decode(&cbor(&case), &config),
                    Err(Refusal::MalformedFrame(_))
                ),
                "{case:?}"
            );
        }
        let mut bytes = GossipFrame::Want { ids: vec![] }.encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            GossipFrame::decode(&bytes, &config),
            Err(Refusal::MalformedFrame(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = GossipFrame::decode(&bytes, &GossipConfig::default());
        }
    }
}
