//! Rendering one copy for a person: the rules first (only transmitted
//! copies; E3C options fixed), then the PDF.

use anyhow::Context as _;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{
    RenderOptions, RequestedOptions,
    pdf::{self, Annotation, CopyDocument, QuestionMark},
};
use crate::{
    app::App,
    db::{self, render::CopyRow},
    op::{self, Actor, OpError, Refusal},
    rendered::Fingerprint,
    storage::Storage,
};

/// The options a request gets for the copy's exam.
pub fn options_for(row: &CopyRow, requested: RequestedOptions) -> Result<RenderOptions, OpError> {
    Ok(RenderOptions::for_exam(
        &row.exam_code,
        row.exam_kind,
        requested,
    )?)
}

/// Builds the document of a copy, reading its scans from the store (all
/// at once). A missing scan or unreadable details make the copy
/// unrenderable.
pub async fn document(storage: &Storage, row: &CopyRow) -> Result<CopyDocument, String> {
    // The pages are fetched together (each read waits on the store); the
    // lowest page that failed is the one named, as when read in turn.
    let pages = futures::future::join_all(row.page_keys.iter().map(|key| storage.get(key)))
        .await
        .into_iter()
        .enumerate()
        .map(|(i, page)| page.map_err(|e| format!("page {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let details: Vec<QuestionMark> = parse_list(&row.grading_details, "grading details")?;
    let annotations: Vec<Annotation> = parse_list(&row.annotations, "annotations")?;
    Ok(CopyDocument {
        numero: row.numero.clone(),
        nom: row.nom.clone(),
        prenom: row.prenom.clone(),
        exam_code: row.exam_code.clone(),
        exam_subject: row.exam_subject.clone(),
        session: row.session.clone(),
        establishment_uai: row.establishment_uai.to_string(),
        establishment_name: row.establishment_name.clone(),
        grade: row.grade,
        absent: row.absent,
        details,
        appreciation: row.appreciation.clone(),
        annotations,
        pages,
        modified: row.updated_at,
    })
}

fn parse_list<T: for<'de> Deserialize<'de>>(
    v: &serde_json::Value,
    what: &str,
) -> Result<Vec<T>, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("unreadable {what}: {e}"))
}

/// Renders on a blocking thread, keeping the caller's span.
pub async fn render_blocking(
    doc: CopyDocument,
    options: RenderOptions,
) -> anyhow::Result<Result<Vec<u8>, pdf::RenderError>> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| pdf::render(doc, options)))
        .await
        .context("the PDF renderer panicked")
}

/// Which copy to render, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInput {
    pub exam: String,
    /// The candidate's number.
    pub numero: String,
    pub options: RequestedOptions,
}

/// Renders the copy of candidate `numero` for `exam`, if the rules allow:
/// only a copy transmitted to Cyclades, with E3C's switches fixed on, for
/// admin, the copy's establishment or its academy's coordinator.
pub async fn render_copy(app: &App, actor: &Actor, input: &CopyInput) -> Result<Bytes, OpError> {
    let exam = op::code("exam", &input.exam)?;
    let numero = op::code("candidate", &input.numero)?;
    if matches!(actor, Actor::Scheduler) {
        return Err(actor.forbidden("render a copy"));
    }
    let Some(row) = db::render::copy(&app.db, exam, numero).await? else {
        return Err(OpError::not_found(format!(
            "copy of candidate {numero} for exam {exam}"
        )));
    };
    actor
        .reach(
            app,
            &row.establishment_uai,
            &format!("render the copy of candidate {numero} for exam {exam}"),
        )
        .await?;
    let options = options_for(&row, input.options)?;
    if !row.transmitted {
        return Err(Refusal::NotTransmitted {
            exam: exam.to_owned(),
            numero: numero.to_owned(),
        }
        .into());
    }
    let key = fingerprint(&row, options);
    if let Some(pdf) = app.rendered.get(&key) {
        return Ok(pdf);
    }
    let doc = document(&app.storage, &row).await.map_err(|reason| {
        anyhow::anyhow!("the copy of candidate {numero} cannot be rendered: {reason}")
    })?;
    let pdf = render_blocking(doc, options)
        .await?
        .map_err(|e| anyhow::anyhow!("the copy of candidate {numero} cannot be rendered: {e}"))?;
    let pdf = Bytes::from(pdf);
    app.rendered.insert(key, pdf.clone());
    Ok(pdf)
}

/// The fingerprint of everything a copy's PDF is made of (see
/// [`crate::rendered`]): two renderings with the same fingerprint give the
/// same document, and any change of content gives another fingerprint.
fn fingerprint(row: &CopyRow, options: RenderOptions) -> Fingerprint {
    // The renderer's version: a release that draws copies differently
    // must not be served what an older one drew.
    const RENDERER: &str = concat!("copiste ", env!("CARGO_PKG_VERSION"), " pdf 1");
    let made_of = serde_json::json!([
        RENDERER,
        options,
        row.numero,
        row.nom,
        row.prenom,
        row.exam_code,
        row.exam_subject,
        row.exam_kind.as_str(),
        row.session,
        row.establishment_uai.as_str(),
        row.establishment_name,
        row.grade,
        row.absent,
        row.grading_details,
        row.appreciation,
        row.annotations,
        row.page_keys,
        // The document's dates are the copy's.
        row.updated_at,
    ]);
    Sha256::digest(made_of.to_string().as_bytes()).into()
}
