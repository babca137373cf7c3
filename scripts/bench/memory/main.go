// Command memory measures what running hearth at home costs: start-up time
// (exec until every listener is up), idle RSS, and peak RSS under a flood
// of password logins, for one hearth binary or two side by side (-baseline).
//
// Each binary gets a fresh data dir (hearth init). It is started -starts
// times (SIGTERM between), timing each start from exec to the "serving"
// line; the last one is left idle for -idle, its VmRSS read from
// /proc/PID/status; then -logins concurrent logins for distinct unknown
// users, each from its own loopback source address (127.0.x.y, so that the
// per-address budget does not turn them away before argon2id), hit the
// gateway, and VmHWM (the peak RSS) is read after they are answered. The
// answers are counted by status: the argon2id limiter answers those beyond
// its slots and queue with 503 at once, which is what bounds the peak.
//
//	go run ./scripts/bench/memory -hearth ./hearth [-baseline ./hearth-old] [-logins 300] [-starts 5]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("hearth", "", "the hearth binary to measure (required)")
	baseline := flag.String("baseline", "", "a second hearth binary, measured the same way in the same run")
	logins := flag.Int("logins", 300, "concurrent logins in the flood")
	starts := flag.Int("starts", 5, "starts to time (the median is reported)")
	idle := flag.Duration("idle", 3*time.Second, "how long the server idles before its RSS is read")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "usage: memory -hearth BIN [-baseline BIN] [-logins N] [-starts N]")
		os.Exit(2)
	}
	bins := [][2]string{{"hearth", *bin}}
	if *baseline != "" {
		bins = append(bins, [2]string{"baseline", *baseline})
	}
	fmt.Printf("%-9s %12s %12s %12s %s\n", "binary", "start (med)", "idle RSS", "peak RSS", "flood answers")
	for _, b := range bins {
		r, err := measure(b[1], *starts, *idle, *logins)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", b[0], err)
			os.Exit(1)
		}
		fmt.Printf("%-9s %12s %9.1f MiB %9.1f MiB %s\n", b[0], r.start.Round(time.Millisecond), mib(r.idleRSS), mib(r.peakRSS), r.answers)
	}
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

type result struct {
	start            time.Duration
	idleRSS, peakRSS int64 // KiB
	answers          string
}

var servingRE = regexp.MustCompile(`serving gateway on (\S+), CA on (\S+),`)

func measure(bin string, starts int, idle time.Duration, logins int) (*result, error) {
	tmp, err := os.MkdirTemp("", "hearth-membench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "data")
	if out, err := exec.Command(bin, "init", "--dir", dir, "--owner", "alice").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("init: %v\n%s", err, out)
	}
	var times []time.Duration
	var cmd *exec.Cmd
	var gateway string
	for i := 0; i < starts; i++ {
		if cmd != nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		t0 := time.Now()
		cmd = exec.Command(bin, "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1")
		cmd.Env = append(os.Environ(), "GORACE=") // nothing special: the binary's own defaults
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(stderr)
		gateway = ""
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				gateway = m[1]
				break
			}
		}
		if gateway == "" {
			cmd.Process.Kill()
			return nil, fmt.Errorf("serve did not start")
		}
		times = append(times, time.Since(t0))
		go io.Copy(io.Discard, stderr)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	r := &result{start: times[len(times)/2]}
	time.Sleep(idle)
	if r.idleRSS, err = procStatus(cmd.Process.Pid, "VmRSS"); err != nil {
		return nil, err
	}

	root, err := os.ReadFile(filepath.Join(dir, "ca", "root_ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < logins; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			src := net.IPv4(127, byte(1+i/250), byte(1+i%250), 1)
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
					return d.DialContext(ctx, network, addr)
				},
			}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
			body := fmt.Sprintf(`{"username":"flood-%d","password":"not the password of anyone here"}`, i)
			<-start
			resp, err := hc.Post("https://"+gateway+"/.hearth/v1/auth/login", "application/json", strings.NewReader(body))
			k := "error"
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				k = strconv.Itoa(resp.StatusCode)
			}
			mu.Lock()
			counts[k]++
			mu.Unlock()
		}(i)
	}
	close(start)
	wg.Wait()
	if r.peakRSS, err = procStatus(cmd.Process.Pid, "VmHWM"); err != nil {
		return nil, err
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s×%d ", k, counts[k])
	}
	r.answers = strings.TrimSpace(b.String())
	return r, nil
}

// procStatus reads a "Key:   N kB" line of /proc/PID/status.
func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}
