package mtls

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/authz"
)

func testPolicy(t testing.TB) *authz.Policy {
	p, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRouteMatch(t *testing.T) {
	rt, err := compileRoutes([]Route{
		{Path: "/api/status", Methods: []string{"GET"}, Capability: "status"},
		{Path: "/api/*", Methods: []string{"GET"}, Capability: "conversations:read"},
		{Path: "/api/settings/*", Methods: []string{"GET"}, Capability: "status"},
		{Path: "/api/settings/*", Methods: []string{"PUT", "POST"}, Capability: "settings:modify"},
		{Path: "/api/settings/secret", Methods: []string{"*"}, Capability: "hearth:admin"},
		{Path: "/*", Methods: []string{"GET"}, Capability: "status"},
	}, testPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, method string
		wantPattern  string // "" for no route
		wantCap      authz.Capability
	}{
		{"/api/status", "GET", "/api/status", "status"},
		{"/api/status", "HEAD", "/api/status", "status"},
		{"/api/status", "POST", "/api/status", ""},
		{"/api/status/", "GET", "/api/status", "status"},
		{"/API/Status", "GET", "/api/status", "status"},
		{"/api/statusx", "GET", "/api/*", "conversations:read"},
		{"/api", "GET", "/api/*", "conversations:read"},
		{"/api/", "GET", "/api/*", "conversations:read"},
		{"/api/settings/model", "GET", "/api/settings/*", "status"},
		{"/api/settings/model", "PUT", "/api/settings/*", "settings:modify"},
		{"/api/settings/model", "DELETE", "/api/settings/*", ""},
		{"/api/settings", "POST", "/api/settings/*", "settings:modify"},
		{"/api/SETTINGS/", "POST", "/api/settings/*", "settings:modify"},
		{"/api/settings/secret", "DELETE", "/api/settings/secret", "hearth:admin"},
		{"/api/settings/secret/x", "GET", "/api/settings/*", "status"},
		{"/api/settingsx", "POST", "/api/*", ""},
		{"/", "GET", "/*", "status"},
		{"/other/deep/path", "GET", "/*", "status"},
		{"/other", "POST", "/*", ""},
	}
	for _, tt := range tests {
		m := rt.match(tt.path, tt.method)
		var pattern string
		var c authz.Capability
		if m.node != nil {
			pattern = m.node.pattern
		}
		if m.entry != nil {
			c = m.entry.cap
		}
		if pattern != tt.wantPattern || c != tt.wantCap {
			t.Errorf("match(%s %s) = %q %q, want %q %q", tt.method, tt.path, pattern, c, tt.wantPattern, tt.wantCap)
		}
	}
	noRoot, _ := compileRoutes([]Route{{Path: "/api/status", Methods: []string{"GET"}, Capability: "status"}}, testPolicy(t))
	if m := noRoot.match("/api/statusx", "GET"); m.node != nil {
		t.Errorf("match without a catch-all found %q", m.node.pattern)
	}
}

func TestCompileRoutesRejects(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"unknown capability", []Route{{Path: "/a", Methods: []string{"GET"}, Capability: "nope:nope"}}, "not one authz knows"},
		{"bundle", []Route{{Path: "/a", Methods: []string{"GET"}, Capability: "system:read"}}, "not one authz knows"},
		{"no methods", []Route{{Path: "/a", Capability: "status"}}, "list its methods"},
		{"lower-case method", []Route{{Path: "/a", Methods: []string{"get"}, Capability: "status"}}, "upper-case"},
		{"relative", []Route{{Path: "a", Methods: []string{"GET"}, Capability: "status"}}, "does not start with /"},
		{"dot segments", []Route{{Path: "/a/../b", Methods: []string{"GET"}, Capability: "status"}}, "normal form"},
		{"inner star", []Route{{Path: "/a/*/b", Methods: []string{"GET"}, Capability: "status"}}, "may only end"},
		{"star without slash", []Route{{Path: "/a*", Methods: []string{"GET"}, Capability: "status"}}, "may only end"},
		{"hearth's own", []Route{{Path: "/.hearth/*", Methods: []string{"GET"}, Capability: "status"}}, "hearth's own"},
		{"duplicate method", []Route{
			{Path: "/a", Methods: []string{"GET"}, Capability: "status"},
			{Path: "/a", Methods: []string{"POST", "GET"}, Capability: "settings:modify"},
		}, "listed twice"},
		{"star overlaps", []Route{
			{Path: "/a/*", Methods: []string{"GET"}, Capability: "status"},
			{Path: "/a/*", Methods: []string{"*"}, Capability: "settings:modify"},
		}, "listed twice"},
		{"case twins", []Route{
			{Path: "/a", Methods: []string{"GET"}, Capability: "status"},
			{Path: "/A", Methods: []string{"POST"}, Capability: "settings:modify"},
		}, "differ only in case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileRoutes(tt.routes, testPolicy(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("compileRoutes = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := compileRoutes(DefaultRoutes(), testPolicy(t)); err != nil {
		t.Errorf("DefaultRoutes do not compile: %v", err)
	}
}

func TestConfigHelpers(t *testing.T) {
	u, err := Config{}.UpstreamURL()
	if err != nil || u.String() != DefaultUpstream {
		t.Errorf("default upstream = %v, %v", u, err)
	}
	for _, bad := range []string{"ftp://x", "http://", "http://x/?q=1", "http://u:p@x", "::"} {
		if _, err := (Config{Upstream: bad}).UpstreamURL(); err == nil {
			t.Errorf("UpstreamURL(%q) accepted", bad)
		}
	}
	nets, err := Config{TrustedNetworks: []string{"192.168.1.7/24", "10.0.0.1", "fd00::/8"}}.Networks()
	want := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::/8")}
	if err != nil || len(nets) != 3 || nets[0] != want[0] || nets[1] != want[1] || nets[2] != want[2] {
		t.Errorf("Networks = %v, %v; want %v", nets, err, want)
	}
	if _, err := (Config{TrustedNetworks: []string{"home"}}).Networks(); err == nil {
		t.Errorf("Networks accepted %q", "home")
	}
	if err := (Config{}).Validate(testPolicy(t)); err != nil {
		t.Errorf("zero Config does not validate: %v", err)
	}
	if err := (Config{Routes: []Route{{Path: "/x", Methods: []string{"GET"}, Capability: "nope:x"}}}).Validate(testPolicy(t)); err == nil {
		t.Errorf("Validate accepted a route with an unknown capability")
	}
}

func TestZone(t *testing.T) {
	g := &Gateway{trusted: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("::1/128")}}
	tests := []struct {
		addr string
		want authz.Zone
	}{
		{"192.168.1.20:5555", authz.ZoneLAN},
		{"[::ffff:192.168.1.20]:5555", authz.ZoneLAN},
		{"[::1]:443", authz.ZoneLAN},
		{"192.168.2.1:5555", authz.ZoneRemote},
		{"127.0.0.1:1", authz.ZoneRemote},
		{"garbage", authz.ZoneRemote},
		{"", authz.ZoneRemote},
	}
	for _, tt := range tests {
		if got := g.zone(tt.addr); got != tt.want {
			t.Errorf("zone(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// FuzzRouteMatch compares the route table with a direct reading of the
// rules: the chosen route is exact when one matches (ignoring ASCII case and
// a trailing slash), else the longest "/*" prefix on a segment boundary.
func FuzzRouteMatch(f *testing.F) {
	routes := []Route{
		{Path: "/api/status", Methods: []string{"GET"}, Capability: "status"},
		{Path: "/api/*", Methods: []string{"GET"}, Capability: "conversations:read"},
		{Path: "/api/settings/*", Methods: []string{"PUT"}, Capability: "settings:modify"},
		{Path: "/api/settings/x", Methods: []string{"*"}, Capability: "hearth:admin"},
		{Path: "/p", Methods: []string{"POST"}, Capability: "plugins:install"},
	}
	rt, err := compileRoutes(routes, testPolicy(f))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/api/status", "/API/status/", "/api/settings", "/api/settings/x/y", "/apix", "/p", "/p/q", "/", "/api/settings/X"} {
		f.Add(s, "GET")
	}
	f.Fuzz(func(t *testing.T, raw, method string) {
		p, err := NormalizePath(raw)
		if err != nil {
			return
		}
		m := rt.match(p, method)
		key := lowerASCII(p)
		if len(key) > 1 {
			key = strings.TrimSuffix(key, "/")
		}
		want := ""
		best := -1
		for _, r := range routes {
			if !strings.HasSuffix(r.Path, "/*") {
				if key == r.Path {
					want, best = r.Path, 1<<30
				}
				continue
			}
			base := strings.TrimSuffix(r.Path, "/*")
			if (key == base || strings.HasPrefix(key, base+"/")) && len(base) > best {
				want, best = r.Path, len(base)
			}
		}
		got := ""
		if m.node != nil {
			got = m.node.pattern
		}
		if got != want {
			t.Fatalf("match(%q) = %q, want %q", p, got, want)
		}
		if m.entry != nil && !m.entry.allows(method) {
			t.Fatalf("match(%q, %q) chose an entry that does not allow the method", p, method)
		}
	})
}
