//! Rendering one copy for a person: the rules first (only transmitted
//! copies; E3C options fixed), then the PDF.

use anyhow::Context as _;
use serde::Deserialize;

use super::{
    RenderOptions, RequestedOptions,
    pdf::{self, Annotation, CopyDocument, QuestionMark},
};
use crate::{
    db::{self, render::CopyRow},
    jobs::context::Services,
    storage::Storage,
};

/// Why a copy is not rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderRefusal {
    #[error("exam {exam} has no copy of candidate {numero}")]
    NoSuchCopy { exam: String, numero: String },
    #[error(
        "the copy of candidate {numero} for exam {exam} has not been transmitted to Cyclades \
         (its grade is not accepted yet): it cannot be rendered or downloaded"
    )]
    NotTransmitted { exam: String, numero: String },
    #[error(transparent)]
    Options(#[from] super::E3cOptionsFixed),
    #[error("the copy of candidate {numero} cannot be rendered: {reason}")]
    Unrenderable { numero: String, reason: String },
}

/// The options a request gets for the copy's exam.
pub fn options_for(
    row: &CopyRow,
    requested: RequestedOptions,
) -> Result<RenderOptions, RenderRefusal> {
    Ok(RenderOptions::for_exam(
        &row.exam_code,
        row.exam_kind,
        requested,
    )?)
}

/// Builds the document of a copy, reading its scans from the store. A
/// missing scan or unreadable details make the copy unrenderable.
pub async fn document(storage: &Storage, row: &CopyRow) -> Result<CopyDocument, String> {
    let mut pages = Vec::with_capacity(row.page_keys.len());
    for (i, key) in row.page_keys.iter().enumerate() {
        let bytes = storage
            .get(key)
            .await
            .map_err(|e| format!("page {}: {e}", i + 1))?;
        pages.push(bytes);
    }
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

/// Renders the copy of candidate `numero` for `exam`, if the rules allow.
pub async fn render_copy(
    services: &Services,
    exam: &str,
    numero: &str,
    requested: RequestedOptions,
) -> anyhow::Result<Result<Vec<u8>, RenderRefusal>> {
    let Some(row) = db::render::copy(&services.db, exam, numero).await? else {
        return Ok(Err(RenderRefusal::NoSuchCopy {
            exam: exam.to_owned(),
            numero: numero.to_owned(),
        }));
    };
    let options = match options_for(&row, requested) {
        Ok(o) => o,
        Err(r) => return Ok(Err(r)),
    };
    if !row.transmitted {
        return Ok(Err(RenderRefusal::NotTransmitted {
            exam: exam.to_owned(),
            numero: numero.to_owned(),
        }));
    }
    let doc = match document(&services.storage, &row).await {
        Ok(d) => d,
        Err(reason) => {
            return Ok(Err(RenderRefusal::Unrenderable {
                numero: numero.to_owned(),
                reason,
            }));
        }
    };
    Ok(render_blocking(doc, options)
        .await?
        .map_err(|e| RenderRefusal::Unrenderable {
            numero: numero.to_owned(),
            reason: e.to_string(),
        }))
}
