//! Mesh events this node reports to the CA's membership log (`POST /v1/log/events`): the
//! governance decisions it applies and the tier changes its trust book makes. The CA records
//! them naming this node as the reporter, once per change (see
//! [`crate::membership_log::EventEntry`]).
//!
//! Reports go through a bounded queue to one task, so a slow or unreachable CA never blocks
//! the trust book or governance; a report the CA cannot take after a few attempts, or one that
//! finds the queue full, is dropped, counted and logged (the node's own log keeps the event).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api_types::LogEventReport;
use crate::daemon::Node;

/// Reports waiting for the CA; more are dropped.
const QUEUE: usize = 256;

/// Attempts per report before it is dropped.
const ATTEMPTS: u32 = 5;

/// First delay between attempts; doubled each time.
const RETRY_MIN: Duration = Duration::from_secs(1);

/// The queue of reports and the count of those dropped.
#[derive(Debug)]
pub(crate) struct EventReporter {
    tx: mpsc::Sender<LogEventReport>,
    rx: Mutex<Option<mpsc::Receiver<LogEventReport>>>,
    dropped: AtomicU64,
    sent: AtomicU64,
}

impl Default for EventReporter {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        EventReporter {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }
}

impl EventReporter {
    /// Queues `report` for the CA, never waiting.
    pub(crate) fn report(&self, report: LogEventReport) {
        if self.tx.try_send(report).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("membership-log event report dropped: the queue to the CA is full");
        }
    }

    /// Reports the CA took, and reports dropped.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// Keeps only characters the CA accepts in a reason, within its length bound.
pub(crate) fn clean_reason(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    while out.len() > crate::membership_log::MAX_EVENT_REASON_LEN {
        out.pop();
    }
    if out.trim().is_empty() {
        out = "unspecified".into();
    }
    out
}

/// Sends queued reports to the CA, one at a time, in order.
pub(crate) async fn report_loop(node: Arc<Node>) {
    let Some(mut rx) = node
        .log_reports
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    while let Some(report) = rx.recv().await {
        let mut delay = RETRY_MIN;
        let mut attempt = 1;
        loop {
            match node.ca().log_event(&report).await {
                Ok(_) => {
                    node.log_reports.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(error) if attempt >= ATTEMPTS => {
                    node.log_reports.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, ?report, "membership-log event report dropped after {ATTEMPTS} attempts");
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, "membership-log event report failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cleaned_to_what_the_ca_accepts() {
        assert_eq!(clean_reason("fine ≥ 90%"), "fine ≥ 90%");
        assert_eq!(clean_reason("a\nb"), "a b");
        assert_eq!(clean_reason(""), "unspecified");
        let long = "x".repeat(500);
        assert_eq!(
            clean_reason(&long).len(),
            crate::membership_log::MAX_EVENT_REASON_LEN
        );
        assert!(
            clean_reason(&"é".repeat(300)).len() <= crate::membership_log::MAX_EVENT_REASON_LEN
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let reporter = EventReporter::default();
        for _ in 0..QUEUE + 3 {
            reporter.report(LogEventReport::TierChange {
                node_id: "x".into(),
                tier: "tier 1".into(),
                reason: "r".into(),
            });
        }
        assert_eq!(reporter.counts(), (0, 3));
    }
}
