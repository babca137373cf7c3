package main

import "github.com/spf13/cobra"

func newUserCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "user", Short: "(not yet built)"}
}
