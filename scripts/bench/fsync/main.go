// Command fsync measures, on the disk under -dir (default the temp dir),
// what one audit batch costs at the file-system level with the ways of
// making it durable the audit log could use: a batch is ~3.5 KB of entries
// appended to a segment and a ~250-byte checkpoint appended to the
// checkpoints file, the checkpoint durable only after the entries (and,
// in the first two variants, the batch's stored hashes written unsynced). It
// prints wall time (p50, p99) and CPU time per batch. Linux only.
//
//	go run ./scripts/bench/fsync [-n 400] [-dir DIR] [-entries 3500]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type variant struct {
	name string
	// prealloc zero-fills both files first (so appends change no size and
	// fdatasync needs no journal commit).
	prealloc bool
	batch    func(seg, cps *os.File, entries, cp []byte, segOff, cpOff int64) error
}

// hashBytes is a batch's stored hashes (~12 entries, ~2 hashes each).
const hashBytes = 24 * 32

func fsync(f *os.File) error     { return f.Sync() }
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

func main() {
	n := flag.Int("n", 400, "batches per variant")
	dir := flag.String("dir", os.TempDir(), "directory on the disk to measure")
	size := flag.Int("entries", 3500, "bytes of entries per batch")
	flag.Parse()
	tmp, err := os.MkdirTemp(*dir, "fsync-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(tmp)
	entries, cp := make([]byte, *size), make([]byte, 250)
	for i := range entries {
		entries[i] = 'e'
	}
	for i := range cp {
		cp[i] = 'c'
	}
	var hashes *os.File
	variants := []variant{
		{"entries, fsync; checkpoint, fsync", false, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if err := fsync(seg); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fsync(cps)
		}},
		{"as the log does: entries, stored hashes, fsync; checkpoint, fsync", false, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if _, err := hashes.WriteAt(e[:hashBytes], so/int64(len(e))*hashBytes); err != nil {
				return err
			}
			if err := fsync(seg); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fsync(cps)
		}},
		{"stored hashes written after the entries' fsync", false, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if err := fsync(seg); err != nil {
				return err
			}
			if _, err := hashes.WriteAt(e[:hashBytes], so/int64(len(e))*hashBytes); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fsync(cps)
		}},
		{"fdatasync both, appending", false, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if err := fdatasync(seg); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fdatasync(cps)
		}},
		{"fdatasync both, zero-filled files", true, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if err := fdatasync(seg); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fdatasync(cps)
		}},
		{"sync_file_range entries + fsync checkpoint (ext4-specific, one journal commit)", false, func(seg, cps *os.File, e, c []byte, so, co int64) error {
			if _, err := seg.WriteAt(e, so); err != nil {
				return err
			}
			if err := unix.SyncFileRange(int(seg.Fd()), so, int64(len(e)), unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
				return err
			}
			if _, err := cps.WriteAt(c, co); err != nil {
				return err
			}
			return fsync(cps)
		}},
		{"one fsync (a single file: entries and checkpoint appended together)", false, func(seg, _ *os.File, e, c []byte, so, _ int64) error {
			if _, err := seg.WriteAt(append(e[:len(e):len(e)], c...), so); err != nil {
				return err
			}
			return fsync(seg)
		}},
	}
	hashes, err = os.OpenFile(filepath.Join(tmp, "hashes"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer hashes.Close()
	fmt.Printf("# %d batches of %d + %d bytes per variant, in %s\n", *n, len(entries), len(cp), *dir)
	for i, v := range variants {
		seg, err1 := os.OpenFile(filepath.Join(tmp, fmt.Sprintf("seg%d", i)), os.O_RDWR|os.O_CREATE, 0o600)
		cps, err2 := os.OpenFile(filepath.Join(tmp, fmt.Sprintf("cps%d", i)), os.O_RDWR|os.O_CREATE, 0o600)
		if err1 != nil || err2 != nil {
			fmt.Fprintln(os.Stderr, err1, err2)
			os.Exit(1)
		}
		if v.prealloc {
			seg.WriteAt(make([]byte, (*n+1)*(len(entries)+len(cp))), 0)
			cps.WriteAt(make([]byte, (*n+1)*len(cp)), 0)
			seg.Sync()
			cps.Sync()
		}
		var walls []time.Duration
		c0 := cpuTime()
		for k := 0; k < *n; k++ {
			t := time.Now()
			if err := v.batch(seg, cps, entries, cp, int64(k*(len(entries)+len(cp))), int64(k*len(cp))); err != nil {
				fmt.Fprintln(os.Stderr, v.name, err)
				os.Exit(1)
			}
			walls = append(walls, time.Since(t))
		}
		cpu := (cpuTime() - c0) / time.Duration(*n)
		slices.Sort(walls)
		fmt.Printf("%-80s p50 %8v  p99 %8v  cpu %6v\n", v.name, walls[len(walls)/2].Round(time.Microsecond), walls[len(walls)*99/100].Round(time.Microsecond), cpu.Round(time.Microsecond))
		seg.Close()
		cps.Close()
	}
}
