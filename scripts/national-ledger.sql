-- A national night's data, generated in SQL, to measure reads and sweeps
-- at national size (docs/performance.md, "Reads at national size").
--
-- Run it on a scratch database migrated by `copiste migrate`:
--
--   createdb -h 127.0.0.1 -U postgres copiste_national
--   COPISTE_DATABASE__URL=postgres://postgres@127.0.0.1:5432/copiste_national copiste migrate
--   psql -h 127.0.0.1 -U postgres -d copiste_national -f scripts/national-ledger.sql
--
-- What it makes: 30 academies, 4 600 establishments (A01 has 700 of
-- them, the others about 134 each), 10 ponctuel exams, 700 000
-- candidates with 5 copies each (3.5 M copies, 46 000 closure units),
-- one Cyclades item per copy (95 % accepted, 4 % pending, 1 % rejected),
-- one Imag'In count per unit, 46 000 downloads (a tenth expired), about
-- 150 000 jobs of the real kinds over 40 days (closures and zips of every
-- unit, a second wave of each, the sweeps every 15 minutes, harmonisation
-- passes, no-op jobs), a third of them finished before the retention
-- period, with 3 to 5 job_events rows each. Ids and names are
-- deterministic; creation instants are shared by the jobs of one enqueue
-- (as `enqueue_many` writes them), so ties on created_at are common.

\set ON_ERROR_STOP on
\timing on

BEGIN;

INSERT INTO academies (code, name)
SELECT 'A' || lpad(g::text, 2, '0'), 'Académie ' || g FROM generate_series(1, 30) g;

-- Establishment g (1..4600): UAI from its number with the mod-23 letter;
-- 1..700 in A01, the others spread over A02..A30.
INSERT INTO establishments (uai, name, academy_code)
SELECT lpad(g::text, 7, '0') || substr('ABCDEFGHJKLMNPRSTUVWXYZ', g % 23 + 1, 1),
       'Lycée ' || g,
       CASE WHEN g <= 700 THEN 'A01' ELSE 'A' || lpad((2 + (g - 701) % 29)::text, 2, '0') END
FROM generate_series(1, 4600) g;

INSERT INTO sessions (code, name) VALUES ('BAC26', 'Baccalauréat 2026');
INSERT INTO exams (code, session_code, subject, kind)
SELECT 'BAC26-E' || lpad(g::text, 2, '0'), 'BAC26', 'Épreuve ' || g, 'ponctuel'
FROM generate_series(1, 10) g;

INSERT INTO graders (code, nom, prenom, academy_code)
SELECT 'G' || lpad(g::text, 5, '0'), 'Correcteur', 'N' || g, 'A' || lpad((1 + g % 30)::text, 2, '0')
FROM generate_series(1, 6000) g;

-- Candidate i belongs to establishment i % 4600 + 1.
INSERT INTO candidates (session_code, numero, nom, prenom, establishment_uai)
SELECT 'BAC26', 'N' || lpad(i::text, 9, '0'), 'Nom' || (i % 997), 'Prénom' || (i % 331),
       lpad((i % 4600 + 1)::text, 7, '0') || substr('ABCDEFGHJKLMNPRSTUVWXYZ', (i % 4600 + 1) % 23 + 1, 1)
FROM generate_series(1, 700000) i;

COMMIT;

-- Copies: each candidate sits 5 of the 10 exams, so every establishment
-- has copies of every exam: 4 600 × 10 units.
BEGIN;
ALTER TABLE copies DISABLE TRIGGER USER;
INSERT INTO copies (exam_code, candidate_id, grader_code, grade, page_keys, content_sha256)
SELECT 'BAC26-E' || lpad(((ca.id / 4600 + k * 2) % 10 + 1)::text, 2, '0'), ca.id,
       'G' || lpad(((ca.id * 7 + k) % 6000 + 1)::text, 5, '0'),
       (ca.id + k) % 21, ARRAY['scans/00/x.jpg'], 'generated'
FROM candidates ca, generate_series(0, 4) k;
ALTER TABLE copies ENABLE TRIGGER USER;
COMMIT;

BEGIN;
ALTER TABLE grade_exports DISABLE TRIGGER USER;
INSERT INTO grade_exports (copy_id, revision, state, reason, attempts, sent_at, accepted_at)
SELECT id, 1,
       CASE WHEN id % 100 = 0 THEN 'rejected' WHEN id % 25 = 1 THEN 'pending' ELSE 'accepted' END,
       CASE WHEN id % 100 = 0 THEN 'note hors barème' END,
       1, now(), CASE WHEN id % 100 <> 0 AND id % 25 <> 1 THEN now() END
FROM copies;
ALTER TABLE grade_exports ENABLE TRIGGER USER;
COMMIT;

BEGIN;
INSERT INTO closure_units (exam_code, establishment_uai, state, generation, runs, closed_at,
                           summary, retryable_errors)
SELECT x.code, e.uai,
       CASE WHEN e.uai LIKE '%0_' THEN 'closed_with_errors' ELSE 'closed' END,
       1, 1, now(), '{}', e.uai LIKE '%0_'
FROM exams x, establishments e;

ALTER TABLE count_exports DISABLE TRIGGER USER;
INSERT INTO count_exports (target, exam_code, establishment_uai, grader_code, revision, key,
                           document, state, attempts, sent_at)
SELECT 'imagin', u.exam_code, u.establishment_uai, 'G00001', 1,
       'i:' || u.exam_code || ':' || u.establishment_uai || ':G00001:r1',
       '{"grader": "G00001", "copies": 76}', 'accepted', 1, now()
FROM closure_units u;
ALTER TABLE count_exports ENABLE TRIGGER USER;
COMMIT;

-- The summaries, counted once (as migration 10 does).
SELECT unit_summaries_recount(array_agg(exam_code), array_agg(establishment_uai), true, true, true)
FROM closure_units;

-- Jobs. Each wave is enqueued per exam in one statement (one created_at
-- per exam and wave); day d of 40 (day 0 is 40 days ago).
CREATE TEMPORARY TABLE waves AS
SELECT w, x, now() - interval '40 days' + (w * 4 + x) * interval '40 hours' AS at
FROM generate_series(0, 3) w, generate_series(1, 10) x;

BEGIN;
ALTER TABLE jobs DISABLE TRIGGER USER;
-- Closures (waves 0 and 2: every unit, then a relaunch of half of them)
-- and zips (waves 1 and 3: every unit, then another option set for half).
INSERT INTO jobs (id, kind, payload, status, priority, attempts, max_attempts, run_at,
                  lease_until, worker, last_error, idempotency_key, created_by, created_at,
                  started_at, finished_at)
SELECT md5('job' || w.w || ':' || w.x || ':' || e.uai)::uuid,
       CASE WHEN w.w % 2 = 0 THEN 'closure' ELSE 'bulk-render' END,
       CASE WHEN w.w % 2 = 0
            THEN jsonb_build_object('exam', 'BAC26-E' || lpad(w.x::text, 2, '0'), 'establishment', e.uai)
            ELSE jsonb_build_object('exam', 'BAC26-E' || lpad(w.x::text, 2, '0'), 'establishment', e.uai,
                                    'options', jsonb_build_object('details', w.w = 1, 'appreciation', true, 'annotations', true))
       END,
       s.status, 0, s.attempts, 5, w.at,
       CASE WHEN s.status = 'running' THEN now() + interval '1 minute' END,
       CASE WHEN s.status = 'running' THEN 'w1' END,
       CASE WHEN s.status IN ('failed', 'dead') THEN 'target answered 503' END,
       CASE WHEN w.w % 2 = 0 THEN 'closure:BAC26-E' || lpad(w.x::text, 2, '0') || ':' || e.uai || ':g' || (w.w / 2 + 1) END,
       'scheduler', w.at,
       CASE WHEN s.status NOT IN ('queued') THEN w.at + interval '10 minutes' END,
       CASE WHEN s.status NOT IN ('queued', 'running') THEN w.at + interval '20 minutes' END
FROM waves w
JOIN establishments e ON w.w < 2 OR hashtext(e.uai) % 2 = 0
CROSS JOIN LATERAL (
    SELECT CASE WHEN w.w = 3 AND w.x = 10 AND hashtext(e.uai) % 50 = 0 THEN 'queued'
                WHEN w.w = 3 AND w.x = 10 AND hashtext(e.uai) % 50 = 2 THEN 'running'
                WHEN hashtext(e.uai || w.w || w.x) % 100 = 7 THEN 'failed'
                WHEN hashtext(e.uai || w.w || w.x) % 300 = 11 THEN 'dead'
                WHEN hashtext(e.uai || w.w || w.x) % 500 = 13 THEN 'cancelled'
                ELSE 'succeeded' END AS status,
           1 + abs(hashtext(e.uai || w.x)) % 2 AS attempts
) s;

-- Export-retry sweeps every 15 minutes over the 40 days, nightly
-- closures and housekeeping every day.
INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, idempotency_key,
                  created_by, created_at, started_at, finished_at)
SELECT md5('sweep' || g)::uuid, 'export-retry-sweep', '{}', 'succeeded', 1, 5, t, 
       'schedule:export-retry-sweep:' || g, 'scheduler', t, t, t + interval '2 seconds'
FROM generate_series(0, 40 * 96 - 1) g, LATERAL (SELECT now() - interval '40 days' + g * interval '15 minutes' AS t) a;
INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, idempotency_key,
                  created_by, created_at, started_at, finished_at)
SELECT md5(k || g)::uuid, k, '{}', 'succeeded', 1, 5, t,
       'schedule:' || k || ':' || g, 'scheduler', t, t, t + interval '30 seconds'
FROM generate_series(0, 39) g, unnest(ARRAY['nightly-closure', 'housekeeping']) k,
     LATERAL (SELECT now() - interval '40 days' + g * interval '1 day' AS t) a;

-- Harmonisation passes: 10 per academy and exam.
INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_by,
                  created_at, started_at, finished_at)
SELECT md5('pass' || a.code || x || p)::uuid, 'harmonisation-validation',
       jsonb_build_object('exam', 'BAC26-E' || lpad(x::text, 2, '0'), 'academy', a.code, 'pass', p),
       'succeeded', 1, 5, t, 'coordinator:' || a.code, t, t, t + interval '1 minute'
FROM academies a, generate_series(1, 10) x, generate_series(1, 10) p,
     LATERAL (SELECT now() - interval '30 days' + (x * 10 + p) * interval '13 minutes' AS t) b;

-- No-op jobs (the operators' checks), 20 000 in batches of 1 000.
INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at, created_by,
                  created_at, started_at, finished_at)
SELECT md5('noop' || g)::uuid, 'noop', '{}', 'succeeded', 1, 5, t, 'admin:ops', t, t, t
FROM generate_series(1, 20000) g,
     LATERAL (SELECT now() - interval '39 days' + (g / 1000) * interval '2 days' AS t) b;
ALTER TABLE jobs ENABLE TRIGGER USER;

-- Each unit names its last closure job.
UPDATE closure_units u SET active_job_id = j.id
FROM (SELECT DISTINCT ON (payload->>'exam', payload->>'establishment')
             id, payload->>'exam' AS exam, payload->>'establishment' AS uai
      FROM jobs WHERE kind = 'closure'
      ORDER BY payload->>'exam', payload->>'establishment', created_at DESC) j
WHERE u.exam_code = j.exam AND u.establishment_uai = j.uai;

-- Histories: enqueued, started and the outcome; a second attempt adds
-- retry_scheduled and started.
INSERT INTO job_events (job_id, at, event, attempt, worker, detail)
SELECT j.id, j.created_at + e.n * interval '1 second', e.event, e.attempt, 'w1', NULL
FROM jobs j
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES (0, 'enqueued', 0, true),
                          (1, 'started', 1, j.status <> 'queued'),
                          (2, 'retry_scheduled', 1, j.attempts > 1 AND j.status NOT IN ('queued', 'running')),
                          (3, 'started', 2, j.attempts > 1 AND j.status NOT IN ('queued', 'running')),
                          (4, CASE j.status WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed'
                                            WHEN 'dead' THEN 'dead' ELSE 'cancelled' END,
                           j.attempts, j.status NOT IN ('queued', 'running'))) v(n, event, attempt, keep)
    WHERE keep
) e;

-- Zips: one download per zip job that succeeded (the first wave); those
-- of the first days have expired.
INSERT INTO downloads (id, exam_code, establishment_uai, options, parts, copies, errors, job_id,
                       created_at, expires_at)
SELECT md5('dl' || j.id)::uuid, j.payload->>'exam', j.payload->>'establishment', 'd1a1n1',
       jsonb_build_array(jsonb_build_object('key', 'downloads/' || (j.payload->>'exam') || '/'
                                                   || (j.payload->>'establishment') || '/d1a1n1/' || j.id || '/part-1.zip',
                                            'bytes', 120000000, 'sha256', md5(j.id::text))),
       76, 0, j.id, j.finished_at, j.finished_at + interval '30 days'
FROM jobs j WHERE j.kind = 'bulk-render' AND j.status = 'succeeded'
  AND j.payload->'options'->>'details' = 'true';
COMMIT;

VACUUM ANALYZE;

SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2;
SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM job_events) AS events,
       (SELECT count(*) FROM copies) AS copies, (SELECT count(*) FROM closure_units) AS units,
       (SELECT count(*) FROM downloads) AS downloads,
       (SELECT count(*) FROM downloads WHERE expires_at <= now()) AS expired;
