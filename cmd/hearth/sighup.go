package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/server"
)

// reloadOnSIGHUP reloads hearth.yaml on every SIGHUP (the Unix convention,
// and systemd's ExecReload=kill -HUP $MAINPID) until the returned stop is
// called. A refused file is logged; the server keeps running as it was.
func reloadOnSIGHUP(ctx context.Context, s *server.Server, log zerolog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				if _, err := s.Reload(ctx, authz.LocalPrincipalID, "signal"); err != nil {
					log.Error().Err(err).Msg("SIGHUP: reload failed")
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
