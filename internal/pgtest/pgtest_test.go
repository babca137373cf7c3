package pgtest

import (
	"context"
	"os"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// Each test gets its own empty database on a server that listens on
// loopback only and does not run as root.
func TestNewGivesSeparateLoopbackDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := New(t), New(t)
	if a.Name == b.Name {
		t.Fatalf("two New calls gave the same database %q", a.Name)
	}
	pa, pb := a.Pool(t), b.Pool(t)
	if _, err := pa.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("table created in %s is visible in %s", a.Name, b.Name)
	}

	var listen, db string
	if err := pa.QueryRow(ctx, "SELECT current_setting('listen_addresses'), current_database()").Scan(&listen, &db); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" || db != a.Name {
		t.Errorf("listen_addresses, current_database = %q, %q; want 127.0.0.1, %q", listen, db, a.Name)
	}
	var addr string
	if err := pa.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1" {
		t.Errorf("server address = %q, want 127.0.0.1", addr)
	}
	if os.Geteuid() == 0 {
		// postmaster.pid belongs to the user the server runs as.
		var dataDir string
		if err := pa.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dataDir); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dataDir + "/postmaster.pid")
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("postmaster.pid is owned by root: the server runs as root")
		}
	}
}

// A test's database is gone once the test's cleanups have run.
func TestDatabaseDroppedAtCleanup(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) { name = New(t).Name })
	admin := New(t).Admin(t)
	var n int
	if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}
