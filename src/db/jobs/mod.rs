//! Job ledger queries. Every transition is one statement that also writes
//! its `job_events` row, and every transition of a running job is fenced
//! by (worker, attempt) so that a worker that lost its lease cannot
//! overwrite the outcome of the run that replaced it.

mod admin;
mod checkpoints;
mod delivery;
mod enqueue;
mod events;
mod listing;
mod runs;
mod superseded;

// The ledger is one adapter to its callers (`db::jobs::claim_many`,
// `db::jobs::JobRow`): the files below split it by concern only, so their
// items are reached here rather than through each file's name.
pub use admin::{cancel, retry_by_hand, run_now};
pub use checkpoints::{
    IdleCheckpointEntry, checkpoint, counted_attempts, idle_checkpoint_entries,
    remove_idle_checkpoint_entry, save_checkpoint,
};
pub use delivery::{PumpLock, expire_leases, unmark_pushed};
pub use enqueue::{
    Enqueued, NewJob, NewJobs, NewKeyedJobs, insert, insert_many, insert_many_keyed,
};
pub use events::{EventRow, count_events, events};
pub use listing::{
    After, JobFilter, JobRow, count_all, count_capped, final_counts, get, list_page,
};
pub use runs::{
    Claimed, Finished, bury, claim_many, extend_leases, finish_many, release, reschedule,
    set_progress,
};
pub use superseded::superseded;
