//! The operations as the tests call them: as admin (recorded under `by`),
//! with our own failures (`OpError::Internal`) split from the caller's, so
//! that a test says `.expect("request")` for the first and matches the
//! second.

use copiste::{
    closure::{
        self, PassRequest, Published, UnitRequest, Validation,
        request::{PassInput, UnitsInput},
        status::ExamStatus,
    },
    domain::Uai,
    download::{
        self, Link, Requested, ZipInput,
        search::{SearchInput, search_candidates},
    },
    op::{Actor, OpError},
    render::{
        RequestedOptions,
        copy::{CopyInput, render_copy},
    },
};

use crate::support::TestApp;

/// An operation's answer: `Err` for our failures, `Ok(Err)` for the
/// caller's (refused, not found, invalid, forbidden).
pub type Answer<T> = anyhow::Result<Result<T, OpError>>;

fn split<T>(r: Result<T, OpError>) -> Answer<T> {
    match r {
        Err(OpError::Internal(e)) => Err(e),
        other => Ok(other),
    }
}

fn units(exam: &str, establishment: Option<&Uai>) -> UnitsInput {
    UnitsInput {
        exam: exam.to_owned(),
        establishment: establishment.cloned(),
    }
}

pub async fn request_closure(
    app: &TestApp,
    exam: &str,
    establishment: Option<&Uai>,
    by: &str,
) -> Answer<Vec<UnitRequest>> {
    split(
        closure::request_closure(&app.app(), &Actor::admin(by), &units(exam, establishment)).await,
    )
}

pub async fn request_relaunch(
    app: &TestApp,
    exam: &str,
    establishment: Option<&Uai>,
    by: &str,
) -> Answer<Vec<UnitRequest>> {
    split(
        closure::request_relaunch(&app.app(), &Actor::admin(by), &units(exam, establishment)).await,
    )
}

pub async fn publish(app: &TestApp, exam: &str, by: &str) -> Answer<Published> {
    split(closure::publish(&app.app(), &Actor::admin(by), exam).await)
}

pub async fn validate_harmonisation(
    app: &TestApp,
    exam: &str,
    academy: Option<&str>,
    selection: &Validation,
    by: &str,
) -> Answer<PassRequest> {
    let input = PassInput {
        exam: exam.to_owned(),
        academy: academy.map(str::to_owned),
        selection: selection.clone(),
    };
    split(closure::validate_harmonisation(&app.app(), &Actor::admin(by), &input).await)
}

pub async fn exam_status(app: &TestApp, exam: &str) -> Answer<ExamStatus> {
    split(closure::status::exam_status(&app.app(), &Actor::admin("test"), exam).await)
}

pub async fn copy_pdf(
    app: &copiste::app::App,
    exam: &str,
    numero: &str,
    options: RequestedOptions,
) -> Answer<Vec<u8>> {
    let input = CopyInput {
        exam: exam.to_owned(),
        numero: numero.to_owned(),
        options,
    };
    split(
        render_copy(app, &Actor::admin("test"), &input)
            .await
            .map(Vec::from),
    )
}

fn zip(exam: &str, uai: &Uai, options: RequestedOptions) -> ZipInput {
    ZipInput {
        exam: exam.to_owned(),
        establishment: uai.clone(),
        options,
    }
}

pub async fn zip_request(
    app: &copiste::app::App,
    exam: &str,
    uai: &Uai,
    options: RequestedOptions,
    by: &str,
) -> Answer<Requested> {
    split(download::request(app, &Actor::admin(by), &zip(exam, uai, options)).await)
}

pub async fn zip_links(
    app: &copiste::app::App,
    exam: &str,
    uai: &Uai,
    options: RequestedOptions,
) -> Answer<Option<Vec<Link>>> {
    split(download::current_links(app, &Actor::admin("test"), &zip(exam, uai, options)).await)
}

pub async fn search(
    app: &copiste::app::App,
    exam: &str,
    uai: &Uai,
    query: &str,
    limit: i64,
    offset: i64,
) -> Answer<copiste::db::render::SearchPage> {
    let input = SearchInput {
        exam: exam.to_owned(),
        establishment: uai.clone(),
        query: query.to_owned(),
        limit,
        offset,
    };
    split(search_candidates(app, &Actor::admin("test"), &input).await)
}
