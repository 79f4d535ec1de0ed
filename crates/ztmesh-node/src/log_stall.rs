//! The `log_stalled` alarm: a liveness judge of the witnessed membership log, sans-IO (time
//! is an argument, in Unix seconds), driven by [`log_watch`](crate::log_watch).
//!
//! Every other log check runs when the witnessed log shows the node something. A log that
//! shows nothing — a CA restarted without its log policy, witnesses gone, a CA serving one old
//! cosigned checkpoint forever — hides whatever it issues meanwhile: a certificate is only
//! judged once the log moves past it. [`StallJudge`] raises the alarm in two cases:
//!
//! - **checkpoints:** no checkpoint meeting the pinned quorum has arrived for `log_stall_secs`
//!   (node.toml). What counts as arriving is decided by the caller: a checkpoint the CA served
//!   that the monitor accepted (the same head again counts: a quiet log is not a stalled one),
//!   or one from anywhere that moved the accepted head. A gossiped copy of the head already
//!   held does not count: members relay it for an hour, whatever the CA does now.
//! - **certificates:** a certificate this node was shown (a peer's on a link, or its own after
//!   enrollment and each rotation) whose issuance the verified log has neither shown nor moved
//!   past by its `notBefore` + [`LOG_GRACE`] + `log_stall_secs`. This catches a CA that keeps
//!   serving a genuinely cosigned but frozen checkpoint while it issues outside the log.
//!
//! It is a liveness alarm, not evidence of a fork, so it clears by itself once the log is live
//! again: a quorum checkpoint has arrived within `log_stall_secs` *and*, when certificates
//! raised or joined it, the verified log has moved past the moment the last of them was
//! found (every certificate overdue then is due now, and judged as `unlogged_certificate` if
//! the log does not show it). Clearing never forgets: the alarm count only grows and every
//! alarm, cleared or acknowledged, goes to `state.db`'s `log_stall_history`. The operator may
//! also acknowledge a raised alarm (compare-and-swap on the count, like the split-view alarm);
//! the checkpoint clock then starts again at the acknowledgement, so a log still stalled
//! raises the next alarm `log_stall_secs` later, and a certificate already reported is not
//! reported again until the node restarts.
//!
//! What it must never do: clear an alarm while no quorum checkpoint has arrived within the
//! configured time, or lower the count.

use std::time::Duration;

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::Serial;

use crate::log_audit::LOG_GRACE;
use crate::store::{SavedLogStall, SavedStallAlarm};

/// `log_stall_secs` when node.toml does not set it: long enough for a CA restart or a witness
/// outage to pass unnoticed, short enough that a log frozen on purpose is seen the same hour.
pub const DEFAULT_STALL_SECS: u64 = 900;

/// Least `log_stall_secs`: two of the log-watch loop's fetches of the CA's checkpoint.
pub const MIN_STALL_SECS: u64 = 20;

/// Most `log_stall_secs` (a week).
pub const MAX_STALL_SECS: u64 = 7 * 86_400;

/// Longest the saved time of the last quorum checkpoint may lag behind the real one, so that
/// a healthy node does not write `state.db` on every fetch. After a restart the node may
/// therefore raise the alarm up to this much early (and then clear it at the next checkpoint).
const SAVE_GRANULARITY_SECS: u64 = 60;

/// What the caller must report (log line) and save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StallEvent {
    /// Alarm number `alarm` was raised.
    Raised {
        /// The alarm count, this alarm included.
        alarm: u64,
        /// Why, in words.
        reason: String,
    },
    /// The log is live again: alarm number `alarm` cleared by itself. Goes to the history.
    Recovered {
        /// Its count.
        alarm: u64,
        /// What it was.
        raised: SavedStallAlarm,
    },
}

/// Why an acknowledgement changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StallAckRefused {
    /// No `log_stalled` alarm is raised.
    NoAlarm,
    /// The raised alarm is number `alarms`, not the one acknowledged.
    Changed {
        /// The count.
        alarms: u64,
    },
}

/// The judge; see the [module documentation](self).
#[derive(Debug, Clone)]
pub(crate) struct StallJudge {
    stall_after: u64,
    /// When the last checkpoint meeting the quorum arrived (or watching began).
    last_quorum_at: u64,
    /// `last_quorum_at` as last handed out to be saved.
    saved_quorum_at: u64,
    /// The latest acknowledgement: the checkpoint clock does not run from before it.
    acknowledged_at: Option<u64>,
    alarms: u64,
    raised: Option<SavedStallAlarm>,
    /// Certificates found uncovered since start.
    uncovered: u64,
}

impl StallJudge {
    /// A judge carrying on from `saved` at `now` (a fresh one when nothing was saved: the
    /// clock starts now, so a new node gives the log its full time).
    pub(crate) fn resume(stall_after: Duration, saved: &SavedLogStall, now: u64) -> Self {
        let last_quorum_at = saved.last_quorum_at.unwrap_or(now);
        StallJudge {
            stall_after: stall_after.as_secs().max(1),
            last_quorum_at,
            saved_quorum_at: last_quorum_at,
            acknowledged_at: saved.acknowledged_at,
            // A raised alarm counts at least once, whatever the saved count says.
            alarms: saved.alarms.max(u64::from(saved.raised.is_some())),
            raised: saved.raised.clone(),
            uncovered: 0,
        }
    }

    /// The configured time, in seconds.
    pub(crate) fn stall_after_secs(&self) -> u64 {
        self.stall_after
    }

    /// A checkpoint meeting the quorum arrived at `now` (see the module docs for which count).
    pub(crate) fn handle_quorum_checkpoint(&mut self, now: u64) {
        self.last_quorum_at = self.last_quorum_at.max(now);
        let granularity = SAVE_GRANULARITY_SECS.min(self.stall_after / 4).max(1);
        if self.last_quorum_at >= self.saved_quorum_at.saturating_add(granularity) {
            self.saved_quorum_at = self.last_quorum_at;
        }
    }

    /// When a certificate valid from `not_before` must be covered by the verified log.
    pub(crate) fn certificate_deadline(&self, not_before: Timestamp) -> u64 {
        not_before
            .as_unix_secs()
            .saturating_add(LOG_GRACE.as_secs())
            .saturating_add(self.stall_after)
    }

    /// A certificate past its [deadline](Self::certificate_deadline) whose issuance the
    /// verified log neither shows nor has moved past, found at `now`. `own` says it is this
    /// node's. Raises the alarm, or keeps a raised one from clearing before the log moves past
    /// `now`.
    pub(crate) fn handle_uncovered_certificate(
        &mut self,
        node_id: NodeId,
        serial: &Serial,
        not_before: Timestamp,
        own: bool,
        now: u64,
    ) -> Option<StallEvent> {
        self.uncovered += 1;
        if let Some(raised) = &mut self.raised {
            raised.await_log_at = Some(raised.await_log_at.unwrap_or(now).max(now));
            return None;
        }
        let whose = if own {
            format!("this node's own certificate {serial} (enrollment or rotation)")
        } else {
            format!("the certificate {serial} of peer {node_id}")
        };
        let reason = format!(
            "the witnessed membership log has not covered the issuance of {whose}, valid since {}, within {} s of grace and log_stall_secs = {}",
            crate::timefmt::rfc3339(not_before),
            LOG_GRACE.as_secs(),
            self.stall_after
        );
        Some(self.raise(now, reason, Some(now)))
    }

    /// Judges the checkpoint clock at `now`, with the verified log's newest entry committed at
    /// `log_time`: raises the alarm, or clears it once the log is live again.
    pub(crate) fn poll(&mut self, now: u64, log_time: Option<u64>) -> Option<StallEvent> {
        let clock = self
            .last_quorum_at
            .max(self.acknowledged_at.unwrap_or_default());
        let stalled = now >= clock.saturating_add(self.stall_after);
        match &self.raised {
            Some(raised) => {
                let covered = raised
                    .await_log_at
                    .is_none_or(|due| log_time.is_some_and(|at| at >= due));
                if stalled || !covered {
                    return None;
                }
                let raised = self.raised.take()?;
                self.saved_quorum_at = self.last_quorum_at;
                Some(StallEvent::Recovered {
                    alarm: self.alarms,
                    raised,
                })
            }
            None if stalled => {
                let reason = if self
                    .acknowledged_at
                    .is_some_and(|at| at > self.last_quorum_at)
                {
                    format!(
                        "no membership-log checkpoint meeting the witness quorum has arrived since {} (the last one), nor in the log_stall_secs = {} since the last alarm was acknowledged",
                        crate::timefmt::rfc3339(Timestamp::from_unix_secs(self.last_quorum_at)),
                        self.stall_after
                    )
                } else {
                    format!(
                        "no membership-log checkpoint meeting the witness quorum has arrived for {} s (since {}; log_stall_secs = {})",
                        now.saturating_sub(self.last_quorum_at),
                        crate::timefmt::rfc3339(Timestamp::from_unix_secs(self.last_quorum_at)),
                        self.stall_after
                    )
                };
                Some(self.raise(now, reason, None))
            }
            None => None,
        }
    }

    fn raise(&mut self, now: u64, reason: String, await_log_at: Option<u64>) -> StallEvent {
        self.alarms += 1;
        self.saved_quorum_at = self.last_quorum_at;
        self.raised = Some(SavedStallAlarm {
            raised_at: now,
            reason: reason.clone(),
            await_log_at,
        });
        StallEvent::Raised {
            alarm: self.alarms,
            reason,
        }
    }

    /// The operator acknowledges alarm number `expected` at `now`: it is cleared (the caller
    /// keeps it in the history) and the checkpoint clock starts again.
    pub(crate) fn acknowledge(
        &mut self,
        expected: u64,
        now: u64,
    ) -> Result<SavedStallAlarm, StallAckRefused> {
        if self.raised.is_none() {
            return Err(StallAckRefused::NoAlarm);
        }
        if expected != self.alarms {
            return Err(StallAckRefused::Changed {
                alarms: self.alarms,
            });
        }
        self.acknowledged_at = Some(now);
        self.saved_quorum_at = self.last_quorum_at;
        self.raised.take().ok_or(StallAckRefused::NoAlarm)
    }

    /// Puts back a state the caller could not save the end of (see [`Self::acknowledge`]).
    pub(crate) fn restore(&mut self, saved: &SavedLogStall) {
        self.acknowledged_at = saved.acknowledged_at;
        self.alarms = self.alarms.max(saved.alarms);
        self.raised = saved.raised.clone();
    }

    /// What to save (compare with the last saved to know whether to).
    pub(crate) fn saved(&self) -> SavedLogStall {
        SavedLogStall {
            last_quorum_at: Some(self.saved_quorum_at),
            acknowledged_at: self.acknowledged_at,
            alarms: self.alarms,
            raised: self.raised.clone(),
        }
    }

    /// The raised alarm.
    pub(crate) fn raised(&self) -> Option<&SavedStallAlarm> {
        self.raised.as_ref()
    }

    /// Alarms raised over the node's life.
    pub(crate) fn alarms(&self) -> u64 {
        self.alarms
    }

    /// When the last quorum checkpoint arrived (or watching began).
    pub(crate) fn last_quorum_at(&self) -> u64 {
        self.last_quorum_at
    }

    /// Certificates found uncovered since start.
    pub(crate) fn uncovered(&self) -> u64 {
        self.uncovered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;
    const STALL: u64 = 30;

    fn judge() -> StallJudge {
        StallJudge::resume(Duration::from_secs(STALL), &SavedLogStall::default(), T0)
    }

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn serial(n: u8) -> Serial {
        Serial::from_bytes(&[0x40, n, 7])
    }

    fn raised_alarm(event: Option<StallEvent>) -> (u64, String) {
        match event {
            Some(StallEvent::Raised { alarm, reason }) => (alarm, reason),
            other => panic!("expected an alarm, got {other:?}"),
        }
    }

    #[test]
    fn no_quorum_checkpoint_within_the_configured_time_raises_log_stalled() {
        let mut judge = judge();
        assert_eq!(
            judge.poll(T0 + STALL - 1, None),
            None,
            "the clock starts at start"
        );
        let (alarm, reason) = raised_alarm(judge.poll(T0 + STALL, None));
        assert_eq!(alarm, 1);
        assert!(reason.contains("no membership-log checkpoint meeting the witness quorum"));
        assert!(
            reason.contains(&format!("log_stall_secs = {STALL}")),
            "{reason}"
        );
        // Raised once, not on every wake-up.
        assert_eq!(judge.poll(T0 + 10 * STALL, None), None);
        assert_eq!(judge.alarms(), 1);
        assert_eq!(judge.raised().unwrap().raised_at, T0 + STALL);
    }

    #[test]
    fn quorum_checkpoints_arriving_in_time_raise_nothing() {
        let mut judge = judge();
        for step in 1..=100 {
            let now = T0 + step * (STALL - 1);
            judge.handle_quorum_checkpoint(now);
            assert_eq!(
                judge.poll(now + STALL - 1, Some(T0)),
                None,
                "at step {step}"
            );
        }
        assert_eq!(judge.alarms(), 0);
        // A quiet log (no entry for days) is not a stalled one: only checkpoints count.
        assert!(judge.raised().is_none());
    }

    #[test]
    fn a_checkpoint_stall_clears_by_itself_when_quorum_checkpoints_return_and_is_counted_again() {
        let mut judge = judge();
        raised_alarm(judge.poll(T0 + STALL, None));
        judge.handle_quorum_checkpoint(T0 + STALL + 5);
        match judge.poll(T0 + STALL + 5, None) {
            Some(StallEvent::Recovered { alarm, raised }) => {
                assert_eq!(alarm, 1);
                assert_eq!(raised.raised_at, T0 + STALL);
                assert_eq!(raised.await_log_at, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(judge.raised().is_none());
        // The next stall is alarm 2: the count never goes down.
        let (alarm, _) = raised_alarm(judge.poll(T0 + 2 * STALL + 5, None));
        assert_eq!(alarm, 2);
    }

    #[test]
    fn a_certificate_past_its_grace_with_a_frozen_log_raises_log_stalled() {
        let mut judge = judge();
        let not_before = Timestamp::from_unix_secs(T0);
        let deadline = judge.certificate_deadline(not_before);
        assert_eq!(deadline, T0 + LOG_GRACE.as_secs() + STALL);
        // The CA keeps serving its old cosigned checkpoint: checkpoints arrive on time.
        judge.handle_quorum_checkpoint(deadline);
        let (alarm, reason) = raised_alarm(judge.handle_uncovered_certificate(
            node(7),
            &serial(7),
            not_before,
            false,
            deadline,
        ));
        assert_eq!(alarm, 1);
        assert!(reason.contains(&serial(7).to_string()), "{reason}");
        assert!(reason.contains(&node(7).to_string()), "{reason}");
        // Checkpoints keep arriving, but the log has not moved past the certificate: raised.
        for later in 1..10 {
            judge.handle_quorum_checkpoint(deadline + later);
            assert_eq!(judge.poll(deadline + later, Some(T0 - 500)), None);
        }
        assert!(judge.raised().is_some());
        // Another one while raised: counted as uncovered, not as another alarm.
        assert_eq!(
            judge.handle_uncovered_certificate(
                node(8),
                &serial(8),
                not_before,
                false,
                deadline + 20
            ),
            None
        );
        assert_eq!((judge.alarms(), judge.uncovered()), (1, 2));
        assert_eq!(judge.raised().unwrap().await_log_at, Some(deadline + 20));
        // The log moves past the first, not the second: still raised.
        assert_eq!(judge.poll(deadline + 21, Some(deadline + 10)), None);
        // Past both (they are judged by the log now): cleared.
        assert!(matches!(
            judge.poll(deadline + 22, Some(deadline + 20)),
            Some(StallEvent::Recovered { alarm: 1, .. })
        ));
    }

    #[test]
    fn this_nodes_own_rotation_uncovered_raises_it_too() {
        let mut judge = judge();
        let rotated = Timestamp::from_unix_secs(T0 + 100);
        let deadline = judge.certificate_deadline(rotated);
        judge.handle_quorum_checkpoint(deadline);
        let (_, reason) = raised_alarm(judge.handle_uncovered_certificate(
            node(1),
            &serial(1),
            rotated,
            true,
            deadline,
        ));
        assert!(reason.contains("this node's own certificate"), "{reason}");
        assert!(reason.contains(&serial(1).to_string()), "{reason}");
    }

    #[test]
    fn a_restart_keeps_the_clock_the_alarm_and_the_count() {
        let mut judge = judge();
        // Saved coarsely (a quarter of the stall time here): not on every checkpoint.
        judge.handle_quorum_checkpoint(T0 + 5);
        assert_eq!(judge.saved().last_quorum_at, Some(T0));
        judge.handle_quorum_checkpoint(T0 + 7);
        let saved = judge.saved();
        assert_eq!(saved.last_quorum_at, Some(T0 + 7));
        // Restarted long after: the clock did not start again at the restart.
        let mut restarted = StallJudge::resume(Duration::from_secs(STALL), &saved, T0 + 1000);
        let (alarm, _) = raised_alarm(restarted.poll(T0 + 1000, None));
        assert_eq!(alarm, 1);
        // Raised alarms outlive a restart, with their count, and do not count twice.
        let saved = restarted.saved();
        let mut again = StallJudge::resume(Duration::from_secs(STALL), &saved, T0 + 1001);
        assert_eq!(again.poll(T0 + 1001, None), None);
        assert_eq!(again.alarms(), 1);
        assert_eq!(again.raised(), saved.raised.as_ref());
        // A certificate-raised alarm still waits for the log after a restart.
        let mut judge = judge_with_certificate_alarm();
        let saved = judge.saved();
        let mut again = StallJudge::resume(Duration::from_secs(STALL), &saved, T0 + 500);
        again.handle_quorum_checkpoint(T0 + 500);
        assert_eq!(again.poll(T0 + 500, Some(T0)), None);
        assert!(again.raised().is_some());
        judge.handle_quorum_checkpoint(T0 + 500);
        assert!(judge.poll(T0 + 500, Some(T0 + 400)).is_some());
    }

    fn judge_with_certificate_alarm() -> StallJudge {
        let mut judge = judge();
        let at = T0 + LOG_GRACE.as_secs() + STALL;
        judge.handle_quorum_checkpoint(at);
        raised_alarm(judge.handle_uncovered_certificate(
            node(2),
            &serial(2),
            Timestamp::from_unix_secs(T0),
            false,
            at,
        ));
        judge
    }

    #[test]
    fn an_acknowledgement_clears_by_count_and_restarts_the_clock() {
        let mut judge = judge();
        assert_eq!(judge.acknowledge(0, T0), Err(StallAckRefused::NoAlarm));
        raised_alarm(judge.poll(T0 + STALL, None));
        assert_eq!(
            judge.acknowledge(2, T0 + STALL + 1),
            Err(StallAckRefused::Changed { alarms: 1 })
        );
        let acknowledged = judge.acknowledge(1, T0 + STALL + 1).unwrap();
        assert_eq!(acknowledged.raised_at, T0 + STALL);
        assert!(judge.raised().is_none());
        // Still stalled: the next alarm comes a full stall time after the acknowledgement.
        assert_eq!(judge.poll(T0 + 2 * STALL, None), None);
        let (alarm, reason) = raised_alarm(judge.poll(T0 + 2 * STALL + 1, None));
        assert_eq!(alarm, 2);
        assert!(reason.contains("acknowledged"), "{reason}");
        // Across a restart too.
        let mut judge = self::judge();
        raised_alarm(judge.poll(T0 + STALL, None));
        judge.acknowledge(1, T0 + 100).unwrap();
        let mut restarted =
            StallJudge::resume(Duration::from_secs(STALL), &judge.saved(), T0 + 101);
        assert_eq!(restarted.poll(T0 + 100 + STALL - 1, None), None);
        assert!(restarted.poll(T0 + 100 + STALL, None).is_some());
    }
}
