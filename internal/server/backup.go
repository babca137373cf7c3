package server

import (
	"net/http"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/backup"
	"github.com/hearth-home/hearth/internal/httpx"
)

// BackupPath streams a backup archive (unencrypted tar: `hearth backup`
// encrypts it) to the admin socket.
const BackupPath = "/.hearth/v1/admin/backup"

// BackupStatusTrailer is the HTTP trailer that ends a backup stream: "ok",
// or the reason the backup failed after its stream began (the status was
// already sent). An archive is complete only with "ok".
const BackupStatusTrailer = "Hearth-Backup-Status"

// EventBackupCreate is the audit event of a backup.
const EventBackupCreate = "backup.create"

// serveBackup writes a consistent archive of the data dir while serving
// (see package backup). Only the admin socket (trust level local) may ask
// for one: the archive carries the CA's keys, which a remote principal,
// whatever its capabilities, never receives (OWASP ASVS 5.0 V13.3: secrets
// do not leave the machine over the network). The backup is audited, fail
// closed, before the first byte is sent.
func (s *Server) serveBackup(w http.ResponseWriter, r *http.Request) {
	p := authz.PrincipalFrom(r.Context())
	ev := audit.Event{Name: EventBackupCreate, Resource: s.opts.Dir, Client: r.RemoteAddr}
	if p != nil {
		ev.Principal = p.ID
	}
	if p == nil || p.Method != authz.MethodLocal {
		ev.Outcome, ev.Reason = audit.OutcomeDeny, "a backup holds the CA's keys: only the admin socket may take one"
		if err := s.rec.Record(r.Context(), ev); err != nil {
			httpx.Unavailable(w)
			return
		}
		httpx.Error(w, http.StatusForbidden, "local_only", "backups are taken on the server itself: run hearth backup there (admin socket)")
		return
	}
	if s.db == nil {
		// The state is in PostgreSQL: a snapshot of the data dir would hold
		// the keys without the state they belong with.
		ev.Outcome, ev.Reason = audit.OutcomeFailure, "the store is PostgreSQL: back it up with pg_dump"
		if err := s.rec.Record(r.Context(), ev); err != nil {
			httpx.Unavailable(w)
			return
		}
		httpx.Error(w, http.StatusConflict, "postgres_store", ErrPostgresBackup.Error())
		return
	}
	ev.Outcome = audit.OutcomeSuccess
	ev.Meta = map[string]string{"audit_entries_before": strconv.FormatInt(s.audit.Size(), 10)}
	if err := s.rec.Record(r.Context(), ev); err != nil {
		s.log.Error().Err(err).Msg("server: backup not audited; refused")
		httpx.Unavailable(w)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Trailer", BackupStatusTrailer)
	w.WriteHeader(http.StatusOK)
	dbs := map[string]*bolt.DB{StoreName: s.db}
	if db := s.ca.Database(); db != nil {
		dbs[ca.DatabaseName] = db
	}
	_, err := backup.Write(w, backup.Options{Dir: s.opts.Dir, DBs: dbs, Log: s.audit, Now: s.opts.Now})
	msg := "ok"
	if err != nil {
		s.log.Error().Err(err).Msg("server: backup failed")
		msg = "failed: " + err.Error()
	}
	w.Header().Set(BackupStatusTrailer, msg)
}

// backupPossible answers GET BackupPath, which `hearth backup` asks before
// it asks for a passphrase or reads recipients: 204 when this server can
// stream a backup, or 409 postgres_store (ErrPostgresBackup) when its
// store is PostgreSQL, also when only --store-dsn said so. It records
// nothing: no backup is taken and nothing is read.
func (s *Server) backupPossible(w http.ResponseWriter, r *http.Request) {
	if s.db == nil {
		httpx.Error(w, http.StatusConflict, "postgres_store", ErrPostgresBackup.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
