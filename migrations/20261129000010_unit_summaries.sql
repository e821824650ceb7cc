-- What the closure table shows of each unit (exam, establishment), kept up
-- to date by the database itself instead of being counted at each page.
--
-- A coordinator's closure page lists every establishment of its academy
-- with its copies and the state of its export items. Counting them from
-- copies, candidates and both ledgers at every page cost most of the page's
-- time with 4 candidates per establishment (PostgreSQL took 85 % of the CPU
-- of the bench), and grows with the academy's copies (about 30 000 per exam
-- at national size). Each count below is written where what it counts is
-- written, by triggers, so no writer (import, harmonisation, closure runs,
-- an operator's SQL) can forget it:
--
-- * content (copies, validated, graders, ungraded): recounted for the units
--   a statement on copies touched; those statements are bulk and rare
--   (imports, harmonisation passes); a candidate who moves to another
--   establishment has both units recounted whole;
-- * Cyclades items by state: adjusted by the difference each statement on
--   grade_exports made (one row per copy; a closure run's hot path), never
--   recounted there;
-- * Imag'In items by state: recounted for the units a statement on
--   count_exports touched (a few rows per unit).
--
-- Rows are written in key order, so two statements touching several units
-- take their locks in the same order. Housekeeping recounts every row and
-- corrects and reports any difference
-- (`copiste_unit_summary_corrections_total`), which should stay 0.
CREATE TABLE unit_summaries (
    exam_code text NOT NULL REFERENCES exams (code),
    establishment_uai text NOT NULL REFERENCES establishments (uai),
    copies bigint NOT NULL DEFAULT 0,
    -- Harmonised exams: copies validated by a pass.
    validated bigint NOT NULL DEFAULT 0,
    -- Graders with at least one graded copy (not absent).
    graders bigint NOT NULL DEFAULT 0,
    -- Copies neither graded nor absent.
    ungraded bigint NOT NULL DEFAULT 0,
    c_pending bigint NOT NULL DEFAULT 0,
    c_sent bigint NOT NULL DEFAULT 0,
    c_accepted bigint NOT NULL DEFAULT 0,
    c_rejected bigint NOT NULL DEFAULT 0,
    i_pending bigint NOT NULL DEFAULT 0,
    i_sent bigint NOT NULL DEFAULT 0,
    i_accepted bigint NOT NULL DEFAULT 0,
    i_rejected bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (exam_code, establishment_uai)
);

-- Recounts, from what is stored now, the units named: their content when
-- `p_content`, their Cyclades items when `p_grades`, their Imag'In items
-- when `p_counts`; returns how many rows it had to write (a unit whose row
-- was missing or differed). A recount leaves alone what it was not asked
-- for: a statement on copies never overwrites the Cyclades counts, which a
-- closure run may be changing at the same time. Used by the triggers, by
-- housekeeping (every unit, everything) and once below to fill the table.
CREATE FUNCTION unit_summaries_recount(
    p_exams text[], p_uais text[], p_content boolean, p_grades boolean, p_counts boolean
) RETURNS bigint
LANGUAGE sql AS $$
    WITH units AS (
        SELECT DISTINCT exam_code, establishment_uai
        FROM UNNEST(p_exams, p_uais) AS u (exam_code, establishment_uai)
    ), content AS (
        SELECT u.exam_code, u.establishment_uai,
               count(c.id) AS copies,
               count(c.id) FILTER (WHERE c.validated_pass IS NOT NULL) AS validated,
               count(DISTINCT c.grader_code) FILTER (WHERE c.grade IS NOT NULL AND NOT c.absent) AS graders,
               count(c.id) FILTER (WHERE c.grade IS NULL AND NOT c.absent) AS ungraded,
               count(g.copy_id) FILTER (WHERE g.state = 'pending') AS c_pending,
               count(g.copy_id) FILTER (WHERE g.state = 'sent') AS c_sent,
               count(g.copy_id) FILTER (WHERE g.state = 'accepted') AS c_accepted,
               count(g.copy_id) FILTER (WHERE g.state = 'rejected') AS c_rejected
        FROM units u
        LEFT JOIN candidates ca ON ca.establishment_uai = u.establishment_uai
        LEFT JOIN copies c ON c.candidate_id = ca.id AND c.exam_code = u.exam_code
        LEFT JOIN grade_exports g ON g.copy_id = c.id
        GROUP BY 1, 2
    ), counts AS (
        SELECT u.exam_code, u.establishment_uai,
               count(e.id) FILTER (WHERE e.state = 'pending') AS i_pending,
               count(e.id) FILTER (WHERE e.state = 'sent') AS i_sent,
               count(e.id) FILTER (WHERE e.state = 'accepted') AS i_accepted,
               count(e.id) FILTER (WHERE e.state = 'rejected') AS i_rejected
        FROM units u
        LEFT JOIN count_exports e
          ON e.exam_code = u.exam_code AND e.establishment_uai = u.establishment_uai
        GROUP BY 1, 2
    )
    , written AS (
    INSERT INTO unit_summaries AS s
        (exam_code, establishment_uai, copies, validated, graders, ungraded,
         c_pending, c_sent, c_accepted, c_rejected, i_pending, i_sent, i_accepted, i_rejected)
    SELECT c.exam_code, c.establishment_uai, c.copies, c.validated, c.graders, c.ungraded,
           c.c_pending, c.c_sent, c.c_accepted, c.c_rejected,
           n.i_pending, n.i_sent, n.i_accepted, n.i_rejected
    FROM content c
    JOIN counts n USING (exam_code, establishment_uai)
    -- Units that no longer hold anything (a candidate moved away) keep a
    -- row of zeros: the page lists units with copies only.
    ORDER BY 1, 2
    ON CONFLICT (exam_code, establishment_uai) DO UPDATE
    SET copies = CASE WHEN p_content THEN EXCLUDED.copies ELSE s.copies END,
        validated = CASE WHEN p_content THEN EXCLUDED.validated ELSE s.validated END,
        graders = CASE WHEN p_content THEN EXCLUDED.graders ELSE s.graders END,
        ungraded = CASE WHEN p_content THEN EXCLUDED.ungraded ELSE s.ungraded END,
        c_pending = CASE WHEN p_grades THEN EXCLUDED.c_pending ELSE s.c_pending END,
        c_sent = CASE WHEN p_grades THEN EXCLUDED.c_sent ELSE s.c_sent END,
        c_accepted = CASE WHEN p_grades THEN EXCLUDED.c_accepted ELSE s.c_accepted END,
        c_rejected = CASE WHEN p_grades THEN EXCLUDED.c_rejected ELSE s.c_rejected END,
        i_pending = CASE WHEN p_counts THEN EXCLUDED.i_pending ELSE s.i_pending END,
        i_sent = CASE WHEN p_counts THEN EXCLUDED.i_sent ELSE s.i_sent END,
        i_accepted = CASE WHEN p_counts THEN EXCLUDED.i_accepted ELSE s.i_accepted END,
        i_rejected = CASE WHEN p_counts THEN EXCLUDED.i_rejected ELSE s.i_rejected END
    WHERE (p_content AND (s.copies, s.validated, s.graders, s.ungraded)
                         IS DISTINCT FROM (EXCLUDED.copies, EXCLUDED.validated,
                                           EXCLUDED.graders, EXCLUDED.ungraded))
       OR (p_grades AND (s.c_pending, s.c_sent, s.c_accepted, s.c_rejected)
                        IS DISTINCT FROM (EXCLUDED.c_pending, EXCLUDED.c_sent,
                                          EXCLUDED.c_accepted, EXCLUDED.c_rejected))
       OR (p_counts AND (s.i_pending, s.i_sent, s.i_accepted, s.i_rejected)
                        IS DISTINCT FROM (EXCLUDED.i_pending, EXCLUDED.i_sent,
                                          EXCLUDED.i_accepted, EXCLUDED.i_rejected))
    RETURNING 1
    )
    SELECT count(*) FROM written;
$$;

-- Copies: recount the units of the copies a statement wrote.
CREATE FUNCTION unit_summaries_copies() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unit_summaries_recount(array_agg(u.exam_code), array_agg(u.uai), true, false, false)
    FROM (SELECT DISTINCT n.exam_code, ca.establishment_uai AS uai
          FROM new_copies n JOIN candidates ca ON ca.id = n.candidate_id) u;
    RETURN NULL;
END;
$$;
CREATE TRIGGER unit_summaries_copies_insert AFTER INSERT ON copies
    REFERENCING NEW TABLE AS new_copies
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_copies();
CREATE TRIGGER unit_summaries_copies_update AFTER UPDATE ON copies
    REFERENCING NEW TABLE AS new_copies
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_copies();

-- Candidates that moved to another establishment take their copies and
-- items with them: recount the units they left and those they joined.
CREATE FUNCTION unit_summaries_candidates() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unit_summaries_recount(array_agg(u.exam_code), array_agg(u.uai), true, true, true)
    FROM (SELECT DISTINCT c.exam_code, m.uai
          FROM (SELECT o.id, o.establishment_uai AS uai
                FROM old_candidates o JOIN new_candidates n USING (id)
                WHERE o.establishment_uai <> n.establishment_uai
                UNION
                SELECT n.id, n.establishment_uai
                FROM old_candidates o JOIN new_candidates n USING (id)
                WHERE o.establishment_uai <> n.establishment_uai) m
          JOIN copies c ON c.candidate_id = m.id) u;
    RETURN NULL;
END;
$$;
CREATE TRIGGER unit_summaries_candidates AFTER UPDATE ON candidates
    REFERENCING OLD TABLE AS old_candidates NEW TABLE AS new_candidates
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_candidates();

-- Cyclades items: add what a statement added, take away what it removed,
-- per unit and state. An update that keeps an item's state changes nothing.
-- This runs with every batch of answers a closure records (500 rows by
-- default): written straight on the transition tables, it costs about
-- 1 ms per 500 rows here (measured: the insert of 500 answers went from
-- 2.4 to 3.4 ms), where going through arrays and a helper function cost
-- 3.5 ms. The three branches differ only in where their rows come from:
-- a statement may name only the transition tables its own trigger has.
CREATE FUNCTION unit_summaries_grades() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO unit_summaries AS s
            (exam_code, establishment_uai, c_pending, c_sent, c_accepted, c_rejected)
        SELECT c.exam_code, ca.establishment_uai,
               count(*) FILTER (WHERE n.state = 'pending'),
               count(*) FILTER (WHERE n.state = 'sent'),
               count(*) FILTER (WHERE n.state = 'accepted'),
               count(*) FILTER (WHERE n.state = 'rejected')
        FROM new_grades n
        JOIN copies c ON c.id = n.copy_id
        JOIN candidates ca ON ca.id = c.candidate_id
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (exam_code, establishment_uai) DO UPDATE
        SET c_pending = s.c_pending + EXCLUDED.c_pending,
            c_sent = s.c_sent + EXCLUDED.c_sent,
            c_accepted = s.c_accepted + EXCLUDED.c_accepted,
            c_rejected = s.c_rejected + EXCLUDED.c_rejected;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO unit_summaries AS s
            (exam_code, establishment_uai, c_pending, c_sent, c_accepted, c_rejected)
        SELECT c.exam_code, ca.establishment_uai,
               count(*) FILTER (WHERE d.now = 'pending') - count(*) FILTER (WHERE d.was = 'pending'),
               count(*) FILTER (WHERE d.now = 'sent') - count(*) FILTER (WHERE d.was = 'sent'),
               count(*) FILTER (WHERE d.now = 'accepted') - count(*) FILTER (WHERE d.was = 'accepted'),
               count(*) FILTER (WHERE d.now = 'rejected') - count(*) FILTER (WHERE d.was = 'rejected')
        FROM (SELECT n.copy_id, n.state AS now, o.state AS was
              FROM new_grades n JOIN old_grades o USING (copy_id)
              WHERE n.state <> o.state) d
        JOIN copies c ON c.id = d.copy_id
        JOIN candidates ca ON ca.id = c.candidate_id
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (exam_code, establishment_uai) DO UPDATE
        SET c_pending = s.c_pending + EXCLUDED.c_pending,
            c_sent = s.c_sent + EXCLUDED.c_sent,
            c_accepted = s.c_accepted + EXCLUDED.c_accepted,
            c_rejected = s.c_rejected + EXCLUDED.c_rejected;
    ELSE
        INSERT INTO unit_summaries AS s
            (exam_code, establishment_uai, c_pending, c_sent, c_accepted, c_rejected)
        SELECT c.exam_code, ca.establishment_uai,
               -count(*) FILTER (WHERE o.state = 'pending'),
               -count(*) FILTER (WHERE o.state = 'sent'),
               -count(*) FILTER (WHERE o.state = 'accepted'),
               -count(*) FILTER (WHERE o.state = 'rejected')
        FROM old_grades o
        JOIN copies c ON c.id = o.copy_id
        JOIN candidates ca ON ca.id = c.candidate_id
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (exam_code, establishment_uai) DO UPDATE
        SET c_pending = s.c_pending + EXCLUDED.c_pending,
            c_sent = s.c_sent + EXCLUDED.c_sent,
            c_accepted = s.c_accepted + EXCLUDED.c_accepted,
            c_rejected = s.c_rejected + EXCLUDED.c_rejected;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER unit_summaries_grades_insert AFTER INSERT ON grade_exports
    REFERENCING NEW TABLE AS new_grades
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_grades();
CREATE TRIGGER unit_summaries_grades_update AFTER UPDATE ON grade_exports
    REFERENCING OLD TABLE AS old_grades NEW TABLE AS new_grades
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_grades();
CREATE TRIGGER unit_summaries_grades_delete AFTER DELETE ON grade_exports
    REFERENCING OLD TABLE AS old_grades
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_grades();

-- Imag'In items: recount the units a statement touched.
CREATE FUNCTION unit_summaries_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM unit_summaries_recount(array_agg(exam_code), array_agg(establishment_uai),
                                       false, false, true)
        FROM (SELECT DISTINCT exam_code, establishment_uai FROM old_counts) u;
    ELSE
        PERFORM unit_summaries_recount(array_agg(exam_code), array_agg(establishment_uai),
                                       false, false, true)
        FROM (SELECT DISTINCT exam_code, establishment_uai FROM new_counts) u;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER unit_summaries_counts_insert AFTER INSERT ON count_exports
    REFERENCING NEW TABLE AS new_counts
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_counts();
CREATE TRIGGER unit_summaries_counts_update AFTER UPDATE ON count_exports
    REFERENCING NEW TABLE AS new_counts
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_counts();
CREATE TRIGGER unit_summaries_counts_delete AFTER DELETE ON count_exports
    REFERENCING OLD TABLE AS old_counts
    FOR EACH STATEMENT EXECUTE FUNCTION unit_summaries_counts();

-- Every unit holding copies now.
SELECT unit_summaries_recount(array_agg(exam_code), array_agg(uai), true, true, true)
FROM (SELECT DISTINCT c.exam_code, ca.establishment_uai AS uai
      FROM copies c JOIN candidates ca ON ca.id = c.candidate_id) u;

-- Why items are not accepted is read per exam for the closure table; only
-- the few failing items are indexed.
CREATE INDEX grade_exports_failing ON grade_exports (copy_id)
    WHERE state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL);
