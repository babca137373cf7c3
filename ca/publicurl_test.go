package ca

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// TestEnrollTokenNamesPublicHost: the CA URL a device is told (`step ca
// bootstrap --ca-url`) is on the public URL's host, not the first name of
// the gateway certificate.
func TestEnrollTokenNamesPublicHost(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Name: "test", Hosts: []string{"first.test", "hearth.home.arpa"}}); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pol, _ := authz.New(authz.Config{})
	for _, tc := range []struct{ public, wantURL, wantCA string }{
		{"https://hearth.home.arpa:8443", "https://hearth.home.arpa:8443", "https://hearth.home.arpa:9443"},
		{"", "https://first.test:8443", "https://first.test:9443"},
	} {
		c, err := Open(dir, Config{Listen: ":9443"}, Options{Store: boltstore.New(db), Policy: pol, PublicURL: tc.public})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.AddDevice(context.Background(), "pi-"+strings.TrimPrefix(strings.Split(tc.wantCA, ".")[0], "https://"), []string{"status"}, time.Minute, time.Hour)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if tok.URL != tc.wantURL || tok.CAURL != tc.wantCA {
			t.Errorf("public URL %q: token URL %q, CA URL %q; want %q, %q", tc.public, tok.URL, tok.CAURL, tc.wantURL, tc.wantCA)
		}
	}
}
