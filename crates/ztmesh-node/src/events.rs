//! What a node tells its local applications as it happens: anomaly signatures received from the
//! mesh, bundles delivered to this node, revocations applied, split-view alarms.
//!
//! Events fan out through one bounded broadcast channel. A subscriber that falls behind is told
//! how many events it missed (a `lagged` event) rather than silently skipping them; the events
//! themselves stay listed by `GET /v1/anomalies` and `GET /v1/bundles`, so nothing accepted is lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it is told it lagged.
pub const EVENT_BUFFER: usize = 1024;

/// An anomaly signature received (or published) by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// Gossip message id (hex SHA-256 of the signed message).
    pub id: String,
    /// The node that signed it.
    pub origin: String,
    /// When the origin created it (RFC 3339).
    pub created_at: String,
    /// When it expires everywhere (RFC 3339).
    pub expires_at: String,
    /// SHA-256 of the observed event (hex).
    pub event_sha256: String,
    /// Indicator type, e.g. `port_scan`.
    pub indicator: String,
    /// Risk score 0–100.
    pub risk_score: u8,
    /// Detection rule, when one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// Short metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A bundle delivered to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    /// Bundle id.
    pub bundle_id: String,
    /// Source endpoint (`dtn://<node>/<service>`).
    pub source: String,
    /// Destination endpoint.
    pub destination: String,
    /// Payload length in bytes.
    pub len: u64,
}

/// One event on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// An anomaly signature arrived.
    Anomaly(AnomalyEvent),
    /// A bundle was delivered (durably stored for the application).
    Bundle(BundleEvent),
    /// A CA-signed revocation was applied.
    Revocation {
        /// Revoked nodes named by the record.
        nodes: Vec<String>,
        /// The CRL number now in force.
        crl_number: u64,
    },
    /// A governance decision was applied on this node.
    Governance {
        /// The parameter.
        param: String,
        /// Its new value.
        value: u64,
        /// The winning proposal (64 hex).
        proposal_id: String,
    },
    /// First event of every subscription: the stream is live from here on.
    Ready {
        /// This node.
        node_id: String,
        /// When the subscription started (RFC 3339).
        at: String,
    },
    /// The subscriber fell behind and missed this many events (list routes still have them).
    Lagged {
        /// Number of events skipped.
        missed: u64,
    },
}

impl NodeEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            NodeEvent::Anomaly(_) => "anomaly",
            NodeEvent::Bundle(_) => "bundle",
            NodeEvent::Revocation { .. } => "revocation",
            NodeEvent::Governance { .. } => "governance",
            NodeEvent::Ready { .. } => "ready",
            NodeEvent::Lagged { .. } => "lagged",
        }
    }
}

/// The broadcast hub.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<NodeEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            sender: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl EventHub {
    /// Sends to every current subscriber (none listening is fine).
    pub fn emit(&self, event: NodeEvent) {
        let _ = self.sender.send(event);
    }

    /// A new subscription that sees events from now on.
    pub fn subscribe(&self) -> EventSubscription {
        EventSubscription {
            receiver: self.sender.subscribe(),
        }
    }
}

/// One subscriber.
#[derive(Debug)]
pub struct EventSubscription {
    receiver: broadcast::Receiver<NodeEvent>,
}

impl EventSubscription {
    /// The next event; a lag becomes a [`NodeEvent::Lagged`]. `None` when the hub is gone.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(NodeEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_many_events_it_missed() {
        let hub = EventHub::default();
        let mut sub = hub.subscribe();
        for _ in 0..EVENT_BUFFER + 5 {
            hub.emit(NodeEvent::Revocation {
                nodes: vec![],
                crl_number: 1,
            });
        }
        assert_eq!(sub.next().await, Some(NodeEvent::Lagged { missed: 5 }));
        assert!(matches!(
            sub.next().await,
            Some(NodeEvent::Revocation { .. })
        ));
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let json = serde_json::to_value(NodeEvent::Bundle(BundleEvent {
            bundle_id: "b".into(),
            source: "dtn://a/x".into(),
            destination: "dtn://b/x".into(),
            len: 3,
        }))
        .unwrap();
        assert_eq!(json["type"], "bundle");
        assert_eq!(json["len"], 3);
    }
}
