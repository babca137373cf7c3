package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/audit"
)

// archiveOf builds a tar of a manifest and the given members.
func archiveOf(t testing.TB, hdrs ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	man := []byte(`{"format":"` + Format + `"}`)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(man)), Mode: 0o600})
	tw.Write(man)
	for _, h := range hdrs {
		body := []byte("x")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		tw.WriteHeader(h)
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return b.Bytes()
}

func TestRestoreRefusesUnsafeMembers(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  *tar.Header
	}{
		{"parent", &tar.Header{Typeflag: tar.TypeReg, Name: "../evil", Mode: 0o600}},
		{"absolute", &tar.Header{Typeflag: tar.TypeReg, Name: "/tmp/evil", Mode: 0o600}},
		{"unclean", &tar.Header{Typeflag: tar.TypeReg, Name: "ca/../../evil", Mode: 0o600}},
		{"symlink", &tar.Header{Typeflag: tar.TypeSymlink, Name: "ca", Linkname: "/etc", Mode: 0o777}},
		{"directory", &tar.Header{Typeflag: tar.TypeDir, Name: "ca/", Mode: 0o777}},
		{"device", &tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "data")
			_, _, err := Restore(bytes.NewReader(archiveOf(t, tc.hdr)), dir)
			if err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("Restore(%s) = %v, want a refusal", tc.hdr.Name, err)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 0 {
				t.Errorf("a refused restore left %v in %s", ents, base)
			}
		})
	}
}

func TestRestoreRefusesNonEmptyTarget(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keep"), []byte("mine"), 0o600)
	_, _, err := Restore(bytes.NewReader(archiveOf(t)), dir)
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Restore into a non-empty dir = %v, want ErrNotEmpty", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("target now holds %v, want only keep", ents)
	}
}

// A backup of a fresh data dir's audit log restores and verifies; one whose
// log was tampered with is refused before anything is moved into place.
func TestRestoreVerifiesTheAuditLog(t *testing.T) {
	src := t.TempDir()
	if err := audit.Init(src); err != nil {
		t.Fatal(err)
	}
	lg, err := audit.Open(src, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lg.Close()
	var b bytes.Buffer
	man, err := Write(&b, Options{Dir: src})
	if err != nil {
		t.Fatal(err)
	}
	if man.AuditEntries < 1 {
		t.Errorf("manifest audit_entries = %d, want the audit.start entry", man.AuditEntries)
	}
	good := filepath.Join(t.TempDir(), "good")
	if _, res, err := Restore(bytes.NewReader(b.Bytes()), good); err != nil || !res.OK {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	// Change one byte of an entry inside the archive.
	tampered := bytes.Replace(b.Bytes(), []byte(`"audit.start"`), []byte(`"audit.stark"`), 1)
	if bytes.Equal(tampered, b.Bytes()) {
		t.Fatal("no audit.start entry in the archive to tamper with")
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if _, _, err := Restore(bytes.NewReader(tampered), bad); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("Restore of a tampered log = %v, want a verification failure", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a refused restore left %s (%v)", bad, err)
	}
}

// FuzzRestore feeds arbitrary archives to Restore: it may refuse them, but
// never writes outside its target.
func FuzzRestore(f *testing.F) {
	f.Add(archiveOf(f))
	f.Add(archiveOf(f, &tar.Header{Typeflag: tar.TypeReg, Name: "ca/x", Mode: 0o600}))
	f.Add(archiveOf(f, &tar.Header{Typeflag: tar.TypeReg, Name: "../x", Mode: 0o600}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "data")
		_, _, err := Restore(bytes.NewReader(data), dir)
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.Name() != "data" {
				t.Fatalf("Restore left %s beside its target", e.Name())
			}
		}
		if err != nil && len(ents) != 0 {
			t.Fatalf("a failed restore (%v) left its target", err)
		}
	})
}
