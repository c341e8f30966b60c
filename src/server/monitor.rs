//! Background sampling for health and metrics, once a second: delivery
//! progress (the stall rule), the dead letters in the store (every 5 s, so
//! `pikachu dlq replay/purge` from another process shows), and the binlog
//! retention headroom (server settings and file list every 5 minutes, or
//! at once when the needed file changes; see [`crate::metrics::retention`]),
//! with a WARN in the log, at most every 10 minutes, while it is under an
//! hour.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Health;
use crate::config::{Config, DatabaseConfig};
use crate::metrics::retention::{self, FirstEventCache, ServerBinlogs};
use crate::metrics::{unix_now, Headroom};

const TICK: Duration = Duration::from_secs(1);
const DEAD_LETTER_EVERY: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(300);
const RETENTION_RETRY: Duration = Duration::from_secs(30);
const WARN_BELOW_SECS: f64 = 3600.0;
const WARN_EVERY: Duration = Duration::from_secs(600);

/// Starts the monitor; it stops at `cancel`.
pub fn spawn(
    health: Arc<Health>,
    config: &Config,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let m = Monitor {
        health,
        db: config.database.clone(),
        state_dir: config.state_dir.clone(),
        binlogs: None,
        next_time: None,
        needed: None,
        refreshed: None,
        refresh_failed: false,
        cache: FirstEventCache::default(),
        warned: None,
        dead_letters_at: None,
    };
    tokio::spawn(m.run(cancel))
}

struct Monitor {
    health: Arc<Health>,
    db: DatabaseConfig,
    state_dir: PathBuf,
    binlogs: Option<ServerBinlogs>,
    /// First-event time of the file after the needed one.
    next_time: Option<i64>,
    needed: Option<String>,
    refreshed: Option<Instant>,
    refresh_failed: bool,
    cache: FirstEventCache,
    warned: Option<Instant>,
    dead_letters_at: Option<Instant>,
}

impl Monitor {
    async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.health.sample_delivery();
            if self
                .dead_letters_at
                .is_none_or(|t| t.elapsed() >= DEAD_LETTER_EVERY)
            {
                self.dead_letters_at = Some(Instant::now());
                self.count_dead_letters().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.retention() => {}
            }
        }
    }

    async fn count_dead_letters(&self) {
        let dir = self.state_dir.clone();
        let n =
            tokio::task::spawn_blocking(move || match crate::store::Store::open_read_only(&dir) {
                Ok(Some(s)) => s.count_dead_letters().ok(),
                Ok(None) => Some(0),
                Err(_) => None,
            })
            .await
            .ok()
            .flatten();
        if let Some(n) = n {
            self.health
                .dead_letters_stored
                .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    /// The binlog file pikachu must resume from: the checkpoint's, else
    /// the settled position's.
    fn needed_file(&self) -> Option<String> {
        let settled = self.health.settled();
        let (saved, position) = (settled.saved.map(|(c, _)| c), settled.position);
        saved.or(position).map(|c| c.file.to_string())
    }

    async fn retention(&mut self) {
        let needed = self.needed_file();
        if self.retention_due(&needed) {
            self.refresh_retention(needed).await;
        }
        let h = match (&self.needed, &self.binlogs) {
            (Some(file), Some(b)) => retention::headroom(file, b, self.next_time, unix_now()),
            (_, Some(b)) if b.retention.is_none() => Headroom::Unlimited,
            _ => Headroom::Unknown,
        };
        if let Headroom::Seconds { file, secs } = &h {
            if *secs < WARN_BELOW_SECS && self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                self.warned = Some(Instant::now());
                self.warn_headroom(file, *secs);
            }
        }
        self.health.metrics.set_headroom(h);
    }

    /// Whether the server's binlogs are read again now: never read yet, the
    /// period is over (shorter after a failure), or the file needed moved.
    fn retention_due(&self, needed: &Option<String>) -> bool {
        match self.refreshed {
            None => true,
            Some(t) => {
                let every = if self.refresh_failed {
                    RETENTION_RETRY
                } else {
                    RETENTION_EVERY
                };
                t.elapsed() >= every || *needed != self.needed
            }
        }
    }

    /// Reads the server's binlogs and retention, and the first event time
    /// of the file after the one still needed.
    async fn refresh_retention(&mut self, needed: Option<String>) {
        self.refreshed = Some(Instant::now());
        self.needed = needed;
        self.refresh_failed = false;
        let b = match retention::server_binlogs(&self.db).await {
            Ok(b) => b,
            Err(e) => {
                self.refresh_failed = true;
                tracing::debug!(error = %e, "cannot read the binlog retention settings");
                return;
            }
        };
        self.health.metrics.set_retention(b.retention);
        self.next_time = None;
        let next = self
            .needed
            .as_deref()
            .and_then(|n| retention::next_file(n, &b.files));
        if let Some(next) = next {
            match self.cache.get(&self.db, next).await {
                Ok(t) => self.next_time = Some(t),
                Err(e) => {
                    self.refresh_failed = true;
                    tracing::debug!(error = %e, file = next, "cannot read the first event time of a binlog file");
                }
            }
        }
        self.binlogs = Some(b);
    }

    /// The WARN for binlog `file`, still needed, with `secs` of headroom.
    fn warn_headroom(&self, file: &str, secs: f64) {
        let retention = self
            .binlogs
            .as_ref()
            .and_then(|b| b.retention)
            .map(crate::telemetry::human_duration)
            .unwrap_or_default();
        let gone = self
            .binlogs
            .as_ref()
            .is_some_and(|b| !b.files.iter().any(|f| f == file));
        if gone {
            tracing::warn!(file = %file, "binlog {file}, which pikachu needs to resume from, is no longer on the server (purged): a restart cannot resume there");
        } else if secs <= 0.0 {
            tracing::warn!(file = %file, headroom_seconds = secs as i64, "the server may purge binlog {file} at its next rotation, and pikachu still needs it (binlog retention {retention}): if pikachu stops now, the changes from there on are lost; raise binlog_expire_logs_seconds");
        } else {
            tracing::warn!(file = %file, headroom_seconds = secs as i64, "binlog {file}, which pikachu still needs, may be purged by the server in {} (binlog retention {retention}): if pikachu is stopped or behind for longer, those changes are lost; raise binlog_expire_logs_seconds", crate::telemetry::human_duration(secs));
        }
    }
}
