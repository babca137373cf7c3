package pgtest

import "syscall"

// serverAttr runs the server as cred (nil: as this process's user), in a
// process group of its own, and has the kernel send it SIGQUIT (PostgreSQL's
// immediate shutdown) when the test binary dies.
func serverAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
}
