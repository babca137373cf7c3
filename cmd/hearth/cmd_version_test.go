package main

import (
	"encoding/json"
	"os"
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

// backup refuses a short passphrase and a malformed recipient before it
// writes anything.
func TestBackupRefusesWeakInput(t *testing.T) {
	dir := t.TempDir()
	out := dir + "/b.age"
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"too short\n", nil, "at least 15 characters"},
		{"", []string{"--recipient", "age1notakey"}, "--recipient"},
		{"", nil, "no Backup passphrase"},
	} {
		_, _, err := runCmd(t, tc.stdin, append([]string{"backup", "--dir", dir, "--out", out}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backup %v with stdin %q = %v, want an error saying %q", tc.args, tc.stdin, err, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a refused backup wrote %s", out)
		}
	}
}
