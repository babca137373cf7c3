package metrics

import (
	"strings"
	"testing"

	"github.com/hearth-home/hearth/audit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Each configured witness's lag is reported under its name at scrape time,
// and follows the log between scrapes.
func TestWitnessCollector(t *testing.T) {
	lag := int64(7)
	c := WitnessCollector(func() []audit.WitnessStatus {
		return []audit.WitnessStatus{{Name: "witness.example/w", Lag: lag}, {Name: "other.example/w2", Lag: 0}}
	})
	want := func(n string) string {
		return `# HELP hearth_audit_witness_lag_entries Entries the log holds beyond the newest checkpoint each configured witness cosigned (label witness: its key name from hearth.yaml).
# TYPE hearth_audit_witness_lag_entries gauge
hearth_audit_witness_lag_entries{witness="other.example/w2"} 0
hearth_audit_witness_lag_entries{witness="witness.example/w"} ` + n + "\n"
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want("7"))); err != nil {
		t.Error(err)
	}
	lag = 0
	if err := testutil.CollectAndCompare(c, strings.NewReader(want("0"))); err != nil {
		t.Error(err)
	}
	none := WitnessCollector(func() []audit.WitnessStatus { return nil })
	if n := testutil.CollectAndCount(none); n != 0 {
		t.Errorf("no witnesses: %d series, want 0", n)
	}
}
