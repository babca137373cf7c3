package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/internal/config"
)

func newAgentCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Set up the agent behind hearth (routes, scopes and the agent's side)",
		Long: `Configure hearth for the agent it guards. 'hearth agent setup openclaw'
writes OpenClaw's routes, capability-to-scope map and bundles into an
existing data dir's hearth.yaml, and OpenClaw's side of the configuration
into openclaw.patch.json beside it. 'hearth init --agent openclaw' (the
default) does the same for a new data dir.`,
		Example: `  hearth agent setup openclaw --public-url https://hearth.home.arpa:8443
  openclaw config patch --file ~/.local/share/hearth/openclaw.patch.json`,
	}
	c.AddCommand(newAgentSetupCmd(e))
	return c
}

func newAgentSetupCmd(e *env) *cobra.Command {
	var publicURL string
	c := &cobra.Command{
		Use:   "setup openclaw|sample [--public-url URL]",
		Short: "Write an agent profile into hearth.yaml and the agent's side of the config",
		Long: `setup rewrites hearth.yaml in the data dir for an agent profile: its routes,
gateway.agent (for OpenClaw: the x-openclaw-scopes header, the capability to
operator-scope map, how on-host clients are attributed), the profile's
capabilities, bundles and trust requirements. Everything else in the file,
your own requirements included, stays. The file is validated before it
replaces the old one.

For openclaw it also writes openclaw.patch.json: OpenClaw's gateway block in
trusted-proxy mode with hearth as its only trusted proxy, allowedOrigins set
to hearth's public URL (--public-url, else gateway.public_url), never
allowRealIpFallback, and device auto-approval so that a device enrolled with
hearth is not asked to pair again. Apply it with the one command printed,
then restart 'hearth serve'.`,
		Example: `  hearth agent setup openclaw --public-url https://hearth.home.arpa:8443
  hearth agent setup sample --dir ./demo-data`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{config.AgentOpenClaw, config.AgentSample},
		RunE: func(cmd *cobra.Command, args []string) error {
			agent, err := config.CheckAgent(args[0])
			if err != nil {
				return exitError{code: 2, msg: "agent setup: " + err.Error()}
			}
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			path := filepath.Join(dir, config.FileName)
			old, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("agent setup: %w (create a data dir with `hearth init --dir %s` first)", err, dir)
			}
			out, err := config.ApplyProfile(old, agent, publicURL)
			if err != nil {
				return fmt.Errorf("agent setup: %w", err)
			}
			cfg, err := config.Parse(out)
			if err != nil {
				return err
			}
			var patchPath string
			var patch []byte
			if agent == config.AgentOpenClaw {
				if patch, err = config.OpenClawPatch(cfg.Gateway); err != nil {
					return fmt.Errorf("agent setup: %w", err)
				}
				patchPath = filepath.Join(dir, config.OpenClawPatchName)
			}
			if err := writeFileAtomic(path, out); err != nil {
				return fmt.Errorf("agent setup: %w", err)
			}
			w := e.stdout
			fmt.Fprintf(w, "Wrote the %s profile into %s.\n", agent, path)
			if patch != nil {
				if err := writeFileAtomic(patchPath, patch); err != nil {
					return fmt.Errorf("agent setup: %w", err)
				}
				fmt.Fprintf(w, "Wrote OpenClaw's side to %s. Apply it with:\n\n  openclaw config patch --file %s\n\n", patchPath, patchPath)
			}
			fmt.Fprintf(w, "Then restart `hearth serve --dir %s`.\n", dir)
			return nil
		},
	}
	c.Flags().StringVar(&publicURL, "public-url", "", "hearth's URL as browsers reach it, OpenClaw's allowed origin (default gateway.public_url)")
	return c
}

// writeFileAtomic replaces path with b (mode 0600) through a temporary
// file and a rename, so that a crash leaves the old file or the new one.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
