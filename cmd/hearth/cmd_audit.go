package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/audit"
)

// The audit commands read the log's files directly, read only: they work
// whether or not `hearth serve` has the log open.
func newAuditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, read and checkpoint the signed audit log",
		Long: `The audit log records every decision and change, signed and append-only.
These commands read its files directly and work whether or not the server runs.
Replicas on PostgreSQL keep it in the database: verify --store-dsn checks it
there, export copies it to a file log.`,
		Example: `  hearth audit verify
  hearth audit tail -n 20 --event auth.login
  hearth audit checkpoint > ~/hearth-checkpoint.txt
  hearth audit export --store-dsn 'host=db dbname=hearth user=hearth passfile=/etc/hearth/pgpass' --out /srv/audit-copy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAuditVerifyCmd(e), newAuditTailCmd(e), newAuditCheckpointCmd(e), newAuditExportCmd(e))
	return cmd
}

func newAuditVerifyCmd(e *env) *cobra.Command {
	var asJSON, strict bool
	var cpFile, key, storeDSN string
	var witnesses []string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the Merkle tree and check every signed checkpoint",
		Long: `verify recomputes the audit log's Merkle tree from its entries and checks
every checkpoint's signature and hash, so that a changed, removed, reordered,
injected or truncated entry fails it, with the index of the first bad entry
and exit status 1.

With --checkpoint, it also proves that the log still extends a checkpoint saved
earlier (hearth audit checkpoint), which detects a rewrite or truncation of the
whole log, checkpoints included. With --key, checkpoints must be signed by that
verifier key rather than the one in the data dir. --strict also parses every
entry and checks its format.

With --witness KEY (repeatable), the latest checkpoint that witness cosigned
(kept in the data dir as the server pushes to the witnesses of audit.witnesses)
must carry a valid cosignature by KEY and be a tree this log holds: proof, to
anyone who trusts the witness, that the history it saw was never rewritten.

After a crash, entries of a batch that was never acknowledged may follow the
last signed checkpoint: verify names them and still exits 0 when the signed
history is intact; the next start of the server discards them.

With --store-dsn DSN, verify checks the history that replicas keep in
PostgreSQL instead (every checkpoint's signature and root, the tree, the stored
hashes, positions contiguous), streaming it in one read-only snapshot; the
verifier key is --key, else the data dir's audit/log.pub, else the one stored in
the database (with a warning). The DSN must not hold a password: use passfile=.`,
		Example: `  hearth audit verify
  hearth audit verify --json
  hearth audit verify --checkpoint ~/hearth-checkpoint.txt
  hearth audit verify --witness witness.example+1a2b3c4d+BAbc…
  hearth audit verify --store-dsn 'host=db.home.arpa dbname=hearth user=hearth passfile=/etc/hearth/pgpass'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if storeDSN != "" {
				if cpFile != "" || len(witnesses) > 0 {
					return exitError{code: 2, msg: "--checkpoint and --witness check a file log: export the history (hearth audit export) and verify the export with them"}
				}
				return auditVerifyStore(cmd, e, storeDSN, key, strict, asJSON)
			}
			dir, err := auditDataDir(cmd)
			if err != nil {
				return err
			}
			opts := audit.VerifyOptions{VerifierKey: key, Strict: strict, Witnesses: witnesses}
			if cpFile != "" {
				if opts.Checkpoint, err = auditReadFile(cpFile, 64<<10); err != nil {
					return err
				}
			}
			res, verr := audit.Verify(dir, opts)
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				auditPrintVerify(e.stdout, res)
			}
			if verr != nil {
				return exitError{code: 1, msg: "audit log verification failed"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"ok", "entries", "first_bad_index", "error", …} as JSON`)
	cmd.Flags().StringVar(&cpFile, "checkpoint", "", "a signed checkpoint saved earlier that the log must extend")
	cmd.Flags().BoolVar(&strict, "strict", false, "also check that every entry is in canonical form (slower)")
	cmd.Flags().StringVar(&key, "key", "", "verifier key (origin+hash+key) the checkpoints must be signed with")
	cmd.Flags().StringArrayVar(&witnesses, "witness", nil, "cosignature verifier key of a witness whose cosigned checkpoint the log must extend (repeatable)")
	cmd.Flags().StringVar(&storeDSN, "store-dsn", "", "verify the history PostgreSQL replicas keep, at this connection string (no password: use passfile=)")
	return cmd
}

func auditPrintVerify(w io.Writer, r *audit.VerifyResult) {
	if r.OK {
		fmt.Fprintf(w, "ok: %d entries, %d signed checkpoints, log %s, root %s\n", r.Entries, r.Checkpoints, r.Origin, r.Root)
		if r.Pending > 0 {
			fmt.Fprintf(w, "%d newer entries are being written and were not checked\n", r.Pending)
		}
		for _, c := range r.Witnessed {
			fmt.Fprintf(w, "witness %s cosigned the tree of %d entries, root %s: the log extends it\n", c.Witness, c.Size, c.Root)
		}
		if u := r.Unsigned; u != nil {
			fmt.Fprintf(w, "unsigned tail: %d entries (%d bytes) after the last signed checkpoint (%d entries), in %s from offset %d: never acknowledged (a crash before their batch was durable); the next start discards them\n",
				u.Entries, u.Bytes, u.After, u.Segment, u.Offset)
		}
	} else if r.FirstBadIndex != nil {
		fmt.Fprintf(w, "FAILED at entry %d: %s\n", *r.FirstBadIndex, r.Error)
	} else {
		fmt.Fprintf(w, "FAILED: %s\n", r.Error)
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
}

func newAuditTailCmd(e *env) *cobra.Command {
	var n int
	var follow, asJSON bool
	var event, principal, since string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the latest audit entries, optionally following new ones",
		Long: `tail prints the last -n entries of the audit log that match the filters,
oldest first; with --follow it then prints new entries as they are signed,
until interrupted. --since takes a time (RFC 3339) or a duration ago (1h30m).
--json prints each entry as the JSON line stored in the log.`,
		Example: `  hearth audit tail
  hearth audit tail -n 50 --event auth.login --since 24h
  hearth audit tail --follow --principal device:kitchen-pi --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := auditDataDir(cmd)
			if err != nil {
				return err
			}
			if n < 0 {
				return fmt.Errorf("-n must not be negative")
			}
			var after time.Time
			if since != "" {
				if after, err = auditParseSince(since, time.Now()); err != nil {
					return err
				}
			}
			match := func(en audit.Entry) bool {
				return (event == "" || en.Name == event) &&
					(principal == "" || en.Principal == principal) &&
					(after.IsZero() || !en.Time.Before(after))
			}
			r, err := audit.NewReader(dir)
			if err != nil {
				return err
			}
			es, size, err := r.Tail(n, match)
			if err != nil {
				return err
			}
			for _, en := range es {
				if err := auditPrintEntry(e.stdout, en, asJSON); err != nil {
					return err
				}
			}
			if !follow {
				return nil
			}
			ctx := cmd.Context()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				c, _, err := r.Latest()
				if err != nil {
					return err
				}
				for size < c.Size {
					es, err := r.Read(size, int(min(c.Size-size, 1000)))
					if err != nil {
						return err
					}
					if len(es) == 0 {
						break
					}
					for _, en := range es {
						if match(en) {
							if err := auditPrintEntry(e.stdout, en, asJSON); err != nil {
								return err
							}
						}
					}
					size = es[len(es)-1].Index + 1
				}
			}
		},
	}
	cmd.Flags().IntVarP(&n, "lines", "n", 10, "how many entries to print first")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print entries as JSON lines")
	cmd.Flags().StringVar(&event, "event", "", "only entries of this event (e.g. auth.login)")
	cmd.Flags().StringVar(&principal, "principal", "", "only entries of this principal (e.g. user:alice)")
	cmd.Flags().StringVar(&since, "since", "", "only entries at or after this time (RFC 3339) or duration ago")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often --follow looks for new entries")
	cmd.Flags().MarkHidden("interval")
	return cmd
}

func auditParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time nor a duration", s)
}

func auditPrintEntry(w io.Writer, en audit.Entry, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(en)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s #%d %s %s", en.Time.Format(time.RFC3339), en.Index, en.Name, en.Outcome)
	for _, f := range []string{en.Principal, en.Resource} {
		if f != "" {
			b.WriteString(" " + f)
		}
	}
	if en.Reason != "" {
		fmt.Fprintf(&b, " %q", en.Reason)
	}
	if en.Client != "" {
		b.WriteString(" client=" + en.Client)
	}
	keys := make([]string, 0, len(en.Meta))
	for k := range en.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, en.Meta[k])
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

func newAuditCheckpointCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the latest signed checkpoint, to keep somewhere else",
		Long: `checkpoint prints the audit log's latest signed checkpoint (its size and
Merkle root, signed with the log's key). Keep it off this machine: later,
hearth audit verify --checkpoint FILE proves the log still extends it.`,
		Example: `  hearth audit checkpoint > ~/hearth-checkpoint.txt
  hearth audit verify --checkpoint ~/hearth-checkpoint.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := auditDataDir(cmd)
			if err != nil {
				return err
			}
			r, err := audit.NewReader(dir)
			if err != nil {
				return err
			}
			_, msg, err := r.Latest()
			if err != nil {
				return err
			}
			if msg == nil {
				return fmt.Errorf("the audit log has no checkpoint yet")
			}
			_, err = e.stdout.Write(msg)
			return err
		},
	}
}

// auditReadFile reads at most limit bytes of name, refusing a larger file.
func auditReadFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// auditDataDir is dataDir for the audit commands, which read the log's
// files directly: a data dir without a log is an error that says where
// hearth looked and what to do.
func auditDataDir(cmd *cobra.Command) (string, error) {
	dir, err := dataDir(cmd)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "audit")); err != nil {
		return "", exitError{code: 1, msg: fmt.Sprintf("audit: no audit log in %s; pass the data dir of your hearth with --dir (or $HEARTH_DIR), or create one with `hearth init --dir %s`", dir, dir)}
	}
	return dir, nil
}
