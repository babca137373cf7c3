package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hearth-home/hearth/internal/config"
)

// emptyDataDir reports whether dir exists (and is an empty directory),
// or does not exist at all. A dir holding anything — a file, a
// subdirectory, a socket — is refused with ErrExists and left as it is.
// lost+found, which mkfs puts at the root of a fresh filesystem, is the
// one entry that does not count, so that a freshly made volume can be the
// data dir.
func emptyDataDir(dir string) (existing bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("server: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%w: %s is a file, not a directory (use another --dir)", ErrExists, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("server: %w", err)
	}
	for _, e := range ents {
		if e.Name() == "lost+found" && e.IsDir() {
			continue
		}
		return false, fmt.Errorf("%w: %s holds files; init refuses to change it (use another --dir)", ErrExists, dir)
	}
	// The data dir holds keys: only its owner may enter it, whatever mode
	// systemd or the volume gave it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("server: making %s private: %w", dir, err)
	}
	return true, nil
}

// moveInto moves every entry of tmp (a directory inside dir) into dir,
// then removes tmp. rename(2) within one filesystem is atomic per entry;
// RENAME_NOREPLACE makes sure nothing that appeared in dir meanwhile is
// overwritten. hearth.yaml goes last: until it is there, `hearth serve`
// refuses the dir, so an interrupted init never looks like a complete one.
func moveInto(tmp, dir string) error {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case a == config.FileName:
			return 1
		case b == config.FileName:
			return -1
		}
		return strings.Compare(a, b)
	})
	for _, n := range names {
		if err := renameNoReplace(filepath.Join(tmp, n), filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("%w: %s: moving %s into place: %v", ErrExists, dir, n, err)
		}
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return syncDir(dir)
}

// renameNoReplace renames old to new unless new exists. Filesystems
// without RENAME_NOREPLACE (EINVAL) get a check and a plain rename.
func renameNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, serr := os.Lstat(newPath); serr == nil {
			return os.ErrExist
		}
		return os.Rename(oldPath, newPath)
	}
	return err
}

// syncDir makes the renames into dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("server: syncing %s: %w", dir, err)
	}
	return nil
}
