//! Client of a node's own HTTPS API, used by `ztmesh status` and `ztmesh peers`: it presents
//! the node's current certificate, so it needs the key-file passphrase like the daemon does.
//! Both clients here accept only the node of their data directory as the server, and accept
//! it with an expired certificate too: they must keep working through a CA outage. They must
//! never be used to reach another node.

use std::sync::Arc;

use ztmesh_pki::keyfile::Protection;

use crate::api_types::{PeersResponse, StatusResponse};
use crate::ca_client::{http_client, send, send_json, ClientError};
use crate::node_dir::{BoundAddrs, NodeDir, NodeDirError};
use crate::tls::{CurrentCertificate, MeshTrust};

/// A connection to a running node's API.
pub struct NodeApiClient {
    client: reqwest::Client,
    base: String,
}

impl NodeApiClient {
    /// Reads the node's files and the address the running daemon wrote to `node.addr.json`.
    pub fn from_dir(dir: &NodeDir, protection: &Protection<'_>) -> Result<Self, ClientError> {
        let config = dir.read_config()?;
        let addr_path = dir.addr_file();
        let text = std::fs::read_to_string(&addr_path).map_err(|source| NodeDirError::Io {
            path: addr_path.clone(),
            source,
        })?;
        let addrs: BoundAddrs = serde_json::from_str(&text)
            .map_err(|e| ClientError::Protocol(format!("{}: {e}", addr_path.display())))?;
        let (key, cert) = dir.read_tls(protection, config.insecure_plaintext_key)?;
        let ca = NodeDir::read_cert(&dir.ca_cert())?;
        let trust = Arc::new(MeshTrust::new(ca, config.trust_domain));
        let current = Arc::new(CurrentCertificate::new(vec![cert], &key.to_pkcs8_der())?);
        // Pinned to this directory's node, expired or not: status must work when the
        // certificate ran out (a CA outage), and nothing but this node may answer.
        let tls = crate::tls::own_node_api_client_config(trust, config.node_id, Some(current))?;
        Ok(NodeApiClient {
            client: http_client(tls)?,
            base: format!("https://{}", addrs.api),
        })
    }

    /// `GET /v1/mesh/peers`.
    pub async fn peers(&self) -> Result<PeersResponse, ClientError> {
        let url = format!("{}/v1/mesh/peers", self.base);
        send_json(self.client.get(&url), &url).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let url = format!("{}/v1/status", self.base);
        send_json(self.client.get(&url), &url).await
    }
}

/// A local application's connection to its node's API: authenticated by `api.token`, never by
/// the node's keys, so no passphrase is needed. The node's server certificate is checked
/// against the mesh CA and the NodeId in the data directory (expiry forgiven).
pub struct LocalApiClient {
    client: reqwest::Client,
    streaming: reqwest::Client,
    base: String,
    token: zeroize::Zeroizing<String>,
}

impl LocalApiClient {
    /// Reads `node.toml`, `ca.pem`, `api.token` and the address the running daemon wrote.
    pub fn from_dir(dir: &NodeDir) -> Result<Self, ClientError> {
        let config = dir.read_config()?;
        let addr_path = dir.addr_file();
        let text = std::fs::read_to_string(&addr_path).map_err(|source| NodeDirError::Io {
            path: addr_path.clone(),
            source,
        })?;
        let addrs: BoundAddrs = serde_json::from_str(&text)
            .map_err(|e| ClientError::Protocol(format!("{}: {e}", addr_path.display())))?;
        let token = zeroize::Zeroizing::new(dir.read_api_token()?);
        let ca = NodeDir::read_cert(&dir.ca_cert())?;
        let trust = Arc::new(MeshTrust::new(ca, config.trust_domain));
        let tls = crate::tls::own_node_api_client_config(trust, config.node_id, None)?;
        // The event stream stays open for as long as the caller listens, so its client has a
        // connect timeout only.
        let streaming = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(LocalApiClient {
            client: http_client(tls)?,
            streaming,
            base: format!("https://{}", addrs.api),
            token,
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(self.token.as_str())
    }

    /// `POST /v1/anomalies`.
    pub async fn publish_anomaly(
        &self,
        request: &crate::local_api::PublishAnomalyRequest,
    ) -> Result<crate::local_api::PublishResponse, ClientError> {
        let url = format!("{}/v1/anomalies", self.base);
        send_json(self.authorized(self.client.post(&url)).json(request), &url).await
    }

    /// `POST /v1/governance/proposals`.
    pub async fn propose(
        &self,
        param: &str,
        value: u64,
        ttl_sec: Option<u64>,
    ) -> Result<crate::governance::GovernancePublished, ClientError> {
        let url = format!("{}/v1/governance/proposals", self.base);
        let body = serde_json::json!({ "param": param, "value": value, "ttl_sec": ttl_sec });
        send_json(self.authorized(self.client.post(&url)).json(&body), &url).await
    }

    /// `GET /v1/deny`.
    pub async fn deny_list(&self) -> Result<crate::deny_list::DenyListResponse, ClientError> {
        let url = format!("{}/v1/deny", self.base);
        send_json(self.authorized(self.client.get(&url)), &url).await
    }

    /// `POST /v1/deny`.
    pub async fn deny_add(
        &self,
        entry: &str,
    ) -> Result<crate::deny_list::DenyListResponse, ClientError> {
        let url = format!("{}/v1/deny", self.base);
        let body = crate::deny_list::DenyRequest {
            entry: entry.to_owned(),
        };
        send_json(self.authorized(self.client.post(&url)).json(&body), &url).await
    }

    /// `DELETE /v1/deny/{entry}`.
    pub async fn deny_remove(
        &self,
        entry: &str,
    ) -> Result<crate::deny_list::DenyListResponse, ClientError> {
        let url = format!("{}/v1/deny/{entry}", self.base);
        send_json(self.authorized(self.client.delete(&url)), &url).await
    }

    /// `POST /v1/governance/votes`.
    pub async fn vote(
        &self,
        proposal_id: &str,
        approve: bool,
    ) -> Result<crate::governance::GovernancePublished, ClientError> {
        let url = format!("{}/v1/governance/votes", self.base);
        let body = serde_json::json!({ "proposal_id": proposal_id, "approve": approve });
        send_json(self.authorized(self.client.post(&url)).json(&body), &url).await
    }

    /// `POST /v1/log/alarm/acknowledge`.
    pub async fn acknowledge_log_alarm(
        &self,
        alarm: crate::api_types::LogAlarmKind,
        alarms: u64,
    ) -> Result<crate::api_types::AcknowledgeAlarmResponse, ClientError> {
        let url = format!("{}/v1/log/alarm/acknowledge", self.base);
        let body = crate::api_types::AcknowledgeAlarmRequest { alarm, alarms };
        send_json(self.authorized(self.client.post(&url)).json(&body), &url).await
    }

    /// `GET /v1/governance/proposals`.
    pub async fn proposals(&self) -> Result<crate::governance::ProposalsResponse, ClientError> {
        let url = format!("{}/v1/governance/proposals", self.base);
        send_json(self.authorized(self.client.get(&url)), &url).await
    }

    /// `GET /v1/anomalies`.
    pub async fn anomalies(&self) -> Result<crate::local_api::AnomaliesResponse, ClientError> {
        let url = format!("{}/v1/anomalies", self.base);
        send_json(self.authorized(self.client.get(&url)), &url).await
    }

    /// `POST /v1/bundles`.
    pub async fn send_bundle(
        &self,
        request: &crate::local_api::SendBundleRequest,
    ) -> Result<crate::local_api::SendBundleResponse, ClientError> {
        let url = format!("{}/v1/bundles", self.base);
        send_json(self.authorized(self.client.post(&url)).json(request), &url).await
    }

    /// `GET /v1/bundles`.
    pub async fn bundles(
        &self,
        queued: bool,
    ) -> Result<crate::local_api::BundleListResponse, ClientError> {
        let url = format!("{}/v1/bundles?queued={queued}", self.base);
        send_json(self.authorized(self.client.get(&url)), &url).await
    }

    /// `GET /v1/bundles/{id}`.
    pub async fn bundle(&self, id: &str) -> Result<crate::local_api::BundleContent, ClientError> {
        let url = format!("{}/v1/bundles/{id}", self.base);
        send_json(self.authorized(self.client.get(&url)), &url).await
    }

    /// `DELETE /v1/bundles/{id}`.
    pub async fn delete_bundle(&self, id: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/bundles/{id}", self.base);
        send(self.authorized(self.client.delete(&url)), &url).await?;
        Ok(())
    }

    /// `GET /v1/events`: calls `on_event` for every event until it returns `false` or the
    /// stream ends.
    pub async fn watch(
        &self,
        mut on_event: impl FnMut(crate::events::NodeEvent) -> bool,
    ) -> Result<(), ClientError> {
        let url = format!("{}/v1/events", self.base);
        let mut response = send(self.authorized(self.streaming.get(&url)), &url).await?;
        let mut parser = SseParser::default();
        loop {
            let chunk = response.chunk().await.map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            for data in parser.push(&chunk)? {
                let event: crate::events::NodeEvent = serde_json::from_str(&data)
                    .map_err(|e| ClientError::Protocol(format!("event {data:?}: {e}")))?;
                if !on_event(event) {
                    return Ok(());
                }
            }
        }
    }
}

/// Most bytes of one server-sent event; a longer one is a protocol error, not a memory sink.
const MAX_SSE_EVENT: usize = 256 * 1024;

/// Splits a server-sent event stream into the `data` of each event.
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, ClientError> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        if self.buffer.len() > MAX_SSE_EVENT {
            return Err(ClientError::Protocol("server-sent event too large".into()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_joins_split_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: a\ndata: {\"x\"").unwrap().is_empty());
        let got = parser
            .push(b":1}\n\n: keep-alive\n\nevent: b\ndata: 2\n\n")
            .unwrap();
        assert_eq!(got, vec!["{\"x\":1}".to_owned(), "2".to_owned()]);
        assert!(parser.push(&vec![b'x'; MAX_SSE_EVENT + 1]).is_err());
    }
}
