package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	authconfig "github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	stepca "github.com/smallstep/certificates/ca"
	smalldb "github.com/smallstep/certificates/db"
)

// The enrollment benchmarks compare, on the same machine in the same run,
// hearth's enrollment (token check, CSR check, smallstep's one-time-token
// compare-and-swap, signing, the device record in hearth.db, the audit
// hand-off, the JSON answer) with a plain smallstep CA (its own ca.New,
// the same JWK provisioner key and bbolt database driver) answering
// /1.0/sign. Both run over TLS 1.3 on loopback with keep-alive, with
// tokens and CSRs made before the timer starts.
//
//	go test -run XXX -bench EnrollVsStepCA -benchtime 300x -count 5 ./ca

type benchItem struct{ token, csr string }

func benchClient(tc *testCA) *http.Client {
	cfg := &tls.Config{RootCAs: tc.Roots(), MinVersion: tls.VersionTLS13}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true}}
}

func benchPost(b *testing.B, hc *http.Client, url string, body any) {
	bs, _ := json.Marshal(body)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(bs))
	if err != nil {
		b.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("POST %s = %d %s", url, resp.StatusCode, out)
	}
}

func BenchmarkEnroll(b *testing.B) {
	tc := newTestCA(b, Config{})
	items := hearthItems(b, tc, b.N)
	hc := benchClient(tc)
	url := tc.gateway.URL + EnrollPath
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchPost(b, hc, url, EnrollRequest{Token: items[i].token, CSR: items[i].csr})
	}
}

// stepCAServer starts smallstep's own CA (ca.New) on loopback with the
// test CA's root, intermediate and provisioner key, and a bbolt database.
func stepCAServer(b *testing.B, tc *testCA) (base string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pub := tc.jwk.Public()
	cfg := &authconfig.Config{
		Root:             []string{filepath.Join(tc.CA.dir, rootCertFile)},
		IntermediateCert: filepath.Join(tc.CA.dir, interCertFile),
		IntermediateKey:  filepath.Join(tc.CA.dir, interKeyFile),
		Address:          addr,
		DNSNames:         []string{"127.0.0.1"},
		DB:               &smalldb.Config{Type: "bbolt", DataSource: filepath.Join(b.TempDir(), "step.db")},
		AuthorityConfig: &authconfig.AuthConfig{
			Provisioners: provisioner.List{&provisioner.JWK{Type: "JWK", Name: provisionerName, Key: &pub}},
		},
	}
	stdlog := log.Writer()
	log.SetOutput(io.Discard) // smallstep's ca logs with the standard logger
	srv, err := stepca.New(cfg, stepca.WithQuiet(true))
	if err != nil {
		b.Fatal(err)
	}
	go srv.Run()
	base = "https://" + addr
	hc := benchClient(tc)
	for i := 0; ; i++ {
		resp, err := hc.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return base, func() { srv.Stop(); log.SetOutput(stdlog) }
}

func stepItems(b *testing.B, tc *testCA, base string, n int) []benchItem {
	items := make([]benchItem, n)
	now := time.Now()
	for i := range items {
		name := fmt.Sprintf("dev-%d", i)
		jti, _ := randomID()
		tok, err := tc.mintTokenAud(name, jti, now, 15*time.Minute, base+"/1.0/sign")
		if err != nil {
			b.Fatal(err)
		}
		items[i] = benchItem{tok, tc.deviceCSR(b, name, newKey(b))}
	}
	return items
}

func hearthItems(b *testing.B, tc *testCA, n int) []benchItem {
	items := make([]benchItem, n)
	for i := range items {
		name := fmt.Sprintf("dev-%d", i)
		tok, err := tc.AddDevice(context.Background(), name, []string{"status"}, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		items[i] = benchItem{tok.Token, tc.deviceCSR(b, name, newKey(b))}
	}
	return items
}

func BenchmarkStepCASign(b *testing.B) {
	tc := newTestCA(b, Config{}) // for its PKI files, provisioner key and CSRs
	base, stop := stepCAServer(b, tc)
	defer stop()
	items := stepItems(b, tc, base, b.N)
	hc := benchClient(tc)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchPost(b, hc, base+"/1.0/sign", map[string]string{"csr": items[i].csr, "ott": items[i].token})
	}
}

// BenchmarkEnrollVsStepCA alternates one hearth enrollment and one plain
// step-ca sign per iteration (the order flips every iteration), so that
// both see the same disk and CPU load, and reports each one's time and the
// ratio of hearth's throughput to step-ca's (goal: at least 0.9).
func BenchmarkEnrollVsStepCA(b *testing.B) {
	tc := newTestCA(b, Config{})
	base, stop := stepCAServer(b, tc)
	defer stop()
	hItems := hearthItems(b, tc, b.N)
	sItems := stepItems(b, tc, base, b.N)
	hc := benchClient(tc)
	var hearth, step time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		doHearth := func() {
			t0 := time.Now()
			benchPost(b, hc, tc.gateway.URL+EnrollPath, EnrollRequest{Token: hItems[i].token, CSR: hItems[i].csr})
			hearth += time.Since(t0)
		}
		doStep := func() {
			t0 := time.Now()
			benchPost(b, hc, base+"/1.0/sign", map[string]string{"csr": sItems[i].csr, "ott": sItems[i].token})
			step += time.Since(t0)
		}
		if i%2 == 0 {
			doHearth()
			doStep()
		} else {
			doStep()
			doHearth()
		}
	}
	b.ReportMetric(float64(hearth.Nanoseconds())/float64(b.N), "hearth-ns/enroll")
	b.ReportMetric(float64(step.Nanoseconds())/float64(b.N), "stepca-ns/sign")
	b.ReportMetric(float64(step)/float64(hearth), "throughput-ratio")
}

// BenchmarkLookupDevice is the per-request cost the gateway pays for a
// device certificate (a cached view; the certificate hash dominates).
func BenchmarkLookupDevice(b *testing.B) {
	tc := newTestCA(b, Config{})
	_, leaf := tc.enrolled(b, "pi", "system:read")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := tc.LookupDevice(ctx, leaf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
