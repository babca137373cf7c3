package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/internal/admin"
)

// newUserLinkCmd is `hearth user link NAME --provider P --subject S`: the
// owner links an OIDC identity to a hearth user through the running
// server's admin socket. The subject is shown to the person when an
// unlinked login is refused, and in the audit log (auth.login, meta.subject).
func newUserLinkCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "link NAME --provider P --subject S",
		Short: "Link an OIDC identity (provider, subject) to a user",
		Long: `Link an identity at an OIDC provider configured in hearth.yaml to a hearth
user, so that "Sign in with P" signs that person in as NAME. An identity is
the provider's issuer together with the subject ("sub") it assigns; the
same subject at another provider is another identity.

The subject is shown to the person when hearth refuses an unlinked
identity, and in the audit log (auth.login, meta subject).`,
		Example: `  hearth user link alice --provider dex --subject CiQwOGE4Njg0Yi1kYjg4`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			provider, _ := cmd.Flags().GetString("provider")
			subject, _ := cmd.Flags().GetString("subject")
			if provider == "" || subject == "" {
				return exitError{code: 2, msg: "user link: --provider and --subject are required"}
			}
			dir, err := dataDir(cmd)
			if err != nil {
				return err
			}
			var out oidc.LinkResponse
			err = admin.NewClient(dir).Do(cmd.Context(), http.MethodPost, oidc.AdminPath,
				oidc.LinkRequest{Username: args[0], Provider: provider, Subject: subject}, &out)
			if errors.Is(err, admin.ErrNotRunning) {
				return exitError{code: 1, msg: err.Error()}
			}
			var ae *admin.Error
			if errors.As(err, &ae) {
				return exitError{code: 1, msg: "user link: " + ae.Message}
			}
			if err != nil {
				return fmt.Errorf("user link: %w", err)
			}
			fmt.Fprintf(e.stdout, "linked %s identity %s (issuer %s) to user %s\n", out.Provider, out.Subject, out.Issuer, out.Username)
			return nil
		},
	}
	c.Flags().String("provider", "", "provider name in hearth.yaml (required)")
	c.Flags().String("subject", "", "the identity's subject (sub) at that provider (required)")
	return c
}

// addLoginOIDCFlags adds `--oidc P` to the login command.
func addLoginOIDCFlags(c *cobra.Command) {
	c.Flags().String("oidc", "", "sign in with this OIDC provider from hearth.yaml, through the device authorization grant (RFC 8628), instead of a password")
}

// newLoginOIDC runs `hearth login --oidc P`: the device authorization grant
// against provider P, with the verification URI and user code printed on
// stderr, then hearth's session for the ID token obtained. hearthClient
// must trust hearth's root (the login command builds it as for password
// logins). The caller prints the session as it prints a password login's.
func newLoginOIDC(ctx context.Context, e *env, hearthURL, provider string, hearthClient *http.Client) (*oidc.Session, error) {
	s, err := oidc.DeviceLogin(ctx, oidc.DeviceLoginOptions{
		HearthURL:    hearthURL,
		Provider:     provider,
		HearthClient: hearthClient,
		Prompt:       e.stderr,
	})
	var he *oidc.HTTPError
	if errors.As(err, &he) {
		return nil, exitError{code: 1, msg: "login: " + he.Message}
	}
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return s, nil
}
