package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// userServer serves auth's admin API on a real admin socket in a temp data
// dir, as `hearth serve` does, and auth's public API on loopback TLS.
func userServer(t *testing.T) (dir string, svc *auth.Service, gw *httptest.Server) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hearth-user") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	db, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err = auth.Open(boltstore.New(db), auth.Config{Argon2: auth.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := admin.Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: svc.AdminHandler()}
	go srv.Serve(l)
	mux := http.NewServeMux()
	mux.Handle("/.hearth/v1/auth/", svc.Handler())
	gw = httptest.NewTLSServer(mux)
	mux.HandleFunc("/.hearth/v1/roots.pem", func(w http.ResponseWriter, r *http.Request) {
		pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: gw.Certificate().Raw})
	})
	t.Cleanup(func() {
		gw.Close()
		srv.Close()
		svc.Close()
		db.Close()
	})
	return dir, svc, gw
}

func runCmd(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestUserCommands(t *testing.T) {
	dir, _, gw := userServer(t)
	pw := "a long passphrase of words"
	out, _, err := runCmd(t, pw+"\n", "user", "add", "bob", "--caps", "system:read", "--dir", dir)
	if err != nil || !strings.Contains(out, "added user bob") {
		t.Fatalf("user add = %q, %v", out, err)
	}
	if _, _, err := runCmd(t, "short\n", "user", "add", "carl", "--caps", "status", "--dir", dir); err == nil || !strings.Contains(err.Error(), "at least 15") {
		t.Errorf("user add with a short password: %v, want the length rule named", err)
	}
	if _, _, err := runCmd(t, pw+"\n", "user", "add", "bob", "--caps", "status", "--dir", dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("user add twice: %v", err)
	}
	out, _, err = runCmd(t, "", "user", "add", "kid", "--caps", "status", "--no-password", "--dir", dir)
	if err != nil || !strings.Contains(out, auth.ResetCodePrefix) {
		t.Fatalf("user add --no-password = %q, %v", out, err)
	}
	// Log in through the gateway, pinning the root by fingerprint.
	sum := sha256.Sum256(gw.Certificate().Raw)
	fp := hex.EncodeToString(sum[:])
	out, _, err = runCmd(t, pw+"\n", "login", "--url", gw.URL, "--user", "bob", "--fingerprint", fp)
	if err != nil || !strings.HasPrefix(out, auth.AccessTokenPrefix) {
		t.Fatalf("login = %q, %v", out, err)
	}
	if _, _, err := runCmd(t, pw+"\n", "login", "--url", gw.URL, "--user", "bob", "--fingerprint", strings.Repeat("ab", 32)); err == nil {
		t.Error("login with a wrong fingerprint succeeded")
	}
	if _, _, err := runCmd(t, "wrong password!!\n", "login", "--url", gw.URL, "--user", "bob", "--fingerprint", fp); err == nil || !strings.Contains(err.Error(), "wrong") {
		t.Errorf("login with a wrong password: %v", err)
	}
	// The reset code printed by add lets kid choose a password.
	code := ""
	addOut, _, _ := runCmd(t, "", "user", "reset", "kid", "--dir", dir)
	for _, f := range strings.Fields(addOut) {
		if strings.HasPrefix(f, auth.ResetCodePrefix) {
			code = f
		}
	}
	caFile := filepath.Join(dir, "root.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gw.Certificate().Raw}), 0o600)
	out, _, err = runCmd(t, "kid's own long passphrase\n", "login", "--url", gw.URL, "--user", "kid", "--reset-code", code, "--ca-file", caFile, "--json")
	var sess struct {
		Token        string
		Capabilities []string
	}
	if err != nil || json.Unmarshal([]byte(out), &sess) != nil || sess.Token == "" {
		t.Fatalf("login --reset-code = %q, %v", out, err)
	}
	for i := 0; i < 5; i++ {
		runCmd(t, "wrong password!!\n", "login", "--url", gw.URL, "--user", "bob", "--ca-file", caFile)
	}
	out, _, err = runCmd(t, "", "user", "list", "--json", "--dir", dir)
	var us []auth.UserInfo
	if err != nil || json.Unmarshal([]byte(out), &us) != nil || len(us) != 2 || us[0].Name != "bob" || us[0].LockedUntil == nil {
		t.Fatalf("user list --json = %q, %v", out, err)
	}
	out, _, _ = runCmd(t, "", "user", "list", "--dir", dir)
	if !strings.Contains(out, "locked-until") {
		t.Errorf("user list = %q, want bob shown locked", out)
	}
	if out, _, err := runCmd(t, "", "user", "unlock", "bob", "--dir", dir); err != nil || !strings.Contains(out, "unlocked bob") {
		t.Errorf("user unlock = %q, %v", out, err)
	}
	out, _, err = runCmd(t, "", "user", "recovery-codes", "bob", "--dir", dir)
	if err != nil || strings.Count(out, "-") < 30 {
		t.Errorf("user recovery-codes = %q, %v", out, err)
	}
	newPw := "bob's brand new passphrase"
	if out, _, err := runCmd(t, pw+"\n"+newPw+"\n", "user", "passwd", "bob", "--dir", dir); err != nil || !strings.Contains(out, "changed") {
		t.Errorf("user passwd = %q, %v", out, err)
	}
	if _, _, err := runCmd(t, newPw+"\n", "login", "--url", gw.URL, "--user", "bob", "--ca-file", caFile); err != nil {
		t.Errorf("login with the new password: %v", err)
	}
	if _, _, err := runCmd(t, "", "user", "disable", "bob", "--dir", dir); err != nil {
		t.Errorf("user disable: %v", err)
	}
	out, _, err = runCmd(t, "", "user", "totp", "kid", "--dir", dir)
	if err == nil || !strings.Contains(out, "secret") {
		t.Errorf("user totp without a code on stdin = %q, %v; want the QR and secret, then a refusal", out, err)
	}
	if _, _, err := runCmd(t, "", "user", "unlock", "nobody", "--dir", dir); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("unlock unknown user: %v", err)
	}
	// Passkeys over the admin socket: listed, removed; none to add.
	if out, _, err := runCmd(t, "", "user", "passkeys", "kid", "--dir", dir); err != nil || !strings.Contains(out, "kid has no passkeys") {
		t.Errorf("user passkeys = %q, %v", out, err)
	}
	if out, _, err := runCmd(t, "", "user", "passkeys", "kid", "--remove-all", "--dir", dir); err != nil || !strings.Contains(out, "removed") {
		t.Errorf("user passkeys --remove-all = %q, %v", out, err)
	}
	if _, _, err := runCmd(t, "", "user", "passkeys", "kid", "--remove", "AAAA", "--dir", dir); err == nil || !strings.Contains(err.Error(), "no such passkey") {
		t.Errorf("user passkeys --remove of an unknown ID: %v, want it named", err)
	}
}

func TestUserCommandsWithoutServer(t *testing.T) {
	dir := t.TempDir()
	_, _, err := runCmd(t, "", "user", "list", "--dir", dir)
	var ee exitError
	if err == nil || !strings.Contains(err.Error(), "not running") || !asExit(err, &ee) || ee.code != 1 {
		t.Errorf("user list without a server: %v, want a one-line 'not running' exit 1", err)
	}
}

func asExit(err error, ee *exitError) bool {
	e, ok := err.(exitError)
	if ok {
		*ee = e
	}
	return ok
}

func TestUserAndLoginHelp(t *testing.T) {
	for _, args := range [][]string{{"user", "add"}, {"user", "passwd"}, {"user", "list"}, {"user", "unlock"}, {"user", "recovery-codes"}, {"user", "disable"}, {"user", "reset"}, {"user", "totp"}, {"login"}} {
		out, _, err := runCmd(t, "", append(args, "--help")...)
		if err != nil || !strings.Contains(out, "Examples:") {
			t.Errorf("%v --help = %v, lacks an example", args, err)
		}
	}
}
