//! The pages' words for the memo's refusals. The operations explain a
//! refusal in English (the CLI, the logs and the API's `detail`); the
//! pages are read by French exam offices, so each refusal is said again
//! here in French, naming the same exam, establishment and copies.

use chrono::{DateTime, Utc};

use crate::{domain::ExamKind, op::Refusal};

/// A refusal, in French.
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::Harmonised(exam) => format!(
            "l'examen {exam} est harmonisé : il est clôturé par le coordinateur académique \
             (validation d'une passe d'harmonisation), pas par la clôture d'un établissement"
        ),
        Refusal::NotHarmonised { exam, kind } => format!(
            "l'examen {exam} est {}, pas harmonisé : il est clôturé établissement par établissement",
            kind_label(*kind)
        ),
        Refusal::Published { exam, at, by } => format!(
            "l'examen {exam} a été publié par Cyclades le {} (enregistré par {by}) : \
             sa clôture ne peut plus être lancée ni relancée",
            date(at)
        ),
        Refusal::Ungraded {
            establishment,
            numeros,
            ..
        } => {
            let place = establishment
                .as_ref()
                .map_or("la sélection".to_owned(), |u| {
                    format!("l'établissement {u}")
                });
            let n = numeros.len();
            let (copies, verb) = if n == 1 {
                ("1 copie".to_owned(), "n'est pas notée")
            } else {
                (format!("{n} copies"), "ne sont pas notées")
            };
            format!("{copies} de {place} {verb} : {}", list(numeros))
        }
        Refusal::NeverClosed {
            exam,
            establishment,
        } => format!(
            "l'établissement {establishment} n'a jamais été clôturé pour l'examen {exam} : \
             lancez d'abord une clôture"
        ),
        Refusal::AlreadyPublished { exam, at } => {
            format!("l'examen {exam} est déjà publié (le {})", date(at))
        }
        Refusal::ClosureRunning { exam, units } => format!(
            "une clôture de l'examen {exam} est en cours pour {} : attendez qu'elle se termine \
             (ou annulez-la) avant de publier",
            units
                .iter()
                .map(|(u, j)| format!("{u} (travail {j})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Refusal::E3cSwitches(fixed) => format!(
            "l'examen {} est un E3C : le détail de la notation, l'appréciation et les \
             annotations sont toujours présents ; la demande en retirait : {}",
            fixed.exam,
            fixed
                .off
                .iter()
                .map(|o| switch_label(o))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Refusal::NotTransmitted { exam, numero } => format!(
            "la copie du candidat {numero} pour l'examen {exam} n'a pas encore été transmise à \
             Cyclades (sa note n'est pas encore acceptée) : elle ne peut être ni affichée ni \
             téléchargée"
        ),
        Refusal::NothingTransmitted {
            exam,
            establishment,
        } => format!(
            "l'établissement {establishment} n'a encore aucune copie de l'examen {exam} \
             transmise à Cyclades"
        ),
    }
}

/// An exam's kind, as the pages name it.
pub fn kind_label(kind: ExamKind) -> &'static str {
    match kind {
        ExamKind::Ponctuel => "ponctuel",
        ExamKind::Harmonised => "harmonisé",
        ExamKind::E3c => "E3C",
    }
}

fn switch_label(switch: &str) -> &str {
    match switch {
        "grading details" => "le détail de la notation",
        "appreciation" => "l'appréciation",
        "annotations" => "les annotations",
        other => other,
    }
}

fn date(at: &DateTime<Utc>) -> String {
    at.format("%d/%m/%Y %H:%M UTC").to_string()
}

/// At most 20 names, then how many more.
fn list(names: &[String]) -> String {
    crate::op::list_then(names, |more| format!(" et {more} autres"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Uai;

    #[test]
    fn refusals_name_what_is_refused_in_french() {
        let r = Refusal::Ungraded {
            exam: "BAC26-PHILO".into(),
            establishment: Some(Uai::from_number(750_001)),
            numeros: (1..=22).map(|n| format!("N{n}")).collect(),
        };
        let text = refusal(&r);
        assert!(
            text.starts_with("22 copies de l'établissement 0750001"),
            "{text}"
        );
        assert!(
            text.contains("ne sont pas notées") && text.ends_with("et 2 autres"),
            "{text}"
        );
        let e3c = Refusal::E3cSwitches(crate::op::E3cOptionsFixed {
            exam: "BAC26-E3C-HG".into(),
            off: vec!["appreciation"],
        });
        assert!(
            refusal(&e3c).ends_with("retirait : l'appréciation"),
            "{}",
            refusal(&e3c)
        );
    }
}
