package pgaudit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// keysDir makes a data dir with a fresh audit log's keys (the keys every
// replica is given).
func keysDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openLog(t testing.TB, pool *pgxpool.Pool, dir string, opts Options) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open(ctx, pool, dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func event(reason string) audit.Event {
	return audit.Event{Name: audit.EventAuthzDecision, Outcome: audit.OutcomeAllow, Principal: "device:test", Reason: reason}
}

// bodyAt returns the stored body of the entry at position seq.
func bodyAt(t testing.TB, pool *pgxpool.Pool, seq int64) string {
	t.Helper()
	var b []byte
	if err := pool.QueryRow(context.Background(), "SELECT body FROM "+Schema+".entries WHERE seq = $1", seq).Scan(&b); err != nil {
		t.Fatalf("entry %d: %v", seq, err)
	}
	return string(b)
}

func mustVerify(t testing.TB, pool *pgxpool.Pool) *audit.VerifyResult {
	t.Helper()
	res, err := Verify(context.Background(), pool, VerifyOptions{Strict: true})
	if err != nil {
		t.Fatalf("Verify: %v (%+v)", err, res)
	}
	return res
}

// load runs writers on each log, each recording n entries with a unique
// reason, and returns the acknowledged entries (reason → position) and the
// reasons whose Record failed.
func load(t testing.TB, logs []*Log, writers, n int, during func()) (map[string]int64, map[string]error) {
	t.Helper()
	var mu sync.Mutex
	acked, failed := map[string]int64{}, map[string]error{}
	var wg sync.WaitGroup
	started := make(chan struct{})
	for li, l := range logs {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					if i == n/4 && li == 0 && w == 0 {
						close(started)
					}
					r := fmt.Sprintf("replica %d writer %d entry %d", li, w, i)
					seq, err := l.Append(context.Background(), event(r))
					mu.Lock()
					if err != nil {
						failed[r] = err
					} else {
						acked[r] = seq
					}
					mu.Unlock()
				}
			}()
		}
	}
	if during != nil {
		<-started
		during()
	}
	wg.Wait()
	return acked, failed
}

// checkAcked asserts that every acknowledged entry is in the history at the
// position its Record returned, and that no position was given twice.
func checkAcked(t testing.TB, pool *pgxpool.Pool, acked map[string]int64) {
	t.Helper()
	seen := map[int64]string{}
	for r, seq := range acked {
		if o, dup := seen[seq]; dup {
			t.Fatalf("position %d acknowledged for %q and %q", seq, o, r)
		}
		seen[seq] = r
		if b := bodyAt(t, pool, seq); !strings.Contains(b, `"reason":"`+r+`"`) {
			t.Fatalf("acknowledged %q at %d, the entry there is %s", r, seq, b)
		}
	}
}

// noLateAcks asserts that no Record was answered only by its withdrawal
// finding it sequenced: with MaxWait far above any real delay, that means
// the waiter missed a checkpoint that covered it.
func noLateAcks(t testing.TB, logs ...*Log) {
	t.Helper()
	for _, l := range logs {
		if n := l.late.Load(); n > 0 {
			t.Errorf("replica %s: %d Records were covered but not woken before MaxWait", l.opts.Name, n)
		}
	}
}

func TestTwoReplicasOneHistory(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a", MaxWait: 30 * time.Second})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b", MaxWait: 30 * time.Second})
	acked, failed := load(t, []*Log{a, b}, 8, 40, nil)
	if len(failed) > 0 {
		t.Fatalf("%d Records failed, e.g. %v", len(failed), failed)
	}
	pool := db.Pool(t)
	checkAcked(t, pool, acked)
	noLateAcks(t, a, b)
	res := mustVerify(t, pool)
	if want := int64(len(acked) + 2); res.Entries != want || res.Pending != 0 { // + two audit.start
		t.Fatalf("verified %d entries (%d pending), want %d", res.Entries, res.Pending, want)
	}
	if res.Checkpoints < 2 || res.Origin != a.Origin() {
		t.Fatalf("checkpoints %d, origin %q", res.Checkpoints, res.Origin)
	}
	// Group commit: far fewer checkpoints than entries.
	t.Logf("%d entries in %d checkpoints", res.Entries, res.Checkpoints)
	// The same SecretID on both replicas.
	if a.SecretID([]byte("s")) != b.SecretID([]byte("s")) {
		t.Fatal("replicas name a secret differently")
	}
}

// sequencerPID is the backend of the candidate that holds the lock.
func sequencerPID(t testing.TB, admin *pgx.Conn, dbName string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pid int
		err := admin.QueryRow(context.Background(), `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1 AND a.datname = $2`, SequencerApplicationName, dbName).Scan(&pid)
		if err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sequencer holds the lock: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSequencerKilledMidLoad(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a", Heartbeat: 50 * time.Millisecond, MaxWait: 30 * time.Second})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b", Heartbeat: 50 * time.Millisecond, MaxWait: 30 * time.Second})
	admin := db.Admin(t)
	var holder1 string
	var epoch1 int64
	acked, failed := load(t, []*Log{a, b}, 8, 60, func() {
		pid := sequencerPID(t, admin, db.Name)
		if err := pool.QueryRow(context.Background(), "SELECT holder, epoch FROM "+Schema+".state").Scan(&holder1, &epoch1); err != nil {
			t.Error(err)
		}
		var ok bool
		if err := admin.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Errorf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
	})
	// Every Record either succeeded or was withdrawn: none is both
	// refused and in the history.
	for r, err := range failed {
		if !errors.Is(err, ErrNotCovered) || strings.Contains(err.Error(), "may still be sequenced") {
			t.Errorf("%s: %v", r, err)
		}
	}
	checkAcked(t, pool, acked)
	noLateAcks(t, a, b)
	res := mustVerify(t, pool)
	if want := int64(len(acked) + 2); res.Entries != want {
		t.Fatalf("verified %d entries, %d acknowledged + 2 starts", res.Entries, len(acked))
	}
	var holder2 string
	var epoch2 int64
	if err := pool.QueryRow(context.Background(), "SELECT holder, epoch FROM "+Schema+".state").Scan(&holder2, &epoch2); err != nil {
		t.Fatal(err)
	}
	if epoch2 <= epoch1 {
		t.Fatalf("epoch %d after the kill, %d before: no takeover", epoch2, epoch1)
	}
	t.Logf("sequencer %s (epoch %d) killed; %s took over (epoch %d); %d acknowledged, %d refused and withdrawn", holder1, epoch1, holder2, epoch2, len(acked), len(failed))
}

func TestStaleSequencerIsFenced(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	ctx := context.Background()
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := bind(ctx, pool, signer); err != nil {
		t.Fatal(err)
	}
	// A recorder without a sequencer: entries go in with AppendTx.
	l := &Log{opts: Options{Now: time.Now}}
	add := func(r string) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := l.AppendTx(ctx, tx, event(r))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (epoch, size int64, cps int) {
		t.Helper()
		if err := pool.QueryRow(ctx, "SELECT epoch, size, (SELECT count(*) FROM "+Schema+".checkpoints) FROM "+Schema+".state").Scan(&epoch, &size, &cps); err != nil {
			t.Fatal(err)
		}
		return
	}
	s := &Sequencer{Pool: pool, Signer: signer, Name: "stale", Idle: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	add("first")
	deadline := time.Now().Add(10 * time.Second)
	for _, size, _ := state(); size < 1; _, size, _ = state() {
		if time.Now().After(deadline) {
			t.Fatal("the sequencer did not sequence the first entry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A newer sequencer takes over (what its Run does first), while the
	// old one still has its connection and its lock.
	if _, err := pool.Exec(ctx, "UPDATE "+Schema+".state SET epoch = epoch + 1, holder = 'newer'"); err != nil {
		t.Fatal(err)
	}
	epoch, size, cps := state()
	add("second")
	select {
	case err := <-done:
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("stale sequencer returned %v, want ErrFenced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stale sequencer is still running")
	}
	if e2, s2, c2 := state(); e2 != epoch || s2 != size || c2 != cps {
		t.Fatalf("the stale sequencer wrote: epoch %d→%d, size %d→%d, checkpoints %d→%d", epoch, e2, size, s2, cps, c2)
	}
	var pending int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+Schema+".entries WHERE seq IS NULL").Scan(&pending); err != nil || pending != 1 {
		t.Fatalf("pending entries %d (%v), want the second one", pending, err)
	}
	// A proper takeover sequences it.
	s2 := &Sequencer{Pool: pool, Signer: signer, Name: "next", Idle: 20 * time.Millisecond}
	rctx, cancel := context.WithCancel(ctx)
	go func() { done <- s2.Run(rctx) }()
	for _, size, _ := state(); size < 2; _, size, _ = state() {
		if time.Now().After(deadline) {
			t.Fatal("the new sequencer did not sequence the second entry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if res := mustVerify(t, pool); res.Entries != 2 {
		t.Fatalf("verified %d entries", res.Entries)
	}
}

func TestRecordWithoutSequencerIsWithdrawn(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b", NoSequencer: true, MaxWait: 300 * time.Millisecond})
	if err := b.Record(context.Background(), event("while a sequences")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	start := time.Now()
	err := b.Record(context.Background(), event("no sequencer"))
	if !errors.Is(err, ErrNotCovered) || !strings.Contains(err.Error(), "withdrawn") {
		t.Fatalf("Record without a sequencer: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Record took %v, bound 300ms", d)
	}
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+Schema+".entries WHERE convert_from(body, 'UTF8') LIKE '%no sequencer%'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("withdrawn entry still stored: %d (%v)", n, err)
	}
	// A sequencer comes back: the history holds what was acknowledged.
	openLog(t, db.Pool(t), dir, Options{Name: "c"})
	if res := mustVerify(t, pool); res.Entries != 4 || res.Pending != 0 { // 3 starts + 1
		t.Fatalf("verified %d entries, %d pending", res.Entries, res.Pending)
	}
}

func TestAppendTxCommitsWithTheChange(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	ctx := context.Background()
	l := openLog(t, pool, dir, Options{})
	if _, err := pool.Exec(ctx, "CREATE TABLE things (name text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	var ids []EntryID
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO things VALUES ('kept')"); err != nil {
			return err
		}
		var err error
		ids, err = l.AppendTx(ctx, tx, event("kept 1"), event("kept 2"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seqs, err := l.Wait(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 2 || seqs[1] != seqs[0]+1 || !strings.Contains(bodyAt(t, pool, seqs[1]), "kept 2") {
		t.Fatalf("positions %v", seqs)
	}
	// A rolled back change leaves no entry.
	rolled := errors.New("rolled back")
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := l.AppendTx(ctx, tx, event("rolled back")); err != nil {
			return err
		}
		return rolled
	})
	if !errors.Is(err, rolled) {
		t.Fatal(err)
	}
	if err := l.Record(ctx, event("after")); err != nil {
		t.Fatal(err)
	}
	if res := mustVerify(t, pool); res.Entries != 4 { // start, kept 1, kept 2, after
		t.Fatalf("verified %d entries", res.Entries)
	}
}

func TestConcurrentOpensOnEmptyDatabase(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	const n = 6
	errs := make(chan error, n)
	logs := make(chan *Log, n)
	for i := range n {
		pool := db.Pool(t)
		go func() {
			l, err := Open(context.Background(), pool, dir, Options{Name: fmt.Sprint("r", i)})
			errs <- err
			logs <- l
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		l := <-logs
		t.Cleanup(func() { l.Close() })
	}
	if res := mustVerify(t, db.Pool(t)); res.Entries != n {
		t.Fatalf("verified %d entries, want %d starts", res.Entries, n)
	}
}

func TestOpenRefusesAnotherLogsKey(t *testing.T) {
	db := pgtest.New(t)
	openLog(t, db.Pool(t), keysDir(t), Options{})
	_, err := Open(context.Background(), db.Pool(t), keysDir(t), Options{})
	if err == nil || !strings.Contains(err.Error(), "same audit keys") {
		t.Fatalf("Open with another key: %v", err)
	}
}

func TestExportVerifiesAsAFileLog(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b"})
	acked, failed := load(t, []*Log{a, b}, 4, 30, nil)
	if len(failed) > 0 {
		t.Fatal(failed)
	}
	pres := mustVerify(t, pool)
	out := t.TempDir()
	xres, err := Export(context.Background(), pool, out, VerifyOptions{VerifierKey: a.VerifierKey()})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	fres, err := audit.Verify(out, audit.VerifyOptions{Strict: true, VerifierKey: a.VerifierKey()})
	if err != nil {
		t.Fatalf("the export does not verify as a file log: %v (%+v)", err, fres)
	}
	if fres.Entries != pres.Entries || fres.Root != pres.Root || fres.Origin != pres.Origin || fres.Checkpoints != pres.Checkpoints || xres.Root != pres.Root {
		t.Fatalf("file log %+v, PostgreSQL %+v", fres, pres)
	}
	// The file log's reader sees the acknowledged entries where Record put them.
	rd, err := audit.NewReader(out)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := rd.Read(0, int(fres.Entries))
	if err != nil {
		t.Fatal(err)
	}
	for r, seq := range acked {
		if ents[seq].Reason != r {
			t.Fatalf("file entry %d is %q, want %q", seq, ents[seq].Reason, r)
		}
	}
	// A second export into the same place is refused.
	if _, err := Export(context.Background(), pool, out, VerifyOptions{}); !errors.Is(err, audit.ErrExists) {
		t.Fatalf("export over an existing log: %v", err)
	}
}

func TestTamperedHistoryFailsAndNamesIt(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	l := openLog(t, db.Pool(t), dir, Options{})
	for i := range 20 {
		if err := l.Record(context.Background(), event(fmt.Sprint("entry ", i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	mustVerify(t, pool)
	ctx := context.Background()
	exec := func(t *testing.T, q string) {
		t.Helper()
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		tamper  string
		restore string
		index   int64 // -1: not one entry
		says    string
	}{
		{"changed body", `UPDATE hearth_audit.entries SET body = convert_to(replace(convert_from(body, 'UTF8'), 'entry 7', 'entry X'), 'UTF8') WHERE seq = 8`,
			`UPDATE hearth_audit.entries SET body = convert_to(replace(convert_from(body, 'UTF8'), 'entry X', 'entry 7'), 'UTF8') WHERE seq = 8`, 8, "entry 8"},
		{"removed entry", `UPDATE hearth_audit.entries SET seq = 1000005 WHERE seq = 5`,
			`UPDATE hearth_audit.entries SET seq = 5 WHERE seq = 1000005`, 5, "entry 5 is missing"},
		{"swapped entries", `UPDATE hearth_audit.entries SET seq = 1000003 WHERE seq = 3; UPDATE hearth_audit.entries SET seq = 3 WHERE seq = 4; UPDATE hearth_audit.entries SET seq = 4 WHERE seq = 1000003`,
			`UPDATE hearth_audit.entries SET seq = 1000003 WHERE seq = 3; UPDATE hearth_audit.entries SET seq = 3 WHERE seq = 4; UPDATE hearth_audit.entries SET seq = 4 WHERE seq = 1000003`, 3, "entry 3"},
		{"bad body", `UPDATE hearth_audit.entries SET body = convert_to('{"time":"x"' || chr(10) || '}', 'UTF8') WHERE seq = 2`, "", 2, "entry 2 is not an event encoding"},
		{"forged checkpoint", `UPDATE hearth_audit.checkpoints SET note = convert_to(replace(convert_from(note, 'UTF8'), 'hearth.home.arpa', 'hearth.home.arpb'), 'UTF8') WHERE size = (SELECT max(size) FROM hearth_audit.checkpoints)`, "", -1, "checkpoint of size 21"},
		{"changed stored hash", `UPDATE hearth_audit.hashes SET hash = sha256(hash) WHERE idx = 0`, "", -1, "stored hashes of entry 0"},
		{"injected entry", `INSERT INTO hearth_audit.entries (seq, body) SELECT 21, body FROM hearth_audit.entries WHERE seq = 20`, `DELETE FROM hearth_audit.entries WHERE seq = 21`, 21, "no checkpoint covers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.restore == "" {
				// Keep a copy of the three tables to put back.
				exec(t, `CREATE TABLE IF NOT EXISTS public.bk_e AS SELECT * FROM hearth_audit.entries`)
				exec(t, `CREATE TABLE IF NOT EXISTS public.bk_c AS SELECT * FROM hearth_audit.checkpoints`)
				exec(t, `CREATE TABLE IF NOT EXISTS public.bk_h AS SELECT * FROM hearth_audit.hashes`)
			}
			exec(t, tc.tamper)
			res, err := Verify(ctx, pool, VerifyOptions{VerifierKey: l.VerifierKey()})
			var ve *audit.VerifyError
			if !errors.As(err, &ve) || res.OK {
				t.Fatalf("tampered history verified: %v %+v", err, res)
			}
			if ve.Index != tc.index || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got index %d, %q; want index %d and %q", ve.Index, err, tc.index, tc.says)
			}
			if tc.index >= 0 && (res.FirstBadIndex == nil || *res.FirstBadIndex != tc.index) {
				t.Fatalf("first_bad_index %v", res.FirstBadIndex)
			}
			if tc.restore != "" {
				exec(t, tc.restore)
			} else {
				exec(t, `TRUNCATE hearth_audit.entries, hearth_audit.checkpoints, hearth_audit.hashes`)
				exec(t, `INSERT INTO hearth_audit.entries SELECT * FROM public.bk_e`)
				exec(t, `INSERT INTO hearth_audit.checkpoints SELECT * FROM public.bk_c`)
				exec(t, `INSERT INTO hearth_audit.hashes SELECT * FROM public.bk_h`)
				exec(t, `DROP TABLE public.bk_e, public.bk_c, public.bk_h`)
			}
			mustVerify(t, pool)
		})
	}
}

func FuzzEntryLine(f *testing.F) {
	body, err := audit.EncodeEvent(event("seed"), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(int64(0), body)
	f.Add(int64(7), []byte(`{"time":"2026-12-01T00:00:00Z","event":"a.b","outcome":"allow"}`))
	f.Add(int64(1), []byte(`{"time":"x"}`))
	f.Add(int64(-1), []byte(`{"time":"`))
	f.Add(int64(3), []byte("{\"time\":\"2026\n\"}"))
	f.Fuzz(func(t *testing.T, seq int64, body []byte) {
		line, err := entryLine(nil, seq, body, true)
		if err != nil {
			return
		}
		e, err := audit.ParseEntry(line)
		if err != nil {
			t.Fatalf("accepted %q, ParseEntry: %v", line, err)
		}
		if e.Index != seq {
			t.Fatalf("line of %d parses as entry %d", seq, e.Index)
		}
		again, err := audit.EncodeEvent(e.Event, time.Time{})
		if err != nil || string(again) != string(body) {
			t.Fatalf("body %q re-encodes as %q (%v)", body, again, err)
		}
	})
}

// TestWithdrawRacesTheSequencer: with a MaxWait of a few milliseconds most
// Records give up while the sequencer is taking their entries. Each one is
// then either acknowledged (its entry at its position) or refused with its
// entry withdrawn — never refused and in the history — and the history
// verifies.
func TestWithdrawRacesTheSequencer(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	pool := db.Pool(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b", NoSequencer: true})
	a.opts.MaxWait, b.opts.MaxWait = 3*time.Millisecond, 3*time.Millisecond
	acked, failed := load(t, []*Log{a, b}, 8, 30, nil)
	unknown := 0
	for r, err := range failed {
		if !errors.Is(err, ErrNotCovered) {
			t.Fatalf("%s: %v", r, err)
		}
		if strings.Contains(err.Error(), "may still be sequenced") {
			unknown++ // an INSERT whose answer was lost: either way
			delete(failed, r)
		}
	}
	checkAcked(t, pool, acked)
	rows, err := pool.Query(context.Background(), "SELECT convert_from(body, 'UTF8') FROM "+Schema+".entries")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored := 0
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		stored++
		if i := strings.Index(body, `"reason":"`); i >= 0 {
			r := body[i+len(`"reason":"`):]
			r = r[:strings.IndexByte(r, '"')]
			if _, refused := failed[r]; refused {
				t.Fatalf("refused Record %q is in the history", r)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if stored < len(acked)+2 || stored > len(acked)+2+unknown {
		t.Fatalf("%d entries stored, %d acknowledged + 2 starts (+ up to %d of unknown outcome)", stored, len(acked), unknown)
	}
	mustVerify(t, pool)
	t.Logf("%d acknowledged, %d refused and withdrawn, %d of unknown outcome", len(acked), len(failed), unknown)
}
