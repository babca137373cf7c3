package main

import "github.com/spf13/cobra"

func newEnrollCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "enroll", Short: "(not yet built)"}
}
