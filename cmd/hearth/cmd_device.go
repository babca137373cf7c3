package main

import "github.com/spf13/cobra"

func newDeviceCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "device", Short: "(not yet built)"}
}
