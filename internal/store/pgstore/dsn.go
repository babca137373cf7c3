package pgstore

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// CheckDSN vets a PostgreSQL connection string taken from hearth.yaml or
// --store-dsn before it is used: it must not carry a password (a config
// file is read by more people and tools than a secret should be), and the
// files it names for secrets — passfile (libpq's .pgpass format) and
// servicefile — must be readable by their owner only, as libpq itself
// insists for .pgpass. Both forms are understood: postgres:// and
// postgresql:// URLs, and keyword=value strings (with '…' quoting and
// backslash escapes, as pgx parses them).
func CheckDSN(dsn string) error {
	settings, err := dsnSettings(dsn)
	if err != nil {
		return fmt.Errorf("pgstore: store DSN: %w", err)
	}
	if _, ok := settings["password"]; ok {
		return errors.New("pgstore: store DSN: it contains a password; put the password in a file readable only by hearth (libpq .pgpass format: host:port:database:user:password) and name it with passfile=/path/to/file")
	}
	for _, key := range []string{"passfile", "servicefile"} {
		path, ok := settings[key]
		if !ok {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("pgstore: store DSN: %s: %w", key, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("pgstore: store DSN: %s %s is readable by others (mode %v); chmod 600 it", key, path, fi.Mode().Perm())
		}
	}
	return nil
}

// dsnSettings returns the keys a DSN sets (values kept for the file keys).
func dsnSettings(dsn string) (map[string]string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, errors.New("not a valid URL")
		}
		s := map[string]string{}
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				s["password"] = ""
			}
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return nil, errors.New("bad query string")
		}
		for k, v := range q {
			s[k] = v[0]
		}
		return s, nil
	}
	return keywordSettings(dsn)
}

// keywordSettings splits a keyword=value connection string the way pgx's
// pgconn does: keys up to '=', values up to white space or in single
// quotes, a backslash escaping the next byte.
func keywordSettings(s string) (map[string]string, error) {
	const space = " \t\n\r\v\f"
	out := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("invalid keyword=value string")
		}
		key := strings.Trim(s[:eq], space)
		s = strings.TrimLeft(s[eq+1:], space)
		var raw string
		if len(s) > 0 && s[0] == '\'' {
			s = s[1:]
			end := 0
			for ; end < len(s) && s[end] != '\''; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return nil, errors.New("unterminated quoted string")
			}
			raw, s = s[:end], s[end+1:]
		} else {
			end := 0
			for ; end < len(s) && !strings.ContainsRune(space, rune(s[end])); end++ {
				if s[end] == '\\' {
					end++
					if end == len(s) {
						return nil, errors.New("invalid backslash")
					}
				}
			}
			raw = s[:end]
			if end < len(s) {
				s = s[end+1:]
			} else {
				s = ""
			}
		}
		if key == "" {
			return nil, errors.New("invalid keyword=value string")
		}
		out[key] = strings.ReplaceAll(strings.ReplaceAll(raw, `\\`, `\`), `\'`, `'`)
	}
	return out, nil
}
