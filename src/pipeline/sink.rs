//! The sink contract between the fan-out and an output, and the outputs of
//! today: the webhook delivery engine, stdout and null.
//!
//! A sink takes rendered jobs in sequence order ([`Sink::send`], which
//! waits while the sink has no room: the backpressure that makes the
//! binlog reader wait) and reports settlement the same way whatever it is:
//! a watermark, the smallest sequence number not settled yet (or the next
//! one when all are). Settled means done for good: delivered or durably
//! dead-lettered for the webhook engine, written for stdout, counted for
//! null; a later sink (JetStream, a task's durable backlog) settles a job
//! once it is durably queued. The checkpoint only ever moves to a
//! transaction end below the watermark (see [`super::commits`]).

use std::future::Future;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::fanout::Rendered;
use crate::deliver::{Dispatcher, Stats, SubmitError};

/// Why a sink did not take a job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    /// The delivery engine is stopping or gone.
    #[error(transparent)]
    Delivery(#[from] SubmitError),
    /// Writing the output failed (stdout closed, disk full).
    #[error("cannot write to {what}: {source}")]
    Write {
        /// The output, for the message.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a sink left when it was closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// The final watermark.
    pub watermark: u64,
    /// Jobs taken and not settled (read again after a restart: the
    /// watermark stays below them).
    pub unsettled: u64,
    /// Jobs settled by being dead-lettered (0 for sinks that cannot fail).
    pub dead_lettered: u64,
}

/// An output of the pipeline.
pub(crate) trait Sink {
    /// Takes one job; waits while the sink has no room. Jobs come in
    /// increasing `seq`.
    fn send(&mut self, job: Rendered<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The watermark: every job with a smaller `seq` is settled. Never
    /// decreases.
    fn settled(&self) -> u64;

    /// Waits until the watermark may have moved and returns it; `None`
    /// once it never will (the sink is gone). A sink that settles inside
    /// [`Sink::send`] never returns (its watermark is read after a send).
    fn settled_changed(&mut self) -> impl Future<Output = Option<u64>> + Send;

    /// Stops taking jobs and settles what it holds within `grace`.
    fn close(&mut self, grace: Duration) -> impl Future<Output = Settlement> + Send;
}

/// The webhook delivery engine (ordered per row, parallel across rows,
/// retried, dead-lettered).
pub(crate) struct WebhookSink {
    /// The engine.
    dispatcher: Dispatcher,
    /// Its watermark.
    watermark: watch::Receiver<u64>,
    /// Its counters.
    stats: Arc<Stats>,
}

impl WebhookSink {
    /// A sink over a started engine.
    pub fn new(dispatcher: Dispatcher) -> WebhookSink {
        WebhookSink {
            watermark: dispatcher.watermark(),
            stats: dispatcher.stats(),
            dispatcher,
        }
    }
}

impl Sink for WebhookSink {
    async fn send(&mut self, job: Rendered<'_>) -> Result<(), SinkError> {
        Ok(self.dispatcher.submit(job.into_job()).await?)
    }

    fn settled(&self) -> u64 {
        *self.watermark.borrow()
    }

    async fn settled_changed(&mut self) -> Option<u64> {
        self.watermark.changed().await.ok()?;
        Some(*self.watermark.borrow_and_update())
    }

    async fn close(&mut self, grace: Duration) -> Settlement {
        let report = self.dispatcher.shutdown(grace).await;
        Settlement {
            watermark: report.watermark,
            unsettled: report.unsettled,
            dead_lettered: self.stats.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// One payload per line on a writer (stdout); a job is settled once written.
pub(crate) struct WriteSink<'a> {
    /// Where the lines go.
    out: &'a mut (dyn Write + Send),
    /// The watermark.
    next: u64,
}

impl<'a> WriteSink<'a> {
    /// A sink writing to `out`.
    pub fn new(out: &'a mut (dyn Write + Send)) -> WriteSink<'a> {
        WriteSink { out, next: 0 }
    }
}

impl Sink for WriteSink<'_> {
    async fn send(&mut self, mut job: Rendered<'_>) -> Result<(), SinkError> {
        let body = job.body_mut();
        body.push(b'\n');
        self.out
            .write_all(body)
            .map_err(|source| SinkError::Write {
                what: "stdout",
                source,
            })?;
        self.next = job.seq + 1;
        Ok(())
    }

    fn settled(&self) -> u64 {
        self.next
    }

    async fn settled_changed(&mut self) -> Option<u64> {
        std::future::pending().await
    }

    async fn close(&mut self, _grace: Duration) -> Settlement {
        let _ = self.out.flush();
        Settlement {
            watermark: self.next,
            ..Settlement::default()
        }
    }
}

/// Takes jobs and drops them: the rendering is the work (the catch-up
/// benchmark measures decoding and encoding).
#[derive(Debug, Default)]
pub(crate) struct NullSink {
    /// The watermark.
    next: u64,
}

impl Sink for NullSink {
    async fn send(&mut self, job: Rendered<'_>) -> Result<(), SinkError> {
        self.next = job.seq + 1;
        Ok(())
    }

    fn settled(&self) -> u64 {
        self.next
    }

    async fn settled_changed(&mut self) -> Option<u64> {
        std::future::pending().await
    }

    async fn close(&mut self, _grace: Duration) -> Settlement {
        Settlement {
            watermark: self.next,
            ..Settlement::default()
        }
    }
}
