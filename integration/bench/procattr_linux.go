package main

import "syscall"

// childProcAttr makes a child (MinIO, ferry serve) die with the benchmark,
// even when the benchmark is killed.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
