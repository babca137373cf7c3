package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
)

// followBound is the bound: a change made on one replica holds on
// every other within this long.
const followBound = time.Second

// pgReplica opens a Server on a copy of the fixture data dir with its
// state in the database dsn names.
func pgReplica(t *testing.T, dir, dsn string) *Server {
	t.Helper()
	s, err := Open(Options{Dir: dir, StoreDSN: dsn, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("Open %s on PostgreSQL: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pgPair is two replicas (copies of one data dir) on one fresh database.
func pgPair(t *testing.T) (a, b *Server, dsn string) {
	t.Helper()
	dsn = pgtest.New(t).PassfileDSN(t)
	a = pgReplica(t, initializedDir(t), dsn)
	b = pgReplica(t, initializedDir(t), dsn)
	return a, b, dsn
}

// addDeviceStatus is the status of `hearth device add NAME --caps CAP` on
// s's admin socket (the local principal): 400 while CAP names no bundle.
func addDeviceStatus(t *testing.T, s *Server, name, capOrBundle string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "caps": []string{capOrBundle}})
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/.hearth/v1/admin/devices", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = "local"
	s.live.Load().socket.ServeHTTP(w, r)
	return w.Code
}

// withBundle is hearth.yaml y with one more bundle.
func withBundle(t *testing.T, y []byte, name string) []byte {
	t.Helper()
	const at = "  bundles:\n"
	if !bytes.Contains(y, []byte(at)) {
		t.Fatalf("hearth.yaml has no bundles:\n%s", y)
	}
	return bytes.Replace(y, []byte(at), []byte(at+`    "`+name+`": ["status"]`+"\n"), 1)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func storedConfig(t *testing.T, s *Server) *sharedConfig {
	t.Helper()
	rec, err := readShared(context.Background(), s.store)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// waitFor polls cond until it holds or the bound passes, and returns how
// long it took (the bound when it never held).
func waitFor(bound time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > bound {
			return bound, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readyChecks is B's /.hearth/readyz answer: its status and checks.
func readyChecks(t *testing.T, s *Server) (int, map[string]string) {
	t.Helper()
	w := httptest.NewRecorder()
	s.live.Load().mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.hearth/readyz", nil))
	var out struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("readyz body %q: %v", w.Body, err)
	}
	return w.Code, out.Checks
}

// TestConfigReachesEveryReplica: the first replica publishes its
// hearth.yaml as version 1; a reload on A with a new bundle reaches B
// within 1 s (a device add B refused is then accepted), B's hearth.yaml
// is then byte for byte A's (0600, the old one kept as .previous), B's
// config.change entry names A, and B's applying it publishes nothing.
func TestConfigReachesEveryReplica(t *testing.T) {
	a, b, _ := pgPair(t)
	ctx := context.Background()
	pa := filepath.Join(a.opts.Dir, config.FileName)
	pb := filepath.Join(b.opts.Dir, config.FileName)
	orig := readFile(t, pa)

	rec := storedConfig(t, b)
	if rec == nil || rec.Version != 1 || rec.SHA256 != sha256Hex(orig) || rec.Replica != a.sync.replica {
		t.Fatalf("stored record after two starts = %+v, want version 1 of the file, published by A (%s)", rec, a.sync.replica)
	}
	if st := addDeviceStatus(t, b, "pi", "home:basic"); st != http.StatusBadRequest {
		t.Fatalf("device add with an unknown bundle on B = %d, want 400", st)
	}

	edited := withBundle(t, orig, "home:basic")
	if err := os.WriteFile(pa, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // the bound counts from the reload's call: B may apply it before A's audit entry is durable
	res, err := a.Reload(ctx, authz.LocalPrincipalID, "socket")
	if err != nil {
		t.Fatalf("Reload on A = %v", err)
	}
	if res.Version != 2 || !res.Changed {
		t.Errorf("Reload on A = %+v, want changed, version 2", res)
	}
	if _, ok := waitFor(followBound-time.Since(start), func() bool {
		return b.live.Load().sum == sha256Hex(edited)
	}); !ok {
		t.Fatalf("B did not apply A's reload within %v of it", followBound)
	}
	t.Logf("B applied A's reload %v after it was asked for", time.Since(start))
	if st := addDeviceStatus(t, b, "pi", "home:basic"); st != http.StatusCreated && st != http.StatusOK {
		t.Errorf("device add with the new bundle on B = %d, want it accepted", st)
	}
	if got := readFile(t, pb); !bytes.Equal(got, edited) {
		t.Errorf("B's hearth.yaml after following A =\n%s\nwant A's:\n%s", got, edited)
	}
	if fi, err := os.Stat(pb); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("B's hearth.yaml mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if got := readFile(t, filepath.Join(b.opts.Dir, PreviousConfigName)); !bytes.Equal(got, orig) {
		t.Errorf("B's %s is not the file it replaced", PreviousConfigName)
	}
	if rec := storedConfig(t, b); rec.Version != 2 || rec.Replica != a.sync.replica {
		t.Errorf("stored record after B applied it = version %d by %s, want version 2 by A: applying published again", rec.Version, rec.Replica)
	}
	if n := auditBodies(t, b, `"via":"replica"`, a.sync.replica); n != 1 {
		t.Errorf("config.change entries with via replica naming A = %d, want 1", n)
	}
	// A reload on B of the file it now has publishes nothing new.
	if res, err := b.Reload(ctx, authz.LocalPrincipalID, "signal"); err != nil || res.Changed || res.Version != 2 {
		t.Errorf("Reload on B of the followed file = %+v, %v; want unchanged, version 2", res, err)
	}
}

// auditBodies counts the audit entries (in the replicas' shared history)
// whose body contains every one of subs.
func auditBodies(t *testing.T, s *Server, subs ...string) int {
	t.Helper()
	p := s.store.(pooled).Pool()
	rows, err := p.Query(context.Background(), `SELECT body FROM hearth_audit.entries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		all := true
		for _, sub := range subs {
			all = all && bytes.Contains(body, []byte(sub))
		}
		if all {
			n++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// putShared writes rec into the store as another replica would (one of a
// newer hearth that knows a setting this one does not, or a row someone
// edited by hand).
func putShared(t *testing.T, s *Server, rec sharedConfig) {
	t.Helper()
	v, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Update(context.Background(), func(tx store.Tx) error {
		return tx.Bucket(ConfigBucket).Put([]byte(configKey), v)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestInvalidSharedConfigRefused: a stored hearth.yaml that does not
// validate, or whose bytes do not match its sha256, is not applied (the
// running configuration and the file stay), and readyz reports it until a
// valid one is published.
func TestInvalidSharedConfigRefused(t *testing.T) {
	a, b, _ := pgPair(t)
	pb := filepath.Join(b.opts.Dir, config.FileName)
	orig := readFile(t, pb)
	running := b.live.Load()
	if st, checks := readyChecks(t, b); st != http.StatusOK || checks["config"] != "ok" {
		t.Fatalf("readyz on B at start = %d %v, want 200 with config ok", st, checks)
	}

	bad := append(append([]byte(nil), orig...), "\nno_such_setting: 1\n"...)
	forged := withBundle(t, orig, "home:forged")
	for i, rec := range []sharedConfig{
		{Version: 2, SHA256: sha256Hex(bad), YAML: bad, Replica: "newer-hearth"},
		{Version: 3, SHA256: sha256Hex(orig), YAML: forged, Replica: "hand-edited row"},
	} {
		putShared(t, a, rec)
		if _, ok := waitFor(followBound, func() bool {
			st, checks := readyChecks(t, b)
			return st == http.StatusServiceUnavailable && checks["config"] == "failing"
		}); !ok {
			st, checks := readyChecks(t, b)
			t.Fatalf("case %d: readyz on B after an invalid stored hearth.yaml = %d %v, want 503 with config failing", i, st, checks)
		}
		if b.live.Load() != running {
			t.Errorf("case %d: B applied a stored hearth.yaml it should refuse", i)
		}
		if got := readFile(t, pb); !bytes.Equal(got, orig) {
			t.Errorf("case %d: B's hearth.yaml was overwritten by a refused one", i)
		}
		why := b.sync.refused.Load()
		if why == nil || !strings.Contains(*why, rec.Replica) {
			t.Errorf("case %d: B's refusal = %v, want it to name %q", i, why, rec.Replica)
		}
		b.sync.refused.Store(nil) // so that the next case's wait sees its own refusal
	}
	if st := addDeviceStatus(t, b, "pi", "home:forged"); st != http.StatusBadRequest {
		t.Errorf("device add with the forged bundle on B = %d, want 400", st)
	}

	// A valid reload on A supersedes it: B follows and is ready again.
	edited := withBundle(t, orig, "home:basic")
	if err := os.WriteFile(filepath.Join(a.opts.Dir, config.FileName), edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := a.Reload(context.Background(), authz.LocalPrincipalID, "socket"); err != nil || res.Version != 4 {
		t.Fatalf("Reload on A = %+v, %v; want version 4", res, err)
	}
	if _, ok := waitFor(followBound, func() bool {
		st, checks := readyChecks(t, b)
		return st == http.StatusOK && checks["config"] == "ok" && b.live.Load().sum == sha256Hex(edited)
	}); !ok {
		st, checks := readyChecks(t, b)
		t.Errorf("after a valid reload on A, B = %d %v, sum %s; want ready, applied", st, checks, b.live.Load().sum)
	}
}

// TestRestartAdoptsSharedConfig: a replica that was stopped while
// another one reloaded starts with the replicas' newest hearth.yaml, not
// its stale file (which it keeps as .previous), and records that it did.
func TestRestartAdoptsSharedConfig(t *testing.T) {
	dsn := pgtest.New(t).PassfileDSN(t)
	a := pgReplica(t, initializedDir(t), dsn)
	dirB := initializedDir(t)
	b, err := Open(Options{Dir: dirB, StoreDSN: dsn, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	pa := filepath.Join(a.opts.Dir, config.FileName)
	stale := readFile(t, filepath.Join(dirB, config.FileName))
	edited := withBundle(t, readFile(t, pa), "home:basic")
	if err := os.WriteFile(pa, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reload(context.Background(), authz.LocalPrincipalID, "socket"); err != nil {
		t.Fatal(err)
	}

	b2 := pgReplica(t, dirB, dsn)
	if got := readFile(t, filepath.Join(dirB, config.FileName)); !bytes.Equal(got, edited) {
		t.Errorf("B's hearth.yaml after the restart =\n%s\nwant the shared one:\n%s", got, edited)
	}
	if got := readFile(t, filepath.Join(dirB, PreviousConfigName)); !bytes.Equal(got, stale) {
		t.Errorf("B's %s is not its stale file", PreviousConfigName)
	}
	if st := addDeviceStatus(t, b2, "pi", "home:basic"); st != http.StatusCreated && st != http.StatusOK {
		t.Errorf("device add with the shared bundle on the restarted B = %d, want it accepted", st)
	}
	if n := auditBodies(t, b2, `"via":"start"`, a.sync.replica, "adopted"); n != 1 {
		t.Errorf("start entries saying B adopted A's configuration = %d, want 1", n)
	}
	if rec := storedConfig(t, b2); rec.Version != 2 {
		t.Errorf("stored version after B's restart = %d, want 2 (adopting publishes nothing)", rec.Version)
	}
}

// TestConcurrentReloadsConverge: two reloads at once on A and B, of
// different files, get distinct versions, and both replicas end on the
// file of the higher one.
func TestConcurrentReloadsConverge(t *testing.T) {
	a, b, _ := pgPair(t)
	files := map[*Server][]byte{}
	for s, bundle := range map[*Server]string{a: "home:a", b: "home:b"} {
		p := filepath.Join(s.opts.Dir, config.FileName)
		files[s] = withBundle(t, readFile(t, p), bundle)
		if err := os.WriteFile(p, files[s], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	res := map[*Server]*ReloadResult{}
	var mu sync.Mutex
	for _, s := range []*Server{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Reload(context.Background(), authz.LocalPrincipalID, "socket")
			if err != nil {
				t.Errorf("Reload = %v", err)
				return
			}
			mu.Lock()
			res[s] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if res[a].Version == res[b].Version {
		t.Fatalf("concurrent reloads got the same version %d", res[a].Version)
	}
	winner := a
	if res[b].Version > res[a].Version {
		winner = b
	}
	want := sha256Hex(files[winner])
	if _, ok := waitFor(followBound, func() bool {
		return a.live.Load().sum == want && b.live.Load().sum == want
	}); !ok {
		t.Errorf("replicas run %s and %s, want both on the newest (%s)", a.live.Load().sum, b.live.Load().sum, want)
	}
	for _, s := range []*Server{a, b} {
		if got := readFile(t, filepath.Join(s.opts.Dir, config.FileName)); !bytes.Equal(got, files[winner]) {
			t.Errorf("%s's hearth.yaml is not the newest", s.sync.replica)
		}
	}
}

// TestSharedStoreChangeNeedsRestart: with the store named in hearth.yaml
// (not --store-dsn), a reload on A that points store.dsn elsewhere
// reaches B's hearth.yaml like any change, but B keeps the store it
// opened and its config.change entry names store under restart_needed.
func TestSharedStoreChangeNeedsRestart(t *testing.T) {
	dsn := pgtest.New(t).PassfileDSN(t)
	other := pgtest.New(t).PassfileDSN(t)
	storeSection := func(d string) string { return "\nstore:\n  driver: postgres\n  dsn: \"" + d + "\"\n" }
	var srvs []*Server
	for range 2 {
		dir := initializedDir(t)
		p := filepath.Join(dir, config.FileName)
		if err := os.WriteFile(p, append(readFile(t, p), storeSection(dsn)...), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srvs = append(srvs, s)
	}
	a, b := srvs[0], srvs[1]
	pa := filepath.Join(a.opts.Dir, config.FileName)
	moved := bytes.Replace(readFile(t, pa), []byte(dsn), []byte(other), 1)
	if err := os.WriteFile(pa, moved, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := a.Reload(context.Background(), authz.LocalPrincipalID, "socket")
	if err != nil || !slices.Equal(res.RestartNeeded, []string{"store"}) {
		t.Fatalf("Reload on A = %+v, %v; want restart_needed [store]", res, err)
	}
	if _, ok := waitFor(followBound, func() bool { return b.live.Load().sum == sha256Hex(moved) }); !ok {
		t.Fatalf("B did not follow A's reload within %v", followBound)
	}
	if got := readFile(t, filepath.Join(b.opts.Dir, config.FileName)); !bytes.Equal(got, moved) {
		t.Error("B's hearth.yaml does not name the new store")
	}
	if b.cfg.Store.DSN != dsn {
		t.Errorf("B's store after following = %q, want the one it opened until a restart", b.cfg.Store.DSN)
	}
	if rec := storedConfig(t, b); rec == nil || rec.Version != 2 {
		t.Errorf("the store B still uses holds %+v, want version 2", rec)
	}
	if n := auditBodies(t, b, `"via":"replica"`, `"restart_needed":"store"`); n != 1 {
		t.Errorf("B's config.change entries naming store under restart_needed = %d, want 1", n)
	}
}
