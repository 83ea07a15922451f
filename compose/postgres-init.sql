-- Run once by the postgres image, on its first start with an empty data volume
-- (files in /docker-entrypoint-initdb.d/), as the POSTGRES_USER `skald`.
--
-- One database per service: the orchestrators share `skald` (POSTGRES_DB,
-- created by the image); the ledger and payment participants each get their
-- own. No table name collides with the orchestrator's, but in one database the
-- two participants would share the SDK's `skald_inbox` table (and its migration
-- history), and a participant's database is its own store of record.
--
-- A volume created by an older compose.yaml skipped this script: create the two
-- databases by hand (`docker compose exec postgres createdb -U skald ledger`,
-- the same for `payment`) or start afresh with `docker compose down -v`.
CREATE DATABASE ledger;
CREATE DATABASE payment;
