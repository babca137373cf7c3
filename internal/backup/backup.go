// Package backup writes and restores a consistent archive of a hearth data
// dir: the CA's keys and certificates, the configuration, a snapshot of
// hearth.db and of the CA's own database, and the audit log up to one
// signed checkpoint.
//
// # Archive
//
// A tar stream (POSIX ustar/PAX) whose first member is [ManifestName]
// ({"format": "hearth-backup v1", …}); paths are relative to the data dir,
// with slashes. The caller encrypts it: `hearth backup` wraps it in age
// (filippo.io/age, to a passphrase with scrypt or to age recipients), whose
// STREAM format authenticates every chunk and detects truncation, so a
// restored archive is the archive that was written or nothing.
//
// # Consistency while serving
//
// The bbolt databases are copied inside a read transaction each
// (bbolt Tx.WriteTo), so each is the state of one committed transaction,
// taken while the server keeps writing. Those transactions begin before
// the audit log is read, and every change is audited before it is
// committed, so every change in the copied stores has its entry in the
// copied log. The audit log is copied up to its latest acknowledged signed
// checkpoint, as the audit package describes it ([audit.Snapshot]: the
// segments cut just past that checkpoint's record, the stored hashes cut
// to its tree, the checkpoints cache reduced to its legacy records and
// that checkpoint), so the copy is a state the log itself was in, which
// `hearth audit verify` accepts and the log opens without recovery. The
// other files are copied whole.
//
// # Trust boundary
//
// Write trusts the data dir. Restore trusts nothing in the archive: member
// names must be local paths, only regular files are written (never with
// more than 0644), a non-empty target is refused and left unchanged, and
// the restored audit log must verify before anything is moved into place.
package backup

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
)

// ManifestName is the archive's first member.
const ManifestName = "hearth-backup.json"

// Format is the manifest's format line.
const Format = "hearth-backup v1"

// Databases are the bbolt files of a data dir, copied with Tx.WriteTo.
var Databases = []string{"hearth.db", "ca/db"}

// Manifest describes an archive.
type Manifest struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	// AuditEntries is the size of the audit log's tree in the archive.
	AuditEntries int64 `json:"audit_entries"`
	// Files lists the members after the manifest, in order.
	Files []string `json:"files"`
}

// Options are the inputs of [Write].
type Options struct {
	// Dir is the data dir. Required.
	Dir string
	// DBs are the open bbolt handles of a running server by their name in
	// [Databases]; a database not given is opened here, read-only (which
	// fails after a short timeout while another process has it open).
	DBs map[string]*bolt.DB
	// Log is the running server's open audit log: the archive then holds
	// every entry acknowledged before Write was called. Without it, the
	// log's files are read (audit.TakeSnapshot).
	Log *audit.Log
	// Now is the clock of the manifest and the members. Default time.Now.
	Now func() time.Time
}

// skipped reports whether the data dir file name (slash path) stays out
// of an archive: the admin socket, temporary and hidden files (an init or restore in progress).
func skipped(name string) bool {
	if name == "admin.sock" {
		return true
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// member is one file of the archive: its size is known before it is
// written (tar needs it in the header).
type member struct {
	name  string
	mode  fs.FileMode
	size  int64
	write func(w io.Writer) error
}

// Write writes the archive of opts.Dir to w (unencrypted: the caller
// encrypts) and returns its manifest.
func Write(w io.Writer, opts Options) (*Manifest, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	dir := opts.Dir
	if fi, err := os.Stat(filepath.Join(dir, audit.DirName)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("backup: %s is not a hearth data dir (no %s/)", dir, audit.DirName)
	}

	// 1. One read transaction per database, begun before the audit log is
	// read (see the package documentation).
	var members []member
	special := map[string]bool{}
	for _, name := range Databases {
		special[name] = true
		db := opts.DBs[name]
		p := filepath.Join(dir, filepath.FromSlash(name))
		if db == nil {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				continue
			}
			var err error
			db, err = bolt.Open(p, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
			if err != nil {
				return nil, fmt.Errorf("backup: opening %s: %w (a running hearth holds it: run hearth backup while it serves, it asks the server)", p, err)
			}
			defer db.Close()
		}
		tx, err := db.Begin(false)
		if err != nil {
			return nil, fmt.Errorf("backup: %s: %w", name, err)
		}
		defer tx.Rollback()
		members = append(members, member{name: name, mode: 0o600, size: tx.Size(), write: func(w io.Writer) error {
			_, err := tx.WriteTo(w)
			return err
		}})
	}

	// 2. The audit log up to its latest complete checkpoint.
	am, size, err := auditMembers(dir, opts.Log)
	if err != nil {
		return nil, err
	}
	members = append(members, am...)

	// 3. Everything else (keys, certificates, configuration), whole.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		if skipped(name) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if name == audit.DirName {
				return filepath.SkipDir // auditMembers took what belongs in it
			}
			return nil
		}
		if special[name] || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p) // small files: keys, certificates, config
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		members = append(members, member{name: name, mode: fi.Mode().Perm(), size: int64(len(data)), write: func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	sort.SliceStable(members, func(i, j int) bool { return members[i].name < members[j].name })

	t := now().UTC().Truncate(time.Second)
	man := &Manifest{Format: Format, Created: t, AuditEntries: size}
	for _, m := range members {
		man.Files = append(man.Files, m.name)
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(w)
	all := append([]member{{name: ManifestName, mode: 0o600, size: int64(len(mb)), write: func(w io.Writer) error {
		_, err := w.Write(mb)
		return err
	}}}, members...)
	for _, m := range all {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: m.name, Mode: int64(m.mode), Size: m.size, ModTime: t, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		if err := m.write(tw); err != nil {
			return nil, fmt.Errorf("backup: %s: %w", m.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return man, nil
}

// auditMembers returns the audit log's files cut to its latest complete
// signed checkpoint (audit.Snapshot: the audit package owns its format),
// and that checkpoint's tree size.
func auditMembers(dir string, lg *audit.Log) ([]member, int64, error) {
	var snap *audit.Snapshot
	var err error
	if lg != nil {
		snap, err = lg.Snapshot()
	} else {
		snap, err = audit.TakeSnapshot(dir)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("backup: audit log: %w (run hearth audit verify)", err)
	}
	out := make([]member, 0, len(snap.Files))
	for _, f := range snap.Files {
		out = append(out, member{name: audit.DirName + "/" + f.Name, mode: f.Mode, size: f.Size(), write: func(w io.Writer) error {
			return snap.WriteFile(w, f)
		}})
	}
	return out, snap.Checkpoint.Size, nil
}
