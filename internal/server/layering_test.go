package server

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering checks the import direction the design card asks for: the
// gateway (mtls) is a caller of the CA and of auth, not their base, so
// neither ca nor auth may depend on mtls, directly or through another
// package. The principal's context helpers and the shared errors live in
// authz (authz/context.go); the interfaces stay in mtls, where they are
// consumed, and their `var _ I = (*T)(nil)` checks are in server.go.
func TestLayering(t *testing.T) {
	for _, pkg := range []string{"github.com/hearth-home/hearth/ca", "github.com/hearth-home/hearth/auth"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == "github.com/hearth-home/hearth/mtls" || strings.HasPrefix(dep, "github.com/hearth-home/hearth/internal/server") {
				t.Errorf("%s depends on %s: the gateway and the composition must not be a base of the CA or auth", pkg, dep)
			}
		}
	}
}
