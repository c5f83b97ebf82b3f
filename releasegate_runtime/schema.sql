-- releasegate state. Each service owns its tables (named in the comments); shared mechanisms come first.
-- Applied idempotently by `python -m releasegate_runtime.init_stack` under an advisory lock.

-- shared: transactional outbox (every service) and processed-event ledger (idempotent consumers)
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    producer     text        NOT NULL,
    topic        text        NOT NULL,
    key          text,
    event_id     text        NOT NULL UNIQUE,
    headers      jsonb       NOT NULL,
    payload      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- refused: why the broker will never take this event (too large, an invalid topic); the relay keeps it here, out
-- of the way of the events after it, and counts it (releasegate_outbox_refused_total)
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS refused text;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (producer, id) WHERE published_at IS NULL AND refused IS NULL;
DROP INDEX IF EXISTS outbox_unpublished;
-- claimed_until: the row's writer publishes it itself straight after its commit (outbox.DirectPublisher); until
-- then the relay leaves it, and every later row with its key, alone. A row is claimed only when no earlier row with
-- its key is unpublished, so a key's events stay in order; a writer that died hands its rows to the relay at expiry.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
-- claimed_by: the token of the publisher that claimed the row; a later row of the key may be claimed by the same
-- publisher while this one is still its to publish (outbox.CLAIM)
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS claimed_by text;
CREATE INDEX IF NOT EXISTS outbox_pending_key ON outbox (producer, key, id) WHERE published_at IS NULL AND refused IS NULL;

CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- coordinator: sagas, deadlines, audit log
CREATE TABLE IF NOT EXISTS sagas (
    release_id  text PRIMARY KEY,
    service     text        NOT NULL,
    version     text        NOT NULL,
    digest      text        NOT NULL,
    state       text        NOT NULL,
    body        jsonb       NOT NULL,
    revision    integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS saga_deadlines (
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    due_at     timestamptz NOT NULL,
    PRIMARY KEY (release_id, step_id)
);

-- A saga's body (about 10 kB) is written again at every step, with its audit entries and outbox events:
-- lz4 compresses them about twice as fast as the default pglz (the coordinator's batch writes spend much of their
-- time there). Applies to values written from now on.
ALTER TABLE sagas ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;

CREATE TABLE IF NOT EXISTS audit_log (
    id         bigserial PRIMARY KEY,
    release_id text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text        NOT NULL,
    state      text        NOT NULL,
    step       text,
    reason     text        NOT NULL,
    evidence   jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_release ON audit_log (release_id, id);
ALTER TABLE audit_log ALTER COLUMN evidence SET COMPRESSION lz4;

-- append-only tables (the audit log, used grants, refused commands) refuse UPDATE and DELETE, even by the owner
CREATE OR REPLACE FUNCTION refuse_update_or_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_update_or_delete();

-- A statement that finds, by what it wrote, that rows it read changed meanwhile takes back its own writes by raising
-- from inside itself: the coordinator's batch write runs as one statement without BEGIN and COMMIT
-- (services/coordinator/adapters/postgres.py, WRITE_ALL). SQLSTATE 40001, as a serialization failure.
CREATE OR REPLACE FUNCTION releasegate_conflict(reason text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = reason;
END $$;

-- coordinator: nonces of signed operator commands it has seen, written in the transaction that acts on the
-- command; a nonce seen before is a replay (refused, and only recorded in the audit log)
CREATE TABLE IF NOT EXISTS operator_nonces (
    nonce      text PRIMARY KEY,
    release_id text        NOT NULL,
    actor      text        NOT NULL,
    event_type text        NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT now()
);

-- coordinator's published read model: digests that passed staging verification (the gatekeeper reads it)
CREATE TABLE IF NOT EXISTS staging_verified_artifacts (
    service     text        NOT NULL,
    digest      text        NOT NULL,
    release_id  text        NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, digest)
);

-- coordinator: incidents of rolled-back releases (one per release, opened in the transaction of its terminal state)
-- and their follow-up actions, added and closed by signed operator commands (services/coordinator/incidents.py);
-- the saga body holds the same, these are what readers (the CLI, change records, the production gate's fact) query
CREATE TABLE IF NOT EXISTS incidents (
    release_id text PRIMARY KEY,
    service    text        NOT NULL,
    version    text        NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('rolled_back', 'rollback_failed')),
    summary    text        NOT NULL,
    findings   jsonb       NOT NULL DEFAULT '{}',
    opened_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_service ON incidents (service, opened_at);
CREATE TABLE IF NOT EXISTS incident_followups (
    release_id   text        NOT NULL REFERENCES incidents (release_id),
    followup_id  integer     NOT NULL CHECK (followup_id >= 1),
    service      text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('verifier', 'policy', 'runbook', 'test')),
    severity     text        NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    owner        text        NOT NULL,
    title        text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('open', 'closed')),
    added_by     text        NOT NULL,
    added_at     timestamptz NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    closed_by    text,
    closed_at    timestamptz,
    close_reason text,
    PRIMARY KEY (release_id, followup_id)
);
CREATE INDEX IF NOT EXISTS incident_followups_open ON incident_followups (service) WHERE status = 'open';

-- deployer: instances it started and the stable version per environment
CREATE TABLE IF NOT EXISTS instances (
    id          bigserial PRIMARY KEY,
    service     text        NOT NULL,
    environment text        NOT NULL,
    version     text        NOT NULL,
    digest      text        NOT NULL,
    release_id  text,
    slot        text        NOT NULL,
    port        integer     NOT NULL,
    pid         integer,
    state       text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS instances_live_slot ON instances (environment, slot) WHERE state <> 'stopped';

CREATE TABLE IF NOT EXISTS environments (
    service        text NOT NULL,
    environment    text NOT NULL,
    stable_version text NOT NULL,
    stable_digest  text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, environment)
);

CREATE TABLE IF NOT EXISTS deploy_steps (
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    result     jsonb       NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (release_id, step_id)
);

-- verifier: business events and HAProxy request samples, and the verifications in progress
CREATE TABLE IF NOT EXISTS business_events (
    event_id    text PRIMARY KEY,
    type        text        NOT NULL,
    environment text        NOT NULL,
    version     text        NOT NULL,
    tenant      text        NOT NULL,
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason      text,
    latency_ms  double precision
);
CREATE INDEX IF NOT EXISTS business_events_window ON business_events (environment, version, at);
-- verifier: how far each partition of a business-event topic has been ingested (by whichever verifier instance
-- owns it now): a window closes only once every partition is ingested past its end, not only this instance's
CREATE TABLE IF NOT EXISTS ingest_watermarks (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    caught_up_at timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS http_samples (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    environment text        NOT NULL,
    server      text        NOT NULL,
    version     text,
    status      integer     NOT NULL,
    ta_ms       integer     NOT NULL,
    tenant      text
);
CREATE INDEX IF NOT EXISTS http_samples_window ON http_samples (environment, version, at);

CREATE TABLE IF NOT EXISTS verifications (
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    request    jsonb       NOT NULL,
    started_at timestamptz NOT NULL,
    due_at     timestamptz NOT NULL,
    finished   boolean     NOT NULL DEFAULT false,
    verdict    jsonb,
    PRIMARY KEY (release_id, step_id)
);

-- dr-checker: the backup catalog (written by `make backup` / the scheduled backup job)
CREATE TABLE IF NOT EXISTS backups (
    id          bigserial PRIMARY KEY,
    database    text        NOT NULL,
    path        text        NOT NULL,
    bytes       bigint      NOT NULL,
    sha256      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_newest ON backups (database, finished_at DESC);

-- gatekeeper: every gate decision with the policy version, the digest of its input and each rule's result
CREATE TABLE IF NOT EXISTS gate_decisions (
    request_id     text PRIMARY KEY,
    release_id     text        NOT NULL,
    step_id        text        NOT NULL,
    environment    text        NOT NULL,
    decision       text        NOT NULL,
    risk           text        NOT NULL,
    policy_version text        NOT NULL,
    input_digest   text        NOT NULL,
    input          jsonb       NOT NULL,
    rules          jsonb       NOT NULL,
    warnings       jsonb       NOT NULL,
    refused        jsonb       NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS gate_decisions_release ON gate_decisions (release_id, decided_at);

-- dr-checker: restore drills (restore of the newest backup into a scratch database, timed, integrity-checked)
-- and the readiness report stored with each release
CREATE TABLE IF NOT EXISTS dr_drills (
    id          bigserial PRIMARY KEY,
    database    text        NOT NULL,
    backup_id   bigint,
    started_at  timestamptz NOT NULL,
    seconds     double precision NOT NULL,
    passed      boolean     NOT NULL,
    checks      jsonb       NOT NULL,
    reason      text        NOT NULL
);
CREATE INDEX IF NOT EXISTS dr_drills_database ON dr_drills (database, started_at DESC);

CREATE TABLE IF NOT EXISTS dr_reports (
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    ready      boolean     NOT NULL,
    checks     jsonb       NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (release_id, step_id)
);
ALTER TABLE backups ADD COLUMN IF NOT EXISTS release_id text;
ALTER TABLE backups ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'scheduled';

-- verifiers built on releasegate_sdk: one run per (verifier, release, step) with the request it answers (a
-- re-issued step replaces it) and its verdict once decided
CREATE TABLE IF NOT EXISTS verifier_runs (
    verifier    text        NOT NULL,
    release_id  text        NOT NULL,
    step_id     text        NOT NULL,
    request_id  text        NOT NULL,
    request     jsonb       NOT NULL,
    trace       jsonb       NOT NULL DEFAULT '{}',
    tenant      text,
    started_at  timestamptz NOT NULL,
    window_end  timestamptz NOT NULL,
    deadline    timestamptz NOT NULL,
    finished_at timestamptz,
    verdict     jsonb,
    PRIMARY KEY (verifier, release_id, step_id)
);
CREATE INDEX IF NOT EXISTS verifier_runs_open ON verifier_runs (verifier, deadline) WHERE finished_at IS NULL;

-- coordinator: verifier registry, the last heartbeat of every verifier instance (release.verifiers)
CREATE TABLE IF NOT EXISTS verifier_registry (
    name             text             NOT NULL,
    instance         text             NOT NULL,
    version          text             NOT NULL,
    services         text[]           NOT NULL,
    environments     text[]           NOT NULL,
    kpis             text[]           NOT NULL,
    interval_seconds double precision NOT NULL,
    first_seen       timestamptz      NOT NULL,
    last_heartbeat   timestamptz      NOT NULL,
    PRIMARY KEY (name, instance)
);

-- deployer and rollback: step grants spent (a grant authorizes one command, from one CloudEvent) and commands
-- refused (no valid grant, grant already spent, a restore naming a backup that is not its release's backup point)
CREATE TABLE IF NOT EXISTS used_grants (
    grant_id   text PRIMARY KEY,
    consumer   text        NOT NULL,
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    event_id   text        NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
DROP TRIGGER IF EXISTS used_grants_append_only ON used_grants;
CREATE TRIGGER used_grants_append_only BEFORE UPDATE OR DELETE ON used_grants
    FOR EACH ROW EXECUTE FUNCTION refuse_update_or_delete();

CREATE TABLE IF NOT EXISTS refused_commands (
    id         bigserial PRIMARY KEY,
    consumer   text        NOT NULL,
    release_id text        NOT NULL,
    step_id    text        NOT NULL,
    event_id   text        NOT NULL,
    reason     text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS refused_commands_release ON refused_commands (release_id, at);
DROP TRIGGER IF EXISTS refused_commands_append_only ON refused_commands;
CREATE TRIGGER refused_commands_append_only BEFORE UPDATE OR DELETE ON refused_commands
    FOR EACH ROW EXECUTE FUNCTION refuse_update_or_delete();

-- every service: records whose dead letter could not be produced (too large for the broker, refused, the broker
-- unreachable), kept bounded with their reason so the consumer can move on; one row per record, so a
-- redelivery parks nothing twice (releasegate_runtime/dead_letters.py)
CREATE TABLE IF NOT EXISTS parked_records (
    consumer_group    text        NOT NULL,
    topic             text        NOT NULL,
    partition         integer     NOT NULL,
    record_offset     bigint      NOT NULL,
    key               text,
    reason            text        NOT NULL,
    error_type        text        NOT NULL,
    dead_letter_error text        NOT NULL,
    headers           jsonb       NOT NULL,
    value             text        NOT NULL,
    value_bytes       integer     NOT NULL,
    value_digest      text        NOT NULL,
    header_count      integer     NOT NULL,
    headers_bytes     integer     NOT NULL,
    truncated         boolean     NOT NULL,
    parked_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer_group, topic, partition, record_offset)
);
CREATE INDEX IF NOT EXISTS parked_records_at ON parked_records (parked_at);

-- rollback: its step ledger; each compensation (release, step) is carried out once and its outcome kept, so a
-- redelivered command gets the recorded outcome instead of a second restore (attempts counts starts that never
-- finished: the process died mid-restore)
CREATE TABLE IF NOT EXISTS rollback_steps (
    release_id  text        NOT NULL,
    step_id     text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    result      jsonb,
    finished_at timestamptz,
    PRIMARY KEY (release_id, step_id)
);

-- deployer: numbers the states of its read model (release.environments, services/deployer/read_model.py)
CREATE SEQUENCE IF NOT EXISTS environment_state_sequence;

-- gatekeeper and core verifier: each one's projection of the deployer's read model (release.environments), the
-- state with the highest sequence per service and environment; an older state never replaces a newer one
CREATE TABLE IF NOT EXISTS gatekeeper_environments (
    service     text        NOT NULL,
    environment text        NOT NULL,
    sequence    bigint      NOT NULL,
    state       jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (service, environment)
);
CREATE TABLE IF NOT EXISTS verifier_environments (
    service     text        NOT NULL,
    environment text        NOT NULL,
    sequence    bigint      NOT NULL,
    state       jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (service, environment)
);

-- notifier (services/notifier): each event it notifies about (the notification as sent, and the record it came as,
-- for a dead letter), one delivery per (event, route) claimed before each attempt (status, attempts, next attempt,
-- last error), and each release's version and furthest environment (alerts carry neither)
CREATE TABLE IF NOT EXISTS notification_events (
    event_id     text        PRIMARY KEY,
    release_id   text        NOT NULL,
    notification jsonb       NOT NULL,
    source       jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS notification_deliveries (
    event_id        text        NOT NULL REFERENCES notification_events (event_id),
    route           text        NOT NULL,
    channel         text        NOT NULL,
    spec            jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, route)
);
CREATE INDEX IF NOT EXISTS notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE TABLE IF NOT EXISTS notifier_releases (
    release_id  text        PRIMARY KEY,
    service     text        NOT NULL,
    version     text,
    environment text,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- api (services/api): the change record of each ended release, a DSSE envelope signed with the records key, written
-- once (the release id is the key: a redelivered end produces no second record) and never changed
CREATE TABLE IF NOT EXISTS change_records (
    release_id     text        PRIMARY KEY,
    service        text        NOT NULL,
    version        text        NOT NULL,
    outcome        text        NOT NULL,
    keyid          text        NOT NULL,
    payload_sha256 text        NOT NULL,
    envelope       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS change_records_service ON change_records (service, recorded_at DESC);
DROP TRIGGER IF EXISTS change_records_append_only ON change_records;
CREATE TRIGGER change_records_append_only BEFORE UPDATE OR DELETE ON change_records
    FOR EACH ROW EXECUTE FUNCTION refuse_update_or_delete();
