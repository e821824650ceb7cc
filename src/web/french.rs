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

/// What was not found, in French. The operations name it in English
/// (`exam BAC26-X`, `copy of candidate N for exam E`…); the nouns they use
/// are said again here, and the codes kept as they are.
pub fn not_found(what: &str) -> String {
    // Longer phrases first ("for exam" before "exam"); each part of the
    // text is said once, by the first phrase that starts there.
    const PHRASES: [(&str, &str); 13] = [
        ("(it has no copy of it)", "(il n'en a aucune copie)"),
        (" in establishment ", " dans l'établissement "),
        ("copy of candidate", "la copie du candidat"),
        ("candidates of exam", "des candidats de l'examen"),
        ("access token", "la clé d'accès"),
        ("establishment", "l'établissement"),
        ("(known: ", "(connues : "),
        ("numbered", "numérotés"),
        ("for exam", "pour l'examen"),
        ("schedule", "la planification"),
        ("academy", "l'académie"),
        ("exam", "l'examen"),
        ("job", "le travail"),
    ];
    // Only whole words are said again: a code such as `exam1` is kept.
    let boundary = |c: Option<char>| c.is_none_or(|c| c == ' ' || c == '(' || c == ')');
    let mut text = String::with_capacity(what.len() + 16);
    let mut rest = what;
    let mut previous = None;
    'scan: while let Some(c) = rest.chars().next() {
        if boundary(previous) || c == ' ' || c == '(' {
            for (english, french) in PHRASES {
                if let Some(after) = rest.strip_prefix(english)
                    && (boundary(english.chars().last()) || boundary(after.chars().next()))
                {
                    text.push_str(french);
                    previous = english.chars().last();
                    rest = after;
                    continue 'scan;
                }
            }
        }
        text.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    format!("introuvable : {text}")
}

/// A wrong input, in French: the field keeps its API name, the reason is
/// the operation's.
pub fn invalid(field: &str, reason: &str) -> String {
    format!("le champ « {field} » est invalide : {reason}")
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

    #[test]
    fn what_is_not_found_is_named_in_french() {
        assert_eq!(
            not_found("copy of candidate N1 for exam BAC26-PHILO"),
            "introuvable : la copie du candidat N1 pour l'examen BAC26-PHILO"
        );
        assert_eq!(
            not_found("exam BAC26-X in establishment 0750001A (it has no copy of it)"),
            "introuvable : l'examen BAC26-X dans l'établissement 0750001A (il n'en a aucune copie)"
        );
        assert_eq!(
            not_found("establishment 0750001A"),
            "introuvable : l'établissement 0750001A"
        );
        assert_eq!(
            not_found("exam exam1-job"),
            "introuvable : l'examen exam1-job"
        );
    }
}
