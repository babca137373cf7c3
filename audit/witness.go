package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/torchwood"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
)

// Witness is one witness of audit.witnesses in hearth.yaml: a service that
// speaks c2sp.org/tlog-witness v1.0.0, checks that each checkpoint the log
// pushes extends the last one it saw, and cosigns it.
type Witness struct {
	// URL is the witness's prefix: checkpoints are POSTed to
	// <url>/add-checkpoint.
	URL string `yaml:"url"`
	// Key is the witness's cosignature verifier key (c2sp.org/tlog-cosignature:
	// <name>+<hash>+<base64 of 0x04 and the Ed25519 key>).
	Key string `yaml:"key"`
}

// WitnessesDir holds, per witness, the latest checkpoint it cosigned: the
// log's note with the witness's cosignature lines added.
const WitnessesDir = "witnesses"

// maxWitnessResponse bounds a witness's answer.
const maxWitnessResponse = 64 << 10

func (w Witness) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("audit: witness url %q is not an http(s) URL", w.URL)
	}
	if _, err := torchwood.NewCosignatureVerifier(w.Key); err != nil {
		return fmt.Errorf("audit: witness %s: key %q is not a cosignature/v1 verifier key: %v", w.URL, w.Key, err)
	}
	return nil
}

// WitnessStatus is what the log knows of one witness, for a health page or
// metrics.
type WitnessStatus struct {
	URL  string `json:"url"`
	Name string `json:"name"`
	// Size is the size of the latest checkpoint the witness cosigned.
	Size int64 `json:"size"`
	// Lag is how many entries the log has beyond Size.
	Lag         int64     `json:"lag"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Error is the last push's failure, "" after a success.
	Error string `json:"error,omitempty"`
	// Refused is set when the witness answered that the log's history is
	// not the one it saw (a consistency proof it rejects, or a tree larger
	// than the log's): the log was rewritten, truncated or forked.
	Refused bool `json:"refused,omitempty"`
}

// witnessClient pushes checkpoints to one witness.
type witnessClient struct {
	w        Witness
	verifier *torchwood.CosignatureVerifier
	path     string // where the latest cosigned checkpoint is kept
	hc       *http.Client

	mu     sync.Mutex
	status WitnessStatus
	old    int64  // the size the witness is believed to have
	cosig  []byte // the cosignature lines of the latest cosigned checkpoint
	cpText []byte // its text
}

func witnessFile(adir string, v note.Verifier) string {
	return filepath.Join(adir, WitnessesDir, fmt.Sprintf("%08x.note", v.KeyHash()))
}

func newWitnessClient(adir string, w Witness, hc *http.Client, logVerifier note.Verifier) (*witnessClient, error) {
	if err := w.validate(); err != nil {
		return nil, err
	}
	v, _ := torchwood.NewCosignatureVerifier(w.Key)
	c := &witnessClient{w: w, verifier: v, path: witnessFile(adir, v), hc: hc}
	c.status = WitnessStatus{URL: w.URL, Name: v.Name()}
	if b, err := os.ReadFile(c.path); err == nil {
		if n, err := note.Open(b, note.VerifierList(logVerifier, v)); err == nil && len(n.Sigs) == 2 {
			if cp, err := ParseCheckpoint([]byte(n.Text)); err == nil {
				c.old, c.status.Size, c.cpText = cp.Size, cp.Size, []byte(n.Text)
				c.cosig = cosignatureLines(b, v.Name())
			}
		}
	}
	return c, nil
}

// cosignatureLines returns the signature lines of msg by key name.
func cosignatureLines(msg []byte, name string) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(msg, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("— "+name+" ")) {
			out = append(out, l...)
		}
	}
	return out
}

// errWitnessRefused marks a witness's refusal of the log's history.
var errWitnessRefused = errors.New("the witness refuses the log's history")

// push sends the checkpoint (cp, msg) to the witness with the tlog-witness
// add-checkpoint protocol: old size, consistency proof from it, the
// signed checkpoint. A 409 names the size the witness has: push retries
// once from there. A 422 (or a witness ahead of the log) means the history
// the witness saw is not this log's: reported, not retried.
func (c *witnessClient) push(ctx context.Context, l consistencyProver, cp Checkpoint, msg []byte) error {
	c.mu.Lock()
	old := c.old
	c.mu.Unlock()
	for attempt := 0; attempt < 3; attempt++ {
		if old > cp.Size {
			return fmt.Errorf("%w: it has seen %d entries and the log has %d (truncated or rewritten)", errWitnessRefused, old, cp.Size)
		}
		var body bytes.Buffer
		fmt.Fprintf(&body, "old %d\n", old)
		if old > 0 && old < cp.Size {
			p, err := l.ProveConsistency(old, cp.Size)
			if err != nil {
				return err
			}
			for _, h := range p.Proof {
				body.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
			}
		}
		body.WriteString("\n")
		body.Write(msg)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.w.URL, "/")+"/add-checkpoint", &body)
		if err != nil {
			return err
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return err
		}
		rb, err := io.ReadAll(io.LimitReader(resp.Body, maxWitnessResponse+1))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		if len(rb) > maxWitnessResponse {
			return fmt.Errorf("answer longer than %d bytes", maxWitnessResponse)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			lines, err := parseCosignatures(rb, msg, c.verifier)
			if err != nil {
				return err
			}
			if err := c.keep(cp, msg, lines); err != nil {
				return err
			}
			return nil
		case http.StatusConflict:
			size, err := parseConflictSize(resp.Header.Get("Content-Type"), rb)
			if err != nil {
				return err
			}
			if size == old {
				return fmt.Errorf("the witness answered 409 with the size sent, %d", old)
			}
			old = size
			c.mu.Lock()
			c.old = size
			c.mu.Unlock()
		case http.StatusUnprocessableEntity:
			return fmt.Errorf("%w: the consistency proof from %d to %d does not verify against the tree it has seen (the log was rewritten or forked): %s", errWitnessRefused, old, cp.Size, firstLine(rb))
		default:
			return fmt.Errorf("witness answered %s: %s", resp.Status, firstLine(rb))
		}
	}
	return errors.New("the witness kept answering 409")
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "?")
}

// parseConflictSize reads a 409 answer: Content-Type text/x.tlog.size and
// the size the witness has, in canonical decimal, one line
// (c2sp.org/tlog-witness, add-checkpoint).
func parseConflictSize(ctype string, body []byte) (int64, error) {
	if mt, _, _ := strings.Cut(ctype, ";"); strings.TrimSpace(mt) != "text/x.tlog.size" {
		return 0, fmt.Errorf("409 answer has Content-Type %q, not text/x.tlog.size", ctype)
	}
	s, ok := strings.CutSuffix(string(body), "\n")
	if !ok {
		s = string(body)
	}
	n, ok := parseCanonicalInt(s)
	if !ok {
		return 0, errors.New("409 answer is not a tree size")
	}
	return n, nil
}

// parseCosignatures checks a 200 answer: one or more signature lines, each
// ending in a newline, at least one a valid cosignature of msg's
// checkpoint by v. It returns v's lines.
func parseCosignatures(body, msg []byte, v note.Verifier) ([]byte, error) {
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return nil, errors.New("the witness's answer is not signature lines")
	}
	for _, l := range bytes.SplitAfter(body[:len(body)-1], []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("— ")) || len(bytes.TrimSuffix(l, []byte("\n"))) <= len("— ") {
			return nil, errors.New("the witness's answer has a line that is not a signature")
		}
	}
	n, err := note.Open(append(bytes.Clone(msg), body...), note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("the witness's cosignature does not verify: %w", err)
	}
	if len(n.Sigs) == 0 {
		return nil, errors.New("the witness's answer has no cosignature by its key")
	}
	return cosignatureLines(body, v.Name()), nil
}

// keep stores the cosigned checkpoint: the log's note and the witness's
// lines, written to a temporary file and renamed over the previous one.
func (c *witnessClient) keep(cp Checkpoint, msg, lines []byte) error {
	data := append(bytes.Clone(msg), lines...)
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	tmp := c.path + ".tmp"
	os.Remove(tmp)
	if err := writeFileSync(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := syncDir(filepath.Dir(c.path)); err != nil {
		return err
	}
	c.mu.Lock()
	c.old, c.status.Size, c.cosig, c.cpText = cp.Size, cp.Size, lines, cp.Text()
	c.mu.Unlock()
	return nil
}

// consistencyProver proves that the log's tree of size entries extends
// the tree of old entries (*Log over its hashes file; the PostgreSQL log
// over its hashes table).
type consistencyProver interface {
	ProveConsistency(old, size int64) (*ConsistencyProof, error)
}

// WitnessPusher pushes a log's checkpoints to its witnesses
// (c2sp.org/tlog-witness) and keeps their cosignatures, per witness, in
// <audit dir>/witnesses: the file log uses one, and so does the replica
// that sequences the PostgreSQL log (internal/pgaudit).
type WitnessPusher struct {
	clients []*witnessClient
	prove   consistencyProver
	log     zerolog.Logger
}

// NewWitnessPusher returns a pusher for the witnesses ws of the log whose
// checkpoints verifier checks; cosigned checkpoints are kept under adir
// (a log's audit directory), prove gives the consistency proofs; hc is the
// HTTP client (nil: a 10-second timeout).
func NewWitnessPusher(adir string, ws []Witness, hc *http.Client, verifier note.Verifier, prove interface {
	ProveConsistency(old, size int64) (*ConsistencyProof, error)
}, lg zerolog.Logger) (*WitnessPusher, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	p := &WitnessPusher{prove: prove, log: lg}
	for _, w := range ws {
		c, err := newWitnessClient(adir, w, hc, verifier)
		if err != nil {
			return nil, err
		}
		p.clients = append(p.clients, c)
	}
	return p, nil
}

// Push sends the checkpoint (cp, msg) to every witness that has not
// cosigned it or a later one and has not refused the log. It returns an
// audit.witness event for each witness that now refuses the log's history
// (the caller records it); other failures are logged and retried at the
// next Push.
func (p *WitnessPusher) Push(ctx context.Context, cp Checkpoint, msg []byte) []Event {
	var refusals []Event
	for _, c := range p.clients {
		c.mu.Lock()
		behind := cp.Size > c.status.Size && !c.status.Refused
		c.mu.Unlock()
		if !behind {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.push(pctx, p.prove, cp, msg)
		cancel()
		now := time.Now()
		c.mu.Lock()
		c.status.LastAttempt = now
		if err != nil {
			c.status.Error = err.Error()
			if errors.Is(err, errWitnessRefused) {
				c.status.Refused = true
				p.log.Error().Err(err).Str("witness", c.status.Name).Msg("audit: a witness refuses this log's history; run `hearth audit verify --witness KEY`")
				ev := Event{Name: EventAuditWitness, Outcome: OutcomeFailure, Principal: "hearth", Resource: c.w.URL,
					Reason: firstLine([]byte(err.Error())), Meta: map[string]string{"witness": c.status.Name, "size": fmt.Sprint(cp.Size)}}
				if len(ev.Resource) > maxFieldLen {
					ev.Resource = ev.Resource[:maxFieldLen]
				}
				refusals = append(refusals, ev)
			} else {
				p.log.Warn().Err(err).Str("witness", c.status.Name).Msg("audit: witness push failed; retrying")
			}
		} else {
			c.status.Error, c.status.LastSuccess = "", now
		}
		c.mu.Unlock()
	}
	return refusals
}

// Status returns what the pusher knows of each witness, for a log of size
// entries.
func (p *WitnessPusher) Status(size int64) []WitnessStatus {
	out := make([]WitnessStatus, 0, len(p.clients))
	for _, c := range p.clients {
		c.mu.Lock()
		s := c.status
		c.mu.Unlock()
		s.Lag = max(size-s.Size, 0)
		out = append(out, s)
	}
	return out
}

// runWitnesses pushes the latest checkpoint to every witness at most once
// per interval, in its own goroutine, never in a request's path.
func (l *Log) runWitnesses(interval time.Duration) {
	defer close(l.wdone)
	stopped, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() {
		select {
		case <-l.wstop:
			cancelAll()
		case <-stopped.Done():
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.wstop:
			return
		case <-t.C:
		}
		cp, msg := l.Checkpoint()
		for _, ev := range l.wpush.Push(stopped, cp, msg) {
			// An entry of its own, so the owner sees it in the log.
			if err := l.Record(stopped, ev); err != nil {
				l.log.Error().Err(err).Msg("audit: recording a witness's refusal")
			}
		}
	}
}

// Witnesses returns what the log knows of each configured witness.
func (l *Log) Witnesses() []WitnessStatus {
	if l.wpush == nil {
		return []WitnessStatus{}
	}
	return l.wpush.Status(l.Size())
}

// cosignedCheckpoint returns msg with the cosignatures kept for the same
// checkpoint text, if any.
func (l *Log) cosignedCheckpoint(cp Checkpoint, msg []byte) []byte {
	var extra []byte
	text := cp.Text()
	if l.wpush == nil {
		return msg
	}
	for _, c := range l.wpush.clients {
		c.mu.Lock()
		if bytes.Equal(c.cpText, text) {
			extra = append(extra, c.cosig...)
		}
		c.mu.Unlock()
	}
	if extra == nil {
		return msg
	}
	return append(bytes.Clone(msg), extra...)
}

// WitnessedCheckpoint is one cosigned checkpoint Verify checked.
type WitnessedCheckpoint struct {
	Witness string `json:"witness"`
	Size    int64  `json:"size"`
	Root    string `json:"root"`
}

// witnessAnchors finds, for each witness key, the latest kept checkpoint
// it cosigned (and the log signed).
func witnessAnchors(adir string, keys []string, logVerifiers note.Verifiers, origin string) ([]anchor, error) {
	var out []anchor
	if len(keys) == 0 {
		return nil, nil
	}
	ents, err := os.ReadDir(filepath.Join(adir, WitnessesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	for _, k := range keys {
		wv, err := torchwood.NewCosignatureVerifier(k)
		if err != nil {
			return nil, bad(-1, "witness key %q: %v", k, err)
		}
		var best *anchor
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".note") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(adir, WitnessesDir, e.Name()))
			if err != nil || len(b) > maxWitnessResponse {
				continue
			}
			n, err := note.Open(b, multiVerifiers{logVerifiers, wv})
			if err != nil {
				continue
			}
			var byLog, byWitness bool
			for _, s := range n.Sigs {
				byLog = byLog || (s.Name == origin && s.Hash != wv.KeyHash())
				byWitness = byWitness || (s.Name == wv.Name() && s.Hash == wv.KeyHash())
			}
			cp, err := ParseCheckpoint([]byte(n.Text))
			if err != nil || !byLog || !byWitness || cp.Origin != origin {
				continue
			}
			if best == nil || cp.Size > best.cp.Size {
				best = &anchor{cp: cp, what: "the checkpoint cosigned by witness " + wv.Name(), witness: wv.Name()}
			}
		}
		if best == nil {
			return nil, bad(-1, "no checkpoint of this log cosigned by witness %s is kept in %s (has the server pushed to it? see its log)", wv.Name(), filepath.Join(adir, WitnessesDir))
		}
		out = append(out, *best)
	}
	return out, nil
}

// multiVerifiers looks a key up in the log's verifiers, then the witness's.
type multiVerifiers struct {
	log note.Verifiers
	w   note.Verifier
}

func (m multiVerifiers) Verifier(name string, hash uint32) (note.Verifier, error) {
	if name == m.w.Name() && hash == m.w.KeyHash() {
		return m.w, nil
	}
	return m.log.Verifier(name, hash)
}
