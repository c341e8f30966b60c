//! The settlement of transactions: which binlog transaction ends are
//! settled (all their changes, and all before them, delivered or
//! dead-lettered) given the sink's watermark, and which held XA
//! transactions they settle. The checkpoint saver saves what it says.
//!
//! The tracker publishes one value, [`Settled`] (the settled position and
//! the last saved checkpoint), on a `watch` channel: health, metrics and
//! the monitor subscribe to it ([`CommitTracker::subscribe`]) and read it
//! when they need it; nothing copies it or parses it back.

use std::collections::VecDeque;

use tokio::sync::watch;

use crate::event::Commit;

/// The published settled position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// The latest transaction end all of whose changes (and all earlier
    /// ones) are settled; `None` until the first one is.
    pub position: Option<Commit>,
    /// The last checkpoint saved (a settled position, and when it was
    /// saved, seconds since the epoch): where a restart resumes from.
    pub saved: Option<(Commit, i64)>,
}

/// Binlog positions of transactions whose changes are not all settled yet.
///
/// Every job gets a sequence number (strictly increasing in binlog order);
/// at each commit the app records the next unused number. The delivery
/// engine's watermark is the smallest unsettled number (or the next unused
/// one when all are settled), so a commit is settled (all its changes, and
/// all before it, delivered or dead-lettered) once its recorded number is
/// <= the watermark. [`CommitTracker::settled_commit`] is the position a
/// checkpoint may be saved at.
///
/// A commit may carry the store ids of held XA transactions whose outcome
/// its event group was: once it is settled they are
/// [`CommitTracker::settled_xa`], to be deleted with the next checkpoint.
#[derive(Debug)]
pub(crate) struct CommitTracker {
    /// (next seq when read, the commit, the held XA it settles), in order.
    pending: VecDeque<(u64, Commit, Vec<i64>)>,
    /// Held XA transactions settled and not deleted yet.
    settled_xa: Vec<i64>,
    /// The published [`Settled`] (its `position` is the settled commit).
    published: watch::Sender<Settled>,
}

impl Default for CommitTracker {
    fn default() -> Self {
        CommitTracker {
            pending: VecDeque::new(),
            settled_xa: Vec::new(),
            published: watch::Sender::new(Settled::default()),
        }
    }
}

impl CommitTracker {
    /// A receiver of the published [`Settled`] value.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Settled> {
        self.published.subscribe()
    }

    /// The checkpoint at `c` was saved (or found saved already) at `at`
    /// (seconds since the epoch): published as [`Settled::saved`].
    pub fn saved(&self, c: &Commit, at: i64) {
        self.published
            .send_modify(|s| s.saved = Some((c.clone(), at)));
    }

    /// Records a commit read when the next job's seq was `next_seq`.
    #[cfg(test)]
    pub fn record(&mut self, next_seq: u64, commit: Commit) {
        self.record_with_xa(next_seq, commit, Vec::new());
    }

    /// [`CommitTracker::record`], for a group that was the outcome of the
    /// held XA transactions `xa`.
    pub(crate) fn record_with_xa(&mut self, next_seq: u64, commit: Commit, xa: Vec<i64>) {
        // Commits with no job in between settle together: keep the last.
        if let Some(back) = self.pending.back_mut() {
            if back.0 == next_seq {
                back.1 = commit;
                back.2.extend(xa);
                return;
            }
        }
        self.pending.push_back((next_seq, commit, xa));
    }

    /// Moves the settled commit forward to the last one whose seq <=
    /// `watermark`; true if it moved.
    pub fn advance(&mut self, watermark: u64) -> bool {
        let mut settled = None;
        while self
            .pending
            .front()
            .is_some_and(|(s, _, _)| *s <= watermark)
        {
            if let Some((_, c, xa)) = self.pending.pop_front() {
                settled = Some(c);
                self.settled_xa.extend(xa);
            }
        }
        let moved = settled.is_some();
        if moved {
            self.published.send_modify(|s| s.position = settled);
        }
        moved
    }

    /// The latest commit all of whose changes (and all earlier ones) are settled.
    pub(crate) fn settled_commit(&self) -> Option<Commit> {
        self.published.borrow().position.clone()
    }

    /// Held XA transactions whose outcome is settled and not yet deleted.
    pub(crate) fn settled_xa(&self) -> &[i64] {
        &self.settled_xa
    }

    /// The first `n` of [`CommitTracker::settled_xa`] were deleted.
    pub(crate) fn forget_settled_xa(&mut self, n: usize) {
        self.settled_xa.drain(..n.min(self.settled_xa.len()));
    }

    /// Commits read but not settled yet.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(pos: u64) -> Commit {
        Commit {
            file: "mysql-bin.000001".into(),
            pos,
            gtid: None,
            gtid_state: None,
            timestamp: 0,
            file_created: 0,
        }
    }

    #[test]
    fn commit_settles_when_its_changes_are_settled() {
        let mut t = CommitTracker::default();
        // trx A: jobs 0, 1; trx B: no job; trx C: job 2.
        t.record(2, commit(100));
        t.record(2, commit(200));
        t.record(3, commit(300));
        assert_eq!(t.pending(), 2);
        assert!(!t.advance(0));
        assert!(!t.advance(1));
        assert!(t.settled_commit().is_none());
        assert!(t.advance(2));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(200));
        assert!(!t.advance(2));
        assert!(t.advance(3));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(300));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn xa_outcomes_settle_with_their_commit() {
        let mut t = CommitTracker::default();
        // Outcome of held XA 7 (its rows are jobs 0..2), then XA 8 rolled
        // back (no job: merged with the next commit), then XA 9.
        t.record_with_xa(2, commit(100), vec![7]);
        t.record_with_xa(3, commit(200), vec![8]);
        t.record_with_xa(3, commit(300), vec![9]);
        assert!(!t.advance(1));
        assert!(t.settled_xa().is_empty());
        assert!(t.advance(2));
        assert_eq!(t.settled_xa(), &[7]);
        assert!(t.advance(3));
        assert_eq!(t.settled_commit().map(|c| c.pos), Some(300));
        assert_eq!(t.settled_xa(), &[7, 8, 9]);
        t.forget_settled_xa(2);
        assert_eq!(t.settled_xa(), &[9]);
        t.forget_settled_xa(5);
        assert!(t.settled_xa().is_empty());
    }

    #[test]
    fn publishes_the_settled_position_and_the_saved_checkpoint() {
        let mut t = CommitTracker::default();
        let mut rx = t.subscribe();
        assert_eq!(*rx.borrow_and_update(), Settled::default());
        t.record(1, commit(100));
        assert!(!t.advance(0));
        assert!(!rx.has_changed().unwrap_or(true));
        assert!(t.advance(1));
        assert!(rx.has_changed().unwrap_or(false));
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.position.map(|c| c.pos), Some(100));
        assert!(s.saved.is_none());
        t.saved(&commit(100), 1_700_000_000);
        let s = rx.borrow_and_update().clone();
        assert_eq!(
            s.saved.map(|(c, at)| (c.pos, at)),
            Some((100, 1_700_000_000))
        );
        assert_eq!(s.position.map(|c| c.pos), Some(100));
    }
}
