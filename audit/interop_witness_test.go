//go:build unix

package audit

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/witnesstest"
)

// TestLitewitnessInterop: torchwood's litewitness (tlog-witness) cosigns
// hearth's checkpoints as the log pushes them; verify --witness accepts
// the cosignature; a rewritten log, same key, other history, is refused
// by the witness and reported by hearth, and verify --witness fails it.
func TestLitewitnessInterop(t *testing.T) {
	dir := newTestDir(t)
	vkey := func() string {
		l := openTest(t, dir, Config{}, Options{})
		defer l.Close()
		return l.VerifierKey()
	}()
	origin := strings.SplitN(vkey, "+", 2)[0]
	url, wkey := witnesstest.Litewitness(t, origin, vkey)
	cfg := Config{Witnesses: []Witness{{URL: url, Key: wkey}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := Options{WitnessInterval: 50 * time.Millisecond, HTTPClient: &http.Client{Timeout: 5 * time.Second}}
	l := openTest(t, dir, cfg, opts)
	waitWitness := func(l *Log, size int64) WitnessStatus {
		t.Helper()
		for i := 0; ; i++ {
			s := l.Witnesses()[0]
			if s.Size >= size || s.Refused {
				return s
			}
			if i > 200 {
				t.Fatalf("the witness did not cosign size %d: %+v", size, s)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	if s := waitWitness(l, l.Size()); s.Error != "" || s.Refused {
		t.Fatalf("first push: %+v", s)
	}
	// Again, from the size the witness has: a consistency proof.
	for i := range 20 {
		mustRecord(t, l, testEvent(10+i))
	}
	size := l.Size()
	if s := waitWitness(l, size); s.Error != "" || s.Lag != 0 {
		t.Fatalf("second push: %+v", s)
	}
	// The served checkpoint carries the cosignature.
	srvMsg := l.cosignedCheckpoint(l.Checkpoint())
	if !strings.Contains(string(srvMsg), "— witness.test/h11 ") {
		t.Errorf("served checkpoint has no cosignature:\n%s", srvMsg)
	}
	l.Close()
	res := mustVerify(t, dir, VerifyOptions{Witnesses: []string{wkey}})
	if len(res.Witnessed) != 1 || res.Witnessed[0].Size != size {
		t.Fatalf("verify --witness: %+v", res.Witnessed)
	}

	// An intruder with the data dir rewrites history under the same key:
	// entry 3 dropped, the rest re-signed.
	recs := entryRecords(t, dir)
	keep := map[string][]byte{}
	for _, f := range []string{SigningKeyFile, VerifierKeyFile, HMACKeyFile} {
		keep[f], _ = os.ReadFile(auditPath(dir, f))
	}
	witnessed, _ := os.ReadDir(auditPath(dir, WitnessesDir))
	saved := map[string][]byte{}
	for _, e := range witnessed {
		saved[e.Name()], _ = os.ReadFile(auditPath(dir, WitnessesDir, e.Name()))
	}
	os.RemoveAll(auditPath(dir))
	os.MkdirAll(auditPath(dir, SegmentsDir), 0o700)
	for f, b := range keep {
		os.WriteFile(auditPath(dir, f), b, 0o600)
	}
	os.WriteFile(auditPath(dir, CheckpointsFile), nil, 0o600)
	os.WriteFile(auditPath(dir, HashesFile), nil, 0o600)
	l = openTest(t, dir, Config{}, Options{})
	for i, r := range recs[1:] {
		if i+1 == 3 {
			continue
		}
		e, err := ParseEntry(r.frame[frameHeader:])
		if err != nil {
			t.Fatal(err)
		}
		mustRecord(t, l, e.Event)
	}
	for i := range 10 { // longer than what the witness saw
		mustRecord(t, l, testEvent(100+i))
	}
	l.Close()
	l = openTest(t, dir, cfg, opts)
	s := waitWitness(l, l.Size()+1)
	var reported []Entry
	for i := 0; i < 200 && len(reported) == 0; i++ {
		reported, _ = l.Tail(1, func(e Entry) bool { return e.Name == EventAuditWitness })
		time.Sleep(10 * time.Millisecond)
	}
	l.Close()
	if len(reported) != 1 || reported[0].Outcome != OutcomeFailure || reported[0].Meta["witness"] != "witness.test/h11" {
		t.Fatalf("no audit.witness entry for the refusal: %+v", reported)
	}
	// 409 (the witness has 27 entries), then the proof from 27 to the
	// rewritten tree, which the witness refuses with 422.
	if !s.Refused || !strings.Contains(s.Error, "does not verify against the tree it has seen") {
		t.Fatalf("the witness accepted a rewritten log: %+v", s)
	}
	t.Logf("hearth reports: %s", s.Error)
	// The owner kept the cosigned checkpoint (or the witness has it):
	// verify --witness fails the rewritten log.
	os.MkdirAll(auditPath(dir, WitnessesDir), 0o700)
	for name, b := range saved {
		os.WriteFile(auditPath(dir, WitnessesDir, name), b, 0o600)
	}
	if res, err := Verify(dir, VerifyOptions{Witnesses: []string{wkey}}); err == nil || res.OK {
		t.Fatal("verify --witness passed a rewritten log")
	} else {
		t.Logf("verify --witness: %v", err)
	}
}
