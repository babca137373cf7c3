// Command hearth is the trust manager in front of a personal AI agent: a
// local CA, an mTLS gateway, password and OIDC logins, one authorizer and a
// signed audit log. This package only parses flags and wires parts together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "hearth:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "hearth:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a given status (e.g. 1 for a failed
// verification) and an optional one-line message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// env carries the process's streams to the commands, so that tests can run
// commands in-process with their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// run builds the command tree and executes args.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "hearth",
		Short: "A trust manager for a personal AI agent at home",
		Long: `hearth guards a personal AI agent with a local CA, an mTLS gateway,
password and OIDC logins, one authorizer and a signed audit log.`,
		Example: `  hearth init --owner alice --hosts hearth.home.arpa,192.168.1.10
  hearth serve
  hearth device add kitchen-pi --caps system:read`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("dir", "", "data dir (default $HEARTH_DIR or the user's data dir)")
	root.PersistentFlags().String("log-level", "warn", "log level: debug, info, warn, error")

	for _, mk := range commands {
		root.AddCommand(mk(e))
	}
	return root.ExecuteContext(ctx)
}

// commands lists the constructors of the top-level commands; each command's
// file adds itself here in an init-free way through this one list.
var commands = []func(*env) *cobra.Command{
	newInitCmd,
	newServeCmd,
	newDemoCmd,
	newDeviceCmd,
	newEnrollCmd,
	newUserCmd,
	newLoginCmd,
	newAuthzCmd,
	newAuditCmd,
	newAgentCmd,
	newConfigCmd,
	newReloadCmd,
	newVersionCmd,
	newCompletionCmd,
	newBackupCmd,
	newRestoreCmd,
	newCACmd,
	newMigrateCmd,
}
