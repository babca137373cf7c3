package main

import "github.com/spf13/cobra"

func newAuthzCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "authz", Short: "(not yet built)"}
}
