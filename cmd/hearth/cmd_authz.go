package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/config"
)

func newAuthzCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "authz",
		Short: "Ask the authorizer questions",
		Example: `  hearth authz explain device:kitchen-pi plugins:install
  hearth authz explain user:alice hearth:admin --via token --from remote`,
	}
	cmd.AddCommand(newAuthzExplainCmd(e))
	return cmd
}

func newAuthzExplainCmd(e *env) *cobra.Command {
	var (
		via, from, caps string
		mfa, passkey    bool
		age             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "explain PRINCIPAL CAPABILITY",
		Short: "Say whether a principal may use a capability, and why",
		Long: `Explain runs the same decision function as the gateway and prints
"allow" or "deny" on the first line, then the reason, then the trust
requirement of the capability.

Bundles and requirements come from hearth.yaml in the data dir (the defaults
when there is none). The principal's granted capabilities come from the
running server over the admin socket, or from --caps, which also works when
hearth is not running.

Exit status: 0 allow, 1 deny, 2 the question could not be asked (bad
arguments, unreadable configuration, unknown principal).`,
		Example: `  hearth authz explain device:kitchen-pi plugins:install
  hearth authz explain user:alice hearth:admin --via token --from remote --mfa --age 5m
  hearth authz explain user:alice hearth:admin --via token --from remote --passkey --age 2h
  hearth authz explain user:bob settings:modify --caps system:write --via token --from remote`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, capName := args[0], args[1]
			usage := func(format string, a ...any) error {
				return exitError{code: 2, msg: "authz explain: " + fmt.Sprintf(format, a...)}
			}
			kind, name, ok := strings.Cut(id, ":")
			if !ok || name == "" || (kind != string(authz.KindUser) && kind != string(authz.KindDevice)) {
				return usage("a principal is user:NAME or device:NAME, not %q", id)
			}
			dir, err := dataDir(cmd)
			if err != nil {
				return usage("%v", err)
			}
			cfg, err := config.Load(filepath.Join(dir, config.FileName))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				fmt.Fprintf(e.stderr, "hearth: no %s in %s; using the default bundles and requirements\n", config.FileName, dir)
				cfg = &config.Config{}
			case err != nil:
				return usage("%v", err)
			}
			policy, err := authz.New(cfg.Authz)
			if err != nil {
				return usage("%v", err)
			}

			method := authz.Method(via)
			if via == "" {
				method = authz.MethodToken
				if kind == string(authz.KindDevice) {
					method = authz.MethodDevice
				}
			}
			switch method {
			case authz.MethodDevice, authz.MethodToken, authz.MethodLocal:
			default:
				return usage("--via is device, token or local, not %q", via)
			}
			zone := authz.Zone(from)
			if zone != authz.ZoneLAN && zone != authz.ZoneRemote {
				return usage("--from is lan or remote, not %q", from)
			}
			if age < 0 {
				return usage("--age must not be negative")
			}

			var granted []string
			if cmd.Flags().Changed("caps") {
				granted = strings.Split(caps, ",")
			} else {
				var out struct {
					Capabilities []string `json:"capabilities"`
				}
				err := admin.NewClient(dir).Do(cmd.Context(), "GET", "/.hearth/v1/admin/principals/"+url.PathEscape(id), nil, &out)
				if errors.Is(err, admin.ErrNotRunning) {
					return usage("hearth is not running, so it cannot tell what %s was granted; pass --caps to explain offline", id)
				}
				if err != nil {
					return usage("asking the server about %s: %v", id, err)
				}
				granted = out.Capabilities
			}
			expanded, err := policy.Expand(granted)
			if err != nil {
				return usage("%v", err)
			}

			now := time.Now()
			p := &authz.Principal{
				ID:       id,
				Kind:     authz.Kind(kind),
				Caps:     expanded,
				Method:   method,
				Zone:     zone,
				AuthTime: now.Add(-age),
				MFA:      mfa || passkey,
				// A passkey (WebAuthn, user verified) is multi-factor and
				// phishing resistant (NIST SP 800-63B-4 §3.2.5).
				PhishingResistant: passkey,
			}
			d := policy.Decide(p, authz.Capability(capName), now)
			fmt.Fprintln(e.stdout, d.Verdict())
			fmt.Fprintln(e.stdout, d.Reason())
			if policy.Known(authz.Capability(capName)) {
				fmt.Fprintf(e.stdout, "requirement of %s: %s\n", capName, policy.Requirement(authz.Capability(capName)))
			}
			if !d.Allow {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&via, "via", "", "how the principal authenticated: device, token or local (default device for devices, token for users)")
	f.StringVar(&from, "from", "lan", "where the request comes from: lan or remote")
	f.StringVar(&caps, "caps", "", "granted capabilities and bundles, comma-separated (instead of asking the running server)")
	f.BoolVar(&mfa, "mfa", false, "the login used a second factor")
	f.BoolVar(&passkey, "passkey", false, "the login used a passkey (multi-factor and phishing resistant)")
	f.DurationVar(&age, "age", 0, "how long ago the principal authenticated, e.g. 5m")
	return cmd
}
