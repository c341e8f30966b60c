//! Standard Webhooks signatures, checked by an independent implementation:
//! the reference Python package `standardwebhooks` (installed by
//! scripts/test.sh), fed the headers and body the receiver got.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pikachu::config::{DispatcherConfig, Secret, TaskConfig};
use pikachu::deliver::{Dispatcher, Job, OrderingKeys};
use pikachu::store::Store;
use support::{Received, Receiver};

const VERIFY_PY: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook
d = json.load(sys.stdin)
# A `whsec_` secret is given as is; a plain secret's raw bytes are the key.
key = d["secret"] if d["secret"].startswith("whsec_") else d["secret"].encode()
try:
    Webhook(key).verify(base64.b64decode(d["body"]), d["headers"])
    print("verified")
except Exception as e:
    print("rejected: %r" % (e,))
"#;

fn require_standardwebhooks() {
    let ok = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python package `standardwebhooks` is needed to verify signatures independently: \
         run `python3 -m pip install standardwebhooks` (scripts/test.sh does it)"
    );
}

/// What the reference implementation says about a request.
fn python_verdict(secret: &str, req: &Received, body: &[u8]) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let input = serde_json::json!({
        "secret": secret,
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(body),
    });
    let mut child = Command::new("python3")
        .args(["-c", VERIFY_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_reference_implementation() {
    require_standardwebhooks();
    let r = Receiver::start();
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let plain = "a plain shared secret";
    let task = |id: &str, secret: Option<&str>| TaskConfig {
        secret: secret.map(Secret::new),
        headers: vec![("Authorization".into(), "Bearer tok".into())],
        ..support::config::task(id, &r.url(&format!("/{id}")))
    };
    let cfg = DispatcherConfig {
        max_retries: 0,
        retry_max_delay: Duration::from_millis(10),
        ..support::config::dispatcher(4, 100)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("store")));
    let tasks = [
        task("whsec", Some(whsec)),
        task("plain", Some(plain)),
        task("unsigned", None),
    ];
    let d = Dispatcher::start(&cfg, &tasks, store).expect("dispatcher");
    let body = r#"{"primary_id":1,"event":"insert","table":"t","data":{"id":1,"name":"é\"x"}}"#;
    for (t, task) in tasks.iter().enumerate() {
        d.submit(Job {
            task: t,
            keys: OrderingKeys::one(t as u64),
            id: format!("0-1-42#0@{}", task.task_id).into(),
            body: body.as_bytes().to_vec().into(),
            seq: t as u64,
        })
        .await
        .expect("submit");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.received().len() < 3 {
        assert!(Instant::now() < deadline, "3 requests expected");
        tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
    }
    let got = r.received();
    let by_path = |p: &str| got.iter().find(|q| q.path == p).expect("request").clone();

    for (path, secret) in [("/whsec", whsec), ("/plain", plain)] {
        let req = by_path(path);
        assert_eq!(req.body, body.as_bytes());
        assert_eq!(
            req.header("webhook-id"),
            Some(&*format!("0-1-42#0@{}", &path[1..]))
        );
        assert_eq!(req.header("authorization"), Some("Bearer tok"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        let sig = req.header("webhook-signature").expect("signed");
        assert!(sig.starts_with("v1,"), "{sig}");
        assert_eq!(
            python_verdict(secret, &req, &req.body),
            "verified",
            "{path}"
        );
        // A tampered body, or the wrong secret, does not verify.
        let tampered = body.replace("\"id\":1", "\"id\":2");
        assert!(python_verdict(secret, &req, tampered.as_bytes()).starts_with("rejected"));
        let wrong = if secret == whsec { plain } else { whsec };
        assert!(python_verdict(wrong, &req, &req.body).starts_with("rejected"));
    }
    let unsigned = by_path("/unsigned");
    assert_eq!(unsigned.header("webhook-signature"), None);
    assert!(unsigned.header("webhook-timestamp").is_some());
}
