//! Results on their way from runs to readers, in one direction:
//!
//! - [`writer`]: the one task that records results. Runs hand their results
//!   over a channel; it appends them to the store in batches (which assigns
//!   cursors), then publishes them in cursor order, followed by the end of
//!   any task they ended. Nothing else appends, so order needs no lock.
//! - [`fanout`]: subscribers indexed by task (plus "all tasks"); a batch is
//!   shared behind an `Arc`, never cloned per reader, and a reader that falls
//!   behind its bound is cut off alone, never slowing the writer.
//! - [`stream`]: one reader's stream: replay from the store after a cursor,
//!   then the live part, with no gap and no duplicate at the seam.
//!
//! Knows nothing of gRPC; the API maps a [`stream::StreamEnd`] to a status.

pub mod fanout;
pub mod stream;
pub(crate) mod writer;
