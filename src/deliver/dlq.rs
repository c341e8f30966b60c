//! `pikachu dlq list|show|replay|purge`: the operator's view of the
//! dead-letter store.
//!
//! `replay` re-sends dead letters oldest first (the order they were
//! recorded, which is binlog order for each row) through the normal delivery
//! path: the task's current URL, headers and secret from the config, a fresh
//! `webhook-timestamp` and signature, the same `webhook-id` and body, retried
//! as configured. A dead letter that got a 2xx is deleted. The first one of a
//! task that still fails stops that task's replay (its later ones may be
//! newer changes of the same row, which must not overtake it); the other
//! tasks' dead letters go on. The report is per task.
//!
//! `list` and `show` only read the store (they never create or migrate it);
//! `replay` and `purge` write only dead letters, and may run next to
//! `pikachu run` (see `store::lock`).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use super::http::{self, AttemptError, Target};
use crate::backoff;
use crate::config::{Config, DispatcherConfig};
use crate::store::{DeadLetter, Filter, Store};

/// A `dlq` command failure: usage (exit 2) or runtime (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

/// The store for reading, if there is one.
fn open_to_read(config: &Config) -> Result<Option<Store>, DlqError> {
    Store::open_read_only(&config.state_dir).map_err(|e| DlqError::Runtime(e.to_string()))
}

/// The store for writing, if there is one.
fn open(config: &Config) -> Result<Option<Store>, DlqError> {
    Store::open_existing(&config.state_dir).map_err(|e| DlqError::Runtime(e.to_string()))
}

fn rt(e: impl std::fmt::Display) -> DlqError {
    DlqError::Runtime(e.to_string())
}

fn when(millis: i64) -> String {
    crate::event::time::rfc3339(millis.div_euclid(1000))
}

/// One line per dead letter: id, task, change id, attempts, last attempt, last error.
pub fn list(config: &Config, filter: &Filter, out: &mut dyn Write) -> Result<usize, DlqError> {
    let Some(store) = open_to_read(config)? else {
        return Ok(0);
    };
    let letters = store.dead_letters(filter).map_err(rt)?;
    if !letters.is_empty() {
        writeln!(
            out,
            "ID\tTASK\tCHANGE_ID\tATTEMPTS\tLAST_ATTEMPT\tLAST_ERROR"
        )
        .map_err(rt)?;
    }
    for d in &letters {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            d.id,
            d.task_id,
            d.change_id,
            d.attempts,
            when(d.last_attempt_at),
            d.last_error.replace(['\n', '\t'], " ")
        )
        .map_err(rt)?;
    }
    Ok(letters.len())
}

/// The full record of dead letter `id`, then its body.
pub fn show(config: &Config, id: i64, out: &mut dyn Write) -> Result<(), DlqError> {
    let letter = match open_to_read(config)? {
        Some(store) => store.dead_letter(id).map_err(rt)?,
        None => None,
    };
    let Some(d) = letter else {
        return Err(DlqError::Runtime(format!(
            "no dead letter {id} (see `pikachu dlq list`)"
        )));
    };
    let status = d.last_status.map_or("-".to_string(), |s| s.to_string());
    let text = format!(
        "id:            {}\ntask_id:       {}\nchange_id:     {}\nurl:           {}\nevents:        {}\nattempts:      {}\nlast_status:   {status}\nlast_error:    {}\nfirst_attempt: {}\nlast_attempt:  {}\nrecorded:      {}\nseq:           {}\nbody:\n",
        d.id,
        d.task_id,
        d.change_id,
        d.url,
        d.events,
        d.attempts,
        d.last_error,
        when(d.first_attempt_at),
        when(d.last_attempt_at),
        when(d.created_at),
        d.seq,
    );
    out.write_all(text.as_bytes()).map_err(rt)?;
    out.write_all(&d.body).map_err(rt)?;
    out.write_all(b"\n").map_err(rt)?;
    Ok(())
}

/// Deletes the matching dead letters. Without `--id`, `yes` is required.
pub fn purge(
    config: &Config,
    filter: &Filter,
    yes: bool,
    out: &mut dyn Write,
) -> Result<usize, DlqError> {
    let Some(mut store) = open(config)? else {
        writeln!(out, "purged 0 dead letters").map_err(rt)?;
        return Ok(0);
    };
    if filter.id.is_none() && !yes {
        let n = store.dead_letters(filter).map_err(rt)?.len();
        return Err(DlqError::Usage(format!(
            "this would delete {n} dead letter(s){}; add --yes to do it",
            filter
                .task_id
                .as_deref()
                .map(|t| format!(" of task {t}"))
                .unwrap_or_default()
        )));
    }
    let n = store.purge_dead_letters(filter).map_err(rt)?;
    writeln!(out, "purged {n} dead letter(s)").map_err(rt)?;
    Ok(n)
}

/// What a replay did (in all, or for one task).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Delivered with a 2xx, and removed.
    pub delivered: usize,
    /// Still failing after the retries (at most 1 per task: that task's
    /// replay stops there).
    pub failed: usize,
    /// Not tried: after their task's failure, or of a task no longer in the config.
    pub left: usize,
}

/// What a replay did: in all, and per task (in the order first met).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Delivered with a 2xx, and removed.
    pub delivered: usize,
    /// Still failing after the retries (at most 1 per task).
    pub failed: usize,
    /// Not tried: after their task's failure, or of a task no longer in the config.
    pub left: usize,
    /// The same counts per task id.
    pub tasks: Vec<(String, ReplayCounts)>,
}

impl ReplayReport {
    fn task(&mut self, task_id: &str) -> &mut ReplayCounts {
        let i = match self.tasks.iter().position(|(t, _)| t == task_id) {
            Some(i) => i,
            None => {
                self.tasks
                    .push((task_id.to_string(), ReplayCounts::default()));
                self.tasks.len() - 1
            }
        };
        &mut self.tasks[i].1
    }

    fn count(&mut self, task_id: &str, outcome: Outcome) {
        let t = self.task(task_id);
        match outcome {
            Outcome::Delivered => t.delivered += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::Left => t.left += 1,
        }
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Left => self.left += 1,
        }
    }

    /// True if its task's replay has stopped on a failure.
    fn stopped(&self, task_id: &str) -> bool {
        self.tasks.iter().any(|(t, c)| t == task_id && c.failed > 0)
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    Failed,
    Left,
}

/// Re-sends the matching dead letters; see the module docs.
pub async fn replay(
    config: &Config,
    filter: &Filter,
    out: &mut (dyn Write + Send),
) -> Result<ReplayReport, DlqError> {
    let Some(store) = open(config)? else {
        writeln!(out, "replayed 0: no dead letters").map_err(rt)?;
        return Ok(ReplayReport::default());
    };
    let letters = store.dead_letters(filter).map_err(rt)?;
    let client =
        http::http_client(&config.dispatcher).map_err(|e| DlqError::Runtime(e.to_string()))?;
    let store = std::sync::Arc::new(std::sync::Mutex::new(store));
    let mut report = ReplayReport::default();
    for d in letters {
        if report.stopped(&d.task_id) {
            report.count(&d.task_id, Outcome::Left);
            continue;
        }
        let Some(task) = config.tasks.iter().find(|t| t.task_id == d.task_id) else {
            writeln!(
                out,
                "skipped {}: task {} is not in the config",
                d.id, d.task_id
            )
            .map_err(rt)?;
            report.count(&d.task_id, Outcome::Left);
            continue;
        };
        let target = Target::new(task).map_err(|e| DlqError::Usage(e.to_string()))?;
        match send_with_retries(&client, &config.dispatcher, &target, &d).await {
            Ok(attempts) => {
                remove(&store, d.id).await?;
                report.count(&d.task_id, Outcome::Delivered);
                writeln!(
                    out,
                    "delivered {} (task {}, change {}, {} attempt(s)); removed",
                    d.id, d.task_id, d.change_id, attempts
                )
                .map_err(rt)?;
            }
            Err(e) => {
                report.count(&d.task_id, Outcome::Failed);
                writeln!(
                    out,
                    "failed {} (task {}, change {}): {}; skipping task {}'s later dead letters (they may be newer changes of the same row)",
                    d.id, d.task_id, d.change_id, e.message, d.task_id
                )
                .map_err(rt)?;
            }
        }
    }
    for (task, c) in &report.tasks {
        writeln!(
            out,
            "task {task}: {} delivered, {} failed, {} left",
            c.delivered, c.failed, c.left
        )
        .map_err(rt)?;
    }
    writeln!(
        out,
        "replayed: {} delivered, {} failed, {} left",
        report.delivered, report.failed, report.left
    )
    .map_err(rt)?;
    Ok(report)
}

/// Deletes dead letter `id` (off the async threads).
async fn remove(store: &std::sync::Arc<std::sync::Mutex<Store>>, id: i64) -> Result<(), DlqError> {
    let st = store.clone();
    tokio::task::spawn_blocking(move || {
        st.lock()
            .map_err(|_| "store lock poisoned".to_string())?
            .delete_dead_letter(id)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(rt)?
    .map_err(DlqError::Runtime)
}

async fn send_with_retries(
    client: &reqwest::Client,
    cfg: &DispatcherConfig,
    target: &Target,
    d: &DeadLetter,
) -> Result<u32, AttemptError> {
    let body = Bytes::from(d.body.clone());
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match http::attempt(client, target, &d.change_id, body.clone(), cfg.timeout).await {
            Ok(_) => return Ok(attempt),
            Err(e) if attempt > cfg.max_retries => return Err(e),
            Err(e) => {
                let delay: Duration = match e.retry_after {
                    Some(ra) => ra.min(cfg.retry_max_delay),
                    None => backoff::full_jitter(
                        cfg.retry_base_delay,
                        cfg.retry_max_delay,
                        attempt - 1,
                        backoff::rand01(),
                    ),
                };
                tracing::warn!(task_id = %target.task_id, id = %d.change_id, attempt, error = %e.message, "replay attempt failed, retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
