package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/config"
)

// EventCARotate is the audit event of an intermediate rotation.
const EventCARotate = "ca.rotate_intermediate"

func newCACmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Maintain the local CA (rotate its intermediate)",
		Long: `The CA's root signs only its intermediate, at init and at rotation; the
intermediate signs every device, gateway and ACME certificate. Devices pin the
root, so the root key can be kept offline between those two moments.`,
		Example: `  hearth ca rotate-intermediate --root-key /media/usb/hearth-root_ca.key`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newCARotateCmd(e))
	return cmd
}

func newCARotateCmd(e *env) *cobra.Command {
	var rootKey string
	cmd := &cobra.Command{
		Use:   "rotate-intermediate [--root-key FILE]",
		Short: "Replace the intermediate CA under the same root; enrolled devices stay valid",
		Long: `rotate-intermediate makes a new intermediate key and certificate, signed by the
root, and reissues the gateway's certificate under it. Run it with hearth
stopped, then start hearth again.

Enrolled devices keep working without re-enrolling: their certificates chain
to the same root through the old intermediate, which they present, and hearth
checks client chains against the root. Their next renewal issues under the new
intermediate. The root's fingerprint does not change. The old intermediate's
key is overwritten; its certificate is kept in ca/retired/. The rotation is
recorded in the audit log.

The root key is read from --root-key, default <data dir>/ca/root_ca.key: if you
keep it offline (see the README), plug it in for the rotation only.`,
		Example: `  systemctl stop hearth
  sudo -u hearth hearth ca rotate-intermediate --dir /var/lib/hearth --root-key /media/usb/root_ca.key
  systemctl start hearth`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			if c, err := net.DialTimeout("unix", admin.SocketPath(dir), time.Second); err == nil {
				c.Close()
				return fmt.Errorf("ca rotate-intermediate: hearth is serving %s; stop it first (e.g. systemctl stop hearth), rotate, then start it", dir)
			}
			cfg, err := config.Load(filepath.Join(dir, config.FileName))
			if err != nil {
				return err
			}
			// Open the log first: a rotation that cannot be recorded is
			// not made.
			lg, err := audit.Open(dir, cfg.Audit, audit.Options{})
			if err != nil {
				return fmt.Errorf("ca rotate-intermediate: %w", err)
			}
			defer lg.Close()
			res, rerr := ca.RotateIntermediate(dir, rootKey, nil)
			ev := audit.Event{Name: EventCARotate, Principal: authz.LocalPrincipalID, Client: "local", Resource: "ca:intermediate"}
			if rerr != nil {
				ev.Outcome, ev.Reason = audit.OutcomeFailure, rerr.Error()
			} else {
				ev.Outcome = audit.OutcomeSuccess
				ev.Meta = map[string]string{"old_serial": res.OldSerial, "new_serial": res.NewSerial, "not_after": res.NewNotAfter.Format(time.RFC3339)}
			}
			if err := lg.Record(context.Background(), ev); err != nil {
				return fmt.Errorf("ca rotate-intermediate: recording it in the audit log: %w", err)
			}
			if rerr != nil {
				return rerr
			}
			fmt.Fprintf(e.stdout, "new intermediate %s (valid until %s) under the same root; the old one (%s) is kept in %s\n",
				res.NewSerial, res.NewNotAfter.Format(time.DateOnly), res.OldSerial, res.Retired)
			fmt.Fprintln(e.stdout, "enrolled devices stay valid and renew under the new intermediate; start hearth again (e.g. systemctl start hearth)")
			return nil
		},
	}
	cmd.Flags().StringVar(&rootKey, "root-key", "", "the root's private key (default <data dir>/ca/root_ca.key)")
	return cmd
}
