//! Schedules: one TOML file per scheduled job under `jobs/`, and the slot
//! arithmetic the scheduler relies on. A cron tick only enqueues a job,
//! with the idempotency key `schedule:<name>:<slot in UTC>`, so that any
//! number of scheduler replicas produce one job per slot.

pub mod scheduler;

use std::{
    path::{Path, PathBuf},
    str::FromStr as _,
    time::Duration,
};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{Cron, parser::CronParser, parser::Seconds};
use serde::Deserialize;

use crate::{
    db::Tx,
    jobs::registry,
    ledger::{self as jobs, EnqueueOptions, Enqueued},
};

/// A schedule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    name: String,
    /// `sec min hour day-of-month month day-of-week`.
    cron: String,
    #[serde(default = "default_timezone")]
    timezone: String,
    kind: String,
    #[serde(default)]
    params: toml::Table,
    /// A slot missed by at most this long while no scheduler ran is
    /// enqueued at start.
    #[serde(default)]
    catch_up_secs: u64,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn default_timezone() -> String {
    "Europe/Paris".into()
}

fn enabled() -> bool {
    true
}

/// A loaded, valid schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub file: PathBuf,
    pub cron_text: String,
    cron: Cron,
    pub timezone: Tz,
    pub kind: &'static str,
    pub params: serde_json::Value,
    pub catch_up: Duration,
    pub enabled: bool,
}

/// What is wrong with a schedule file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct ScheduleError {
    pub file: PathBuf,
    pub field: &'static str,
    pub reason: String,
}

/// Parses a cron expression with seconds, as tokio-cron-scheduler does.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| format!("{e} (expected `sec min hour day-of-month month day-of-week`)"))
}

impl Schedule {
    /// Parses and checks one schedule file.
    pub fn load(file: &Path) -> Result<Self, ScheduleError> {
        let err = |field: &'static str, reason: String| ScheduleError {
            file: file.to_path_buf(),
            field,
            reason,
        };
        let text = std::fs::read_to_string(file).map_err(|e| err("file", e.to_string()))?;
        let raw: ScheduleFile = toml::from_str(&text).map_err(|e| {
            let field = [
                "name",
                "cron",
                "timezone",
                "kind",
                "params",
                "catch_up_secs",
                "enabled",
            ]
            .into_iter()
            .find(|f| e.message().contains(&format!("`{f}`")))
            .unwrap_or("file");
            err(field, e.message().to_owned())
        })?;
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(err(
                "name",
                format!("{:?} must be lower-case letters, digits and '-'", raw.name),
            ));
        }
        let cron = parse_cron(&raw.cron).map_err(|e| err("cron", e))?;
        let timezone = Tz::from_str(&raw.timezone)
            .map_err(|_| err("timezone", format!("unknown time zone {:?}", raw.timezone)))?;
        let handler = registry::find(&raw.kind).map_err(|e| err("kind", e))?;
        let params = serde_json::to_value(&raw.params)
            .map_err(|e| err("params", format!("not representable as JSON: {e}")))?;
        handler
            .check(params.clone())
            .map_err(|e| err("params", e))?;
        Ok(Self {
            name: raw.name,
            file: file.to_path_buf(),
            cron_text: raw.cron,
            cron,
            timezone,
            kind: handler.name,
            params,
            catch_up: Duration::from_secs(raw.catch_up_secs),
            enabled: raw.enabled,
        })
    }

    /// The next `n` slots strictly after `after`.
    pub fn next_slots(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let start = after.with_timezone(&self.timezone);
        self.cron
            .iter_after(start)
            .take(n)
            .map(|t| t.with_timezone(&Utc))
            .collect()
    }

    /// The latest slot at or before `at`.
    pub fn slot_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.timezone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The idempotency key of a slot.
    pub fn key(&self, slot: DateTime<Utc>) -> String {
        format!(
            "schedule:{}:{}",
            self.name,
            slot.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }

    /// Enqueues the job of `slot` (once, whatever the number of callers).
    pub async fn enqueue_slot(
        &self,
        tx: &mut Tx,
        slot: DateTime<Utc>,
        by: &str,
    ) -> Result<Enqueued, jobs::EnqueueError> {
        let handler = registry::find(self.kind).map_err(jobs::EnqueueError::Invalid)?;
        jobs::enqueue_raw(
            tx,
            handler.name,
            self.params.clone(),
            handler.max_attempts,
            handler.priority,
            EnqueueOptions::by(by).key(self.key(slot)),
        )
        .await
    }
}

/// Loads every `*.toml` of `dir`, in name order; the first bad file stops
/// the load with its name and field. Names are unique.
pub fn load_dir(dir: &Path) -> Result<Vec<Schedule>, ScheduleError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScheduleError {
        file: dir.to_path_buf(),
        field: "directory",
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out: Vec<Schedule> = Vec::with_capacity(files.len());
    for file in files {
        let schedule = Schedule::load(&file)?;
        if let Some(other) = out.iter().find(|s| s.name == schedule.name) {
            return Err(ScheduleError {
                file,
                field: "name",
                reason: format!(
                    "{:?} is already the name of {}",
                    schedule.name,
                    other.file.display()
                ),
            });
        }
        out.push(schedule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str) -> Schedule {
        Schedule {
            name: "t".into(),
            file: "t.toml".into(),
            cron_text: cron.into(),
            cron: parse_cron(cron).expect("cron"),
            timezone: chrono_tz::Europe::Paris,
            kind: "noop",
            params: serde_json::json!({}),
            catch_up: Duration::ZERO,
            enabled: true,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn two_am_paris_is_one_am_utc_in_winter_and_midnight_in_summer() {
        let s = schedule("0 0 2 * * *");
        assert_eq!(
            s.next_slots(utc("2026-12-01T12:00:00Z"), 1),
            vec![utc("2026-12-02T01:00:00Z")]
        );
        assert_eq!(
            s.next_slots(utc("2026-07-01T12:00:00Z"), 1),
            vec![utc("2026-07-02T00:00:00Z")]
        );
    }

    #[test]
    fn spring_forward_fires_once_at_the_shifted_instant() {
        // 2027-03-28: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let s = schedule("0 30 2 * * *");
        let slots = s.next_slots(utc("2027-03-27T12:00:00Z"), 3);
        assert_eq!(
            slots,
            vec![
                utc("2027-03-28T01:00:00Z"), // 03:00 CEST, the first valid instant
                utc("2027-03-29T00:30:00Z"),
                utc("2027-03-30T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn fall_back_fires_once_not_twice() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = schedule("0 30 2 * * *");
        let slots = s.next_slots(utc("2026-10-24T12:00:00Z"), 3);
        assert_eq!(
            slots,
            vec![
                utc("2026-10-25T00:30:00Z"), // the first 02:30 (CEST)
                utc("2026-10-26T01:30:00Z"),
                utc("2026-10-27T01:30:00Z"),
            ]
        );
        assert_eq!(
            s.slot_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z")),
            "the repeated hour has no second slot"
        );
    }

    #[test]
    fn keys_name_the_slot_in_utc() {
        let s = schedule("0 0 2 * * *");
        assert_eq!(
            s.key(utc("2026-12-02T01:00:00Z")),
            "schedule:t:2026-12-02T01:00:00Z"
        );
    }
}
