//! A bounded rolling window of a peer's latest health-check results, the raw material of the
//! Tier 1 uptime rule. It never grows past its capacity: the oldest result falls out.

use std::collections::VecDeque;

/// The last `capacity` health-check results of one peer, with a running success count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthWindow {
    results: VecDeque<bool>,
    successes: usize,
    capacity: usize,
}

impl HealthWindow {
    /// An empty window keeping at most `capacity` results (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        HealthWindow {
            results: VecDeque::with_capacity(capacity.min(1024)),
            successes: 0,
            capacity,
        }
    }

    /// Records one result, dropping the oldest when full.
    pub fn push(&mut self, ok: bool) {
        if self.results.len() == self.capacity {
            if let Some(true) = self.results.pop_front() {
                self.successes -= 1;
            }
        }
        self.results.push_back(ok);
        if ok {
            self.successes += 1;
        }
    }

    /// Results held (at most the capacity).
    pub fn total(&self) -> usize {
        self.results.len()
    }

    /// Successful results held.
    pub fn successes(&self) -> usize {
        self.successes
    }

    /// The most results kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Uptime as tenths of a percent (`successes * 1000 / total`), `None` with no results.
    pub fn uptime_permille(&self) -> Option<u64> {
        (self.total() > 0).then(|| (self.successes as u64 * 1000) / self.total() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_and_forgets_the_oldest() {
        let mut window = HealthWindow::new(100);
        for _ in 0..10 {
            window.push(false);
        }
        for _ in 0..500 {
            window.push(true);
        }
        assert_eq!(window.total(), 100);
        assert_eq!(window.successes(), 100);
        assert_eq!(window.uptime_permille(), Some(1000));
        window.push(false);
        assert_eq!((window.total(), window.successes()), (100, 99));
    }
}
