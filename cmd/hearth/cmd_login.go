package main

import "github.com/spf13/cobra"

func newLoginCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "login", Short: "(not yet built)"}
}
