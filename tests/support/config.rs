//! Library-level configs for tests that drive parts directly (the delivery
//! engine): one builder instead of a copy per test file. Tests change the
//! fields they care about with struct update syntax.

use std::time::Duration;

use pikachu::config::{DispatcherConfig, OnFailure, TaskConfig};

/// A dispatcher with `workers` workers and room for `queue` jobs, quick
/// retries (10 ms base, 50 ms cap, 3 retries) and a 5 s timeout.
pub fn dispatcher(workers: usize, queue: usize) -> DispatcherConfig {
    DispatcherConfig {
        worker_count: workers,
        queue_size: queue,
        timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_base_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(50),
    }
}

/// A task `id` of table `t` posting to `url`: unsigned, no extra headers,
/// not batched, dead letters on failure.
pub fn task(id: &str, url: &str) -> TaskConfig {
    TaskConfig {
        task_id: id.into(),
        name: id.into(),
        database: None,
        table_name: "t".into(),
        events: vec![],
        callback_url: url.into(),
        secret: None,
        headers: vec![],
        batch: None,
        on_failure: OnFailure::DeadLetter,
        snapshot: Default::default(),
        limits: Default::default(),
    }
}
