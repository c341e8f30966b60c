//! Webhook delivery: the engine that POSTs each routed change to its task's
//! callback URL, ordered per row and parallel across rows, retried with
//! backoff, dead-lettered when retries are exhausted, never dropped.
//!
//! - [`engine`]: [`Dispatcher`] (submit / watermark / shutdown), [`Job`], [`Stats`].
//! - [`keys`]: ordering keys of a change.
//! - [`TaskFigures`]: a task's state and backlog, for health and metrics.
//! - [`http`]: the HTTP client, Standard Webhooks headers and signature.
//! - [`dlq`]: the `pikachu dlq` commands.
//!
//! Retry delays come from [`crate::backoff`]; per-task outcomes go to an
//! [`Observer`] (the metrics) that the pipeline sets: this module imports
//! nothing from the source, the server or the metrics.
//!
//! The contract for receivers is in `docs/webhooks.md`.

pub mod dlq;
pub(crate) mod engine;
mod figures;
pub(crate) mod http;
pub(crate) mod keys;

pub use engine::{Dispatcher, Job, Stats};
pub(crate) use engine::{Observer, SubmitError};
pub use figures::{TaskFigures, TaskStateName};
pub use http::{http_client, signing_key, SetupError};
pub use keys::{ordering_keys, OrderingKeys};
