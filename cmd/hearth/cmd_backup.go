package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/backup"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/server"
)

// minBackupPassphrase is the shortest passphrase a backup takes: the
// archive holds the CA's keys, and scrypt only slows guessing down (NIST SP
// 800-63B-4 §3.1.1.2 asks 15 characters of a single-factor password).
const minBackupPassphrase = 15

// EventBackupRestore is the audit event a restore appends to the restored
// log.
const EventBackupRestore = "backup.restore"

func newBackupCmd(e *env) *cobra.Command {
	var out, passFile, recipientsFile string
	var recipients []string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write an encrypted backup of the data dir (while serving, or not)",
		Long: `backup writes one age-encrypted archive of the data dir: the CA's keys and
certificates, hearth.yaml, a snapshot of hearth.db and of the CA's database,
and the audit log up to its latest signed checkpoint.

While hearth serves, the server takes the snapshot (the stores inside a read
transaction each, the log at one checkpoint), over the admin socket, without
stopping; otherwise backup reads the data dir itself. Either way the backup
is recorded in the audit log.

Encryption (filippo.io/age): to one or more age recipients (--recipient
age1…, --recipients-file, e.g. a key kept on another machine), or else to a
passphrase (scrypt) read from --passphrase-file, the terminal (asked twice)
or one line of standard input. The archive is written with mode 0600 and
never over an existing file. Restore it with hearth restore.`,
		Example: `  hearth backup --out /mnt/usb/hearth-$(date +%F).age
  hearth backup --out hearth.age --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  hearth backup --out hearth.age --passphrase-file /root/backup-passphrase`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("backup: give the archive's path with --out FILE")
			}
			// On PostgreSQL the data dir holds keys, not state: refuse
			// before asking for a passphrase, whether hearth.yaml says so
			// or the running server was given --store-dsn (it says so on
			// GET BackupPath).
			if cfg, err := config.Load(filepath.Join(dir, config.FileName)); err == nil && cfg.Store.DriverName() == config.DriverPostgres {
				return fmt.Errorf("backup: %w", server.ErrPostgresBackup)
			}
			if err := backupPreflight(cmd.Context(), dir); err != nil {
				return err
			}
			rcpts, err := backupRecipients(e, recipients, recipientsFile, passFile)
			if err != nil {
				return err
			}
			return writeBackup(cmd.Context(), e, dir, out, rcpts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the archive to write (must not exist)")
	f.StringArrayVar(&recipients, "recipient", nil, "an age recipient (age1…) to encrypt to; repeatable")
	f.StringVar(&recipientsFile, "recipients-file", "", "a file of age recipients, one a line")
	f.StringVar(&passFile, "passphrase-file", "", "read the passphrase from the first line of this file")
	return cmd
}

func backupRecipients(e *env, recipients []string, recipientsFile, passFile string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range recipients {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("backup: --recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	if recipientsFile != "" {
		f, err := os.Open(recipientsFile)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		rs, err := age.ParseRecipients(io.LimitReader(f, 1<<20))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("backup: %s: %w", recipientsFile, err)
		}
		out = append(out, rs...)
	}
	if len(out) > 0 {
		if passFile != "" {
			return nil, errors.New("backup: give recipients or a passphrase, not both")
		}
		return out, nil
	}
	pass, err := readPassphrase(e, passFile, true)
	if err != nil {
		return nil, err
	}
	if len([]rune(pass)) < minBackupPassphrase {
		return nil, fmt.Errorf("backup: the passphrase must have at least %d characters (or encrypt to a key with --recipient)", minBackupPassphrase)
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return []age.Recipient{r}, nil
}

// readPassphrase reads the first line of file, else asks (twice on a
// terminal when confirm is set), else reads one line of standard input.
func readPassphrase(e *env, file string, confirm bool) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the passphrase: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSuffix(line, "\r"), nil
	}
	return newSecretInput(e).secret("Backup passphrase: ", confirm)
}

// writeBackup streams the archive from the running server, or builds it
// from the data dir when none runs, encrypting it into out.tmp (0600) and
// renaming that to out only once it is complete.
func writeBackup(ctx context.Context, e *env, dir, out string, rcpts []age.Recipient) error {
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("backup: %s exists; choose another --out (a backup never overwrites)", out)
	}
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	aw, err := age.Encrypt(f, rcpts...)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	how, err := streamBackup(ctx, dir, aw)
	if errors.Is(err, admin.ErrNotRunning) {
		how, err = "read from the data dir (hearth is not running)", offlineBackup(dir, aw)
	}
	if err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done = true
	fmt.Fprintf(e.stdout, "backup written to %s (%s)\nrestore it with: hearth restore --in %s --dir NEW_DIR\n", out, how, out)
	return nil
}

// streamBackup asks the server on the admin socket for the archive.
func streamBackup(ctx context.Context, dir string, w io.Writer) (string, error) {
	hc, err := socketHTTP(dir)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://hearth"+server.BackupPath, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return "", admin.ErrNotRunning // a stale socket: no server
		}
		return "", fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return "", fmt.Errorf("backup: the server refused: %s %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return "", fmt.Errorf("backup: reading the archive from the server: %w", err)
	}
	if st := resp.Trailer.Get(server.BackupStatusTrailer); st != "ok" {
		return "", fmt.Errorf("backup: the server's backup did not complete: %q (see its log)", st)
	}
	return "a snapshot by the running server", nil
}

// socketHTTP is an HTTP client of the admin socket of dir, or
// admin.ErrNotRunning when there is no socket.
func socketHTTP(dir string) (*http.Client, error) {
	sock := admin.SocketPath(dir)
	if _, err := os.Stat(sock); err != nil {
		return nil, admin.ErrNotRunning
	}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}, nil
}

// backupPreflight asks the running server, if any, whether it can take a
// backup, and returns ErrPostgresBackup's refusal when its store is
// PostgreSQL. No server, or an older one without the question (405),
// is no refusal: the backup itself then answers.
func backupPreflight(ctx context.Context, dir string) error {
	hc, err := socketHTTP(dir)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hearth"+server.BackupPath, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil // a stale socket; the backup finds out
	}
	defer resp.Body.Close()
	var je struct{ Code string }
	if resp.StatusCode == http.StatusConflict && json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&je) == nil && je.Code == "postgres_store" {
		return fmt.Errorf("backup: %w", server.ErrPostgresBackup)
	}
	return nil
}

// offlineBackup records the backup in the audit log and writes the archive
// from the files, when no server has them open.
func offlineBackup(dir string, w io.Writer) error {
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	lg, err := audit.Open(dir, cfg.Audit, audit.Options{})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	err = lg.Record(context.Background(), audit.Event{
		Name: server.EventBackupCreate, Outcome: audit.OutcomeSuccess, Principal: authz.LocalPrincipalID, Client: "local",
		Resource: dir, Meta: map[string]string{"audit_entries_before": strconv.FormatInt(lg.Size(), 10)},
	})
	if cerr := lg.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: not audited, so not taken: %w", err)
	}
	_, err = backup.Write(w, backup.Options{Dir: dir})
	return err
}

func newRestoreCmd(e *env) *cobra.Command {
	var in, passFile, identityFile string
	cmd := &cobra.Command{
		Use:   "restore --in FILE --dir NEW_DIR",
		Short: "Restore a backup into a new or empty data dir and verify its audit log",
		Long: `restore decrypts an archive written by hearth backup (with --identity, an age
identity file, or else a passphrase from --passphrase-file, the terminal or one
line of standard input) into --dir, which must not exist or be empty: restore
never overwrites. The archive's audit log must verify before anything is put
in place; then the restore is recorded in it, it is verified again, and the
data dir is ready for hearth serve.`,
		Example: `  hearth restore --in /mnt/usb/hearth-2026-12-01.age --dir /var/lib/hearth
  hearth restore --in hearth.age --dir ./hearth-restored --identity ~/.config/age/hearth-backup.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			if in == "" {
				return errors.New("restore: give the archive with --in FILE")
			}
			var ids []age.Identity
			if identityFile != "" {
				f, err := os.Open(identityFile)
				if err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				ids, err = age.ParseIdentities(io.LimitReader(f, 1<<20))
				f.Close()
				if err != nil {
					return fmt.Errorf("restore: %s: %w", identityFile, err)
				}
			} else {
				pass, err := readPassphrase(e, passFile, false)
				if err != nil {
					return err
				}
				id, err := age.NewScryptIdentity(pass)
				if err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				ids = []age.Identity{id}
			}
			return runRestore(e, in, dir, ids)
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the archive written by hearth backup")
	f.StringVar(&identityFile, "identity", "", "an age identity file (AGE-SECRET-KEY-…) the archive was encrypted to")
	f.StringVar(&passFile, "passphrase-file", "", "read the passphrase from the first line of this file")
	return cmd
}

func runRestore(e *env, in, dir string, ids []age.Identity) error {
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, ids...)
	if err != nil {
		return fmt.Errorf("restore: cannot decrypt %s: %w (wrong passphrase or identity?)", in, err)
	}
	man, _, err := backup.Restore(r, dir)
	if err != nil {
		return err
	}
	// Record the restore in the restored log, then verify it again: the
	// log that hearth serve will open is the one checked.
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	lg, err := audit.Open(dir, cfg.Audit, audit.Options{})
	if err != nil {
		return fmt.Errorf("restore: the restored audit log does not open: %w", err)
	}
	err = lg.Record(context.Background(), audit.Event{
		Name: EventBackupRestore, Outcome: audit.OutcomeSuccess, Principal: authz.LocalPrincipalID, Client: "local", Resource: dir,
		Meta: map[string]string{"backup_created": man.Created.Format("2006-01-02T15:04:05Z"), "audit_entries": strconv.FormatInt(man.AuditEntries, 10)},
	})
	if cerr := lg.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: recording the restore: %w", err)
	}
	res, err := audit.Verify(dir, audit.VerifyOptions{})
	if err != nil {
		auditPrintVerify(e.stdout, res)
		return exitError{code: 1, msg: "restore: the restored audit log does not verify"}
	}
	fmt.Fprintf(e.stdout, "restored %d files from a backup of %s into %s\naudit log ", len(man.Files), man.Created.Format("2006-01-02 15:04:05 UTC"), dir)
	auditPrintVerify(e.stdout, res)
	fmt.Fprintf(e.stdout, "start it with: hearth serve --dir %s\n", dir)
	return nil
}
