//! Issue 12, "link amplification": a member flooding one link with `TeeChallenge` and
//! `PeerListRequest` frames gets answers within the link's budget, not one answer per frame
//! (1,000 challenges used to draw 450 KB of signed evidence).
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztmesh_core::link::{FrameDecoder, LinkMessage, TEE_NONCE_LEN};
use ztmesh_core::link_budget::{
    CHALLENGES_PER_MINUTE, CHALLENGE_BURST, PEER_LISTS_PER_MINUTE, PEER_LIST_BURST,
};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

const FLOOD: usize = 1_000;

#[test]
fn a_flood_of_tee_challenges_and_peer_list_requests_gets_bounded_answers() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let asker = ca.enroll(root.path(), "asker");
    let mut target = ca.enroll(root.path(), "target");
    target.start();
    let target_addr: std::net::SocketAddr = target.mesh_addr().parse().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (challenges_answered, lists_answered, elapsed) = rt.block_on(async {
        // A link as the enrolled member `asker`, with its own certificate.
        let dir = NodeDir(asker.dir.clone());
        let config = dir.read_config().unwrap();
        let (key, cert) = dir
            .read_tls(&Protection::Passphrase(PASSPHRASE.as_bytes()), false)
            .unwrap();
        let trust = Arc::new(MeshTrust::new(ca.ca_der(), config.trust_domain));
        let current = Arc::new(CurrentCertificate::new(vec![cert], &key.to_pkcs8_der()).unwrap());
        let client = ztmesh_runtime::tls::mesh_client_config(trust, current).unwrap();
        let tcp = tokio::net::TcpStream::connect(target_addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("mesh.ztmesh.invalid").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .unwrap();

        let mut flood = LinkMessage::Hello {
            version: 1,
            listen_addr: None,
        }
        .to_frame()
        .unwrap();
        for i in 0..FLOOD {
            let nonce = vec![(i % 251) as u8; TEE_NONCE_LEN];
            flood.extend(LinkMessage::TeeChallenge { nonce }.to_frame().unwrap());
            flood.extend(LinkMessage::PeerListRequest.to_frame().unwrap());
        }
        tls.write_all(&flood).await.unwrap();
        tls.flush().await.unwrap();
        let sent_at = Instant::now();

        // Read until the burst has been answered, then two seconds more: whatever else the
        // flood draws arrives in that time.
        let mut decoder = FrameDecoder::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let (mut challenges, mut lists) = (0usize, 0usize);
        let mut burst_answered_at: Option<Instant> = None;
        let overall = Instant::now() + Duration::from_secs(60);
        loop {
            let until = match burst_answered_at {
                Some(at) => at + Duration::from_secs(2),
                None => overall,
            };
            let now = Instant::now();
            if now >= until {
                break;
            }
            let n = match tokio::time::timeout(until - now, tls.read(&mut buffer)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
            };
            decoder.push(&buffer[..n]);
            while let Ok(Some(message)) = decoder.next_message() {
                match message {
                    LinkMessage::TeeResponse { .. } => challenges += 1,
                    LinkMessage::PeerList { .. } => lists += 1,
                    _ => {}
                }
            }
            if burst_answered_at.is_none()
                && challenges >= CHALLENGE_BURST as usize
                && lists >= PEER_LIST_BURST as usize
            {
                burst_answered_at = Some(Instant::now());
            }
        }
        assert!(
            burst_answered_at.is_some(),
            "the burst itself was not answered: {challenges} challenges, {lists} peer lists"
        );
        (challenges, lists, sent_at.elapsed())
    });

    // The budget: the burst, then the per-minute rate over the time the test read, plus one
    // for a refill landing at the edge.
    let allowed = |burst: u32, per_minute: u32| {
        burst as usize + (elapsed.as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as usize + 1
    };
    let challenge_bound = allowed(CHALLENGE_BURST, CHALLENGES_PER_MINUTE);
    let list_bound = allowed(PEER_LIST_BURST, PEER_LISTS_PER_MINUTE);
    assert!(
        challenges_answered <= challenge_bound,
        "{challenges_answered} of {FLOOD} challenges answered in {elapsed:?} (budget {challenge_bound})"
    );
    assert!(
        lists_answered <= list_bound,
        "{lists_answered} of {FLOOD} peer-list requests answered in {elapsed:?} (budget {list_bound})"
    );
    target.proc.as_mut().unwrap().assert_running();
    let log = strip_ansi(&target.proc.as_ref().unwrap().log_text());
    assert!(log.contains("over the link's budget dropped"), "{log}");
    eprintln!(
        "{FLOOD} challenges and {FLOOD} peer-list requests drew {challenges_answered} and {lists_answered} answers in {elapsed:?}"
    );
}
