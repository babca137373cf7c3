package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// benchSetup is one configuration under measurement: its replicas'
// gateways, a device certificate and a user that can log in.
type benchSetup struct {
	name     string
	rs       *replicaSet
	gateways []string
	cert     tls.Certificate
}

// BenchmarkReplicas measures, side by side in one run and interleaved
// round by round, one hearth on bbolt, one on PostgreSQL and two on one
// PostgreSQL database (the load spread over both):
//   - keep-alive: device-certificate requests through the gateway to the
//     sample agent, each authorized and audited (its entry durable before
//     the answer), over one kept-alive TLS connection per client;
//   - login: password logins (argon2id, a token issued and stored);
//   - enroll: token + CSR → certificate (the token consumed, the
//     certificate recorded, audited).
//
// It prints each round and the medians. PostgreSQL runs with fsync on
// when HEARTH_PGTEST_FSYNC=on (scripts/bench/replicas.sh sets it), so that
// both stores pay for durable commits. Run it with
// scripts/bench/replicas.sh, or
//
//	HEARTH_PGTEST_FSYNC=on go test -run '^$' -bench Replicas -benchtime 1x ./cmd/hearth/
func BenchmarkReplicas(b *testing.B) {
	rounds := envInt("HEARTH_BENCH_ROUNDS", 3)
	dur := time.Duration(envInt("HEARTH_BENCH_SECONDS", 3)) * time.Second
	keepClients := envInt("HEARTH_BENCH_CLIENTS", 16)
	const loginClients, enrollClients, enrollsPerRound = 4, 8, 64
	const pw = "kettle lantern orbit meadow 97"
	edit := func(y string) string { return strings.Replace(y, "\nauth:\n", "\nauth:\n  client_burst: 100000\n", 1) }

	var setups []*benchSetup
	only := os.Getenv("HEARTH_BENCH_SETUPS") // e.g. "bbolt x1,postgres x2"; empty: all
	mk := func(name string, n int, pg bool) {
		if only != "" && !slices.Contains(strings.Split(only, ","), name) {
			return
		}
		rs := newReplicaSet(b, n, edit)
		s := &benchSetup{name: name, rs: rs}
		if pg {
			rs.startAll(b)
		} else {
			srv, e := startServeNoFatal(b, rs.dirs[0], rs.upstream)
			if e != "" {
				b.Fatal(e)
			}
			rs.srvs = []*served{srv}
		}
		for _, srv := range rs.srvs {
			s.gateways = append(s.gateways, srv.gateway)
		}
		if out, errOut, err := hearthCmd(b, rs.dirs[0], pw+"\n", "user", "add", "bob", "--caps", "system:read"); err != nil {
			b.Fatalf("%s: user add: %v\n%s%s", name, err, out, errOut)
		}
		s.cert = rs.enroll(b, 0, rs.addDevice(b, 0, "bench", "system:read"))
		setups = append(setups, s)
	}
	mk("bbolt x1", 1, false)
	mk("postgres x1", 1, true)
	mk("postgres x2", 2, true)

	type key struct{ setup, load string }
	res := map[key][]float64{}
	loads := []string{"keepalive req/s", "login /s", "enroll /s"}
	for round := range rounds {
		for _, s := range setups {
			ka := benchKeepAlive(b, s, keepClients, dur)
			lg := benchLogin(b, s, loginClients, dur, pw)
			en := benchEnroll(b, s, enrollClients, enrollsPerRound, round)
			for i, v := range []float64{ka, lg, en} {
				res[key{s.name, loads[i]}] = append(res[key{s.name, loads[i]}], v)
			}
			fmt.Printf("round %d %-12s keepalive %8.0f req/s  login %6.1f /s  enroll %6.1f /s\n", round, s.name, ka, lg, en)
		}
	}
	fmt.Printf("medians of %d rounds (%d keep-alive clients, %v each; PostgreSQL fsync %v):\n", rounds, keepClients, dur, pgtest.Durable())
	for _, l := range loads {
		base := median(res[key{setups[0].name, l}])
		for _, s := range setups {
			m := median(res[key{s.name, l}])
			fmt.Printf("  %-16s %-12s %9.1f  (%.2f× the first)\n", l, s.name, m, m/base)
			b.ReportMetric(m, strings.ReplaceAll(s.name+"-"+strings.Fields(l)[0], " ", "")+"/s")
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// spread runs n clients for d, client i on gateway i mod replicas; each
// call of one returns whether its request succeeded. It returns the
// successes per second.
func spread(s *benchSetup, n int, d time.Duration, newClient func(i int) func(gw string) bool) float64 {
	var ok atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i := range n {
		one := newClient(i)
		gw := s.gateways[i%len(s.gateways)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if one(gw) {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / d.Seconds()
}

func benchKeepAlive(b *testing.B, s *benchSetup, clients int, d time.Duration) float64 {
	return spread(s, clients, d, func(int) func(string) bool {
		c := s.rs.client(&s.cert)
		c.Transport.(*http.Transport).MaxConnsPerHost = 1
		return func(gw string) bool {
			st, _ := do(c, http.MethodGet, "https://"+gw+"/api/status", "", nil)
			return st == http.StatusOK
		}
	})
}

func benchLogin(b *testing.B, s *benchSetup, clients int, d time.Duration, pw string) float64 {
	return spread(s, clients, d, func(int) func(string) bool {
		c := s.rs.client(nil)
		return func(gw string) bool {
			st, _ := do(c, http.MethodPost, "https://"+gw+"/.hearth/v1/auth/login", "", map[string]string{"username": "bob", "password": pw})
			if st != http.StatusOK {
				time.Sleep(5 * time.Millisecond) // busy: the password checks are bounded
			}
			return st == http.StatusOK
		}
	})
}

// benchEnroll adds n devices over the admin socket, then enrolls them
// with clients concurrent clients (keys and CSRs made beforehand), and
// returns enrollments per second.
func benchEnroll(b *testing.B, s *benchSetup, clients, n, round int) float64 {
	adm := adminClient(s.rs.dirs[0])
	type job struct{ token, csr string }
	jobs := make(chan job, n)
	for i := range n {
		name := fmt.Sprintf("e%d-%d", round, i)
		st, body := do(adm, http.MethodPost, "http://hearth/.hearth/v1/admin/devices", "", map[string]any{"name": name, "caps": []string{"system:read"}})
		var tok struct{ Token string }
		if json.Unmarshal(body, &tok); st != http.StatusCreated && st != http.StatusOK || tok.Token == "" {
			b.Fatalf("%s: adding device %s: %d %s", s.name, name, st, body)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
		if err != nil {
			b.Fatal(err)
		}
		jobs <- job{tok.Token, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	}
	close(jobs)
	var ok, failed atomic.Int64
	var firstFailure atomic.Pointer[string]
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		c := s.rs.client(nil)
		gw := s.gateways[i%len(s.gateways)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if st, body := do(c, http.MethodPost, "https://"+gw+"/.hearth/v1/enroll", "", map[string]string{"token": j.token, "csr": j.csr}); st == http.StatusCreated || st == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
					msg := fmt.Sprintf("%d %s", st, body)
					firstFailure.CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if failed.Load() > 0 {
		b.Errorf("%s: %d of %d enrollments failed; the first: %s", s.name, failed.Load(), n, *firstFailure.Load())
	}
	return float64(ok.Load()) / took.Seconds()
}

// adminClient is an HTTP client of dir's admin socket.
func adminClient(dir string) *http.Client {
	sock := admin.SocketPath(dir)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}
