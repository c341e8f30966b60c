//! Two replicas with the same `database.server_id`: the server keeps only
//! the newest connection of an id, so each pikachu keeps kicking the other
//! out. pikachu must say so (an ERROR naming `database.server_id` and how
//! to pick another) and `/health` must be DOWN with that reason, instead of
//! reconnecting forever with nothing but "connection lost" warnings.

mod ops;
mod support;

use std::time::Duration;

use ops::{free_port, poll, server_yaml};
use support::pikachu::{config_yaml, Pikachu, TaskSpec};
use support::{MariaDb, Receiver};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_second_replica_with_the_same_server_id_is_an_error_and_health_down() {
    let db = MariaDb::shared();
    let name = db.fresh_database("server_id_clash");
    db.exec_in(&name, "CREATE TABLE t (id INT PRIMARY KEY)");
    let receiver = Receiver::start();
    let start = db.master_status();
    let base = config_yaml(
        db,
        &name,
        &start,
        &[TaskSpec::new("c", "t", &["insert"], &receiver.url("/t"))],
    );
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = Pikachu::start(&format!("{base}{}", server_yaml(port_a, "")));
    a.wait_log("binlog stream opened", WAIT);
    // Changes flow while pikachu is alone.
    db.exec_in(&name, "INSERT INTO t VALUES (1)");
    receiver.wait_for(1, WAIT);

    // The same config (so the same server_id) in a second process.
    let mut b = Pikachu::start(&format!("{base}{}", server_yaml(port_b, "")));
    for (p, port) in [(&mut a, port_a), (&mut b, port_b)] {
        let down = poll(p, port, "/health", WAIT, "DOWN for the clash", |ans| {
            ans.status == 503
                && ans.json()["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("database.server_id"))
        });
        let reason = down.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(reason.contains("another replica"), "{reason}");
        let log = p.log();
        let error = log
            .lines()
            .find(|l| l.contains(" ERROR ") && l.contains("database.server_id"))
            .unwrap_or_else(|| panic!("no ERROR line naming database.server_id:\n{log}"));
        assert!(error.contains("pick"), "{error}");
    }
    // Neither gives up: they keep reconnecting, and the first recovers once
    // the second is gone.
    drop(b);
    poll(&mut a, port_a, "/health", WAIT, "UP again", |ans| {
        ans.status == 200
    });
    db.exec_in(&name, "INSERT INTO t VALUES (2)");
    receiver.wait_for(2, WAIT);
}
