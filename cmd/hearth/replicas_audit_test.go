package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/admin"
)

// socketClient is an HTTP client of the admin socket of data dir dir
// (the local principal: hearth:admin).
func socketClient(dir string) *http.Client {
	sock := admin.SocketPath(dir)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// TestReplicasAuditReads: with the store on PostgreSQL, an admin reads the
// one history both replicas wrote through either replica's admin socket —
// the admin audit endpoint (filters, bounds, JSON errors) and the web UI's
// audit page — and the answers match `hearth audit export --store-dsn`.
func TestReplicasAuditReads(t *testing.T) {
	rs := newReplicaSet(t, 2, nil)
	rs.startAll(t)
	rs.addDevice(t, 0, "from-a", "system:read")
	tok := rs.addDevice(t, 1, "from-b", "system:read")
	cert := rs.enroll(t, 1, tok)
	exported := rs.auditEntries(t, audit.EventDeviceAdd)
	var want []string
	for _, e := range exported {
		want = append(want, fmt.Sprintf("%v %v", e["index"], e["resource"]))
	}
	if len(want) != 2 {
		t.Fatalf("the export holds %d device.add entries, want 2: %v", len(want), exported)
	}
	// hearth.yaml names no store (--store-dsn did): backup asks the
	// server before it reads a passphrase. With none on standard input it
	// used to stop at "the passphrase must have at least 15 characters".
	for i, d := range rs.dirs {
		out := filepath.Join(t.TempDir(), "b.age")
		_, errOut, err := hearthCmd(t, d, "", "backup", "--out", out)
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("hearth backup on replica %d wrote %s", i, out)
		}
		if err == nil || !strings.Contains(errOut, "pg_dump") || strings.Contains(errOut, "passphrase must") {
			t.Errorf("hearth backup on replica %d without a passphrase: %v %q, want the PostgreSQL refusal naming pg_dump first", i, err, errOut)
		}
	}
	// Through the gateway: an enrolled device without hearth:admin is
	// refused the entries, and gets the proofs any device gets.
	dev := rs.client(&cert)
	for i, s := range rs.srvs {
		if st, body := do(dev, http.MethodGet, "https://"+s.gateway+audit.AdminPath, "", nil); st != http.StatusForbidden {
			t.Errorf("replica %d: a system:read device GET %s = %d %s, want 403", i, audit.AdminPath, st, body)
		}
		st, body := do(dev, http.MethodGet, "https://"+s.gateway+audit.ProofPath+"?old=1&size=2", "", nil)
		if _, err := audit.ParseConsistencyProof(body); st != http.StatusOK || err != nil {
			t.Errorf("replica %d: GET %s?old=1&size=2 = %d %s (%v)", i, audit.ProofPath, st, body, err)
		}
	}
	for i, d := range rs.dirs {
		c := socketClient(d)
		st, body := do(c, http.MethodGet, "http://hearth"+audit.AdminPath+"?event=device.add&n=1000", "", nil)
		if st != http.StatusOK {
			t.Fatalf("replica %d: GET %s = %d %s", i, audit.AdminPath, st, body)
		}
		var ae audit.AdminEntries
		if err := json.Unmarshal(body, &ae); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ae.Entries {
			got = append(got, fmt.Sprintf("%d %s", e.Index, e.Resource))
		}
		if !slices.Equal(got, want) {
			t.Errorf("replica %d: device.add entries %v, the export has %v", i, got, want)
		}
		v, err := audit.LoadVerifier(d)
		if err != nil {
			t.Fatal(err)
		}
		if cp, _, err := torchwood.VerifyCheckpoint([]byte(ae.Checkpoint), torchwood.ThresholdPolicy(2, torchwood.OriginPolicy(v.Name()), torchwood.SingleVerifierPolicy(v))); err != nil || cp.N != ae.Size || ae.Size <= ae.Entries[1].Index {
			t.Errorf("replica %d: checkpoint %v (size %d, answer's %d): %v", i, cp, cp.N, ae.Size, err)
		}
		st, body = do(c, http.MethodGet, "http://hearth"+audit.AdminPath+"?n=1001", "", nil)
		var je struct{ Error, Code string }
		if json.Unmarshal(body, &je); st != http.StatusBadRequest || je.Code != "bad_request" {
			t.Errorf("replica %d: n=1001 = %d %s, want 400 bad_request", i, st, body)
		}
		// The web UI's audit page lists both replicas' entries.
		st, body = do(c, http.MethodGet, "http://hearth/.hearth/ui/audit?event=device.add", "", nil)
		if st != http.StatusOK {
			t.Fatalf("replica %d: the audit page = %d %s", i, st, body)
		}
		for _, e := range ae.Entries {
			row := fmt.Sprintf(`<td class="idx">%d</td>`, e.Index)
			if !strings.Contains(string(body), row) || !strings.Contains(string(body), html.EscapeString(e.Resource)) {
				t.Errorf("replica %d: the audit page does not list entry %d (%s):\n%s", i, e.Index, e.Resource, body)
			}
		}
	}
}
