package ca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store/pgstore"
)

// Two CA instances — two hearth replicas — share one PostgreSQL database:
// hearth's store through pgstore and the CA database through pgnosql, and
// the same CA keys and configuration (the second data dir is a copy of the
// first, as replicas get theirs from one secret).

// copyCADir copies <from>/ca to <to>/ca, keeping the files' modes.
func copyCADir(t testing.TB, from, to string) {
	t.Helper()
	src := filepath.Join(from, dirName)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(to, dirName, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(dst, fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// replica is one CA instance of a pair and its store.
type replica struct {
	*testCA
	st *pgstore.Store
}

// pgReplicas starts two CA instances on one new PostgreSQL database.
func pgReplicas(t testing.TB) (a, b *replica, db *pgtest.DB) {
	return startReplicas(t, true)
}

// startReplicas starts two CA instances whose store is one new PostgreSQL
// database, and so is their CA database if sharedCADB; otherwise each has
// its own bbolt CA database (copies of one), which isolates what the
// store alone guarantees.
func startReplicas(t testing.TB, sharedCADB bool) (a, b *replica, db *pgtest.DB) {
	t.Helper()
	db = pgtest.New(t)
	dsn := db.PassfileDSN(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	io := InitOptions{Name: "test", Hosts: []string{"hearth.test"}}
	if sharedCADB {
		io.CADB = openCADB(t, dsn)
	}
	if _, err := Init(dirA, io); err != nil {
		t.Fatal(err)
	}
	copyCADir(t, dirA, dirB)
	open := func(dir, name string) *replica {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := pgstore.Open(ctx, dsn, pgstore.Options{ApplicationName: "hearth-" + name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() }) // after the CA's Close (cleanups run last-in, first-out)
		opts := Options{Store: st}
		if sharedCADB {
			opts.CADB = openCADB(t, dsn)
		}
		tc := startTestCA(t, dir, Config{}, opts)
		// The races make more refusals from 127.0.0.1 than one address's
		// budget (TestEnrollThrottle tests that budget).
		tc.thr = newFailThrottle(10000)
		return &replica{testCA: tc, st: st}
	}
	return open(dirA, "a"), open(dirB, "b"), db
}

// checkOnce fails unless every trial had exactly one winner.
func checkOnce(t *testing.T, what string, wins []int) {
	t.Helper()
	for i, w := range wins {
		if w != 1 {
			t.Errorf("%s, trial %d: %d winners, want exactly 1 (all trials: %v)", what, i, w, wins)
			return
		}
	}
}

// x509Rows counts the certificates smallstep stored in the shared CA
// database.
func x509Rows(t testing.TB, db *pgtest.DB) int {
	t.Helper()
	var n int
	if err := db.Pool(t).QueryRow(context.Background(), "SELECT count(*) FROM hearth_ca.x509_certs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// One enrollment token, 8 racers spread over both replicas on hearth's
// enroll API: exactly one certificate per token, one index entry and one
// row in smallstep's table.
func TestReplicasEnrollTokenOnce(t *testing.T) {
	a, b, db := pgReplicas(t)
	enrollRace(t, a, b)
	if n := x509Rows(t, db); n != 10 {
		t.Errorf("%d certificates in the CA database, want 10", n)
	}
}

// The same race with separate CA databases (each replica its own bbolt
// file), so that smallstep's one-time-token store cannot stop a second
// use seen by the other replica: the token spent in the shared store
// (consumeEnrollToken) alone allows exactly one certificate.
func TestReplicasEnrollTokenOnceStoreAlone(t *testing.T) {
	a, b, _ := startReplicas(t, false)
	enrollRace(t, a, b)
}

// enrollRace races 8 enrollments over a and b on each of 10 tokens.
func enrollRace(t *testing.T, a, b *replica) {
	const racers, trials = 8, 10
	ctx := context.Background()
	reps := []*replica{a, b}
	type item struct{ name, token string }
	items := make([]item, trials)
	csrs := make([][]string, trials)
	wins := pgtest.Race(racers, trials, func(trial int) {
		name := fmt.Sprintf("dev-%d", trial)
		tok, err := reps[trial%2].AddDevice(ctx, name, []string{"status"}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		items[trial] = item{name, tok.Token}
		csrs[trial] = make([]string, racers)
		for r := range racers {
			csrs[trial][r] = a.deviceCSR(t, name, newKey(t))
		}
	}, func(trial, racer int) bool {
		st, _ := reps[racer%2].enroll(t, items[trial].token, csrs[trial][racer])
		return st == http.StatusCreated
	})
	checkOnce(t, "hearth enroll across replicas", wins)
	for _, it := range items {
		if n := len(b.certsOf(t, it.name)); n != 1 {
			t.Errorf("device %s has %d indexed certificates, want 1", it.name, n)
		}
	}
}

// The same race with the real step CLI (`step ca certificate`) against
// both replicas' CA listeners: exactly one certificate per token.
func TestReplicasStepCertificateOnce(t *testing.T) {
	step := stepBinary(t)
	const racers, trials = 8, 3
	a, b, db := pgReplicas(t)
	ctx := context.Background()
	reps := []*replica{a, b}
	work := t.TempDir()
	root := filepath.Join(a.dir, dirName, rootCertFile)
	tokens := make([]string, trials)
	var failures atomic.Int32
	wins := pgtest.Race(racers, trials, func(trial int) {
		tok, err := reps[trial%2].AddDevice(ctx, fmt.Sprintf("cli-%d", trial), []string{"status"}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		tokens[trial] = tok.Token
	}, func(trial, racer int) bool {
		dir := filepath.Join(work, fmt.Sprintf("%d-%d", trial, racer))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Error(err)
			return false
		}
		cmd := exec.Command(step, "ca", "certificate", fmt.Sprintf("cli-%d", trial), "dev.crt", "dev.key",
			"--token", tokens[trial], "--ca-url", reps[racer%2].api.URL, "--root", root)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(dir, "steppath"), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			if !strings.Contains(string(out), "already used") && failures.Add(1) == 1 {
				t.Logf("a losing step ca certificate said: %s", out)
			}
			return false
		}
		crt := readCert(t, filepath.Join(dir, "dev.crt"))
		if _, _, err := reps[(racer+1)%2].LookupDevice(ctx, crt); err != nil {
			t.Errorf("the other replica refuses the certificate step got: %v", err)
		}
		return true
	})
	checkOnce(t, "step ca certificate across replicas", wins)
	if n := x509Rows(t, db); n != trials {
		t.Errorf("%d certificates in the CA database, want %d", n, trials)
	}
}

// withinBound is the feed's bound (1 s) plus what polling adds to a
// measurement: one 5 ms poll interval and one lookup under -race.
const withinBound = time.Second + 50*time.Millisecond

// refusedWithin polls r's LookupDevice until it refuses leaf and returns
// how long after since that was (failing after 5 s). since is taken once
// the revocation returned, so its commit is not later than since.
func refusedWithin(t *testing.T, r *replica, crt []byte, since time.Time) time.Duration {
	t.Helper()
	leaf := parseCertPEM(t, string(crt))
	for {
		_, _, err := r.LookupDevice(context.Background(), leaf)
		if errors.Is(err, ErrUnknownDevice) {
			return time.Since(since)
		}
		if err != nil {
			t.Fatalf("LookupDevice: %v", err)
		}
		if time.Since(since) > 5*time.Second {
			t.Fatal("the revoked device is still accepted after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// enrollOn adds a device on one replica, enrolls it there and checks that
// the other accepts it (which caches it there), returning its certificate
// in PEM.
func enrollOn(t *testing.T, on, other *replica, name string) []byte {
	t.Helper()
	_, leaf := on.enrolled(t, name, "status")
	if _, _, err := other.LookupDevice(context.Background(), leaf); err != nil {
		t.Fatalf("the other replica refuses the new device: %v", err)
	}
	return pemCerts(leaf)
}

// A device revoked on A is refused by B within 1 s: with B's feed
// listening, and again right after B's (and A's) feed listener
// connections are killed with pg_terminate_backend, when the change has
// to come from the feed's resync after reconnecting, or from the store
// while the feed is not fresh.
func TestReplicasRevocationWithinBound(t *testing.T) {
	a, b, db := pgReplicas(t)
	ctx := context.Background()
	crt := enrollOn(t, a, b, "pi")
	if _, err := a.RevokeDevice(ctx, "pi"); err != nil {
		t.Fatal(err)
	}
	d := refusedWithin(t, b, crt, time.Now())
	t.Logf("revoked on A, refused on B after %v (feed listening)", d)
	if d > withinBound {
		t.Errorf("refused on B after %v, want within 1 s", d)
	}

	crt = enrollOn(t, b, b, "tv") // cached on B
	var killed int
	if err := db.Admin(t).QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
		db.Name, pgstore.FeedApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatalf("no %s connection to kill", pgstore.FeedApplicationName)
	}
	if _, err := a.RevokeDevice(ctx, "tv"); err != nil {
		t.Fatal(err)
	}
	d = refusedWithin(t, b, crt, time.Now())
	t.Logf("revoked on A after killing %d feed listeners, refused on B after %v", killed, d)
	if d > withinBound {
		t.Errorf("refused on B after %v with its listener killed, want within 1 s", d)
	}
}

// A renewal on A (a new certificate in the index, the old one dropped
// later) is seen by B's cache: B accepts the renewed certificate.
func TestReplicasIndexChangeReachesCache(t *testing.T) {
	a, b, _ := pgReplicas(t)
	ctx := context.Background()
	enrollOn(t, a, b, "pi") // B caches pi's view with the first certificate
	// A second certificate for pi through A's smallstep (a renewal path):
	// mark the first revoked on A through the index, as step's /revoke does.
	first := b.certsOf(t, "pi")[0]
	if err := a.markSerialRevoked("pi", first.Serial); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		v, err := b.devices.view(ctx, "pi")
		if err != nil {
			t.Fatal(err)
		}
		revoked := false
		for _, c := range v.certs {
			revoked = revoked || c.revoked
		}
		if revoked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("B's view still has the certificate unrevoked 1 s after A revoked it in the index")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// One phone link, 8 claims spread over both replicas: exactly one
// succeeds.
func TestReplicasPhoneLinkOnce(t *testing.T) {
	const racers, trials = 8, 10
	a, b, _ := pgReplicas(t)
	ctx := context.Background()
	reps := []*replica{a, b}
	secrets := make([]string, trials)
	wins := pgtest.Race(racers, trials, func(trial int) {
		l, err := reps[trial%2].AddPhoneLink(ctx, fmt.Sprintf("phone-%d", trial), []string{"system:read"}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		secrets[trial] = l.Secret
	}, func(trial, racer int) bool {
		_, err := reps[racer%2].ClaimPhoneLink(ctx, secrets[trial])
		if err != nil && !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("claim: %v", err)
		}
		return err == nil
	})
	checkOnce(t, "phone link claims across replicas", wins)
}

// When B's store is gone, LookupDevice does not answer from B's cache
// once the feed's bound has passed: it fails with an error that is not
// ErrUnknownDevice (the gateway answers 503).
func TestReplicaStoreUnreachable(t *testing.T) {
	a, b, _ := pgReplicas(t)
	crt := parseCertPEM(t, string(enrollOn(t, a, b, "pi")))
	b.st.Close()
	time.Sleep(1100 * time.Millisecond)
	_, _, err := b.LookupDevice(context.Background(), crt)
	if err == nil || errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("LookupDevice with the store gone = %v, want an error other than ErrUnknownDevice", err)
	}
}
