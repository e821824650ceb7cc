-- Candidate search folds every candidate's nom, prénom and numéro the way
-- it folds what was typed (lower case, no accents, letters and digits
-- only). Doing it for every candidate of the establishment at every
-- keystroke cost most of a search's time; the folded text is now kept
-- with the row, computed by PostgreSQL itself whenever the row is written.
ALTER TABLE candidates
    ADD COLUMN folded text NOT NULL GENERATED ALWAYS AS (
        regexp_replace(copiste_fold(nom || ' ' || prenom || ' ' || numero), '[^a-z0-9]+', '', 'g')
    ) STORED;
