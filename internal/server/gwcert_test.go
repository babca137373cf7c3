package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
)

// serveForTest runs s.Serve until the test ends and returns its addresses.
func serveForTest(t *testing.T, opts Options) (*Server, Addrs) {
	t.Helper()
	ready := make(chan Addrs, 1)
	opts.Ready = func(a Addrs) { ready <- a }
	opts.Listen, opts.CAListen = "127.0.0.1:0", "127.0.0.1:0"
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	select {
	case a := <-ready:
		return s, a
	case err := <-done:
		t.Fatalf("Serve = %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not start")
	}
	return nil, Addrs{}
}

// countingClient trusts only root, checks certificates on clock now, and
// counts the TCP connections it opens.
func countingClient(root *x509.Certificate, now func() time.Time) (*http.Client, *atomic.Int32) {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	var dials atomic.Int32
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Time: now},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		MaxConnsPerHost: 1,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, &dials
}

// The gateway's own certificate renews itself once two thirds of its
// lifetime have passed on the injected clock: new handshakes (gateway and
// CA listener) get the new certificate, written to the data dir, while a
// connection opened before keeps working; no restart, and the renewal is
// in the audit log.
func TestGatewayCertificateRenewsWithoutRestart(t *testing.T) {
	dir := initializedDir(t)
	rootPEM, err := os.ReadFile(filepath.Join(dir, "ca", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(rootPEM)
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s, addrs := serveForTest(t, Options{Dir: dir, Now: now})

	get := func(c *http.Client, url string) *x509.Certificate {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 { // smallstep answers /roots with 201
			t.Fatalf("GET %s = %s", url, resp.Status)
		}
		return resp.TLS.PeerCertificates[0]
	}
	healthz := "https://" + addrs.Gateway + "/.hearth/healthz"
	old, oldDials := countingClient(root, now)
	first := get(old, healthz)

	// Keep the old connection busy while the clock moves past 2/3 of the
	// certificate's lifetime.
	lifetime := first.NotAfter.Sub(first.NotBefore)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failed atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := old.Get(healthz)
			if err != nil {
				failed.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
				failed.Add(1)
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	skew.Store(int64(lifetime*2/3 + 24*time.Hour))

	fresh, _ := countingClient(root, now)
	renewed := get(fresh, healthz)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("a new handshake after 2/3 of the lifetime got the old certificate (serial %x)", first.SerialNumber)
	}
	if want := now().Add(lifetime); renewed.NotAfter.Before(want.Add(-2*time.Hour)) || renewed.NotAfter.After(want.Add(time.Hour)) {
		t.Errorf("renewed certificate NotAfter = %v, want about %v", renewed.NotAfter, want)
	}
	if renewed.Subject.CommonName != first.Subject.CommonName || len(renewed.DNSNames) != len(first.DNSNames) || len(renewed.IPAddresses) != len(first.IPAddresses) {
		t.Errorf("renewed certificate names %v %v, want the old ones %v %v", renewed.DNSNames, renewed.IPAddresses, first.DNSNames, first.IPAddresses)
	}
	caCert := get(fresh, "https://"+addrs.CA+"/roots")
	if caCert.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Errorf("the CA listener serves serial %x, want the renewed %x", caCert.SerialNumber, renewed.SerialNumber)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests on the connection opened before the renewal failed or saw another certificate", n)
	}
	if n := oldDials.Load(); n != 1 {
		t.Errorf("the old client dialled %d times, want 1 (its connection stays up)", n)
	}
	// The data dir holds the new certificate, for the next start.
	b, err := os.ReadFile(filepath.Join(dir, "ca", "gateway.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ = pem.Decode(b)
	if blk == nil {
		t.Fatal("gateway.crt holds no PEM")
	}
	onDisk, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || onDisk.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Errorf("gateway.crt serial = %v (%v), want the renewed %x", onDisk.SerialNumber, err, renewed.SerialNumber)
	}
	ents, err := s.audit.Tail(10, func(e audit.Entry) bool { return e.Name == audit.EventCertRenew && e.Resource == "gateway" })
	if err != nil || len(ents) != 1 {
		t.Errorf("cert.renew entries for the gateway = %d (%v), want 1", len(ents), err)
	}
}
