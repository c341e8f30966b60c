//! What each task's lane and engine say about the task, for health and
//! metrics to read at any time (atomics, written by their owners).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// The last failed attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// When it ended (Unix ms).
    pub at_ms: i64,
    /// What went wrong (`HTTP 500`, `connection refused`, ...).
    pub message: String,
}

/// One task's figures.
#[derive(Debug, Default)]
pub struct TaskFigures {
    /// The task's id.
    pub task_id: String,
    /// Paused (`pikachu task pause`): its engine starts nothing.
    pub paused: AtomicBool,
    /// Changes in its engine, not yet settled.
    pub queued: AtomicU64,
    /// Its circuit breaker is open (or probing), set by its engine.
    pub breaker_open: AtomicBool,
    /// Its changes go to its backlog, set by its lane.
    pub spilling: AtomicBool,
    /// Its backlog is full (`backlog.max_bytes`), set by its lane.
    pub backlog_full: AtomicBool,
    /// With `backlog.when_full: block` (a full backlog holds the reader).
    pub full_blocks: AtomicBool,
    /// Changes in its backlog.
    pub backlog_changes: AtomicU64,
    /// Payload bytes in its backlog.
    pub backlog_bytes: AtomicU64,
    /// When the oldest change still waiting on disk was appended (Unix ms;
    /// 0: none).
    pub backlog_oldest_ms: AtomicI64,
    /// Changes delivered (2xx) since the start, set by its engine.
    pub delivered: AtomicU64,
    /// Its last failed attempt, set by its engine.
    pub last_error: Mutex<Option<LastError>>,
}

/// A task's state, as metrics and health name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStateName {
    /// Delivering (from memory, or from its backlog).
    Active,
    /// Paused by `pikachu task pause`: its changes go to its backlog.
    Paused,
    /// Its endpoint failed: one probe per cool-down.
    BreakerOpen,
    /// Its backlog is at `backlog.max_bytes`.
    BacklogFull,
}

impl TaskStateName {
    /// Every state, for one-hot gauges.
    pub const ALL: [TaskStateName; 4] = [
        TaskStateName::Active,
        TaskStateName::Paused,
        TaskStateName::BreakerOpen,
        TaskStateName::BacklogFull,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStateName::Active => "active",
            TaskStateName::Paused => "paused",
            TaskStateName::BreakerOpen => "breaker_open",
            TaskStateName::BacklogFull => "backlog_full",
        }
    }
}

impl TaskFigures {
    /// Figures for `task_id`, all zero.
    pub fn new(task_id: &str) -> TaskFigures {
        TaskFigures {
            task_id: task_id.to_string(),
            ..TaskFigures::default()
        }
    }

    /// The state now (paused first, then a full backlog: it is what holds
    /// the reader).
    pub fn state(&self) -> TaskStateName {
        if self.paused.load(Ordering::Relaxed) {
            TaskStateName::Paused
        } else if self.backlog_full.load(Ordering::Relaxed) {
            TaskStateName::BacklogFull
        } else if self.breaker_open.load(Ordering::Relaxed) {
            TaskStateName::BreakerOpen
        } else {
            TaskStateName::Active
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, message: &str) {
        let at_ms = crate::store::unix_millis(std::time::SystemTime::now());
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(LastError {
                at_ms,
                message: message.to_string(),
            });
        }
    }

    /// The last failed attempt.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Seconds since the oldest change waiting on disk was appended.
    pub fn backlog_oldest_seconds(&self, now_ms: i64) -> f64 {
        match self.backlog_oldest_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => ((now_ms - t).max(0) as f64) / 1000.0,
        }
    }
}
