package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildVersion is what `hearth version` reports, read from the build
// information the Go toolchain embeds (runtime/debug.ReadBuildInfo): the
// module version (a tag for `go install …@v1.2.3`, "(devel)" for a build
// from a checkout) and, for a build from a checkout, the VCS revision.
type buildVersion struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func readBuildVersion() buildVersion {
	v := buildVersion{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Module, v.Version = bi.Main.Path, bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v buildVersion) print(w io.Writer) {
	fmt.Fprintf(w, "hearth %s", v.Version)
	if v.Revision != "" {
		fmt.Fprintf(w, " (revision %s", v.Revision)
		if v.Time != "" {
			fmt.Fprintf(w, ", %s", v.Time)
		}
		if v.Modified {
			fmt.Fprint(w, ", modified")
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintf(w, " %s %s\n", v.Go, v.Platform)
}

func newVersionCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print hearth's version and the revision it was built from",
		Long: `version prints the module version (a release tag, or "(devel)" for a build
from a checkout), the VCS revision and commit time the binary was built from
(with "modified" if the checkout had uncommitted changes), and the Go version
and platform. Include it in bug reports.`,
		Example: `  hearth version
  hearth version --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := readBuildVersion()
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(v)
			}
			v.print(e.stdout)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the fields as JSON")
	return cmd
}

// newCompletionCmd replaces cobra's default completion command (which has
// no examples) with one that says where each shell's script goes.
func newCompletionCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion",
		Short: "Print a shell completion script (bash, zsh, fish, powershell)",
		Long: `completion prints a script that makes the shell complete hearth's commands
and flags. Install it once, e.g. for bash system-wide:
  hearth completion bash > /usr/share/bash-completion/completions/hearth
for zsh:
  hearth completion zsh > "${fpath[1]}/_hearth"
for fish:
  hearth completion fish > ~/.config/fish/completions/hearth.fish`,
		Example: `  source <(hearth completion bash)
  hearth completion zsh > "${fpath[1]}/_hearth"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	shells := []struct {
		name string
		gen  func(root *cobra.Command, w io.Writer) error
	}{
		{"bash", func(r *cobra.Command, w io.Writer) error { return r.GenBashCompletionV2(w, true) }},
		{"zsh", func(r *cobra.Command, w io.Writer) error { return r.GenZshCompletion(w) }},
		{"fish", func(r *cobra.Command, w io.Writer) error { return r.GenFishCompletion(w, true) }},
		{"powershell", func(r *cobra.Command, w io.Writer) error { return r.GenPowerShellCompletionWithDesc(w) }},
	}
	for _, sh := range shells {
		cmd.AddCommand(&cobra.Command{
			Use:     sh.name,
			Short:   "Print the completion script for " + sh.name,
			Example: "  hearth completion " + sh.name,
			Args:    cobra.NoArgs,
			RunE:    func(cmd *cobra.Command, args []string) error { return sh.gen(cmd.Root(), e.stdout) },
		})
	}
	return cmd
}
