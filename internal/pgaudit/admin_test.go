package pgaudit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

type recorded struct {
	seq                   int64
	event, principal, why string
	at                    time.Time
}

// get fetches path from srv and returns the status, the body and, for a
// JSON error, its code.
func get(t *testing.T, srv *httptest.Server, method, path string) (int, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error, Code string }
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s = %d, not a JSON error: %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, b, e.Code
}

func verifyCheckpoint(t *testing.T, l *Log, msg []byte) torchwood.Checkpoint {
	t.Helper()
	v, err := audit.ParseVerifierKey(l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := torchwood.VerifyCheckpoint(msg, torchwood.ThresholdPolicy(2, torchwood.OriginPolicy(l.Origin()), torchwood.SingleVerifierPolicy(v)))
	if err != nil {
		t.Fatalf("torchwood refuses the checkpoint: %v\n%s", err, msg)
	}
	return c
}

// TestAdminHandler reads, over real HTTP from each replica, the history
// two replicas wrote, with the file log's filters, paging, bounds and
// errors, and checks every answer against what was recorded.
func TestAdminHandler(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b", NoSequencer: true})
	// Times with nanoseconds, so that since is checked to the nanosecond;
	// after the replicas' audit.start entries.
	base := time.Now().UTC().Add(time.Hour).Truncate(time.Second).Add(123456789)
	var recs []recorded
	ctx := context.Background()
	for i := range 60 {
		r := recorded{event: audit.EventAuthzDecision, principal: "device:kitchen", why: fmt.Sprint("r", i), at: base.Add(time.Duration(i) * time.Second)}
		if i%3 == 0 {
			r.event = audit.EventAuthLogin
		}
		if i%2 == 0 {
			r.principal = "user:alice"
		}
		l := []*Log{a, b}[i%2]
		seq, err := l.Append(ctx, audit.Event{Time: r.at, Name: r.event, Outcome: audit.OutcomeSuccess, Principal: r.principal, Reason: r.why})
		if err != nil {
			t.Fatal(err)
		}
		r.seq = seq
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(x, y recorded) int { return int(x.seq - y.seq) })
	size, _, err := a.AdminState(ctx)
	if err != nil || size != recs[len(recs)-1].seq+1 {
		t.Fatalf("AdminState size %d (%v), want %d", size, err, recs[len(recs)-1].seq+1)
	}
	want := func(n int, before int64, match func(recorded) bool) []string {
		var out []string
		for _, r := range recs {
			if r.seq < before && match(r) {
				out = append(out, fmt.Sprintf("%d %s", r.seq, r.why))
			}
		}
		return out[max(len(out)-n, 0):]
	}
	srvA, srvB := httptest.NewServer(a.AdminHandler()), httptest.NewServer(b.AdminHandler())
	defer srvA.Close()
	defer srvB.Close()
	read := func(srv *httptest.Server, query string) ([]string, audit.AdminEntries) {
		t.Helper()
		code, body, _ := get(t, srv, http.MethodGet, audit.AdminPath+"?"+query)
		if code != http.StatusOK {
			t.Fatalf("GET ?%s = %d %s", query, code, body)
		}
		var ae audit.AdminEntries
		if err := json.Unmarshal(body, &ae); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ae.Entries {
			got = append(got, fmt.Sprintf("%d %s", e.Index, e.Reason))
		}
		return got, ae
	}
	since := base.Add(30 * time.Second)
	for _, c := range []struct {
		query  string
		n      int
		before int64
		match  func(recorded) bool
	}{
		{"n=10", 10, size, func(recorded) bool { return true }},
		{"event=auth.login&n=7", 7, size, func(r recorded) bool { return r.event == audit.EventAuthLogin }},
		{"event=auth.login&principal=user:alice", 50, size, func(r recorded) bool { return r.event == audit.EventAuthLogin && r.principal == "user:alice" }},
		{"principal=device:kitchen&n=1000", 1000, size, func(r recorded) bool { return r.principal == "device:kitchen" }},
		{"since=" + url.QueryEscape(since.Format(time.RFC3339Nano)), 50, size, func(r recorded) bool { return !r.at.Before(since) }},
		{"since=" + url.QueryEscape(since.Add(time.Nanosecond).Format(time.RFC3339Nano)), 50, size, func(r recorded) bool { return r.at.After(since) }},
		{"since=" + url.QueryEscape(since.In(time.FixedZone("x", 3600)).Format(time.RFC3339Nano)) + "&principal=user:alice", 50, size, func(r recorded) bool { return !r.at.Before(since) && r.principal == "user:alice" }},
		{fmt.Sprintf("before=%d&n=5", recs[20].seq), 5, recs[20].seq, func(recorded) bool { return true }},
		{"before=99999999&n=3", 3, size, func(recorded) bool { return true }},
		{"event=none.such", 50, size, func(recorded) bool { return false }},
	} {
		got, ae := read(srvA, c.query)
		if w := want(c.n, c.before, c.match); !slices.Equal(got, w) {
			t.Errorf("?%s:\n got %v\nwant %v", c.query, got, w)
		}
		if ae.Size != size || verifyCheckpoint(t, a, []byte(ae.Checkpoint)).N != size {
			t.Errorf("?%s: size %d, checkpoint of %q; want %d", c.query, ae.Size, ae.Checkpoint, size)
		}
		if c.query == "event=none.such" && (ae.Entries == nil || len(ae.Entries) != 0) {
			t.Errorf("no match: entries %v, want []", ae.Entries)
		}
		// The replica without the sequencer answers alike.
		if gotB, _ := read(srvB, c.query); !slices.Equal(gotB, got) {
			t.Errorf("?%s on replica b: %v, on a: %v", c.query, gotB, got)
		}
	}
	// Paging back with before gives the whole filtered history, in pages.
	isDecision := func(r recorded) bool { return r.event == audit.EventAuthzDecision }
	var all []string
	for before := size; ; {
		got, ae := read(srvA, fmt.Sprintf("event=authz.decision&n=8&before=%d", before))
		all = append(got, all...)
		if len(ae.Entries) < 8 {
			break
		}
		before = ae.Entries[0].Index
	}
	if w := want(1000, size, isDecision); !slices.Equal(all, w) {
		t.Errorf("paged: %v\nwant %v", all, w)
	}
	for _, q := range []string{"n=0", "n=1001", "n=01", "n=ten", "n=5&n=6", "before=-1", "before=1.5", "since=yesterday", "since=2026-11-01", "colour=red", "%zz"} {
		if code, _, errCode := get(t, srvA, http.MethodGet, audit.AdminPath+"?"+q); code != http.StatusBadRequest || errCode != "bad_request" {
			t.Errorf("?%s = %d %q, want 400 bad_request", q, code, errCode)
		}
	}
	if code, _, _ := get(t, srvA, http.MethodPost, audit.AdminPath); code != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", code)
	}
	if code, _, _ := get(t, srvA, http.MethodGet, audit.AdminPath+"/x"); code != http.StatusNotFound {
		t.Errorf("GET %s/x = %d, want 404", audit.AdminPath, code)
	}
	// Tail (the web UI's reader) agrees.
	es, err := b.Tail(7, func(e audit.Entry) bool { return e.Principal == "user:alice" })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%d %s", e.Index, e.Reason))
	}
	if w := want(7, size, func(r recorded) bool { return r.principal == "user:alice" }); !slices.Equal(got, w) {
		t.Errorf("Tail: %v, want %v", got, w)
	}
	if es, err := b.Tail(1000, nil); err != nil || int64(len(es)) != size || es[0].Index != 0 {
		t.Errorf("Tail(all): %d entries (%v), want %d from 0", len(es), err, size)
	}
	// The columns the replicas fill as they insert are what migration
	// 0002's trigger computes from the bodies (as for hearth migrate's
	// COPY), also for an event without principal or time, and one past
	// int64 nanoseconds.
	if _, err := a.Append(ctx, audit.Event{Name: audit.EventAuthLogin, Outcome: audit.OutcomeFailure}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, audit.Event{Name: audit.EventAuthLogin, Outcome: audit.OutcomeFailure, Principal: "user:bob", Time: time.Date(3000, 1, 1, 0, 0, 0, 5, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	pool := db.Pool(t)
	columns := func() string {
		t.Helper()
		var out strings.Builder
		rows, err := pool.Query(ctx, "SELECT seq, event, coalesce(principal, '<null>'), at_ns FROM "+Schema+".entries WHERE seq IS NOT NULL ORDER BY seq")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var seq, ns int64
			var ev, pr string
			if err := rows.Scan(&seq, &ev, &pr, &ns); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "%d %s %s %d\n", seq, ev, pr, ns)
		}
		return out.String()
	}
	filled := columns()
	if _, err := pool.Exec(ctx, "UPDATE "+Schema+".entries SET event = NULL, principal = NULL, at_ns = NULL"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE "+Schema+".entries SET body = body"); err != nil {
		t.Fatal(err)
	}
	if byTrigger := columns(); byTrigger != filled || !strings.Contains(filled, " user:bob 9223372036854775807\n") || !strings.Contains(filled, " <null> ") {
		t.Errorf("columns as inserted:\n%s\nas the trigger computes them:\n%s", filled, byTrigger)
	}
}

// TestProofs fetches JSON inclusion and consistency proofs from either
// replica's handler and verifies them with x/mod/sumdb/tlog against
// checkpoints torchwood verified.
func TestProofs(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b"})
	checkpoint := func(srv *httptest.Server) torchwood.Checkpoint {
		code, msg, _ := get(t, srv, http.MethodGet, audit.CheckpointPath)
		if code != http.StatusOK {
			t.Fatalf("checkpoint: %d %s", code, msg)
		}
		return verifyCheckpoint(t, a, msg)
	}
	srvA, srvB := httptest.NewServer(a.Handler()), httptest.NewServer(b.Handler())
	defer srvA.Close()
	defer srvB.Close()
	if _, failed := load(t, []*Log{a, b}, 2, 20, nil); len(failed) > 0 {
		t.Fatal(failed)
	}
	old := checkpoint(srvA)
	if _, failed := load(t, []*Log{a, b}, 2, 30, nil); len(failed) > 0 {
		t.Fatal(failed)
	}
	for i, srv := range []*httptest.Server{srvA, srvB} {
		c := checkpoint(srv)
		if c.N <= old.N {
			t.Fatalf("checkpoint %d did not grow past %d", c.N, old.N)
		}
		for _, idx := range []int64{0, 1, old.N - 1, old.N, c.N - 1} {
			code, body, _ := get(t, srv, http.MethodGet, fmt.Sprintf("%s?index=%d&size=%d", audit.ProofPath, idx, c.N))
			if code != http.StatusOK {
				t.Fatalf("replica %d: inclusion of %d: %d %s", i, idx, code, body)
			}
			p, err := audit.ParseInclusionProof(body)
			if err != nil {
				t.Fatal(err)
			}
			line := audit.EntryLine(nil, idx, []byte(bodyAt(t, db.Pool(t), idx)))
			if err := tlog.CheckRecord(p.Proof, c.N, c.Hash, idx, tlog.RecordHash(line)); err != nil {
				t.Errorf("replica %d: inclusion of %d in %d: %v", i, idx, c.N, err)
			}
			if err := tlog.CheckRecord(p.Proof, c.N, c.Hash, idx, tlog.RecordHash(append(line, ' '))); err == nil {
				t.Errorf("replica %d: the proof of %d also proves another entry", i, idx)
			}
		}
		code, body, _ := get(t, srv, http.MethodGet, fmt.Sprintf("%s?old=%d&size=%d", audit.ProofPath, old.N, c.N))
		if code != http.StatusOK {
			t.Fatalf("consistency: %d %s", code, body)
		}
		p, err := audit.ParseConsistencyProof(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p.Proof, c.N, c.Hash, old.N, old.Hash); err != nil {
			t.Errorf("replica %d: consistency %d → %d: %v", i, old.N, c.N, err)
		}
		for _, q := range []string{"", "index=1", fmt.Sprintf("index=%d&size=%d", c.N, c.N), fmt.Sprintf("index=0&size=%d", c.N+1),
			"old=0&size=3", "old=4&size=3", "index=1&old=1&size=3", "index=01&size=3", "index=1&size=3&x=1"} {
			if code, _, errCode := get(t, srv, http.MethodGet, audit.ProofPath+"?"+q); code != http.StatusBadRequest || errCode != "bad_request" {
				t.Errorf("proof?%s = %d %q, want 400 bad_request", q, code, errCode)
			}
		}
	}
}
