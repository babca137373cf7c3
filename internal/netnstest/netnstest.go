// Package netnstest exists for tests only: it makes a network namespace
// with a veth pair, so that a test's clients reach hearth from addresses
// of their own — one in a trusted network (zone lan) and one outside it
// (zone remote) — instead of loopback. No traffic leaves the machine: both
// ends of the pair are on it. It needs root and ip(8); under CI=true their
// absence fails the test, elsewhere it skips it naming what is missing.
//
// It is not imported by any non-test code.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// LAN is a namespace made by New.
//
//	host side: <lan>.1/24 and <remote>.1/24
//	namespace: <lan>.2/24 (LANClient) and <remote>.2/24 (RemoteClient)
type LAN struct {
	NS                string // ip netns name, <prefix>-<random>
	HostIP, LANClient string // 10.209.N.1, 10.209.N.2
	RemoteHost        string // 198.18.N.1 (RFC 2544 benchmarking range)
	RemoteClient      string // 198.18.N.2
	LANNet            string // 10.209.N.0/24
}

// New creates the namespace (named prefix-<random>, e.g. "h14") and its
// veth pair, and removes both at t.Cleanup.
func New(t testing.TB, prefix string) *LAN {
	t.Helper()
	ip, err := exec.LookPath("ip")
	switch {
	case err != nil:
		Need(t, "ip(8) from iproute2 (apt-get install -y iproute2) to make the test's network namespace")
	case os.Geteuid() != 0:
		Need(t, "root, to make the test's network namespace and veth pair")
	}
	var rb [3]byte
	rand.Read(rb[:])
	id := hex.EncodeToString(rb[:])
	n := int(rb[0])%250 + 2
	l := &LAN{
		NS:           prefix + "-" + id,
		HostIP:       fmt.Sprintf("10.209.%d.1", n),
		LANClient:    fmt.Sprintf("10.209.%d.2", n),
		LANNet:       fmt.Sprintf("10.209.%d.0/24", n),
		RemoteHost:   fmt.Sprintf("198.18.%d.1", n),
		RemoteClient: fmt.Sprintf("198.18.%d.2", n),
	}
	host, peer := prefix+"a"+id, prefix+"b"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", l.NS)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", l.NS).Run() })
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command(ip, "link", "del", host).Run() })
	run("link", "set", peer, "netns", l.NS)
	run("addr", "add", l.HostIP+"/24", "dev", host)
	run("addr", "add", l.RemoteHost+"/24", "dev", host)
	run("link", "set", host, "up")
	run("-n", l.NS, "addr", "add", l.LANClient+"/24", "dev", peer)
	run("-n", l.NS, "addr", "add", l.RemoteClient+"/24", "dev", peer)
	run("-n", l.NS, "link", "set", peer, "up")
	run("-n", l.NS, "link", "set", "lo", "up")
	return l
}

// Need fails under CI=true and skips elsewhere, naming the prerequisite.
func Need(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing prerequisite: %s", what)
	}
	t.Skipf("missing prerequisite: %s", what)
}

// Dialer returns a DialContext that opens its TCP connection inside the
// namespace from source address src (LANClient or RemoteClient). The
// socket is created on an OS thread switched into the namespace; once
// made it stays there whatever thread later uses it.
func (l *LAN) Dialer(src string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				ch <- result{nil, err}
				return // the thread exits with the goroutine, still locked
			}
			defer orig.Close()
			target, err := os.Open("/run/netns/" + l.NS)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("setns: %w", err)}
				return
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread() // else the thread dies with this goroutine
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// ConnectProxy serves HTTP CONNECT on loopback and opens each tunnel from
// inside the namespace (source src), for a browser that cannot itself run
// there: Chromium's DevTools socket must stay reachable from the test.
// route, when not nil, rewrites the tunnel's target host:port (say
// localhost:P to the host's address in the namespace's network, so that
// the browser's origin keeps a host name).
func (l *LAN) ConnectProxy(t testing.TB, src string, route func(hostport string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dial := l.Dialer(src)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		target := r.Host
		if route != nil {
			target = route(target)
		}
		up, err := dial(r.Context(), "tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() { io.Copy(up, brw); up.(*net.TCPConn).CloseWrite() }()
		go func() { io.Copy(c, up); c.Close() }()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
