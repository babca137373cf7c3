package ca

import (
	"context"
	"errors"
	"fmt"
)

// Ready reports whether the CA can issue: its authority is running, the
// intermediate that signs and the gateway's own certificate are within
// their validity, and the CA database answers. It is cheap enough for a
// readiness probe.
func (c *CA) Ready() error {
	if c.auth == nil || c.sdb == nil {
		return errors.New("ca: the authority is not running")
	}
	now := c.now()
	if now.Before(c.inter.NotBefore) || now.After(c.inter.NotAfter) {
		return fmt.Errorf("ca: the intermediate is outside its validity (%s to %s)", c.inter.NotBefore, c.inter.NotAfter)
	}
	if leaf := c.ServerCertificate().Leaf; leaf == nil || now.After(leaf.NotAfter) {
		return errors.New("ca: the gateway certificate has expired")
	}
	if err := c.st.Ping(context.Background()); err != nil {
		return fmt.Errorf("ca: the store: %w", err)
	}
	return nil
}
