//! The middle stage, shared by `pikachu run` and `pikachu replay`: one
//! change in, one rendered job out per task that wants it, in config order.
//! For each such task: the change id, the payload (rendered into a buffer
//! the fan-out keeps, so a sink that only borrows it allocates nothing per
//! change), the sequence number (strictly increasing in binlog order, the
//! unit of settlement), and on request the ordering keys.
//!
//! This is where a task's shape of a change is decided: the routing issue's
//! patterns, columns, filters and formats plug in here, and the snapshot's
//! reads enter here, as changes like the binlog's.

use std::sync::Arc;

use crate::config::TaskConfig;
use crate::deliver::{self, Job, OrderingKeys};
use crate::event::{payload, Change};
use crate::route::Router;
use crate::snapshot::payload::{read_id, render_read, ReadSource};
use crate::source::binlogs::History;

/// Payload buffer size before the first change is rendered; it grows to
/// the largest payload seen (plus a margin), so a sink that takes the
/// buffer gets one allocation of the right size per job.
const FIRST_BODY_HINT: usize = 512;

/// Routes and renders changes for the configured tasks.
#[derive(Debug)]
pub(crate) struct FanOut {
    /// Which tasks want which change.
    router: Arc<Router>,
    /// Each task's `task_id`, by task index.
    task_ids: Vec<String>,
    /// The binlog history marker, for change ids.
    history: u32,
    /// The mutable half: kept apart so that a change's routes (borrowed
    /// from `router`) can be walked while jobs are rendered.
    state: RenderState,
}

/// What the fan-out reuses from one change to the next.
#[derive(Debug)]
struct RenderState {
    /// Sequence number of the next job.
    next_seq: u64,
    /// The payload buffer (empty with no capacity once a sink took it).
    body: Vec<u8>,
    /// Capacity to give `body` when a sink took it.
    body_hint: usize,
    /// Scratch space for the ordering keys.
    scratch: Vec<u8>,
}

impl FanOut {
    /// A fan-out for `tasks`, routed by `router`, with change ids in the
    /// binlog history `history`.
    pub fn new(router: Arc<Router>, tasks: &[TaskConfig], history: History) -> FanOut {
        FanOut {
            router,
            task_ids: tasks.iter().map(|t| t.task_id.clone()).collect(),
            history: history.0,
            state: RenderState {
                next_seq: 0,
                body: Vec::new(),
                body_hint: FIRST_BODY_HINT,
                scratch: Vec::with_capacity(64),
            },
        }
    }

    /// The sequence number the next job will get: every job rendered so
    /// far has a smaller one.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// The jobs of `change`, one per task that wants it, in config order.
    /// A lending iterator: each [`Rendered`] borrows the fan-out's buffers
    /// until the next call of [`Jobs::next`].
    pub fn jobs<'a>(
        &'a mut self,
        change: &'a Change,
    ) -> Jobs<'a, impl Iterator<Item = usize> + 'a> {
        Jobs {
            tasks: self.router.tasks_for(change),
            change,
            task_ids: &self.task_ids,
            history: self.history,
            state: &mut self.state,
        }
    }
}

/// Where a snapshot read comes from, for [`FanOut::read_job`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadMeta<'a> {
    /// The snapshot's id.
    pub snapshot_id: i64,
    /// The chunk's number in its table.
    pub chunk: u64,
    /// The paging key's column indexes (the read's id names its values).
    pub key: &'a [usize],
    /// When the chunk was read, seconds since the epoch.
    pub read_at: i64,
}

impl FanOut {
    /// The job of one snapshot read for task `task`: `read` holds the row
    /// as an insert would (`after`), with the chunk's high watermark as its
    /// position. Rendered as `"event":"read"` with the snapshot's source
    /// and a deterministic id; ordered with the row's changes (its
    /// ordering keys are an insert's).
    pub(crate) fn read_job<'a>(
        &'a mut self,
        task: usize,
        read: &'a Change,
        meta: &ReadMeta<'_>,
    ) -> Rendered<'a> {
        let task_id = &self.task_ids[task];
        let image = read.after.as_ref();
        let empty = crate::event::RowImage::default();
        let image = image.unwrap_or(&empty);
        let id = read_id(meta.snapshot_id, &read.table, image, meta.key, task_id);
        let st = &mut self.state;
        if st.body.capacity() == 0 {
            st.body.reserve(st.body_hint);
        }
        st.body.clear();
        let source = ReadSource {
            snapshot_id: meta.snapshot_id,
            chunk: meta.chunk,
            file: &read.source.file,
            pos: read.source.pos,
        };
        render_read(
            &mut st.body,
            &read.table,
            image,
            task_id,
            &id,
            &source,
            meta.read_at,
        );
        st.body_hint = st.body_hint.max(st.body.len() + 64);
        let seq = st.next_seq;
        st.next_seq += 1;
        Rendered {
            task,
            change: read,
            id,
            seq,
            body: &mut st.body,
            scratch: &mut st.scratch,
        }
    }
}

/// The jobs of one change, see [`FanOut::jobs`].
pub(crate) struct Jobs<'a, I> {
    /// Indexes of the tasks that want the change, still to render.
    tasks: I,
    /// The change.
    change: &'a Change,
    /// Each task's `task_id`.
    task_ids: &'a [String],
    /// The binlog history marker.
    history: u32,
    /// Buffers and the sequence counter.
    state: &'a mut RenderState,
}

impl<I: Iterator<Item = usize>> Jobs<'_, I> {
    /// Renders the job for the next task that wants the change.
    #[allow(clippy::should_implement_trait)] // lending: not an `Iterator`
    pub fn next(&mut self) -> Option<Rendered<'_>> {
        let task = self.tasks.next()?;
        let task_id = &self.task_ids[task];
        let id = payload::change_id(self.change, task_id, self.history);
        let st = &mut *self.state;
        if st.body.capacity() == 0 {
            st.body.reserve(st.body_hint);
        }
        st.body.clear();
        payload::render(&mut st.body, self.change, task_id, &id);
        st.body_hint = st.body_hint.max(st.body.len() + 64);
        let seq = st.next_seq;
        st.next_seq += 1;
        Some(Rendered {
            task,
            change: self.change,
            id,
            seq,
            body: &mut st.body,
            scratch: &mut st.scratch,
        })
    }
}

/// One change rendered for one task: what a sink gets.
#[derive(Debug)]
pub(crate) struct Rendered<'a> {
    /// Index of the task in the config's task list.
    pub task: usize,
    /// The change.
    pub change: &'a Change,
    /// The change id (`webhook-id`).
    pub id: String,
    /// Strictly increasing in binlog order; settled when the sink says so.
    pub seq: u64,
    /// The payload (a JSON object), in the fan-out's buffer.
    body: &'a mut Vec<u8>,
    /// Scratch space for [`Rendered::ordering_keys`].
    scratch: &'a mut Vec<u8>,
}

impl Rendered<'_> {
    /// The payload.
    pub fn body(&self) -> &[u8] {
        self.body
    }

    /// The payload buffer, for a sink that writes it out in place (and
    /// may append to it: the fan-out clears it before the next job).
    pub(crate) fn body_mut(&mut self) -> &mut Vec<u8> {
        self.body
    }

    /// The keys whose order this job must keep (see [`deliver::keys`]);
    /// computed on request, for the sinks that keep an order.
    pub fn ordering_keys(&mut self) -> OrderingKeys {
        deliver::ordering_keys(self.task, self.change, self.scratch)
    }

    /// The delivery engine's job: takes the payload buffer (no copy).
    pub(crate) fn into_job(mut self) -> Job {
        let keys = self.ordering_keys();
        Job {
            task: self.task,
            keys,
            body: std::mem::take(self.body).into(),
            id: self.id.into(),
            seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EventKind, OnFailure};
    use crate::event::{ChangeKind, Column, RowImage, SourcePosition, Table};

    const ALL: [EventKind; 3] = EventKind::ALL;

    fn task(id: &str, table: &str, events: &[EventKind]) -> TaskConfig {
        TaskConfig {
            task_id: id.into(),
            name: id.into(),
            database: None,
            table_name: table.into(),
            events: events.to_vec(),
            callback_url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            headers: Vec::new(),
            batch: None,
            on_failure: OnFailure::default(),
            snapshot: Default::default(),
            limits: Default::default(),
        }
    }

    fn image(vals: &[&str]) -> RowImage {
        let mut r = RowImage::default();
        for v in vals {
            r.push_json(v.as_bytes());
        }
        r
    }

    fn change(table: &str, kind: ChangeKind, pos: u64) -> Change {
        let (before, after) = match kind {
            ChangeKind::Insert => (None, Some(image(&["1", "\"a\""]))),
            ChangeKind::Update => (Some(image(&["1", "\"a\""])), Some(image(&["1", "\"b\""]))),
            ChangeKind::Delete => (Some(image(&["1", "\"b\""])), None),
        };
        Change {
            kind,
            table: Arc::new(Table {
                database: "shop".into(),
                name: table.into(),
                columns: vec![Column::new("id"), Column::new("name")],
                primary_key: vec![0],
            }),
            before,
            after,
            source: SourcePosition {
                file: "mysql-bin.000001".into(),
                pos,
                gtid: None,
                row: 0,
                row_in_trx: 0,
            },
            timestamp: 1_672_574_400,
        }
    }

    fn fan_out(tasks: &[TaskConfig]) -> FanOut {
        let router = Arc::new(Router::new(tasks, "shop"));
        FanOut::new(router, tasks, History(7))
    }

    /// (task, id, seq, body) of every job of `c`.
    fn all(f: &mut FanOut, c: &Change) -> Vec<(usize, String, u64, String)> {
        let mut jobs = f.jobs(c);
        let mut v = Vec::new();
        while let Some(r) = jobs.next() {
            let body = String::from_utf8_lossy(r.body()).into_owned();
            v.push((r.task, r.id.clone(), r.seq, body));
        }
        v
    }

    fn tasks_and_seqs(jobs: &[(usize, String, u64, String)]) -> Vec<(usize, u64)> {
        jobs.iter().map(|j| (j.0, j.2)).collect()
    }

    #[test]
    fn one_job_per_task_that_wants_the_change_in_config_order() {
        let tasks = [
            task("a", "orders", &ALL),
            task("b", "users", &ALL),
            task("c", "orders", &[EventKind::Delete]),
            task("d", "orders", &[EventKind::Insert]),
        ];
        let mut f = fan_out(&tasks);
        let jobs = all(&mut f, &change("orders", ChangeKind::Insert, 100));
        assert_eq!(tasks_and_seqs(&jobs), [(0, 0), (3, 1)]);
        assert_eq!(f.next_seq(), 2);
        // Nobody wants it: no job, no seq used.
        assert!(all(&mut f, &change("items", ChangeKind::Insert, 200)).is_empty());
        assert_eq!(f.next_seq(), 2);
        let jobs = all(&mut f, &change("orders", ChangeKind::Delete, 300));
        assert_eq!(tasks_and_seqs(&jobs), [(0, 2), (2, 3)]);
        assert_eq!(f.next_seq(), 4);
    }

    #[test]
    fn renders_what_payload_renders_with_each_task_id() {
        let tasks = [task("a", "orders", &ALL), task("b", "orders", &ALL)];
        let mut f = fan_out(&tasks);
        let c = change("orders", ChangeKind::Update, 100);
        let jobs = all(&mut f, &c);
        assert_eq!(jobs.len(), 2);
        for (t, id, _, body) in &jobs {
            let task_id = &tasks[*t].task_id;
            assert_eq!(*id, payload::change_id(&c, task_id, 7));
            let mut want = Vec::new();
            payload::render(&mut want, &c, task_id, id);
            assert_eq!(body.as_bytes(), want.as_slice());
        }
        assert_ne!(jobs[0].1, jobs[1].1);
        let v: serde_json::Value = serde_json::from_str(&jobs[1].3).expect("JSON");
        assert_eq!(v["task_id"], "b", "{v}");
    }

    #[test]
    fn a_sink_may_append_to_or_take_the_buffer() {
        let tasks = [task("a", "orders", &ALL)];
        let mut f = fan_out(&tasks);
        let c = change("orders", ChangeKind::Insert, 100);
        let first = all(&mut f, &c)[0].3.clone();
        {
            let mut jobs = f.jobs(&c);
            let mut r = jobs.next().expect("a job");
            r.body_mut().extend_from_slice(b"\n");
        }
        // Appended to: cleared before the next render.
        assert_eq!(all(&mut f, &c)[0].3, first);
        let job = {
            let mut jobs = f.jobs(&c);
            jobs.next().expect("a job").into_job()
        };
        assert_eq!(&job.body[..], first.as_bytes());
        assert_eq!((job.task, job.seq), (0, 3));
        assert_eq!(&*job.id, payload::change_id(&c, "a", 7));
        let keys = deliver::ordering_keys(0, &c, &mut Vec::new());
        assert_eq!(
            job.keys.iter().collect::<Vec<_>>(),
            keys.iter().collect::<Vec<_>>()
        );
        // Taken: the next job is rendered into a new buffer.
        assert_eq!(all(&mut f, &c)[0].3, first);
    }
}
