//! Signed gossip between real node processes: anomaly signatures published through the local
//! API reach every node exactly once, messages missed while a node was down are pulled by
//! anti-entropy, revocations spread by gossip alone, and the gossip and application routes
//! answer bad input with typed JSON errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ztmesh_runtime::tls::MeshTrust;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Starts a CA and `n` nodes; waits for the full mesh.
fn mesh(root: &std::path::Path, n: usize, serve_args: &[&str]) -> (TestCa, Vec<TestNode>) {
    let ca = TestCa::start(root, serve_args);
    let mut nodes: Vec<TestNode> = (1..=n)
        .map(|i| ca.enroll(root, &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(60));
    (ca, nodes)
}

fn publish(node: &TestNode, indicator: &str) -> String {
    node.cli_ok(&[
        "publish", "anomaly", "--hash", HASH, "--type", indicator, "--score", "70",
    ])
    .trim()
    .to_owned()
}

fn holds(node: &TestNode, id: &str) -> bool {
    let list: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["anomalies", "--json"])).unwrap();
    list["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == id)
}

/// A blocking client of a node's API with the local application token (or another).
struct LocalApi {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    token: String,
}

impl LocalApi {
    fn new(ca: &TestCa, node: &TestNode) -> LocalApi {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let trust = Arc::new(MeshTrust::new(ca.ca_der(), "test.ztmesh".parse().unwrap()));
        let config = ztmesh_runtime::tls::node_api_client_config(trust, None).unwrap();
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        };
        LocalApi {
            rt,
            client,
            base: format!("https://{}", node.api_addr()),
            token: std::fs::read_to_string(node.dir.join("api.token"))
                .unwrap()
                .trim()
                .to_owned(),
        }
    }

    fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        self.rt.block_on(async {
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (status, json)
        })
    }

    fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request)
    }

    fn post_bytes(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/cose")
                .body(body),
        )
    }
}

#[track_caller]
fn assert_json_error(reply: &(u16, serde_json::Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "unexpected answer: {}", reply.1);
    assert_eq!(reply.1["error"], code, "unexpected error body: {}", reply.1);
    assert!(reply.1["message"].is_string(), "no message: {}", reply.1);
}

#[test]
fn an_anomaly_published_on_one_node_reaches_every_node_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = mesh(root.path(), 4, &[]);
    // A watcher on the last node sees the anomaly as a live event, once.
    let watch_log = root.path().join("watch.jsonl");
    let mut watcher = std::process::Command::new(bin())
        .args(["watch", "--json", "--count", "1", "--data-dir"])
        .arg(&nodes[3].dir)
        .stdout(std::fs::File::create(&watch_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Publish only once the stream is live (its first line is the ready event).
    wait_until("the watcher to subscribe", Duration::from_secs(30), || {
        std::fs::read_to_string(&watch_log).is_ok_and(|t| t.contains("\"ready\""))
    });
    let id = publish(&nodes[0], "port_scan");
    // Every linked peer is Tier 2: a valid certificate, but no hardware attestation yet.
    for peer in nodes[0].peers()["peers"].as_array().unwrap() {
        assert_eq!(peer["tier"], "tier 2", "{peer}");
        assert!(
            peer["tier_reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{peer}"
        );
    }
    for node in &nodes {
        wait_until(
            &format!("{} to hold the anomaly", node.name),
            Duration::from_secs(30),
            || holds(node, &id),
        );
    }
    // Every node delivered it exactly once: the anomaly is listed once per node, and the
    // gossip counters saw copies arrive as duplicates rather than as new messages.
    for node in &nodes {
        let list: serde_json::Value =
            serde_json::from_str(&node.cli_ok(&["anomalies", "--json"])).unwrap();
        let copies = list["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["id"] == id.as_str())
            .count();
        assert_eq!(copies, 1, "{} lists the anomaly {copies} times", node.name);
        let entry = list["anomalies"][0].clone();
        assert_eq!(entry["origin"], nodes[0].node_id.as_str());
        assert_eq!(entry["indicator"], "port_scan");
        assert_eq!(entry["risk_score"], 70);
        assert_eq!(entry["event_sha256"], HASH);
    }
    // The SSE stream on node4 printed a ready line then the anomaly (written by `watch`).
    wait_until(
        "the watcher to print the event and stop",
        Duration::from_secs(30),
        || matches!(watcher.try_wait(), Ok(Some(_))),
    );
    let printed = std::fs::read_to_string(&watch_log).unwrap();
    let events: Vec<serde_json::Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "ready + one anomaly: {printed}");
    assert_eq!(events[1]["type"], "anomaly");
    assert_eq!(events[1]["id"], id.as_str());
}

#[test]
fn a_node_that_was_down_pulls_missed_messages_by_anti_entropy() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, mut nodes) = mesh(root.path(), 3, &[]);
    nodes[2].kill9();
    let id = publish(&nodes[0], "malware_beacon");
    wait_until("node2 to hold it", Duration::from_secs(30), || {
        holds(&nodes[1], &id)
    });
    nodes[2].start();
    // Nobody pushes it again: node3 can only get it through a digest exchange.
    wait_until(
        "the restarted node to pull the missed anomaly",
        Duration::from_secs(60),
        || holds(&nodes[2], &id),
    );
}

#[test]
fn a_revocation_spreads_by_gossip_when_the_ca_pushes_it_to_one_node() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &["--revocation-push", "1"]);
    let mut nodes: Vec<TestNode> = (1..=4)
        .map(|i| ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    // No CRL fetch can explain what follows: nodes would fetch it only after an hour.
    for node in &nodes {
        set_config(&node.dir, "crl_refresh_secs", "3600");
    }
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(60));
    let victim = nodes[3].node_id.clone();
    // Something the victim said before it was revoked, held by everybody.
    let before = publish(&nodes[3], "before_revocation");
    for node in &nodes {
        wait_until("the victim's anomaly", Duration::from_secs(30), || {
            holds(node, &before)
        });
    }
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &victim,
    ]);
    for node in &nodes[..3] {
        wait_until(
            &format!("{} to drop the revoked node", node.name),
            Duration::from_secs(30),
            || !node.connected_to(&victim),
        );
        assert!(node.status()["status"]["crl_number"].as_u64().unwrap_or(0) >= 1);
    }
    // The CA pushed to one node only: at least two learned it from gossip.
    let pushed = std::fs::read_to_string(ca.dir.join("serve.log")).unwrap();
    assert_eq!(
        pushed.matches("revocation record pushed").count(),
        1,
        "the CA should have pushed to exactly one node"
    );
    // Its messages are dropped everywhere, and it can no longer publish at all.
    for node in &nodes[..3] {
        wait_until(
            &format!("{} to drop the revoked node's messages", node.name),
            Duration::from_secs(30),
            || !holds(node, &before),
        );
    }
    let out = nodes[3].cli(&[
        "publish", "anomaly", "--hash", HASH, "--type", "after", "--score", "1",
    ]);
    assert!(!out.status.success(), "a revoked node published");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("origin_refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The revoked set is persisted: after a restart (with no CRL fetch for an hour) node1
    // still holds the victim untrusted, as revoked.
    let saved = revoked_in_state_db(&nodes[0].dir);
    assert!(saved.contains(&victim), "{saved:?}");
    nodes[0].kill9();
    nodes[0].start();
    let log = nodes[0].proc.as_ref().unwrap();
    wait_until(
        "node1 to reload its revoked set",
        Duration::from_secs(30),
        || log.log_text().contains("revoked nodes reloaded"),
    );
}

#[test]
fn gossip_and_application_routes_refuse_bad_input_with_json_errors() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut node = ca.enroll(root.path(), "node1");
    node.start();
    let api = LocalApi::new(&ca, &node);
    let good = serde_json::json!({
        "event_sha256": HASH, "indicator": "port_scan", "risk_score": 5
    });
    assert_json_error(
        &api.post_json("/v1/anomalies", None, &good),
        401,
        "api_token_required",
    );
    assert_json_error(
        &api.post_json("/v1/anomalies", Some("ztl1_wrong"), &good),
        401,
        "invalid_api_token",
    );
    let token = api.token.clone();
    let ok = api.post_json("/v1/anomalies", Some(&token), &good);
    assert_eq!(ok.0, 202, "{}", ok.1);
    assert_eq!(ok.1["id"].as_str().unwrap().len(), 64);
    for (body, code) in [
        (
            serde_json::json!({"event_sha256": "zz", "indicator": "x", "risk_score": 1}),
            "malformed_event_sha256",
        ),
        (
            serde_json::json!({"event_sha256": HASH, "indicator": "x", "risk_score": 101}),
            "invalid_anomaly",
        ),
        (
            serde_json::json!({"event_sha256": HASH, "indicator": "Not Valid", "risk_score": 1}),
            "invalid_anomaly",
        ),
        (
            serde_json::json!({"event_sha256": HASH, "indicator": "x", "risk_score": 1,
            "metadata": {"log": "Nov 21 10:00:01 host sshd[1]: Failed password for root\nNov 21 10:00:02 ..."}}),
            "invalid_anomaly",
        ),
        (
            serde_json::json!({"event_sha256": HASH, "indicator": "x", "risk_score": 1, "raw": "x"}),
            "malformed_body",
        ),
        (
            serde_json::json!({"event_sha256": HASH, "indicator": "x", "risk_score": 1, "ttl_sec": 0}),
            "invalid_ttl",
        ),
    ] {
        assert_json_error(
            &api.post_json("/v1/anomalies", Some(&token), &body),
            400,
            code,
        );
    }
    // A raw log in metadata is refused by the CLI too, with a message and a non-zero exit.
    let long = format!("log={}", "x".repeat(4096));
    let out = node.cli(&[
        "publish", "anomaly", "--hash", HASH, "--type", "x", "--score", "1", "--meta", &long,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));

    // Gossip route: no client certificate → 401; the revocation route takes only CA records.
    assert_json_error(
        &api.post_bytes("/v1/mesh/gossip", b"garbage".to_vec()),
        401,
        "client_certificate_required",
    );
    assert_json_error(
        &api.post_bytes("/v1/revocations", b"garbage".to_vec()),
        400,
        "invalid_message",
    );
    // A well-formed message signed by a key the mesh does not know: refused by origin.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let spki = {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        stranger
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    };
    let now = ztmesh_runtime::timefmt::now();
    let forged = ztmesh_gossip::UnsignedMessage {
        origin: ztmesh_core::NodeId::from_spki_der(&spki),
        kind: ztmesh_gossip::MessageKind::Revocation,
        body: ztmesh_gossip::kinds::RevocationRecord {
            crl: vec![1, 2, 3],
            revoked_nodes: vec![],
        }
        .encode()
        .unwrap(),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(60)),
        hop_limit: 4,
    }
    .sign(None, |tbs| {
        use ed25519_dalek::Signer;
        stranger.sign(tbs).to_bytes()
    })
    .unwrap();
    assert_json_error(
        &api.post_bytes("/v1/revocations", forged),
        403,
        "origin_refused",
    );
    // Bundle routes: garbage is 400, unknown ids 404, all JSON.
    assert_json_error(
        &api.post_json(
            "/v1/bundles",
            Some(&token),
            &serde_json::json!({"destination": "nope", "ttl_sec": 5, "payload": ""}),
        ),
        400,
        "malformed_destination",
    );
    assert_json_error(
        &api.post_json(
            "/v1/bundles",
            Some(&token),
            &serde_json::json!({"destination": node.node_id, "ttl_sec": 5, "payload": "***"}),
        ),
        400,
        "malformed_payload",
    );
    let (status, body) = api.send(
        api.client
            .get(format!("{}/v1/bundles/not-an-id", api.base))
            .bearer_auth(&token),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed_bundle_id"))
    );
    node.proc.as_mut().unwrap().assert_running();
}
