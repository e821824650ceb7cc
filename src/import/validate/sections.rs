//! The sections and records of an export (session, academies,
//! establishments, exams, graders, candidates, copies and their pages,
//! marks and annotations), each checked field by field.

use serde_json::Value;

use super::{
    Checker, Fields, MAX_GRADE, UniqueKind, at_most_two_decimals, check_relative, page_path,
};
use crate::domain::ExamKind;
use crate::import::manifest::{
    Academy, Annotation, AnnotationKind, Candidate, Copy, Establishment, Exam, Grader,
    QuestionMark, Session,
};

impl Checker {
    pub(super) fn session(&mut self, root: &mut Fields) -> Option<Session> {
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
    pub(super) fn list<T>(
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

    pub(super) fn academy(&mut self, index: usize, mut fields: Fields) -> Option<Academy> {
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

    pub(super) fn establishment(
        &mut self,
        index: usize,
        mut fields: Fields,
    ) -> Option<Establishment> {
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

    pub(super) fn exam(&mut self, index: usize, mut fields: Fields) -> Option<Exam> {
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

    pub(super) fn grader(&mut self, index: usize, mut fields: Fields) -> Option<Grader> {
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

    pub(super) fn candidate(&mut self, index: usize, mut fields: Fields) -> Option<Candidate> {
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

    pub(super) fn copy(&mut self, index: usize, mut fields: Fields) -> Option<Copy> {
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

        self.copy_references(
            &fields,
            index,
            exam.as_deref(),
            candidate.as_deref(),
            grader.as_ref().and_then(Option::as_deref),
        );
        self.copy_rules(&fields, absent, grade, pages.as_deref());
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

    /// Checks that a copy's exam, candidate and grader are known, and that
    /// it is the candidate's only copy of the exam.
    fn copy_references(
        &mut self,
        fields: &Fields,
        index: usize,
        exam: Option<&str>,
        candidate: Option<&str>,
        grader: Option<&str>,
    ) {
        if let Some(exam) = exam
            && !self.knows_exam(exam)
        {
            self.problem(fields.field_path("exam"), format!("unknown exam {exam}"));
        }
        if let Some(candidate) = candidate
            && !self.candidates.contains_key(candidate)
        {
            self.problem(
                fields.field_path("candidate"),
                format!("unknown candidate {candidate}"),
            );
        }
        if let Some(grader) = grader
            && !self.knows_grader(grader)
        {
            self.problem(
                fields.field_path("grader"),
                format!("unknown grader {grader}"),
            );
        }
        if let (Some(exam), Some(candidate)) = (exam, candidate) {
            let key = (exam.to_owned(), candidate.to_owned());
            if let Some(first) = self.copies.get(&key) {
                let message = format!(
                    "a second copy of exam {exam} for candidate {candidate}, first at $.copies[{first}]"
                );
                self.problem(&fields.path, message);
            } else {
                self.copies.insert(key, index);
            }
        }
    }

    /// Checks a copy's grade (between 0 and the maximum, two decimals, none
    /// when absent) and that a copy not absent has a page.
    fn copy_rules(
        &mut self,
        fields: &Fields,
        absent: Option<bool>,
        grade: Option<Option<f64>>,
        pages: Option<&[String]>,
    ) {
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
        if let Some(pages) = pages
            && pages.is_empty()
            && absent == Some(false)
        {
            self.problem(
                fields.field_path("pages"),
                "a copy that is not absent needs at least one page",
            );
        }
    }

    /// Reads a copy's page paths and records each lexically valid one for
    /// the scan check.
    pub(super) fn pages(&mut self, fields: &mut Fields, copy: usize) -> Option<Vec<String>> {
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

    pub(super) fn mark(&mut self, _index: usize, mut fields: Fields) -> Option<QuestionMark> {
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
    pub(super) fn annotation(
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
    pub(super) fn fraction(&mut self, fields: &mut Fields, key: &str) -> Option<f64> {
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
    pub(super) fn unique(&mut self, kind: UniqueKind, key: String, index: usize, path: &str) {
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
}
