package config

import (
	"bytes"
	_ "embed"
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
}

// Render writes a commented hearth.yaml for d and checks that it parses and
// validates, so that init never writes a file serve would refuse.
func Render(d Defaults) ([]byte, error) {
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
