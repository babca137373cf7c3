package server

// Configuration shared by replicas (issue 12: "provisioner and policy
// changes reach every replica").
//
// On PostgreSQL every replica keeps its own copy of hearth.yaml, but a
// reload on any of them publishes the validated file to the store (bucket
// server.config, one record), and every other replica follows it through
// the store's change feed: it validates the stored file exactly as a
// reload does, writes it to its own data dir and applies it through the
// same reload path. The record's version is incremented inside the same
// SERIALIZABLE Update that writes it, so two concurrent reloads get
// distinct versions (PostgreSQL 15 manual §13.2.3) and every replica ends
// on the newest. Applying a stored file never publishes again (no loop).
// On bbolt there is one process and nothing of this runs.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/renameio/v2"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/store"
)

// Where the replicas' shared hearth.yaml is kept.
const (
	ConfigBucket = "server.config"
	configKey    = config.FileName
	// PreviousConfigName is the file a replica keeps its hearth.yaml in
	// when it replaces it with the replicas' shared one.
	PreviousConfigName = config.FileName + ".previous"
)

// sharedConfig is the record in ConfigBucket.
type sharedConfig struct {
	Version int64     `json:"version"`
	SHA256  string    `json:"sha256"`
	YAML    []byte    `json:"yaml"`
	Replica string    `json:"replica"` // who published it: host, pid, instance
	By      string    `json:"by"`      // the principal whose reload published it
	Time    time.Time `json:"time"`
}

// cfgSync is a server's part in sharing hearth.yaml; nil on bbolt.
type cfgSync struct {
	replica string
	// applied is the version of the stored record the running
	// configuration equals or supersedes (guarded by Server.reloadMu).
	applied int64
	// refused holds why the newest stored configuration was not applied
	// (nil when it was); readyz reports it.
	refused atomic.Pointer[string]
	kick    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

// errConfigNotFollowed is readyz's cause when the replicas' newest
// hearth.yaml was refused here.
var errConfigNotFollowed = errors.New("server: this replica refused the replicas' newest hearth.yaml")

// replicaName names this process in the records it publishes.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + " pid " + strconv.Itoa(os.Getpid()) + " " + hex.EncodeToString(b[:])
}

func decodeShared(b []byte) (*sharedConfig, error) {
	var rec sharedConfig
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("server: the stored hearth.yaml record is not readable: %w", err)
	}
	return &rec, nil
}

// readShared returns the stored record, or nil if there is none.
func readShared(ctx context.Context, st store.Store) (*sharedConfig, error) {
	var rec *sharedConfig
	err := st.View(ctx, func(tx store.Tx) error {
		rec = nil // View's fn runs once, but keep it idempotent anyway
		b := tx.Bucket(ConfigBucket).Get([]byte(configKey))
		if b == nil {
			return nil
		}
		var err error
		rec, err = decodeShared(b)
		return err
	})
	return rec, err
}

// publish stores raw (validated, with hex SHA-256 sum) as the replicas'
// configuration and returns its version. If the stored one already has
// this sum its version is returned unchanged; when onlyIfNone is set, a
// stored record of any sum is returned instead of being replaced (at
// start, the replicas' newest wins over a local file).
func (s *Server) publish(ctx context.Context, raw []byte, sum, by string, onlyIfNone bool) (*sharedConfig, error) {
	var out *sharedConfig
	err := s.store.Update(ctx, func(tx store.Tx) error {
		b := tx.Bucket(ConfigBucket)
		var prev int64
		if v := b.Get([]byte(configKey)); v != nil {
			old, err := decodeShared(v)
			if err != nil {
				return err
			}
			if old.SHA256 == sum || onlyIfNone {
				out = old
				return nil
			}
			prev = old.Version
		}
		rec := &sharedConfig{
			Version: prev + 1, SHA256: sum, YAML: raw,
			Replica: s.sync.replica, By: by, Time: s.opts.Now().UTC(),
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		out = rec
		return b.Put([]byte(configKey), v)
	})
	if err != nil {
		return nil, fmt.Errorf("server: publishing hearth.yaml to the other replicas: %w", err)
	}
	return out, nil
}

// checkShared validates a stored record as a reload validates a file:
// its sum matches, it parses, validates and builds. It returns the
// parsed configuration with the command-line overrides applied.
func checkShared(rec *sharedConfig, opts Options) (*config.Config, error) {
	if got := sha256Hex(rec.YAML); got != rec.SHA256 {
		return nil, fmt.Errorf("the stored hearth.yaml (version %d) has sha256 %s, but its record says %s", rec.Version, got, rec.SHA256)
	}
	cfg, err := config.Parse(rec.YAML)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return nil, err
	}
	applyOptions(cfg, opts)
	if err := cfg.Store.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// writeConfigFile replaces the data dir's hearth.yaml with b atomically
// (a temporary file in the same directory, fsynced, renamed over it, the
// directory fsynced; renameio does the first three), mode 0600, keeping
// the file it replaces as hearth.yaml.previous.
func writeConfigFile(dir string, b []byte) error {
	path := filepath.Join(dir, config.FileName)
	old, err := readConfig(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := renameio.WriteFile(filepath.Join(dir, PreviousConfigName), old, 0o600, renameio.WithStaticPermissions(0o600)); err != nil {
			return fmt.Errorf("server: keeping the previous hearth.yaml: %w", err)
		}
	}
	if err := renameio.WriteFile(path, b, 0o600, renameio.WithStaticPermissions(0o600)); err != nil {
		return fmt.Errorf("server: writing hearth.yaml: %w", err)
	}
	return syncDir(dir)
}

// adoptAtStart runs in Open on PostgreSQL, before anything is built from
// the local hearth.yaml (raw, already validated): if the store holds the
// replicas' configuration and it differs, the replica adopts it (writes
// it to its data dir and starts with it); if the store holds none, the
// local file is published as version 1. It returns the bytes and the
// configuration to start with, and the record they came from.
func (s *Server) adoptAtStart(ctx context.Context, raw []byte, cfg *config.Config) ([]byte, *config.Config, *sharedConfig, error) {
	if err := s.store.Declare(ctx, ConfigBucket); err != nil {
		return nil, nil, nil, err
	}
	sum := sha256Hex(raw)
	rec, err := s.publish(ctx, raw, sum, "hearth:start", true)
	if err != nil {
		return nil, nil, nil, err
	}
	s.sync.applied = rec.Version
	if rec.SHA256 == sum {
		if rec.Version == 1 && rec.Replica == s.sync.replica {
			s.log.Info().Str("sha256", sum).Msg("published this replica's hearth.yaml to the other replicas as version 1")
		}
		return raw, cfg, rec, nil
	}
	next, err := checkShared(rec, s.opts)
	if err == nil {
		err = preBuild(next)
	}
	if err != nil {
		s.refuseShared(rec, err)
		return raw, cfg, nil, nil
	}
	if err := writeConfigFile(s.opts.Dir, rec.YAML); err != nil {
		return nil, nil, nil, err
	}
	s.log.Warn().Int64("version", rec.Version).Str("sha256", rec.SHA256).Str("local_sha256", sum).Str("from_replica", rec.Replica).
		Msg("this replica's hearth.yaml differed from the replicas' shared one: adopted the shared one (the old file is " + PreviousConfigName + ")")
	return rec.YAML, next, rec, nil
}

// preBuild makes the parts of build that need no running CA or login
// service, so that a stored configuration that would not build is refused
// at start before anything is opened with it. (OIDC providers are built
// with the login service: a provider that fails there fails the start,
// with an error naming the shared version.)
func preBuild(cfg *config.Config) error {
	if _, err := authz.New(cfg.Authz); err != nil {
		return err
	}
	if _, err := cfg.Gateway.Networks(); err != nil {
		return err
	}
	_, err := cfg.Gateway.UpstreamURL()
	return err
}

// refuseShared records that the stored configuration rec was not applied
// here, for the log and readyz.
func (s *Server) refuseShared(rec *sharedConfig, err error) {
	msg := fmt.Sprintf("version %d from %s: %v", rec.Version, rec.Replica, err)
	s.sync.refused.Store(&msg)
	s.log.Error().Err(err).Int64("version", rec.Version).Str("from_replica", rec.Replica).
		Msg("the replicas' newest hearth.yaml is refused here; this replica keeps running its own (fix the file and reload on any replica)")
}

// startFollowing subscribes to the store's feed: a change of the shared
// record wakes a worker that applies it (the feed's goroutine must not
// block, and a burst of changes is one check).
func (s *Server) startFollowing() {
	ctx, cancel := context.WithCancel(context.Background())
	s.sync.stop = cancel
	s.sync.kick = make(chan struct{}, 1)
	s.sync.done = make(chan struct{})
	kick := func() {
		select {
		case s.sync.kick <- struct{}{}:
		default:
		}
	}
	kick() // a change published before the subscription is not missed
	go func() {
		_ = s.store.Feed().Subscribe(ctx, func(cs []store.Change) {
			for _, c := range cs {
				if c.Resync || (c.Bucket == ConfigBucket && string(c.Key) == configKey) {
					kick()
					return
				}
			}
		})
	}()
	go func() {
		defer close(s.sync.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.sync.kick:
				if err := s.follow(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn().Err(err).Msg("could not follow the replicas' hearth.yaml; retrying at the next change")
				}
			}
		}
	}()
}

// stopFollowing ends startFollowing's goroutines.
func (s *Server) stopFollowing() {
	if s.sync != nil && s.sync.stop != nil {
		s.sync.stop()
		<-s.sync.done
	}
}

// follow applies the stored configuration if it is newer than the one
// running and differs from it.
func (s *Server) follow(ctx context.Context) error {
	rec, err := readShared(ctx, s.store)
	if err != nil || rec == nil {
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if rec.Version <= s.sync.applied {
		return nil
	}
	ev := s.configEvent(rec.By, "replica", "local")
	ev.Meta["from_replica"] = rec.Replica
	ev.Meta["version"] = strconv.FormatInt(rec.Version, 10)
	if got := sha256Hex(rec.YAML); got != rec.SHA256 {
		// Bytes that are not what the record says were published: refused
		// before anything else (even when the sum claims the running file).
		_, err = s.refuse(ctx, ev, fmt.Errorf("the stored hearth.yaml has sha256 %s, but its record says %s", got, rec.SHA256))
	} else if rec.SHA256 == s.live.Load().sum {
		s.sync.applied = rec.Version
		s.sync.refused.Store(nil)
		return nil
	} else {
		_, err = s.apply(ctx, ev, rec.YAML, func(*config.Config) error {
			return writeConfigFile(s.opts.Dir, rec.YAML)
		})
	}
	if errors.Is(err, ErrConfigRefused) {
		s.refuseShared(rec, err)
		s.sync.applied = rec.Version // refused until a newer one comes
		return nil
	}
	if err != nil {
		return err
	}
	s.sync.applied = rec.Version
	s.sync.refused.Store(nil)
	return nil
}

// configFollowed is readyz's check: it fails while the replicas' newest
// hearth.yaml is refused here.
func (s *Server) configFollowed() error {
	if s.sync == nil {
		return nil
	}
	if why := s.sync.refused.Load(); why != nil {
		return fmt.Errorf("%w: %s", errConfigNotFollowed, *why)
	}
	return nil
}

// configEvent is the config.change entry of a reload asked for by by, via
// via, from client.
func (s *Server) configEvent(by, via, client string) audit.Event {
	old := s.live.Load()
	return audit.Event{
		Time: s.opts.Now().UTC(), Name: audit.EventConfigChange, Principal: by,
		Resource: config.FileName, Client: client,
		Meta: map[string]string{"via": via, "previous_sha256": old.sum},
	}
}
