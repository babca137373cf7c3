package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/store/pgstore"
)

// The audit history of replicas lives in PostgreSQL (internal/pgaudit):
// `hearth audit verify --store-dsn DSN` checks it there, `hearth audit
// export` copies it to a file log that `hearth audit verify --dir` checks.

// auditStorePool opens a small pool on dsn, after pgstore.CheckDSN (no
// password in the DSN: use passfile=, mode 0600).
func auditStorePool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	if err := pgstore.CheckDSN(dsn); err != nil {
		return nil, exitError{code: 2, msg: fmt.Sprintf("--store-dsn: %v", err)}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, exitError{code: 2, msg: fmt.Sprintf("--store-dsn: %v", err)}
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, exitError{code: 1, msg: fmt.Sprintf("cannot reach the database of --store-dsn (is PostgreSQL running, is the passfile right?): %v", err)}
	}
	return pool, nil
}

// auditStoreKey is the verifier key to check the stored history with:
// --key, else the data dir's audit/log.pub if there is one, else ""
// (pgaudit then uses the key stored in the database, and warns).
func auditStoreKey(cmd *cobra.Command, key string) (string, error) {
	if key != "" {
		return key, nil
	}
	dir, err := dataDir(cmd)
	if err != nil {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(dir, audit.DirName, audit.VerifierKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// auditVerifyStore is `hearth audit verify --store-dsn`.
func auditVerifyStore(cmd *cobra.Command, e *env, dsn, key string, strict, asJSON bool) error {
	verr, err := withAuditStore(cmd, e, dsn, key, asJSON, func(ctx context.Context, pool *pgxpool.Pool, key string) (*audit.VerifyResult, error) {
		return pgaudit.Verify(ctx, pool, pgaudit.VerifyOptions{VerifierKey: key, Strict: strict})
	})
	if err != nil {
		return err
	}
	if verr != nil {
		return exitError{code: 1, msg: "audit history verification failed"}
	}
	return nil
}

// withAuditStore connects to the replicas' database (dsn), resolves the
// verifier key, runs run and reports its result; it returns run's own
// error apart from the errors of connecting and reporting.
func withAuditStore(cmd *cobra.Command, e *env, dsn, key string, asJSON bool, run func(context.Context, *pgxpool.Pool, string) (*audit.VerifyResult, error)) (runErr, err error) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	pool, err := auditStorePool(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if key, err = auditStoreKey(cmd, key); err != nil {
		return nil, err
	}
	res, runErr := run(ctx, pool, key)
	if err := auditReport(e, res, asJSON); err != nil {
		return nil, err
	}
	return runErr, nil
}

func auditReport(e *env, res *audit.VerifyResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	auditPrintVerify(e.stdout, res)
	return nil
}

func newAuditExportCmd(e *env) *cobra.Command {
	var dsn, out, key string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Copy the audit history of PostgreSQL replicas to a file log",
		Long: `export reads the audit history that hearth replicas keep in PostgreSQL
(--store-dsn), verifies it as it goes (as verify --store-dsn does) and writes it
to OUT/audit as a file log: the same origin, entries, tree and signed
checkpoints, and the verifier key, without the signing key. Check the copy with
hearth audit verify --dir OUT, or read it with hearth audit tail --dir OUT.

The DSN must not hold a password: name a passfile (libpq's .pgpass format,
mode 0600) with passfile=. OUT/audit must not exist or be empty.`,
		Example: `  hearth audit export --store-dsn 'host=db.home.arpa dbname=hearth user=hearth passfile=/etc/hearth/pgpass' --out /srv/audit-copy
  hearth audit verify --dir /srv/audit-copy --key "$(cat ~/hearth-log.pub)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dsn == "" || out == "" {
				return exitError{code: 2, msg: "export needs --store-dsn DSN and --out DIR"}
			}
			xerr, err := withAuditStore(cmd, e, dsn, key, asJSON, func(ctx context.Context, pool *pgxpool.Pool, key string) (*audit.VerifyResult, error) {
				return pgaudit.Export(ctx, pool, out, pgaudit.VerifyOptions{VerifierKey: key})
			})
			if err != nil {
				return err
			}
			if xerr != nil {
				return exitError{code: 1, msg: fmt.Sprintf("audit export failed: %v", xerr)}
			}
			if !asJSON {
				fmt.Fprintf(e.stdout, "exported to %s\n", filepath.Join(out, audit.DirName))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "store-dsn", "", "PostgreSQL connection string of the replicas' store (no password: use passfile=)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the file log into (as OUT/audit)")
	cmd.Flags().StringVar(&key, "key", "", "verifier key (origin+hash+key) the checkpoints must be signed with; default the data dir's audit/log.pub, else the key stored in the database")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"ok", "entries", "first_bad_index", "error", …} as JSON`)
	return cmd
}
