//go:build !linux

package pgtest

import "syscall"

// serverAttr runs the server as cred (nil: as this process's user), in a
// process group of its own. There is no parent-death signal here.
func serverAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}
