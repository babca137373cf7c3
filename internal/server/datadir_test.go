package server

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-home/hearth/internal/config"
)

// initAndOpen runs Init on dir and then Open, as `hearth init` and `hearth
// serve` would, and checks that the data dir is private and complete.
func initAndOpen(t *testing.T, dir string) {
	t.Helper()
	res, err := Init(context.Background(), dir, InitOptions{Listen: "127.0.0.1:0", CAListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("Init(%s) = %v, want a data dir", dir, err)
	}
	if _, err := os.Stat(res.RootCert); err != nil {
		t.Errorf("Init's root certificate %s: %v", res.RootCert, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want 0700", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".init-") {
			t.Errorf("init left its temporary directory %s behind", e.Name())
		}
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Init into %s = %v", dir, err)
	}
	s.Close()
}

// systemd's StateDirectory= and container volumes hand hearth an existing,
// empty directory (mode 0755): init fills it.
func TestInitIntoExistingEmptyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	initAndOpen(t, dir)
}

// A mount point cannot be renamed over (EBUSY) and a temporary directory
// beside it is on another filesystem (EXDEV): init builds inside it.
func TestInitIntoMountPoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("mounting a tmpfs needs root (CAP_SYS_ADMIN): %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v (CI runs as root)", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	// A fresh filesystem made by mkfs has lost+found; it does not count.
	if err := os.Mkdir(filepath.Join(dir, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	initAndOpen(t, dir)
	var st, parent syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, config.FileName), &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Dir(dir), &parent); err != nil {
		t.Fatal(err)
	}
	if st.Dev == parent.Dev {
		t.Errorf("hearth.yaml is on the parent's filesystem, not on the mounted one")
	}
}

// snapshot lists every path under dir with its mode and contents.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// A directory holding anything is refused with ErrExists and left exactly
// as it was (entries, modes, contents).
func TestInitRefusesNonEmptyDir(t *testing.T) {
	for name, fill := range map[string]func(dir string) error{
		"a file": func(dir string) error { return os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644) },
		"a dot file": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, ".keep"), nil, 0o600)
		},
		"a subdirectory": func(dir string) error { return os.Mkdir(filepath.Join(dir, "ca"), 0o755) },
		"a data dir": func(dir string) error {
			if err := os.Remove(dir); err != nil {
				return err
			}
			return os.Rename(initializedDir(t), dir)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := fill(dir); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, filepath.Dir(dir))
			_, err := Init(context.Background(), dir, InitOptions{Listen: "127.0.0.1:0", CAListen: "127.0.0.1:0"})
			if !errors.Is(err, ErrExists) {
				t.Fatalf("Init into a dir with %s = %v, want ErrExists", name, err)
			}
			if after := snapshot(t, filepath.Dir(dir)); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("Init changed the refused dir:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}
