//! Task isolation at full size (issue 13's acceptance runs), beside the
//! quick cases of `task_isolation.rs`:
//!
//! - 50,000 changes over ~60 s to a healthy task's table and to a table of
//!   three broken tasks (their endpoints hang, refuse connections, answer
//!   500): the healthy task's p99 latency stays within 2× of the same task
//!   run alone by a second pikachu on the same workload at the same time;
//!   the checkpoint keeps moving; the broken tasks' backlogs grow on disk;
//!   once their endpoints are back each gets all 50,000 in per-row order.
//! - SIGKILL with more than 100,000 changes in a task's backlog.
//! - The default config against an endpoint that answers 500 for two
//!   minutes while 5,000 changes are written: no dead letter, everything
//!   in per-row order afterwards; beside it, an endpoint that drops every
//!   connection gets at most one attempt per breaker cool-down.
//!
//! Real MariaDB, real pikachu processes, real HTTP receivers.

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::isolation::{
    backlog_rows, checkpoint, dead_letters, distinct_ids, row_of, wait_until, Versions,
};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Received, Receiver};

/// A table with the write time of each version (microseconds since the
/// epoch, from the server's clock, which is this machine's).
const TABLE: &str = "(id INT PRIMARY KEY, v INT, ts BIGINT)";
const NOW_US: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

/// The ~60 s workload: 10,000 rows then four update rounds (50,000 changes
/// per table), in 50 ticks of 1,000 changes to each of `tables`, 1.2 s
/// apart. Calls `each_tick(k)` after tick `k`.
fn paced_workload(db: &MariaDb, name: &str, tables: &[&str], mut each_tick: impl FnMut(usize)) {
    let t0 = Instant::now();
    for k in 0..50usize {
        // Pacing to a rate (not waiting for a condition): tick k starts at
        // k × 1.2 s.
        let at = t0 + Duration::from_millis(1200 * k as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let mut sql = String::new();
        for t in tables {
            if k < 10 {
                let rows: Vec<String> = (0..1000)
                    .map(|i| format!("({}, 0, {NOW_US})", 1 + k * 1000 + i))
                    .collect();
                sql.push_str(&format!("INSERT INTO {t} VALUES {};\n", rows.join(",")));
            } else {
                let round = (k - 10) / 10 + 1;
                let lo = 1 + ((k - 10) % 10) * 1000;
                sql.push_str(&format!(
                    "UPDATE {t} SET v = {round}, ts = {NOW_US} WHERE id >= {lo} AND id < {};\n",
                    lo + 1000
                ));
            }
        }
        db.exec_in(name, &sql);
        each_tick(k);
    }
}

const PACED: Versions = Versions {
    first: 1,
    rows: 10_000,
    rounds: 4,
};

/// Wall-clock time of each received request: `Received::at` is an
/// `Instant`, mapped through one (Instant, SystemTime) pair.
struct Clock(Instant, SystemTime);

impl Clock {
    fn now() -> Clock {
        Clock(Instant::now(), SystemTime::now())
    }

    /// Microseconds since the epoch at which `r` arrived.
    fn micros(&self, r: &Received) -> i64 {
        let at = if r.at >= self.0 {
            self.1 + (r.at - self.0)
        } else {
            self.1 - (self.0 - r.at)
        };
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }
}

/// The 50th and 99th percentile of write-to-arrival latency, in ms.
fn latency_ms(clock: &Clock, got: &[Received]) -> (f64, f64) {
    let mut l: Vec<i64> = got
        .iter()
        .map(|r| clock.micros(r) - row_of(&r.json())["ts"].as_i64().expect("ts"))
        .collect();
    l.sort_unstable();
    let pick = |q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (pick(0.50), pick(0.99))
}

#[test]
fn a_healthy_task_keeps_its_latency_beside_a_hanging_a_refusing_and_a_failing_one() {
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_full");
    db.exec_in(
        &name,
        &format!("CREATE TABLE ta {TABLE}; CREATE TABLE tb {TABLE}"),
    );
    let hang = Receiver::start();
    let refuse = Receiver::start();
    let fail = Receiver::start();
    let rb = Receiver::start();
    let alone = Receiver::start();
    hang.hang_next(10_000_000);
    refuse.stop();
    fail.set_status(Some(500));
    let start = db.master_status();
    // Broken tasks: on_failure block (a long outage never dead-letters) and
    // breaker cool-downs of at most 2 s (their recovery is seen soon).
    let broken = |id: &str, r: &Receiver| {
        let mut t = TaskSpec::new(id, "ta", &["insert", "update"], &r.url("/a"));
        t.extra = "  on_failure: \"block\"\n  breaker:\n    max_cooldown: \"2s\"\n".into();
        t
    };
    let tasks = [
        broken("hang", &hang),
        broken("refuse", &refuse),
        broken("fail", &fail),
        TaskSpec::new("b", "tb", &["insert", "update"], &rb.url("/b")),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &config_yaml(db, &name, &start, &tasks), &[]);
    // B alone: a second pikachu with only B's task, on the same workload.
    let only_b = [TaskSpec::new(
        "b",
        "tb",
        &["insert", "update"],
        &alone.url("/b"),
    )];
    let dir_alone = tempfile::tempdir().expect("tempdir");
    let _p_alone = Pikachu::start_in(
        dir_alone.path(),
        &config_yaml(db, &name, &start, &only_b),
        &[],
    );
    let clock = Clock::now();
    let mut checkpoints = Vec::new();
    let mut backlogs = Vec::new();
    paced_workload(db, &name, &["ta", "tb"], |k| {
        if k % 10 == 9 {
            checkpoints.push(checkpoint(dir.path()));
            backlogs.push(backlog_rows(dir.path()));
        }
    });
    let total = PACED.changes();
    let got_b = rb.wait_for(total, Duration::from_secs(120));
    let got_alone = alone.wait_for(total, Duration::from_secs(120));
    assert_eq!(distinct_ids(&got_b), total);
    PACED.assert_order(&got_b);
    let (b50, b99) = latency_ms(&clock, &got_b);
    let (a50, a99) = latency_ms(&clock, &got_alone);
    eprintln!(
        "latency of B beside three broken tasks: p50 {b50:.1} ms, p99 {b99:.1} ms; \
         alone: p50 {a50:.1} ms, p99 {a99:.1} ms; checkpoints {checkpoints:?}; backlog rows {backlogs:?}"
    );
    assert!(
        b99 <= 2.0 * a99,
        "B's p99 {b99:.1} ms beside the broken tasks, {a99:.1} ms alone"
    );
    // The checkpoint moved every 12 s of the workload, and the broken
    // tasks' backlogs grew on disk.
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "checkpoints: {checkpoints:?}"
    );
    assert!(
        backlogs.windows(2).all(|w| w[0] < w[1]) && backlogs[4] >= 3 * 40_000,
        "backlog rows: {backlogs:?}"
    );
    // The endpoints are back: each broken task gets every change, in
    // per-row order.
    hang.reset();
    refuse.start_again();
    fail.set_status(None);
    for (what, r) in [("hang", &hang), ("refuse", &refuse), ("fail", &fail)] {
        let mut last = 0;
        let mut since = Instant::now();
        wait_until(Duration::from_secs(300), what, || {
            // Delivery progresses: no 30 s without a new change.
            let n = distinct_ids(&r.received());
            if n > last {
                (last, since) = (n, Instant::now());
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{what} stalls at {n}"
            );
            n >= total
        });
        PACED.assert_order(&r.received());
    }
    wait_until(Duration::from_secs(60), "the backlogs to empty", || {
        backlog_rows(dir.path()) == 0
    });
    assert_eq!(dead_letters(dir.path()), 0);
    drop(p);
}

#[test]
fn sigkill_with_100k_changes_in_a_backlog_loses_nothing() {
    const W: Versions = Versions {
        first: 1,
        rows: 26_000,
        rounds: 3,
    };
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_kill_full");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    let rb = Receiver::start();
    ra.stop();
    let start = db.master_status();
    let mut ta = TaskSpec::new("a", "t", &["insert", "update"], &ra.url("/a"));
    ta.extra = "  on_failure: \"block\"\n  breaker:\n    max_cooldown: \"2s\"\n".into();
    let tb = TaskSpec::new("b", "t", &["insert", "update"], &rb.url("/b"));
    let cfg = config_yaml(db, &name, &start, &[ta, tb]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    W.write(db, &name, "t");
    let end = db.master_status();
    let total = W.changes();
    rb.wait_for(total, Duration::from_secs(180));
    wait_until(
        Duration::from_secs(60),
        "the checkpoint to reach the end",
        || checkpoint(dir.path()).is_some_and(|c| c >= end),
    );
    let on_disk = backlog_rows(dir.path());
    assert!(on_disk >= 100_000, "backlog rows: {on_disk}");
    p.kill();
    let b_before = rb.received().len();
    ra.start_again();
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    wait_until(Duration::from_secs(180), "every change at A", || {
        distinct_ids(&ra.received()) >= total
    });
    W.assert_order(&ra.received());
    rb.assert_no_more_requests(Duration::from_secs(2));
    assert_eq!(rb.received().len(), b_before, "B gets nothing twice");
    wait_until(Duration::from_secs(30), "the backlog to empty", || {
        backlog_rows(dir.path()) == 0
    });
    drop(p);
}

/// An endpoint that accepts each connection and closes it at once (no
/// answer: an outage to the breaker), counting the connections.
struct Dropper {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Dropper {
    fn start() -> Dropper {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = c {
                    a.fetch_add(1, Ordering::Relaxed);
                    drop(c);
                }
            }
        });
        Dropper {
            port,
            accepted,
            stop,
        }
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port)); // wake the accept
    }
}

/// Attempts a task with the default breaker (5 failures, cool-downs from
/// 1 s doubling to 60 s) may make in `secs` of outage: `in_flight` at once,
/// and one more for each of the first 4 failures (a worker they free may
/// start another before the 5th trips it), then one probe per cool-down.
fn allowed_attempts(in_flight: usize, secs: u64) -> usize {
    let (mut t, mut c, mut probes) = (0, 1, 0);
    while t <= secs {
        t += c;
        c = (c * 2).min(60);
        probes += 1;
    }
    in_flight + 4 + probes
}

#[test]
fn two_minutes_of_500_with_the_default_config_dead_letter_nothing() {
    const W: Versions = Versions {
        first: 1,
        rows: 1000,
        rounds: 4,
    };
    let db = MariaDb::shared();
    let name = db.fresh_database("isolate_outage");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let ra = Receiver::start();
    ra.set_status(Some(500));
    let dropper = Dropper::start();
    let start = db.master_status();
    let tasks = [
        TaskSpec::new("a", "t", &["insert", "update"], &ra.url("/a")),
        TaskSpec::new(
            "c",
            "t",
            &["insert", "update"],
            &format!("http://127.0.0.1:{}/c", dropper.port),
        ),
    ];
    // The default config: the harness's short retry delays and timeout out.
    let cfg = config_yaml(db, &name, &start, &tasks).replace(
        "  retry_base_delay: \"50ms\"\n  retry_max_delay: \"200ms\"\n  timeout: \"5s\"\n",
        "",
    );
    assert!(!cfg.contains("retry_base_delay"), "{cfg}");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Pikachu::start_in(dir.path(), &cfg, &[]);
    // 5,000 changes spread over the first 100 s of the outage: the insert
    // and then one update round every 20 s.
    let outage = Instant::now();
    for round in 0..=W.rounds {
        let at = outage + Duration::from_secs(20 * round as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now())); // pacing
        if round == 0 {
            Versions { rounds: 0, ..W }.write(db, &name, "t");
        } else {
            db.exec_in(&name, &format!("UPDATE t SET v = {round}"));
        }
    }
    let end = outage + Duration::from_secs(120);
    std::thread::sleep(end.saturating_duration_since(Instant::now())); // the outage lasts 2 min
    let secs = outage.elapsed().as_secs();
    let a_attempts = ra.all_requests().len();
    let c_attempts = dropper.count();
    ra.set_status(None);
    assert_eq!(
        dead_letters(dir.path()),
        0,
        "an outage dead-letters nothing"
    );
    // 16 workers: at most 16 attempts at once.
    let allowed = allowed_attempts(16, secs);
    eprintln!(
        "{secs} s of outage: {a_attempts} attempts at the 500 endpoint, {c_attempts} at the \
         dropping one, {allowed} allowed"
    );
    assert!(a_attempts <= allowed, "{a_attempts} attempts at A");
    assert!(c_attempts <= allowed, "{c_attempts} attempts at C");
    // The next probe comes within the 60 s cap; then everything arrives.
    wait_until(Duration::from_secs(180), "every change at A", || {
        distinct_ids(&ra.received()) >= W.changes()
    });
    W.assert_order(&ra.received());
    assert_eq!(dead_letters(dir.path()), 0);
    drop(p);
}
