package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearth-home/hearth/auth"
)

// TestInteropGateway drives one running hearth with clients hearth did
// not write — curl, openssl s_client, the step CLI, Go's HTTP/2 and
// coder/websocket clients — over loopback: TLS 1.3 only and the gateway
// chain verifying against the root; mTLS over HTTP/1.1 and HTTP/2;
// certificates of a foreign CA, or minted with hearth's own intermediate
// key but never issued, refused; the authorization of issue 3 (what the
// agent receives, and what it never sees: refused routes, spoofed identity
// headers, path tricks, oversized requests); whoami; `hearth authz
// explain`; revocation on a kept HTTP/2 connection, a resumed TLS session
// and an open websocket; step's enrollment and renewal; login spraying;
// event streams; slow clients. It ends with a clean SIGTERM and no data
// race in the server.
func TestInteropGateway(t *testing.T) {
	t.Parallel()
	openssl := interopTool(t, "openssl")
	step := interopTool(t, "step")
	h := startInteropHearth(t, nil)
	reader := h.enroll(t, "reader", "system:read")
	admin := h.enroll(t, "admin", "system:admin")
	gw := h.srv.gateway

	t.Run("curl/mTLS over HTTP/1.1 and HTTP/2", func(t *testing.T) {
		for _, tc := range []struct {
			name, flag, version string
		}{
			{"http1.1", "--http1.1", "1.1"},
			{"http2", "--http2", "2"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := h.curlDo(t, append(devCurlArgs(reader), tc.flag, h.base()+"/api/status")...)
				if r.status != http.StatusOK || r.version != tc.version {
					t.Fatalf("curl %s /api/status = %d HTTP/%s (exit %d, %s), want 200 HTTP/%s", tc.flag, r.status, r.version, r.exit, r.stderr, tc.version)
				}
				var st struct {
					Principal, Method, Capabilities, Proto string
				}
				if err := json.Unmarshal(r.body, &st); err != nil {
					t.Fatalf("status body %q: %v", r.body, err)
				}
				// The agent is plain HTTP on loopback: whatever the client
				// negotiated, the gateway's hop to it is HTTP/1.1, and the
				// identity is the gateway's.
				if st.Principal != "device:reader" || st.Method != "device" || st.Proto != "HTTP/1.1" {
					t.Errorf("agent reported %+v, want device:reader via device over HTTP/1.1", st)
				}
				if !strings.Contains(st.Capabilities, "status") || strings.Contains(st.Capabilities, "settings:modify") {
					t.Errorf("agent saw capabilities %q, want system:read's", st.Capabilities)
				}
			})
		}
	})

	t.Run("curl/TLS 1.2 refused", func(t *testing.T) {
		before := len(h.agent.Seen())
		r := h.curlDo(t, append(devCurlArgs(reader), "--tlsv1.2", "--tls-max", "1.2", h.base()+"/api/status")...)
		// 35: CURLE_SSL_CONNECT_ERROR, the handshake failed.
		if r.exit != 35 || r.status != 0 {
			t.Errorf("curl --tls-max 1.2 = exit %d status %d (%s), want exit 35 and no answer", r.exit, r.status, r.stderr)
		}
		if n := len(h.agent.Seen()); n != before {
			t.Errorf("the agent saw %d requests over TLS 1.2", n-before)
		}
	})

	t.Run("curl/no certificate is 401 JSON", func(t *testing.T) {
		r := h.curlDo(t, h.base()+"/api/conversations/no-cert")
		if r.status != http.StatusUnauthorized {
			t.Fatalf("no certificate: %d (exit %d %s), want 401", r.status, r.exit, r.stderr)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("WWW-Authenticate = %q, want a Bearer challenge (RFC 6750 §3)", r.header.Get("WWW-Authenticate"))
		}
		if code, msg := jsonError(t, r.body); code != "unauthenticated" || msg == "" {
			t.Errorf("body = %s, want code unauthenticated", r.body)
		}
		if s := h.seen("/api/conversations/no-cert"); len(s) != 0 {
			t.Errorf("agent saw %+v", s)
		}
	})

	t.Run("openssl/TLS 1.3 chain verifies against the root", func(t *testing.T) {
		req := "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
		out, code := runTool(t, "", req, nil, openssl, "s_client", "-connect", gw, "-tls1_3",
			"-CAfile", h.rootFile, "-verify_return_error", "-verify_ip", "127.0.0.1", "-showcerts", "-ign_eof",
			"-cert", filepath.Join(reader, "device.crt"), "-cert_chain", filepath.Join(reader, "device.crt"),
			"-key", filepath.Join(reader, "device.key"))
		for _, want := range []string{"Verify return code: 0 (ok)", "TLSv1.3", " 1 s:", "HTTP/1.1 200", `"principal":"device:reader"`} {
			if !strings.Contains(out, want) {
				t.Errorf("s_client -tls1_3 (exit %d) lacks %q:\n%s", code, want, out)
			}
		}
		// The chain the gateway sends ends under hearth's root: depth 1 is
		// issued by the root's subject.
		root := readPEMCert(t, h.rootFile)
		if !strings.Contains(out, "i:CN = "+root.Subject.CommonName) && !strings.Contains(out, "i:CN="+root.Subject.CommonName) {
			t.Errorf("s_client chain names no certificate issued by %q:\n%s", root.Subject.CommonName, out)
		}
		// Against another root the gateway's chain does not verify.
		other := filepath.Join(t.TempDir(), "other.crt")
		if err := os.WriteFile(other, []byte(foreignPEM(t, openssl, t.TempDir(), "CN=other-root", "").caCert), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, code := runTool(t, "", "", nil, openssl, "s_client", "-connect", gw, "-tls1_3", "-CAfile", other, "-verify_return_error"); code == 0 || strings.Contains(out, "Verify return code: 0 (ok)") {
			t.Errorf("s_client verified the gateway against a foreign root (exit %d):\n%s", code, out)
		}
	})

	t.Run("openssl/TLS 1.2 refused", func(t *testing.T) {
		out, code := runTool(t, "", "", nil, openssl, "s_client", "-connect", gw, "-tls1_2", "-CAfile", h.rootFile)
		// The server answers the ClientHello with alert 70 (RFC 8446
		// §6.2), before any certificate: "New, (NONE), Cipher is (NONE)".
		if code == 0 || !strings.Contains(out, "alert protocol version") || !strings.Contains(out, "no peer certificate available") || !strings.Contains(out, "Cipher is (NONE)") {
			t.Errorf("s_client -tls1_2 = exit %d, want a protocol_version alert:\n%s", code, out)
		}
	})

	t.Run("foreign CA with the same SPIFFE name refused", func(t *testing.T) {
		dev := readPEMCert(t, filepath.Join(reader, "device.crt"))
		if len(dev.URIs) != 1 {
			t.Fatalf("device certificate URIs = %v", dev.URIs)
		}
		// The foreign CA even copies the subject of hearth's issuing CA, so
		// that only a signature check tells them apart.
		out, code := runTool(t, "", "", nil, openssl, "x509", "-in", filepath.Join(reader, "device.crt"), "-noout", "-issuer", "-nameopt", "compat")
		issuer, ok := strings.CutPrefix(strings.TrimSpace(out), "issuer=")
		if code != 0 || !ok {
			t.Fatalf("openssl x509 -issuer: exit %d %s", code, out)
		}
		f := foreignPEM(t, openssl, t.TempDir(), issuer, dev.URIs[0].String())
		path := "/api/conversations/foreign-ca"
		r := h.curlDo(t, "--cert", f.leafFile, "--key", f.keyFile, h.base()+path)
		if r.status != 0 && r.status != http.StatusUnauthorized {
			t.Errorf("foreign certificate: %d, want a refused handshake or 401", r.status)
		}
		t.Logf("curl with a foreign certificate: exit %d, status %d, %s", r.exit, r.status, strings.TrimSpace(r.stderr))
		req := "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
		out, _ = runTool(t, "", req, nil, openssl, "s_client", "-connect", gw, "-tls1_3", "-CAfile", h.rootFile,
			"-cert", f.leafFile, "-key", f.keyFile, "-ign_eof")
		if strings.Contains(out, "HTTP/1.1 200") || !(strings.Contains(out, "alert") || strings.Contains(out, "HTTP/1.1 401")) {
			t.Errorf("s_client with a foreign certificate, want a TLS alert or 401:\n%s", out)
		}
		if s := h.seen(path); len(s) != 0 {
			t.Errorf("agent saw the foreign certificate's requests: %+v", s)
		}
	})

	t.Run("authz/system:read and system:admin", func(t *testing.T) {
		type req struct {
			dev, method, path, body string
			status                  int
			cap                     string // the capability a 403 names
		}
		for _, tc := range []struct {
			name string
			req
		}{
			{"read may GET status", req{reader, "GET", "/api/status", "", 200, ""}},
			{"read may GET conversations", req{reader, "GET", "/api/conversations", "", 200, ""}},
			{"read may GET one conversation", req{reader, "GET", "/api/conversations/7", "", 200, ""}},
			{"read may not PUT settings", req{reader, "PUT", "/api/settings", `{"theme":"read"}`, 403, "settings:modify"}},
			{"read may not GET settings", req{reader, "GET", "/api/settings", "", 403, "settings:modify"}},
			{"read may not install a plugin", req{reader, "POST", "/api/plugins/x", "{}", 403, "plugins:install"}},
			{"read unmapped path", req{reader, "GET", "/api/secret", "", 403, ""}},
			{"admin may PUT settings", req{admin, "PUT", "/api/settings", `{"theme":"admin"}`, 200, ""}},
			{"admin may install a plugin", req{admin, "POST", "/api/plugins/y", "{}", 200, ""}},
			{"admin unmapped path", req{admin, "GET", "/api/secret", "", 403, ""}},
			{"admin unmapped method", req{admin, "DELETE", "/api/status", "", 403, ""}},
			{"admin method not on route", req{admin, "POST", "/api/conversations", "{}", 403, ""}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := len(h.seen(tc.path))
				args := append(devCurlArgs(tc.dev), "-X", tc.method)
				if tc.body != "" {
					args = append(args, "-H", "Content-Type: application/json", "--data-binary", tc.body)
				}
				r := h.curlDo(t, append(args, h.base()+tc.path)...)
				if r.status != tc.status {
					t.Fatalf("%s %s = %d %s (exit %d %s), want %d", tc.method, tc.path, r.status, r.body, r.exit, r.stderr, tc.status)
				}
				seen := h.seen(tc.path)[before:]
				if tc.status != 200 {
					if len(seen) != 0 {
						t.Errorf("the agent saw the refused request: %+v", seen)
					}
					var e struct{ Code, Capability string }
					json.Unmarshal(r.body, &e)
					if e.Code != "forbidden" || e.Capability != tc.cap {
						t.Errorf("403 body = %s, want code forbidden, capability %q", r.body, tc.cap)
					}
					return
				}
				want := "device:" + filepath.Base(tc.dev)
				if len(seen) != 1 || seen[0].Principal != want || seen[0].Method != tc.method {
					t.Errorf("agent saw %+v, want one %s from %s", seen, tc.method, want)
				}
			})
		}
	})

	t.Run("spoofed identity headers never reach the agent", func(t *testing.T) {
		forged := []string{"-H", "X-Hearth-Principal: device:admin", "-H", "X-Hearth-Method: local", "-H", "x-hearth-capabilities: hearth:admin"}
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"direct HTTP/1.1", append([]string{"--http1.1"}, forged...)},
			{"direct HTTP/2", append([]string{"--http2"}, forged...)},
			{"hop-by-hop via Connection", append([]string{"--http1.1", "-H", "Connection: keep-alive, X-Hearth-Principal, X-Hearth-Method, X-Hearth-Capabilities"}, forged...)},
			{"Connection only, no forged values", []string{"--http1.1", "-H", "Connection: X-Hearth-Principal"}},
			{"repeated header", append([]string{"--http1.1", "-H", "X-Hearth-Principal: user:alice"}, forged...)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/api/conversations/spoof-" + strings.NewReplacer(" ", "-", "/", "").Replace(tc.name)
				r := h.curlDo(t, append(append(devCurlArgs(reader), tc.args...), h.base()+path)...)
				if r.status != http.StatusOK {
					t.Fatalf("GET %s = %d %s (%s)", path, r.status, r.body, r.stderr)
				}
				seen := h.seen(path)
				if len(seen) != 1 {
					t.Fatalf("agent saw %+v, want one request", seen)
				}
				s := seen[0]
				if s.Principal != "device:reader" || s.AuthMethod != "device" || strings.Contains(s.Capabilities, "hearth:admin") || strings.Contains(s.Capabilities, "settings:modify") {
					t.Errorf("agent saw identity %+v, want device:reader via device with system:read only", s)
				}
			})
		}
		// Without a certificate, forged headers authenticate nobody.
		r := h.curlDo(t, append(forged, h.base()+"/api/conversations/spoof-anon")...)
		if r.status != http.StatusUnauthorized || len(h.seen("/api/conversations/spoof-anon")) != 0 {
			t.Errorf("anonymous request with forged identity = %d, agent saw %d; want 401 and nothing", r.status, len(h.seen("/api/conversations/spoof-anon")))
		}
	})

	t.Run("curl/path normalisation attacks never reach a route the device lacks", func(t *testing.T) {
		// system:read may use status and conversations; every target below
		// means settings or plugins, which it lacks. curl --path-as-is
		// sends each path byte for byte.
		for _, tc := range []struct{ name, method, path string }{
			{"dot-dot", "GET", "/api/status/../settings"},
			{"dot-dot from an allowed prefix", "GET", "/api/conversations/../settings"},
			{"encoded dots", "GET", "/api/conversations/%2e%2e/settings"},
			{"mixed-case encoded dots", "GET", "/api/conversations/%2E%2e/settings"},
			{"encoded slash", "GET", "/api/conversations/..%2fsettings"},
			{"encoded slash upper", "GET", "/api/conversations%2F..%2F..%2Fapi%2Fsettings"},
			{"double slash", "GET", "//api/settings"},
			{"double slash inside", "GET", "/api//settings"},
			{"dot segment", "GET", "/api/./settings"},
			{"semicolon", "GET", "/api/settings;jsessionid=1"},
			{"semicolon dot-dot", "GET", "/api/conversations/..;/settings"},
			{"backslash", "GET", "/api/conversations/..\\settings"},
			{"encoded backslash", "GET", "/api/conversations/..%5csettings"},
			{"NUL", "GET", "/api/conversations/%00/../../settings"},
			{"double encoding", "GET", "/api/conversations/%252e%252e/settings"},
			{"upper case", "GET", "/API/SETTINGS"},
			{"plugin dot-dot", "POST", "/api/conversations/../plugins/evil"},
			{"plugin encoded", "POST", "/api/conversations/%2e%2e/plugins/evil"},
			{"trailing dot", "GET", "/api/settings/."},
			{"trailing slash", "GET", "/api/settings/"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := len(h.agent.Seen())
				r := h.curlDo(t, append(devCurlArgs(reader), "--path-as-is", "-X", tc.method, h.base()+tc.path)...)
				if r.exit != 0 {
					t.Fatalf("curl %s: exit %d %s", tc.path, r.exit, r.stderr)
				}
				for _, s := range h.agent.Seen()[before:] {
					p := strings.ToLower(path.Clean(strings.ReplaceAll(s.Path, "\\", "/")))
					if strings.HasPrefix(p, "/api/settings") || strings.HasPrefix(p, "/api/plugins") {
						t.Errorf("%s %s reached the agent as %q (status %d)", tc.method, tc.path, s.Path, r.status)
					}
				}
				if r.status == http.StatusOK && len(h.agent.Seen()) == before {
					t.Errorf("%s %s = 200 but the agent saw nothing", tc.method, tc.path)
				}
				t.Logf("%s %s → %d", tc.method, tc.path, r.status)
			})
		}
	})

	t.Run("curl/a 200 KiB header is 431 and a 2 MiB body 413", func(t *testing.T) {
		tmp := t.TempDir()
		hdr := filepath.Join(tmp, "hdr")
		if err := os.WriteFile(hdr, []byte("X-Big: "+strings.Repeat("a", 200<<10)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		body := filepath.Join(tmp, "body")
		if err := os.WriteFile(body, []byte(`{"x":"`+strings.Repeat("b", 2<<20)+`"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		before := len(h.agent.Seen())
		for _, proto := range []string{"--http1.1", "--http2"} {
			// Over HTTP/2, Go's HPACK decoder may reject so long a field
			// with a connection error (RFC 7541 §4.1 bounds the header
			// list) instead of a 431: refused either way.
			if r := h.curlDo(t, append(devCurlArgs(admin), proto, "-H", "@"+hdr, h.base()+"/api/status")...); r.status != http.StatusRequestHeaderFieldsTooLarge && (proto != "--http2" || r.status != 0 || r.exit == 0) {
				t.Errorf("%s 200 KiB header = %d (exit %d %s), want 431", proto, r.status, r.exit, r.stderr)
			}
			if r := h.curlDo(t, append(devCurlArgs(admin), proto, "-X", "PUT", "--data-binary", "@"+body, h.base()+"/api/settings")...); r.status != http.StatusRequestEntityTooLarge {
				t.Errorf("%s 2 MiB body = %d %s (exit %d %s), want 413", proto, r.status, r.body, r.exit, r.stderr)
			}
		}
		if n := len(h.agent.Seen()) - before; n != 0 {
			t.Errorf("the agent saw %d oversized requests", n)
		}
	})

	t.Run("whoami", func(t *testing.T) {
		for _, tc := range []struct {
			dev          string
			want, absent []string
		}{
			{reader, []string{"status", "conversations:read"}, []string{"settings:modify", "plugins:install", "hearth:admin"}},
			{admin, []string{"status", "conversations:read", "settings:modify", "plugins:install", "hearth:admin"}, nil},
		} {
			name := filepath.Base(tc.dev)
			r := h.curlDo(t, append(devCurlArgs(tc.dev), h.base()+"/.hearth/v1/whoami")...)
			var w struct {
				Principal, Kind, Method, Zone string
				Capabilities                  []string
			}
			if r.status != 200 || json.Unmarshal(r.body, &w) != nil {
				t.Fatalf("whoami as %s = %d %s", name, r.status, r.body)
			}
			if w.Principal != "device:"+name || w.Kind != "device" || w.Method != "device" || w.Zone != "lan" {
				t.Errorf("whoami as %s = %+v, want device:%s, device, lan (loopback is a trusted network)", name, w, name)
			}
			for _, c := range tc.want {
				if !slices.Contains(w.Capabilities, c) {
					t.Errorf("whoami as %s: capabilities %v lack %s", name, w.Capabilities, c)
				}
			}
			for _, c := range tc.absent {
				if slices.Contains(w.Capabilities, c) {
					t.Errorf("whoami as %s: capabilities %v include %s", name, w.Capabilities, c)
				}
			}
		}
		// X-Forwarded-For from the client never changes the zone.
		r := h.curlDo(t, append(devCurlArgs(reader), "-H", "X-Forwarded-For: 203.0.113.9", h.base()+"/.hearth/v1/whoami")...)
		if !strings.Contains(string(r.body), `"zone":"lan"`) {
			t.Errorf("whoami with X-Forwarded-For: %s, want zone lan", r.body)
		}
		if r := h.curlDo(t, h.base()+"/.hearth/v1/whoami"); r.status != http.StatusUnauthorized {
			t.Errorf("whoami without credentials = %d, want 401", r.status)
		}
	})

	t.Run("authz explain against the running server", func(t *testing.T) {
		for _, tc := range []struct {
			principal, capability, verdict, reason string
			exit                                   bool // true: exit 0
			flags                                  []string
		}{
			{"device:reader", "plugins:install", "deny", "device:reader lacks plugins:install", false, nil},
			{"device:reader", "status", "allow", "", true, nil},
			{"device:admin", "plugins:install", "allow", "", true, nil},
			// The owner has everything, but not over a remote password token.
			{"user:alice", "plugins:install", "deny", "requires a device or local session", false, []string{"--via", "token", "--from", "remote"}},
			{"user:alice", "plugins:install", "allow", "", true, []string{"--via", "local"}},
		} {
			out, errOut, err := hearthCmd(t, h.dir, "", append([]string{"authz", "explain", tc.principal, tc.capability}, tc.flags...)...)
			if (err == nil) != tc.exit {
				t.Errorf("authz explain %s %s: err = %v, want success %v\n%s%s", tc.principal, tc.capability, err, tc.exit, out, errOut)
			}
			lines := strings.Split(out, "\n")
			if lines[0] != tc.verdict || len(lines) < 2 || !strings.Contains(lines[1], tc.reason) {
				t.Errorf("authz explain %s %s =\n%s\nwant %q then a reason with %q", tc.principal, tc.capability, out, tc.verdict, tc.reason)
			}
		}
		// A principal the server does not know cannot be explained (exit 2).
		_, errOut, err := hearthCmd(t, h.dir, "", "authz", "explain", "device:nosuch", "status")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("authz explain device:nosuch: %v %s, want exit 2", err, errOut)
		}
	})

	t.Run("websocket echoes and closes on revocation", func(t *testing.T) {
		wsdev := h.enroll(t, "wsdev", "system:read")
		cfg := deviceTLS(t, wsdev)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Without a certificate the upgrade is refused like any request.
		anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs}}}
		if c, resp, err := websocket.Dial(ctx, "wss://"+gw+"/ws", &websocket.DialOptions{HTTPClient: anon}); err == nil {
			c.CloseNow()
			t.Error("websocket without a certificate was accepted")
		} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("websocket without a certificate: %v, want 401", err)
		}
		c, _, err := websocket.Dial(ctx, "wss://"+gw+"/ws", &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatalf("websocket dial: %v", err)
		}
		defer c.CloseNow()
		for i := range 3 {
			msg := fmt.Sprintf("hello %d", i)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(got) != msg {
				t.Fatalf("echo = %v %q %v, want %q", typ, got, err, msg)
			}
		}
		if s := h.seen("/ws"); len(s) != 1 || s[0].Principal != "device:wsdev" {
			t.Errorf("agent saw %+v, want one /ws upgrade from device:wsdev", s)
		}
		mustHearth(t, h.dir, "device", "revoke", "wsdev")
		revoked := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		_, _, err = c.Read(rctx)
		took := time.Since(revoked)
		if err == nil || rctx.Err() != nil || took > 5*time.Second {
			t.Errorf("open websocket after revocation: read = %v after %v, want closed within 5s", err, took)
		}
		t.Logf("websocket closed %v after revocation: %v", took.Round(time.Millisecond), err)
		// And a new upgrade is refused.
		if c2, resp, err := websocket.Dial(ctx, "wss://"+gw+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}); err == nil {
			c2.CloseNow()
			t.Error("a revoked device opened a new websocket")
		} else if resp != nil && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			t.Errorf("websocket after revocation: %d, want 401 or 403", resp.StatusCode)
		}
	})

	t.Run("step CLI enrolls against the binary's CA", func(t *testing.T) {
		work := t.TempDir()
		env := []string{"STEPPATH=" + filepath.Join(work, "steppath"), "HOME=" + work}
		caURL := "https://" + h.srv.ca
		if out, code := runTool(t, work, "", env, step, "ca", "bootstrap", "--ca-url", caURL, "--fingerprint", h.fingerprint); code != 0 {
			t.Fatalf("step ca bootstrap: exit %d\n%s", code, out)
		}
		var tok struct{ Token string }
		if err := json.Unmarshal([]byte(mustHearth(t, h.dir, "device", "add", "stepdev", "--caps", "system:read", "--json")), &tok); err != nil {
			t.Fatal(err)
		}
		if out, code := runTool(t, work, "", env, step, "ca", "certificate", "stepdev", "stepdev.crt", "stepdev.key", "--token", tok.Token); code != 0 {
			t.Fatalf("step ca certificate: exit %d\n%s", code, out)
		}
		crt := readPEMCert(t, filepath.Join(work, "stepdev.crt"))
		if len(crt.URIs) != 1 || !strings.HasSuffix(crt.URIs[0].String(), "/device/stepdev") || len(crt.DNSNames) != 0 {
			t.Errorf("step's certificate names URIs %v DNS %v, want only the device's SPIFFE ID", crt.URIs, crt.DNSNames)
		}
		r := h.curlDo(t, "--cert", filepath.Join(work, "stepdev.crt"), "--key", filepath.Join(work, "stepdev.key"), h.base()+"/api/conversations/by-step")
		if r.status != http.StatusOK {
			t.Fatalf("curl with step's certificate = %d %s (exit %d %s), want 200", r.status, r.body, r.exit, r.stderr)
		}
		if s := h.seen("/api/conversations/by-step"); len(s) != 1 || s[0].Principal != "device:stepdev" {
			t.Errorf("agent saw %+v, want device:stepdev", s)
		}
		// The token was single-use for step as well.
		if out, code := runTool(t, work, "", env, step, "ca", "certificate", "stepdev", "again.crt", "again.key", "--token", tok.Token); code == 0 {
			t.Errorf("step ca certificate reused the token:\n%s", out)
		}
		// step renews over mTLS with the binary's CA; the renewed
		// certificate works, and after `hearth device revoke` neither it
		// nor a further renewal does.
		if out, code := runTool(t, work, "", env, step, "ca", "renew", "stepdev.crt", "stepdev.key", "--force"); code != 0 {
			t.Fatalf("step ca renew: exit %d\n%s", code, out)
		}
		if renewed := readPEMCert(t, filepath.Join(work, "stepdev.crt")); renewed.SerialNumber.Cmp(crt.SerialNumber) == 0 {
			t.Error("step ca renew left the certificate unchanged")
		}
		certArgs := []string{"--cert", filepath.Join(work, "stepdev.crt"), "--key", filepath.Join(work, "stepdev.key")}
		if r := h.curlDo(t, append(certArgs, h.base()+"/api/conversations/by-step-renewed")...); r.status != http.StatusOK {
			t.Errorf("curl with step's renewed certificate = %d %s", r.status, r.body)
		}
		mustHearth(t, h.dir, "device", "revoke", "stepdev")
		if r := h.curlDo(t, append(certArgs, h.base()+"/api/conversations/by-step-revoked")...); r.status != http.StatusUnauthorized && r.status != http.StatusForbidden {
			t.Errorf("curl with a revoked device's certificate = %d (exit %d), want 401 or 403", r.status, r.exit)
		}
		if s := h.seen("/api/conversations/by-step-revoked"); len(s) != 0 {
			t.Errorf("agent saw a revoked device: %+v", s)
		}
		if out, code := runTool(t, work, "", env, step, "ca", "renew", "stepdev.crt", "stepdev.key", "--force"); code == 0 {
			t.Errorf("step ca renew of a revoked device succeeded:\n%s", out)
		}
	})

	t.Run("openssl/resumed TLS session refused after revocation", func(t *testing.T) {
		dev := h.enroll(t, "resumer", "system:read")
		tmp := t.TempDir()
		// s_client resumes with a TLS 1.3 ticket (RFC 8446 §2.2): the
		// client certificate is not sent again, so the gateway must look
		// the device up from what the ticket remembers, per request.
		get := func(path, sessIn, sessOut string) string {
			t.Helper()
			args := []string{"s_client", "-connect", gw, "-tls1_3", "-CAfile", h.rootFile, "-ign_eof",
				"-cert", filepath.Join(dev, "device.crt"), "-cert_chain", filepath.Join(dev, "device.crt"),
				"-key", filepath.Join(dev, "device.key"), "-sess_out", filepath.Join(tmp, sessOut)}
			if sessIn != "" {
				args = append(args, "-sess_in", filepath.Join(tmp, sessIn))
			}
			out, _ := runTool(t, "", "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", nil, openssl, args...)
			return out
		}
		if out := get("/api/conversations/resume-0", "", "s0"); !strings.Contains(out, "HTTP/1.1 200") || !strings.Contains(out, "New, TLSv1.3") {
			t.Fatalf("full handshake: want New, TLSv1.3 and 200:\n%s", out)
		}
		if out := get("/api/conversations/resume-1", "s0", "s1"); !strings.Contains(out, "Reused, TLSv1.3") || !strings.Contains(out, "HTTP/1.1 200") {
			t.Fatalf("resumed session before revocation: want Reused, TLSv1.3 and 200:\n%s", out)
		}
		mustHearth(t, h.dir, "device", "revoke", "resumer")
		out := get("/api/conversations/resume-2", "s1", "s2")
		if !strings.Contains(out, "Reused, TLSv1.3") {
			t.Errorf("the session was not resumed, so this checks nothing:\n%s", out)
		}
		if !strings.Contains(out, "HTTP/1.1 401") && !strings.Contains(out, "HTTP/1.1 403") {
			t.Errorf("resumed session after revocation: want 401 or 403:\n%s", out)
		}
		if s := h.seen("/api/conversations/resume-2"); len(s) != 0 {
			t.Errorf("the agent saw a revoked device's request over a resumed session: %+v", s)
		}
		if s := h.seen("/api/conversations/resume-1"); len(s) != 1 || s[0].Principal != "device:resumer" {
			t.Errorf("agent saw %+v for the resumed request, want device:resumer", s)
		}
	})

	t.Run("HTTP/2: revocation refuses the next request on the same connection", func(t *testing.T) {
		dev := h.enroll(t, "h2dev", "system:read")
		var conns atomic.Int32
		tr := &http.Transport{TLSClientConfig: deviceTLS(t, dev), ForceAttemptHTTP2: true, MaxConnsPerHost: 1,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conns.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		get := func(path string) (int, string) {
			t.Helper()
			resp, err := hc.Get(h.base() + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			return resp.StatusCode, resp.Proto
		}
		if st, proto := get("/api/conversations/h2-before"); st != http.StatusOK || proto != "HTTP/2.0" {
			t.Fatalf("before revocation: %d %s, want 200 over HTTP/2.0", st, proto)
		}
		mustHearth(t, h.dir, "device", "revoke", "h2dev")
		if st, _ := get("/api/conversations/h2-after"); st != http.StatusUnauthorized && st != http.StatusForbidden {
			t.Errorf("after revocation: %d, want 401 or 403", st)
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections, want both requests on one HTTP/2 connection", n)
		}
		if s := h.seen("/api/conversations/h2-after"); len(s) != 0 {
			t.Errorf("agent saw %+v", s)
		}
	})

	t.Run("openssl/certificates from hearth's own intermediate that hearth did not issue", func(t *testing.T) {
		// Made with the data dir's intermediate key, as if by someone who
		// copied it: the gateway checks the clientAuth EKU in the
		// handshake, and then that this very certificate is one hearth
		// issued to a device on record, so even a well-formed one is 401.
		caDir := filepath.Join(h.dir, "ca")
		td := readPEMCert(t, filepath.Join(reader, "device.crt")).URIs[0]
		trust := td.Scheme + "://" + td.Host
		for _, tc := range []struct{ name, uri, ext string }{
			{"well-formed, never issued by hearth", trust + "/device/reader", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"},
			{"serverAuth only", trust + "/device/reader", "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"},
			{"no EKU", trust + "/device/reader", "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"},
			{"a CA", trust + "/device/reader", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyCertSign\nbasicConstraints=critical,CA:TRUE\n"},
			{"device never added", trust + "/device/ghost", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"},
			{"another trust domain", "spiffe://elsewhere.example/device/reader", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tmp := t.TempDir()
				if err := os.WriteFile(filepath.Join(tmp, "ext.cnf"), []byte("subjectAltName=URI:"+tc.uri+"\n"+tc.ext), 0o600); err != nil {
					t.Fatal(err)
				}
				for _, args := range [][]string{
					{"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=minted"},
					{"x509", "-req", "-in", "leaf.csr", "-CA", filepath.Join(caDir, "intermediate_ca.crt"), "-CAkey", filepath.Join(caDir, "intermediate_ca.key"),
						"-set_serial", "777", "-days", "1", "-extfile", "ext.cnf", "-out", "leaf.crt"},
				} {
					if out, code := runTool(t, tmp, "", nil, openssl, args...); code != 0 {
						t.Fatalf("openssl %v: exit %d\n%s", args, code, out)
					}
				}
				chain, err := os.ReadFile(filepath.Join(tmp, "leaf.crt"))
				if err != nil {
					t.Fatal(err)
				}
				inter, err := os.ReadFile(filepath.Join(caDir, "intermediate_ca.crt"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(tmp, "chain.crt"), append(chain, inter...), 0o600); err != nil {
					t.Fatal(err)
				}
				path := "/api/conversations/minted-" + strings.ReplaceAll(tc.name, " ", "-")
				r := h.curlDo(t, "--cert", filepath.Join(tmp, "chain.crt"), "--key", filepath.Join(tmp, "leaf.key"), h.base()+path)
				if r.status != 0 && r.status != http.StatusUnauthorized {
					t.Errorf("%s: %d %s, want a refused handshake or 401", tc.name, r.status, r.body)
				}
				if s := h.seen(path); len(s) != 0 {
					t.Errorf("agent saw %+v", s)
				}
			})
		}
	})

	// The two slow ones (argon2 under -race, a 5 s event stream) overlap.
	t.Run("slow", func(t *testing.T) {
		t.Run("slow clients are cut off", func(t *testing.T) {
			t.Parallel()
			// A client that never finishes its handshake, and one that
			// never finishes its headers, are both closed by the server
			// (mtls.DefaultReadHeaderTimeout, 10s), not held forever.
			const limit = 20 * time.Second
			for _, tc := range []struct {
				name string
				dial func() (net.Conn, error)
			}{
				{"TCP, no TLS handshake", func() (net.Conn, error) { return net.Dial("tcp", gw) }},
				{"TLS, half a request", func() (net.Conn, error) {
					c, err := tls.Dial("tcp", gw, deviceTLS(t, reader))
					if err == nil {
						_, err = io.WriteString(c, "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
					}
					return c, err
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					start := time.Now()
					c, err := tc.dial()
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.SetReadDeadline(start.Add(limit))
					_, err = io.Copy(io.Discard, c)
					took := time.Since(start)
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Errorf("the server still held the connection after %v", limit)
					} else if took < 2*time.Second {
						t.Errorf("closed after %v (%v): refused at once, so no timeout was exercised", took, err)
					}
					t.Logf("closed after %v (%v)", time.Since(start).Round(100*time.Millisecond), err)
				})
			}
		})
		t.Run("curl/password spraying is throttled per client address", func(t *testing.T) {
			t.Parallel()
			// Ten attempts per address (auth.DefaultClientBurst), across
			// accounts, then 429 with Retry-After; devices keep working.
			// The bucket refills one attempt every auth.DefaultClientRefill,
			// so a slow machine (-race) may see a few more 401s first.
			start := time.Now()
			unauthorized := 0
			var throttled curlResult
			for i := 0; i < auth.DefaultClientBurst+10 && throttled.status == 0; i++ {
				body := fmt.Sprintf(`{"username":"spray-%d","password":"not the password of anyone"}`, i)
				r := h.curlDo(t, "-H", "Content-Type: application/json", "--data-binary", body, h.base()+"/.hearth/v1/auth/login")
				switch r.status {
				case http.StatusUnauthorized:
					unauthorized++
				case http.StatusTooManyRequests:
					throttled = r
				default:
					t.Fatalf("spraying attempt %d = %d %s, want 401 or 429", i, r.status, r.body)
				}
			}
			refilled := int(time.Since(start) / auth.DefaultClientRefill)
			if throttled.status == 0 || unauthorized < auth.DefaultClientBurst || unauthorized > auth.DefaultClientBurst+refilled {
				t.Errorf("%d attempts answered 401 before the first 429 (429 seen: %v), want %d (+%d refilled)", unauthorized, throttled.status != 0, auth.DefaultClientBurst, refilled)
			}
			if ra := throttled.header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("429 Retry-After = %q, want a positive number of seconds", ra)
			}
			if r := h.curlDo(t, append(devCurlArgs(reader), h.base()+"/api/status")...); r.status != http.StatusOK {
				t.Errorf("device while its address is throttled for logins = %d, want 200", r.status)
			}
		})

		t.Run("curl/server-sent events are flushed as they come", func(t *testing.T) {
			t.Parallel()
			// The sample agent sends one event a second, five in all: the
			// first must reach curl long before the stream ends.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"-sS", "-N", "--http2", "--cacert", h.rootFile}, devCurlArgs(reader)...)
			cmd := exec.CommandContext(ctx, h.curl, append(args, h.base()+"/api/events")...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			var at []time.Duration
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data: tick") {
					at = append(at, time.Since(start))
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("curl -N /api/events: %v", err)
			}
			if len(at) != 5 {
				t.Fatalf("got %d events, want 5", len(at))
			}
			if gap := at[4] - at[0]; gap < 3*time.Second {
				t.Errorf("events arrived %v apart: buffered until the end, not flushed (%v)", gap, at)
			}
		})
	})

	h.stop(t)
}

// deviceTLS is a TLS client config presenting devDir's certificate and
// trusting only hearth's root.
func deviceTLS(t *testing.T, devDir string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(devDir, "device.crt"), filepath.Join(devDir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(devDir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root.crt holds no certificate")
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
}

// foreignCA is a CA made with openssl, outside hearth, and optionally a
// client certificate it issued.
type foreignCA struct {
	caCert            string // PEM
	leafFile, keyFile string
}

// foreignPEM makes a self-signed P-256 CA with subject (openssl's
// "/CN=…" form) in dir; with uri, it also issues a clientAuth certificate
// whose only SAN is that URI.
func foreignPEM(t *testing.T, openssl, dir, subject, uri string) foreignCA {
	t.Helper()
	if !strings.HasPrefix(subject, "/") {
		subject = "/" + subject
	}
	run := func(args ...string) {
		t.Helper()
		if out, code := runTool(t, dir, "", nil, openssl, args...); code != 0 {
			t.Fatalf("openssl %v: exit %d\n%s", args, code, out)
		}
	}
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", "ca.key", "-out", "ca.crt", "-subj", subject, "-days", "2",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	b, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	f := foreignCA{caCert: string(b)}
	if uri == "" {
		return f
	}
	ext := "subjectAltName=URI:" + uri + "\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
	if err := os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=foreign-device")
	run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "4242",
		"-days", "1", "-extfile", "ext.cnf", "-out", "leaf.crt")
	f.leafFile, f.keyFile = filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
	return f
}
