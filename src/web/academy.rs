//! The academy's view for operators (a coordinator's own academy; admin's
//! any): every exam with copies there, its units closed, closed with
//! errors and not closed, the exams with errors alone on demand, and a
//! relaunch of an exam's closure in the academy, confirmed first.

use askama::Template;
use axum::{
    Form, Router,
    extract::{Query, State},
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;

use super::pages::{DonePage, PageError, Who, render, urlencoding};
use super::session::Viewer;
use super::{WebState, closure::unit_lines, french};
use crate::closure::{
    self,
    status::{AcademyExam, AcademyView},
};
use crate::op::Actor;

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/academie", get(page_academy))
        .route("/academie/relance", post(page_relaunch))
}

#[derive(Deserialize)]
struct AcademyForm {
    /// The academy shown (admin chooses; a coordinator has its own).
    #[serde(default)]
    academie: String,
    /// Set: only the exams with units closed with errors.
    #[serde(default)]
    erreurs: String,
}

/// An academy of the chooser.
struct AcademyChoice {
    code: String,
    name: String,
    selected: bool,
}

/// One exam's line.
struct ExamLine {
    code: String,
    subject: String,
    units: String,
    closed: String,
    errors: String,
    /// Units never closed or being closed.
    open: String,
    with_errors: bool,
    /// The exam is published: nothing can be relaunched.
    published: bool,
    /// Some unit was closed: "Relancer" is offered.
    relaunchable: bool,
}

#[derive(Template)]
#[template(path = "academy.html")]
struct AcademyPage {
    who: Option<Who>,
    academies: Vec<AcademyChoice>,
    code: String,
    name: String,
    errors_only: bool,
    exams: Vec<ExamLine>,
    /// How many exams the filter hides.
    hidden: usize,
}

async fn page_academy(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Query(form): Query<AcademyForm>,
) -> Result<Response, PageError> {
    let academies = closure::status::academies(&s.app, &actor)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let chosen = match form.academie.trim() {
        "" => academies
            .first()
            .map(|a| a.code.clone())
            .unwrap_or_default(),
        code => code.to_owned(),
    };
    let view = closure::status::academy_view(&s.app, &actor, &chosen)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let errors_only = !form.erreurs.is_empty();
    let total = view.exams.len();
    let exams: Vec<ExamLine> = view
        .exams
        .iter()
        .filter(|e| !errors_only || e.progress.with_errors > 0)
        .map(exam_line)
        .collect();
    render(
        AcademyPage {
            who: Some(Who::of(&actor)),
            academies: academies
                .into_iter()
                .map(|a| AcademyChoice {
                    selected: a.code == view.academy.code,
                    code: a.code,
                    name: a.name,
                })
                .collect(),
            hidden: total - exams.len(),
            code: view.academy.code,
            name: view.academy.name,
            errors_only,
            exams,
        },
        &actor,
    )
}

/// One exam's line of the academy's view.
fn exam_line(e: &AcademyExam) -> ExamLine {
    let p = &e.progress;
    let closed = p.closed + p.partially_closed;
    ExamLine {
        code: e.exam.code.clone(),
        subject: e.exam.subject.clone(),
        units: french::number(p.units()),
        closed: french::number(closed),
        errors: french::number(p.with_errors),
        open: french::number(p.open + p.closing),
        with_errors: p.with_errors > 0,
        published: e.exam.published_at.is_some(),
        relaunchable: e.exam.published_at.is_none() && closed + p.with_errors > 0,
    }
}

#[derive(Deserialize)]
struct RelaunchForm {
    academie: String,
    examen: String,
    /// Set by the confirmation page: the relaunch is confirmed.
    confirme: Option<String>,
}

#[derive(Template)]
#[template(path = "academy_confirm.html")]
struct ConfirmPage {
    who: Option<Who>,
    academy: String,
    exam: String,
    lines: Vec<String>,
}

async fn page_relaunch(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Form(form): Form<RelaunchForm>,
) -> Result<Response, PageError> {
    let (academy, exam) = (form.academie.trim(), form.examen.trim());
    if form.confirme.as_deref() != Some("1") {
        let view = closure::status::academy_view(&s.app, &actor, academy)
            .await
            .map_err(|e| PageError::of(e, &actor))?;
        return confirm(&actor, &view, exam);
    }
    let answers = closure::request::request_relaunch_in_academy(&s.app, &actor, exam, academy)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        DonePage {
            who: Some(Who::of(&actor)),
            title: "Relance",
            lines: unit_lines(answers),
            back: format!("/academie?academie={}", urlencoding(academy)),
        },
        &actor,
    )
}

/// The confirmation of a relaunch in the academy: which exam, which
/// academy, how many establishments of each state.
fn confirm(actor: &Actor, view: &AcademyView, exam: &str) -> Result<Response, PageError> {
    let found = view
        .exams
        .iter()
        .find(|e| e.exam.code == exam)
        .ok_or_else(|| {
            PageError::of(
                crate::op::OpError::not_found(format!(
                    "exam {exam} in academy {}",
                    view.academy.code
                )),
                actor,
            )
        })?;
    let p = &found.progress;
    let lines = vec![
        format!("Examen : {} ({})", found.exam.code, found.exam.subject),
        format!("Académie : {} ({})", view.academy.name, view.academy.code),
        format!(
            "{} avec erreurs et {} : leurs notes et déclarations pas encore acceptées seront \
             renvoyées à Cyclades et Imag'In",
            french::count(
                p.with_errors,
                "établissement clôturé",
                "établissements clôturés"
            ),
            french::count(
                p.closed + p.partially_closed,
                "établissement clôturé sans erreur",
                "établissements clôturés sans erreur"
            )
        ),
        format!(
            "{} ne sera pas relancé (jamais clôturé ou en cours)",
            french::count(p.open + p.closing, "établissement", "établissements")
        ),
    ];
    render(
        ConfirmPage {
            who: Some(Who::of(actor)),
            academy: view.academy.code.clone(),
            exam: found.exam.code.clone(),
            lines,
        },
        actor,
    )
}
