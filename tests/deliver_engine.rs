//! The delivery engine driven directly with synthetic jobs, against real
//! HTTP receivers (tests/support/receiver.rs) and a real SQLite store.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pikachu::config::{BatchConfig, DispatcherConfig, OnFailure, TaskConfig};
use pikachu::deliver::{Dispatcher, Job, OrderingKeys};
use pikachu::store::Store;
use support::config::{dispatcher as dcfg, task};
use support::Receiver;

struct Engine {
    d: Dispatcher,
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
}

fn start(cfg: &DispatcherConfig, tasks: &[TaskConfig]) -> Engine {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let store = Store::open(&state).expect("store");
    let d = Dispatcher::start(cfg, tasks, Arc::new(Mutex::new(store))).expect("dispatcher");
    Engine {
        d,
        _dir: dir,
        state,
    }
}

fn job(task: usize, keys: OrderingKeys, seq: u64, body: serde_json::Value) -> Job {
    Job {
        task,
        keys,
        id: format!("change-{seq}").into(),
        body: serde_json::to_vec(&body).expect("json").into(),
        seq,
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
async fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
    }
}

fn ok_bodies(r: &Receiver) -> Vec<serde_json::Value> {
    r.json_bodies()
}

type Row = (String, String, i64, Option<i64>, String, Vec<u8>);

fn dead_letter_rows(state: &std::path::Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(state.join("pikachu.db")).expect("open db");
    let mut stmt = conn
        .prepare("SELECT task_id, change_id, attempts, last_status, last_error, body FROM dead_letters ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .expect("query")
    .collect::<Result<Vec<_>, _>>()
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_per_key_under_16_workers_with_random_latencies() {
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_micros(fastrand::u64(0..3000)));
    let e = start(&dcfg(16, 10_000), &[task("t", &r.url("/h"))]);
    const KEYS: u64 = 200;
    const VERSIONS: u64 = 20;
    // Versions of a key a few jobs apart (fewer than the workers), so that
    // without per-key ordering they would overtake each other.
    let mut seq = 0;
    for chunk in 0..KEYS / 5 {
        for v in 0..VERSIONS {
            for k in chunk * 5..chunk * 5 + 5 {
                let j = job(
                    0,
                    OrderingKeys::one(k),
                    seq,
                    serde_json::json!({"k": k, "v": v}),
                );
                e.d.submit(j).await.expect("submit");
                seq += 1;
            }
        }
    }
    let total = (KEYS * VERSIONS) as usize;
    poll(Duration::from_secs(60), "all changes delivered", || {
        (r.received().len() >= total).then_some(())
    })
    .await;
    let mut per_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for b in ok_bodies(&r) {
        per_key
            .entry(b["k"].as_u64().expect("k"))
            .or_default()
            .push(b["v"].as_u64().expect("v"));
    }
    assert_eq!(per_key.len(), KEYS as usize);
    for (k, vs) in &per_key {
        let want: Vec<u64> = (0..VERSIONS).collect();
        assert_eq!(
            vs, &want,
            "key {k}: versions arrived out of order or not exactly once"
        );
    }
    assert_eq!(r.all_requests().len(), total, "no retries expected");
    let report = e.d.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.unsettled, 0);
    assert_eq!(report.watermark, seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_go_out_in_parallel_up_to_worker_count() {
    let r = Receiver::start();
    r.hang_next(40);
    let mut cfg = dcfg(16, 1000);
    cfg.timeout = Duration::from_secs(2);
    let e = start(&cfg, &[task("t", &r.url("/h"))]);
    for k in 0..40u64 {
        e.d.submit(job(0, OrderingKeys::one(k), k, serde_json::json!({"k": k})))
            .await
            .expect("submit");
    }
    // 16 requests held by the receiver at once: 16 in flight.
    poll(Duration::from_secs(10), "16 requests in flight", || {
        (r.all_requests().len() >= 16).then_some(())
    })
    .await;
    let stats = e.d.stats();
    assert_eq!(stats.in_flight.load(Ordering::Relaxed), 16);
    assert_eq!(
        r.all_requests().len(),
        16,
        "never more than worker_count at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_key_change_is_ordered_after_both_keys() {
    let r = Receiver::start();
    let slow = Duration::from_millis(300);
    r.set_delay(move |req| {
        let body = req.body_text();
        if body.contains("\"slow\":true") {
            slow
        } else {
            Duration::ZERO
        }
    });
    let e = start(&dcfg(16, 1000), &[task("t", &r.url("/h"))]);
    let (k1, k2) = (1u64, 2u64);
    e.d.submit(job(
        0,
        OrderingKeys::one(k1),
        0,
        serde_json::json!({"n": "a", "slow": true}),
    ))
    .await
    .expect("submit");
    e.d.submit(job(
        0,
        OrderingKeys::one(k2),
        1,
        serde_json::json!({"n": "b", "slow": true}),
    ))
    .await
    .expect("submit");
    e.d.submit(job(
        0,
        OrderingKeys::two(k1, k2),
        2,
        serde_json::json!({"n": "move"}),
    ))
    .await
    .expect("submit");
    e.d.submit(job(
        0,
        OrderingKeys::one(k2),
        3,
        serde_json::json!({"n": "after"}),
    ))
    .await
    .expect("submit");
    e.d.submit(job(
        0,
        OrderingKeys::one(k1),
        4,
        serde_json::json!({"n": "old-key-again"}),
    ))
    .await
    .expect("submit");
    poll(Duration::from_secs(10), "5 deliveries", || {
        (r.received().len() >= 5).then_some(())
    })
    .await;
    let got = r.received();
    let at = |n: &str| {
        got.iter()
            .find(|q| q.json()["n"] == n)
            .unwrap_or_else(|| panic!("{n} not received"))
            .at
    };
    // a and b went out in parallel; the key change only after both were answered.
    assert!(at("move") >= at("a") + slow, "move overtook a");
    assert!(at("move") >= at("b") + slow, "move overtook b");
    assert!(at("after") >= at("move"));
    assert!(at("old-key-again") >= at("move"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_success() {
    let r = Receiver::start();
    r.fail_next(2, 500);
    let e = start(&dcfg(4, 100), &[task("t", &r.url("/h"))]);
    e.d.submit(job(0, OrderingKeys::one(1), 0, serde_json::json!({"v": 1})))
        .await
        .expect("submit");
    e.d.submit(job(0, OrderingKeys::one(1), 1, serde_json::json!({"v": 2})))
        .await
        .expect("submit");
    poll(Duration::from_secs(10), "2 deliveries", || {
        (r.received().len() >= 2).then_some(())
    })
    .await;
    let all = r.all_requests();
    let statuses: Vec<Option<u16>> = all.iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(200), Some(200)]);
    // The same change three times, then the next one.
    let vs: Vec<i64> = all
        .iter()
        .map(|q| q.json()["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(vs, vec![1, 1, 1, 2]);
    assert_eq!(all[0].header("webhook-id"), all[2].header("webhook-id"));
    // The receiver records its answer just before the engine reads it.
    poll(Duration::from_secs(5), "both settled", || {
        (*e.d.watermark().borrow() == 2).then_some(())
    })
    .await;
    let s = e.d.stats();
    assert_eq!(s.retries.load(Ordering::Relaxed), 2);
    assert_eq!(s.delivered.load(Ordering::Relaxed), 2);
    assert_eq!(s.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(dead_letter_rows(&e.state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_writes_a_dead_letter_then_the_row_goes_on() {
    let r = Receiver::start();
    r.fail_next(3, 503);
    let mut cfg = dcfg(4, 100);
    cfg.max_retries = 2;
    // Without the circuit breaker: with nothing else answered, three
    // failures in a row would open it and spare the change's retries.
    let mut t = task("orders", &r.url("/h"));
    t.limits.breaker.failures = 0;
    let e = start(&cfg, &[t]);
    e.d.submit(job(0, OrderingKeys::one(7), 0, serde_json::json!({"v": 1})))
        .await
        .expect("submit");
    e.d.submit(job(0, OrderingKeys::one(7), 1, serde_json::json!({"v": 2})))
        .await
        .expect("submit");
    poll(Duration::from_secs(10), "the next change delivered", || {
        (!r.received().is_empty()).then_some(())
    })
    .await;
    let rows = dead_letter_rows(&e.state);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (task_id, change_id, attempts, status, error, body) = &rows[0];
    assert_eq!(task_id, "orders");
    assert_eq!(change_id, "change-0");
    assert_eq!(*attempts, 3);
    assert_eq!(*status, Some(503));
    assert_eq!(error, "HTTP 503");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(body).expect("json"),
        serde_json::json!({"v": 1})
    );
    // Only the later change was delivered, after the 3 failed attempts.
    let all = r.all_requests();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].json()["v"], 2);
    assert_eq!(e.d.stats().dead_lettered.load(Ordering::Relaxed), 1);
    let report = e.d.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.unsettled, report.watermark), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    for status in [429u16, 503] {
        let r = Receiver::start();
        r.fail_next_with_retry_after(1, status, 1);
        let mut cfg = dcfg(4, 100);
        cfg.retry_max_delay = Duration::from_secs(5);
        let e = start(&cfg, &[task("t", &r.url("/h"))]);
        e.d.submit(job(0, OrderingKeys::one(1), 0, serde_json::json!({})))
            .await
            .expect("submit");
        poll(
            Duration::from_secs(10),
            "delivered after Retry-After",
            || (!r.received().is_empty()).then_some(()),
        )
        .await;
        let all = r.all_requests();
        assert_eq!(all.len(), 2);
        let gap = all[1].at - all[0].at;
        assert!(
            gap >= Duration::from_secs(1),
            "{status}: retried after {gap:?}, before Retry-After: 1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_receiver_times_out_and_is_retried() {
    let r = Receiver::start();
    r.hang_next(1);
    let mut cfg = dcfg(4, 100);
    cfg.timeout = Duration::from_millis(300);
    let e = start(&cfg, &[task("t", &r.url("/h"))]);
    e.d.submit(job(0, OrderingKeys::one(1), 0, serde_json::json!({"v": 1})))
        .await
        .expect("submit");
    poll(Duration::from_secs(10), "delivered after a timeout", || {
        (!r.received().is_empty()).then_some(())
    })
    .await;
    let all = r.all_requests();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, None, "first request never answered");
    assert!(all[1].at - all[0].at >= Duration::from_millis(300));
    assert_eq!(e.d.stats().failed_attempts.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_does_not_hold_up_another() {
    // Task 0's endpoint hangs (worst case: it holds workers until the
    // timeout); task 1's is healthy. on_failure: block, so task 0 never
    // gives up. Task 0's changes come first and outnumber the workers.
    let bad = Receiver::start();
    bad.hang_next(100_000);
    let good = Receiver::start();
    let mut cfg = dcfg(16, 10_000);
    cfg.timeout = Duration::from_secs(20);
    let mut t0 = task("bad", &bad.url("/h"));
    t0.on_failure = OnFailure::Block;
    let e = start(&cfg, &[t0, task("good", &good.url("/h"))]);
    let mut seq = 0;
    for k in 0..64u64 {
        e.d.submit(job(
            0,
            OrderingKeys::one(k),
            seq,
            serde_json::json!({"k": k}),
        ))
        .await
        .expect("submit");
        seq += 1;
    }
    poll(
        Duration::from_secs(10),
        "bad task's requests in flight",
        || (!bad.all_requests().is_empty()).then_some(()),
    )
    .await;
    for k in 0..200u64 {
        e.d.submit(job(
            1,
            OrderingKeys::one(1000 + k),
            seq,
            serde_json::json!({"k": k}),
        ))
        .await
        .expect("submit");
        seq += 1;
    }
    // Well before the bad task's first timeout (20s).
    poll(
        Duration::from_secs(10),
        "the healthy task's 200 deliveries",
        || (good.received().len() >= 200).then_some(()),
    )
    .await;
    assert!(bad.received().is_empty());
    // The watermark is held by the bad task's first change.
    assert_eq!(*e.d.watermark().borrow(), 0);

    // Same with an endpoint that answers 500 at once.
    let bad = Receiver::start();
    bad.set_status(Some(500));
    let good = Receiver::start();
    let mut t0 = task("bad", &bad.url("/h"));
    t0.on_failure = OnFailure::Block;
    // Without the circuit breaker (tests/deliver_limits.rs has it): every
    // change is retried on its own schedule.
    t0.limits.breaker.failures = 0;
    let e = start(&dcfg(16, 10_000), &[t0, task("good", &good.url("/h"))]);
    for seq in 0..400u64 {
        let t = (seq % 2) as usize;
        // Keys include the task (as ordering_keys makes them).
        let key = ((t as u64) << 32) | (seq / 2);
        e.d.submit(job(
            t,
            OrderingKeys::one(key),
            seq,
            serde_json::json!({"s": seq}),
        ))
        .await
        .expect("submit");
    }
    poll(
        Duration::from_secs(20),
        "the healthy task's 200 deliveries",
        || (good.received().len() >= 200).then_some(()),
    )
    .await;
    assert!(bad.received().is_empty());
    // ...while the failing task keeps retrying (block: never gives up).
    poll(
        Duration::from_secs(20),
        "the failing task's retries",
        || (bad.all_requests().len() >= 400).then_some(()),
    )
    .await;
    assert_eq!(e.d.stats().dead_lettered.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_slows_the_submitter_and_drops_nothing() {
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_millis(10));
    let e = start(&dcfg(2, 4), &[task("t", &r.url("/h"))]);
    let stats = e.d.stats();
    const N: u64 = 60;
    let started = Instant::now();
    for seq in 0..N {
        e.d.submit(job(
            0,
            OrderingKeys::one(seq),
            seq,
            serde_json::json!({"s": seq}),
        ))
        .await
        .expect("submit");
        assert!(
            stats.queued.load(Ordering::Relaxed) <= 4,
            "more than queue_size in the engine"
        );
    }
    let submit_time = started.elapsed();
    assert!(
        stats.submit_waits.load(Ordering::Relaxed) > 0,
        "submit never waited"
    );
    // 2 workers x 10 ms per request: the last 56 submits had to wait for room.
    assert!(
        submit_time >= Duration::from_millis(10 * (N - 4) / 2),
        "{submit_time:?}"
    );
    poll(Duration::from_secs(20), "all delivered", || {
        (r.received().len() >= N as usize).then_some(())
    })
    .await;
    let mut got: Vec<u64> = ok_bodies(&r)
        .iter()
        .map(|b| b["s"].as_u64().expect("s"))
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_never_passes_an_unsettled_job() {
    let r = Receiver::start();
    r.set_delay(|req| {
        if req.body_text().contains("\"hold\":true") {
            Duration::from_millis(800)
        } else {
            Duration::ZERO
        }
    });
    let failing = Receiver::start();
    failing.set_status(Some(500));
    let mut cfg = dcfg(8, 1000);
    cfg.max_retries = 3;
    cfg.retry_base_delay = Duration::from_millis(100);
    cfg.retry_max_delay = Duration::from_millis(100);
    // Without the circuit breaker: the failing task's retries run out.
    let mut dlq = task("dlq", &failing.url("/h"));
    dlq.limits.breaker.failures = 0;
    let e = start(&cfg, &[task("ok", &r.url("/h")), dlq]);
    let mut wm = e.d.watermark();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let state = e.state.clone();
    let watcher = tokio::spawn(async move {
        while wm.changed().await.is_ok() {
            let w = *wm.borrow_and_update();
            seen2.lock().expect("lock").push(w);
            // Job 20 (the dead letter) must be in the store before the watermark passes it.
            if w > 20 {
                let rows = tokio::task::spawn_blocking({
                    let state = state.clone();
                    move || dead_letter_rows(&state).len()
                })
                .await
                .expect("query");
                assert_eq!(
                    rows, 1,
                    "watermark {w} passed job 20 before its dead letter was written"
                );
            }
        }
    });
    for seq in 0..50u64 {
        let (t, body) = match seq {
            10 => (0, serde_json::json!({"s": seq, "hold": true})),
            20 => (1, serde_json::json!({"s": seq})),
            _ => (0, serde_json::json!({"s": seq})),
        };
        e.d.submit(job(t, OrderingKeys::one(seq), seq, body))
            .await
            .expect("submit");
    }
    // While job 10 is held by the receiver, the watermark stays at or below 10.
    poll(
        Duration::from_secs(10),
        "the 48 quick jobs delivered",
        || (r.received().len() >= 48).then_some(()),
    )
    .await;
    let w = *e.d.watermark().borrow();
    let held_answered = r
        .received()
        .iter()
        .any(|q| q.body_text().contains("\"hold\":true"));
    if !held_answered {
        assert!(
            w <= 10,
            "watermark {w} passed job 10 while it was in flight"
        );
    }
    poll(Duration::from_secs(10), "watermark at the end", || {
        (*e.d.watermark().borrow() == 50).then_some(())
    })
    .await;
    let report = e.d.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.watermark, 50);
    // The watcher may still be reading the store: close the watch channel by
    // dropping the dispatcher, wait for the watcher, and only then remove the
    // state directory (dropping it first made the watcher's query fail).
    let Engine { d, _dir, .. } = e;
    drop(d);
    watcher.await.expect("watcher assertions");
    drop(_dir);
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "watermark went backwards: {seen:?}"
    );
    assert!(seen.contains(&10), "watermark waited at 10: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_json_arrays_in_order() {
    let r = Receiver::start();
    let mut t = task("b", &r.url("/h"));
    t.batch = Some(BatchConfig {
        max_events: 100,
        max_wait: Duration::from_millis(50),
    });
    let e = start(&dcfg(16, 10_000), &[t]);
    for seq in 0..250u64 {
        e.d.submit(job(
            0,
            OrderingKeys::one(seq % 7),
            seq,
            serde_json::json!({"s": seq}),
        ))
        .await
        .expect("submit");
    }
    let count = |r: &Receiver| -> usize {
        r.received()
            .iter()
            .map(|q| q.json().as_array().map_or(0, |a| a.len()))
            .sum()
    };
    poll(Duration::from_secs(10), "250 changes in batches", || {
        (count(&r) >= 250).then_some(())
    })
    .await;
    let mut all = Vec::new();
    for q in r.received() {
        let arr = q.json().as_array().expect("a batch is an array").clone();
        assert!(
            !arr.is_empty() && arr.len() <= 100,
            "batch of {}",
            arr.len()
        );
        let first = arr[0]["s"].as_u64().expect("s");
        let last = arr[arr.len() - 1]["s"].as_u64().expect("s");
        let want_id = if first == last {
            format!("change-{first}")
        } else {
            format!("change-{first}..change-{last}")
        };
        assert_eq!(q.header("webhook-id"), Some(want_id.as_str()));
        all.extend(arr.iter().map(|v| v["s"].as_u64().expect("s")));
    }
    assert_eq!(all, (0..250).collect::<Vec<_>>());
    let report = e.d.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.unsettled, report.watermark), (0, 250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_finish_and_reports_the_rest() {
    let r = Receiver::start();
    r.set_delay(|_| Duration::from_millis(200));
    let e = start(&dcfg(4, 100), &[task("t", &r.url("/h"))]);
    for seq in 0..4u64 {
        e.d.submit(job(
            0,
            OrderingKeys::one(seq),
            seq,
            serde_json::json!({"s": seq}),
        ))
        .await
        .expect("submit");
    }
    poll(Duration::from_secs(5), "4 requests in flight", || {
        (r.all_requests().len() >= 4).then_some(())
    })
    .await;
    let report = e.d.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.unsettled, report.watermark), (0, 4));
    assert_eq!(r.received().len(), 4);
    assert!(e
        .d
        .submit(job(0, OrderingKeys::one(9), 4, serde_json::json!({})))
        .await
        .is_err());

    // A receiver that keeps failing: the grace period ends it; the watermark stays.
    let r = Receiver::start();
    r.set_status(Some(500));
    let mut t = task("t", &r.url("/h"));
    t.on_failure = OnFailure::Block;
    let e = start(&dcfg(4, 100), &[t]);
    for seq in 0..3u64 {
        e.d.submit(job(
            0,
            OrderingKeys::one(seq),
            seq,
            serde_json::json!({"s": seq}),
        ))
        .await
        .expect("submit");
    }
    poll(Duration::from_secs(5), "attempts", || {
        (r.all_requests().len() >= 3).then_some(())
    })
    .await;
    let report = e.d.shutdown(Duration::from_millis(200)).await;
    assert_eq!((report.unsettled, report.watermark), (3, 0));
}
