package backup

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hearth-home/hearth/audit"
)

// ErrNotEmpty is returned by [Restore] for a target that exists and is not
// an empty directory.
var ErrNotEmpty = errors.New("backup: the target exists and is not empty")

// MaxMemberSize bounds one archive member (the largest are the stores and
// audit segments).
const MaxMemberSize = 16 << 30

// Restore unpacks an (already decrypted) archive into dir, which must not
// exist or be an empty directory (a mount point or systemd's
// StateDirectory=). Members go to a temporary directory first; the
// restored audit log must verify ([audit.Verify]) before anything is moved
// into dir, so that a bad archive leaves dir as it was.
func Restore(r io.Reader, dir string) (*Manifest, *audit.VerifyResult, error) {
	dir = filepath.Clean(dir)
	exists := false
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return nil, nil, fmt.Errorf("%w: %s is not a directory", ErrNotEmpty, dir)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("backup: %w", err)
		}
		if len(ents) > 0 {
			return nil, nil, fmt.Errorf("%w: %s (restore into a new or empty directory; nothing was changed)", ErrNotEmpty, dir)
		}
		exists = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	// The temporary directory is inside the target when it exists (so the
	// final moves never cross a mount point), beside it otherwise.
	parent := filepath.Dir(dir)
	if exists {
		parent = dir
	} else if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".hearth-restore-")
	if err != nil {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once everything moved
	man, err := unpack(r, tmp)
	if err != nil {
		return nil, nil, err
	}
	res, err := audit.Verify(tmp, audit.VerifyOptions{})
	if err != nil {
		return man, res, fmt.Errorf("backup: the archive's audit log does not verify: %w; nothing was restored", err)
	}
	if !exists {
		if err := os.Rename(tmp, dir); err != nil {
			return nil, nil, fmt.Errorf("backup: %w", err)
		}
	} else {
		// A data dir is 0700 (it holds the CA's keys), whatever mode the
		// empty directory was created with.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("backup: %w", err)
		}
		ents, err := os.ReadDir(tmp)
		if err != nil {
			return nil, nil, fmt.Errorf("backup: %w", err)
		}
		for _, e := range ents {
			if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				return nil, nil, fmt.Errorf("backup: %w", err)
			}
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, nil, err
	}
	return man, res, nil
}

// unpack writes the archive's members under root, checking the manifest
// first and every member's name and type.
func unpack(r io.Reader, root string) (*Manifest, error) {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName || hdr.Size > 1<<20 {
		return nil, fmt.Errorf("backup: not a hearth backup (no %s at its start)", ManifestName)
	}
	var man Manifest
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&man); err != nil || man.Format != Format {
		return nil, fmt.Errorf("backup: not a %s archive (format %q)", Format, man.Format)
	}
	seen := map[string]bool{}
	dirs := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backup: reading the archive: %w", err)
		}
		if err := checkMember(hdr); err != nil {
			return nil, err
		}
		if seen[hdr.Name] {
			return nil, fmt.Errorf("backup: %s appears twice in the archive", hdr.Name)
		}
		seen[hdr.Name] = true
		p := filepath.Join(root, filepath.FromSlash(hdr.Name))
		if d := filepath.Dir(p); !dirs[d] {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, fmt.Errorf("backup: %w", err)
			}
			dirs[d] = true
		}
		mode := os.FileMode(hdr.Mode).Perm() & 0o644
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		_, err = io.Copy(f, tr)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("backup: writing %s: %w", hdr.Name, err)
		}
	}
	for _, name := range man.Files {
		if !seen[name] {
			return nil, fmt.Errorf("backup: the archive lacks %s that its manifest lists", name)
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return nil, err
		}
	}
	return &man, nil
}

// checkMember refuses anything but a regular file at a local path (no
// absolute path, no "..", no link, device or directory entry) of bounded
// size.
func checkMember(h *tar.Header) error {
	if h.Typeflag != tar.TypeReg {
		return fmt.Errorf("backup: %q is not a regular file (type %q); refused", h.Name, h.Typeflag)
	}
	if !filepath.IsLocal(filepath.FromSlash(h.Name)) || filepath.ToSlash(filepath.Clean(filepath.FromSlash(h.Name))) != h.Name || h.Name == ManifestName {
		return fmt.Errorf("backup: member name %q is not a clean relative path; refused", h.Name)
	}
	if h.Size < 0 || h.Size > MaxMemberSize {
		return fmt.Errorf("backup: %s is %d bytes, more than %d; refused", h.Name, h.Size, MaxMemberSize)
	}
	return nil
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
