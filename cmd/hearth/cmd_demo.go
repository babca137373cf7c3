package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/sampleagent"
	"github.com/hearth-home/hearth/internal/server"
)

func newDemoCmd(e *env) *cobra.Command {
	var listen, caListen, upstream string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Try hearth in one command: init, a sample agent, the gateway and an enrolled device",
		Long: `demo runs hearth's main job on its embedded defaults, on loopback only:
it creates a data dir (./hearth-demo unless --dir or $HEARTH_DIR says
otherwise; kept between runs), starts a small sample agent, serves the
gateway in front of it, enrolls a device "demo-laptop" with system:read, and
prints curl commands that reach the agent over mTLS, one allowed and one
refused. Ctrl-C stops it.`,
		Example: `  go run ./cmd/hearth demo
  hearth demo --dir /tmp/hearth-demo --listen 127.0.0.1:18443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, _ := cmd.Flags().GetString("dir")
			if dir == "" {
				dir = os.Getenv("HEARTH_DIR")
			}
			if dir == "" {
				dir = "hearth-demo"
			}
			dir, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			return runDemo(cmd.Context(), e, dir, listen, caListen, upstream, newLogger(cmd, e))
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8443", "gateway address")
	f.StringVar(&caListen, "ca-listen", "127.0.0.1:9443", "CA API address")
	f.StringVar(&upstream, "agent-listen", "127.0.0.1:18789", "where the sample agent listens")
	return cmd
}

func runDemo(ctx context.Context, e *env, dir, listen, caListen, agentAddr string, logger zerolog.Logger) error {
	w := e.stdout
	if _, err := os.Stat(filepath.Join(dir, config.FileName)); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "[1/4] Creating the data dir %s …\n", dir)
		res, err := server.Init(ctx, dir, server.InitOptions{
			Name: "hearth demo", Owner: "owner", Listen: listen, CAListen: caListen,
			Upstream: "http://" + agentAddr, Agent: config.AgentSample, Logger: logger,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "      root fingerprint %s\n      owner %q, one-time password %s\n      (recovery codes are not shown by the demo: `hearth user recovery-codes owner` makes a new set)\n", res.Fingerprint, res.Owner, res.Password)
	} else {
		fmt.Fprintf(w, "[1/4] Reusing the data dir %s\n", dir)
	}

	fmt.Fprintf(w, "[2/4] Starting the sample agent on http://%s …\n", agentAddr)
	agentLn, err := net.Listen("tcp", agentAddr)
	if err != nil {
		return fmt.Errorf("the sample agent cannot listen on %s (%v): pass --agent-listen 127.0.0.1:PORT", agentAddr, err)
	}
	agentSrv := &http.Server{Handler: (&sampleagent.Agent{}).Handler(), ReadHeaderTimeout: 10 * time.Second}
	go agentSrv.Serve(agentLn)
	defer agentSrv.Close()

	fmt.Fprintf(w, "[3/4] Starting hearth (gateway %s, CA %s) …\n", listen, caListen)
	ready := make(chan server.Addrs, 1)
	s, err := server.Open(server.Options{
		Dir: dir, Listen: listen, CAListen: caListen, Upstream: "http://" + agentAddr,
		PublicURL: "https://" + listen, Logger: logger,
		Ready: func(a server.Addrs) { ready <- a },
	})
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	var addrs server.Addrs
	select {
	case addrs = <-ready:
	case err := <-errc:
		return err
	}

	devDir := filepath.Join(dir, "demo-device")
	if _, err := os.Stat(filepath.Join(devDir, "device.crt")); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "[4/4] Enrolling the device \"demo-laptop\" (system:read) …\n")
		var tok ca.EnrollToken
		err := admin.NewClient(dir).Do(ctx, http.MethodPost, "/.hearth/v1/admin/devices",
			map[string]any{"name": "demo-laptop", "caps": []string{"system:read"}}, &tok)
		if err != nil {
			return fmt.Errorf("adding the demo device: %w", err)
		}
		if _, err := ca.Enroll(ctx, ca.EnrollOptions{
			CAURL: "https://" + addrs.Gateway, Fingerprint: tok.Fingerprint, Token: tok.Token, OutDir: devDir,
		}); err != nil {
			return fmt.Errorf("enrolling the demo device: %w", err)
		}
	} else {
		fmt.Fprintf(w, "[4/4] The device \"demo-laptop\" is already enrolled in %s\n", devDir)
	}
	curl := fmt.Sprintf("curl --cacert %s --cert %s --key %s",
		filepath.Join(devDir, "root.crt"), filepath.Join(devDir, "device.crt"), filepath.Join(devDir, "device.key"))
	fmt.Fprintf(w, `
hearth is guarding the sample agent. Try, from another terminal:

  # allowed: demo-laptop has system:read -> status
  %s https://%s/api/status

  # refused with 403: settings:modify is not in system:read (the agent never sees it)
  %s -X PUT -d '{"theme":"dark"}' https://%s/api/settings

  # no certificate: 401
  curl --cacert %s https://%s/api/status

  # the web page: sign in as "owner" with the password printed at init
  https://%s/.hearth/ui/   (the browser will not know hearth's root: trust %s, or accept the warning)

  # what happened, and proof that the log is intact
  go run ./cmd/hearth audit tail --dir %s
  go run ./cmd/hearth audit verify --dir %s

Ctrl-C stops hearth.
`, curl, addrs.Gateway, curl, addrs.Gateway, filepath.Join(devDir, "root.crt"), addrs.Gateway, addrs.Gateway, filepath.Join(devDir, "root.crt"), dir, dir)
	return <-errc
}
