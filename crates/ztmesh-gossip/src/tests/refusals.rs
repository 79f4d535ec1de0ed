//! Every receipt check, one test each, on a lone core fed hand-made frames.

use ciborium::Value;
use coset::{CborSerializable, CoseSign1, Header, TaggedCborSerializable};
use ed25519_dalek::{Signer, SigningKey};
use ztmesh_core::signed::{self, ProtectedFields, SignedError};

use super::util::*;
use crate::kinds::{BodyError, RevocationRecord};
use crate::message::Payload;
use crate::{
    cbor, GossipConfig, GossipError, GossipEvent, GossipFrame, MessageId, MessageKind,
    OriginRefusal, Refusal, UnsignedMessage, GOSSIP_LABEL,
};

fn peer_refusal(result: Result<(), GossipError>) -> Refusal {
    match result {
        Err(GossipError::Peer(refusal)) => refusal,
        other => panic!("expected a peer refusal, got {other:?}"),
    }
}

fn payload_of(message: &UnsignedMessage) -> Payload {
    Payload {
        origin: message.origin,
        kind: message.kind,
        body: message.body.clone(),
        created_at: message.created_at,
        expires_at: message.expires_at,
        hop_limit: message.hop_limit,
    }
}

/// An envelope built field by field, to produce what `UnsignedMessage::sign` never would.
fn craft(
    key: &SigningKey,
    kid: &[u8],
    content_type: Option<String>,
    issued_at: Option<u64>,
    payload: Vec<u8>,
    label: &str,
) -> Vec<u8> {
    let fields = ProtectedFields {
        content_type,
        issued_at,
    };
    signed::sign_with(label, kid, &fields, payload, None, |tbs| {
        key.sign(tbs).to_bytes()
    })
    .expect("crafted envelope signs")
}

/// A correctly shaped envelope around an arbitrary payload.
fn craft_payload(key: &SigningKey, message: &UnsignedMessage, payload: Vec<u8>) -> Vec<u8> {
    craft(
        key,
        message.origin.as_bytes(),
        Some(message.kind.content_type()),
        Some(message.created_at.as_unix_secs()),
        payload,
        GOSSIP_LABEL,
    )
}

#[test]
fn valid_message_is_delivered_once() {
    let mut pair = Pair::new(GossipConfig::default());
    let cose = Pair::sign_by(&pair.peer, &pair.unsigned(1));
    pair.receive(cose.clone()).unwrap();
    pair.receive(cose.clone()).unwrap();
    let events = pair.events();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], GossipEvent::Delivered(m) if m.id == MessageId::of(&cose)));
    let stats = pair.gossip.stats();
    assert_eq!(
        (stats.delivered, stats.duplicates, stats.refused),
        (1, 1, 0)
    );
    assert_eq!(
        pair.gossip.message(&MessageId::of(&cose)).unwrap().cose,
        cose
    );
}

#[test]
fn bad_signature_is_refused_returned_and_queued() {
    let mut pair = Pair::new(GossipConfig::default());
    // Claims the peer as origin, signed by another key.
    let cose = Pair::sign_by(&pair.local, &pair.unsigned(1));
    assert_eq!(peer_refusal(pair.receive(cose)), Refusal::BadSignature);
    assert_eq!(
        pair.events(),
        vec![GossipEvent::Refused {
            from: Some(pair.peer_id),
            reason: GossipError::Peer(Refusal::BadSignature),
        }]
    );
    assert_eq!(pair.gossip.stats().delivered, 0);
    assert!(Refusal::BadSignature.is_protocol_violation());
}

#[test]
fn signature_is_verified_before_the_payload_is_decoded() {
    let mut pair = Pair::new(GossipConfig::default());
    let unsigned = pair.unsigned(1);
    let garbage = vec![0xff, 0x00, 0x13];
    let forged = craft_payload(&pair.local, &unsigned, garbage.clone());
    assert_eq!(peer_refusal(pair.receive(forged)), Refusal::BadSignature);
    let genuine = craft_payload(&pair.peer, &unsigned, garbage);
    assert!(matches!(
        peer_refusal(pair.receive(genuine)),
        Refusal::MalformedPayload(_)
    ));
}

#[test]
fn signature_under_another_label_is_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    let unsigned = pair.unsigned(1);
    let payload = cbor::encode(&payload_of(&unsigned)).unwrap();
    let cose = craft(
        &pair.peer,
        unsigned.origin.as_bytes(),
        Some(unsigned.kind.content_type()),
        Some(unsigned.created_at.as_unix_secs()),
        payload,
        "ztmesh/v1/vote",
    );
    assert_eq!(peer_refusal(pair.receive(cose)), Refusal::BadSignature);
}

#[test]
fn unknown_origin_without_certificate_is_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    pair.membership.keys.remove(&pair.peer_id);
    let key = pair.peer.clone();
    let cose = pair
        .unsigned(1)
        .sign(None, |tbs| key.sign(tbs).to_bytes())
        .unwrap();
    assert_eq!(
        peer_refusal(pair.receive(cose)),
        Refusal::Origin {
            origin: pair.peer_id,
            reason: OriginRefusal::Unknown
        }
    );
}

#[test]
fn carried_certificate_lets_a_far_node_learn_the_origin() {
    let mut pair = Pair::new(GossipConfig::default());
    pair.membership.keys.remove(&pair.peer_id);
    pair.membership.learn_from_certificates = true;
    // A certificate for another node does not vouch for this origin.
    let key = pair.peer.clone();
    let wrong = fake_certificate(&pair.local.verifying_key());
    let cose = pair
        .unsigned(1)
        .sign(Some(wrong), |tbs| key.sign(tbs).to_bytes())
        .unwrap();
    assert!(matches!(
        peer_refusal(pair.receive(cose)),
        Refusal::Origin {
            reason: OriginRefusal::BadCertificate(_),
            ..
        }
    ));
    let cose = Pair::sign_by(&pair.peer, &pair.unsigned(2));
    pair.receive(cose).unwrap();
    assert_eq!(pair.gossip.stats().delivered, 1);
}

#[test]
fn kind_not_allowed_for_the_origin_is_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    let ca = signing_key(999);
    let ca_id = node_id_of(&ca.verifying_key());
    pair.membership.keys.insert(ca_id, ca.verifying_key());
    pair.membership.ca = Some(ca_id);
    let record = body_of(crate::kinds::Body::Revocation(RevocationRecord {
        crl: vec![0x30, 0x03, 1, 2, 3],
        revoked_nodes: vec![pair.peer_id],
    }));
    // A member may not sign a revocation...
    let mut by_member = pair.unsigned(1);
    by_member.kind = MessageKind::Revocation;
    by_member.body = record.clone();
    assert_eq!(
        peer_refusal(pair.receive(Pair::sign_by(&pair.peer, &by_member))),
        Refusal::Origin {
            origin: pair.peer_id,
            reason: OriginRefusal::KindNotAllowed
        }
    );
    // ...the CA may, and a peer may relay it.
    let by_ca = UnsignedMessage {
        origin: ca_id,
        ..by_member
    };
    pair.receive(Pair::sign_by(&ca, &by_ca)).unwrap();
    assert_eq!(pair.gossip.stats().delivered, 1);
}

#[test]
fn expired_message_is_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    let mut unsigned = pair.unsigned(1);
    unsigned.created_at = at(0).saturating_sub(std::time::Duration::from_secs(20));
    unsigned.expires_at = pair.now; // expires_at <= now
    assert_eq!(
        peer_refusal(pair.receive(Pair::sign_by(&pair.peer, &unsigned))),
        Refusal::Expired {
            expires_at: pair.now,
            now: pair.now
        }
    );
}

#[test]
fn message_from_beyond_the_clock_skew_is_refused() {
    let config = GossipConfig::default();
    let skew = config.max_clock_skew_ms;
    let mut pair = Pair::new(config);
    let mut unsigned = pair.unsigned(1);
    unsigned.created_at = at(skew + 1000);
    unsigned.expires_at = at(skew + 60_000);
    assert_eq!(
        peer_refusal(pair.receive(Pair::sign_by(&pair.peer, &unsigned))),
        Refusal::FromFuture {
            created_at: at(skew + 1000),
            now: pair.now
        }
    );
    // Exactly at the skew is still accepted.
    unsigned.created_at = at(skew);
    pair.receive(Pair::sign_by(&pair.peer, &unsigned)).unwrap();
}

#[test]
fn lifetime_over_max_ttl_is_refused() {
    let config = GossipConfig::default();
    let max_ttl = config.max_ttl_ms;
    let mut pair = Pair::new(config);
    let mut unsigned = pair.unsigned(1);
    unsigned.expires_at = at(max_ttl + 1);
    assert_eq!(
        peer_refusal(pair.receive(Pair::sign_by(&pair.peer, &unsigned))),
        Refusal::TtlTooLong {
            ttl_ms: max_ttl + 1,
            max_ms: max_ttl
        }
    );
    unsigned.expires_at = at(max_ttl);
    pair.receive(Pair::sign_by(&pair.peer, &unsigned)).unwrap();
}

#[test]
fn lifetime_ending_before_it_starts_is_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    let mut unsigned = pair.unsigned(1);
    unsigned.created_at = at(2000);
    unsigned.expires_at = at(1000);
    assert!(matches!(
        peer_refusal(pair.receive(Pair::sign_by(&pair.peer, &unsigned))),
        Refusal::InvalidLifetime { .. }
    ));
}

#[test]
fn oversized_messages_and_frames_are_refused() {
    let config = GossipConfig {
        max_message_len: 1024,
        ..GossipConfig::default()
    };
    let max_frame_len = config.max_frame_len();
    let mut pair = Pair::new(config);
    let peer = pair.peer_id;
    let now = pair.now;
    let frame = Pair::frame(vec![0; 1025], 0);
    assert_eq!(
        peer_refusal(
            pair.gossip
                .handle_frame(peer, &frame, now, &mut pair.membership)
        ),
        Refusal::MessageTooLarge {
            len: 1025,
            max: 1024
        }
    );
    let huge = vec![0; max_frame_len + 1];
    assert_eq!(
        peer_refusal(
            pair.gossip
                .handle_frame(peer, &huge, now, &mut pair.membership)
        ),
        Refusal::FrameTooLarge {
            len: max_frame_len + 1,
            max: max_frame_len
        }
    );
    assert_eq!(
        pair.gossip
            .publish(vec![0; 1025], now, &mut pair.membership)
            .unwrap_err(),
        GossipError::Local(Refusal::MessageTooLarge {
            len: 1025,
            max: 1024
        })
    );
    // A genuine message pushed over the cap by the certificate it carries.
    let key = pair.peer.clone();
    let unsigned = pair.unsigned(1);
    let cose = unsigned
        .sign(Some(vec![0x30; 1000]), |tbs| key.sign(tbs).to_bytes())
        .unwrap();
    assert!(cose.len() > 1024);
    assert!(matches!(
        peer_refusal(pair.receive(cose)),
        Refusal::MessageTooLarge { .. }
    ));
}

#[test]
fn payload_origin_must_equal_the_key_id() {
    let mut pair = Pair::new(GossipConfig::default());
    let unsigned = pair.unsigned(1);
    let mut payload = payload_of(&unsigned);
    payload.origin = node_id_of(&pair.local.verifying_key());
    let cose = craft_payload(&pair.peer, &unsigned, cbor::encode(&payload).unwrap());
    assert_eq!(
        peer_refusal(pair.receive(cose)),
        Refusal::OriginMismatch {
            key_id: pair.peer_id,
            payload: payload.origin
        }
    );
}

#[test]
fn payload_must_agree_with_the_protected_header() {
    let mut pair = Pair::new(GossipConfig::default());
    let unsigned = pair.unsigned(1);
    let payload = cbor::encode(&payload_of(&unsigned)).unwrap();
    let wrong_kind = craft(
        &pair.peer,
        unsigned.origin.as_bytes(),
        Some(MessageKind::PeerExchange.content_type()),
        Some(unsigned.created_at.as_unix_secs()),
        payload.clone(),
        GOSSIP_LABEL,
    );
    assert_eq!(
        peer_refusal(pair.receive(wrong_kind)),
        Refusal::HeaderMismatch("kind")
    );
    let wrong_time = craft(
        &pair.peer,
        unsigned.origin.as_bytes(),
        Some(unsigned.kind.content_type()),
        Some(unsigned.created_at.as_unix_secs() - 3600),
        payload,
        GOSSIP_LABEL,
    );
    assert_eq!(
        peer_refusal(pair.receive(wrong_time)),
        Refusal::HeaderMismatch("created_at")
    );
}

#[test]
fn envelope_needs_a_kind_a_time_and_a_node_key_id() {
    let mut pair = Pair::new(GossipConfig::default());
    let unsigned = pair.unsigned(1);
    let payload = cbor::encode(&payload_of(&unsigned)).unwrap();
    let kid = unsigned.origin.as_bytes();
    let secs = Some(unsigned.created_at.as_unix_secs());
    let content_type = Some(unsigned.kind.content_type());
    let cases = [
        (
            craft(&pair.peer, kid, None, secs, payload.clone(), GOSSIP_LABEL),
            Refusal::UnknownKind(String::new()),
        ),
        (
            craft(
                &pair.peer,
                kid,
                Some("application/vnd.ztmesh.gossip.ballot+cbor".into()),
                secs,
                payload.clone(),
                GOSSIP_LABEL,
            ),
            Refusal::UnknownKind("application/vnd.ztmesh.gossip.ballot+cbor".into()),
        ),
        (
            craft(
                &pair.peer,
                kid,
                content_type.clone(),
                None,
                payload.clone(),
                GOSSIP_LABEL,
            ),
            Refusal::MissingIssuedAt,
        ),
        (
            craft(
                &pair.peer,
                &kid[..19],
                content_type,
                secs,
                payload,
                GOSSIP_LABEL,
            ),
            Refusal::BadKeyId,
        ),
    ];
    for (cose, expected) in cases {
        assert_eq!(peer_refusal(pair.receive(cose)), expected);
    }
    // None of these got as far as asking membership.
    assert_eq!(pair.membership.calls, 0);
    assert!(matches!(
        peer_refusal(pair.receive(vec![0xd2, 0x84, 0x40])),
        Refusal::Envelope(SignedError::Malformed(_))
    ));
}

#[test]
fn anomaly_breaking_its_schema_is_refused_at_receipt() {
    let mut pair = Pair::new(GossipConfig::default());
    let anomaly = |metadata_value: Value| {
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Value::Map(vec![
                ("event_sha256".into(), Value::Bytes(vec![1; 32])),
                ("indicator".into(), "ssh.bruteforce".into()),
                ("risk_score".into(), 50.into()),
                ("rule_id".into(), Value::Null),
                (
                    "metadata".into(),
                    Value::Map(vec![("log".into(), metadata_value)]),
                ),
            ]),
            &mut bytes,
        )
        .unwrap();
        bytes
    };
    let mut unsigned = pair.unsigned(1);
    unsigned.kind = MessageKind::Anomaly;
    let mut refusals = Vec::new();
    let newline = anomaly("GET /admin\nHost: x".into());
    let raw_log = anomaly("x".repeat(3000).into());
    for body in [newline, raw_log] {
        let mut payload = payload_of(&unsigned);
        payload.body = body;
        let cose = craft_payload(&pair.peer, &unsigned, cbor::encode(&payload).unwrap());
        refusals.push(peer_refusal(pair.receive(cose)));
    }
    assert_eq!(
        refusals[0],
        Refusal::Body(BodyError::Invalid {
            field: "metadata",
            reason: "value has control characters or line breaks",
        })
    );
    assert!(matches!(
        refusals[1],
        Refusal::Body(BodyError::TooLarge { max: 2048, .. })
    ));
    assert_eq!(pair.gossip.stats().delivered, 0);
}

#[test]
fn revoked_origin_is_refused_before_membership_is_asked() {
    let mut pair = Pair::new(GossipConfig::default());
    let other = signing_key(55);
    let other_id = node_id_of(&other.verifying_key());
    pair.membership.keys.insert(other_id, other.verifying_key());
    pair.gossip.handle_revoked(other_id);
    let unsigned = UnsignedMessage {
        origin: other_id,
        ..pair.unsigned(1)
    };
    assert_eq!(
        peer_refusal(pair.receive(Pair::sign_by(&other, &unsigned))),
        Refusal::RevokedOrigin(other_id)
    );
    assert_eq!(pair.membership.calls, 0);
    assert!(pair.transmits().is_empty());
}

#[test]
fn frames_from_unlinked_peers_are_refused() {
    let mut pair = Pair::new(GossipConfig::default());
    let stranger = node_id_of(&signing_key(77).verifying_key());
    let cose = Pair::sign_by(&pair.peer, &pair.unsigned(1));
    let now = pair.now;
    assert_eq!(
        pair.gossip
            .handle_frame(stranger, &Pair::frame(cose, 1), now, &mut pair.membership),
        Err(GossipError::NotLinked(stranger))
    );
    pair.gossip.handle_link_down(&pair.peer_id.clone());
    let cose = Pair::sign_by(&pair.peer, &pair.unsigned(2));
    assert_eq!(
        pair.receive(cose),
        Err(GossipError::NotLinked(pair.peer_id))
    );
}

#[test]
fn repackaged_message_is_a_duplicate() {
    let mut pair = Pair::new(GossipConfig::default());
    let cose = Pair::sign_by(&pair.peer, &pair.unsigned(1));
    // Same signature and signed bytes, but a relay stripped the unprotected certificate.
    let mut envelope = CoseSign1::from_tagged_slice(&cose).unwrap();
    envelope.unprotected = Header::default();
    let repackaged = envelope.to_tagged_vec().unwrap();
    assert_ne!(MessageId::of(&repackaged), MessageId::of(&cose));
    assert!(CoseSign1::from_slice(&repackaged[1..]).is_ok());
    pair.receive(cose).unwrap();
    pair.receive(repackaged.clone()).unwrap();
    assert_eq!(pair.gossip.stats().delivered, 1);
    assert_eq!(pair.gossip.stats().duplicates, 1);
    // Its id is now known, so a digest naming it pulls nothing.
    let digest = GossipFrame::Digest {
        ids: vec![MessageId::of(&repackaged)],
        reply: true,
    };
    let now = pair.now;
    let peer = pair.peer_id;
    pair.gossip
        .handle_frame(peer, &digest.encode().unwrap(), now, &mut pair.membership)
        .unwrap();
    assert!(pair.transmits().is_empty());
}

#[test]
fn permanently_refused_bytes_are_neither_rechecked_nor_pulled() {
    let mut pair = Pair::new(GossipConfig::default());
    let forged = Pair::sign_by(&pair.local, &pair.unsigned(1));
    assert_eq!(
        peer_refusal(pair.receive(forged.clone())),
        Refusal::BadSignature
    );
    assert_eq!(
        peer_refusal(pair.receive(forged.clone())),
        Refusal::AlreadyRefused
    );
    assert_eq!(pair.membership.calls, 1);
    // A message refused for a reason that may pass (unknown origin) is still pulled later.
    let stranger = signing_key(78);
    let unknown = Pair::sign_by(
        &stranger,
        &UnsignedMessage {
            origin: node_id_of(&stranger.verifying_key()),
            ..pair.unsigned(2)
        },
    );
    assert!(matches!(
        peer_refusal(pair.receive(unknown.clone())),
        Refusal::Origin {
            reason: OriginRefusal::Unknown,
            ..
        }
    ));
    let digest = GossipFrame::Digest {
        ids: vec![MessageId::of(&forged), MessageId::of(&unknown)],
        reply: true,
    };
    let now = pair.now;
    let peer = pair.peer_id;
    pair.gossip
        .handle_frame(peer, &digest.encode().unwrap(), now, &mut pair.membership)
        .unwrap();
    let wants: Vec<GossipFrame> = pair.transmits().iter().map(|t| decode(&t.frame)).collect();
    assert_eq!(
        wants,
        vec![GossipFrame::Want {
            ids: vec![MessageId::of(&unknown)]
        }]
    );
}

#[test]
fn hops_are_clamped_to_the_signed_limit_and_stop_at_zero() {
    let mut pair = Pair::new(GossipConfig::default());
    let third = node_id_of(&signing_key(102).verifying_key());
    let now = pair.now;
    pair.gossip.handle_link_up(third, now);
    pair.transmits();
    let mut unsigned = pair.unsigned(1);
    unsigned.hop_limit = 2;
    let cose = Pair::sign_by(&pair.peer, &unsigned);
    let peer = pair.peer_id;
    pair.gossip
        .handle_frame(
            peer,
            &Pair::frame(cose.clone(), 200),
            now,
            &mut pair.membership,
        )
        .unwrap();
    let sent: Vec<(ztmesh_core::NodeId, GossipFrame)> = pair
        .transmits()
        .into_iter()
        .map(|t| (t.to, decode(&t.frame)))
        .collect();
    assert_eq!(
        sent,
        vec![(third, GossipFrame::Message { cose, hops_left: 1 })]
    );
    let last_hop = Pair::sign_by(&pair.peer, &pair.unsigned(2));
    pair.gossip
        .handle_frame(peer, &Pair::frame(last_hop, 0), now, &mut pair.membership)
        .unwrap();
    assert!(pair.transmits().is_empty());
    assert_eq!(pair.gossip.stats().delivered, 2);
}

#[test]
fn publish_refusals_are_local_faults() {
    let mut pair = Pair::new(GossipConfig::default());
    let forged = Pair::sign_by(&pair.local, &pair.unsigned(1));
    let now = pair.now;
    let error = pair
        .gossip
        .publish(forged, now, &mut pair.membership)
        .unwrap_err();
    assert_eq!(error, GossipError::Local(Refusal::BadSignature));
    assert!(!error.is_peer_fault());
    assert_eq!(
        pair.events(),
        vec![GossipEvent::Refused {
            from: None,
            reason: error
        }]
    );
    // An invalid body is refused before signing.
    let mut unsigned = pair.unsigned(1);
    unsigned.body = vec![0xff];
    let key = pair.peer.clone();
    assert!(matches!(
        unsigned.sign(None, |tbs| key.sign(tbs).to_bytes()),
        Err(GossipError::Local(Refusal::Body(_)))
    ));
}

#[test]
fn revocation_purges_queued_frames_and_pending_deliveries() {
    let mut pair = Pair::new(GossipConfig::default());
    let third = node_id_of(&signing_key(102).verifying_key());
    let now = pair.now;
    pair.gossip.handle_link_up(third, now);
    pair.transmits();
    let origin = signing_key(56);
    let origin_id = node_id_of(&origin.verifying_key());
    pair.membership
        .keys
        .insert(origin_id, origin.verifying_key());
    let relayed = Pair::sign_by(
        &origin,
        &UnsignedMessage {
            origin: origin_id,
            ..pair.unsigned(1)
        },
    );
    let own = Pair::sign_by(&pair.peer, &pair.unsigned(2));
    pair.receive(relayed.clone()).unwrap();
    pair.receive(own.clone()).unwrap();
    // Both are queued for the third peer and waiting as deliveries; revoke one origin.
    pair.gossip.handle_revoked(origin_id);
    let sent: Vec<GossipFrame> = pair.transmits().iter().map(|t| decode(&t.frame)).collect();
    assert_eq!(
        sent,
        vec![GossipFrame::Message {
            cose: own.clone(),
            hops_left: 2
        }]
    );
    let delivered: Vec<MessageId> = pair
        .events()
        .into_iter()
        .filter_map(|event| match event {
            GossipEvent::Delivered(message) => Some(message.id),
            GossipEvent::Refused { .. } => None,
        })
        .collect();
    assert_eq!(delivered, vec![MessageId::of(&own)]);
    assert!(pair.gossip.message(&MessageId::of(&relayed)).is_none());
    assert_eq!(pair.gossip.stats().revoked_purged, 1);
}
