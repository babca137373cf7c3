// Command gateway benchmarks hearth's mTLS gateway side by side with a
// minimal Go mTLS reverse proxy (crypto/tls + httputil.ReverseProxy, no
// authz, no audit) and, when installed, nginx with ssl_verify_client on, all
// in front of the same upstream, in one run.
//
// For each proxy it measures, with -clients concurrent clients (default 32):
//   - keep-alive requests/s (HTTP/1.1, one TLS connection per client);
//   - new-connection requests/s (a full TLS 1.3 handshake with a client
//     certificate per request, no session resumption);
//   - latency at a paced load (-rate requests/s in total, spread over the
//     clients), minus the same measured straight at the upstream: the
//     latency the proxy adds (p50, p99);
//   - peak RSS of the proxy process (VmHWM; for nginx, master + workers).
//
// Every proxy runs as its own process (this binary re-executed with -role),
// so that RSS is the proxy's own. The load generator is this process; on a
// small machine it competes with the proxy for CPU, equally for every proxy.
//
// hearth's gateway runs with a static device directory, one route
// (GET /bench/* → status) and, by default (-audit mem), an in-memory audit
// recorder ("memrecorder": JSON-encodes each event under a mutex, keeps
// none, no fsync): the numbers are then the gateway's own cost. With
// -audit disk it records into the real signed log in a temp dir, every
// request waiting until its entry and a checkpoint covering it are
// durable (one framed append and one fdatasync per group commit). Each
// client then waits about one and a half group commits per request, so
// with few clients keep-alive throughput is bound by fdatasync latency
// (Little's law: clients / latency), not by CPU; more clients make bigger
// batches (-clients 32,128 measures both in one run).
//
// -baseline BIN runs the hearth role of another build of this program
// side by side, as "baseline" (gateway.sh does it for a git revision).
//
// -measure keepalive skips the new-connection and paced measurements (a
// quicker comparison, or a profile of keep-alive traffic alone). With
// HEARTH_BENCH_CPUPROFILE=FILE the hearth role writes its CPU profile to
// FILE and the Go proxy to FILE.goproxy; with the disk log, the hearth
// role(s) print their group commits' figures (entries per batch, time
// per commit) on stderr when stopped.
//
// Usage: go run ./scripts/bench/gateway [-duration 3s] [-rounds 3] [-clients 32[,128]] [-rate 1000] [-audit mem|disk] [-baseline BIN] [-measure keepalive,newconn,paced] [-x25519] [-nginx auto|off]
// or scripts/bench/gateway.sh with the same flags.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/mtls"
)

func main() {
	role := flag.String("role", "driver", "driver, upstream, hearth or goproxy")
	dir := flag.String("dir", "", "certificate dir (roles other than driver)")
	upstream := flag.String("upstream", "", "upstream URL (proxy roles)")
	duration := flag.Duration("duration", 3*time.Second, "length of each measurement")
	clients := flag.String("clients", "32", "concurrent clients; a comma-separated list (32,128) measures each in turn with the same processes")
	rate := flag.Int("rate", 1000, "total requests/s of the paced latency measurement")
	nginx := flag.String("nginx", "auto", "auto: use nginx when installed; off: skip it")
	rounds := flag.Int("rounds", 3, "rounds; proxies are interleaved and medians reported")
	auditMode := flag.String("audit", "mem", "hearth's audit recorder: mem (in-memory, no fsync) or disk (the real signed log, group-committed and fsynced)")
	baseline := flag.String("baseline", "", "another build of this benchmark whose hearth role runs side by side as \"baseline\" (before/after comparisons in one run)")
	x25519 := flag.Bool("x25519", false, "offer only X25519 (nginx's OpenSSL lacks the X25519MLKEM768 hybrid Go prefers)")
	measure := flag.String("measure", "keepalive,newconn,paced", "which measurements to make, comma-separated: keepalive, newconn, paced (keepalive alone for quick comparisons and profiles)")
	flag.Parse()
	var err error
	switch *role {
	case "driver":
		os.Setenv("HEARTH_BENCH_AUDIT", *auditMode) // inherited by the hearth role
		var ns []int
		for _, c := range strings.Split(*clients, ",") {
			n, cerr := strconv.Atoi(strings.TrimSpace(c))
			if cerr != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "gateway: -clients %q: want positive numbers, comma-separated\n", *clients)
				os.Exit(2)
			}
			ns = append(ns, n)
		}
		ms := map[string]bool{}
		for _, m := range strings.Split(*measure, ",") {
			switch m = strings.TrimSpace(m); m {
			case "keepalive", "newconn", "paced":
				ms[m] = true
			default:
				fmt.Fprintf(os.Stderr, "gateway: -measure %q: want keepalive, newconn and/or paced\n", *measure)
				os.Exit(2)
			}
		}
		err = drive(*duration, ns, *rate, *rounds, *nginx, *x25519, *baseline, ms)
	case "upstream":
		err = serveUpstream()
	case "hearth":
		err = serveHearth(*dir, *upstream)
	case "goproxy":
		err = serveGoProxy(*dir, *upstream)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// ---- certificates ----

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func mintCerts(dir string) error {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	issue := func(name string, serial int64, tmpl *x509.Certificate) error {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		if err := writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", kder)
	}
	if err := issue("server", 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return err
	}
	u, _ := url.Parse("spiffe://bench.home.arpa/device/bench-client")
	return issue("client", 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "bench-client"}, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func loadTLS(dir string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		return cert, nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return cert, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return cert, pool, nil
}

// ---- child roles ----

// announce prints the listening address for the driver.
func announce(ln net.Listener) { fmt.Println(ln.Addr().String()) }

func serveUpstream() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	announce(ln)
	body := []byte(strings.Repeat("x", 128))
	return (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "128")
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

func upstreamTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// memRecorder is the benchmark's audit.Recorder: it JSON-encodes each event
// under a mutex (the serialisation cost of a real log) and keeps nothing.
// It does no disk I/O and no fsync.
type memRecorder struct {
	mu  sync.Mutex
	n   int64
	buf []byte
}

func (m *memRecorder) Record(_ context.Context, e audit.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.n++
	m.buf = append(m.buf[:0], b...)
	m.mu.Unlock()
	return nil
}

// batchStats sums the audit log's group commits (audit.Options.OnBatch),
// reported on stderr when the driver stops the hearth role: how many
// entries a batch held and how long its write and fdatasync took.
type batchStats struct {
	mu               sync.Mutex
	batches, entries int64
	write, slowest   time.Duration
	sizes            [6]int64  // 1, 2-3, 4-7, 8-15, 16-31, 32+
	took             [24]int64 // commits taking < 2^k µs
}

var batches batchStats

func (b *batchStats) add(s audit.BatchStats) {
	k := 0
	for n := s.Entries; n > 1 && k < len(b.sizes)-1; n >>= 1 {
		k++
	}
	b.mu.Lock()
	b.batches++
	b.entries += int64(s.Entries)
	b.write += s.Write
	b.slowest = max(b.slowest, s.Write)
	b.sizes[k]++
	t := 0
	for us := s.Write.Microseconds(); us > 0 && t < len(b.took)-1; us >>= 1 {
		t++
	}
	b.took[t]++
	b.mu.Unlock()
}

func (b *batchStats) report() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batches == 0 {
		return
	}
	// The 99th percentile, to within a factor of two.
	var p99 int64
	for t, n := 0, int64(0); t < len(b.took); t++ {
		if n += b.took[t]; n*100 >= b.batches*99 {
			p99 = 1 << t
			break
		}
	}
	fmt.Fprintf(os.Stderr, "%s audit log: %d batches, %.1f entries per batch, %.0f µs per commit (sign, write, fdatasync; p99 < %d µs, slowest %s); batches of 1, 2-3, 4-7, 8-15, 16-31, 32+ entries: %v\n",
		os.Getenv("HEARTH_BENCH_NAME"), b.batches, float64(b.entries)/float64(b.batches), float64(b.write.Microseconds())/float64(b.batches), p99, b.slowest.Round(time.Microsecond), b.sizes)
}

type staticDirectory struct{ caps []authz.Capability }

func (d staticDirectory) LookupDevice(_ context.Context, c *x509.Certificate) (string, []authz.Capability, error) {
	for _, u := range c.URIs {
		if name, ok := strings.CutPrefix(u.Path, "/device/"); ok && name == "bench-client" {
			return name, d.caps, nil
		}
	}
	return "", nil, authz.ErrUnknownDevice
}

func serveHearth(dir, upstream string) error {
	cert, pool, err := loadTLS(dir)
	if err != nil {
		return err
	}
	up, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	policy, err := authz.New(authz.Config{})
	if err != nil {
		return err
	}
	caps, _ := policy.Expand([]string{"system:read"})
	var rec audit.Recorder = &memRecorder{}
	if os.Getenv("HEARTH_BENCH_AUDIT") == "disk" {
		adir, err := os.MkdirTemp(dir, "audit-")
		if err != nil {
			return err
		}
		if err := audit.Init(adir); err != nil {
			return err
		}
		l, err := audit.Open(adir, audit.Config{}, audit.Options{OnBatch: batches.add})
		if err != nil {
			return err
		}
		rec = l
	}
	g, err := mtls.NewGateway(mtls.GatewayOptions{
		Policy:   policy,
		Devices:  staticDirectory{caps},
		Audit:    rec,
		Routes:   []mtls.Route{{Path: "/bench/*", Methods: []string{"GET"}, Capability: "status"}},
		Upstream: up,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	announce(ln)
	if err := onStop(""); err != nil {
		return err
	}
	return g.Server(mtls.ServerTLSConfig(&cert, pool)).ServeTLS(ln, "", "")
}

// onStop starts the CPU profile HEARTH_BENCH_CPUPROFILE names (with
// suffix), if any, for looking into a proxy under load, and writes it and
// the audit log's batch figures when the driver stops this process.
func onStop(suffix string) error {
	var prof *os.File
	if path := os.Getenv("HEARTH_BENCH_CPUPROFILE"); path != "" {
		var err error
		if prof, err = os.Create(path + suffix); err != nil {
			return err
		}
		pprof.StartCPUProfile(prof)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() {
		<-sig
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
		batches.report()
		os.Exit(0)
	}()
	return nil
}

// serveGoProxy is the baseline: the least a Go mTLS reverse proxy does.
func serveGoProxy(dir, upstream string) error {
	cert, pool, err := loadTLS(dir)
	if err != nil {
		return err
	}
	up, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	// The same upstream transport and a buffer pool, as any tuned Go
	// proxy would have, so that the difference to hearth is hearth's own
	// work: authentication, routing, authz and audit.
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.SetXForwarded() },
		Transport:  upstreamTransport(),
		BufferPool: bufPool{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	announce(ln)
	if err := onStop(".goproxy"); err != nil {
		return err
	}
	srv := &http.Server{
		Handler: rp,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
			NextProtos: []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	return srv.ServeTLS(ln, "", "")
}

type bufPool struct{}

var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufPool) Get() []byte  { return *(bufs.Get().(*[]byte)) }
func (bufPool) Put(b []byte) { bufs.Put(&b) }

// ---- driver ----

type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	pids func() []int
}

func start(name string, args ...string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startBin(self, name, args...)
}

// startBin starts bin with args as the proxy name and reads the address it
// announces.
func startBin(bin, name string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	// The child knows its name (for its report); only "hearth" and
	// "goproxy" write CPU profiles (goproxy's with the suffix .goproxy),
	// so that a baseline build does not overwrite hearth's.
	for _, kv := range os.Environ() {
		if name == "hearth" || name == "goproxy" || !strings.HasPrefix(kv, "HEARTH_BENCH_CPUPROFILE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HEARTH_BENCH_NAME="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not start: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: strings.TrimSpace(line)}
	p.pids = func() []int { return []int{cmd.Process.Pid} }
	return p, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// peakRSS sums VmHWM over pids, in KiB.
func peakRSS(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				total += n
			}
		}
	}
	return total
}

func startNginx(dir, upstream string) (*proc, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	u, _ := url.Parse(upstream)
	user := ""
	if os.Getuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
worker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream agent { server %[3]s; keepalive 256; }
  server {
    listen %[4]s ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate %[2]s/server.pem;
    ssl_certificate_key %[2]s/server-key.pem;
    ssl_client_certificate %[2]s/ca.pem;
    ssl_verify_client on;
    ssl_session_tickets off;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`, user, dir, u.Host, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "nginx-error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: "nginx", cmd: cmd, addr: addr}
	p.pids = func() []int {
		pids := []int{cmd.Process.Pid}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return pids
	}
	for i := 0; i < 50; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return nil, errors.New("nginx did not start listening; see nginx-error.log")
}

// client is one load-generating connection: raw HTTP/1.1 over TLS, lean
// enough that the generator spends little CPU per request.
type client struct {
	cfg  *tls.Config
	addr string
	conn *tls.Conn
	br   *bufio.Reader
	req  []byte
}

func (c *client) dial() error {
	conn, err := tls.Dial("tcp", c.addr, c.cfg)
	if err != nil {
		return err
	}
	c.conn = conn
	c.br = bufio.NewReaderSize(conn, 4096)
	return nil
}

// roundTrip sends one request and reads the whole response.
func (c *client) roundTrip() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

type result struct {
	reqs      int64
	errs      int64
	rps       float64
	latencies []time.Duration
}

func (r result) pct(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(float64(len(r.latencies)-1)*p)]
}

// load runs n clients for d. keepAlive reuses one connection per client;
// otherwise every request makes a new connection (full handshake). interval
// > 0 paces each client to one request per interval.
func load(addr string, cfg *tls.Config, n int, d time.Duration, keepAlive bool, interval time.Duration, tlsOn bool) result {
	var total, errs atomic.Int64
	lat := make([][]time.Duration, n)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := &client{cfg: cfg, addr: addr, req: []byte("GET /bench/x HTTP/1.1\r\nHost: bench\r\n\r\n")}
			if !keepAlive {
				c.req = []byte("GET /bench/x HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
			}
			var plain net.Conn
			next := time.Now()
			if interval > 0 {
				next = next.Add(time.Duration(i) * interval / time.Duration(n))
			}
			for time.Now().Before(deadline) {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				t0 := time.Now()
				var err error
				if !tlsOn {
					if plain == nil {
						plain, err = net.Dial("tcp", addr)
						if err == nil {
							c.br = bufio.NewReader(plain)
						}
					}
					if err == nil {
						_, err = plain.Write(c.req)
					}
					if err == nil {
						var resp *http.Response
						resp, err = http.ReadResponse(c.br, nil)
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					}
					if err != nil && plain != nil {
						plain.Close()
						plain = nil
					}
				} else {
					if c.conn == nil {
						err = c.dial()
					}
					if err == nil {
						err = c.roundTrip()
					}
					if err != nil || !keepAlive {
						if c.conn != nil {
							c.conn.Close()
							c.conn = nil
						}
					}
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
				total.Add(1)
			}
			if c.conn != nil {
				c.conn.Close()
			}
			if plain != nil {
				plain.Close()
			}
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return result{reqs: total.Load(), errs: errs.Load(), rps: float64(total.Load()) / d.Seconds(), latencies: all}
}

// pacedPairs measures added latency fairly on a busy machine: each of n
// clients sends, once per interval, one request through the proxy and one
// straight to the upstream (plain HTTP, alternating which goes first), over
// kept-alive connections, so that both distributions see the same machine.
func pacedPairs(proxyAddr string, cfg *tls.Config, upAddr string, n int, d time.Duration, interval time.Duration) (proxied, direct result) {
	type lat struct{ p, d []time.Duration }
	lats := make([]lat, n)
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			pc := &client{cfg: cfg, addr: proxyAddr, req: []byte("GET /bench/x HTTP/1.1\r\nHost: bench\r\n\r\n")}
			if err := pc.dial(); err != nil {
				errs.Add(1)
				return
			}
			defer pc.conn.Close()
			dc, err := net.Dial("tcp", upAddr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer dc.Close()
			dbr := bufio.NewReader(dc)
			viaDirect := func() error {
				if _, err := dc.Write(pc.req); err != nil {
					return err
				}
				resp, err := http.ReadResponse(dbr, nil)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				return resp.Body.Close()
			}
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(n))
			for k := 0; time.Now().Before(deadline); k++ {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				for j := 0; j < 2; j++ {
					t0 := time.Now()
					if (j+k)%2 == 0 {
						if err := pc.roundTrip(); err != nil {
							errs.Add(1)
							return
						}
						lats[i].p = append(lats[i].p, time.Since(t0))
					} else {
						if err := viaDirect(); err != nil {
							errs.Add(1)
							return
						}
						lats[i].d = append(lats[i].d, time.Since(t0))
					}
				}
			}
		}(i)
	}
	wg.Wait()
	for _, l := range lats {
		proxied.latencies = append(proxied.latencies, l.p...)
		direct.latencies = append(direct.latencies, l.d...)
	}
	slices.Sort(proxied.latencies)
	slices.Sort(direct.latencies)
	proxied.errs = errs.Load()
	return proxied, direct
}

// cpuTicks is the user+system CPU time of pids, in clock ticks (1/100 s).
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name; utime and stime are
		// fields 14 and 15 of stat(5).
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 13 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			total += u + st
		}
	}
	return total
}

// sample is one round's measurement of one proxy.
type sample struct {
	keepAlive, newConns float64 // requests/s
	kaCPU, ncCPU        float64 // proxy CPU µs per request
	addedP50, addedP99  time.Duration
	kaP99               time.Duration
	errs                int64
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func drive(d time.Duration, ns []int, rate, rounds int, nginxMode string, x25519 bool, baseline string, measure map[string]bool) error {
	dir, err := os.MkdirTemp("", "hearth-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := mintCerts(dir); err != nil {
		return err
	}
	clientCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		return err
	}
	_, pool, err := loadTLS(dir)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{clientCert},
		NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS13,
	}
	if x25519 {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}

	up, err := start("upstream", "-role", "upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	upURL := "http://" + up.addr

	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, role := range []string{"hearth", "goproxy"} {
		p, err := start(role, "-role", role, "-dir", dir, "-upstream", upURL)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	if baseline != "" {
		p, err := startBin(baseline, "baseline", "-role", "hearth", "-dir", dir, "-upstream", upURL)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	if nginxMode != "off" {
		if p, err := startNginx(dir, upURL); err != nil {
			fmt.Printf("nginx: skipped (%v)\n\n", err)
		} else {
			procs = append(procs, p)
		}
	}

	for k, n := range ns {
		if k > 0 {
			fmt.Println()
		}
		interval := time.Duration(float64(time.Second) * float64(n) / float64(rate))
		fmt.Printf("hearth gateway benchmark: %d clients, %s per measurement, %d rounds (proxies interleaved, medians shown),\n", n, d, rounds)
		fmt.Printf("paced latency at %d req/s in total, %d CPUs shared by the load generator, the proxies and the upstream\n", rate, numCPU())
		if os.Getenv("HEARTH_BENCH_AUDIT") == "disk" {
			fmt.Printf("audit recorder in the hearth gateway: the real signed log on disk (group commit, one fdatasync per batch)\n\n")
		} else {
			fmt.Printf("audit recorder in the hearth gateway: memrecorder (in-memory, JSON-encodes each event, no disk, no fsync)\n\n")
		}

		samples := map[string][]sample{}
		groups := map[string]string{}
		for round := 0; round < rounds; round++ {
			for i := range procs {
				p := procs[(i+round)%len(procs)]
				load(p.addr, cfg, n, d/5, true, 0, true) // warm up
				var s sample
				var ka, nc, paced, direct result
				c0 := cpuTicks(p.pids())
				if measure["keepalive"] {
					ka = load(p.addr, cfg, n, d, true, 0, true)
				}
				c1 := cpuTicks(p.pids())
				if measure["newconn"] {
					nc = load(p.addr, cfg, n, d, false, 0, true)
				}
				c2 := cpuTicks(p.pids())
				if measure["paced"] {
					paced, direct = pacedPairs(p.addr, cfg, up.addr, n, d, interval)
				}
				s.keepAlive, s.newConns = ka.rps, nc.rps
				if ka.reqs > 0 {
					s.kaCPU = float64(c1-c0) * 1e4 / float64(ka.reqs)
				}
				if nc.reqs > 0 {
					s.ncCPU = float64(c2-c1) * 1e4 / float64(nc.reqs)
				}
				s.addedP50 = paced.pct(0.5) - direct.pct(0.5)
				s.addedP99 = paced.pct(0.99) - direct.pct(0.99)
				s.kaP99 = ka.pct(0.99)
				s.errs = ka.errs + nc.errs + paced.errs
				samples[p.name] = append(samples[p.name], s)
				if c, err := tls.Dial("tcp", p.addr, cfg); err == nil {
					groups[p.name] = c.ConnectionState().CurveID.String()
					c.Close()
				}
			}
		}

		type summary struct {
			name                 string
			ka, nc, kaCPU, ncCPU float64
			p50, p99, kaP99      time.Duration
			errs                 int64
			rss                  int64
		}
		var sums []summary
		for _, p := range procs {
			ss := samples[p.name]
			pick := func(f func(sample) float64) float64 {
				var xs []float64
				for _, s := range ss {
					xs = append(xs, f(s))
				}
				return median(xs)
			}
			pickD := func(f func(sample) time.Duration) time.Duration {
				var xs []time.Duration
				for _, s := range ss {
					xs = append(xs, f(s))
				}
				return median(xs)
			}
			sum := summary{name: p.name,
				ka: pick(func(s sample) float64 { return s.keepAlive }), nc: pick(func(s sample) float64 { return s.newConns }),
				kaCPU: pick(func(s sample) float64 { return s.kaCPU }), ncCPU: pick(func(s sample) float64 { return s.ncCPU }),
				p50: pickD(func(s sample) time.Duration { return s.addedP50 }), p99: pickD(func(s sample) time.Duration { return s.addedP99 }),
				kaP99: pickD(func(s sample) time.Duration { return s.kaP99 }),
				rss:   peakRSS(p.pids()),
			}
			for _, s := range ss {
				sum.errs += s.errs
			}
			sums = append(sums, sum)
		}

		fmt.Printf("%-8s %11s %10s %11s %10s %10s %10s %12s %9s  %s\n", "proxy", "keepalive/s", "cpu µs/req", "newconn/s", "cpu µs/req", "added p50", "added p99", "sat. KA p99", "peak RSS", "key exchange")
		for _, s := range sums {
			fmt.Printf("%-8s %11.0f %10.0f %11.0f %10.0f %10s %10s %12s %5.1f MiB  %s", s.name, s.ka, s.kaCPU, s.nc, s.ncCPU,
				s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond), s.kaP99.Round(time.Microsecond), float64(s.rss)/1024, groups[s.name])
			if s.errs > 0 {
				fmt.Printf("  (%d errors)", s.errs)
			}
			fmt.Println()
		}
		fmt.Println()
		fmt.Println("added p50/p99: paced load; each client alternates a request through the proxy and one straight to the")
		fmt.Println("  upstream (plain HTTP); the proxy's percentile minus the direct one")
		fmt.Println("cpu µs/req: the proxy process's user+system CPU per request (less sensitive to a busy machine than req/s)")
		fmt.Println()
		base := sums[0]
		for _, r := range sums[1:] {
			fmt.Printf("hearth / %-8s", r.name)
			if measure["keepalive"] {
				fmt.Printf(" keep-alive %.2fx (CPU per request %.2fx)  ", base.ka/r.ka, base.kaCPU/r.kaCPU)
			}
			if measure["newconn"] {
				fmt.Printf(" new connections %.2fx (CPU per request %.2fx)  ", base.nc/r.nc, base.ncCPU/r.ncCPU)
			}
			if measure["paced"] {
				fmt.Printf(" added p50 %.2fx, p99 %.2fx", float64(base.p50)/float64(r.p50), float64(base.p99)/float64(r.p99))
			}
			fmt.Println()
		}
	}
	return nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}
