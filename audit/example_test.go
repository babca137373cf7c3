package audit_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/hearth-home/hearth/audit"
)

// The life of a log: create it once, open it when the server starts, record
// events (each Record returns once the entry is durable and signed), and
// verify it from its files at any time.
func Example() {
	dir, err := os.MkdirTemp("", "hearth-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := audit.Init(dir); err != nil {
		log.Fatal(err)
	}
	l, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		log.Fatal(err)
	}
	err = l.Record(context.Background(), audit.Event{
		Name:      audit.EventTokenIssue,
		Outcome:   audit.OutcomeSuccess,
		Principal: "user:alice",
		Meta:      map[string]string{"token_id": l.SecretID([]byte("the token itself is never logged"))},
	})
	if err != nil {
		// Not in the log: refuse the request (HTTP 503).
		log.Fatal(err)
	}
	l.Close()

	res, err := audit.Verify(dir, audit.VerifyOptions{})
	fmt.Println(res.OK, res.Entries, err)
	// Output: true 2 <nil>
}
