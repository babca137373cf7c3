package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
)

// What counting adds to one gateway decision's audit append: the same
// authz.decision event recorded into audit.Discard directly and through
// the metrics decorator.
func BenchmarkRecorder(b *testing.B) {
	ev := audit.Event{
		Time: time.Now(), Name: audit.EventAuthzDecision, Outcome: audit.OutcomeAllow,
		Principal: "device:pi", Resource: "/api/status", Client: "127.0.0.1:5000",
		Meta: map[string]string{"method": "GET", "capability": "status", "zone": "lan", "route": "/api/status", "via": "device"},
	}
	ctx := context.Background()
	known := func(c string) bool { return c == "status" }
	for _, c := range []struct {
		name string
		rec  audit.Recorder
	}{
		{"discard", audit.Discard{}},
		{"counted", New().Recorder(audit.Discard{}, known)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.rec.Record(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
