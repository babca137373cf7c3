package config

import (
	"strings"
	"testing"
)

// TestAuditWitnesses: audit.witnesses in hearth.yaml parses and validates;
// a witness with a key that is not a cosignature/v1 key is refused.
func TestAuditWitnesses(t *testing.T) {
	good := `audit:
  witnesses:
    - url: https://witness.example/
      key: witness.example/w+54610131+BO1JKMYo0cLG6ukDOJBZlWEpWSc6XGP5NjbBRhSshzfR
`
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Audit.Witnesses) != 1 || c.Audit.Witnesses[0].URL != "https://witness.example/" {
		t.Fatalf("witnesses = %+v", c.Audit.Witnesses)
	}
	if err := c.Audit.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, bad := range []string{
		strings.Replace(good, "+BO1J", "+AO1J", 1),                      // not a cosignature/v1 key (type 0x01, and its hash no longer matches)
		strings.Replace(good, "https://witness.example/", "ftp://x", 1), // not http(s)
	} {
		c, err := Parse([]byte(bad))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepted\n%s", bad)
		}
	}
}
