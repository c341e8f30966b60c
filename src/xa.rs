//! Holding the rows of XA transactions until their outcome, for `pikachu
//! run` and `pikachu replay`.
//!
//! The decoder reports an XA transaction's event group with
//! [`XaEvent::Start`] before its changes; [`XaHold`] keeps those changes
//! instead of letting them be delivered. At [`XaEvent::Prepare`] they are
//! written to the state store (durably, before the caller records the
//! PREPARE's commit, so a checkpoint past a PREPARE implies its rows are on
//! disk); a group that ends without one was committed in one phase and its
//! changes are released at once. At the outcome ([`XaEvent::Outcome`]) the
//! rows of a committed XA are released, in binlog order, at the outcome's
//! place in the stream; a rolled-back XA's are dropped. The caller deletes
//! an XA's rows once its outcome's position is settled
//! ([`crate::store::Store::save_checkpoint_settling_xa`]).
//!
//! Memory: an open group keeps at most [`MEMORY_ROWS`] changes or about
//! [`MEMORY_BYTES`] of row data in memory; beyond that its rows go to the
//! store in chunks as they are read. A release reads [`RELEASE_CHUNK`]
//! changes at a time. All store calls run on the blocking thread pool.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::event::{codec, Change};
use crate::source::reader::XaAt;
use crate::store::xa::{HeldXa, XaPlace};
use crate::store::{Store, StoreError};

/// Most changes of an open XA group kept in memory.
pub(crate) const MEMORY_ROWS: usize = 1024;
/// Most row-image bytes of an open XA group kept in memory (about).
pub(crate) const MEMORY_BYTES: usize = 4 << 20;
/// Changes read from the store at a time when releasing.
pub(crate) const RELEASE_CHUNK: usize = 1024;

/// Why holding or releasing XA rows failed.
#[derive(Debug, thiserror::Error)]
pub enum XaError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("row {n} of the prepared XA transaction {xid} in the state store cannot be read ({message}); the state database is damaged: restore it, or forget this transaction's rows with `sqlite3 data/pikachu.db \"DELETE FROM xa_prepared WHERE id = {id}\"`")]
    Corrupt {
        id: i64,
        xid: String,
        n: u64,
        message: String,
    },
    #[error("the state store is unusable: {0}")]
    Unusable(String),
}

type Shared = Arc<Mutex<Store>>;

/// Runs `f` on the store on the blocking thread pool.
async fn blocking<T, F>(store: &Shared, f: F) -> Result<T, XaError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = store
            .lock()
            .map_err(|_| XaError::Unusable("its lock is poisoned".into()))?;
        f(&mut s).map_err(XaError::from)
    })
    .await
    .map_err(|e| XaError::Unusable(format!("its worker stopped: {e}")))?
}

/// Where the held rows go.
enum Slot {
    /// The state store of `pikachu run`.
    Store(Shared),
    /// A scratch database created on first use and removed on drop (replay).
    Scratch {
        path: PathBuf,
        store: Option<Shared>,
    },
}

/// The XA group being read.
struct OpenXa {
    at: XaAt,
    /// Changes not written to the store yet.
    buf: Vec<Change>,
    /// Row-image bytes in `buf`.
    bytes: usize,
    /// The store's id once rows were written (or the PREPARE was).
    id: Option<i64>,
    /// Changes written to the store so far.
    stored: u64,
    prepared: bool,
}

impl OpenXa {
    fn rows(&self) -> u64 {
        self.stored + self.buf.len() as u64
    }
}

/// How an event group ended, at its commit.
pub(crate) enum GroupEnd {
    /// It was no XA group.
    NotXa,
    /// Its rows wait in the store for the outcome.
    Prepared,
    /// Committed in one phase: deliver these now.
    Committed(Release),
}

/// What an XA outcome found.
pub enum Outcome {
    /// `XA COMMIT` of a held transaction: deliver its rows (the held
    /// transaction stays in the store until the caller deletes it).
    Commit(HeldXa, Release),
    /// `XA ROLLBACK` of a held transaction: its rows are not delivered.
    Rollback(HeldXa),
    /// `XA ROLLBACK` of the open group itself: its `rows` are dropped.
    RolledBackOpen { rows: u64 },
    /// No held transaction has this xid: it had no watched rows, or (replay)
    /// its PREPARE is before the range, or (run) before a position set by hand.
    Unknown,
}

/// Changes to deliver, in binlog order, a chunk at a time.
pub(crate) struct Release {
    source: ReleaseFrom,
    reader: codec::Reader,
}

enum ReleaseFrom {
    Memory(Option<Vec<Change>>),
    Store {
        store: Shared,
        held: HeldXa,
        next: u64,
        /// Delete the transaction once all is read (a one-phase commit).
        delete_after: bool,
    },
}

impl Release {
    /// The next chunk of changes; `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Vec<Change>>, XaError> {
        let (store, held, next, delete_after) = match &mut self.source {
            ReleaseFrom::Memory(buf) => return Ok(buf.take()),
            ReleaseFrom::Store {
                store,
                held,
                next,
                delete_after,
            } => (store, held, next, *delete_after),
        };
        let (id, from) = (held.id, *next);
        let rows = blocking(store, move |s| s.xa_rows(id, from, RELEASE_CHUNK)).await?;
        if rows.is_empty() {
            if *next < held.rows {
                return Err(XaError::Corrupt {
                    id,
                    xid: held.xid.clone(),
                    n: *next,
                    message: format!("{} rows stored, {} found", held.rows, *next),
                });
            }
            if delete_after {
                blocking(store, move |s| s.xa_delete(&[id])).await?;
            }
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for (n, bytes) in rows {
            let change = self
                .reader
                .decode(&bytes)
                .map_err(|message| XaError::Corrupt {
                    id,
                    xid: held.xid.clone(),
                    n,
                    message,
                })?;
            out.push(change);
            *next = n + 1;
        }
        Ok(Some(out))
    }
}

/// See the module docs.
pub(crate) struct XaHold {
    slot: Slot,
    open: Option<OpenXa>,
    /// Held transactions whose outcome was read (not to be matched again;
    /// still in the store until the caller deletes them).
    finished: HashSet<i64>,
    /// Store prepared transactions without watched rows too (replay: to tell
    /// them from outcomes whose PREPARE it did not read).
    keep_empty: bool,
}

impl XaHold {
    /// Holds rows in `store` (`pikachu run`).
    pub fn new(store: Arc<Mutex<Store>>) -> XaHold {
        XaHold {
            slot: Slot::Store(store),
            open: None,
            finished: HashSet::new(),
            keep_empty: false,
        }
    }

    /// Holds rows in a scratch database at `path`, created when first
    /// needed and removed when this is dropped (`pikachu replay`); keeps a
    /// record of every prepared transaction, even without watched rows.
    pub fn scratch(path: PathBuf) -> XaHold {
        XaHold {
            slot: Slot::Scratch { path, store: None },
            open: None,
            finished: HashSet::new(),
            keep_empty: true,
        }
    }

    fn store(&mut self) -> Result<Shared, XaError> {
        match &mut self.slot {
            Slot::Store(s) => Ok(s.clone()),
            Slot::Scratch { path, store } => {
                if let Some(s) = store {
                    return Ok(s.clone());
                }
                let s = Arc::new(Mutex::new(Store::open_scratch(path)?));
                *store = Some(s.clone());
                Ok(s)
            }
        }
    }

    /// An XA group begins.
    pub fn start(&mut self, at: &XaAt) {
        self.open = Some(OpenXa {
            at: at.clone(),
            buf: Vec::new(),
            bytes: 0,
            id: None,
            stored: 0,
            prepared: false,
        });
    }

    /// Keeps `change` if an XA group is open; else hands it back (to be
    /// delivered now).
    pub async fn hold(&mut self, change: Change) -> Result<Option<Change>, XaError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(Some(change));
        };
        open.bytes += 64
            + change.before.as_ref().map_or(0, |i| i.byte_len())
            + change.after.as_ref().map_or(0, |i| i.byte_len());
        open.buf.push(change);
        if open.buf.len() >= MEMORY_ROWS || open.bytes >= MEMORY_BYTES {
            self.spill().await?;
        }
        Ok(None)
    }

    /// Writes the open group's buffered changes to the store.
    async fn spill(&mut self) -> Result<(), XaError> {
        let store = self.store()?;
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let rows = encode_all(&open.buf);
        let (at, id, first) = (open.at.clone(), open.id, open.stored);
        let id = blocking(&store, move |s| {
            let id = match id {
                Some(id) => id,
                None => s.xa_create(place(&at))?,
            };
            s.xa_append(id, first, &rows)?;
            Ok(id)
        })
        .await?;
        open.id = Some(id);
        open.stored += open.buf.len() as u64;
        open.buf.clear();
        open.bytes = 0;
        Ok(())
    }

    /// The open group is prepared at `at`: its rows are written to the store
    /// (durably when this returns). Returns how many rows it holds.
    pub async fn prepare(&mut self, at: &XaAt) -> Result<u64, XaError> {
        if self.open.is_none() {
            // A PREPARE without its group's start: nothing of it was read.
            self.start(at);
        }
        let rows = self.open.as_ref().map_or(0, OpenXa::rows);
        if rows == 0 && !self.keep_empty {
            if let Some(open) = self.open.as_mut() {
                open.prepared = true;
            }
            return Ok(0);
        }
        let store = self.store()?;
        let finished = self.finished.clone();
        let Some(open) = self.open.as_mut() else {
            return Ok(0);
        };
        let buf = encode_all(&open.buf);
        let (id, first, at) = (open.id, open.stored, at.clone());
        let id = blocking(&store, move |s| {
            s.xa_prepare(id, place(&at), first, &buf, &|o| finished.contains(&o))
        })
        .await?;
        open.id = Some(id);
        open.stored += open.buf.len() as u64;
        open.buf.clear();
        open.prepared = true;
        Ok(rows)
    }

    /// The open group ended (its commit was read): prepared, or committed
    /// in one phase.
    pub(crate) async fn end_group(&mut self) -> Result<GroupEnd, XaError> {
        let Some(open) = self.open.take() else {
            return Ok(GroupEnd::NotXa);
        };
        if open.prepared {
            return Ok(GroupEnd::Prepared);
        }
        let Some(id) = open.id else {
            return Ok(GroupEnd::Committed(Release {
                source: ReleaseFrom::Memory(Some(open.buf)),
                reader: codec::Reader::default(),
            }));
        };
        // Part of it went to the store: the rest follows, all is read back.
        let rows = open.rows();
        let held = HeldXa {
            id,
            xid: open.at.xid.to_string(),
            file: open.at.file.to_string(),
            pos: open.at.pos,
            gtid: open.at.gtid.as_deref().map(str::to_string),
            rows,
        };
        self.open = Some(open);
        self.spill().await?;
        self.open = None;
        Ok(GroupEnd::Committed(Release {
            source: ReleaseFrom::Store {
                store: self.store()?,
                held,
                next: 0,
                delete_after: true,
            },
            reader: codec::Reader::default(),
        }))
    }

    /// An outcome: of the open group itself (a rollback before PREPARE), or
    /// of a held prepared transaction.
    pub async fn outcome(&mut self, at: &XaAt, commit: bool) -> Result<Outcome, XaError> {
        if !commit
            && self
                .open
                .as_ref()
                .is_some_and(|o| o.at.xid == at.xid && !o.prepared)
        {
            let open = self.open.take();
            let rows = open.as_ref().map_or(0, OpenXa::rows);
            if let Some(id) = open.and_then(|o| o.id) {
                let store = self.store()?;
                blocking(&store, move |s| s.xa_delete(&[id])).await?;
            }
            return Ok(Outcome::RolledBackOpen { rows });
        }
        if matches!(self.slot, Slot::Scratch { store: None, .. }) {
            return Ok(Outcome::Unknown);
        }
        let store = self.store()?;
        let finished = self.finished.clone();
        let xid = at.xid.to_string();
        let found = blocking(&store, move |s| {
            s.xa_find(&xid, &|id| finished.contains(&id))
        })
        .await?;
        let Some(held) = found else {
            return Ok(Outcome::Unknown);
        };
        self.finished.insert(held.id);
        if !commit {
            return Ok(Outcome::Rollback(held));
        }
        let release = Release {
            source: ReleaseFrom::Store {
                store,
                held: held.clone(),
                next: 0,
                delete_after: false,
            },
            reader: codec::Reader::default(),
        };
        Ok(Outcome::Commit(held, release))
    }

    /// The caller deleted these finished transactions from the store.
    pub fn forgotten(&mut self, ids: &[i64]) {
        for id in ids {
            self.finished.remove(id);
        }
    }

    /// Deletes finished transactions now (replay: nothing to settle).
    pub(crate) async fn forget(&mut self, ids: Vec<i64>) -> Result<(), XaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let store = self.store()?;
        self.forgotten(&ids);
        blocking(&store, move |s| s.xa_delete(&ids)).await
    }

    /// The prepared transactions held and not finished, oldest first.
    pub async fn held(&mut self) -> Result<Vec<HeldXa>, XaError> {
        if matches!(self.slot, Slot::Scratch { store: None, .. }) {
            return Ok(Vec::new());
        }
        let store = self.store()?;
        let all = blocking(&store, |s| s.xa_held()).await?;
        Ok(all
            .into_iter()
            .filter(|h| !self.finished.contains(&h.id))
            .collect())
    }

    /// At start: discards rows of groups a stop interrupted (read again),
    /// and returns the prepared transactions held from earlier runs.
    pub(crate) async fn recover(&mut self) -> Result<Vec<HeldXa>, XaError> {
        let store = self.store()?;
        blocking(&store, |s| {
            let dropped = s.xa_discard_open()?;
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "discarded the rows of XA groups a stop interrupted (they are read again)"
                );
            }
            s.xa_held()
        })
        .await
    }
}

impl Drop for XaHold {
    fn drop(&mut self) {
        if let Slot::Scratch { path, store } = &mut self.slot {
            if store.take().is_some() {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

fn place(at: &XaAt) -> XaPlace<'_> {
    XaPlace {
        xid: &at.xid,
        file: &at.file,
        pos: at.pos,
        gtid: at.gtid.as_deref(),
    }
}

fn encode_all(changes: &[Change]) -> Vec<Vec<u8>> {
    changes
        .iter()
        .map(|c| {
            let mut b = Vec::with_capacity(128);
            codec::encode(c, &mut b);
            b
        })
        .collect()
}

/// A one-line list of held transactions for the log (the first few).
pub fn describe(held: &[HeldXa]) -> String {
    let mut parts: Vec<String> = held
        .iter()
        .take(5)
        .map(|h| {
            format!(
                "{} ({} rows, prepared at {}:{})",
                h.xid, h.rows, h.file, h.pos
            )
        })
        .collect();
    if held.len() > 5 {
        parts.push(format!("and {} more", held.len() - 5));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeKind, Column, RowImage, SourcePosition, Table};

    fn change(table: &Arc<Table>, n: u64) -> Change {
        let mut img = RowImage::default();
        img.push_json(n.to_string().as_bytes());
        Change {
            kind: ChangeKind::Insert,
            table: table.clone(),
            before: None,
            after: Some(img),
            source: SourcePosition {
                file: "mysql-bin.000001".into(),
                pos: 1000,
                gtid: Some("0-1-5".into()),
                row: n as u32,
                row_in_trx: n,
            },
            timestamp: 0,
        }
    }

    fn at(xid: &str, pos: u64) -> XaAt {
        XaAt {
            xid: xid.into(),
            file: "mysql-bin.000001".into(),
            pos,
            gtid: Some("0-1-5".into()),
        }
    }

    async fn drain(mut r: Release) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk().await.expect("chunk") {
            out.extend(chunk.iter().map(|c| c.source.row_in_trx));
        }
        out
    }

    fn rows_of(hold: &mut XaHold) -> i64 {
        let store = hold.store().expect("store");
        let s = store.lock().expect("lock");
        s.xa_held()
            .expect("held")
            .iter()
            .map(|h| h.rows as i64)
            .sum()
    }

    #[tokio::test]
    async fn hold_spill_prepare_release_and_one_phase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("open")));
        let table = Arc::new(Table {
            database: "d".into(),
            name: "t".into(),
            columns: vec![Column::new("id")],
            primary_key: vec![0],
        });
        let mut hold = XaHold::new(store.clone());
        // Not holding: changes come back.
        assert!(hold.hold(change(&table, 0)).await.expect("hold").is_some());
        assert!(matches!(
            hold.end_group().await.expect("end"),
            GroupEnd::NotXa
        ));

        // A prepared XA larger than memory: spilled, then held whole.
        let n = (MEMORY_ROWS * 2 + 10) as u64;
        hold.start(&at("a", 10));
        for i in 0..n {
            assert!(hold.hold(change(&table, i)).await.expect("hold").is_none());
        }
        assert_eq!(hold.prepare(&at("a", 20)).await.expect("prepare"), n);
        assert!(matches!(
            hold.end_group().await.expect("end"),
            GroupEnd::Prepared
        ));
        assert_eq!(rows_of(&mut hold), n as i64);
        // Its commit releases every row in order; a second outcome finds nothing.
        let Outcome::Commit(held, release) =
            hold.outcome(&at("a", 30), true).await.expect("outcome")
        else {
            panic!("not a commit");
        };
        assert_eq!(held.rows, n);
        assert_eq!(drain(release).await, (0..n).collect::<Vec<_>>());
        assert!(matches!(
            hold.outcome(&at("a", 40), true).await.expect("again"),
            Outcome::Unknown
        ));
        assert!(hold.held().await.expect("held").is_empty(), "finished");
        hold.forget(vec![held.id]).await.expect("forget");
        assert_eq!(rows_of(&mut hold), 0);

        // One phase (MySQL's XA COMMIT … ONE PHASE), spilled: released at
        // the group's end and removed from the store.
        hold.start(&at("b", 50));
        for i in 0..n {
            hold.hold(change(&table, i)).await.expect("hold");
        }
        let GroupEnd::Committed(release) = hold.end_group().await.expect("end") else {
            panic!("not committed");
        };
        assert_eq!(drain(release).await, (0..n).collect::<Vec<_>>());
        let open_left = store
            .lock()
            .expect("lock")
            .xa_discard_open()
            .expect("discard");
        assert_eq!(
            open_left, 0,
            "the one-phase rows were deleted after the release"
        );

        // Small one phase: from memory. Rollback before prepare: dropped.
        hold.start(&at("c", 60));
        hold.hold(change(&table, 7)).await.expect("hold");
        let GroupEnd::Committed(release) = hold.end_group().await.expect("end") else {
            panic!("not committed");
        };
        assert_eq!(drain(release).await, vec![7]);
        hold.start(&at("d", 70));
        hold.hold(change(&table, 8)).await.expect("hold");
        assert!(matches!(
            hold.outcome(&at("d", 80), false).await.expect("rollback"),
            Outcome::RolledBackOpen { rows: 1 }
        ));
        assert!(matches!(
            hold.end_group().await.expect("end"),
            GroupEnd::NotXa
        ));

        // A prepared XA without rows stores nothing; its rollback is unknown.
        hold.start(&at("e", 90));
        assert_eq!(hold.prepare(&at("e", 91)).await.expect("prepare"), 0);
        hold.end_group().await.expect("end");
        assert!(matches!(
            hold.outcome(&at("e", 92), false).await.expect("o"),
            Outcome::Unknown
        ));

        // A restart finds a prepared XA; a rollback then drops it.
        hold.start(&at("f", 100));
        hold.hold(change(&table, 9)).await.expect("hold");
        hold.prepare(&at("f", 101)).await.expect("prepare");
        hold.end_group().await.expect("end");
        drop(hold);
        let mut hold = XaHold::new(store.clone());
        let held = hold.recover().await.expect("recover");
        assert_eq!(
            held.iter().map(|h| h.xid.as_str()).collect::<Vec<_>>(),
            ["f"]
        );
        let Outcome::Rollback(h) = hold.outcome(&at("f", 110), false).await.expect("o") else {
            panic!("not a rollback");
        };
        assert_eq!(h.rows, 1);
    }

    #[tokio::test]
    async fn scratch_file_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scratch.db");
        let mut hold = XaHold::scratch(path.clone());
        assert!(matches!(
            hold.outcome(&at("x", 1), true).await.expect("o"),
            Outcome::Unknown
        ));
        assert!(!path.exists(), "created only when needed");
        // Replay keeps prepared XAs without watched rows, to tell them apart.
        hold.start(&at("y", 2));
        hold.prepare(&at("y", 3)).await.expect("prepare");
        hold.end_group().await.expect("end");
        assert!(path.exists());
        assert!(matches!(
            hold.outcome(&at("y", 4), false).await.expect("o"),
            Outcome::Rollback(_)
        ));
        drop(hold);
        assert!(!path.exists());
    }
}
