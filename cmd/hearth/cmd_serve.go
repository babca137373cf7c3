package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/internal/server"
)

func newServeCmd(e *env) *cobra.Command {
	var o server.Options
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the CA, the mTLS gateway, logins and the admin socket",
		Long: `serve runs hearth in front of the agent:
  - the mTLS gateway on --listen (TLS 1.3): devices by certificate, remote
    users by token; every request authorized and audited, then proxied;
  - the smallstep-compatible CA API on --ca-listen (step CLI, ACME);
  - the admin socket in the data dir, for the admin commands.
Flags override hearth.yaml. SIGTERM or Ctrl-C shuts down cleanly; SIGHUP
(or 'hearth reload') applies an edited hearth.yaml without dropping
connections.

State is kept in the data dir's hearth.db, or with --store-dsn (or
hearth.yaml's store: {driver: postgres, dsn: …}) in a PostgreSQL database
that several replicas share (see the README, "Replicas on PostgreSQL"). The
DSN must not hold a password: name a 0600 file in libpq's .pgpass format
with passfile=.`,
		Example: `  hearth serve
  hearth serve --dir /var/lib/hearth --listen :8443 --upstream http://127.0.0.1:18789
  hearth serve --log-level info
  hearth serve --metrics-listen :9464      # Prometheus metrics on 127.0.0.1:9464
  hearth serve --store-dsn "host=db.home.arpa user=hearth dbname=hearth passfile=/etc/hearth/pgpass"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			o.Dir = dir
			// argon2id holds 64 MiB per running hash; a soft limit keeps the
			// collector from letting the heap grow to twice the live set
			// under a flood of logins. GOMEMLIMIT overrides it.
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(512 << 20)
			}
			o.Logger = newLogger(cmd, e)
			o.Ready = func(a server.Addrs) {
				// Opening the CA, the store and the audit log leaves
				// garbage behind that an idle server would otherwise keep
				// resident until the scavenger gets to it: give it back now.
				debug.FreeOSMemory()
				fmt.Fprintf(e.stderr, "hearth: serving gateway on %s, CA on %s, admin socket %s\n", a.Gateway, a.CA, a.Socket)
				if a.Metrics != "" {
					fmt.Fprintf(e.stderr, "hearth: metrics on http://%s/metrics\n", a.Metrics)
				}
			}
			s, err := server.Open(o)
			if err != nil {
				return err
			}
			defer s.Close()
			stopHUP := reloadOnSIGHUP(cmd.Context(), s, o.Logger)
			defer stopHUP()
			return s.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", "", "gateway address (default from hearth.yaml, :8443)")
	f.StringVar(&o.CAListen, "ca-listen", "", "CA API address (default from hearth.yaml, :9443)")
	f.StringVar(&o.Upstream, "upstream", "", "the agent's URL (default from hearth.yaml, http://127.0.0.1:18789)")
	f.StringVar(&o.MetricsListen, "metrics-listen", "", "serve Prometheus metrics (plain HTTP, no auth) on this address; an empty host is 127.0.0.1, e.g. :9464 (default off)")
	f.StringVar(&o.StoreDSN, "store-dsn", "", "keep the state in this PostgreSQL database (implies store.driver postgres, overrides hearth.yaml); no password in it: use passfile=FILE (mode 0600)")
	f.StringVar(&o.PublicURL, "public-url", "", "the gateway URL devices use, in enrollment links and the CA URL device add prints (default gateway.public_url, else https://localhost:PORT)")
	return cmd
}
