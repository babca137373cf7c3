package audit

import (
	"golang.org/x/mod/sumdb/tlog"
	"slices"
	"testing"
)

func TestFrontierMatchesTlog(t *testing.T) {
	var f frontier
	var all []tlog.Hash
	for n := int64(0); n < 1000; n++ {
		h := tlog.RecordHash([]byte{byte(n), byte(n >> 8)})
		want, err := tlog.StoredHashesForRecordHash(n, h, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(ix))
			for i, x := range ix {
				out[i] = all[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		got := f.appendAdd(nil, h)
		if !slices.Equal(got, want) {
			t.Fatalf("record %d: stored hashes differ", n)
		}
		all = append(all, want...)
		if n%97 == 0 {
			r1, _ := f.root()
			r2, _ := tlog.TreeHash(n+1, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
				out := make([]tlog.Hash, len(ix))
				for i, x := range ix {
					out[i] = all[x]
				}
				return out, nil
			}))
			if r1 != r2 {
				t.Fatalf("root at %d differs", n+1)
			}
		}
	}
	if a := testing.AllocsPerRun(100, func() { var buf [8]tlog.Hash; f.appendAdd(buf[:0], tlog.Hash{1}) }); a != 0 {
		t.Errorf("appendAdd allocates %v times", a)
	}
}
