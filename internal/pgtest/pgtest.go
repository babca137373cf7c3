// Package pgtest exists for tests only: it runs a throwaway PostgreSQL
// cluster on loopback for one test binary and hands each test a database of
// its own, so that hearth's PostgreSQL code is exercised against the real
// server rather than a fake.
//
// # Use
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		db := pgtest.New(t)      // a fresh, empty database, dropped at t.Cleanup
//		pool := db.Pool(t)       // or pgxpool.New(ctx, db.DSN)
//		…
//	}
//
// The cluster is created on the first New (initdb into a temporary
// directory, then the postgres server as a child of the test binary, about a
// second) and stopped and removed when Run returns. Tests that never call New
// cost nothing.
//
// # Where the server comes from
//
// $HEARTH_PGBIN (a directory holding initdb and postgres) if set, else the
// newest /usr/lib/postgresql/*/bin (Debian's postgresql package), else
// initdb and postgres on PATH. When none is found New skips the test, unless
// $CI is set, in which case it fails: CI installs the server (.ci/run), so a
// missing one there is a broken CI, not a reason to skip.
//
// # Trust boundary
//
// PostgreSQL refuses to run as root; when the test runs as root the cluster
// runs as the postgres user (SysProcAttr.Credential), in a directory that
// user owns. The server listens on 127.0.0.1 only, on a port the kernel
// picked, with scram-sha-256 password authentication and a random password,
// so other local users cannot use it. fsync is off: the cluster is
// throwaway, and no test here simulates a power cut of the database host.
// Benchmarks that claim durable-disk figures set $HEARTH_PGTEST_FSYNC=on
// (EnvFsync): the cluster then runs with fsync, synchronous_commit and
// full_page_writes on, PostgreSQL's defaults.
//
// The server is started directly (not daemonised by pg_ctl) with
// Pdeathsig=SIGQUIT on Linux, so that the kernel stops it if the test
// binary dies without running its cleanup (go test -timeout panics,
// kill -9): no postmaster outlives its test run. (Other systems have no
// such signal; there a killed test binary can leave its server running.)
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvBin names the environment variable that, when set, is the directory
// holding the PostgreSQL server binaries (initdb, postgres).
const EnvBin = "HEARTH_PGBIN"

// EnvFsync names the environment variable that, set to "on", runs the
// cluster durably (fsync, synchronous_commit and full_page_writes on), for
// honest benchmarks; otherwise they are off.
const EnvFsync = "HEARTH_PGTEST_FSYNC"

// Durable reports whether the cluster runs with fsync on (EnvFsync).
func Durable() bool { return os.Getenv(EnvFsync) == "on" }

// DB is one test's database in the shared cluster.
type DB struct {
	// Name is the database's name.
	Name string
	// DSN connects to it (a postgres:// URL with user, password, host and
	// port).
	DSN string

	c *cluster
}

// Pool opens a pgx pool on the database, closed at t.Cleanup.
func (d *DB) Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), d.DSN)
	if err != nil {
		t.Fatalf("pgtest: pool on %s: %v", d.Name, err)
	}
	t.Cleanup(p.Close)
	return p
}

// Admin opens a superuser connection to the cluster's postgres database (for
// example to pg_terminate_backend a connection the code under test holds),
// closed at t.Cleanup.
func (d *DB) Admin(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), d.c.dsn("postgres"))
	if err != nil {
		t.Fatalf("pgtest: admin connection: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var (
	mu      sync.Mutex
	running bool     // inside Run
	shared  *cluster // started by the first New
	startE  error    // why it could not start
	tried   bool
	seq     int
)

// Run runs the package's tests (m.Run) and then stops and removes the
// cluster if a test started it. Call it from TestMain and pass its result to
// os.Exit.
func Run(m *testing.M) int {
	mu.Lock()
	running = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	running = false
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping the cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		shared = nil
	}
	return code
}

// New returns a new, empty database in the package's cluster (starting the
// cluster on first use), owned by the cluster's superuser and dropped at
// t.Cleanup, after the test's own cleanups (close pools first: t.Cleanup
// runs last-in, first-out). It skips the test when no PostgreSQL server
// binaries are installed and $CI is unset, and fails it under CI.
func New(t testing.TB) *DB {
	t.Helper()
	c := clusterFor(t)
	mu.Lock()
	seq++
	name := fmt.Sprintf("t%d_%s", seq, randHex(4))
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" STRATEGY = FILE_COPY"); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return &DB{Name: name, DSN: c.dsn(name), c: c}
}

func clusterFor(t testing.TB) *cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !running {
		t.Fatalf("pgtest: New called outside pgtest.Run: add `func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }` to the package's tests")
	}
	if !tried {
		tried = true
		bin, err := findBin()
		if err != nil {
			startE = err
		} else {
			shared, startE = start(bin)
		}
	}
	if startE != nil {
		var nb *noBinariesError
		if errors.As(startE, &nb) && os.Getenv("CI") == "" {
			t.Skipf("pgtest: PostgreSQL server binaries not found (%v); install them (Debian: apt-get install -y postgresql) or set %s; under CI this fails", startE, EnvBin)
		}
		t.Fatalf("pgtest: %v", startE)
	}
	return shared
}

type noBinariesError struct{ where string }

func (e *noBinariesError) Error() string { return "no initdb/postgres in " + e.where }

// findBin returns the directory holding initdb and postgres.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(EnvBin); dir != "" {
		if !has(dir) {
			return "", &noBinariesError{where: "$" + EnvBin + "=" + dir}
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first ("9.6" < "15" numerically).
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", &noBinariesError{where: "/usr/lib/postgresql/*/bin or PATH"}
}

func majorOf(binDir string) float64 {
	f, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return f
}

type cluster struct {
	dir      string
	port     int
	password string
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", c.password, c.port, db)
}

func (c *cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// credential returns the postgres user's credential when running as root
// (the server refuses root), nil otherwise.
func credential() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, -1, -1, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("running as root and there is no postgres user to run the server as: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, 0, 0, fmt.Errorf("postgres user has a non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

func start(bin string) (*cluster, error) {
	cred, uid, gid, err := credential()
	if err != nil {
		return nil, err
	}
	base := os.TempDir()
	if cred != nil && !othersCanEnter(base) {
		// The server runs as postgres and must reach its directory: a
		// $TMPDIR under root's home would stop it.
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "hearth-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, password: randHex(16), logPath: filepath.Join(dir, "postgres.log")}
	fail := func(err error) (*cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fail(err)
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if err := os.Chown(pwfile, uid, gid); err != nil {
		return fail(err)
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--pwfile", pwfile, "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C",
		"--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	os.Remove(pwfile)

	// The kernel picks the port; between closing the probe and the server
	// binding it another process could take it, so a failed start retries.
	for attempt := 0; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return fail(err)
		}
		err = c.startServer(bin, data, cred)
		if err == nil {
			return c, nil
		}
		if attempt == 2 {
			return fail(err)
		}
	}
}

func (c *cluster) startServer(bin, data string, cred *syscall.Credential) error {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	durability := "off"
	if Durable() {
		durability = "on"
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(c.port),
		"-c", "unix_socket_directories="+c.dir,
		"-c", "fsync="+durability,
		"-c", "synchronous_commit="+durability,
		"-c", "full_page_writes="+durability,
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
	)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = serverAttr(cred)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if err := c.exec(ctx, "SELECT 1"); err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited at start: %s", c.logTail())
		case <-ctx.Done():
			c.kill()
			return fmt.Errorf("postgres not ready after 60s: %s", c.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

func (c *cluster) kill() {
	c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// stop shuts the server down (SIGINT: PostgreSQL's fast shutdown, which
// ends open sessions) and removes the cluster's directory.
func (c *cluster) stop() error {
	var errs []error
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		errs = append(errs, fmt.Errorf("postgres did not stop in 30s: %s", c.logTail()))
		c.kill()
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// othersCanEnter reports whether every directory from dir up to / can be
// traversed by any user.
func othersCanEnter(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return strings.ToLower(hex.EncodeToString(b))
}
