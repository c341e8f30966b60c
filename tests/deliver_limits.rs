//! A task's own limits in the delivery engine, against real HTTP receivers:
//! the circuit breaker (an outage does not use up retries; while open, one
//! probe per cool-down), `max_in_flight` and `rate_limit` measured at the
//! receiver, and `dead_letter_on`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pikachu::config::{BreakerConfig, DispatcherConfig, TaskConfig, TaskLimits};
use pikachu::deliver::{Dispatcher, Job, OrderingKeys};
use pikachu::store::Store;
use support::config::{dispatcher as dcfg, task};
use support::Receiver;

fn start(cfg: &DispatcherConfig, t: TaskConfig) -> (Dispatcher, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).expect("store");
    let d = Dispatcher::start(cfg, &[t], Arc::new(Mutex::new(store))).expect("dispatcher");
    (d, dir)
}

fn job(key: u64, v: u64, seq: u64) -> Job {
    Job {
        task: 0,
        keys: OrderingKeys::one(key),
        id: format!("change-{seq}").into(),
        body: serde_json::to_vec(&serde_json::json!({"k": key, "v": v}))
            .expect("json")
            .into(),
        seq,
    }
}

async fn poll(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
    }
}

/// The most requests that arrived within any `window`.
fn most_within(r: &Receiver, window: Duration) -> usize {
    let mut at: Vec<Instant> = r.all_requests().iter().map(|q| q.at).collect();
    at.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..at.len() {
        while at[hi] - at[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn limited(url: &str, limits: TaskLimits) -> TaskConfig {
    TaskConfig {
        limits,
        ..task("t", url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_uses_up_no_retries_and_everything_arrives_in_order() {
    let r = Receiver::start();
    r.set_status(Some(500));
    // Three retries, 10-50 ms apart: without the breaker every change would
    // be dead-lettered within a second of this outage.
    let (d, dir) = start(&dcfg(8, 10_000), task("t", &r.url("/h")));
    let mut seq = 0;
    for v in 0..10 {
        for k in 0..50 {
            d.submit(job(k, v, seq)).await.expect("submit");
            seq += 1;
        }
    }
    // The outage lasts several cool-downs.
    let failing_since = Instant::now();
    poll(Duration::from_secs(30), "the outage to last 3 s", || {
        failing_since.elapsed() >= Duration::from_secs(3)
    })
    .await;
    r.set_status(None);
    poll(Duration::from_secs(60), "every change delivered", || {
        r.received().len() >= 500
    })
    .await;
    let stats = d.stats();
    assert_eq!(
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "an outage dead-letters nothing"
    );
    let mut last = std::collections::HashMap::new();
    for b in r.json_bodies() {
        let (k, v) = (b["k"].as_u64().expect("k"), b["v"].as_u64().expect("v"));
        if let Some(prev) = last.insert(k, v) {
            assert!(v > prev, "key {k}: {v} after {prev}");
        }
    }
    assert_eq!(last.len(), 50);
    assert!(last.values().all(|&v| v == 9));
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_uses_up_no_retries_of_a_batched_task_either() {
    // One batch in flight at a time: the breaker must trip before the
    // first batch's last retry.
    let r = Receiver::start();
    r.set_status(Some(500));
    let t = TaskConfig {
        batch: Some(pikachu::config::BatchConfig {
            max_events: 10,
            max_wait: Duration::from_millis(5),
        }),
        ..task("t", &r.url("/h"))
    };
    let (d, _dir) = start(&dcfg(8, 10_000), t);
    for seq in 0..200 {
        d.submit(job(seq % 20, seq / 20, seq))
            .await
            .expect("submit");
    }
    poll(Duration::from_secs(30), "failed attempts", || {
        r.all_requests().len() >= 6
    })
    .await;
    let since = Instant::now();
    poll(Duration::from_secs(30), "the outage to last 2 s", || {
        since.elapsed() >= Duration::from_secs(2)
    })
    .await;
    r.set_status(None);
    poll(Duration::from_secs(60), "every change delivered", || {
        r.json_bodies()
            .iter()
            .map(|b| b.as_array().map_or(1, Vec::len))
            .sum::<usize>()
            >= 200
    })
    .await;
    assert_eq!(
        d.stats()
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_open_the_breaker_sends_one_probe_per_cooldown() {
    let r = Receiver::start();
    r.set_status(Some(503));
    let limits = TaskLimits {
        breaker: BreakerConfig {
            failures: 5,
            cooldown: Duration::from_millis(200),
            max_cooldown: Duration::from_millis(200),
        },
        ..TaskLimits::default()
    };
    let (d, _dir) = start(&dcfg(16, 10_000), limited(&r.url("/h"), limits));
    for k in 0..100 {
        d.submit(job(k, 0, k)).await.expect("submit");
    }
    // The breaker trips after the first failures (at most the workers').
    poll(Duration::from_secs(10), "the first failures", || {
        r.all_requests().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the in-flight ones end
    let before = r.all_requests().len();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await; // the window counted
    let probes = r.all_requests().len() - before;
    let cooldowns = (t0.elapsed().as_millis() / 200) as usize;
    assert!(
        probes <= cooldowns + 1,
        "{probes} attempts in {} cool-downs",
        cooldowns
    );
    assert!(probes >= 2, "the breaker probes: {probes} attempts");
    assert!(
        before <= 16 + 1,
        "{before} attempts before the breaker opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_holds_at_the_receiver() {
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_millis(100));
    let limits = TaskLimits {
        max_in_flight: Some(2),
        ..TaskLimits::default()
    };
    let (d, _dir) = start(&dcfg(16, 10_000), limited(&r.url("/h"), limits));
    let t0 = Instant::now();
    for k in 0..20 {
        d.submit(job(k, 0, k)).await.expect("submit");
    }
    poll(Duration::from_secs(30), "all delivered", || {
        r.received().len() >= 20
    })
    .await;
    // 20 requests of 100 ms, 2 at a time: 10 rounds.
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert!(most_within(&r, Duration::from_millis(90)) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_at_the_receiver() {
    let r = Receiver::start();
    let limits = TaskLimits {
        rate_limit: Some(20),
        ..TaskLimits::default()
    };
    let (d, _dir) = start(&dcfg(16, 10_000), limited(&r.url("/h"), limits));
    let t0 = Instant::now();
    for k in 0..40 {
        d.submit(job(k, 0, k)).await.expect("submit");
    }
    poll(Duration::from_secs(30), "all delivered", || {
        r.received().len() >= 40
    })
    .await;
    // 40 requests at 20/s: 39 intervals of 50 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    assert!(most_within(&r, Duration::from_millis(1000)) <= 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_on_a_status_dead_letters_at_once() {
    let r = Receiver::start();
    r.set_status(Some(410));
    let limits = TaskLimits {
        dead_letter_on: vec![410],
        ..TaskLimits::default()
    };
    let (d, _dir) = start(&dcfg(4, 10_000), limited(&r.url("/h"), limits));
    for k in 0..3 {
        d.submit(job(k, 0, k)).await.expect("submit");
    }
    let stats = d.stats();
    poll(Duration::from_secs(10), "three dead letters", || {
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    })
    .await;
    assert_eq!(r.all_requests().len(), 3, "one attempt each, no retries");
}
