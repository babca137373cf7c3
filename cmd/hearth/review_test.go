package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command's --help shows an example, as the CLI contract asks.
func TestEveryCommandHasAnExample(t *testing.T) {
	e := &env{}
	var walk func(path string, c *cobra.Command)
	walk = func(path string, c *cobra.Command) {
		if c.Example == "" {
			t.Errorf("hearth %s --help has no Example", path)
		}
		for _, sub := range c.Commands() {
			walk(strings.TrimSpace(path+" "+sub.Name()), sub)
		}
	}
	for _, mk := range commands {
		c := mk(e)
		walk(c.Name(), c)
	}
}
