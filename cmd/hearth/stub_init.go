//go:build !lead

package main

import "github.com/spf13/cobra"

func newInitCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "init", Short: "(not yet built)"}
}
