-- A narrow ledger for Cyclades items. A closure writes one Cyclades item
-- per copy (then settles it with the target's answer), so their row is the
-- hot path of every closure. Measured on batches of 500 items, the
-- export_items row cost about 7 ms to insert and as much to settle; the
-- row below costs about 1 ms. What it leaves out:
--
-- * the key: a function of stored, immutable data ('c:' || exam || ':' ||
--   numéro || ':v' || revision; see the export_ledger view below), so it
--   is the same on every attempt;
-- * the document: the copy's grade and absence at the item's revision,
--   which is the copy's current version whenever the item is sent (a run
--   brings every item up to its copy's version before sending it);
-- * the unit (exam, establishment): reached through the copy;
-- * a foreign key to copies: its check fires a trigger per row and locks
--   the copy row (FOR KEY SHARE), dirtying every copy page; copies are
--   never deleted.
--
-- Imag'In items (one per grader and unit, a few per unit) stay in the
-- former table, renamed count_exports.
CREATE TABLE grade_exports (
    copy_id bigint PRIMARY KEY,
    -- The copy version this item exports.
    revision integer NOT NULL CHECK (revision > 0),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'accepted', 'rejected')),
    -- Why Cyclades rejected the item.
    reason text,
    attempts integer NOT NULL DEFAULT 0,
    -- The last failure to get an answer (timeout, 5xx…).
    last_error text,
    sent_at timestamptz,
    accepted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'rejected') = (reason IS NOT NULL))
-- Room on each page for the updates every item gets (sent, then settled):
-- no indexed column changes, so they stay heap-only (HOT).
) WITH (fillfactor = 80);

INSERT INTO grade_exports (copy_id, revision, state, reason, attempts, last_error, sent_at,
                           accepted_at, updated_at)
SELECT copy_id, revision, state, reason, attempts, last_error, sent_at, accepted_at, updated_at
FROM export_items
WHERE target = 'cyclades';
DELETE FROM export_items WHERE target = 'cyclades';

ALTER TABLE export_items RENAME TO count_exports;
ALTER TABLE count_exports DROP COLUMN copy_id;
ALTER TABLE count_exports ADD CONSTRAINT count_exports_imagin CHECK (target = 'imagin');
ALTER INDEX export_items_pkey RENAME TO count_exports_pkey;
ALTER INDEX export_items_grader RENAME TO count_exports_grader;
ALTER INDEX export_items_unit RENAME TO count_exports_unit;

-- Every export item with its unit and key, for reading (status, errors,
-- operators). Hot paths read the two tables directly.
CREATE VIEW export_ledger AS
SELECT 'cyclades'::text AS target, c.exam_code, ca.establishment_uai, g.copy_id,
       NULL::text AS grader_code, g.revision,
       'c:' || c.exam_code || ':' || ca.numero || ':v' || g.revision AS key,
       g.state, g.reason, g.attempts, g.last_error, g.sent_at, g.accepted_at, g.updated_at
FROM grade_exports g
JOIN copies c ON c.id = g.copy_id
JOIN candidates ca ON ca.id = c.candidate_id
UNION ALL
SELECT target, exam_code, establishment_uai, NULL::bigint, grader_code, revision, key,
       state, reason, attempts, last_error, sent_at, accepted_at, updated_at
FROM count_exports;
