//go:build !lead

package main

import "github.com/spf13/cobra"

func newServeCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "serve", Short: "(not yet built)"}
}
