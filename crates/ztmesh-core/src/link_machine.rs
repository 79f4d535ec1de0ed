//! The protocol of one authenticated mesh link, as a sans-IO state machine: the Hello this side
//! sends first, the heartbeat schedule, the dead-peer deadline, the re-attestation schedule and
//! the deadline of the one outstanding `TeeChallenge`, the periodic peer-list requests, and the
//! per-link budget for requests whose answers cost more than the asking ([`LinkBudget`]).
//!
//! It never touches a socket, a clock, a thread or randomness: the runtime passes `now`, the
//! decoded [`LinkMessage`]s it read and the nonces it drew, and moves what the machine queues.
//! It never decides trust (tier gates, revocation, certificate verification, attestation
//! verdicts): it tells the runtime when to look ([`LinkEvent`]) and keeps only the timing and
//! counting rules of the link.
//!
//! Use, in the order of quinn's `Connection`:
//! 1. [`LinkMachine::new`] queues the Hello and the first peer-list request; every timer is due
//!    at once (a first heartbeat, a first challenge, a second peer-list request, as a link
//!    always did).
//! 2. Feed every decoded frame to [`LinkMachine::handle_message`], and call
//!    [`LinkMachine::handle_timeout`] when [`LinkMachine::poll_timeout`] has passed.
//! 3. After each input, drain [`LinkMachine::poll_event`] first, then
//!    [`LinkMachine::poll_transmit`]: an event may close the link (then nothing more is sent) or
//!    ask for a nonce ([`LinkEvent::ChallengeDue`] → [`LinkMachine::send_challenge`]).
//!
//! Both queues are filled by at most a handful of entries per input and the runtime drains them
//! after every input, so they stay small; time passed in that goes backwards is taken as the
//! latest time seen, so no deadline ever moves backwards.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::link::{LinkMessage, PeerAdvert};
use crate::link_budget::{LinkBudget, LinkRequest};
use crate::Timestamp;

/// Between two peer-list requests on a link.
pub const PEER_EXCHANGE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a `TeeChallenge` may stay unanswered before it counts as a failed attestation.
pub const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Silence allowed on a link beyond three heartbeat intervals before the peer counts as dead.
pub const DEAD_PEER_SLACK: Duration = Duration::from_secs(5);

/// The shortest interval a timer may have: a zero interval would make the link spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The timing of one link, fixed when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Protocol version announced in the Hello.
    pub version: u32,
    /// This node's mesh listener, announced in the Hello.
    pub listen_addr: Option<String>,
    /// Where the link's connection came from: a peer listening on a wildcard address is reached
    /// at this address's IP.
    pub remote: SocketAddr,
    /// Between two heartbeats sent.
    pub heartbeat_interval: Duration,
    /// Silence after which the peer is dead.
    pub dead_after: Duration,
    /// Between two peer-list requests.
    pub peer_exchange_interval: Duration,
    /// Between two challenges (one at link start).
    pub reattest_interval: Duration,
    /// How long a challenge may stay unanswered.
    pub challenge_timeout: Duration,
}

impl LinkConfig {
    /// The timing every link uses: dead after three heartbeat intervals plus
    /// [`DEAD_PEER_SLACK`] of silence, peers asked for every [`PEER_EXCHANGE_INTERVAL`],
    /// challenges unanswered after [`CHALLENGE_TIMEOUT`].
    pub fn new(
        version: u32,
        listen_addr: Option<String>,
        remote: SocketAddr,
        heartbeat_interval: Duration,
        reattest_interval: Duration,
    ) -> Self {
        LinkConfig {
            version,
            listen_addr,
            remote,
            heartbeat_interval,
            dead_after: heartbeat_interval
                .saturating_mul(3)
                .saturating_add(DEAD_PEER_SLACK),
            peer_exchange_interval: PEER_EXCHANGE_INTERVAL,
            reattest_interval,
            challenge_timeout: CHALLENGE_TIMEOUT,
        }
    }
}

/// Why the machine closed the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// No frame for longer than [`LinkConfig::dead_after`].
    PeerSilent,
}

impl CloseReason {
    /// The reason as the link-down log line gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerSilent => "peer silent",
        }
    }
}

/// What the runtime must do, in order. The machine has already applied its own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The peer said where it listens (a wildcard address already replaced by the link's remote
    /// IP): record it for dialing.
    PeerListens(SocketAddr),
    /// A heartbeat arrived; `missed` heartbeats were skipped before it (a gap in `seq`).
    Heartbeat {
        /// Sequence numbers jumped over.
        missed: u64,
    },
    /// The peer asks for our peers. Gate it by the peer's tier, then ask
    /// [`LinkMachine::admit`] before answering with [`LinkMachine::send`].
    PeerListRequested,
    /// Peers the other side knows.
    PeerList(Vec<PeerAdvert>),
    /// A gossip frame for the gossip core.
    Gossip(Vec<u8>),
    /// A DTN frame for the DTN core.
    Bundle(Vec<u8>),
    /// The peer rotated its certificate: verify it (same node, valid chain), or close the link.
    CertificateUpdate(Vec<u8>),
    /// The peer challenges us, within its budget: answer with evidence bound to `nonce`.
    Challenged {
        /// The peer's nonce.
        nonce: Vec<u8>,
    },
    /// The peer's answer to our challenge. `sent` is our outstanding nonce (now settled), if
    /// there was one; verify the evidence against it.
    TeeResponse {
        /// Our challenge's nonce, if one was outstanding.
        sent: Option<Vec<u8>>,
        /// The nonce the peer echoed.
        nonce: Vec<u8>,
        /// Evidence type.
        evidence_type: String,
        /// Evidence bytes.
        evidence: Vec<u8>,
        /// The peer's executable hash.
        binary_sha256: Vec<u8>,
    },
    /// A request over the link's budget was dropped; `refused` is the link's total so far.
    OverBudget {
        /// What was asked.
        request: LinkRequest,
        /// Requests refused on this link so far.
        refused: u64,
    },
    /// Time to challenge the peer: draw a fresh nonce and pass it to
    /// [`LinkMachine::send_challenge`].
    ChallengeDue,
    /// Our challenge went unanswered for [`LinkConfig::challenge_timeout`]: a failed attestation.
    ChallengeUnanswered,
    /// A heartbeat is due: check the peer's revocation, deny-list and certificate expiry now,
    /// and close the link before sending anything if one fails.
    CheckPeer,
    /// The link is over; nothing more is sent or handled.
    Closed(CloseReason),
}

/// The state of one link (see the module documentation for the calling order).
#[derive(Debug)]
pub struct LinkMachine {
    config: LinkConfig,
    /// The latest `now` given; earlier times are taken as this.
    clock: Timestamp,
    transmits: VecDeque<LinkMessage>,
    events: VecDeque<LinkEvent>,
    closed: Option<CloseReason>,
    next_heartbeat: Timestamp,
    next_exchange: Timestamp,
    next_reattest: Timestamp,
    /// The outstanding challenge's nonce and the instant it counts as unanswered.
    challenge: Option<(Vec<u8>, Timestamp)>,
    last_frame: Timestamp,
    /// Our last heartbeat's sequence number.
    seq: u64,
    /// The highest sequence number the peer sent.
    last_seq: u64,
    heartbeats_received: u64,
    heartbeats_missed: u64,
    budget: LinkBudget,
}

impl LinkMachine {
    /// A link that opened at `now`: the Hello and a peer-list request are queued, and every
    /// timer is due.
    pub fn new(now: Timestamp, mut config: LinkConfig) -> Self {
        config.heartbeat_interval = config.heartbeat_interval.max(MIN_INTERVAL);
        config.peer_exchange_interval = config.peer_exchange_interval.max(MIN_INTERVAL);
        config.reattest_interval = config.reattest_interval.max(MIN_INTERVAL);
        let mut transmits = VecDeque::with_capacity(4);
        transmits.push_back(LinkMessage::Hello {
            version: config.version,
            listen_addr: config.listen_addr.clone(),
        });
        transmits.push_back(LinkMessage::PeerListRequest);
        LinkMachine {
            config,
            clock: now,
            transmits,
            events: VecDeque::with_capacity(4),
            closed: None,
            next_heartbeat: now,
            next_exchange: now,
            next_reattest: now,
            challenge: None,
            last_frame: now,
            seq: 0,
            last_seq: 0,
            heartbeats_received: 0,
            heartbeats_missed: 0,
            budget: LinkBudget::new(now),
        }
    }

    fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// One message decoded from the peer at `now`. Any frame proves the peer alive.
    pub fn handle_message(&mut self, now: Timestamp, message: LinkMessage) {
        if self.closed.is_some() {
            return;
        }
        let now = self.advance(now);
        self.last_frame = now;
        let event = match message {
            LinkMessage::Hello { listen_addr, .. } => listen_addr
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
                .map(|addr| {
                    // A node listening on a wildcard address is reached at the address its
                    // link came from.
                    if addr.ip().is_unspecified() {
                        LinkEvent::PeerListens(SocketAddr::new(
                            self.config.remote.ip(),
                            addr.port(),
                        ))
                    } else {
                        LinkEvent::PeerListens(addr)
                    }
                }),
            LinkMessage::Heartbeat { seq, .. } => {
                let missed = seq.saturating_sub(self.last_seq.saturating_add(1));
                self.last_seq = self.last_seq.max(seq);
                self.heartbeats_received = self.heartbeats_received.saturating_add(1);
                self.heartbeats_missed = self.heartbeats_missed.saturating_add(missed);
                Some(LinkEvent::Heartbeat { missed })
            }
            LinkMessage::PeerListRequest => Some(LinkEvent::PeerListRequested),
            LinkMessage::PeerList { peers } => Some(LinkEvent::PeerList(peers)),
            LinkMessage::Gossip { frame } => Some(LinkEvent::Gossip(frame)),
            LinkMessage::Bundle { frame } => Some(LinkEvent::Bundle(frame)),
            LinkMessage::CertificateUpdate { certificate } => {
                Some(LinkEvent::CertificateUpdate(certificate))
            }
            LinkMessage::TeeChallenge { nonce } => {
                Some(match self.admit(now, LinkRequest::TeeChallenge) {
                    Ok(()) => LinkEvent::Challenged { nonce },
                    Err(refused) => LinkEvent::OverBudget {
                        request: LinkRequest::TeeChallenge,
                        refused,
                    },
                })
            }
            LinkMessage::TeeResponse {
                nonce,
                evidence_type,
                evidence,
                binary_sha256,
            } => Some(LinkEvent::TeeResponse {
                sent: self.challenge.take().map(|(sent, _)| sent),
                nonce,
                evidence_type,
                evidence,
                binary_sha256,
            }),
        };
        self.events.extend(event);
    }

    /// Whether to answer `request` at `now` (within the link's budget); `Err` holds the link's
    /// refusals so far, this one counted.
    pub fn admit(&mut self, now: Timestamp, request: LinkRequest) -> Result<(), u64> {
        let now = self.advance(now);
        if self.budget.admit(request, now) {
            Ok(())
        } else {
            Err(self.budget.refused())
        }
    }

    /// Runs the timers due at `now`, in this order: the challenge deadline, the heartbeat
    /// (checks first, then the dead-peer rule, then the heartbeat itself), the re-attestation,
    /// the peer-list request.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.closed.is_some() {
            return;
        }
        let now = self.advance(now);
        if self.challenge.as_ref().is_some_and(|(_, due)| *due <= now) {
            self.challenge = None;
            self.events.push_back(LinkEvent::ChallengeUnanswered);
        }
        let heartbeat_due = self.next_heartbeat <= now;
        if heartbeat_due {
            self.events.push_back(LinkEvent::CheckPeer);
        }
        if self.dead_deadline() <= now {
            self.close(CloseReason::PeerSilent);
            return;
        }
        if heartbeat_due {
            self.next_heartbeat =
                next_tick(self.next_heartbeat, self.config.heartbeat_interval, now);
            self.seq = self.seq.saturating_add(1);
            self.transmits.push_back(LinkMessage::Heartbeat {
                seq: self.seq,
                sent_at: now,
            });
        }
        if self.next_reattest <= now {
            self.next_reattest = next_tick(self.next_reattest, self.config.reattest_interval, now);
            // One challenge outstanding at a time; the tick is skipped while one is.
            if self.challenge.is_none() {
                self.events.push_back(LinkEvent::ChallengeDue);
            }
        }
        if self.next_exchange <= now {
            self.next_exchange =
                next_tick(self.next_exchange, self.config.peer_exchange_interval, now);
            self.transmits.push_back(LinkMessage::PeerListRequest);
        }
    }

    /// Sends a challenge with the `nonce` the runtime drew after [`LinkEvent::ChallengeDue`];
    /// it counts as unanswered after [`LinkConfig::challenge_timeout`]. Ignored while another
    /// challenge is outstanding.
    pub fn send_challenge(&mut self, now: Timestamp, nonce: Vec<u8>) {
        let now = self.advance(now);
        if self.closed.is_some() || self.challenge.is_some() {
            return;
        }
        // Unanswered once strictly more than the timeout has passed; times are milliseconds.
        let due = now
            .saturating_add(self.config.challenge_timeout)
            .saturating_add(Duration::from_millis(1));
        self.challenge = Some((nonce.clone(), due));
        self.transmits
            .push_back(LinkMessage::TeeChallenge { nonce });
    }

    /// Queues a message from the runtime (an answer, a gossip or DTN frame, a certificate
    /// update). Ignored once the link is closed.
    pub fn send(&mut self, message: LinkMessage) {
        if self.closed.is_none() {
            self.transmits.push_back(message);
        }
    }

    /// The next message to write.
    pub fn poll_transmit(&mut self) -> Option<LinkMessage> {
        self.transmits.pop_front()
    }

    /// The next thing the runtime must do.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`LinkMachine::handle_timeout`] must next run; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.closed.is_some() {
            return None;
        }
        let mut due = self
            .next_heartbeat
            .min(self.next_exchange)
            .min(self.next_reattest)
            .min(self.dead_deadline());
        if let Some((_, challenge_due)) = &self.challenge {
            due = due.min(*challenge_due);
        }
        Some(due)
    }

    /// Why the link closed, once it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Heartbeats received so far.
    pub fn heartbeats_received(&self) -> u64 {
        self.heartbeats_received
    }

    /// Heartbeats the peer skipped (gaps in its sequence numbers) so far.
    pub fn heartbeats_missed(&self) -> u64 {
        self.heartbeats_missed
    }

    /// Requests refused over the link's budget so far.
    pub fn refused(&self) -> u64 {
        self.budget.refused()
    }

    /// The instant the peer counts as dead: strictly more than `dead_after` of silence.
    fn dead_deadline(&self) -> Timestamp {
        self.last_frame
            .saturating_add(self.config.dead_after)
            .saturating_add(Duration::from_millis(1))
    }

    fn close(&mut self, reason: CloseReason) {
        self.closed = Some(reason);
        self.transmits.clear();
        self.challenge = None;
        self.events.push_back(LinkEvent::Closed(reason));
    }
}

/// The tick after `previous`: one interval on, or one interval after `now` when the link fell
/// behind (a stalled write), so missed ticks are skipped rather than sent in a burst.
fn next_tick(previous: Timestamp, interval: Duration, now: Timestamp) -> Timestamp {
    let next = previous.saturating_add(interval);
    if next <= now {
        now.saturating_add(interval)
    } else {
        next
    }
}

#[cfg(test)]
mod tests;
