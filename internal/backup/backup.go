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
// copied log. The audit log is copied up to its latest complete signed
// checkpoint: the checkpoints file up to that checkpoint's record, the
// segments up to the entries it covers and the stored hashes up to its
// tree, so the copy is a state the log itself was in, which `hearth audit
// verify` accepts and the log opens without recovery. The other files are
// copied whole.
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
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"

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
	// Now is the clock of the manifest and the members. Default time.Now.
	Now func() time.Time
}

// skipped reports whether the data dir file name (slash path) stays out
// of an archive: the admin socket, the audit log's lock file, temporary
// and hidden files (an init or restore in progress).
func skipped(name string) bool {
	if name == "admin.sock" || name == audit.DirName+"/lock" {
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
	am, size, err := auditMembers(dir)
	if err != nil {
		return nil, err
	}
	for _, m := range am {
		special[m.name] = true
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
			if name == audit.DirName+"/"+audit.SegmentsDir {
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

// auditMembers returns the audit log's checkpoints, stored hashes and
// segments, each cut to the latest complete signed checkpoint, and that
// checkpoint's tree size.
func auditMembers(dir string) ([]member, int64, error) {
	r, err := audit.NewReader(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("backup: %w", err)
	}
	cp, msg, err := r.Latest()
	if err != nil {
		return nil, 0, fmt.Errorf("backup: audit log: %w (run hearth audit verify)", err)
	}
	adir := filepath.Join(dir, audit.DirName)
	var out []member
	prefix := func(name string, n int64) member {
		p := filepath.Join(adir, filepath.FromSlash(name))
		return member{name: audit.DirName + "/" + name, mode: 0o600, size: n, write: func(w io.Writer) error {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyN(w, f, n)
			return err
		}}
	}

	// The checkpoints file, up to and including the record of cp: the
	// signed note followed by the empty line that ends each record.
	cpEnd := int64(0)
	if msg != nil {
		if cpEnd, err = recordEnd(filepath.Join(adir, audit.CheckpointsFile), append(bytes.Clone(msg), '\n')); err != nil {
			return nil, 0, err
		}
	}
	out = append(out, prefix(audit.CheckpointsFile, cpEnd))

	// The stored hashes of the tree of size cp.Size (Open rebuilds any
	// that were not yet written).
	fi, err := os.Stat(filepath.Join(adir, audit.HashesFile))
	if err != nil {
		return nil, 0, fmt.Errorf("backup: %w", err)
	}
	out = append(out, prefix(audit.HashesFile, min(fi.Size(), tlog.StoredHashCount(cp.Size)*tlog.HashSize)))

	// The segments holding entries [0, cp.Size): whole, but the last one
	// cut after entry cp.Size-1.
	ents, err := os.ReadDir(filepath.Join(adir, audit.SegmentsDir))
	if err != nil {
		return nil, 0, fmt.Errorf("backup: %w", err)
	}
	type seg struct {
		name  string
		start int64
	}
	var segs []seg
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".log")
		start, err := strconv.ParseInt(base, 10, 64)
		if !ok || err != nil || !e.Type().IsRegular() {
			continue
		}
		if start < cp.Size {
			segs = append(segs, seg{e.Name(), start})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].start < segs[j].start })
	for i, s := range segs {
		p := filepath.Join(adir, audit.SegmentsDir, s.name)
		end := cp.Size
		if i+1 < len(segs) {
			end = segs[i+1].start
		}
		n, err := lineEnd(p, end-s.start)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, prefix(path.Join(audit.SegmentsDir, s.name), n))
	}
	return out, cp.Size, nil
}

// recordEnd returns the offset just past the last occurrence of rec in
// the file, searching backwards from its end (the latest checkpoint is
// near the end; the file may have grown since it was read).
func recordEnd(p string, rec []byte) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	size := fi.Size()
	for k := int64(64 << 10); ; k *= 2 {
		k = min(k, size)
		buf := make([]byte, k)
		if _, err := f.ReadAt(buf, size-k); err != nil {
			return 0, fmt.Errorf("backup: %w", err)
		}
		if i := bytes.LastIndex(buf, rec); i >= 0 {
			return size - k + int64(i) + int64(len(rec)), nil
		}
		if k == size {
			return 0, fmt.Errorf("backup: %s does not hold the latest checkpoint (run hearth audit verify)", p)
		}
	}
}

// lineEnd returns the offset just past the n-th newline of the file.
func lineEnd(p string, n int64) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	var off int64
	for i := int64(0); i < n; i++ {
		line, err := br.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			off += int64(len(line))
			line, err = br.ReadSlice('\n')
		}
		off += int64(len(line))
		if err != nil {
			return 0, fmt.Errorf("backup: %s holds fewer entries than its checkpoint covers (run hearth audit verify)", p)
		}
	}
	return off, nil
}
