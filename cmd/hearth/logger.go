package main

import (
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

// newLogger returns the process's structured logger: one JSON line per
// event on stderr, quiet (warn) unless --log-level says otherwise.
func newLogger(cmd *cobra.Command, e *env) zerolog.Logger {
	lvl := zerolog.WarnLevel
	if s, _ := cmd.Flags().GetString("log-level"); s != "" {
		if l, err := zerolog.ParseLevel(s); err == nil {
			lvl = l
		}
	}
	return zerolog.New(e.stderr).Level(lvl).With().Timestamp().Logger()
}
