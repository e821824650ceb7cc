//! The fault suite (issue 18): real `copiste worker` processes started from
//! the built binary, PostgreSQL and Redis of the suite's own (throwaway,
//! on their own ports), and a stand-in for Cyclades and Imag'In that fails
//! on demand and records every effect. Each scenario breaks something for
//! real (SIGKILL, a Redis restart or FLUSHALL, `pg_ctl stop -m immediate`,
//! payloads no worker can run) and checks the outcome: every job
//! finishes, every grade and count takes effect exactly once.
//!
//! Every test is `#[ignore]`: the normal `cargo test` skips them, and
//! `scripts/test` runs them one at a time, beside its later steps (the
//! suite's servers are its own):
//!
//! ```text
//! cargo test --locked --test integration faults:: -- --ignored --test-threads 1 --nocapture
//! ```
//!
//! Each scenario prints one line `faults | <scenario> | <figures>` and
//! appends it to `$CARGO_TARGET_TMPDIR/faults-summary.txt`; the whole table
//! so far is printed after it.

pub mod harness;
pub mod stand_in;

mod a_worker_kills;
mod b_redis_loss;
mod c_postgres_restart;
mod d_soak;
mod e_bad_payloads;
mod f_zip_kill;
mod g_zip_postgres;
