package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/server"
)

func newConfigCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Check hearth.yaml",
		Long: `Work with the data dir's hearth.yaml. After editing it, 'hearth config
check' says whether 'hearth serve' (or a reload) would accept it, and
'hearth reload' applies it to the running server.`,
		Example: `  hearth config check
  hearth config check --file ./hearth.yaml.new`,
	}
	c.AddCommand(newConfigCheckCmd(e))
	return c
}

func newConfigCheckCmd(e *env) *cobra.Command {
	var file string
	var asJSON bool
	c := &cobra.Command{
		Use:   "check [--file FILE]",
		Short: "Validate hearth.yaml and name each error with its line",
		Long: `check parses and validates hearth.yaml exactly as 'hearth serve' and a reload
do, without a running server, and prints every problem it finds as
hearth.yaml:LINE: SETTING: what is wrong — unknown or misspelt keys, values
of the wrong type, routes naming unknown capabilities, bad networks, bad
bundles and requirements, OIDC providers. It exits 0 when the file is
accepted and 1 otherwise.`,
		Example: `  hearth config check
  hearth config check --dir /var/lib/hearth
  hearth config check --file /tmp/hearth.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				dir, err := dataDir(cmd)
				if err != nil {
					return err
				}
				file = filepath.Join(dir, config.FileName)
			}
			f, err := os.Open(file)
			if err != nil {
				return exitError{code: 1, msg: fmt.Sprintf("config check: %v (is --dir the data dir `hearth init` made?)", err)}
			}
			b, err := io.ReadAll(io.LimitReader(f, config.MaxSize+1))
			f.Close()
			if err != nil {
				return fmt.Errorf("config check: reading %s: %w", file, err)
			}
			ps := config.Check(b)
			if asJSON {
				if ps == nil {
					ps = []config.Problem{}
				}
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{"file": file, "ok": len(ps) == 0, "problems": ps}); err != nil {
					return err
				}
			} else if len(ps) == 0 {
				fmt.Fprintf(e.stdout, "%s: ok\n", file)
			} else {
				for _, p := range ps {
					fmt.Fprintln(e.stdout, strings.Replace(p.String(), config.FileName, file, 1))
				}
			}
			if len(ps) > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("config check: %d problem(s); fix them, then run 'hearth reload'", len(ps))}
			}
			return nil
		},
	}
	c.Flags().StringVar(&file, "file", "", "the file to check (default hearth.yaml in the data dir)")
	c.Flags().BoolVar(&asJSON, "json", false, `print {"ok", "problems": [{"line", "path", "error"}]} as JSON`)
	return c
}

func newReloadCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "reload",
		Short: "Apply an edited hearth.yaml to the running server without a restart",
		Long: `reload asks the running server (over its admin socket) to read hearth.yaml
again, as SIGHUP does. Routes, bundles, requirements, trusted networks, the
upstream and OIDC providers take effect on the next request; open
connections stay up. A file that does not validate is refused and the
running configuration kept. Either way the audit log records a
config.change entry. Listeners, CA, login and audit settings need a restart;
reload names them when they changed. With replicas on PostgreSQL the file is
also published to the other replicas, which write it to their data dirs and
apply it within a second (see "Operating replicas" in the README).`,
		Example: `  hearth config check && hearth reload
  kill -HUP "$(pidof hearth)"   # the same, by signal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res server.ReloadResult
			if err := adminCall(cmd, "reload", http.MethodPost, server.ReloadPath, nil, &res); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			if !res.Changed {
				fmt.Fprintf(e.stdout, "Reloaded hearth.yaml (sha256 %s): unchanged.\n", res.SHA256[:16])
			} else {
				fmt.Fprintf(e.stdout, "Reloaded hearth.yaml (sha256 %s): applied.\n", res.SHA256[:16])
			}
			if len(res.RestartNeeded) > 0 {
				fmt.Fprintf(e.stdout, "Changed but applied only on restart: %s\n", strings.Join(res.RestartNeeded, ", "))
			}
			if res.Version > 0 {
				fmt.Fprintf(e.stdout, "Shared with the other replicas as version %d: they follow it within a second (a replica that cannot apply it says so in its log and /.hearth/readyz).\n", res.Version)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, `print {"sha256", "changed", "restart_needed", "version"} as JSON (version: of the replicas' shared file, PostgreSQL only)`)
	return c
}
