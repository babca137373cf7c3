package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/internal/server"
)

func newInitCmd(e *env) *cobra.Command {
	var o server.InitOptions
	var hosts string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a data dir: CA, gateway certificate, audit key, store, hearth.yaml, owner",
		Long: `init creates a new data dir (mode 0700) holding a root CA and an intermediate
(ECDSA P-256), the gateway's server certificate for --hosts, the audit log's
Ed25519 key, the embedded store, a commented hearth.yaml, and the owner
account with a one-time password and ten recovery codes.

It prints the root fingerprint (SHA-256 of the root certificate) that devices
pin when they enroll, and the owner's secrets: they are shown once and
stored only hashed. init refuses a data dir that already holds files.

--agent openclaw (the default) writes OpenClaw's routes and the
capability-to-scope map into hearth.yaml, and OpenClaw's side of the
configuration (trusted-proxy mode, hearth its only trusted proxy, the public
URL its only allowed origin) into openclaw.patch.json: apply it with
'openclaw config patch --file <dir>/openclaw.patch.json'. --agent sample
writes the sample agent's routes, as 'hearth demo' uses.`,
		Example: `  hearth init --owner alice --hosts hearth.home.arpa,192.168.1.10
  hearth init --agent openclaw --public-url https://hearth.home.arpa:8443
  hearth init --dir /var/lib/hearth --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			if hosts != "" {
				for _, h := range strings.Split(hosts, ",") {
					if h = strings.TrimSpace(h); h != "" {
						o.Hosts = append(o.Hosts, h)
					}
				}
			}
			o.Logger = newLogger(cmd, e)
			res, err := server.Init(cmd.Context(), dir, o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			w := e.stdout
			fmt.Fprintf(w, "Created %s\n\n", res.Dir)
			fmt.Fprintf(w, "Root fingerprint (devices pin this):\n  %s\n\n", res.Fingerprint)
			fmt.Fprintf(w, "Owner account:   %s\n", res.Owner)
			fmt.Fprintf(w, "Owner password:  %s\n", res.Password)
			fmt.Fprintf(w, "Recovery codes (each works once; keep them offline):\n")
			for _, c := range res.RecoveryCodes {
				fmt.Fprintf(w, "  %s\n", c)
			}
			fmt.Fprintf(w, "\nThese secrets are shown only now.\n")
			if res.OpenClawPatch != "" {
				fmt.Fprintf(w, "\nOpenClaw's side (trusted-proxy mode behind hearth) is in %s. Apply it with:\n  openclaw config patch --file %s\n", res.OpenClawPatch, res.OpenClawPatch)
			}
			fmt.Fprintf(w, "\nNext:\n  hearth serve --dir %s\n  hearth device add laptop --caps system:read --dir %s\n", res.Dir, res.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "hearth", "household name, shown in the CA's certificates")
	f.StringVar(&hosts, "hosts", "", "comma-separated DNS names and IPs of the gateway (localhost and loopback are always included)")
	f.StringVar(&o.Owner, "owner", "owner", "name of the owner account (gets system:admin)")
	f.StringVar(&o.Listen, "listen", ":8443", "gateway address written to hearth.yaml")
	f.StringVar(&o.CAListen, "ca-listen", ":9443", "CA API address written to hearth.yaml")
	f.StringVar(&o.Upstream, "upstream", "http://127.0.0.1:18789", "the agent's URL written to hearth.yaml")
	f.StringVar(&o.TrustDomain, "trust-domain", "hearth.home.arpa", "SPIFFE trust domain of device identities")
	f.StringSliceVar(&o.TrustedNetworks, "trusted-networks", nil, "CIDRs of the home network (default loopback and private ranges)")
	f.StringVar(&o.Agent, "agent", "openclaw", "agent profile: openclaw (routes, scopes and OpenClaw's side in openclaw.patch.json) or sample (the demo's sample agent)")
	f.StringVar(&o.PublicURL, "public-url", "", "the gateway's URL as devices and browsers reach it (default https://<first host>:<port>)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object: fingerprint, owner, password, recovery_codes, …")
	return cmd
}
