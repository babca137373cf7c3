package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/hearth-home/hearth/auth"
)

// secretInput reads passwords and codes: from a terminal with a prompt and
// no echo, otherwise one line at a time from standard input (so scripts can
// pipe them in).
type secretInput struct {
	e  *env
	br *bufio.Reader
}

func newSecretInput(e *env) *secretInput { return &secretInput{e: e} }

// terminal returns stdin's file descriptor when stdin is a terminal.
func (s *secretInput) terminal() (int, bool) {
	f, ok := s.e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// line reads one line from a non-terminal stdin, without its line ending.
// A line longer than the password limit is refused whole, never truncated.
func (s *secretInput) line(what string) (string, error) {
	if s.br == nil {
		s.br = bufio.NewReaderSize(s.e.stdin, 4096)
	}
	var b strings.Builder
	for {
		chunk, err := s.br.ReadSlice('\n')
		b.Write(chunk)
		if b.Len() > auth.MaxPasswordBytes+2 {
			return "", fmt.Errorf("%s on standard input is longer than %d bytes", what, auth.MaxPasswordBytes)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && b.Len() > 0 {
			break
		}
		if err != nil {
			if err == io.EOF {
				return "", fmt.Errorf("no %s on standard input (give it as one line)", what)
			}
			return "", err
		}
		break
	}
	return strings.TrimSuffix(strings.TrimSuffix(b.String(), "\n"), "\r"), nil
}

// secret reads a secret: prompted without echo on a terminal (twice when
// confirm is set), else one line of stdin.
func (s *secretInput) secret(prompt string, confirm bool) (string, error) {
	fd, tty := s.terminal()
	if !tty {
		return s.line(strings.TrimSuffix(prompt, ": "))
	}
	fmt.Fprint(s.e.stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(s.e.stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(s.e.stderr, "Again, to confirm: ")
		c, err := term.ReadPassword(fd)
		fmt.Fprintln(s.e.stderr)
		if err != nil {
			return "", err
		}
		if string(c) != string(b) {
			return "", errors.New("the two entries differ")
		}
	}
	return string(b), nil
}

// plain reads a non-secret answer (such as a TOTP code), echoed.
func (s *secretInput) plain(prompt string) (string, error) {
	if _, tty := s.terminal(); tty {
		fmt.Fprint(s.e.stderr, prompt)
	}
	l, err := s.line(strings.TrimSuffix(prompt, ": "))
	return strings.TrimSpace(l), err
}
