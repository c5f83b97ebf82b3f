-- What each service's role may do in the control database (least privilege). Applied by
-- `python -m releasegate_runtime.init_stack` as the schema owner after schema.sql; the roles themselves are created
-- per machine by deploy/stack.sh (docker-compose: deploy/postgres/init/). Nobody but the owner may change the
-- audit log's history, and its trigger refuses even the owner.
GRANT USAGE ON SCHEMA public TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer, rg_verifier, rg_rollback,
    rg_ops, rg_api, rg_notifier;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer,
    rg_verifier, rg_rollback;

-- shared mechanisms of every service: transactional outbox and processed-event ledger
GRANT SELECT, INSERT, UPDATE ON outbox TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer, rg_verifier,
    rg_rollback;
GRANT SELECT, INSERT ON processed_events TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer, rg_verifier,
    rg_rollback;

-- coordinator: the sagas are its own; it appends to the audit log and publishes the staging-verified read model
GRANT SELECT, INSERT, UPDATE ON sagas TO rg_coordinator;
GRANT SELECT, INSERT, UPDATE, DELETE ON saga_deadlines TO rg_coordinator;  -- UPDATE: FOR UPDATE SKIP LOCKED claims a deadline, a new due time of the same step is an upsert
GRANT SELECT, INSERT ON audit_log TO rg_coordinator;
GRANT SELECT, INSERT ON operator_nonces TO rg_coordinator;
GRANT SELECT, INSERT ON staging_verified_artifacts TO rg_coordinator;
GRANT SELECT, INSERT, UPDATE ON incidents, incident_followups TO rg_coordinator;  -- UPDATE: a follow-up closed
GRANT SELECT, INSERT, UPDATE, DELETE ON verifier_registry TO rg_coordinator;

-- gatekeeper: its decisions (what runs where and what staging verified come in its commands and read model)
GRANT SELECT, INSERT, UPDATE ON gate_decisions TO rg_gatekeeper;

-- dr-checker: backups, drills and reports
GRANT SELECT, INSERT, UPDATE ON backups, dr_drills, dr_reports TO rg_dr_checker;

-- deployer: instances, environments, its step ledger; grants it used and commands it refused
GRANT SELECT, INSERT, UPDATE ON instances, environments, deploy_steps TO rg_deployer;
GRANT SELECT, INSERT ON used_grants, refused_commands TO rg_deployer;

-- rollback: traffic back to stable (instances, environments), restores of the release's backup point
GRANT SELECT, UPDATE ON instances TO rg_rollback;
GRANT SELECT ON environments TO rg_rollback;
REVOKE ALL ON backups FROM rg_rollback;  -- the restore takes its backup from the signed command (BackupPoint)
GRANT SELECT, INSERT ON used_grants, refused_commands TO rg_rollback;

-- verifiers (core and team): runs and verdicts; the core verifier's event and request samples
GRANT SELECT, INSERT, UPDATE ON verifier_runs TO rg_verifier;
GRANT SELECT, INSERT ON business_events, http_samples TO rg_verifier;
GRANT SELECT, INSERT, UPDATE ON ingest_watermarks TO rg_verifier;

-- ops (the CLI, dashboards): read everything, change nothing
GRANT SELECT ON ALL TABLES IN SCHEMA public TO rg_ops;

-- api (services/api): the read models it serves, nothing else; it changes nothing (commands go to the bus)
GRANT SELECT ON sagas, audit_log, gate_decisions, dr_reports, dr_drills, backups, verifier_registry, verifier_runs,
    parked_records, refused_commands, environments, instances TO rg_api;
GRANT SELECT ON incidents, incident_followups TO rg_api;  -- incident records (change records read them)

-- the audit log is append-only for every role
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC, rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer,
    rg_verifier, rg_rollback, rg_ops, rg_api, rg_notifier;

-- every service (and team verifier) parks the records whose dead letter it could not produce
GRANT SELECT, INSERT ON parked_records TO rg_coordinator, rg_gatekeeper, rg_dr_checker, rg_deployer, rg_verifier,
    rg_rollback;

-- rollback: its step ledger (compensations done once, outcomes kept)
GRANT SELECT, INSERT, UPDATE ON rollback_steps TO rg_rollback;

-- the deployer's read model (release.environments): the deployer numbers its states; the gatekeeper and the core
-- verifier keep their own projections of it
GRANT USAGE ON SEQUENCE environment_state_sequence TO rg_deployer;
GRANT SELECT, INSERT, UPDATE ON gatekeeper_environments TO rg_gatekeeper;
GRANT SELECT, INSERT, UPDATE ON verifier_environments TO rg_verifier;

-- Taken back from databases set up by earlier releases (this file is applied again on every `make stack`):
-- what runs where comes to the gatekeeper and the verifiers from the deployer's read model, not from its tables
REVOKE SELECT ON environments FROM rg_gatekeeper;
REVOKE SELECT ON instances FROM rg_verifier;
-- the production gate reads the staging verification from its command (GateCheckRequested.staging_verified)
REVOKE SELECT ON staging_verified_artifacts FROM rg_gatekeeper;

-- >>> notifier (services/notifier) ------------------------------------------------------------------------------
-- its own delivery ledger and release context; the shared outbox (dead letters of given-up deliveries), processed
-- events and parked records; nothing else
GRANT SELECT, INSERT, UPDATE ON notification_events, notification_deliveries, notifier_releases TO rg_notifier;
GRANT SELECT, INSERT, UPDATE ON outbox TO rg_notifier;
GRANT USAGE ON SEQUENCE outbox_id_seq TO rg_notifier;
GRANT SELECT, INSERT ON processed_events, parked_records TO rg_notifier;
-- <<< notifier ----------------------------------------------------------------------------------------------------

-- >>> change records (services/api) -----------------------------------------------------------------------------
-- the API writes each ended release's signed change record once and serves it; it can neither change nor remove one
GRANT SELECT, INSERT ON change_records TO rg_api;
REVOKE UPDATE, DELETE, TRUNCATE ON change_records FROM PUBLIC, rg_api, rg_ops;
-- <<< change records ----------------------------------------------------------------------------------------------
