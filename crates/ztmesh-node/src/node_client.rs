//! Client of a node's own HTTPS API, used by `ztmesh status` and `ztmesh peers`: it presents
//! the node's current certificate, so it needs the key-file passphrase like the daemon does.

use std::sync::Arc;

use ztmesh_pki::keyfile::Protection;

use crate::api_types::{PeersResponse, StatusResponse};
use crate::ca_client::{http_client, send_json, ClientError};
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
        Ok(NodeApiClient {
            client: http_client(crate::tls::node_api_client_config(trust, Some(current))?)?,
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
