package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/internal/migrate"
)

func newMigrateCmd(e *env) *cobra.Command {
	var from, to string
	var check, asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate --from DIR --to postgres://…",
		Short: "Move an embedded installation (a data dir) to PostgreSQL, for replicas",
		Long: `migrate copies everything an embedded installation keeps into an empty
PostgreSQL database: every bucket of hearth.db (users, passwords, passkeys,
tokens, devices, phone links, …) into hearth's store, every table of the
CA's database (certificates, one-time tokens, ACME accounts, …) into schema
hearth_ca, and the audit log, each entry at its own index with its signed
checkpoints, into the PostgreSQL audit history (schema hearth_audit), so
that ` + "`hearth audit verify`" + ` and witnesses see the same history.

The data dir is only read, and only while nothing serves it: stop ` + "`hearth\nserve`" + ` first (migrate refuses while it runs, and a server cannot start
while migrate reads). The audit log must verify. The target must hold no
hearth data: migrate never merges two installations.

Each part is copied in one transaction and counted on both sides (records
per bucket and a digest of them, the audit tree's head recomputed from the
copied entries); on any difference nothing of it is kept. --check only
counts, and with --to checks that the target is reachable and empty.

The DSN must not contain a password: name a file in libpq's .pgpass format
(mode 0600) with passfile=. Afterwards, copy the data dir's keys (ca/, audit/)
to every replica and start them with ` + "`hearth serve --store-dsn DSN`" + `.`,
		Example: `  hearth migrate --from /var/lib/hearth --check
  hearth migrate --from /var/lib/hearth --to 'postgres://hearth@db.home.arpa/hearth?passfile=/etc/hearth/pgpass&sslmode=verify-full'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if from == "" {
				if from, err = dataDir(cmd); err != nil {
					return err
				}
			} else if from, err = filepath.Abs(from); err != nil {
				return err
			}
			var progress io.Writer = e.stderr
			if asJSON {
				progress = nil
			}
			rep, err := migrate.Run(cmd.Context(), migrate.Options{From: from, To: to, Check: check, Progress: progress})
			if rep != nil {
				if asJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					if jerr := enc.Encode(rep); jerr != nil && err == nil {
						err = jerr
					}
				} else {
					printMigrateReport(e.stdout, rep)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the data dir to move (default: --dir, $HEARTH_DIR or the user's data dir)")
	f.StringVar(&to, "to", "", "the PostgreSQL DSN to move it to (no password in it: passfile=)")
	f.BoolVar(&check, "check", false, "only count (and check the target is reachable and empty); write nothing")
	f.BoolVar(&asJSON, "json", false, "print the counts as JSON")
	return cmd
}

func printMigrateReport(w io.Writer, r *migrate.Report) {
	fmt.Fprintf(w, "%s: %d buckets, %d records\n", migrate.StoreFile, len(r.Store), r.Store.Records())
	for _, n := range r.Store.Names() {
		fmt.Fprintf(w, "  %-32s %d\n", n, r.Store[n].Records)
	}
	fmt.Fprintf(w, "%s: %d tables, %d records\n", migrate.CADBFile, len(r.CA), r.CA.Records())
	for _, n := range r.CA.Names() {
		fmt.Fprintf(w, "  %-32s %d\n", n, r.CA[n].Records)
	}
	fmt.Fprintf(w, "audit: %d entries, %d checkpoints, tree head %s\n", r.Audit.Entries, r.Audit.Checkpoints, r.Audit.Root)
	if r.Audit.Unsigned > 0 {
		fmt.Fprintf(w, "  %d entries after the last checkpoint were never acknowledged (a crash): not moved\n", r.Audit.Unsigned)
	}
	switch {
	case r.Moved:
		fmt.Fprintln(w, "moved: the target holds all of it, compared record by record")
	case r.TargetChecked:
		fmt.Fprintln(w, "target: reachable and empty; nothing written (--check)")
	}
}
