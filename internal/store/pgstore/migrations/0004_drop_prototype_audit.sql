-- The audit tables of 0001/0002 were the prototype of the replicas' audit
-- history; internal/pgaudit keeps that history in its own schema
-- (hearth_audit) and nothing ever wrote these. Dropped so that one place
-- holds the audit history.
DROP TABLE audit_hashes, audit_checkpoints, audit_sequencer, audit_entries;
