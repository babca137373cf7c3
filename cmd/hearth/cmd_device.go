package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/ca"
)

func newDeviceCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "device",
		Short: "Manage devices: add (enrollment token), list, revoke",
		Long: `Manage the household's devices. A device gets a client certificate from
hearth's CA with 'hearth enroll' (or the step CLI) and a one-time token from
'hearth device add'; its capabilities are held by the server, so revoking or
changing them takes effect on its next request.

These commands talk to the running server over its admin socket in the data
dir, so start it first with 'hearth serve'.`,
		Example: `  hearth device add kitchen-pi --caps system:read
  hearth device list
  hearth device revoke kitchen-pi`,
	}
	c.AddCommand(newDeviceAddCmd(e), newDeviceListCmd(e), newDeviceRevokeCmd(e))
	return c
}

func newDeviceAddCmd(e *env) *cobra.Command {
	var caps []string
	var ttl, lifetime string
	var asJSON, noQR bool
	c := &cobra.Command{
		Use:   "add NAME --caps C1,C2 [--ttl 15m] [--lifetime 720h]",
		Short: "Add a device and print its one-time enrollment token",
		Long: `Record a device with its capabilities (or bundles such as system:read) and
print a one-time enrollment token, the URL and root fingerprint to enroll
with, and a QR code of the 'hearth enroll' command line.

The token enrolls this device only, once, before it expires (--ttl, default
15m). Its certificates live --lifetime (default 720h) and renew themselves
with 'hearth enroll --renew'. Adding a device that never enrolled replaces
its earlier token; an enrolled device must be revoked first.

NAME is 1 to 63 lowercase letters, digits and inner dashes.`,
		Example: `  hearth device add kitchen-pi --caps system:read
  hearth device add laptop --caps system:read,system:write --ttl 1h --lifetime 168h
  hearth device add pi --caps status --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(caps) == 0 {
				return exitError{code: 2, msg: "device add: give the device's capabilities with --caps (e.g. --caps system:read)"}
			}
			var tok ca.EnrollToken
			req := ca.AddDeviceRequest{Name: args[0], Caps: caps, TTL: ttl, Lifetime: lifetime}
			if err := adminCall(cmd, "device add", http.MethodPost, ca.AdminDevicesPath, req, &tok); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(tok)
			}
			line := enrollCommand(tok)
			w := e.stdout
			fmt.Fprintf(w, "Device %s added. Its one-time enrollment token expires %s (in %s):\n\n  %s\n\n",
				tok.Device, tok.ExpiresAt.Local().Format(time.RFC3339), time.Until(tok.ExpiresAt).Round(time.Second), tok.Token)
			fmt.Fprintf(w, "On the device, run:\n\n  %s\n\n", line)
			if !noQR {
				qrterminal.GenerateWithConfig(line, qrterminal.Config{Level: qrterminal.L, Writer: w, HalfBlocks: true,
					BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK, WhiteChar: qrterminal.WHITE_WHITE,
					BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 1})
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "Or with the step CLI:\n\n  step ca bootstrap --ca-url %s --fingerprint %s\n  step ca certificate %s device.crt device.key --token %s\n",
				tok.CAURL, tok.Fingerprint, tok.Device, tok.Token)
			return nil
		},
	}
	c.Flags().StringSliceVar(&caps, "caps", nil, "capabilities or bundles, comma-separated (required)")
	c.Flags().StringVar(&ttl, "ttl", "", "how long the token stays valid (default 15m, the server's ca.enroll_token_ttl)")
	c.Flags().StringVar(&lifetime, "lifetime", "", "lifetime of the device's certificates (default 720h, the server's ca.device_lifetime)")
	c.Flags().BoolVar(&asJSON, "json", false, `print {"token", "url", "expires_at", …} as JSON`)
	c.Flags().BoolVar(&noQR, "no-qr", false, "do not print the QR code")
	return c
}

// enrollCommand is the one-liner a device runs.
func enrollCommand(tok ca.EnrollToken) string {
	return fmt.Sprintf("hearth enroll --ca-url %s --fingerprint %s --token %s", tok.URL, tok.Fingerprint, tok.Token)
}

func newDeviceListCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--json]",
		Short: "List devices, their capabilities and certificates",
		Long: `List every device: whether it enrolled, when its newest certificate expires, whether it is revoked, and its capabilities.

The WARNINGS column flags a certificate that needs attention: "expires soon"
(less than 7 days, or a sixth of its lifetime, left), "not renewing" (past
two thirds of its lifetime and no client renewed it: run 'hearth enroll
--renew' on the device, or check that it still runs), and "expired" (the
device is locked out until it enrolls again).`,
		Example: `  hearth device list
  hearth device list --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Devices []ca.Device `json:"devices"`
			}
			if err := adminCall(cmd, "device list", http.MethodGet, ca.AdminDevicesPath, nil, &out); err != nil {
				return err
			}
			if asJSON {
				if out.Devices == nil {
					out.Devices = []ca.Device{}
				}
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if len(out.Devices) == 0 {
				fmt.Fprintln(e.stdout, "No devices yet; add one with 'hearth device add NAME --caps system:read'.")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tCERT EXPIRES\tWARNINGS\tCAPABILITIES")
			flagged := 0
			for _, d := range out.Devices {
				state := "waiting for enrollment"
				switch {
				case d.Revoked:
					state = "revoked"
				case d.Enrolled:
					state = "enrolled"
				case d.TokenExpires != nil && d.TokenExpires.Before(time.Now()):
					state = "token expired"
				}
				exp := "-"
				if d.CertExpires != nil {
					exp = d.CertExpires.Local().Format("2006-01-02 15:04")
				}
				caps := make([]string, len(d.Capabilities))
				for i, c := range d.Capabilities {
					caps[i] = string(c)
				}
				warn := "-"
				if len(d.Warnings) > 0 {
					warn = strings.Join(d.Warnings, ", ")
					flagged++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, state, exp, warn, strings.Join(caps, ","))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if flagged > 0 {
				fmt.Fprintf(e.stdout, "\n%d device(s) need attention: on a device that is not renewing, run 'hearth enroll --renew' (or 'step ca renew --daemon'); an expired one must enroll again ('hearth device revoke', then 'hearth device add').\n", flagged)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newDeviceRevokeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a device: its next request is refused and it cannot renew",
		Long: `Revoke a device. The gateway refuses its very next request (also on a
connection that is already open), and the CA refuses to renew any of its
certificates. To let the device back in, add it again and re-enroll it.`,
		Example: `  hearth device revoke kitchen-pi`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ca.AdminDevicesPath + "/" + url.PathEscape(args[0]) + "/revoke"
			if err := adminCall(cmd, "device revoke", http.MethodPost, path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Device %s revoked.\n", args[0])
			return nil
		},
	}
}
