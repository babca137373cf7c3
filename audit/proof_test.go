package audit

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpointAt is the tree hash of the log's first n entries.
func checkpointAt(t *testing.T, l *Log, n int64) Checkpoint {
	t.Helper()
	h, err := tlog.TreeHash(n, hashFile{l.hashes})
	if err != nil {
		t.Fatal(err)
	}
	return Checkpoint{Origin: l.Origin(), Size: n, Hash: h}
}

func lineOf(t *testing.T, l *Log, i int64) []byte {
	t.Helper()
	es, err := l.Read(i, 1)
	if err != nil || len(es) != 1 {
		t.Fatalf("Read(%d) = %v, %v", i, es, err)
	}
	b, _ := json.Marshal(es[0])
	return b
}

func TestProofs(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	defer l.Close()
	for i := range 12 {
		mustRecord(t, l, testEvent(i))
	}
	n := l.Size()
	lines := make([][]byte, n)
	cps := make([]Checkpoint, n+1)
	for i := range n {
		lines[i] = lineOf(t, l, i)
		cps[i+1] = checkpointAt(t, l, i+1)
	}
	for size := int64(1); size <= n; size++ {
		for i := range size {
			p, err := l.ProveInclusion(i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckInclusion(p, lines[i], cps[size]); err != nil {
				t.Fatalf("CheckInclusion(%d in %d) = %v", i, size, err)
			}
			if err := CheckInclusion(p, lines[(i+1)%size], cps[size]); err == nil && size > 1 {
				t.Fatalf("CheckInclusion(%d in %d) accepted another entry", i, size)
			}
			for k := range p.Proof {
				for bit := range 256 {
					q := *p
					q.Proof = append(tlog.RecordProof{}, p.Proof...)
					q.Proof[k][bit/8] ^= 1 << (bit % 8)
					if CheckInclusion(&q, lines[i], cps[size]) == nil {
						t.Fatalf("inclusion proof %d in %d: bit %d of hash %d flipped, still accepted", i, size, bit, k)
					}
				}
			}
		}
		for old := int64(1); old <= size; old++ {
			p, err := l.ProveConsistency(old, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckConsistency(p, cps[old], cps[size]); err != nil {
				t.Fatalf("CheckConsistency(%d, %d) = %v", old, size, err)
			}
			for k := range p.Proof {
				for bit := range 256 {
					q := *p
					q.Proof = append(tlog.TreeProof{}, p.Proof...)
					q.Proof[k][bit/8] ^= 1 << (bit % 8)
					if CheckConsistency(&q, cps[old], cps[size]) == nil {
						t.Fatalf("consistency proof %d to %d: bit %d of hash %d flipped, still accepted", old, size, bit, k)
					}
				}
			}
			if old < size {
				forged := cps[old]
				forged.Hash[0] ^= 1
				if CheckConsistency(p, forged, cps[size]) == nil {
					t.Fatalf("consistency %d to %d accepted a forged old tree", old, size)
				}
			}
		}
	}
	if err := CheckConsistency(nil, cps[5], cps[3]); err == nil {
		t.Error("CheckConsistency accepted a shrinking log")
	}
	for _, bad := range [][2]int64{{0, 0}, {-1, 3}, {3, 3}, {0, n + 1}} {
		if _, err := l.ProveInclusion(bad[0], bad[1]); err == nil {
			t.Errorf("ProveInclusion(%d, %d) succeeded", bad[0], bad[1])
		}
	}
}

func TestHandler(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	defer l.Close()
	for i := range 6 {
		mustRecord(t, l, testEvent(i))
	}
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	get := func(path string) (int, string, []byte) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}

	code, ctype, body := get(CheckpointPath)
	v, _ := note.NewVerifier(l.VerifierKey())
	cp, err := OpenCheckpoint(body, note.VerifierList(v))
	if code != 200 || !strings.HasPrefix(ctype, "text/plain") || err != nil || cp.Size != 7 {
		t.Fatalf("GET checkpoint = %d %s %q (%v)", code, ctype, body, err)
	}
	code, _, body = get(ProofPath + "?index=3&size=7")
	p, err := ParseInclusionProof(body)
	if code != 200 || err != nil {
		t.Fatalf("GET proof?index=3&size=7 = %d %s (%v)", code, body, err)
	}
	if err := CheckInclusion(p, lineOf(t, l, 3), cp); err != nil {
		t.Fatalf("served inclusion proof: %v", err)
	}
	old := checkpointAt(t, l, 2)
	code, _, body = get(ProofPath + "?old=2&size=7")
	cprf, err := ParseConsistencyProof(body)
	if code != 200 || err != nil {
		t.Fatalf("GET proof?old=2&size=7 = %d %s (%v)", code, body, err)
	}
	if err := CheckConsistency(cprf, old, cp); err != nil {
		t.Fatalf("served consistency proof: %v", err)
	}

	for _, tt := range []struct {
		name, path string
		status     int
	}{
		{"no params", ProofPath, 400},
		{"index without size", ProofPath + "?index=1", 400},
		{"both index and old", ProofPath + "?index=1&old=1&size=3", 400},
		{"size beyond log", ProofPath + "?index=1&size=8", 400},
		{"size zero", ProofPath + "?index=0&size=0", 400},
		{"index = size", ProofPath + "?index=3&size=3", 400},
		{"old zero", ProofPath + "?old=0&size=3", 400},
		{"old > size", ProofPath + "?old=4&size=3", 400},
		{"negative", ProofPath + "?index=-1&size=3", 400},
		{"leading zero", ProofPath + "?index=01&size=3", 400},
		{"not a number", ProofPath + "?index=x&size=3", 400},
		{"repeated", ProofPath + "?index=1&index=2&size=3", 400},
		{"unknown param", ProofPath + "?index=1&size=3&x=1", 400},
		{"bad escape", ProofPath + "?index=%zz", 400},
		{"unknown path", "/.hearth/v1/audit/entries", 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, ctype, body := get(tt.path)
			var e struct{ Error, Code string }
			if code != tt.status || ctype != "application/json" || json.Unmarshal(body, &e) != nil || e.Error == "" || e.Code == "" {
				t.Errorf("GET %s = %d %s %s; want %d with a JSON error", tt.path, code, ctype, body, tt.status)
			}
		})
	}
	resp, err := srv.Client().Post(srv.URL+CheckpointPath, "text/plain", nil)
	if err != nil || resp.StatusCode != 405 {
		t.Errorf("POST checkpoint = %v, %v; want 405", resp.StatusCode, err)
	}
}

// FuzzParseProofs: the proof parsers never panic, and what they accept
// encodes back to JSON they accept again.
func FuzzParseProofs(f *testing.F) {
	f.Add([]byte(`{"index":3,"size":7,"proof":["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]}`))
	f.Add([]byte(`{"old":2,"size":7,"proof":[]}`))
	f.Add([]byte(`{"old":2,"size":7,"proof":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParseInclusionProof(b); err == nil {
			out, _ := json.Marshal(p)
			if _, err := ParseInclusionProof(out); err != nil {
				t.Fatalf("re-parse of %s: %v", out, err)
			}
			CheckInclusion(p, b, Checkpoint{Size: p.Size})
		}
		if p, err := ParseConsistencyProof(b); err == nil {
			out, _ := json.Marshal(p)
			if _, err := ParseConsistencyProof(out); err != nil {
				t.Fatalf("re-parse of %s: %v", out, err)
			}
			CheckConsistency(p, Checkpoint{Size: p.Old}, Checkpoint{Size: p.Size})
		}
	})
}

func TestAdminHandler(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: 1024}, Options{})
	defer l.Close()
	for i := range 30 {
		mustRecord(t, l, testEvent(i))
	}
	srv := httptest.NewServer(l.AdminHandler())
	defer srv.Close()
	get := func(q string) (int, AdminEntries) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + AdminPath + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a AdminEntries
		json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	idx := func(a AdminEntries) []int64 {
		var out []int64
		for _, e := range a.Entries {
			out = append(out, e.Index)
		}
		return out
	}
	for _, tt := range []struct {
		name, q string
		want    []int64
	}{
		{"last three", "?n=3", []int64{28, 29, 30}},
		{"by principal", "?n=2&principal=device:pi-1", []int64{26, 29}},
		{"paging back", "?n=2&principal=device:pi-1&before=26", []int64{20, 23}},
		{"by event", "?event=audit.start", []int64{0}},
		{"since", "?since=2026-11-25T12:00:30Z", []int64{29, 30}},
		{"nothing", "?event=auth.login", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, a := get(tt.q)
			if code != 200 || !slices.Equal(idx(a), tt.want) || a.Size != 31 || !strings.HasPrefix(a.Checkpoint, DefaultTrustDomain+"/audit/") {
				t.Errorf("GET %s = %d, entries %v, size %d; want %v", tt.q, code, idx(a), a.Size, tt.want)
			}
		})
	}
	for _, q := range []string{"?n=0", "?n=1001", "?n=x", "?before=-1", "?since=yesterday", "?n=1&n=2", "?x=1"} {
		if code, _ := get(q); code != 400 {
			t.Errorf("GET %s = %d, want 400", q, code)
		}
	}
}
