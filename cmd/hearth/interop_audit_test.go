package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
)

// TestAuditTilesThroughGateway: filippo.io/torchwood reads a running
// hearth's audit log over its mTLS gateway, as an enrolled device would:
// the checkpoint verifies with the key `hearth init` made and its origin
// (<trust domain>/audit/<random>), every tile is fetched and authenticated,
// an entry's inclusion proof checks. Without a certificate the tiles are
// refused (entries are private).
func TestAuditTilesThroughGateway(t *testing.T) {
	h := startInteropHearth(t, nil)
	defer h.stop(t)
	dev := h.enroll(t, "auditor", "system:read")
	hc, _ := deviceClient(t, dev)
	for range 20 { // some decisions in the log
		resp, err := hc.Get(h.base() + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	prefix := h.base() + "/.hearth/v1/audit/"
	resp, err := hc.Get(prefix + "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	signed, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	vkey, err := os.ReadFile(filepath.Join(h.dir, "audit", audit.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.ParseVerifierKey(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.Name(), "hearth.home.arpa/audit/") {
		t.Errorf("origin %q is not <trust domain>/audit/<id>", v.Name())
	}
	c, _, err := torchwood.VerifyCheckpoint(signed, torchwood.ThresholdPolicy(2, torchwood.OriginPolicy(v.Name()), torchwood.SingleVerifierPolicy(v)))
	if err != nil {
		t.Fatalf("torchwood refuses the served checkpoint: %v\n%s", err, signed)
	}
	fetcher, err := torchwood.NewTileFetcher(prefix, torchwood.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	client, err := torchwood.NewClient(fetcher)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := int64(0)
	decisions := 0
	for i, e := range client.AllEntries(ctx, c.Tree, 0) {
		en, err := audit.ParseEntry(e)
		if err != nil || en.Index != i {
			t.Fatalf("entry %d: %s, %v", i, e, err)
		}
		if en.Name == audit.EventAuthzDecision && en.Principal == "device:auditor" {
			decisions++
		}
		n++
	}
	if err := client.Err(); err != nil || n != c.N || decisions < 20 {
		t.Fatalf("read %d of %d entries (%d decisions of the device): %v", n, c.N, decisions, err)
	}
	entry, proof, err := client.Entry(ctx, c.Tree, c.N-1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(proof, c.N, c.Hash, c.N-1, tlog.RecordHash(entry)); err != nil {
		t.Fatalf("inclusion of the last entry: %v", err)
	}

	// No certificate, no tiles.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: deviceTLSNoCert(t, dev)}}
	resp, err = anon.Get(prefix + "tile/entries/000.p/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("tile without a certificate: %d, want 401", resp.StatusCode)
	}
}

// deviceTLSNoCert trusts hearth's root but presents no certificate.
func deviceTLSNoCert(t *testing.T, devDir string) *tls.Config {
	cfg := deviceTLS(t, devDir)
	cfg.Certificates = nil
	cfg.ServerName = "localhost"
	return cfg
}
