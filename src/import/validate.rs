//! Structural validation of the export files: every field is read on its
//! own so that each problem carries its exact JSON path, and every problem
//! is collected instead of stopping at the first.
//!
//! Both formats share the same checks. Format 1 is one `manifest.json`
//! ([`check`]); format 2 splits it into `session.json` ([`check_session`]:
//! the session, academies, establishments, exams and graders) and pieces
//! ([`check_piece`]: candidates and copies), whose references to the
//! session's establishments, exams and graders resolve through the
//! [`SessionKeys`] of `session.json`.

use std::{
    collections::{HashMap, HashSet},
    path::{Component, Path},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{
    Problem,
    manifest::{
        Academy, Annotation, AnnotationKind, Candidate, Copy, Establishment, Exam, FORMAT_VERSION,
        Grader, Manifest, PIECED_FORMAT_VERSION, Piece, QuestionMark, Session, SessionFile,
    },
};
use crate::domain::{ExamKind, Uai};

/// The highest grade.
const MAX_GRADE: f64 = 20.0;

/// Where a scan path is referenced: copy index and page index.
pub(super) type ScanRef = (usize, usize);

/// The outcome of reading one file of an export.
pub(super) struct Checked<T> {
    /// What the file holds, when no problem was found in it.
    pub value: Option<T>,
    /// Every problem found, in document order within each section.
    pub problems: Vec<Problem>,
    /// Every lexically valid scan path, with the pages that name it, in the
    /// order first met.
    pub scans: Vec<(String, Vec<ScanRef>)>,
}

/// The keys of a format-2 `session.json` that its pieces may reference.
#[derive(Debug, Default)]
pub(super) struct SessionKeys {
    establishments: HashSet<Uai>,
    exams: HashSet<String>,
    graders: HashSet<String>,
}

/// The JSON path of page `page` of copy `copy`.
pub(super) fn page_path(copy: usize, page: usize) -> String {
    format!("$.copies[{copy}].pages[{page}]")
}

/// Reads and checks a parsed format-1 `manifest.json` without touching the
/// disk or the database.
pub(super) fn check(value: Value) -> Checked<Manifest> {
    let mut checker = Checker::default();
    let manifest = checker.manifest(value);
    checker.into_checked(manifest)
}

/// Reads and checks a parsed format-2 `session.json`; returns, with the
/// outcome, the keys its pieces may reference.
pub(super) fn check_session(value: Value) -> (Checked<SessionFile>, SessionKeys) {
    let mut checker = Checker::default();
    let session = checker.session_file(value);
    let keys = SessionKeys {
        establishments: std::mem::take(&mut checker.establishments)
            .into_keys()
            .collect(),
        exams: std::mem::take(&mut checker.exams).into_keys().collect(),
        graders: std::mem::take(&mut checker.graders).into_keys().collect(),
    };
    (checker.into_checked(session), keys)
}

/// Reads and checks a parsed format-2 piece, whose establishments, exams
/// and graders are those of `keys` (from `session.json`).
pub(super) fn check_piece(value: Value, keys: Arc<SessionKeys>) -> Checked<Piece> {
    let mut checker = Checker {
        session_keys: Some(keys),
        ..Checker::default()
    };
    let piece = checker.piece(value);
    checker.into_checked(piece)
}

/// The state of one validation: the problems so far and the keys seen, to
/// detect duplicates and resolve references.
#[derive(Default)]
struct Checker {
    /// For a piece of format 2: the keys of its `session.json`.
    session_keys: Option<Arc<SessionKeys>>,
    problems: Vec<Problem>,
    academies: HashMap<String, usize>,
    establishments: HashMap<Uai, usize>,
    exams: HashMap<String, usize>,
    graders: HashMap<String, usize>,
    candidates: HashMap<String, usize>,
    copies: HashMap<(String, String), usize>,
    scan_refs: HashMap<String, Vec<ScanRef>>,
    scan_order: Vec<String>,
}

/// The fields of one JSON object, taken out one by one; whatever is left at
/// the end is an unknown field.
struct Fields {
    map: Map<String, Value>,
    path: String,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The outcome: `value` only when no problem was found.
    fn into_checked<T>(mut self, value: Option<T>) -> Checked<T> {
        let scans = std::mem::take(&mut self.scan_order)
            .into_iter()
            .filter_map(|path| {
                let refs = self.scan_refs.remove(&path)?;
                Some((path, refs))
            })
            .collect();
        Checked {
            value: if self.problems.is_empty() {
                value
            } else {
                None
            },
            problems: self.problems,
            scans,
        }
    }

    /// Reads `format`, which must be `expected`; `None` when it is
    /// missing or mistyped (reported), and `Err` when it is another
    /// version, which ends the reading: another version may be laid out
    /// differently, so anything else reported would be noise.
    fn format(&mut self, root: &mut Fields, expected: u32, hint: &str) -> Result<Option<u32>, ()> {
        let format = self.required::<u32>(root, "format");
        match format {
            Some(other) if other != expected => {
                self.problem(
                    "$.format",
                    format!("format {other} is not supported ({hint})"),
                );
                Err(())
            }
            _ => Ok(format),
        }
    }

    /// Reads the whole manifest; returns it only when every element parsed.
    fn manifest(&mut self, value: Value) -> Option<Manifest> {
        let mut root = self.object(value, "$")?;
        let hint = format!("this build reads format {FORMAT_VERSION}");
        let format = self.format(&mut root, FORMAT_VERSION, &hint).ok()?;
        let head = self.head(&mut root, format);
        let body = self.body(&mut root, format);
        self.finish(root);
        let (head, body) = (head?, body?);
        Some(Manifest {
            format: head.format,
            session: head.session,
            academies: head.academies,
            establishments: head.establishments,
            exams: head.exams,
            graders: head.graders,
            candidates: body.candidates,
            copies: body.copies,
        })
    }

    /// Reads a format-2 `session.json`.
    fn session_file(&mut self, value: Value) -> Option<SessionFile> {
        let mut root = self.object(value, "$")?;
        let hint = format!(
            "session.json is format {PIECED_FORMAT_VERSION}; format {FORMAT_VERSION} is a single manifest.json"
        );
        let format = self.format(&mut root, PIECED_FORMAT_VERSION, &hint).ok()?;
        let head = self.head(&mut root, format);
        self.finish(root);
        head
    }

    /// Reads a format-2 piece.
    fn piece(&mut self, value: Value) -> Option<Piece> {
        let mut root = self.object(value, "$")?;
        let hint = format!("pieces are format {PIECED_FORMAT_VERSION}");
        let format = self.format(&mut root, PIECED_FORMAT_VERSION, &hint).ok()?;
        let body = self.body(&mut root, format);
        self.finish(root);
        body
    }

    /// Reads the session and what the candidates and copies reference:
    /// academies, establishments, exams and graders.
    fn head(&mut self, root: &mut Fields, format: Option<u32>) -> Option<SessionFile> {
        let session = self.session(root);
        let academies = self.list(root, "academies", Self::academy);
        let establishments = self.list(root, "establishments", Self::establishment);
        let exams = self.list(root, "exams", Self::exam);
        let graders = self.list(root, "graders", Self::grader);
        Some(SessionFile {
            format: format?,
            session: session?,
            academies: academies?,
            establishments: establishments?,
            exams: exams?,
            graders: graders?,
        })
    }

    /// Reads the candidates and their copies.
    fn body(&mut self, root: &mut Fields, format: Option<u32>) -> Option<Piece> {
        let candidates = self.list(root, "candidates", Self::candidate);
        let copies = self.list(root, "copies", Self::copy);
        Some(Piece {
            format: format?,
            candidates: candidates?,
            copies: copies?,
        })
    }

    /// Whether `uai` is an establishment of this file or of the session.
    fn knows_establishment(&self, uai: &Uai) -> bool {
        self.establishments.contains_key(uai)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.establishments.contains(uai))
    }

    /// Whether `code` is an exam of this file or of the session.
    fn knows_exam(&self, code: &str) -> bool {
        self.exams.contains_key(code)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.exams.contains(code))
    }

    /// Whether `code` is a grader of this file or of the session.
    fn knows_grader(&self, code: &str) -> bool {
        self.graders.contains_key(code)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.graders.contains(code))
    }

    fn session(&mut self, root: &mut Fields) -> Option<Session> {
        let value = self.take(root, "session")?;
        let mut fields = self.object(value, "$.session")?;
        let code = self.code(&mut fields, "code", "session code");
        let name = self.name(&mut fields, "name");
        self.finish(fields);
        Some(Session {
            code: code?,
            name: name?,
        })
    }

    /// Reads the array `key` of `parent`, each element with `element`;
    /// returns the elements only when all of them parsed.
    fn list<T>(
        &mut self,
        parent: &mut Fields,
        key: &str,
        mut element: impl FnMut(&mut Self, usize, Fields) -> Option<T>,
    ) -> Option<Vec<T>> {
        let path = parent.field_path(key);
        let value = self.take(parent, key)?;
        let items = self.array(value, &path)?;
        let mut parsed = Vec::with_capacity(items.len());
        let mut complete = true;
        for (index, item) in items.into_iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            let Some(fields) = self.object(item, &item_path) else {
                complete = false;
                continue;
            };
            match element(self, index, fields) {
                Some(item) => parsed.push(item),
                None => complete = false,
            }
        }
        complete.then_some(parsed)
    }

    fn academy(&mut self, index: usize, mut fields: Fields) -> Option<Academy> {
        let code = self.code(&mut fields, "code", "academy code");
        let name = self.name(&mut fields, "name");
        if let Some(code) = &code {
            self.unique(
                UniqueKind::Academy,
                code.clone(),
                index,
                &fields.field_path("code"),
            );
        }
        self.finish(fields);
        Some(Academy {
            code: code?,
            name: name?,
        })
    }

    fn establishment(&mut self, index: usize, mut fields: Fields) -> Option<Establishment> {
        let uai = self.uai(&mut fields, "uai");
        let name = self.name(&mut fields, "name");
        let academy = self.name(&mut fields, "academy");
        let abroad = self.defaulted::<bool>(&mut fields, "abroad");
        if let Some(uai) = &uai {
            let path = fields.field_path("uai");
            if let Some(first) = self.establishments.get(uai) {
                let message =
                    format!("duplicate establishment {uai}, first at $.establishments[{first}]");
                self.problem(path, message);
            } else {
                self.establishments.insert(uai.clone(), index);
            }
        }
        if let Some(academy) = &academy
            && !self.academies.contains_key(academy)
        {
            self.problem(
                fields.field_path("academy"),
                format!("unknown academy {academy}"),
            );
        }
        self.finish(fields);
        Some(Establishment {
            uai: uai?,
            name: name?,
            academy: academy?,
            abroad: abroad?,
        })
    }

    fn exam(&mut self, index: usize, mut fields: Fields) -> Option<Exam> {
        let code = self.code(&mut fields, "code", "exam code");
        let subject = self.name(&mut fields, "subject");
        let kind = self.required::<ExamKind>(&mut fields, "kind");
        if let Some(code) = &code {
            self.unique(
                UniqueKind::Exam,
                code.clone(),
                index,
                &fields.field_path("code"),
            );
        }
        self.finish(fields);
        Some(Exam {
            code: code?,
            subject: subject?,
            kind: kind?,
        })
    }

    fn grader(&mut self, index: usize, mut fields: Fields) -> Option<Grader> {
        let code = self.code(&mut fields, "code", "grader code");
        let nom = self.name(&mut fields, "nom");
        let prenom = self.line(&mut fields, "prenom");
        let academy = self.name(&mut fields, "academy");
        if let Some(code) = &code {
            self.unique(
                UniqueKind::Grader,
                code.clone(),
                index,
                &fields.field_path("code"),
            );
        }
        if let Some(academy) = &academy
            && !self.academies.contains_key(academy)
        {
            self.problem(
                fields.field_path("academy"),
                format!("unknown academy {academy}"),
            );
        }
        self.finish(fields);
        Some(Grader {
            code: code?,
            nom: nom?,
            prenom: prenom?,
            academy: academy?,
        })
    }

    fn candidate(&mut self, index: usize, mut fields: Fields) -> Option<Candidate> {
        let numero = self.code(&mut fields, "numero", "candidate numero");
        let nom = self.name(&mut fields, "nom");
        let prenom = self.line(&mut fields, "prenom");
        let establishment = self.uai(&mut fields, "establishment");
        if let Some(numero) = &numero {
            self.unique(
                UniqueKind::Candidate,
                numero.clone(),
                index,
                &fields.field_path("numero"),
            );
        }
        if let Some(uai) = &establishment
            && !self.knows_establishment(uai)
        {
            self.problem(
                fields.field_path("establishment"),
                format!("unknown establishment {uai}"),
            );
        }
        self.finish(fields);
        Some(Candidate {
            numero: numero?,
            nom: nom?,
            prenom: prenom?,
            establishment: establishment?,
        })
    }

    fn copy(&mut self, index: usize, mut fields: Fields) -> Option<Copy> {
        let exam = self.name(&mut fields, "exam");
        let candidate = self.name(&mut fields, "candidate");
        let grader = self.optional_name(&mut fields, "grader");
        let absent = self.defaulted::<bool>(&mut fields, "absent");
        let grade = self.optional::<f64>(&mut fields, "grade");
        let grading_details = self.defaulted_list(&mut fields, "grading_details", Self::mark);
        let appreciation = self.optional_free_text(&mut fields, "appreciation");
        // The page count bounds the annotations even when a page is invalid.
        let page_count = fields
            .map
            .get("pages")
            .and_then(Value::as_array)
            .map(Vec::len);
        let annotations = self.defaulted_list(&mut fields, "annotations", |this, i, f| {
            this.annotation(i, f, page_count)
        });
        let pages = self.pages(&mut fields, index);

        if let Some(exam) = &exam
            && !self.knows_exam(exam)
        {
            self.problem(fields.field_path("exam"), format!("unknown exam {exam}"));
        }
        if let Some(candidate) = &candidate
            && !self.candidates.contains_key(candidate)
        {
            self.problem(
                fields.field_path("candidate"),
                format!("unknown candidate {candidate}"),
            );
        }
        if let Some(Some(grader)) = &grader
            && !self.knows_grader(grader)
        {
            self.problem(
                fields.field_path("grader"),
                format!("unknown grader {grader}"),
            );
        }
        if let (Some(exam), Some(candidate)) = (&exam, &candidate) {
            let key = (exam.clone(), candidate.clone());
            if let Some(first) = self.copies.get(&key) {
                let message = format!(
                    "a second copy of exam {exam} for candidate {candidate}, first at $.copies[{first}]"
                );
                self.problem(&fields.path, message);
            } else {
                self.copies.insert(key, index);
            }
        }
        if let Some(Some(grade)) = grade {
            let path = fields.field_path("grade");
            if !(0.0..=MAX_GRADE).contains(&grade) {
                self.problem(
                    &path,
                    format!("grade {grade} is not between 0 and {MAX_GRADE}"),
                );
            } else if !at_most_two_decimals(grade) {
                self.problem(&path, format!("grade {grade} has more than 2 decimals"));
            }
            if absent == Some(true) {
                self.problem(&path, "a copy marked absent cannot have a grade");
            }
        }
        if let Some(pages) = &pages
            && pages.is_empty()
            && absent == Some(false)
        {
            self.problem(
                fields.field_path("pages"),
                "a copy that is not absent needs at least one page",
            );
        }
        self.finish(fields);
        Some(Copy {
            exam: exam?,
            candidate: candidate?,
            grader: grader?,
            absent: absent?,
            grade: grade?,
            grading_details: grading_details?,
            appreciation: appreciation?,
            annotations: annotations?,
            pages: pages?,
        })
    }

    /// Reads a copy's page paths and records each lexically valid one for
    /// the scan check.
    fn pages(&mut self, fields: &mut Fields, copy: usize) -> Option<Vec<String>> {
        let path = fields.field_path("pages");
        let value = self.take(fields, "pages")?;
        let items = self.array(value, &path)?;
        let mut pages = Vec::with_capacity(items.len());
        let mut complete = true;
        for (page, item) in items.into_iter().enumerate() {
            let item_path = page_path(copy, page);
            let Some(relative) = self.decode::<String>(item, &item_path) else {
                complete = false;
                continue;
            };
            if let Err(message) = check_relative(&relative) {
                self.problem(item_path, message);
                complete = false;
                continue;
            }
            match self.scan_refs.get_mut(&relative) {
                Some(refs) => refs.push((copy, page)),
                None => {
                    self.scan_refs.insert(relative.clone(), vec![(copy, page)]);
                    self.scan_order.push(relative.clone());
                }
            }
            pages.push(relative);
        }
        complete.then_some(pages)
    }

    fn mark(&mut self, _index: usize, mut fields: Fields) -> Option<QuestionMark> {
        let question = self.name(&mut fields, "question");
        let mark = self.required::<f64>(&mut fields, "mark");
        let max = self.required::<f64>(&mut fields, "max");
        if let Some(max) = max
            && (max <= 0.0 || !max.is_finite())
        {
            self.problem(
                fields.field_path("max"),
                format!("max {max} should be positive"),
            );
        }
        if let (Some(mark), Some(max)) = (mark, max)
            && !(0.0..=max.max(0.0)).contains(&mark)
        {
            self.problem(
                fields.field_path("mark"),
                format!("mark {mark} is not between 0 and {max}"),
            );
        }
        self.finish(fields);
        Some(QuestionMark {
            question: question?,
            mark: mark?,
            max: max?,
        })
    }

    /// Reads an annotation of a copy of `page_count` pages (unknown when
    /// the pages are not an array).
    fn annotation(
        &mut self,
        _index: usize,
        mut fields: Fields,
        page_count: Option<usize>,
    ) -> Option<Annotation> {
        let page = self.required::<u32>(&mut fields, "page");
        if let (Some(page), Some(count)) = (page, page_count)
            && (page == 0 || page as usize > count)
        {
            let message =
                format!("page {page} is outside the copy's {count} page(s), numbered from 1");
            self.problem(fields.field_path("page"), message);
        }
        let x = self.fraction(&mut fields, "x");
        let y = self.fraction(&mut fields, "y");
        let kind = self.required::<AnnotationKind>(&mut fields, "kind");
        let text = self.free_text(&mut fields, "text");
        if kind == Some(AnnotationKind::Comment)
            && let Some(text) = &text
            && text.trim().is_empty()
        {
            self.problem(fields.field_path("text"), "a comment needs a text");
        }
        self.finish(fields);
        Some(Annotation {
            page: page?,
            x: x?,
            y: y?,
            kind: kind?,
            text: text?,
        })
    }

    /// A position as a fraction of the page, in [0, 1].
    fn fraction(&mut self, fields: &mut Fields, key: &str) -> Option<f64> {
        let value = self.required::<f64>(fields, key)?;
        if (0.0..=1.0).contains(&value) {
            Some(value)
        } else {
            self.problem(
                fields.field_path(key),
                format!("{key} {value} is not between 0 and 1"),
            );
            None
        }
    }

    /// Records `key` as seen at `index`, or reports it as a duplicate.
    fn unique(&mut self, kind: UniqueKind, key: String, index: usize, path: &str) {
        let (seen, what, section) = match kind {
            UniqueKind::Academy => (&mut self.academies, "academy code", "academies"),
            UniqueKind::Exam => (&mut self.exams, "exam code", "exams"),
            UniqueKind::Grader => (&mut self.graders, "grader code", "graders"),
            UniqueKind::Candidate => (&mut self.candidates, "candidate numero", "candidates"),
        };
        if let Some(first) = seen.get(&key) {
            let message = format!("duplicate {what} {key}, first at $.{section}[{first}]");
            self.problem(path, message);
        } else {
            seen.insert(key, index);
        }
    }

    fn object(&mut self, value: Value, path: &str) -> Option<Fields> {
        match value {
            Value::Object(map) => Some(Fields {
                map,
                path: path.to_owned(),
            }),
            other => {
                self.problem(path, format!("expected an object, found {}", kind(&other)));
                None
            }
        }
    }

    fn array(&mut self, value: Value, path: &str) -> Option<Vec<Value>> {
        match value {
            Value::Array(items) => Some(items),
            other => {
                self.problem(path, format!("expected an array, found {}", kind(&other)));
                None
            }
        }
    }

    /// Takes a required field out, reporting it when missing.
    fn take(&mut self, fields: &mut Fields, key: &str) -> Option<Value> {
        let value = fields.map.remove(key);
        if value.is_none() {
            self.problem(fields.field_path(key), "required field is missing");
        }
        value
    }

    fn decode<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_json::from_value(value) {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(path, error.to_string());
                None
            }
        }
    }

    fn required<T: DeserializeOwned>(&mut self, fields: &mut Fields, key: &str) -> Option<T> {
        let value = self.take(fields, key)?;
        self.decode(value, &fields.field_path(key))
    }

    /// A field that may be missing or null; `None` when mistyped.
    fn optional<T: DeserializeOwned>(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<Option<T>> {
        match fields.map.remove(key) {
            None | Some(Value::Null) => Some(None),
            Some(value) => self.decode(value, &fields.field_path(key)).map(Some),
        }
    }

    /// A field that takes its default value when missing (but not when
    /// null, as with serde's `#[serde(default)]`).
    fn defaulted<T: DeserializeOwned + Default>(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<T> {
        match fields.map.remove(key) {
            None => Some(T::default()),
            Some(value) => self.decode(value, &fields.field_path(key)),
        }
    }

    /// An array field that is empty when missing.
    fn defaulted_list<T>(
        &mut self,
        fields: &mut Fields,
        key: &str,
        element: impl FnMut(&mut Self, usize, Fields) -> Option<T>,
    ) -> Option<Vec<T>> {
        if fields.map.contains_key(key) {
            self.list(fields, key, element)
        } else {
            Some(Vec::new())
        }
    }

    /// A required string that must not be blank, on one line: no control
    /// character at all.
    fn name(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.line(fields, key)?;
        if value.trim().is_empty() {
            self.problem(fields.field_path(key), "must not be empty");
            return None;
        }
        Some(value)
    }

    /// A required string, possibly empty, without any control character.
    fn line(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.required::<String>(fields, key)?;
        self.no_control(fields, key, value, &[])
    }

    /// A string that may be missing or null and is otherwise a [`Self::name`].
    fn optional_name(&mut self, fields: &mut Fields, key: &str) -> Option<Option<String>> {
        match self.optional::<String>(fields, key)? {
            None => Some(None),
            Some(value) => self.no_control(fields, key, value, &[]).map(Some),
        }
    }

    /// Free text, empty when missing: lines and tabs are allowed, no other
    /// control character.
    fn free_text(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.defaulted::<String>(fields, key)?;
        self.no_control(fields, key, value, FREE_TEXT_CONTROLS)
    }

    /// Free text that may be missing or null.
    fn optional_free_text(&mut self, fields: &mut Fields, key: &str) -> Option<Option<String>> {
        match self.optional::<String>(fields, key)? {
            None => Some(None),
            Some(value) => self
                .no_control(fields, key, value, FREE_TEXT_CONTROLS)
                .map(Some),
        }
    }

    /// `value` of `key` unless it holds a control character other than
    /// those `allowed`, which is reported.
    fn no_control(
        &mut self,
        fields: &Fields,
        key: &str,
        value: String,
        allowed: &[char],
    ) -> Option<String> {
        match control_char(&value, allowed) {
            None => Some(value),
            Some((at, c)) => {
                let which = if allowed.is_empty() {
                    "control characters"
                } else {
                    "control characters other than newline and tab"
                };
                let message = format!(
                    "must not contain {which} (found U+{:04X} at character {})",
                    u32::from(c),
                    at + 1
                );
                self.problem(fields.field_path(key), message);
                None
            }
        }
    }

    /// A required code or identifier (see [`check_code`]); `what` names it
    /// in messages. A code that is only badly formed is still returned, so
    /// that the references to it resolve and are not reported as well.
    fn code(&mut self, fields: &mut Fields, key: &str, what: &str) -> Option<String> {
        let value = self.name(fields, key)?;
        if let Err(reason) = check_code(&value) {
            self.problem(fields.field_path(key), format!("{what} {value:?} {reason}"));
        }
        Some(value)
    }

    fn uai(&mut self, fields: &mut Fields, key: &str) -> Option<Uai> {
        let value = self.required::<String>(fields, key)?;
        match Uai::parse(&value) {
            Ok(uai) => Some(uai),
            Err(error) => {
                self.problem(fields.field_path(key), error.to_string());
                None
            }
        }
    }

    /// Reports the fields nobody took.
    fn finish(&mut self, fields: Fields) {
        for key in fields.map.keys() {
            self.problem(fields.field_path(key), "unknown field");
        }
    }
}

impl Fields {
    fn field_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

/// The sections whose keys must be unique.
#[derive(Clone, Copy)]
enum UniqueKind {
    Academy,
    Exam,
    Grader,
    Candidate,
}

/// The control characters free text may hold: newline and tab.
const FREE_TEXT_CONTROLS: &[char] = &['\n', '\t'];

/// The longest code (session, academy, exam, grader, candidate numéro).
pub(super) const MAX_CODE_LEN: usize = 32;

/// The first control character of `text` (Unicode category Cc: C0, DEL
/// and C1) that is not `allowed`, with its position in characters.
fn control_char(text: &str, allowed: &[char]) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
}

/// Checks a code: 1 to [`MAX_CODE_LEN`] ASCII letters, digits, `-`, `_` or
/// `.`, not starting with `.`. Codes end up in object keys, file names,
/// HTTP headers and `:`-separated job keys, where anything else is unsafe.
/// The error is the end of a sentence starting with the code.
pub(super) fn check_code(code: &str) -> Result<(), String> {
    const RULE: &str = "use 1 to 32 ASCII letters, digits, '-', '_' or '.', not starting with '.'";
    if let Some(bad) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("has the character {bad:?}: {RULE}"));
    }
    if code.len() > MAX_CODE_LEN {
        return Err(format!("is {} characters long: {RULE}", code.len()));
    }
    if code.is_empty() || code.starts_with('.') {
        return Err(format!("is not a valid code: {RULE}"));
    }
    Ok(())
}

/// What a JSON value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a grade is a whole number of hundredths.
fn at_most_two_decimals(value: f64) -> bool {
    let scaled = value * 100.0;
    (scaled - scaled.round()).abs() <= 1e-6
}

/// Checks that a page path stays inside the export directory: relative,
/// without `..`. Symbolic links are followed as the operating system does;
/// a scans directory linked from elsewhere is a legitimate layout.
fn check_relative(relative: &str) -> Result<(), String> {
    if relative.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some((at, c)) = control_char(relative, &[]) {
        return Err(format!(
            "{relative:?} must not contain control characters (found U+{:04X} at character {})",
            u32::from(c),
            at + 1
        ));
    }
    let path = Path::new(relative);
    if path.is_absolute() || relative.starts_with('/') || relative.starts_with('\\') {
        return Err(format!(
            "{relative} is an absolute path; paths are relative to the manifest's directory"
        ));
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{relative} leaves the export directory (`..` is not allowed)"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{relative} is an absolute path; paths are relative to the manifest's directory"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "format": 1,
            "session": {"code": "BAC2026", "name": "Baccalauréat 2026"},
            "academies": [{"code": "01", "name": "Paris"}],
            "establishments": [
                {"uai": Uai::from_number(751234).as_str(), "name": "Lycée A", "academy": "01"},
                {"uai": Uai::from_number(751235).as_str(), "name": "Lycée B", "academy": "01", "abroad": true}
            ],
            "exams": [{"code": "BAC2026-PHILO", "subject": "Philosophie", "kind": "ponctuel"}],
            "graders": [{"code": "G1", "nom": "Martin", "prenom": "Anne", "academy": "01"}],
            "candidates": [{"numero": "1", "nom": "Durand", "prenom": "Hélène",
                            "establishment": Uai::from_number(751234).as_str()}],
            "copies": [{
                "exam": "BAC2026-PHILO", "candidate": "1", "grader": "G1", "grade": 12.5,
                "grading_details": [{"question": "1", "mark": 2.5, "max": 4}],
                "appreciation": null,
                "annotations": [{"page": 1, "x": 0.5, "y": 0.25, "kind": "comment", "text": "Bien"}],
                "pages": ["scans/a.jpg", "./scans/b.jpg"]
            }]
        })
    }

    #[test]
    fn reads_what_serde_reads() {
        let value = valid();
        let by_serde: Manifest = serde_json::from_value(value.clone()).expect("serde");
        let checked = check(value);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        let ours = checked.value.expect("manifest");
        assert_eq!(
            serde_json::to_value(&ours).expect("ours"),
            serde_json::to_value(&by_serde).expect("theirs")
        );
        assert_eq!(checked.scans.len(), 2);
    }

    #[test]
    fn reports_exact_paths() {
        let mut value = valid();
        value["copies"][0]["grade"] = json!("twelve");
        value["establishments"][1]["extra"] = json!(1);
        value["graders"][0]
            .as_object_mut()
            .expect("grader")
            .remove("nom");
        let checked = check(value);
        let lines: Vec<String> = checked.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "$.establishments[1].extra: unknown field",
                "$.graders[0].nom: required field is missing",
                "$.copies[0].grade: invalid type: string \"twelve\", expected f64",
            ]
        );
        assert!(checked.value.is_none());
    }

    /// `valid()` split into a `session.json` and a piece.
    fn pieced() -> (Value, Value) {
        let mut whole = valid();
        let root = whole.as_object_mut().expect("object");
        let candidates = root.remove("candidates").expect("candidates");
        let copies = root.remove("copies").expect("copies");
        root.insert("format".to_owned(), json!(2));
        let piece = json!({"format": 2, "candidates": candidates, "copies": copies});
        (whole, piece)
    }

    #[test]
    fn pieces_reference_their_session() {
        let (session, piece) = pieced();
        let (checked, keys) = check_session(session);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert!(checked.value.is_some());
        let keys = Arc::new(keys);
        let checked = check_piece(piece.clone(), Arc::clone(&keys));
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert_eq!(checked.value.expect("piece").copies.len(), 1);
        assert_eq!(checked.scans.len(), 2);

        let mut bad = piece;
        bad["candidates"][0]["establishment"] = json!(Uai::from_number(751236).as_str());
        bad["copies"][0]["exam"] = json!("BAC2026-MATHS");
        bad["copies"][0]["grader"] = json!("G2");
        bad["academies"] = json!([]);
        let checked = check_piece(bad, keys);
        let lines: Vec<String> = checked.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!(
                    "$.candidates[0].establishment: unknown establishment {}",
                    Uai::from_number(751236)
                ),
                "$.copies[0].exam: unknown exam BAC2026-MATHS".to_owned(),
                "$.copies[0].grader: unknown grader G2".to_owned(),
                "$.academies: unknown field".to_owned(),
            ]
        );
        assert!(checked.value.is_none());
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(check_relative("scans/a.jpg").is_ok());
        assert!(check_relative("../a.jpg").is_err());
        assert!(check_relative("scans/../../a.jpg").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("").is_err());
    }

    #[test]
    fn codes_are_safe_ascii() {
        for good in [
            "BAC26-PHILO",
            "BAC-2026",
            "COR-PARIS-001",
            "202600000001",
            "A_1.b",
            &"X".repeat(32),
        ] {
            assert_eq!(check_code(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "EVIL/../x",
            "a b",
            "a:b",
            "é",
            "a\u{0}",
            &"X".repeat(33),
        ] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_found() {
        assert_eq!(control_char("Martin", &[]), None);
        assert_eq!(control_char("a\u{0}b", &[]), Some((1, '\u{0}')));
        assert_eq!(control_char("a\nb\tc", FREE_TEXT_CONTROLS), None);
        assert_eq!(control_char("a\nb", &[]), Some((1, '\n')));
        assert_eq!(
            control_char("a\u{7f}", FREE_TEXT_CONTROLS),
            Some((1, '\u{7f}'))
        );
        assert_eq!(
            control_char("\u{9f}", FREE_TEXT_CONTROLS),
            Some((0, '\u{9f}'))
        );
        assert!(check_relative("scans/a\u{0}.jpg").is_err());
    }

    #[test]
    fn grades_have_two_decimals_at_most() {
        assert!(at_most_two_decimals(12.35));
        assert!(at_most_two_decimals(20.0));
        assert!(at_most_two_decimals(0.01));
        assert!(!at_most_two_decimals(12.345));
    }
}
