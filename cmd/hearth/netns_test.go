package main

import (
	"testing"

	"github.com/hearth-home/hearth/internal/netnstest"
)

// testLAN is a network namespace with a veth pair that a test creates, so
// that its clients reach hearth from addresses of their own instead of
// loopback (which OpenClaw refuses as a forwarded client). See
// internal/netnstest, which the web pages' passkey test shares.
type testLAN struct{ *netnstest.LAN }

// newTestLAN creates the namespace (h9-<random>) and its veth pair, and
// removes both at t.Cleanup; under CI=true a missing ip(8) or root fails
// the test, elsewhere it skips it naming what is missing.
func newTestLAN(t testing.TB) *testLAN {
	t.Helper()
	return &testLAN{netnstest.New(t, "h9")}
}

// needTool fails under CI and skips elsewhere, naming the prerequisite.
func needTool(t testing.TB, what string) {
	t.Helper()
	netnstest.Need(t, what)
}

// ConnectProxy serves HTTP CONNECT on loopback and opens each tunnel from
// inside the namespace (source src), for a browser that cannot itself run
// there.
func (l *testLAN) ConnectProxy(t testing.TB, src string) string {
	t.Helper()
	return l.LAN.ConnectProxy(t, src, nil)
}
