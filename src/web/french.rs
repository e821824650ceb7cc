//! The pages' words. The operations explain a refusal, a wrong input or
//! what was not found in English (the CLI, the logs and the API's
//! `detail`); the pages are read by French exam offices, so everything a
//! page shows is said here in French: refusals naming the same exam,
//! establishment and copies, invalid inputs, job states, kinds and events,
//! who asked, dates in Europe/Paris, counts with their plural and sizes
//! in octets ("3,2 Mo").

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Paris;

use crate::{
    domain::{ExamKind, JobStatus, UaiError, UnitState},
    op::Refusal,
};

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
            "l'examen {exam} a été publié par Cyclades le {} (enregistré par {}) : \
             sa clôture ne peut plus être lancée ni relancée",
            date_time(at),
            actor(by)
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
            format!("l'examen {exam} est déjà publié (le {})", date_time(at))
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

/// A wrong input, in French: the field by its French name, and the
/// operation's reason said again in French when it is one of the known
/// reasons (an unknown one is not shown: it is English, and logged).
pub fn invalid(field: &str, reason: &str) -> String {
    let name = field_label(field);
    match invalid_reason(reason) {
        Some(why) => format!("{name} : {why}"),
        None => {
            tracing::info!(field, reason, "an invalid input without its French words");
            format!("{name} : valeur refusée")
        }
    }
}

/// A form field's French name.
pub fn field_label(field: &str) -> String {
    match field {
        "establishment" | "uai" => "établissement (UAI)".into(),
        "exam" => "examen".into(),
        "query" | "q" => "recherche".into(),
        "copies" | "selection" => "copies à valider".into(),
        "numeros" => "numéros".into(),
        "fichier" => "fichier de numéros".into(),
        "status" | "etat" => "état".into(),
        "kind" => "type de travail".into(),
        "id" => "référence du travail".into(),
        "cursor" | "apres" => "page".into(),
        "limit" => "nombre par page".into(),
        "offset" => "décalage".into(),
        "numero" => "numéro".into(),
        "academy" => "académie".into(),
        "cle" => "clé d'accès".into(),
        "form" => "formulaire".into(),
        "expires_in" => "durée de validité".into(),
        "details" => "détail de la notation".into(),
        "appreciation" => "appréciation".into(),
        "annotations" => "annotations".into(),
        other => other.to_owned(),
    }
}

/// The known reasons of `OpError::Invalid`, in French; `None` for a
/// reason this table does not know. Longer than 80 lines because it is
/// one table (fixed reasons, then the reasons with a value), read top to
/// bottom beside the English it translates.
fn invalid_reason(reason: &str) -> Option<String> {
    let reason = reason.trim();
    const FIXED: [(&str, &str); 12] = [
        ("must not be empty", "ne doit pas être vide"),
        ("missing", "manquant"),
        (
            "is longer than 200 characters",
            "est trop long (200 caractères au plus)",
        ),
        (
            "contains a control character",
            "contient un caractère de contrôle",
        ),
        (
            "no copy selected for validation",
            "aucune copie choisie pour la validation",
        ),
        (
            "a UAI starts with 7 digits",
            "un UAI commence par 7 chiffres",
        ),
        ("no payload given", "aucun contenu donné"),
        ("1 minute to 3650 days", "de 1 minute à 3650 jours"),
        (
            "cannot be given with a cursor (the cursor says where the page starts)",
            "ne peut pas être donné avec une page",
        ),
        (
            "the file is not text (UTF-8): one numéro per line",
            "le fichier n'est pas un texte (UTF-8) : un numéro par ligne",
        ),
        (
            "give the numéros in a file or in the box, not both",
            "donnez les numéros dans un fichier ou dans la zone de texte, pas les deux",
        ),
        (
            "a list of numéros and \"all\" cannot be chosen together",
            "une liste de numéros et « toutes les copies » ne peuvent pas être choisies ensemble",
        ),
    ];
    if let Some((_, fr)) = FIXED.iter().find(|(en, _)| *en == reason) {
        return Some((*fr).to_owned());
    }
    if let Some(rest) =
        reason.strip_prefix("a UAI is 8 characters (7 digits and a check letter), got ")
    {
        return Some(format!(
            "un UAI a 8 caractères (7 chiffres et une lettre de contrôle), reçu {rest}"
        ));
    }
    if let Some((uai, letter)) = reason
        .strip_prefix("the check letter of ")
        .and_then(|r| r.split_once(" should be "))
    {
        return Some(format!(
            "la lettre de contrôle de {uai} devrait être {letter}"
        ));
    }
    if let Some(rest) = reason.strip_prefix("must be ")
        && let Some((range, got)) = rest.split_once(", got ")
        && let Some((low, high)) = range.split_once(" to ")
    {
        let got = got.split(' ').next().unwrap_or(got);
        return Some(format!("doit être entre {low} et {high} (reçu {got})"));
    }
    if let Some(got) = reason.strip_prefix("must not be negative, got ") {
        return Some(format!("ne doit pas être négatif (reçu {got})"));
    }
    if let Some((given, _)) = reason.split_once(" is not a unit state") {
        return Some(format!(
            "{given} n'est pas un état d'établissement (open, closing, closed, partially_closed, closed_with_errors, published)"
        ));
    }
    if reason.contains("is not a cursor of the jobs list") {
        return Some("cette page de la liste n'existe pas : repartez de la première".into());
    }
    if reason.contains("has nothing to search for") {
        return Some(
            "rien à chercher : donnez des lettres ou des chiffres d'un nom, d'un prénom ou d'un \
             numéro (la ponctuation est ignorée)"
                .into(),
        );
    }
    if reason.starts_with("unknown job status") {
        return Some(format!(
            "état inconnu ; les états sont : {}",
            JobStatus::ALL.map(job_status).join(", ")
        ));
    }
    if reason.starts_with("unknown job kind") || reason.starts_with("unknown kind") {
        return Some("type de travail inconnu".into());
    }
    if reason.starts_with("not a job id") || reason.contains("UUID") {
        return Some("ce n'est pas une référence de travail".into());
    }
    if let Some((_, then)) = reason.split_once(" is neither \"all\" nor \"list\"") {
        let _ = then;
        return Some("choisissez « toutes les copies » ou « ces copies »".into());
    }
    None
}

/// A conflict with the current state, in French (`job … is dead; only
/// queued or running jobs can be cancelled`).
pub fn conflict(what: &str) -> String {
    let status = JobStatus::ALL
        .into_iter()
        .find(|s| what.contains(&format!(" is {};", s.as_str())));
    if what.contains("can be retried") {
        format!(
            "ce travail est {} : seul un travail en échec, terminé avec des refus ou annulé peut \
             être relancé",
            status.map_or("dans un autre état", job_status)
        )
    } else if what.contains("can be cancelled") {
        format!(
            "ce travail est {} : seul un travail en attente ou en cours peut être annulé",
            status.map_or("dans un autre état", job_status)
        )
    } else if what.contains("already revoked") {
        "cette clé d'accès est déjà révoquée".into()
    } else {
        tracing::info!(what, "a conflict without its French words");
        "l'état actuel ne permet pas cette action : rechargez la page".into()
    }
}

/// Why an operation refused one item of a bulk action (a job of a bulk
/// retry), in French; our own failures are not detailed.
pub fn op_error(e: &crate::op::OpError) -> String {
    use crate::op::OpError;
    match e {
        OpError::Invalid { field, reason } => invalid(field, reason),
        OpError::NotFound { what } => not_found(what),
        OpError::Forbidden { .. } => "hors de votre périmètre".into(),
        OpError::Refused(r) => refusal(r),
        OpError::Conflict { what } => conflict(what),
        OpError::Internal(_) => "erreur interne, journalisée".into(),
    }
}

/// A UAI that does not parse, in French.
pub fn uai_error(e: &UaiError) -> String {
    invalid_reason(&e.to_string()).unwrap_or_else(|| "ce n'est pas un UAI".into())
}

/// A job's state, as the pages name it.
pub fn job_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "en attente",
        JobStatus::Running => "en cours",
        JobStatus::Succeeded => "terminé",
        JobStatus::Failed => "terminé avec des refus",
        JobStatus::Dead => "en échec",
        JobStatus::Cancelled => "annulé",
    }
}

/// A job's kind (its registry name), as the pages name it.
pub fn job_kind(kind: &str) -> String {
    match kind {
        "closure" => "clôture".into(),
        "export-retry" => "relance des envois".into(),
        "harmonisation-validation" => "validation d'harmonisation".into(),
        "bulk-render" => "zip des copies".into(),
        "zip-prebuild" => "préparation des zips".into(),
        "nightly-closure" => "clôture de nuit".into(),
        "export-retry-sweep" => "relance automatique des envois".into(),
        "housekeeping" => "entretien".into(),
        "noop" => "travail d'essai".into(),
        _ => "travail d'un autre type".into(),
    }
}

/// The kinds the jobs filter offers, with their French names.
pub const JOB_KINDS: [&str; 9] = [
    "closure",
    "export-retry",
    "harmonisation-validation",
    "bulk-render",
    "zip-prebuild",
    "nightly-closure",
    "export-retry-sweep",
    "housekeeping",
    "noop",
];

/// An event of a job's history, as the pages name it.
pub fn job_event(event: &str) -> &'static str {
    match event {
        "enqueued" => "demandé",
        "started" => "démarré",
        "succeeded" => "terminé",
        "failed" => "terminé avec des refus",
        "retry_scheduled" => "nouvel essai prévu",
        "dead" => "en échec",
        "released" => "interrompu (arrêt du serveur), repris ensuite",
        "lease_expired" => "interrompu (serveur muet), repris ensuite",
        "retried_by_hand" => "relancé à la main",
        "cancelled" => "annulé",
        _ => "autre évènement",
    }
}

/// A job event's detail when it names who acted (`by coordinator:PARIS`,
/// `exam published by alice`), in French; `None` for the workers' own
/// words (errors), which only admins see, as they are.
pub fn event_detail(detail: &str) -> Option<String> {
    if let Some(who) = detail.strip_prefix("by ") {
        Some(format!("par {}", actor(who)))
    } else {
        detail
            .strip_prefix("exam published by ")
            .map(|who| format!("examen publié par {}", actor(who)))
    }
}

/// A closure unit's state, as the pages name it.
pub fn unit_state(state: UnitState) -> &'static str {
    match state {
        UnitState::Open => "non clôturé",
        UnitState::Closing => "clôture en cours",
        UnitState::Closed => "clôturé",
        UnitState::PartiallyClosed => "partiellement clôturé",
        UnitState::ClosedWithErrors => "clôturé avec erreurs",
        UnitState::Published => "publié",
    }
}

/// Who asked (a job's `created_by`, an `Actor::label`), in French: an
/// establishment and a coordinator by their codes, the scheduler by its
/// role, anyone else is an administrator named as they gave their name.
pub fn actor(label: &str) -> String {
    if let Some(uai) = label.strip_prefix("establishment:") {
        format!("établissement {uai}")
    } else if let Some(academy) = label.strip_prefix("coordinator:") {
        format!("coordination de l'académie {academy}")
    } else if label == "scheduler" || label.starts_with("scheduler:") {
        "planification automatique".into()
    } else if let Some(user) = label.strip_prefix("cli:") {
        let user = if user == "unknown" {
            "utilisateur inconnu"
        } else {
            user
        };
        format!("administration, ligne de commande ({user})")
    } else {
        format!("administration ({label})")
    }
}

/// An export target's name (`cyclades`, `imagin`).
pub fn target(target: &str) -> &'static str {
    match target {
        "cyclades" => "Cyclades",
        "imagin" => "Imag'In",
        _ => "la cible d'export",
    }
}

/// What a target's items are, counted.
fn target_items(target: &str, n: i64) -> String {
    match target {
        "imagin" => count(
            n,
            "déclaration de copies corrigées",
            "déclarations de copies corrigées",
        ),
        _ => count(n, "note", "notes"),
    }
}

/// Which items, named after their count: ` (candidats 0001 et 0002)`,
/// ` (correcteurs C1, C2, C3, C4, C5 et 7 autres)`; empty when none is
/// named.
fn which_items(target_name: &str, items: i64, examples: &[String]) -> String {
    let Some((last, first)) = examples.split_last() else {
        return String::new();
    };
    let shown = i64::try_from(examples.len()).unwrap_or(i64::MAX);
    let whose = match (target_name, items.max(shown) > 1) {
        ("imagin", false) => "correcteur",
        ("imagin", true) => "correcteurs",
        (_, false) => "candidat",
        (_, true) => "candidats",
    };
    let others = items - shown;
    let names = if others > 0 {
        format!(
            "{} et {}",
            examples.join(", "),
            count(others, "autre", "autres")
        )
    } else if first.is_empty() {
        last.clone()
    } else {
        format!("{} et {last}", first.join(", "))
    };
    format!(" ({whose} {names})")
}

/// Items of a unit that a target did not accept, as the exam office reads
/// it: which target, how many items, and what happens next (`next`: when
/// the unit's job tries again, if one is waiting; `running`: a run is
/// sending now). The target's own words stay in the job's detail.
pub fn export_error(
    target_name: &str,
    rejected: bool,
    items: i64,
    examples: &[String],
    next: Option<&DateTime<Utc>>,
    running: bool,
) -> String {
    let who = target(target_name);
    let what = target_items(target_name, items);
    let which = which_items(target_name, items, examples);
    if rejected {
        format!(
            "{who} a refusé {what}{which} — corrigez-les dans la correction en ligne, puis relancez"
        )
    } else {
        let then = match (running, next) {
            (true, _) => "envoi en cours".to_owned(),
            (false, Some(at)) => format!("nouvel essai à {}", time(at)),
            (false, None) => "relancez la clôture pour les renvoyer".to_owned(),
        };
        format!("{who} injoignable — {what} en attente{which}, {then}")
    }
}

/// The label of a built zip's download button: `Télécharger (3,2 Mo,
/// jusqu'au 13/12 à 04:35)`, naming the part when there are several.
pub fn download_label(part: usize, parts: usize, bytes: u64, until: &DateTime<Utc>) -> String {
    let which = if parts > 1 {
        format!("la partie {} ", part + 1)
    } else {
        String::new()
    };
    format!(
        "Télécharger {which}({}, jusqu'au {})",
        size(bytes),
        day_time(until)
    )
}

/// A job's state as a list or a page shows it: a queued job that already
/// ran waits for its next attempt (`en attente, nouvel essai à 04:35`).
pub fn job_state(status: JobStatus, attempts: i32, run_at: &DateTime<Utc>) -> String {
    match status {
        JobStatus::Queued if attempts > 0 && *run_at > Utc::now() => {
            format!("en attente, nouvel essai à {}", time(run_at))
        }
        JobStatus::Queued if *run_at > Utc::now() => {
            format!("prévu à {}", time(run_at))
        }
        s => job_status(s).to_owned(),
    }
}

/// An instant in Paris time: `13/12/2026 à 04:35`.
pub fn date_time(at: &DateTime<Utc>) -> String {
    at.with_timezone(&Paris)
        .format("%d/%m/%Y à %H:%M")
        .to_string()
}

/// An instant in Paris time without the year: `13/12 à 04:35`.
pub fn day_time(at: &DateTime<Utc>) -> String {
    at.with_timezone(&Paris).format("%d/%m à %H:%M").to_string()
}

/// The time of an instant in Paris: `04:35`.
pub fn time(at: &DateTime<Utc>) -> String {
    at.with_timezone(&Paris).format("%H:%M").to_string()
}

/// An instant in Paris time to the second (a job's history).
pub fn date_time_seconds(at: &DateTime<Utc>) -> String {
    at.with_timezone(&Paris)
        .format("%d/%m/%Y %H:%M:%S")
        .to_string()
}

/// A whole number with French digit groups: `4 980`, `12 345 678`
/// (a narrow no-break space between groups).
pub fn number(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A count with its noun, singular for 0 and 1 as French has it:
/// `1 candidat`, `0 copie`, `4 980 copies`.
pub fn count(n: i64, singular: &str, plural: &str) -> String {
    format!(
        "{} {}",
        number(n),
        if n.abs() < 2 { singular } else { plural }
    )
}

/// A size in octets, one decimal with a comma, in powers of 1000:
/// `850 o`, `12,4 ko`, `3,2 Mo`, `1,5 Go`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["ko", "Mo", "Go", "To"];
    if bytes < 1000 {
        return format!("{bytes} o");
    }
    // Tenths of the unit, rounded: exact integer arithmetic.
    let bytes = u128::from(bytes);
    let mut unit = 0;
    let mut scale: u128 = 1000;
    // The next unit once the value would round to 1000,0 of this one.
    while unit + 1 < UNITS.len() && bytes * 10 + scale / 2 >= scale * 10_000 {
        unit += 1;
        scale *= 1000;
    }
    let tenths = (bytes * 10 + scale / 2) / scale;
    format!("{},{} {}", tenths / 10, tenths % 10, UNITS[unit])
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
    fn sizes_counts_and_dates_read_as_french() {
        assert_eq!(size(850), "850 o");
        assert_eq!(size(12_400), "12,4 ko");
        assert_eq!(size(3_200_000), "3,2 Mo");
        assert_eq!(size(3_249_999), "3,2 Mo");
        assert_eq!(size(999_960), "1,0 Mo");
        assert_eq!(size(1_500_000_000), "1,5 Go");
        assert_eq!(size(u64::MAX), "18446744,1 To");
        assert_eq!(count(1, "candidat", "candidats"), "1 candidat");
        assert_eq!(count(0, "copie", "copies"), "0 copie");
        assert_eq!(count(4980, "copie", "copies"), "4\u{202f}980 copies");
        assert_eq!(number(-1_234_567), "-1\u{202f}234\u{202f}567");
        // Winter and summer time in Paris.
        let winter: DateTime<Utc> = "2026-12-13T03:35:00Z".parse().expect("date");
        assert_eq!(day_time(&winter), "13/12 à 04:35");
        let summer: DateTime<Utc> = "2026-06-13T03:35:00Z".parse().expect("date");
        assert_eq!(date_time(&summer), "13/06/2026 à 05:35");
        assert_eq!(time(&summer), "05:35");
    }

    #[test]
    fn invalid_inputs_and_actors_are_said_in_french() {
        let uai = crate::domain::Uai::parse("07").expect_err("short");
        assert_eq!(
            invalid("establishment", &uai.to_string()),
            "établissement (UAI) : un UAI a 8 caractères (7 chiffres et une lettre de contrôle), reçu 2"
        );
        assert_eq!(
            invalid("limit", "must be 1 to 100, got 500"),
            "nombre par page : doit être entre 1 et 100 (reçu 500)"
        );
        assert_eq!(
            invalid("query", "\"--\" has nothing to search for: give letters"),
            "recherche : rien à chercher : donnez des lettres ou des chiffres d'un nom, d'un \
             prénom ou d'un numéro (la ponctuation est ignorée)"
        );
        assert_eq!(invalid("x", "some English"), "x : valeur refusée");
        assert_eq!(actor("establishment:0756907A"), "établissement 0756907A");
        assert_eq!(
            actor("coordinator:PARIS"),
            "coordination de l'académie PARIS"
        );
        assert_eq!(actor("e2e"), "administration (e2e)");
        assert_eq!(job_status(JobStatus::Dead), "en échec");
        assert_eq!(job_kind("bulk-render"), "zip des copies");
    }

    #[test]
    fn export_errors_say_what_happens_next() {
        let at: DateTime<Utc> = "2026-12-13T03:35:00Z".parse().expect("date");
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            export_error(
                "cyclades",
                false,
                2,
                &names(&["0001", "0002"]),
                Some(&at),
                false
            ),
            "Cyclades injoignable — 2 notes en attente (candidats 0001 et 0002), nouvel essai \
             à 04:35"
        );
        assert_eq!(
            export_error("imagin", true, 1, &names(&["C42"]), None, false),
            "Imag'In a refusé 1 déclaration de copies corrigées (correcteur C42) — corrigez-les \
             dans la correction en ligne, puis relancez"
        );
        assert_eq!(
            export_error(
                "cyclades",
                false,
                7,
                &names(&["1", "2", "3", "4", "5"]),
                None,
                true
            ),
            "Cyclades injoignable — 7 notes en attente (candidats 1, 2, 3, 4, 5 et 2 autres), \
             envoi en cours"
        );
        assert_eq!(
            export_error("cyclades", false, 3, &[], None, false),
            "Cyclades injoignable — 3 notes en attente, relancez la clôture pour les renvoyer"
        );
        assert_eq!(
            download_label(0, 1, 3_200_000, &at),
            "Télécharger (3,2 Mo, jusqu'au 13/12 à 04:35)"
        );
        assert_eq!(
            download_label(1, 2, 850, &at),
            "Télécharger la partie 2 (850 o, jusqu'au 13/12 à 04:35)"
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
