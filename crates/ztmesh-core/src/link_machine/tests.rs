//! One rule per test, on a virtual clock; then arbitrary inputs that must never panic nor move
//! a deadline backwards.

use super::*;
use crate::link_budget::{CHALLENGE_BURST, PEER_LIST_BURST};
use proptest::prelude::*;

const T0: Timestamp = Timestamp::from_unix_secs(1_000_000);
const HEARTBEAT: Duration = Duration::from_secs(1);
const REATTEST: Duration = Duration::from_secs(60);

fn config() -> LinkConfig {
    LinkConfig::new(
        1,
        Some("0.0.0.0:7000".into()),
        "192.0.2.7:40000".parse().unwrap(),
        HEARTBEAT,
        REATTEST,
    )
}

fn at(offset: Duration) -> Timestamp {
    T0.saturating_add(offset)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn transmits(machine: &mut LinkMachine) -> Vec<LinkMessage> {
    std::iter::from_fn(|| machine.poll_transmit()).collect()
}

fn events(machine: &mut LinkMachine) -> Vec<LinkEvent> {
    std::iter::from_fn(|| machine.poll_event()).collect()
}

fn heartbeat(seq: u64) -> LinkMessage {
    LinkMessage::Heartbeat { seq, sent_at: T0 }
}

/// A machine past its start: the opening messages and the first ticks drained, the first
/// challenge sent with nonce `[1; 32]`.
fn started() -> LinkMachine {
    let mut machine = LinkMachine::new(T0, config());
    machine.handle_timeout(T0);
    assert!(events(&mut machine).contains(&LinkEvent::ChallengeDue));
    machine.send_challenge(T0, vec![1; 32]);
    transmits(&mut machine);
    machine
}

#[test]
fn hello_goes_first_then_a_peer_list_request() {
    let mut machine = LinkMachine::new(T0, config());
    assert_eq!(
        machine.poll_transmit(),
        Some(LinkMessage::Hello {
            version: 1,
            listen_addr: Some("0.0.0.0:7000".into())
        })
    );
    assert_eq!(machine.poll_transmit(), Some(LinkMessage::PeerListRequest));
    assert_eq!(machine.poll_transmit(), None);
    // Every timer is due at once: a heartbeat, a challenge and another peer-list request.
    assert_eq!(machine.poll_timeout(), Some(T0));
    machine.handle_timeout(T0);
    assert_eq!(
        events(&mut machine),
        vec![LinkEvent::CheckPeer, LinkEvent::ChallengeDue]
    );
    machine.send_challenge(T0, vec![9; 32]);
    assert_eq!(
        transmits(&mut machine),
        vec![
            heartbeat_sent(1, T0),
            LinkMessage::PeerListRequest,
            LinkMessage::TeeChallenge { nonce: vec![9; 32] },
        ]
    );
}

fn heartbeat_sent(seq: u64, sent_at: Timestamp) -> LinkMessage {
    LinkMessage::Heartbeat { seq, sent_at }
}

#[test]
fn a_wildcard_listen_address_is_reached_at_the_links_remote_ip() {
    let mut machine = started();
    machine.handle_message(
        T0,
        LinkMessage::Hello {
            version: 1,
            listen_addr: Some("[::]:7100".into()),
        },
    );
    machine.handle_message(
        T0,
        LinkMessage::Hello {
            version: 1,
            listen_addr: Some("198.51.100.1:7200".into()),
        },
    );
    machine.handle_message(
        T0,
        LinkMessage::Hello {
            version: 1,
            listen_addr: Some("not an address".into()),
        },
    );
    assert_eq!(
        events(&mut machine),
        vec![
            LinkEvent::PeerListens("192.0.2.7:7100".parse().unwrap()),
            LinkEvent::PeerListens("198.51.100.1:7200".parse().unwrap()),
        ]
    );
}

#[test]
fn heartbeats_go_out_every_interval_with_rising_sequence_numbers() {
    let mut machine = started();
    let mut sent = Vec::new();
    for second in 1..=5u64 {
        let t = at(Duration::from_secs(second));
        // The peer keeps talking, so only the heartbeat timer matters.
        machine.handle_message(t.saturating_sub(ms(1)), heartbeat(second));
        assert_eq!(machine.poll_timeout(), Some(t));
        machine.handle_timeout(t.saturating_sub(ms(1)));
        assert!(
            transmits(&mut machine).is_empty(),
            "nothing before the tick"
        );
        machine.handle_timeout(t);
        sent.extend(transmits(&mut machine));
    }
    let seqs: Vec<u64> = sent
        .iter()
        .filter_map(|m| match m {
            LinkMessage::Heartbeat { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
    // Every 5 s the peers are asked for again.
    assert_eq!(
        sent.iter()
            .filter(|m| **m == LinkMessage::PeerListRequest)
            .count(),
        1
    );
}

#[test]
fn a_stalled_link_skips_missed_heartbeats_instead_of_bursting() {
    let mut machine = started();
    machine.handle_message(at(Duration::from_secs(9)), heartbeat(1));
    machine.handle_timeout(at(Duration::from_secs(9)));
    let heartbeats = transmits(&mut machine)
        .into_iter()
        .filter(|m| matches!(m, LinkMessage::Heartbeat { .. }))
        .count();
    assert_eq!(heartbeats, 1);
    assert_eq!(machine.poll_timeout(), Some(at(Duration::from_secs(10))));
}

#[test]
fn heartbeat_gaps_are_counted() {
    let mut machine = started();
    for seq in [1, 2, 5, 4, 6, 10] {
        machine.handle_message(T0, heartbeat(seq));
    }
    assert_eq!(machine.heartbeats_received(), 6);
    // 3 and 4 were skipped before 5 (a late 4 does not undo it), 7..=9 before 10.
    assert_eq!(machine.heartbeats_missed(), 5);
    let missed: Vec<u64> = events(&mut machine)
        .into_iter()
        .map(|e| match e {
            LinkEvent::Heartbeat { missed } => missed,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(missed, vec![0, 0, 2, 0, 0, 3]);
    // A sequence number at the end of the range does not overflow.
    machine.handle_message(T0, heartbeat(u64::MAX));
    machine.handle_message(T0, heartbeat(u64::MAX));
}

#[test]
fn the_peer_is_dead_after_the_silence_limit_and_not_before() {
    let mut machine = started();
    let dead_after = HEARTBEAT * 3 + DEAD_PEER_SLACK;
    let last = at(Duration::from_secs(2));
    machine.handle_message(last, heartbeat(1));
    let mut t = last;
    // Exactly the limit is still alive, whatever the timers in between.
    while t < last.saturating_add(dead_after) {
        t = machine
            .poll_timeout()
            .unwrap()
            .min(last.saturating_add(dead_after));
        machine.handle_timeout(t);
        assert_eq!(machine.closed(), None, "closed at {t:?}");
        events(&mut machine);
        transmits(&mut machine);
    }
    let dead = last.saturating_add(dead_after).saturating_add(ms(1));
    assert_eq!(machine.poll_timeout(), Some(dead));
    machine.handle_timeout(dead);
    assert_eq!(machine.closed(), Some(CloseReason::PeerSilent));
    assert_eq!(
        events(&mut machine).last(),
        Some(&LinkEvent::Closed(CloseReason::PeerSilent))
    );
    assert_eq!(CloseReason::PeerSilent.as_str(), "peer silent");
    // Nothing more is sent or due.
    assert!(transmits(&mut machine).is_empty());
    assert_eq!(machine.poll_timeout(), None);
    machine.handle_message(dead, heartbeat(2));
    machine.handle_timeout(dead.saturating_add(HEARTBEAT));
    assert!(events(&mut machine).is_empty());
}

#[test]
fn any_frame_keeps_the_peer_alive() {
    let mut machine = started();
    for second in 1..100u64 {
        let t = at(Duration::from_secs(second));
        machine.handle_message(t, LinkMessage::Gossip { frame: vec![] });
        machine.handle_timeout(t);
        assert_eq!(machine.closed(), None);
    }
}

#[test]
fn checks_come_before_the_heartbeat_and_the_silence_rule() {
    let mut machine = started();
    events(&mut machine);
    let t = at(Duration::from_secs(60));
    machine.handle_timeout(t);
    let got = events(&mut machine);
    assert_eq!(got[0], LinkEvent::ChallengeUnanswered);
    assert_eq!(got[1], LinkEvent::CheckPeer);
    assert_eq!(got[2], LinkEvent::Closed(CloseReason::PeerSilent));
}

#[test]
fn a_challenge_unanswered_past_the_timeout_fails_once_and_a_new_one_follows() {
    let mut machine = started();
    let timeout_at = T0.saturating_add(CHALLENGE_TIMEOUT).saturating_add(ms(1));
    let mut t = T0;
    let mut unanswered = 0;
    while t < at(REATTEST) {
        t = machine.poll_timeout().unwrap();
        // The peer answers everything but the challenge.
        machine.handle_message(t, heartbeat(1));
        machine.handle_timeout(t);
        for event in events(&mut machine) {
            match event {
                LinkEvent::ChallengeUnanswered => {
                    assert_eq!(t, timeout_at);
                    unanswered += 1;
                }
                LinkEvent::ChallengeDue => {
                    assert_eq!(t, at(REATTEST), "a new challenge only at the next tick");
                    machine.send_challenge(t, vec![2; 32]);
                }
                _ => {}
            }
        }
        transmits(&mut machine);
    }
    assert_eq!(unanswered, 1);
    // The new challenge is the one a response settles.
    machine.handle_message(
        t,
        LinkMessage::TeeResponse {
            nonce: vec![2; 32],
            evidence_type: "none".into(),
            evidence: vec![],
            binary_sha256: vec![0; 32],
        },
    );
    assert!(matches!(
        events(&mut machine).as_slice(),
        [LinkEvent::TeeResponse { sent: Some(sent), .. }] if *sent == vec![2; 32]
    ));
}

#[test]
fn an_answered_challenge_never_times_out_and_one_is_outstanding_at_a_time() {
    let mut machine = started();
    // A second challenge while one is outstanding is not sent.
    machine.send_challenge(T0, vec![3; 32]);
    assert!(transmits(&mut machine).is_empty());
    machine.handle_message(
        at(ms(10)),
        LinkMessage::TeeResponse {
            nonce: vec![1; 32],
            evidence_type: "none".into(),
            evidence: vec![],
            binary_sha256: vec![],
        },
    );
    // An unsolicited second response has no nonce of ours to be checked against.
    machine.handle_message(
        at(ms(20)),
        LinkMessage::TeeResponse {
            nonce: vec![1; 32],
            evidence_type: "none".into(),
            evidence: vec![],
            binary_sha256: vec![],
        },
    );
    let sent: Vec<Option<Vec<u8>>> = events(&mut machine)
        .into_iter()
        .filter_map(|e| match e {
            LinkEvent::TeeResponse { sent, .. } => Some(sent),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![Some(vec![1; 32]), None]);
    for second in 1..=40u64 {
        let t = at(Duration::from_secs(second));
        machine.handle_message(t, heartbeat(second));
        machine.handle_timeout(t);
        assert!(!events(&mut machine).contains(&LinkEvent::ChallengeUnanswered));
    }
}

#[test]
fn challenges_over_the_budget_are_refused_and_counted() {
    let mut machine = started();
    for _ in 0..100 {
        machine.handle_message(T0, LinkMessage::TeeChallenge { nonce: vec![4; 32] });
    }
    let got = events(&mut machine);
    let answered = got
        .iter()
        .filter(|e| matches!(e, LinkEvent::Challenged { .. }))
        .count();
    assert_eq!(answered, CHALLENGE_BURST as usize);
    assert_eq!(
        got.last(),
        Some(&LinkEvent::OverBudget {
            request: LinkRequest::TeeChallenge,
            refused: 100 - u64::from(CHALLENGE_BURST),
        })
    );
    // Peer lists have a budget of their own, asked for by the runtime after its tier gate.
    let lists = (0..100)
        .filter(|_| machine.admit(T0, LinkRequest::PeerList).is_ok())
        .count();
    assert_eq!(lists, PEER_LIST_BURST as usize);
    assert_eq!(
        machine.refused(),
        200 - u64::from(CHALLENGE_BURST + PEER_LIST_BURST)
    );
    // The budget refills with time.
    assert!(machine
        .admit(at(Duration::from_secs(60)), LinkRequest::PeerList)
        .is_ok());
}

#[test]
fn a_peer_list_request_is_handed_to_the_runtime_to_gate() {
    let mut machine = started();
    machine.handle_message(T0, LinkMessage::PeerListRequest);
    assert_eq!(events(&mut machine), vec![LinkEvent::PeerListRequested]);
    // The budget is only drawn when the runtime asks.
    assert_eq!(machine.refused(), 0);
}

#[test]
fn a_clock_going_backwards_moves_no_deadline_backwards() {
    let mut machine = started();
    let t = at(Duration::from_secs(3));
    machine.handle_message(t, heartbeat(1));
    machine.handle_timeout(t);
    let due = machine.poll_timeout().unwrap();
    machine.handle_message(T0, heartbeat(2));
    machine.handle_timeout(T0);
    assert_eq!(machine.poll_timeout(), Some(due));
}

#[test]
fn a_zero_interval_does_not_spin() {
    let mut config = config();
    config.heartbeat_interval = Duration::ZERO;
    config.reattest_interval = Duration::ZERO;
    config.peer_exchange_interval = Duration::ZERO;
    let mut machine = LinkMachine::new(T0, config);
    machine.handle_timeout(T0);
    assert!(machine.poll_timeout().unwrap() > T0);
}

#[derive(Debug, Clone)]
enum Input {
    Message(u64, LinkMessage),
    Timeout(u64),
    /// The runtime's answer to the latest `ChallengeDue`.
    Challenge(u64, Vec<u8>),
    Admit(u64, bool),
    Send(LinkMessage),
}

fn message() -> impl Strategy<Value = LinkMessage> {
    prop_oneof![
        (any::<u32>(), proptest::option::of(".{0,30}")).prop_map(|(version, listen_addr)| {
            LinkMessage::Hello {
                version,
                listen_addr,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(seq, ms)| LinkMessage::Heartbeat {
            seq,
            sent_at: Timestamp::from_unix_millis(ms)
        }),
        Just(LinkMessage::PeerListRequest),
        Just(LinkMessage::PeerList { peers: vec![] }),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|frame| LinkMessage::Gossip { frame }),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|frame| LinkMessage::Bundle { frame }),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|certificate| LinkMessage::CertificateUpdate { certificate }),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|nonce| LinkMessage::TeeChallenge { nonce }),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|nonce| {
            LinkMessage::TeeResponse {
                nonce,
                evidence_type: "dev".into(),
                evidence: vec![],
                binary_sha256: vec![],
            }
        }),
    ]
}

/// Times are offsets from T0 in milliseconds, up to ten minutes, in any order.
fn input() -> impl Strategy<Value = Input> {
    let offset = 0u64..600_000;
    prop_oneof![
        (offset.clone(), message()).prop_map(|(t, m)| Input::Message(t, m)),
        offset.clone().prop_map(Input::Timeout),
        (
            offset.clone(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, n)| Input::Challenge(t, n)),
        (offset, any::<bool>()).prop_map(|(t, list)| Input::Admit(t, list)),
        message().prop_map(Input::Send),
    ]
}

proptest! {
    #[test]
    fn arbitrary_inputs_never_panic_and_deadlines_never_go_backwards(
        heartbeat_ms in 0u64..20_000,
        reattest_ms in 0u64..120_000,
        inputs in proptest::collection::vec(input(), 0..200),
    ) {
        let mut config = config();
        config.heartbeat_interval = ms(heartbeat_ms);
        config.dead_after = ms(heartbeat_ms * 3) + DEAD_PEER_SLACK;
        config.reattest_interval = ms(reattest_ms);
        let mut machine = LinkMachine::new(T0, config);
        let mut latest = T0;
        let mut due = machine.poll_timeout();
        let mut schedule = (machine.next_heartbeat, machine.next_exchange, machine.next_reattest);
        for input in inputs {
            match input {
                Input::Message(t, m) => {
                    latest = latest.max(at(ms(t)));
                    machine.handle_message(at(ms(t)), m);
                }
                Input::Timeout(t) => {
                    latest = latest.max(at(ms(t)));
                    machine.handle_timeout(at(ms(t)));
                    // What was due has run: the next deadline lies ahead.
                    if let Some(next) = machine.poll_timeout() {
                        prop_assert!(next > latest, "{next:?} not after {latest:?}");
                    }
                }
                Input::Challenge(t, nonce) => {
                    latest = latest.max(at(ms(t)));
                    machine.send_challenge(at(ms(t)), nonce);
                }
                Input::Admit(t, list) => {
                    latest = latest.max(at(ms(t)));
                    let request = if list { LinkRequest::PeerList } else { LinkRequest::TeeChallenge };
                    let _ = machine.admit(at(ms(t)), request);
                }
                Input::Send(m) => machine.send(m),
            }
            while machine.poll_event().is_some() {}
            while machine.poll_transmit().is_some() {}
            let now_schedule = (machine.next_heartbeat, machine.next_exchange, machine.next_reattest);
            prop_assert!(now_schedule.0 >= schedule.0);
            prop_assert!(now_schedule.1 >= schedule.1);
            prop_assert!(now_schedule.2 >= schedule.2);
            schedule = now_schedule;
            // The earliest deadline only moves back for a new challenge, never before now.
            let now_due = machine.poll_timeout();
            if let (Some(before), Some(after)) = (due, now_due) {
                prop_assert!(after >= before || after > latest, "{after:?} < {before:?}");
            }
            if machine.closed().is_some() {
                prop_assert_eq!(now_due, None);
            }
            due = now_due;
        }
    }
}
