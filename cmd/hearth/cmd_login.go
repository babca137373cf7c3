package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hearth-home/hearth/ca"
	"github.com/spf13/cobra"
)

func newLoginCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "login --url URL --user NAME",
		Short: "Log in with a password and print a short-lived token",
		Long: `Log in to a hearth gateway with a password (and a TOTP code when one is
enrolled) and print the access token, for scripts:
  curl -H "Authorization: Bearer $(hearth login …)" https://…

The password is read from standard input (one line) when stdin is not a
terminal, and prompted for without echo when it is. The gateway's
certificate is checked against --ca-file, or against the hearth root whose
SHA-256 is --fingerprint (as 'hearth init' printed it), or against the
system's roots.

With --recovery-code or --reset-code, a new password is read (twice on a
terminal) and set first; every earlier session of the user ends.`,
		Example: `  hearth login --url https://hearth.home.arpa:8443 --user alice --fingerprint 3a1f…
  printf '%s\n' "$PW" | hearth login --url https://hearth.home.arpa:8443 --user alice --ca-file root.crt --totp 123456
  hearth login --url https://hearth.home.arpa:8443 --user bob --reset-code hth_rs_… --fingerprint 3a1f…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			base, _ := f.GetString("url")
			user, _ := f.GetString("user")
			caFile, _ := f.GetString("ca-file")
			fp, _ := f.GetString("fingerprint")
			totp, _ := f.GetString("totp")
			scope, _ := f.GetStringSlice("scope")
			asJSON, _ := f.GetBool("json")
			recovery, _ := f.GetString("recovery-code")
			reset, _ := f.GetString("reset-code")
			provider, _ := f.GetString("oidc")
			base = strings.TrimRight(base, "/")
			if base == "" || (user == "" && provider == "") {
				return exitError{code: 2, msg: "login: --url and --user are required"}
			}
			// The password goes only over TLS (OWASP ASVS 5.0 V12.2.1).
			if u, err := url.Parse(base); err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" {
				return exitError{code: 2, msg: fmt.Sprintf("login: --url %q is not an https:// URL; give the gateway's address, e.g. https://hearth.home.arpa:8443 (a password is never sent without TLS)", base)}
			}
			if caFile != "" && fp != "" {
				return exitError{code: 2, msg: "login: give --ca-file or --fingerprint, not both"}
			}
			hc, err := gatewayClient(cmd.Context(), base, caFile, fp)
			if err != nil {
				return exitError{code: 1, msg: "login: " + err.Error()}
			}
			if provider != "" {
				s, err := newLoginOIDC(cmd.Context(), e, base, provider, hc)
				if err != nil {
					return err
				}
				return printSession(e, asJSON, s.Token, s)
			}
			in := newSecretInput(e)
			var pw string
			if recovery != "" || reset != "" {
				if pw, err = in.secret("New password: ", true); err != nil {
					return exitError{code: 1, msg: "login: " + err.Error()}
				}
				path, body := "/.hearth/v1/auth/recover", map[string]string{"username": user, "recovery_code": recovery, "new_password": pw}
				if reset != "" {
					path, body = "/.hearth/v1/auth/reset", map[string]string{"username": user, "reset_code": reset, "new_password": pw}
				}
				if err := postJSON(cmd.Context(), hc, base+path, body, nil); err != nil {
					return exitError{code: 1, msg: "login: " + err.Error()}
				}
				fmt.Fprintln(e.stderr, "new password set; earlier sessions have ended")
			} else if pw, err = in.secret("Password for "+user+": ", false); err != nil {
				return exitError{code: 1, msg: "login: " + err.Error()}
			}
			var out struct {
				Token        string    `json:"token"`
				RefreshToken string    `json:"refresh_token"`
				ExpiresAt    time.Time `json:"expires_at"`
				Capabilities []string  `json:"capabilities"`
				MFA          bool      `json:"mfa"`
			}
			body := map[string]any{"username": user, "password": pw}
			if totp != "" {
				body["totp"] = totp
			}
			if len(scope) > 0 {
				body["scope"] = scope
			}
			if err := postJSON(cmd.Context(), hc, base+"/.hearth/v1/auth/login", body, &out); err != nil {
				return exitError{code: 1, msg: "login: " + err.Error()}
			}
			return printSession(e, asJSON, out.Token, out)
		},
	}
	f := c.Flags()
	f.String("url", "", "the gateway's base URL, e.g. https://hearth.home.arpa:8443 (required)")
	f.String("user", "", "user name (required)")
	f.String("ca-file", "", "PEM file with hearth's root certificate")
	f.String("fingerprint", "", "SHA-256 (hex) of hearth's root certificate, as 'hearth init' printed it")
	f.String("totp", "", "TOTP code, when the user has enrolled one")
	f.StringSlice("scope", nil, "ask for fewer capabilities than the user has (comma-separated)")
	f.Bool("json", false, "print the whole answer (token, refresh token, expiry, capabilities) as JSON")
	f.String("recovery-code", "", "set a new password with this recovery code first")
	f.String("reset-code", "", "set a new password with this admin-issued reset code first")
	addLoginOIDCFlags(c)
	return c
}

func printSession(e *env, asJSON bool, token string, all any) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	fmt.Fprintln(e.stdout, token)
	return nil
}

// postJSON posts in as JSON and decodes a 2xx answer into out; other
// answers become an error carrying the server's message.
func postJSON(ctx context.Context, hc *http.Client, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Code string }
		if json.Unmarshal(rb, &e) != nil || e.Error == "" {
			e.Error = "server answered " + resp.Status
		}
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Error += " (retry after " + ra + "s)"
		}
		return fmt.Errorf("%s", e.Error)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// gatewayClient returns an HTTPS client that trusts caFile, or the hearth
// root pinned by fingerprint, or the system roots.
func gatewayClient(ctx context.Context, base, caFile, fingerprint string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case caFile != "":
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	case fingerprint != "":
		root, err := ca.FetchPinnedRoot(ctx, base, fingerprint, nil)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AddCert(root)
		cfg.RootCAs = pool
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true},
		Timeout:   60 * time.Second,
		// A redirect would resend the password (307/308) to wherever it
		// points, perhaps plain http: hearth's endpoints never redirect.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
