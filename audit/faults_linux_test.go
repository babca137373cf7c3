package audit

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFailClosedFullDisk puts the log on a real 256 KiB tmpfs, fills it,
// and checks that requests are refused with 503 and resume once space is
// freed. Mounting needs root (CAP_SYS_ADMIN); without it the same scenario
// runs with an injected ENOSPC instead.
func TestFailClosedFullDisk(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=256k,mode=0700"); err != nil {
		t.Logf("cannot mount a tmpfs (%v): running the scenario with an injected ENOSPC", err)
		TestFailClosedInjectedHTTP(t)
		return
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "data")
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	l := openTest(t, dir, Config{}, Options{})
	defer l.Close()
	filler := filepath.Join(mnt, "filler")
	fill := func() {
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 4096)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the disk: %v", err)
				}
				return
			}
		}
	}
	free := func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	fullDiskScenario(t, dir, l, fill, free)
}
