package config

import (
	"bytes"
	_ "embed"
	"fmt"
	"strconv"
	"text/template"
)

//go:embed hearth.yaml.tmpl
var defaultTemplate string

// Defaults are the values `hearth init` writes into a new hearth.yaml.
type Defaults struct {
	Name            string
	Listen          string
	CAListen        string
	Upstream        string
	TrustDomain     string
	TrustedNetworks []string
	// PublicURL is gateway.public_url; empty leaves it to `hearth serve`.
	PublicURL string
	// Agent is the agent profile: AgentOpenClaw (the default, also for "")
	// or AgentSample (the sample agent of `hearth demo`).
	Agent string
}

// The agent profiles Render knows.
const (
	AgentOpenClaw = "openclaw"
	AgentSample   = "sample"
)

// CheckAgent returns the profile name for a --agent value, or an error
// naming the known ones.
func CheckAgent(a string) (string, error) {
	switch a {
	case "", AgentOpenClaw:
		return AgentOpenClaw, nil
	case AgentSample:
		return AgentSample, nil
	}
	return "", fmt.Errorf("config: unknown agent profile %q (known: %s, %s)", a, AgentOpenClaw, AgentSample)
}

// Render writes a commented hearth.yaml for d and checks that it parses and
// validates, so that init never writes a file serve would refuse.
func Render(d Defaults) ([]byte, error) {
	var err error
	if d.Agent, err = CheckAgent(d.Agent); err != nil {
		return nil, err
	}
	t := template.Must(template.New("hearth.yaml").Funcs(template.FuncMap{"quote": strconv.Quote}).Parse(defaultTemplate))
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, err
	}
	c, err := Parse(b.Bytes())
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
