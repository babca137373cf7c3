package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// Files and directories inside <data dir>/audit.
const (
	// DirName is the audit log's directory inside the data dir.
	DirName = "audit"
	// SigningKeyFile holds the log's Ed25519 signing key in the note
	// signer-key format (PRIVATE+KEY+<origin>+<hash>+<key>), mode 0600.
	SigningKeyFile = "log.key"
	// VerifierKeyFile holds the matching verifier key (<origin>+<hash>+<key>),
	// the one to give to anyone who checks checkpoints.
	VerifierKeyFile = "log.pub"
	// HMACKeyFile holds the 32-byte key of SecretID, base64, mode 0600.
	HMACKeyFile = "hmac.key"
	// SegmentsDir holds the segment files NNNNNNNN.log, each named by the
	// index of its first entry.
	SegmentsDir = "segments"
	// HashesFile holds the tree's stored hashes (tlog.StoredHashes), 32
	// bytes each, in stored-hash-index order.
	HashesFile = "hashes"
	// CheckpointsFile holds every signed checkpoint, in order.
	CheckpointsFile = "checkpoints"
	// LockFile is locked (flock) by the one process that has the log open.
	LockFile = "lock"
)

// ErrExists is returned by Init when the audit directory already has a log.
var ErrExists = errors.New("audit: a log already exists")

// Init creates <dir>/audit with a new Ed25519 signing key (and its verifier
// key) and a separate HMAC key for SecretID. It refuses if the directory
// exists and is not empty. Everything is built in a temporary directory and
// renamed into place, so a crash leaves either no log or a whole one.
func Init(dir string) error { return initWith(dir, DefaultTrustDomain, rand.Reader) }

// DefaultTrustDomain names logs made by Init.
const DefaultTrustDomain = "hearth.home.arpa"

// InitFor is Init for a log of the trust domain td. The log's origin (the
// first line of its checkpoints, and its key's name) is
// "<td>/audit/<16 random hex digits>": a URL-like name, as
// c2sp.org/tlog-checkpoint asks, unique to this data dir, so that a log
// made again after a reset never reuses an origin (witnesses keep their
// state per origin and would refuse, or worse, accept, a new history).
func InitFor(dir, td string) error { return initWith(dir, td, rand.Reader) }

func initWith(dir, td string, rnd io.Reader) error {
	if !validOrigin(td + "/audit/0000000000000000") {
		return fmt.Errorf("audit: trust domain %q cannot name a log", td)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	final := filepath.Join(dir, DirName)
	if ents, err := os.ReadDir(final); err == nil && len(ents) > 0 {
		return fmt.Errorf("%w in %s", ErrExists, final)
	}
	tmp, err := os.MkdirTemp(dir, ".audit-init-")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	var id [8]byte
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return fmt.Errorf("audit: reading randomness: %w", err)
	}
	origin := td + "/audit/" + hex.EncodeToString(id[:])
	skey, vkey, err := note.GenerateKey(rnd, origin)
	if err != nil {
		return fmt.Errorf("audit: generating the signing key: %w", err)
	}
	var mk [32]byte
	if _, err := io.ReadFull(rnd, mk[:]); err != nil {
		return fmt.Errorf("audit: reading randomness: %w", err)
	}
	files := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{SigningKeyFile, skey + "\n", 0o600},
		{VerifierKeyFile, vkey + "\n", 0o644},
		{HMACKeyFile, base64.StdEncoding.EncodeToString(mk[:]) + "\n", 0o600},
		{HashesFile, "", 0o600},
		{CheckpointsFile, "", 0o600},
	}
	for _, f := range files {
		if err := writeFileSync(filepath.Join(tmp, f.name), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(tmp, SegmentsDir), 0o700); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := syncDir(filepath.Join(tmp, SegmentsDir)); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// rename(2) replaces an empty directory and refuses a non-empty one.
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("%w in %s (%v)", ErrExists, final, err)
	}
	done = true
	return syncDir(dir)
}

func writeFileSync(name string, data []byte, mode os.FileMode) error {
	return openWriteSync(name, os.O_CREATE|os.O_EXCL, mode, data)
}

// openWriteSync opens name write-only with flag, writes data and fsyncs it.
func openWriteSync(name string, flag int, mode os.FileMode, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|flag, mode)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: writing %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	err = d.Sync()
	d.Close()
	if err != nil {
		return fmt.Errorf("audit: syncing %s: %w", dir, err)
	}
	return nil
}

// readKeyFile reads a one-line key file, refusing one that others can read
// when private is set (keys at rest 0600).
func readKeyFile(name string, private bool) (string, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	if private && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("audit: %s is readable by others (mode %v); chmod 600 it", name, fi.Mode().Perm())
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) == 0 || bytes.ContainsAny(b, "\r\n") {
		return "", fmt.Errorf("audit: %s is not a one-line key file", name)
	}
	return string(b), nil
}

// LoadVerifier reads the log's verifier key from <dir>/audit/log.pub.
func LoadVerifier(dir string) (note.Verifier, error) {
	vkey, err := readKeyFile(filepath.Join(dir, DirName, VerifierKeyFile), false)
	if err != nil {
		return nil, err
	}
	return ParseVerifierKey(vkey)
}

// ParseVerifierKey parses a verifier key in the note format
// (<origin>+<hash>+<base64 key>), as `hearth audit verify --key` takes it.
func ParseVerifierKey(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	if !validOrigin(v.Name()) {
		return nil, fmt.Errorf("audit: verifier key name %q is not a valid origin", v.Name())
	}
	return v, nil
}

type keys struct {
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	hmacKey  []byte
}

func loadKeys(adir string) (*keys, error) {
	skey, err := readKeyFile(filepath.Join(adir, SigningKeyFile), true)
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	vkey, err := readKeyFile(filepath.Join(adir, VerifierKeyFile), false)
	if err != nil {
		return nil, err
	}
	verifier, err := ParseVerifierKey(vkey)
	if err != nil {
		return nil, err
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, fmt.Errorf("audit: %s does not match %s", VerifierKeyFile, SigningKeyFile)
	}
	// Sign and verify once: a verifier key with the right name and hash but
	// another key would otherwise go unnoticed until verify.
	probe := []byte("hearth audit key check\n")
	sig, err := signer.Sign(probe)
	if err != nil || !verifier.Verify(probe, sig) {
		return nil, fmt.Errorf("audit: %s does not match %s", VerifierKeyFile, SigningKeyFile)
	}
	mk, err := readKeyFile(filepath.Join(adir, HMACKeyFile), true)
	if err != nil {
		return nil, err
	}
	hk, err := base64.StdEncoding.DecodeString(mk)
	if err != nil || len(hk) != 32 {
		return nil, fmt.Errorf("audit: %s is not 32 bytes in base64", HMACKeyFile)
	}
	return &keys{signer: signer, verifier: verifier, vkey: vkey, hmacKey: hk}, nil
}

// secretID computes the SecretID of secret under key.
func secretID(key, secret []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hearth audit secret id v1\x00"))
	m.Write(secret)
	return secretIDPrefix + hex.EncodeToString(m.Sum(nil)[:16])
}
