package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/mtls"
)

// Problem is one error in hearth.yaml, with the line it is on (1-based;
// 0 when no line can be named).
type Problem struct {
	Line int    `json:"line"`
	Path string `json:"path,omitempty"` // e.g. "gateway.routes[2]"
	Msg  string `json:"error"`
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(FileName)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Check parses and validates hearth.yaml as `hearth serve` and a reload
// would, and returns every problem it finds, each with its line: a YAML
// syntax error, every unknown or mistyped key, and the validation errors
// of each section, route, trusted network and OIDC provider separately,
// so that one mistake does not hide the next. No problems means serve
// accepts the file.
func Check(b []byte) []Problem {
	if len(b) > MaxSize {
		return []Problem{{Msg: fmt.Sprintf("the file is larger than %d bytes", MaxSize)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return yamlProblems(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return yamlProblems(err)
	}
	var ps []Problem
	add := func(section string, n *yaml.Node, path string, err error) {
		ps = append(ps, locate(root, section, n, path, err))
	}
	policy, err := authz.New(c.Authz)
	if err != nil {
		add("authz", nil, "authz", err)
	}
	gw := child(root, "gateway")
	if _, err := (mtls.Config{Upstream: c.Gateway.Upstream}).UpstreamURL(); err != nil {
		add("gateway", child(gw, "upstream"), "gateway.upstream", err)
	}
	nets := child(gw, "trusted_networks")
	for i, n := range c.Gateway.TrustedNetworks {
		if _, err := (mtls.Config{TrustedNetworks: []string{n}}).Networks(); err != nil {
			add("gateway", item(nets, i), fmt.Sprintf("gateway.trusted_networks[%d]", i), err)
		}
	}
	if policy != nil {
		routes := child(gw, "routes")
		bad := false
		for i, r := range c.Gateway.Routes {
			if err := (mtls.Config{Upstream: c.Gateway.Upstream, Routes: []mtls.Route{r}}).Validate(policy); err != nil && !isUpstreamErr(err, c) {
				add("gateway", item(routes, i), fmt.Sprintf("gateway.routes[%d]", i), err)
				bad = true
			}
		}
		if !bad && len(ps) == 0 {
			// Problems between routes (the same path twice) show only in
			// the whole table.
			if err := c.Gateway.Validate(policy); err != nil {
				add("gateway", routes, "gateway.routes", err)
			}
		}
	}
	if err := c.CA.Validate(); err != nil {
		add("ca", nil, "ca", err)
	}
	if err := c.Auth.Validate(); err != nil {
		add("auth", nil, "auth", err)
	}
	provs := child(root, "oidc")
	bad := false
	for i, p := range c.OIDC {
		if err := oidc.ValidateProviders([]oidc.Provider{p}); err != nil {
			for _, e := range unjoin(err) {
				add("oidc", item(provs, i), fmt.Sprintf("oidc[%d]", i), e)
			}
			bad = true
		}
	}
	if !bad {
		if err := oidc.ValidateProviders(c.OIDC); err != nil {
			add("oidc", provs, "oidc", err)
		}
	}
	if len(ps) == 0 {
		// Whatever the checks above do not single out, Validate still
		// catches, so that Check never passes a file serve refuses.
		if err := c.Validate(); err != nil {
			ps = append(ps, Problem{Line: 1, Msg: err.Error()})
		}
	}
	return ps
}

func isUpstreamErr(err error, c Config) bool {
	_, uerr := (mtls.Config{Upstream: c.Gateway.Upstream}).UpstreamURL()
	return uerr != nil && err.Error() == uerr.Error()
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlProblems splits a decoding error into one problem per line it names.
func yamlProblems(err error) []Problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]Problem, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "config: "+FileName+": ")
		p := Problem{Msg: m}
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Msg = sm[2]
		}
		out = append(out, p)
	}
	return out
}

var (
	dotted = regexp.MustCompile(`\b[a-z_0-9]+(?:\.[a-z_0-9]+)+\b`)
	quoted = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// locate names the line of err: the node the check was about, else a key
// or value in the section that the message quotes (the last quoted name
// first: "bundle X names unknown capability Y" is about Y), else a dotted
// setting name the message mentions (ca.listen), else the section's key.
func locate(root *yaml.Node, section string, n *yaml.Node, path string, err error) Problem {
	p := Problem{Path: path, Msg: err.Error()}
	if n != nil {
		p.Line = n.Line
		return p
	}
	sec := child(root, section)
	qs := quoted.FindAllStringSubmatch(p.Msg, -1)
	for i := len(qs) - 1; i >= 0; i-- { // the last quoted name is the most specific
		s, uerr := strconv.Unquote(`"` + qs[i][1] + `"`)
		if uerr != nil || s == "" {
			continue
		}
		if found := find(sec, s); found != nil {
			p.Line = found.Line
			return p
		}
	}
	for _, d := range dotted.FindAllString(p.Msg, -1) {
		cur := root
		for _, k := range strings.Split(d, ".") {
			cur = child(cur, k)
		}
		if cur != nil {
			p.Line, p.Path = cur.Line, d
			return p
		}
	}
	if k := key(root, section); k != nil {
		p.Line = k.Line
	}
	return p
}

// key returns the key node of name in mapping m.
func key(m *yaml.Node, name string) *yaml.Node {
	if i := entry(m, name); i >= 0 {
		return m.Content[i]
	}
	return nil
}

// child returns the value node of name in mapping m.
func child(m *yaml.Node, name string) *yaml.Node {
	if i := entry(m, name); i >= 0 {
		return m.Content[i+1]
	}
	return nil
}

// entry returns the index of name's key node in mapping m, or -1.
func entry(m *yaml.Node, name string) int {
	if m == nil || m.Kind != yaml.MappingNode {
		return -1
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return i
		}
	}
	return -1
}

// item returns element i of sequence s.
func item(s *yaml.Node, i int) *yaml.Node {
	if s == nil || s.Kind != yaml.SequenceNode || i >= len(s.Content) {
		return nil
	}
	return s.Content[i]
}

// find returns the first scalar under n whose value is v.
func find(n *yaml.Node, v string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Value == v {
		return n
	}
	for _, c := range n.Content {
		if f := find(c, v); f != nil {
			return f
		}
	}
	return nil
}
