package config

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"github.com/hearth-home/hearth/mtls"
)

// OpenClawPatchName is the file, in the data dir, that holds OpenClaw's
// side of the profile: `openclaw config patch --file <dir>/openclaw.patch.json`
// applies it (objects merge, arrays replace, null deletes).
const OpenClawPatchName = "openclaw.patch.json"

// OpenClawUserHeader is the header OpenClaw takes the user from: hearth's
// principal ("device:kitchen-pi", "user:alice").
const OpenClawUserHeader = "x-hearth-principal"

// OpenClawPatch is OpenClaw's `gateway` block for running behind hearth,
// as an `openclaw config patch` file (JSON, which is JSON5):
//
//   - trusted-proxy mode, hearth (on loopback) its only trusted proxy,
//     the user named by X-Hearth-Principal; the shared token and password
//     removed (either is a full-admin door around hearth);
//   - allowedOrigins exactly hearth's public origin; allowRealIpFallback
//     false, so X-Real-IP is never read (hearth strips it anyway);
//   - OpenClaw bound to loopback on the upstream's port;
//   - deviceAutoApprove on: a browser or native UI that reaches OpenClaw
//     through hearth is enrolled with hearth already, so it is not asked
//     to pair again. Its grant is capped by the x-openclaw-scopes header
//     hearth sends on every upgrade, so listing operator.admin here gives
//     admin only to principals whose hearth capabilities map to it
//     (OpenClaw's audit reports the listing as critical all the same);
//   - the OpenAI-compatible endpoints enabled (hearth decides who may use
//     them, and OpenClaw honours the scopes header on them).
func OpenClawPatch(gw mtls.Config) ([]byte, error) {
	origin, err := gw.Origin()
	if err != nil {
		return nil, err
	}
	if origin == "" {
		return nil, fmt.Errorf("config: OpenClaw's allowed origin is hearth's public URL: set gateway.public_url (or pass --public-url), e.g. https://hearth.home.arpa:8443")
	}
	up, err := gw.UpstreamURL()
	if err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(up.Host)
	if err != nil {
		host, portStr = up.Hostname(), "80"
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("config: upstream %q has no usable port", gw.Upstream)
	}
	if ip := net.ParseIP(host); up.Scheme != "http" || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return nil, fmt.Errorf("config: OpenClaw behind hearth must listen on loopback over http (upstream %q): hearth is its only trusted proxy", gw.Upstream)
	}
	scopes := []string{"operator.read", "operator.write", "operator.approvals", "operator.questions", "operator.admin", "operator.pairing"}
	patch := map[string]any{
		"gateway": map[string]any{
			"mode":                "local",
			"bind":                "loopback",
			"port":                port,
			"trustedProxies":      []string{"127.0.0.1", "::1"},
			"allowRealIpFallback": false,
			"auth": map[string]any{
				"mode":     "trusted-proxy",
				"token":    nil,
				"password": nil,
				"trustedProxy": map[string]any{
					"userHeader":        OpenClawUserHeader,
					"requiredHeaders":   []string{"x-forwarded-proto", "x-forwarded-host"},
					"allowLoopback":     true,
					"deviceAutoApprove": map[string]any{"enabled": true, "scopes": scopes},
				},
			},
			"controlUi": map[string]any{"allowedOrigins": []string{origin}},
			"http": map[string]any{"endpoints": map[string]any{
				"chatCompletions": map[string]any{"enabled": true},
				"responses":       map[string]any{"enabled": true},
			}},
		},
	}
	b, err := json.MarshalIndent(patch, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
