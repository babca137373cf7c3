package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// hearth version reports the module and Go version from the binary's
// build information, as JSON and as one line.
func TestVersion(t *testing.T) {
	var v buildVersion
	if err := json.Unmarshal([]byte(mustHearth(t, t.TempDir(), "version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Module != "github.com/hearth-home/hearth" || v.Version == "" || v.Go != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version --json = %+v", v)
	}
	line := mustHearth(t, t.TempDir(), "version")
	if !strings.HasPrefix(line, "hearth "+v.Version) || (v.Revision != "" && !strings.Contains(line, v.Revision)) {
		t.Errorf("version = %q, want it to start with hearth %s and name revision %q", line, v.Version, v.Revision)
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := mustHearth(t, t.TempDir(), "completion", sh); !strings.Contains(out, "hearth") || len(out) < 500 {
			t.Errorf("completion %s printed %d bytes", sh, len(out))
		}
	}
}
