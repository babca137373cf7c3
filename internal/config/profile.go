package config

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// ApplyProfile rewrites an existing hearth.yaml for the agent profile
// agent (see [CheckAgent]): gateway.routes and gateway.agent become the
// profile's, gateway.public_url is set when publicURL is not empty, the
// profile's capabilities are added to authz.capabilities, its bundles
// replace those of the same name and its requirements are added where the
// file has none for that capability. Everything else, comments included,
// is kept. The result is parsed and validated before it is returned, so
// that `hearth agent setup` never writes a file serve would refuse.
func ApplyProfile(existing []byte, agent, publicURL string) ([]byte, error) {
	cur, err := Parse(existing)
	if err != nil {
		return nil, err
	}
	if publicURL == "" {
		publicURL = cur.Gateway.PublicURL
	}
	prof, err := Render(Defaults{
		Name: cur.Name, Listen: cur.Gateway.Listen, CAListen: cur.CA.Listen, Upstream: cur.Gateway.Upstream,
		TrustDomain: cur.CA.TrustDomain, TrustedNetworks: cur.Gateway.TrustedNetworks, PublicURL: publicURL, Agent: agent,
	})
	if err != nil {
		return nil, err
	}
	var doc, pdoc yaml.Node
	if err := yaml.Unmarshal(existing, &doc); err != nil {
		return nil, fmt.Errorf("config: %s: %w", FileName, err)
	}
	if err := yaml.Unmarshal(prof, &pdoc); err != nil {
		return nil, err
	}
	root, proot := docRoot(&doc), docRoot(&pdoc)
	if root == nil {
		return nil, fmt.Errorf("config: %s is not a mapping", FileName)
	}
	gw, pgw := childMap(root, "gateway", true), childMap(proot, "gateway", false)
	for _, k := range []string{"public_url", "routes", "agent"} {
		if v := childMap(pgw, k, false); v != nil {
			set(gw, k, v, keyNode(pgw, k))
		} else {
			del(gw, k)
		}
	}
	az, paz := childMap(root, "authz", true), childMap(proot, "authz", false)
	caps := childMap(az, "capabilities", false)
	if caps == nil || caps.Kind != yaml.SequenceNode {
		caps = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		set(az, "capabilities", caps, nil)
	}
	for _, c := range childMap(paz, "capabilities", false).Content {
		if !hasScalar(caps, c.Value) {
			caps.Content = append(caps.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: c.Value, Style: yaml.DoubleQuotedStyle})
		}
	}
	for _, sect := range []struct {
		name    string
		replace bool
	}{{"bundles", true}, {"requirements", false}} {
		m := childMap(az, sect.name, true)
		m.Style = 0
		pm := childMap(paz, sect.name, false)
		if pm == nil || pm.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(pm.Content); i += 2 {
			k := pm.Content[i].Value
			if sect.replace || childMap(m, k, false) == nil {
				set(m, k, pm.Content[i+1], pm.Content[i])
			}
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
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

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 && n.Content[0].Kind == yaml.MappingNode {
		return n.Content[0]
	}
	return nil
}

// childMap is the value of key k in mapping m (see child); with create, an
// empty mapping is added when there is none (or when the value is not a
// mapping).
func childMap(m *yaml.Node, k string, create bool) *yaml.Node {
	if !create || m == nil {
		return child(m, k)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			if m.Content[i+1].Kind != yaml.MappingNode {
				m.Content[i+1] = &yaml.Node{Kind: yaml.MappingNode}
			}
			return m.Content[i+1]
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, v)
	return v
}

func keyNode(m *yaml.Node, k string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			return m.Content[i]
		}
	}
	return nil
}

// set makes m[k] = v; a new key takes pk's comments.
func set(m *yaml.Node, k string, v, pk *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			if pk != nil {
				m.Content[i].HeadComment = pk.HeadComment
			}
			m.Content[i+1] = v
			return
		}
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Value: k}
	if pk != nil {
		key.HeadComment, key.Style = pk.HeadComment, pk.Style
	}
	m.Content = append(m.Content, key, v)
}

func del(m *yaml.Node, k string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func hasScalar(seq *yaml.Node, v string) bool {
	for _, c := range seq.Content {
		if c.Value == v {
			return true
		}
	}
	return false
}
