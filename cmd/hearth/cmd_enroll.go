package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/ca"
)

func newEnrollCmd(e *env) *cobra.Command {
	var caURL, fingerprint, token, out string
	var renew bool
	c := &cobra.Command{
		Use:   "enroll --ca-url URL --fingerprint FP --token T [--out DIR] [--renew]",
		Short: "Enroll this device with a hearth CA (and keep its certificate fresh)",
		Long: `Run on the device. Fetches the CA's root certificate over TLS and pins it
by its SHA-256 fingerprint (printed by 'hearth init' and 'hearth device
add'), generates an ECDSA P-256 key that never leaves this device, sends a
certificate request with the one-time token, and writes to --out:

  device.crt  the certificate chain
  device.key  the private key (mode 0600)
  root.crt    the pinned root, to trust the gateway

--ca-url is the gateway's URL (https://host:8443) or the CA listener's.
--token - reads the token from standard input (it stays out of 'ps').

With --renew the command keeps running and renews the certificate over
mTLS at about two thirds of its lifetime, retrying with exponential backoff
and jitter when the CA cannot be reached. It exits (status 1) when the CA
refuses the device (revoked) or the certificate expired before a renewal
succeeded: enroll again with a new token then. Without --token, --renew
renews the certificate already in --out.`,
		Example: `  hearth enroll --ca-url https://hearth.home.arpa:8443 --fingerprint 3f9a… --token eyJhbGciOi…
  hearth enroll --ca-url https://hearth.home.arpa:8443 --fingerprint 3f9a… --token - --out /etc/hearth-device --renew < token.txt
  hearth enroll --ca-url https://hearth.home.arpa:8443 --out /etc/hearth-device --renew`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd, e)
			if caURL == "" {
				return exitError{code: 2, msg: "enroll: --ca-url is required (e.g. https://hearth.home.arpa:8443)"}
			}
			if out == "" {
				dir, err := dataDir(cmd)
				if err != nil {
					return err
				}
				out = filepath.Join(dir, "device")
			}
			if token == "-" {
				line, err := bufio.NewReader(e.stdin).ReadString('\n')
				if err != nil && line == "" {
					return exitError{code: 2, msg: "enroll: --token -: no token on standard input"}
				}
				token = strings.TrimSpace(line)
			}
			var notBefore, notAfter time.Time
			switch {
			case token != "":
				if fingerprint == "" {
					return exitError{code: 2, msg: "enroll: --fingerprint is required with --token (hearth device add prints it)"}
				}
				res, err := ca.Enroll(ctx, ca.EnrollOptions{CAURL: caURL, Fingerprint: fingerprint, Token: token, OutDir: out})
				if err != nil {
					return exitError{code: 1, msg: "enroll: " + strings.TrimPrefix(err.Error(), "ca: ")}
				}
				fmt.Fprintf(e.stdout, "Enrolled. Certificate %s (valid until %s), key %s, root %s\n",
					res.CertFile, res.ExpiresAt.Local().Format(time.RFC3339), res.KeyFile, res.RootFile)
				notBefore, notAfter = res.NotBefore, res.ExpiresAt
			case renew:
				crt, err := ca.ReadDeviceCert(out)
				if err != nil {
					return exitError{code: 1, msg: fmt.Sprintf("enroll --renew: no certificate in %s; enroll first with --token", out)}
				}
				notBefore, notAfter = crt.NotBefore, crt.NotAfter
			default:
				return exitError{code: 2, msg: "enroll: give --token (to enroll) or --renew (to renew the certificate in --out)"}
			}
			if !renew {
				return nil
			}
			r := &ca.Renewer{
				Renew: func(ctx context.Context) (time.Time, time.Time, error) {
					res, err := ca.Renew(ctx, ca.RenewOptions{CAURL: caURL, Dir: out})
					if err != nil {
						return time.Time{}, time.Time{}, err
					}
					return res.NotBefore, res.ExpiresAt, nil
				},
				// A refusal of the device itself (revoked, unknown) will not
				// heal with retries.
				Permanent: func(err error) bool {
					var ae *ca.APIError
					return errors.As(err, &ae) && ae.Status == 401
				},
				OnRenew: func(na time.Time) {
					log.Info().Time("expires_at", na).Msg("enroll: certificate renewed")
					fmt.Fprintf(e.stdout, "Renewed; valid until %s\n", na.Local().Format(time.RFC3339))
				},
				OnError: func(err error, retry time.Duration) {
					log.Warn().Err(err).Dur("retry_in", retry).Msg("enroll: renewal failed")
				},
			}
			fmt.Fprintf(e.stdout, "Renewing at %s, then every two thirds of the lifetime; Ctrl-C stops.\n",
				ca.NextRenewal(notBefore, notAfter).Local().Format(time.RFC3339))
			if err := r.Run(ctx, notBefore, notAfter); err != nil && !errors.Is(err, context.Canceled) {
				return exitError{code: 1, msg: "enroll --renew: " + strings.TrimPrefix(err.Error(), "ca: ")}
			}
			return nil
		},
	}
	c.Flags().StringVar(&caURL, "ca-url", "", "the gateway's (or CA listener's) https URL")
	c.Flags().StringVar(&fingerprint, "fingerprint", "", "hex SHA-256 of the CA's root certificate")
	c.Flags().StringVar(&token, "token", "", "one-time enrollment token from 'hearth device add' ('-' reads stdin)")
	c.Flags().StringVar(&out, "out", "", "where to write device.crt, device.key, root.crt (default <dir>/device)")
	c.Flags().BoolVar(&renew, "renew", false, "keep running and renew the certificate before it expires")
	return c
}
