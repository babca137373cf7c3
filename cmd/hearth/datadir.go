package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// dataDir resolves --dir, then $HEARTH_DIR, then the user's data dir.
func dataDir(cmd *cobra.Command) (string, error) {
	if d, _ := cmd.Flags().GetString("dir"); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("HEARTH_DIR"); d != "" {
		return filepath.Abs(d)
	}
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --dir, no $HEARTH_DIR and no home directory: pass --dir")
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "hearth"), nil
}
