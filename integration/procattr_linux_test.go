package integration

import "syscall"

// childProcAttr makes a server process die with the test binary, so a test
// binary killed by a timeout leaves no ferry server behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
