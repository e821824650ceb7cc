//! Finding a candidate: an establishment looks one of its candidates up by
//! name or number before rendering the copy.

use crate::{
    app::App,
    db::{
        self,
        render::{Search, SearchPage},
    },
    domain::Uai,
    op::{self, Actor, OpError},
};

/// The most candidates one page shows.
pub const MAX_LIMIT: i64 = 10_000;

/// A search among one establishment's candidates of one exam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchInput {
    pub exam: String,
    pub establishment: Uai,
    /// What was typed: words of a nom, prénom or numéro, in any order.
    pub query: String,
    pub limit: i64,
    pub offset: i64,
}

/// The candidates of (`exam`, establishment) whose nom, prénom or numéro
/// contains every word of the query, case- and accent-insensitively. Open
/// to admin, the establishment and its academy's coordinator.
pub async fn search_candidates(
    app: &App,
    actor: &Actor,
    input: &SearchInput,
) -> Result<SearchPage, OpError> {
    let exam = op::code("exam", &input.exam)?;
    op::text("query", &input.query)?;
    if !(1..=MAX_LIMIT).contains(&input.limit) {
        return Err(OpError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}, got {}", input.limit),
        ));
    }
    if input.offset < 0 {
        return Err(OpError::invalid(
            "offset",
            format!("must not be negative, got {}", input.offset),
        ));
    }
    if matches!(actor, Actor::Scheduler) {
        return Err(actor.forbidden("search candidates"));
    }
    let uai = &input.establishment;
    actor
        .reach(
            app,
            uai,
            &format!("search the candidates of establishment {uai}"),
        )
        .await?;
    let terms: Vec<String> = input.query.split_whitespace().map(str::to_owned).collect();
    match db::render::search(
        &app.db,
        exam,
        uai.as_str(),
        &terms,
        input.limit,
        input.offset,
    )
    .await?
    {
        Search::Found(page) => Ok(page),
        Search::UnknownExam => Err(OpError::not_found(format!("exam {exam}"))),
        Search::NothingToSearch => Err(OpError::invalid(
            "query",
            format!(
                "{:?} has nothing to search for: give letters or digits of a nom, prénom or numéro (punctuation is ignored)",
                input.query
            ),
        )),
    }
}
