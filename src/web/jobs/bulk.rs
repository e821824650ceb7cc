//! The bulk retry of the dead jobs of the jobs list's filters: a
//! confirmation saying how many and which, then the operation, which
//! answers for each job as its own retry would.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::{Form, http::StatusCode};
use serde::Deserialize;

use super::pages::{JobsForm, jobs_query, list_input};
use crate::jobs::operators::{self, BulkRetry, DeadJobs};
use crate::op::Actor;
use crate::web::pages::{DoneLine, DonePage, PageError, Who, error_page, render};
use crate::web::session::Viewer;
use crate::web::{WebState, french};

/// The bulk retry's form: the list's filters, and whether the
/// confirmation page sent it.
#[derive(Deserialize)]
pub(super) struct BulkForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    exam: String,
    #[serde(default)]
    uai: String,
    confirme: Option<String>,
}

impl BulkForm {
    /// The jobs list's form of the same filters, dead jobs only.
    fn list_form(&self) -> JobsForm {
        JobsForm {
            status: "dead".into(),
            kind: self.kind.clone(),
            exam: self.exam.clone(),
            uai: self.uai.clone(),
            apres: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs_retry.html")]
struct ConfirmPage {
    who: Option<Who>,
    lines: Vec<String>,
    kind: String,
    exam: String,
    uai: String,
    button: String,
    back: String,
}

pub(super) async fn page_bulk_retry(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Form(form): Form<BulkForm>,
) -> Result<Response, PageError> {
    let list = form.list_form();
    let input = list_input(&actor, &list, false)?;
    if form.confirme.as_deref() != Some("1") {
        let dead = operators::dead_jobs(&s.app, &actor, &input)
            .await
            .map_err(|e| PageError::of(e, &actor))?;
        return confirm(&actor, &form, &dead);
    }
    let done = operators::retry_dead(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        DonePage {
            who: Some(Who::of(&actor)),
            title: "Relance des travaux en échec",
            lines: outcome_lines(&done),
            back: format!("/travaux{}", jobs_query(&list, None)),
        },
        &actor,
    )
}

/// The confirmation: how many dead jobs, of which kinds and exams.
fn confirm(actor: &Actor, form: &BulkForm, dead: &DeadJobs) -> Result<Response, PageError> {
    let back = format!("/travaux{}", jobs_query(&form.list_form(), None));
    if dead.ids.is_empty() {
        return Ok(error_page(
            StatusCode::CONFLICT,
            Some(Who::of(actor)),
            "Rien à relancer",
            "Aucun travail en échec ne correspond à ces filtres.".into(),
        ));
    }
    let n = i64::try_from(dead.ids.len()).unwrap_or(i64::MAX);
    let mut lines = vec![format!(
        "{} à relancer{}",
        french::count(n, "travail en échec", "travaux en échec"),
        if dead.more {
            format!(
                " (les {} plus récents : relancez de nouveau pour les suivants)",
                french::number(n)
            )
        } else {
            String::new()
        }
    )];
    lines.extend(dead.groups.iter().map(|g| {
        format!(
            "{} : {}{}",
            french::job_kind(&g.kind),
            french::count(
                i64::try_from(g.jobs).unwrap_or(i64::MAX),
                "travail",
                "travaux"
            ),
            g.exam
                .as_deref()
                .map(|e| format!(", examen {e}"))
                .unwrap_or_default()
        )
    }));
    render(
        ConfirmPage {
            who: Some(Who::of(actor)),
            lines,
            kind: form.kind.clone(),
            exam: form.exam.clone(),
            uai: form.uai.clone(),
            button: format!(
                "Confirmer la relance de {}",
                french::count(n, "travail", "travaux")
            ),
            back,
        },
        actor,
    )
}

/// What the bulk retry did: how many were retried, and how many were
/// refused, grouped by reason.
fn outcome_lines(done: &BulkRetry) -> Vec<DoneLine> {
    let retried = i64::try_from(done.retried.len()).unwrap_or(i64::MAX);
    let mut lines = vec![DoneLine {
        text: format!(
            "{} {}",
            french::count(retried, "travail", "travaux"),
            if retried < 2 { "relancé" } else { "relancés" }
        ),
        job: None,
    }];
    let mut reasons: Vec<(String, i64)> = Vec::new();
    for (_, e) in &done.refused {
        let why = french::op_error(e);
        match reasons.iter_mut().find(|(r, _)| *r == why) {
            Some((_, n)) => *n += 1,
            None => reasons.push((why, 1)),
        }
    }
    lines.extend(reasons.into_iter().map(|(why, n)| DoneLine {
        text: format!(
            "{} {} : {why}",
            french::count(n, "travail", "travaux"),
            if n < 2 { "refusé" } else { "refusés" }
        ),
        job: None,
    }));
    if done.more {
        lines.push(DoneLine {
            text: "D'autres travaux en échec restent : relancez de nouveau pour les suivants."
                .into(),
            job: None,
        });
    }
    lines
}
