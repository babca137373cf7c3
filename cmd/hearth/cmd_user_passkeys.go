package main

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/auth"
)

// newUserPasskeysCmd lists a user's passkeys and removes them. There is
// no way to add one for someone: a passkey is registered by its owner on
// the Account page, from a fresh sign-in.
func newUserPasskeysCmd(e *env) *cobra.Command {
	var remove string
	var removeAll bool
	c := &cobra.Command{
		Use:   "passkeys NAME",
		Short: "List a user's passkeys, or remove them (a lost or stolen one)",
		Long: `List NAME's passkeys (name, ID, added, last used), or remove one with
--remove ID or all with --remove-all. An admin can remove passkeys but never
add one: the person adds their own on the Account page of the web UI,
from a sign-in of the last 5 minutes. Removing a passkey does not end
sessions already signed in with it; 'hearth user disable' does.`,
		Example: "  hearth user passkeys alice\n  hearth user passkeys alice --remove 3q2-7wAAAAAAAAA\n  hearth user passkeys alice --remove-all",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if remove != "" || removeAll {
				if remove != "" && removeAll {
					return exitError{code: 2, msg: "user passkeys: give --remove ID or --remove-all, not both"}
				}
				if err := adminCall(cmd, "user passkeys", http.MethodPost, userPath(args[0], "passkeys/remove"), map[string]string{"id": remove}, nil); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "passkeys removed for %s\n", args[0])
				return nil
			}
			var ps []auth.PasskeyInfo
			if err := adminCall(cmd, "user passkeys", http.MethodGet, userPath(args[0], "passkeys"), nil, &ps); err != nil {
				return err
			}
			if len(ps) == 0 {
				fmt.Fprintf(e.stdout, "%s has no passkeys\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tADDED\tLAST USED\tSYNCED")
			for _, p := range ps {
				last := "never"
				if !p.LastUsed.IsZero() {
					last = p.LastUsed.UTC().Format("2006-01-02 15:04")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", p.Label, p.ID, p.Created.UTC().Format("2006-01-02"), last, p.BackupEligible)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&remove, "remove", "", "remove the passkey with this ID")
	c.Flags().BoolVar(&removeAll, "remove-all", false, "remove every passkey of the user")
	return c
}
