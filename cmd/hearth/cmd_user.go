package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/internal/admin"
)

const usersPath = "/.hearth/v1/admin/users"

// adminCall sends one request to the running server's admin socket and
// turns its errors into one-line messages.
func adminCall(cmd *cobra.Command, what, method, path string, in, out any) error {
	dir, err := dataDir(cmd)
	if err != nil {
		return err
	}
	err = admin.NewClient(dir).Do(cmd.Context(), method, path, in, out)
	if errors.Is(err, admin.ErrNotRunning) {
		return exitError{code: 1, msg: err.Error()}
	}
	var ae *admin.Error
	if errors.As(err, &ae) {
		return exitError{code: 1, msg: what + ": " + ae.Message}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func userPath(name, action string) string {
	return usersPath + "/" + url.PathEscape(name) + "/" + action
}

func newUserCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "user",
		Short: "Manage users: add, passwd, list, unlock, disable, reset, recovery codes, TOTP",
		Long: `Manage the people who may log in with a password (or OIDC) when away from
home. Every subcommand talks to the running server over its admin socket in
the data dir, so start it first with 'hearth serve'.

Commands that take a password read it from standard input (one line) when
stdin is not a terminal, and prompt without echo when it is. To (re)set
someone else's password, issue a one-time code with 'user reset' (or add
them with --no-password): they choose their own, and no admin ever learns
it.`,
		Example: `  printf '%s\n' 'a long passphrase of words' | hearth user add bob --caps system:read
  hearth user list
  hearth user unlock bob`,
	}
	c.AddCommand(newUserAddCmd(e), newUserPasswdCmd(e), newUserListCmd(e), newUserUnlockCmd(e),
		newUserSimpleCmd(e, "disable", "Disable a user and end all their sessions",
			"A disabled user cannot log in; their tokens stop working at once. 'hearth user enable' undoes it.",
			"  hearth user disable bob", "disabled"),
		newUserSimpleCmd(e, "enable", "Enable a disabled user", "Undo 'hearth user disable'.", "  hearth user enable bob", "enabled"),
		newUserRecoveryCodesCmd(e), newUserResetCmd(e), newUserTOTPCmd(e), newUserLinkCmd(e), newUserPasskeysCmd(e))
	return c
}

func newUserAddCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "add NAME --caps C1,C2",
		Short: "Add a user with capabilities and a password",
		Long: `Add a user with the given capabilities or bundles (system:read, system:write,
system:admin, or single capabilities such as status).

The password is read from standard input, or prompted for twice on a
terminal. It must have at least 15 characters (a passphrase of a few words
is easiest), must not be a common password, and may be as long as 1024
bytes. With --no-password the user gets no password; instead a one-time
reset code is printed, with which they choose their own
(POST /.hearth/v1/auth/reset, or 'hearth login --reset-code').`,
		Example: `  hearth user add bob --caps system:read
  printf '%s\n' 'a long passphrase of words' | hearth user add bob --caps system:read,system:write
  hearth user add kid --caps status --no-password`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			caps, _ := cmd.Flags().GetStringSlice("caps")
			noPw, _ := cmd.Flags().GetBool("no-password")
			if len(caps) == 0 {
				return exitError{code: 2, msg: "user add: --caps is required (e.g. --caps system:read)"}
			}
			req := auth.AddUserRequest{Name: args[0], Caps: caps}
			if !noPw {
				pw, err := newSecretInput(e).secret("Password for "+args[0]+": ", true)
				if err != nil {
					return exitError{code: 1, msg: "user add: " + err.Error()}
				}
				if err := auth.CheckPassword(pw, args[0], false); err != nil {
					return exitError{code: 1, msg: "user add: " + strings.TrimPrefix(err.Error(), "auth: ")}
				}
				req.Password = pw
			}
			var out auth.AddUserAnswer
			if err := adminCall(cmd, "user add", http.MethodPost, usersPath, req, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "added user %s (%s)\n", out.Name, strings.Join(caps, ","))
			if out.ResetCode != "" {
				printResetCode(e, out.Name, out.ResetCode, out.ResetExpires)
			}
			return nil
		},
	}
	c.Flags().StringSlice("caps", nil, "capabilities or bundles, comma-separated (required)")
	c.Flags().Bool("no-password", false, "set no password; print a one-time reset code for the user instead")
	return c
}

func printResetCode(e *env, name, code string, exp time.Time) {
	fmt.Fprintf(e.stdout, "one-time reset code for %s (shown once, valid until %s):\n  %s\n", name, exp.Local().Format(time.RFC3339), code)
	fmt.Fprintf(e.stdout, "give it to %s; they set their own password with:\n  hearth login --url URL --user %s --reset-code CODE\n", name, name)
}

func newUserPasswdCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Change a user's password (needs the current one)",
		Long: `Change NAME's password. The current password is needed (and throttled like a
login); an admin who does not know it issues a reset code with
'hearth user reset' instead. Every session of the user ends.

On a terminal both passwords are prompted for without echo; otherwise
standard input holds the current password on the first line and the new one
on the second.`,
		Example: `  hearth user passwd alice
  printf '%s\n%s\n' "$OLD" "$NEW" | hearth user passwd alice`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := newSecretInput(e)
			old, err := in.secret("Current password: ", false)
			if err != nil {
				return exitError{code: 1, msg: "user passwd: " + err.Error()}
			}
			pw, err := in.secret("New password: ", true)
			if err != nil {
				return exitError{code: 1, msg: "user passwd: " + err.Error()}
			}
			totp, _ := cmd.Flags().GetString("totp")
			if err := adminCall(cmd, "user passwd", http.MethodPost, userPath(args[0], "passwd"), auth.PasswdRequest{OldPassword: old, NewPassword: pw, TOTP: totp}, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "password of %s changed; their sessions have ended\n", args[0])
			return nil
		},
	}
	c.Flags().String("totp", "", "current TOTP code, when the user has enrolled one")
	return c
}

func newUserListCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:     "list",
		Short:   "List users, their capabilities and lockout state",
		Example: "  hearth user list\n  hearth user list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var us []auth.UserInfo
			if err := adminCall(cmd, "user list", http.MethodGet, usersPath, nil, &us); err != nil {
				return err
			}
			if j, _ := cmd.Flags().GetBool("json"); j {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(us)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCAPS\tSTATE\tTOTP\tRECOVERY CODES")
			for _, u := range us {
				var st []string
				if u.Disabled {
					st = append(st, "disabled")
				}
				if !u.PasswordSet {
					st = append(st, "no-password")
				}
				if u.PasswordLoginDisabled {
					st = append(st, "password-login-off")
				} else if u.LockedUntil != nil {
					st = append(st, "locked-until-"+u.LockedUntil.Local().Format("15:04:05"))
				}
				if u.Failures > 0 {
					st = append(st, fmt.Sprintf("%d-failures", u.Failures))
				}
				if len(st) == 0 {
					st = []string{"ok"}
				}
				totp := "no"
				if u.TOTP {
					totp = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", u.Name, strings.Join(u.Caps, ","), strings.Join(st, ","), totp, u.RecoveryCodesLeft)
			}
			return tw.Flush()
		},
	}
	c.Flags().Bool("json", false, "print JSON")
	return c
}

func newUserUnlockCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "unlock NAME",
		Short: "End a lockout and clear the failure count",
		Long: `End NAME's lockout, clear its failure count and turn password login back on
after the 100-failure limit. It also works from an enrolled device with
hearth:admin through POST /.hearth/v1/admin/users/NAME/unlock.`,
		Example: "  hearth user unlock alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd, "user unlock", http.MethodPost, userPath(args[0], "unlock"), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "unlocked %s\n", args[0])
			return nil
		},
	}
}

func newUserSimpleCmd(e *env, action, short, long, example, done string) *cobra.Command {
	return &cobra.Command{
		Use: action + " NAME", Short: short, Long: long, Example: example,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd, "user "+action, http.MethodPost, userPath(args[0], action), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %s\n", done, args[0])
			return nil
		},
	}
}

func newUserRecoveryCodesCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "recovery-codes NAME",
		Short: "Replace a user's recovery codes and print the new ones once",
		Long: `Replace NAME's ten recovery codes with new ones and print them, once. Each
code works one time, with POST /.hearth/v1/auth/recover (or
'hearth login --recovery-code'), to set a new password when it is lost.
The old codes stop working.`,
		Example: "  hearth user recovery-codes alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct{ Codes []string }
			if err := adminCall(cmd, "user recovery-codes", http.MethodPost, userPath(args[0], "recovery-codes"), nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "recovery codes for %s (shown once; keep them somewhere safe, each works once):\n", args[0])
			for _, c := range out.Codes {
				fmt.Fprintf(e.stdout, "  %s\n", c)
			}
			return nil
		},
	}
}

func newUserResetCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "reset NAME",
		Short: "Issue a one-time code with which a user sets a new password",
		Long: `Issue a one-time reset code for NAME, valid for a short time (30 minutes by
default). Hand it to the person; they choose their new password with it, so
that no admin ever chooses or learns it. Using it ends all their sessions.`,
		Example: "  hearth user reset bob",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out auth.ResetAnswer
			if err := adminCall(cmd, "user reset", http.MethodPost, userPath(args[0], "reset"), nil, &out); err != nil {
				return err
			}
			printResetCode(e, args[0], out.Code, out.ExpiresAt)
			return nil
		},
	}
}

func newUserTOTPCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "totp NAME",
		Short: "Enrol a TOTP authenticator app as a second factor",
		Long: `Enrol a TOTP (RFC 6238) second factor for NAME: prints a QR code and the
secret, once, for an authenticator app, then asks for a code from the app
to confirm. From then on logins need a code, and the password may be as
short as 8 characters.`,
		Example: "  hearth user totp alice\n  hearth user totp alice --code 123456   # confirm later\n  hearth user totp alice --remove        # lost the authenticator",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rm, _ := cmd.Flags().GetBool("remove"); rm {
				if err := adminCall(cmd, "user totp", http.MethodPost, userPath(args[0], "totp/remove"), nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "TOTP removed for %s; enrol again with 'hearth user totp %s'\n", args[0], args[0])
				return nil
			}
			code, _ := cmd.Flags().GetString("code")
			if code == "" {
				var out auth.TOTPAnswer
				if err := adminCall(cmd, "user totp", http.MethodPost, userPath(args[0], "totp"), nil, &out); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "scan this with an authenticator app (shown once):\n")
				qrterminal.GenerateWithConfig(out.URL, qrterminal.Config{Level: qrterminal.L, Writer: e.stdout, HalfBlocks: true,
					BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK, WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 1})
				fmt.Fprintf(e.stdout, "or enter the secret by hand: %s\n", out.Secret)
				var err error
				if code, err = newSecretInput(e).plain("Code from the app: "); err != nil {
					return exitError{code: 1, msg: "user totp: " + err.Error() + "; confirm later with --code"}
				}
			}
			if err := adminCall(cmd, "user totp", http.MethodPost, userPath(args[0], "totp/confirm"), map[string]string{"code": code}, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "TOTP enrolled for %s\n", args[0])
			return nil
		},
	}
	c.Flags().String("code", "", "confirm a pending enrolment with this code")
	c.Flags().Bool("remove", false, "remove the user's TOTP factor (a lost authenticator)")
	return c
}
