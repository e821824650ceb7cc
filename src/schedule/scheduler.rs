//! `copiste scheduler`: tokio-cron-scheduler fires each schedule; a tick
//! computes its slot (the scheduled instant, not "now") and enqueues with
//! the slot's key. At start, a slot missed within a schedule's catch-up
//! window is enqueued (once: the key is the slot's).

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};

use super::Schedule;
use crate::{
    app::App,
    db::Db,
    ledger::Enqueued,
    op::{Actor, OpError},
};

/// Enqueues the slot of `schedule` at or just before `now`.
pub async fn tick(
    db: &Db,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<(DateTime<Utc>, Enqueued)>> {
    // A tick fires at its slot or a moment after: the slot is the latest
    // one at or before now (plus a second for clock jitter).
    let Some(slot) = schedule.slot_at_or_before(now + chrono::Duration::seconds(1)) else {
        return Ok(None);
    };
    let mut tx = db.begin().await?;
    let enqueued = schedule.enqueue_slot(&mut tx, slot, "scheduler").await?;
    tx.commit().await?;
    Ok(Some((slot, enqueued)))
}

/// Enqueues the current slot of the schedule named `name` now (an
/// operator's `schedules run`): the same job, under the same key, as the
/// scheduler's tick for that slot. Admin and the scheduler only.
pub async fn run_slot(
    app: &App,
    actor: &Actor,
    schedules: &[Schedule],
    name: &str,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, Enqueued)>, OpError> {
    actor.require_operator("run a schedule's slot")?;
    let Some(schedule) = schedules.iter().find(|s| s.name == name) else {
        let names: Vec<_> = schedules.iter().map(|s| s.name.as_str()).collect();
        return Err(OpError::not_found(format!(
            "schedule {name:?} (known: {})",
            names.join(", ")
        )));
    };
    let Some(slot) = schedule.slot_at_or_before(now + chrono::Duration::seconds(1)) else {
        return Ok(None);
    };
    let mut tx = app.db.begin().await?;
    let enqueued = schedule
        .enqueue_slot(&mut tx, slot, &actor.label())
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await?;
    Ok(Some((slot, enqueued)))
}

/// Enqueues, for each enabled schedule with a catch-up window, its last
/// slot when it is at most that old.
pub async fn catch_up(
    db: &Db,
    schedules: &[Schedule],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, DateTime<Utc>, Enqueued)>> {
    let mut out = Vec::new();
    for s in schedules
        .iter()
        .filter(|s| s.enabled && !s.catch_up.is_zero())
    {
        let Some(slot) = s.slot_at_or_before(now) else {
            continue;
        };
        let age = (now - slot).to_std().unwrap_or(Duration::ZERO);
        if age <= s.catch_up {
            let mut tx = db.begin().await?;
            let enqueued = s.enqueue_slot(&mut tx, slot, "scheduler").await?;
            tx.commit().await?;
            if let Enqueued::Created(id) = enqueued {
                tracing::info!(schedule = %s.name, %slot, job.id = %id, "missed slot caught up");
                metrics::counter!("copiste_schedule_slots_total", "schedule" => s.name.clone(), "outcome" => "caught_up")
                    .increment(1);
            }
            out.push((s.name.clone(), slot, enqueued));
        }
    }
    Ok(out)
}

/// Counts a slot of `schedule`: `fired` (enqueued at its time),
/// `already` (another scheduler enqueued it), `missed` (it could not be
/// enqueued; caught up at the next start if within the catch-up window),
/// `caught_up` (a missed slot enqueued at start).
fn slots(schedule: &str, outcome: &'static str) {
    metrics::counter!("copiste_schedule_slots_total", "schedule" => schedule.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A running scheduler.
pub struct Scheduler {
    inner: JobScheduler,
}

impl Scheduler {
    /// Catches missed slots up, then starts firing every enabled schedule.
    pub async fn start(db: Db, schedules: Vec<Schedule>) -> anyhow::Result<Self> {
        catch_up(&db, &schedules, Utc::now()).await?;
        let inner = JobScheduler::new()
            .await
            .context("creating the cron scheduler")?;
        for schedule in schedules.into_iter().filter(|s| s.enabled) {
            let name = schedule.name.clone();
            let db = db.clone();
            let tz = schedule.timezone;
            let job = Job::new_async_tz(schedule.cron_text.clone(), tz, move |_, _| {
                let db = db.clone();
                let schedule = schedule.clone();
                Box::pin(async move {
                    match tick(&db, &schedule, Utc::now()).await {
                        Ok(Some((slot, Enqueued::Created(id)))) => {
                            slots(&schedule.name, "fired");
                            tracing::info!(schedule = %schedule.name, %slot, job.id = %id, "slot enqueued")
                        }
                        Ok(Some((slot, Enqueued::Existing(id)))) => {
                            slots(&schedule.name, "already");
                            tracing::debug!(schedule = %schedule.name, %slot, job.id = %id, "slot already enqueued")
                        }
                        Ok(None) => {}
                        Err(e) => {
                            slots(&schedule.name, "missed");
                            tracing::error!(schedule = %schedule.name, error = %format!("{e:#}"), "cannot enqueue the slot")
                        }
                    }
                })
            })
            .with_context(|| format!("scheduling {name}"))?;
            inner
                .add(job)
                .await
                .with_context(|| format!("adding schedule {name}"))?;
        }
        inner.start().await.context("starting the cron scheduler")?;
        Ok(Self { inner })
    }

    /// Stops firing.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.inner
            .shutdown()
            .await
            .context("stopping the cron scheduler")
    }
}
