package server

import (
	"encoding/json"
	"testing"
)

// FuzzSharedConfig: the replicas' shared hearth.yaml record comes from the
// database, written by another process (maybe another hearth version, or
// a hand-edited row): decoding and checking it never panics, and a record
// checkShared accepts has bytes matching its sha256.
func FuzzSharedConfig(f *testing.F) {
	good := []byte("name: \"Home\"\n")
	for _, rec := range []sharedConfig{
		{Version: 1, SHA256: sha256Hex(good), YAML: good, Replica: "a"},
		{Version: 2, SHA256: sha256Hex(nil), YAML: []byte("no_such_setting: 1\n"), Replica: "b"},
		{Version: -1, SHA256: "", YAML: []byte("gateway: [\n")},
	} {
		b, err := json.Marshal(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":"x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeShared(b)
		if err != nil {
			return
		}
		if _, err := checkShared(rec, Options{}); err == nil && sha256Hex(rec.YAML) != rec.SHA256 {
			t.Fatalf("checkShared accepted a record whose bytes do not match its sha256: %+v", rec)
		}
	})
}
